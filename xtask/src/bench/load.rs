//! The servers under test and the loads run against them from the peer namespace.

use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tcpstack_integration::{in_netns, Lab, Process, Server};

use super::procs::{self, check_interrupt, describe, run_client};
use super::report::Target;

pub const IPERF3_PORT: u16 = 5201;
pub const ECHO_PORT: u16 = 7;

/// What a server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// iperf3's protocol on [`IPERF3_PORT`]: stock `iperf3 -s`, or `tcpstack serve --app iperf3`.
    Iperf3,
    /// Echo on [`ECHO_PORT`]: the xtask epoll echo server, or `tcpstack serve --app echo`.
    Echo,
}

impl Service {
    pub fn port(self) -> u16 {
        match self {
            Service::Iperf3 => IPERF3_PORT,
            Service::Echo => ECHO_PORT,
        }
    }
}

/// A server running in namespace A; killed when dropped (and with the namespace anyway).
pub struct RunningServer {
    process: Process,
    pub command: String,
}

impl RunningServer {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Fails (with what it printed) when the server is no longer running.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            bail!(
                "the server `{}` exited ({status}): {}",
                self.command,
                procs::tail(&self.process.transcript())
            );
        }
        Ok(())
    }

    /// SIGINT, as a user stops it; SIGKILL after a few seconds.
    pub fn stop(mut self) {
        let _ = self.process.interrupt(Duration::from_secs(8));
    }
}

/// The command line that serves `service` on `target` in namespace A.
pub fn server_command(
    lab: &Lab,
    tcpstack: &Path,
    target: Target,
    service: Service,
    tcpstack_flags: &[String],
) -> Result<Command> {
    let spec = &lab.spec;
    let port = service.port().to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &spec.ns_a]);
    match (target, service) {
        (Target::Kernel, Service::Iperf3) => {
            cmd.args(["iperf3", "-s", "-p", &port, "-B", &spec.addr_a.to_string()]);
        }
        (Target::Kernel, Service::Echo) => {
            let me = std::env::current_exe().context("locating the xtask binary")?;
            let listen = SocketAddrV4::new(spec.addr_a, service.port());
            cmd.arg(me)
                .args(["bench", "--kernel-echo-server", &listen.to_string()]);
        }
        (Target::Xdp | Target::Raw, _) => {
            let app = match service {
                Service::Iperf3 => "iperf3",
                Service::Echo => "echo",
            };
            cmd.arg(tcpstack).args([
                "serve",
                "--iface",
                &spec.if_a,
                "--port",
                &port,
                "--app",
                app,
                "--backend",
                target.name(),
            ]);
            cmd.args(tcpstack_flags);
        }
    }
    quiet_rust(&mut cmd);
    Ok(cmd)
}

/// Starts `service` on `target` in namespace A and waits until it listens.
pub fn start_server(
    lab: &Lab,
    tcpstack: &Path,
    target: Target,
    service: Service,
) -> Result<RunningServer> {
    start_server_with(lab, tcpstack, target, service, &[])
}

/// [`start_server`] with more flags for `tcpstack serve` (the kernel's servers take none).
pub fn start_server_with(
    lab: &Lab,
    tcpstack: &Path,
    target: Target,
    service: Service,
    tcpstack_flags: &[String],
) -> Result<RunningServer> {
    check_interrupt()?;
    let spec = &lab.spec;
    let cmd = server_command(lab, tcpstack, target, service, tcpstack_flags)?;
    let command = describe(&cmd);
    let process = match target {
        Target::Kernel => {
            let mut process = Process::spawn(cmd, false)?;
            let listening = tcpstack_integration::wait_until(Duration::from_secs(10), || {
                check_interrupt()?;
                if let Some(status) = process.try_wait()? {
                    bail!("exited ({status}): {}", procs::tail(&process.transcript()));
                }
                let states = tcpstack_integration::socket_states(&spec.ns_a, service.port())?;
                Ok(states.iter().any(|s| s.starts_with("LISTEN")))
            })
            .with_context(|| format!("starting `{command}`"))?;
            if !listening {
                bail!("`{command}` did not listen within 10 s");
            }
            process
        }
        Target::Xdp | Target::Raw => {
            Server::start(cmd, false)
                .with_context(|| format!("starting `{command}`"))?
                .process
        }
    };
    Ok(RunningServer { process, command })
}

/// Logging and backtrace capture cost time in the measured processes: they run without, whatever
/// the caller's environment says.
pub fn quiet_rust(cmd: &mut Command) {
    for var in ["RUST_LOG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"] {
        cmd.env_remove(var);
    }
}

/// The knobs of one run of the benchmark.
#[derive(Debug, Clone)]
pub struct Load {
    pub bulk_secs: u64,
    pub rr_secs: u64,
    pub crr_workers: usize,
    pub idle_connections: usize,
    pub scratch: PathBuf,
    /// iperf3 `-C`: the kernel sockets' congestion control on both ends (None: the default).
    pub congestion: Option<&'static str>,
}

/// What one iperf3 run moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bulk {
    pub bits_per_second: f64,
    pub bytes: f64,
    /// The client's retransmitted segments (`end.sum_sent.retransmits`), when it sent.
    pub client_retransmits: Option<f64>,
}

/// `iperf3 -c A -J -t T [-P N] [-R]` from namespace B.
pub fn iperf3_command(lab: &Lab, load: &Load, streams: usize, reverse: bool) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.spec.ns_b, "iperf3", "-c"])
        .arg(lab.spec.addr_a.to_string())
        .args(["-p", &IPERF3_PORT.to_string(), "-J", "-t"])
        .arg(load.bulk_secs.to_string())
        .args(["-P", &streams.to_string()]);
    if reverse {
        cmd.arg("-R");
    }
    if let Some(algorithm) = load.congestion {
        cmd.args(["-C", algorithm]);
    }
    cmd
}

pub fn iperf3(lab: &Lab, load: &Load, streams: usize, reverse: bool) -> Result<Bulk> {
    let cmd = iperf3_command(lab, load, streams, reverse);
    let shown = describe(&cmd);
    let timeout = Duration::from_secs(load.bulk_secs + 10);
    let out = run_client(cmd, timeout, &load.scratch)?;
    // iperf3 -J reports its errors in the JSON (with exit status 1): that message first.
    if out.stdout.trim_start().starts_with('{') {
        let bulk =
            parse_iperf3(&out.stdout).with_context(|| format!("`{shown}` ({})", out.status))?;
        if out.status.success() {
            return Ok(bulk);
        }
    }
    let stdout = out.success()?;
    parse_iperf3(&stdout).with_context(|| format!("`{shown}`"))
}

/// The receiver's view of an `iperf3 -J` run: `end.sum_received`.
pub fn parse_iperf3(json: &str) -> Result<Bulk> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| anyhow!("output is not iperf3 JSON ({e}): {}", procs::tail(json)))?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        bail!("iperf3 reported: {error}");
    }
    let sum = &value["end"]["sum_received"];
    let (Some(bits_per_second), Some(bytes)) =
        (sum["bits_per_second"].as_f64(), sum["bytes"].as_f64())
    else {
        bail!("no end.sum_received in the iperf3 JSON");
    };
    if bytes <= 0.0 {
        bail!("iperf3 moved no bytes");
    }
    Ok(Bulk {
        bits_per_second,
        bytes,
        client_retransmits: value["end"]["sum_sent"]["retransmits"].as_f64(),
    })
}

/// The flags that make `tcpstack serve` write its counters to `path` every second.
pub fn stats_flags(path: &Path) -> Vec<String> {
    vec![
        "--stats-interval".into(),
        "1".into(),
        "--stats-json".into(),
        path.display().to_string(),
    ]
}

/// Where a received frame can be lost, from `tcpstack serve --stats-json`: the kernel's
/// XDP_STATISTICS summed over the AF_XDP sockets, and what the receive windows turned away.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ReceiveLoss {
    pub rx_dropped: f64,
    pub rx_ring_full: f64,
    pub fill_ring_empty: f64,
    pub tx_ring_empty: f64,
    pub beyond_window: f64,
    pub trimmed_bytes: f64,
}

impl ReceiveLoss {
    /// Frames that arrived and never reached a connection's receive buffer.
    pub fn frames_lost(&self) -> f64 {
        self.rx_dropped + self.rx_ring_full + self.beyond_window
    }

    pub fn since(&self, before: &ReceiveLoss) -> ReceiveLoss {
        ReceiveLoss {
            rx_dropped: self.rx_dropped - before.rx_dropped,
            rx_ring_full: self.rx_ring_full - before.rx_ring_full,
            fill_ring_empty: self.fill_ring_empty - before.fill_ring_empty,
            tx_ring_empty: self.tx_ring_empty - before.tx_ring_empty,
            beyond_window: self.beyond_window - before.beyond_window,
            trimmed_bytes: self.trimmed_bytes - before.trimmed_bytes,
        }
    }

    pub fn read(path: &Path) -> Result<ReceiveLoss> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the server's counters in {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing the server's counters in {}", path.display()))?;
        let queues = value["xdp_queues"].as_array().cloned().unwrap_or_default();
        let queue_sum = |name: &str| queues.iter().filter_map(|q| q[name].as_f64()).sum();
        let drops = &value["endpoint"]["receive_drops"];
        let drop_count = |name: &str| {
            drops[name].as_f64().ok_or_else(|| {
                anyhow!(
                    "{} has no endpoint.receive_drops.{name}: this tcpstack is older than the counter",
                    path.display()
                )
            })
        };
        Ok(ReceiveLoss {
            rx_dropped: queue_sum("rx_dropped"),
            rx_ring_full: queue_sum("rx_ring_full"),
            fill_ring_empty: queue_sum("fill_ring_empty"),
            tx_ring_empty: queue_sum("tx_ring_empty"),
            beyond_window: drop_count("beyond_window")?,
            trimmed_bytes: drop_count("trimmed_bytes")?,
        })
    }
}

/// How `tcpstack bench` is run from namespace B: the flags that make it a kernel-TCP client
/// (or, in a build without that choice, a tcpstack client on B's veth) and print JSON.
#[derive(Debug, Clone)]
pub struct BenchClient {
    pub flags: Vec<String>,
}

impl BenchClient {
    /// Reads `tcpstack bench --help` once to learn what this build offers.
    pub fn probe(tcpstack: &Path, lab: &Lab) -> Result<BenchClient> {
        let mut cmd = Command::new(tcpstack);
        cmd.args(["bench", "--help"]);
        let help = tcpstack_integration::run(&mut cmd).map_err(|e| {
            anyhow!(
                "this tcpstack has no usable `bench` subcommand: {}",
                procs::tail(&format!("{e:#}"))
            )
        })?;
        Ok(BenchClient {
            flags: client_flags(&help, &lab.spec.if_b),
        })
    }

    pub fn command(
        &self,
        tcpstack: &Path,
        lab: &Lab,
        mode: &str,
        conns: usize,
        secs: u64,
    ) -> Command {
        let target = SocketAddrV4::new(lab.spec.addr_a, ECHO_PORT);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.spec.ns_b])
            .arg(tcpstack)
            .args(["bench", "--connect", &target.to_string(), "--mode", mode])
            .args([
                "--conns",
                &conns.to_string(),
                "--duration",
                &secs.to_string(),
            ])
            .args(["--size", "1"])
            .args(&self.flags);
        quiet_rust(&mut cmd);
        cmd
    }

    pub fn run(
        &self,
        tcpstack: &Path,
        lab: &Lab,
        load: &Load,
        mode: &str,
        conns: usize,
    ) -> Result<BenchOutcome> {
        let cmd = self.command(tcpstack, lab, mode, conns, load.rr_secs);
        let shown = describe(&cmd);
        let out =
            run_client(cmd, Duration::from_secs(load.rr_secs + 15), &load.scratch)?.success()?;
        parse_bench(&out).with_context(|| format!("`{shown}`"))
    }
}

/// From `tcpstack bench --help`: the kernel's TCP as the client when the build offers it (so
/// that only the server differs between the columns), else tcpstack's own on `peer_iface`; and
/// JSON output, when it has to be asked for.
fn client_flags(help: &str, peer_iface: &str) -> Vec<String> {
    let mut flags = Vec::new();
    if option_help(help, "--backend").is_some_and(|h| h.contains("kernel")) {
        flags.extend(["--backend".into(), "kernel".into()]);
    } else if option_help(help, "--iface").is_some() {
        flags.extend(["--iface".into(), peer_iface.to_owned()]);
    }
    if option_help(help, "--json").is_some() {
        flags.push("--json".into());
    } else if option_help(help, "--format").is_some_and(|h| h.contains("json")) {
        flags.extend(["--format".into(), "json".into()]);
    }
    flags
}

/// The help text of one option: from its flag to the line of the next option.
pub fn option_help<'a>(help: &'a str, flag: &str) -> Option<&'a str> {
    let start = help.match_indices(flag).map(|(i, _)| i).find(|&i| {
        !help[i + flag.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-')
    })?;
    let rest = &help[start..];
    let mut end = rest.find('\n').unwrap_or(rest.len());
    while end < rest.len() {
        let line = &rest[end + 1..];
        if starts_an_option(line) {
            break;
        }
        end += 1 + line.find('\n').unwrap_or(line.len());
    }
    Some(&rest[..end])
}

/// `  -h, --help` or `      --size <B>`, but not a value list's `  - kernel: ...`.
fn starts_an_option(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("--") || (line.starts_with('-') && line[1..].starts_with(char::is_alphabetic))
}

/// The figures the table takes from `tcpstack bench`'s JSON report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchOutcome {
    pub transactions_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub connect_p50_us: Option<f64>,
    pub connect_p99_us: Option<f64>,
    pub connections: f64,
    pub errors: f64,
}

/// Finds the JSON object in `tcpstack bench`'s stdout (all of it, or from the first line that
/// opens an object) and takes the figures out.
pub fn parse_bench(stdout: &str) -> Result<BenchOutcome> {
    let value: Value = serde_json::from_str(stdout.trim())
        .ok()
        .or_else(|| {
            let start = stdout
                .match_indices('\n')
                .map(|(i, _)| i + 1)
                .chain([0])
                .filter(|&i| stdout[i..].starts_with('{'))
                .min()?;
            serde_json::from_str(stdout[start..].trim()).ok()
        })
        .ok_or_else(|| anyhow!("no JSON report in its output: {}", procs::tail(stdout)))?;
    let number = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_f64)
            .ok_or_else(|| anyhow!("no {pointer} in its JSON report"))
    };
    let outcome = BenchOutcome {
        transactions_per_sec: number("/transactions_per_sec")?,
        p50_us: number("/latency/p50_us")?,
        p99_us: number("/latency/p99_us")?,
        connect_p50_us: number("/connect_latency/p50_us").ok(),
        connect_p99_us: number("/connect_latency/p99_us").ok(),
        connections: number("/connections_opened")?,
        errors: number("/errors").unwrap_or(0.0),
    };
    if outcome.transactions_per_sec <= 0.0 {
        bail!("no transaction completed ({} errors)", outcome.errors);
    }
    Ok(outcome)
}

/// Opens `count` connections from namespace B to `target` and holds them until dropped.
/// Fails when more than 1% cannot be established.
pub fn open_idle(lab: &Lab, target: SocketAddrV4, count: usize) -> Result<Vec<TcpStream>> {
    let started = Instant::now();
    let (streams, failed, last_error) = in_netns(&lab.spec.ns_b, move || {
        let mut streams = Vec::with_capacity(count);
        let mut failed = 0usize;
        let mut last_error = None;
        while streams.len() + failed < count && failed <= count / 100 {
            if check_interrupt().is_err() {
                break;
            }
            match TcpStream::connect_timeout(&target.into(), Duration::from_secs(3)) {
                Ok(stream) => streams.push(stream),
                Err(error) => {
                    failed += 1;
                    last_error = Some(error);
                }
            }
        }
        (streams, failed, last_error)
    })?;
    check_interrupt()?;
    if failed > count / 100 || streams.len() + failed < count {
        bail!(
            "only {} of {count} idle connections to {target} were established in {:.1} s ({failed} failed, last error: {})",
            streams.len(),
            started.elapsed().as_secs_f64(),
            last_error.map_or("none".into(), |e| e.to_string())
        );
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_json_gives_the_receivers_rate() {
        let json = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bytes":2000,"bits_per_second":9.0},
            "sum_received":{"bytes":1000000000,"bits_per_second":4000000000.0}}}"#;
        assert_eq!(
            parse_iperf3(json).expect("parses"),
            Bulk {
                bits_per_second: 4e9,
                bytes: 1e9,
                client_retransmits: None,
            }
        );
    }

    #[test]
    fn iperf3_errors_and_garbage_are_reported() {
        let refused = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#;
        let error = parse_iperf3(refused).expect_err("an error").to_string();
        assert!(error.contains("Connection refused"), "{error}");
        assert!(parse_iperf3("iperf3: error").is_err());
        assert!(
            parse_iperf3(r#"{"end":{"sum_received":{"bytes":0,"bits_per_second":0}}}"#).is_err()
        );
    }

    const RR: &str = r#"{"mode":"rr","target":"198.18.1.1:7","conns":1,"message_size":1,
        "duration_secs":2.0,"bytes_sent":40000,"bytes_received":40000,"transactions":40000,
        "transactions_per_sec":20000.0,"sent_bits_per_sec":160000.0,"received_bits_per_sec":160000.0,
        "connections_opened":1,"errors":0,
        "latency":{"count":40000,"p50_us":45,"p90_us":60,"p99_us":120,"p999_us":300,"max_us":900},
        "connect_latency":null}"#;

    #[test]
    fn bench_json_alone_or_after_other_lines() {
        let alone = parse_bench(RR).expect("parses");
        assert_eq!(alone.transactions_per_sec, 20_000.0);
        assert_eq!((alone.p50_us, alone.p99_us), (45.0, 120.0));
        assert_eq!(alone.connect_p50_us, None);
        let after = parse_bench(&format!("connecting...\n{RR}\n")).expect("parses");
        assert_eq!(after, alone);
    }

    #[test]
    fn bench_crr_has_connect_latency() {
        let crr = RR.replace(
            r#""connect_latency":null"#,
            r#""connect_latency":{"count":9,"p50_us":80,"p90_us":90,"p99_us":150,"p999_us":150,"max_us":150}"#,
        );
        let outcome = parse_bench(&crr).expect("parses");
        assert_eq!(outcome.connect_p50_us, Some(80.0));
        assert_eq!(outcome.connect_p99_us, Some(150.0));
    }

    const HELP_WITH_KERNEL: &str = "Load against a TCP server (the kernel's, too)

Usage: tcpstack bench [OPTIONS] --connect <ADDR:PORT>

Options:
      --connect <ADDR:PORT>
          The server
      --iface <IF>
          The network interface to use
      --backend <BACKEND>
          How to reach the wire

          Possible values:
          - xdp:    AF_XDP
          - raw:    AF_PACKET
          - kernel: the kernel's own TCP

      --json
          JSON output
  -h, --help
          Print help
";

    #[test]
    fn client_flags_follow_the_help() {
        assert_eq!(
            client_flags(HELP_WITH_KERNEL, "veth-b"),
            ["--backend", "kernel", "--json"]
        );
        // "kernel" in the description, but not among the backends: tcpstack's TCP on B's veth.
        let without = HELP_WITH_KERNEL
            .replace("          - kernel: the kernel's own TCP\n", "")
            .replace("      --json\n          JSON output\n", "");
        assert_eq!(client_flags(&without, "veth-b"), ["--iface", "veth-b"]);
        assert!(client_flags("Usage: tcpstack bench --connect <A>", "veth-b").is_empty());
    }

    #[test]
    fn option_help_stops_at_the_next_option() {
        let backend = option_help(HELP_WITH_KERNEL, "--backend").expect("present");
        assert!(backend.contains("- kernel:"), "{backend}");
        assert!(!backend.contains("--json"), "{backend}");
        assert!(option_help(HELP_WITH_KERNEL, "--jso").is_none());
        let json = option_help(HELP_WITH_KERNEL, "--json").expect("present");
        assert!(!json.contains("Print help"), "{json}");
    }

    #[test]
    fn bench_without_json_or_transactions_fails() {
        assert!(parse_bench("mode rr\ntransactions 0").is_err());
        let none = RR.replace(
            r#""transactions_per_sec":20000.0"#,
            r#""transactions_per_sec":0.0"#,
        );
        assert!(parse_bench(&none).is_err());
    }
}
