//! The iptables rules of the raw backend. The kernel sees the reserved port's segments too
//! and, having no socket for them, answers with RST; these rules drop those RSTs on their way
//! out. Each rule carries the comment `tcpstack`, so leftovers (a killed process) can be found
//! and removed by [`remove_leftover_rules`].

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::io::IoError;

pub const RULE_COMMENT: &str = "tcpstack";
const CHAIN: &str = "OUTPUT";

/// The rule spec (after `-A OUTPUT`) dropping RSTs the kernel sends from `addr` and `ports`
/// (one port, or `first:last`).
pub fn rule(addr: Ipv4Addr, ports: &str) -> Vec<String> {
    [
        "-p",
        "tcp",
        "-s",
        &format!("{addr}/32"),
        "--sport",
        ports,
        "--tcp-flags",
        "RST",
        "RST",
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `--sport` argument for an inclusive port range.
pub fn port_range(first: u16, last: u16) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}:{last}")
    }
}

/// Installed rules, deleted when dropped (also while unwinding from a panic).
#[derive(Debug, Default)]
pub struct IptablesGuard {
    rules: Vec<Vec<String>>,
}

impl IptablesGuard {
    pub fn new() -> IptablesGuard {
        IptablesGuard::default()
    }

    /// Installs the rule; [`IoError::PortInUse`] when an identical rule exists already (another
    /// tcpstack serves these ports, or a crashed one left it).
    pub fn add(&mut self, spec: Vec<String>) -> Result<(), IoError> {
        if self.rules.contains(&spec) {
            return Ok(());
        }
        if iptables("-C", &spec).is_ok() {
            return Err(port_in_use(&spec));
        }
        iptables("-A", &spec)?;
        self.rules.push(spec);
        Ok(())
    }

    pub fn remove(&mut self, spec: &[String]) -> Result<(), IoError> {
        let Some(index) = self.rules.iter().position(|r| r == spec) else {
            return Ok(());
        };
        let spec = self.rules.remove(index);
        iptables("-D", &spec)
    }

    pub fn rules(&self) -> &[Vec<String>] {
        &self.rules
    }
}

impl Drop for IptablesGuard {
    fn drop(&mut self) {
        for spec in self.rules.drain(..) {
            if let Err(error) = iptables("-D", &spec) {
                tracing::warn!(%error, "could not remove an iptables rule; `cargo xtask lab down` or `tcpstack` cleanup removes leftovers");
            }
        }
    }
}

fn port_in_use(spec: &[String]) -> IoError {
    let value_of = |flag: &str| {
        spec.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .unwrap_or_default()
    };
    let addr = value_of("-s");
    IoError::PortInUse {
        addr: addr
            .trim_end_matches("/32")
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        ports: value_of("--sport"),
    }
}

/// Deletes every OUTPUT rule carrying tcpstack's comment (after a crash, for Ctrl-C paths and
/// xtask). Returns how many it removed.
pub fn remove_leftover_rules() -> Result<usize, IoError> {
    let listing = run(&["-w", "-S", CHAIN])?;
    let specs = leftover_rules(&listing);
    for spec in &specs {
        iptables("-D", spec)?;
    }
    Ok(specs.len())
}

/// The specs of tcpstack's rules in `iptables -S OUTPUT` output.
pub fn leftover_rules(listing: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("-A") || words.next() != Some(CHAIN) {
                return None;
            }
            // iptables quotes some comments; the quotes are not part of the rule.
            let spec: Vec<String> = words.map(|w| w.trim_matches('"').to_owned()).collect();
            let tagged = spec
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1] == RULE_COMMENT);
            tagged.then_some(spec)
        })
        .collect()
}

/// The full argument list for `action` (`-A`/`-D`) on `spec`.
pub fn command_line(action: &str, spec: &[String]) -> Vec<String> {
    let mut args = vec!["-w".to_owned(), action.to_owned(), CHAIN.to_owned()];
    args.extend(spec.iter().cloned());
    args
}

fn iptables(action: &str, spec: &[String]) -> Result<(), IoError> {
    let args = command_line(action, spec);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs).map(|_| ())
}

fn run(args: &[&str]) -> Result<String, IoError> {
    let output = Command::new("iptables")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => IoError::IptablesMissing,
            _ => IoError::os("running iptables", e),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.contains("Permission denied") || stderr.contains("you must be root") {
            return Err(IoError::NotPermitted("changing iptables rules"));
        }
        return Err(IoError::Iptables {
            command: format!("iptables {}", args.join(" ")),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    #[test]
    fn rules_drop_only_rsts_from_our_ports() {
        let line = command_line("-A", &rule(US, "7")).join(" ");
        assert_eq!(
            line,
            "-w -A OUTPUT -p tcp -s 198.18.0.1/32 --sport 7 --tcp-flags RST RST \
             -m comment --comment tcpstack -j DROP"
        );
        assert_eq!(port_range(61000, 65535), "61000:65535");
        assert_eq!(port_range(7, 7), "7");
    }

    #[test]
    fn a_taken_port_is_named_in_the_error() {
        match port_in_use(&rule(US, "61000:65535")) {
            IoError::PortInUse { addr, ports } => {
                assert_eq!(addr, US);
                assert_eq!(ports, "61000:65535");
            }
            other => panic!("expected PortInUse, got {other:?}"),
        }
    }

    #[test]
    fn leftovers_are_found_by_their_comment() {
        // As `iptables -S OUTPUT` prints them.
        let listing = "-P OUTPUT ACCEPT\n\
            -A OUTPUT -s 198.18.0.1/32 -p tcp -m tcp --sport 7 --tcp-flags RST RST -m comment --comment tcpstack -j DROP\n\
            -A OUTPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
            -A OUTPUT -s 198.18.0.1/32 -p tcp -m tcp --sport 61000:65535 --tcp-flags RST RST -m comment --comment \"tcpstack\" -j DROP\n\
            -A OUTPUT -p tcp -m comment --comment tcpstack-other -j DROP\n";
        let found = leftover_rules(listing);
        assert_eq!(found.len(), 2);
        assert_eq!(
            command_line("-D", &found[0]).join(" "),
            "-w -D OUTPUT -s 198.18.0.1/32 -p tcp -m tcp --sport 7 --tcp-flags RST RST \
             -m comment --comment tcpstack -j DROP"
        );
        assert!(found[1].contains(&"61000:65535".to_owned()));
    }
}
