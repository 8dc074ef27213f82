//! Opening the backend the command line asks for, with errors a user can act on.

use std::net::Ipv4Addr;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tcpstack::endpoint::EndpointConfig;
use tcpstack::io::{self, BackendConfig};
use tcpstack::runtime::{Stack, StackBuilder};
use tcpstack::tcp::CongestionAlgorithm;

use crate::{cleanup, BackendKind, LinkArgs, XdpModeArg};

/// Active opens use ports Linux never picks (its ip_local_port_range ends at 60999), so the
/// kernel's own connections are never steered to us.
const ACTIVE_PORTS: (u16, u16) = (61000, 65535);

/// A started stack and what the status line says about it.
pub struct Link {
    pub stack: Stack,
    pub addr: Ipv4Addr,
    pub backend: BackendKind,
    pub iface: String,
}

/// The stack's TCP switches, Linux's net.ipv4.tcp_congestion_control, tcp_sack and
/// tcp_timestamps.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpArgs {
    /// Congestion control of every connection [default: bbr].
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub congestion: Option<CongestionArg>,
    /// Neither offer nor accept selective acknowledgements (RFC 2018).
    #[arg(long)]
    pub no_sack: bool,
    /// Neither offer nor accept timestamps (RFC 7323).
    #[arg(long)]
    pub no_timestamps: bool,
    /// Find losses by counting duplicate ACKs (RFC 6675) instead of by time with RACK-TLP
    /// (RFC 8985), like Linux's tcp_recovery = 0.
    #[arg(long)]
    pub no_rack: bool,
    /// Lower bound of the retransmission timeout in milliseconds, like Linux's
    /// `ip route ... rto_min` [default: 200].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=120_000))]
    pub rto_min: Option<u64>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CongestionArg {
    /// RFC 9438 with HyStart++, Linux's default.
    Cubic,
    /// RFC 5681 with RFC 6582's fast recovery (Linux's reno).
    #[value(alias = "reno")]
    Newreno,
    /// BBR (BBRv1's model with BBRv3's gains), paced.
    Bbr,
}

/// What the binary runs without `--congestion`: BBR, which the benchmark's loss rows measured
/// far ahead of CUBIC (the library's own default stays CUBIC, as Linux's).
pub const DEFAULT_CONGESTION: CongestionArg = CongestionArg::Bbr;

/// What the binary busy-polls without `--busy-poll` (the library's default is 0): 50 µs
/// covers the round trip of a request/response exchange on a local link, where the benchmark
/// measured the 1-byte rate up by two thirds, and costs an idle server nothing.
pub const DEFAULT_BUSY_POLL_US: u64 = 50;

impl From<CongestionArg> for CongestionAlgorithm {
    fn from(arg: CongestionArg) -> Self {
        match arg {
            CongestionArg::Cubic => CongestionAlgorithm::Cubic,
            CongestionArg::Newreno => CongestionAlgorithm::NewReno,
            CongestionArg::Bbr => CongestionAlgorithm::Bbr,
        }
    }
}

impl TcpArgs {
    /// The builder with these switches; what the command line leaves out keeps its default.
    pub fn apply(&self, mut builder: StackBuilder) -> StackBuilder {
        builder = builder.congestion(self.congestion.unwrap_or(DEFAULT_CONGESTION).into());
        if self.no_sack {
            builder = builder.sack(false);
        }
        if self.no_timestamps {
            builder = builder.timestamps(false);
        }
        if self.no_rack {
            builder = builder.rack(false);
        }
        if let Some(ms) = self.rto_min {
            builder = builder.rto_min(std::time::Duration::from_millis(ms));
        }
        builder
    }
}

pub fn endpoint_config() -> EndpointConfig {
    EndpointConfig {
        ephemeral_ports: ACTIVE_PORTS,
        ..EndpointConfig::default()
    }
}

pub fn xdp_mode(arg: XdpModeArg) -> io::xdp::XdpMode {
    match arg {
        XdpModeArg::Auto => io::xdp::XdpMode::Auto,
        XdpModeArg::Native => io::xdp::XdpMode::Native,
        XdpModeArg::Skb => io::xdp::XdpMode::Skb,
    }
}

/// Checks the environment, opens the backend and starts a stack on it. `listening` is the
/// port `serve` will reserve, so that a panic removes its iptables rule too.
pub fn open(args: &LinkArgs, listening: Option<u16>) -> anyhow::Result<Link> {
    io::require_root()?;
    let config = BackendConfig {
        addr: args.addr,
        xdp_mode: xdp_mode(args.xdp_mode),
        queues: args.queues,
        active_ports: ACTIVE_PORTS,
        ..BackendConfig::new(
            match args.backend {
                BackendKind::Xdp => io::BackendKind::Xdp,
                BackendKind::Raw => io::BackendKind::Raw,
            },
            args.iface.clone(),
        )
    };
    // IoError's messages are whole sentences that say what to do.
    let (backend, addr) = io::open(&config).map_err(anyhow::Error::new)?;
    if args.backend == BackendKind::Raw {
        remove_rules_on_panic(addr, listening);
    }
    let mut builder = args.tcp.apply(
        Stack::builder()
            .boxed_backend(backend)
            .address(addr)
            .config(endpoint_config())
            .busy_poll(std::time::Duration::from_micros(args.busy_poll)),
    );
    if let Some(path) = &args.pcap {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create the capture file {}", path.display()))?;
        builder = builder.capture(file);
    }
    let stack = builder.build().context("cannot start the stack")?;
    Ok(Link {
        stack,
        addr,
        backend: args.backend,
        iface: args.iface.clone(),
    })
}

/// The raw backend's guard removes its rules when dropped, on every normal exit path; the
/// panic hook exits without dropping it, so it deletes the same rules itself (one copy each:
/// another tcpstack on the same address keeps its own).
fn remove_rules_on_panic(addr: Ipv4Addr, listening: Option<u16>) {
    use tcpstack::io::raw::iptables::{command_line, port_range, rule};
    let mut specs = vec![rule(addr, &port_range(ACTIVE_PORTS.0, ACTIVE_PORTS.1))];
    if let Some(port) = listening {
        specs.push(rule(addr, &port.to_string()));
    }
    cleanup::register("iptables rules", move || {
        for spec in specs {
            let _ = std::process::Command::new("iptables")
                .args(command_line("-D", &spec))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    });
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn tcp_args_of(command_line: &[&str]) -> TcpArgs {
        let cli = Cli::try_parse_from(command_line).expect("parses");
        match cli.command {
            Command::Serve(args) => args.link.tcp,
            Command::Connect(args) => args.link.tcp,
            other => panic!("not serve or connect: {other:?}"),
        }
    }

    #[test]
    fn busy_polling_is_on_for_50_us_unless_set() {
        let busy_poll_of = |extra: &[&str]| {
            let line = [
                &["tcpstack", "serve", "--iface", "veth0", "--port", "7"][..],
                extra,
            ];
            match Cli::try_parse_from(line.concat()).expect("parses").command {
                Command::Serve(args) => args.link.busy_poll,
                other => panic!("not serve: {other:?}"),
            }
        };
        assert_eq!(busy_poll_of(&[]), 50);
        assert_eq!(busy_poll_of(&["--busy-poll", "0"]), 0);
        assert_eq!(busy_poll_of(&["--busy-poll", "200"]), 200);
        let line = ["tcpstack", "serve", "--iface", "veth0", "--port", "7"];
        let too_long = [&line[..], &["--busy-poll", "2000000"]].concat();
        assert!(Cli::try_parse_from(too_long).is_err());
    }

    #[test]
    fn serve_and_connect_take_the_tcp_switches() {
        let switched = TcpArgs {
            congestion: Some(CongestionArg::Newreno),
            no_sack: true,
            no_timestamps: true,
            no_rack: true,
            rto_min: Some(5),
        };
        let switches = [
            "--congestion",
            "newreno",
            "--no-sack",
            "--no-timestamps",
            "--no-rack",
            "--rto-min",
            "5",
        ];
        let serve = [
            &["tcpstack", "serve", "--iface", "veth0", "--port", "7"][..],
            &switches,
        ];
        assert_eq!(tcp_args_of(&serve.concat()), switched);
        let connect = [
            &["tcpstack", "connect", "198.18.0.1:7", "--iface", "veth0"][..],
            &switches,
        ];
        assert_eq!(tcp_args_of(&connect.concat()), switched);
        let plain = tcp_args_of(&["tcpstack", "connect", "198.18.0.1:7", "--iface", "veth0"]);
        assert_eq!(plain, TcpArgs::default());
    }

    #[test]
    fn congestion_names_are_linux_s_and_ours() {
        for (name, algorithm) in [
            ("cubic", CongestionAlgorithm::Cubic),
            ("newreno", CongestionAlgorithm::NewReno),
            ("reno", CongestionAlgorithm::NewReno),
            ("bbr", CongestionAlgorithm::Bbr),
        ] {
            let args = tcp_args_of(&[
                "tcpstack",
                "serve",
                "--iface",
                "veth0",
                "--port",
                "7",
                "--congestion",
                name,
            ]);
            assert_eq!(
                args.congestion.map(CongestionAlgorithm::from),
                Some(algorithm)
            );
        }
        assert!(Cli::try_parse_from([
            "tcpstack",
            "serve",
            "--iface",
            "veth0",
            "--port",
            "7",
            "--congestion",
            "vegas",
        ])
        .is_err());
    }
}
