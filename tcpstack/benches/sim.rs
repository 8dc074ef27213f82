//! Simulator throughput: MB of simulated transfer per CPU second, and the Mbit/s the simulated
//! link achieved in virtual time, for a few link settings; the same transfer with no `tracing`
//! subscriber and with one at info level (the endpoint's debug spans and segment lines off),
//! side by side; then the goodput of a 16 MB transfer under random loss for NewReno without
//! SACK, NewReno with SACK, CUBIC with SACK and BBR with SACK (issues 5 and 9), and the most
//! packets each left queued at the bottleneck. Printed, never asserted.
//!
//! `cargo bench -p tcpstack --bench sim` (`-- throughput`, `-- logging` or `-- loss` for one
//! table only)

use std::time::Duration;

use tcpstack::sim::{run_transfer, LinkConfig, TransferConfig};
use tcpstack::tcp::CongestionAlgorithm;

/// CPU time this process has used so far.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_PROCESS_CPUTIME_ID is always supported
    // on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The tables, by the name that selects one on the command line.
const TABLES: [(&str, fn()); 3] = [
    ("throughput", throughput),
    ("logging", logging_off_cost),
    ("loss", loss_table),
];

fn main() {
    // cargo passes `--bench`; any other argument naming a table selects it.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| TABLES.iter().any(|(name, _)| name == arg))
        .collect();
    for (name, table) in TABLES {
        if chosen.is_empty() || chosen.iter().any(|arg| arg == name) {
            table();
        }
    }
}

/// "Logging must cost nothing measurable when it is off": one transfer, alternately with no
/// subscriber and with the binary's kind of subscriber (fmt, EnvFilter) at info level, which
/// leaves every span and segment line of the endpoint (debug) disabled. The best of a few
/// rounds of each, to keep other load on the machine out of the figures.
fn logging_off_cost() {
    const ROUNDS: usize = 5;
    let megabytes = 64usize;
    let bytes = megabytes << 20;
    let config = TransferConfig::new(1, LinkConfig::default(), bytes, 0);
    let run = |config: &TransferConfig| {
        let before = cpu_time();
        let outcome = run_transfer(config);
        (cpu_time() - before, outcome)
    };
    let mut quiet = Duration::MAX;
    let mut info = Duration::MAX;
    for _ in 0..ROUNDS {
        match run(&config) {
            (cpu, Ok(_)) => quiet = quiet.min(cpu),
            (_, Err(error)) => {
                println!("logging: the transfer failed: {error}");
                return;
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .finish();
        match tracing::subscriber::with_default(subscriber, || run(&config)) {
            (cpu, Ok(_)) => info = info.min(cpu),
            (_, Err(error)) => {
                println!("logging: the transfer failed: {error}");
                return;
            }
        }
    }
    println!();
    println!("logging off: {megabytes} MB one way, 100 Mbit/s, 5 ms, best of {ROUNDS} rounds each");
    println!(
        "{:<36} {:>12} {:>14}",
        "subscriber", "CPU s", "MB per CPU s"
    );
    for (name, cpu) in [("none", quiet), ("fmt + EnvFilter at info", info)] {
        let secs = cpu.as_secs_f64();
        println!(
            "{name:<36} {secs:>12.3} {:>14.1}",
            megabytes as f64 / secs.max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "ratio (info / none CPU time): {:.3}",
        info.as_secs_f64() / quiet.as_secs_f64().max(f64::MIN_POSITIVE)
    );
}

/// Goodput (application bytes over virtual transfer time) of 16 MB one way over 100 Mbit/s with
/// a 100-packet bottleneck queue, the loss rate applied in both directions, one seed per cell.
fn loss_table() {
    let bytes = 16usize << 20;
    let variants = [
        ("NewReno", false, CongestionAlgorithm::NewReno),
        ("NewReno+SACK", true, CongestionAlgorithm::NewReno),
        ("CUBIC+SACK", true, CongestionAlgorithm::Cubic),
        ("BBR+SACK", true, CongestionAlgorithm::Bbr),
    ];
    println!();
    println!("goodput of a 16 MB transfer, Mbit/s (RTOs) [most packets queued at the bottleneck],");
    println!("100 Mbit/s link, 100-packet queue, 4 MB buffers");
    print!("{:<6} {:>6}", "RTT", "loss %");
    for (name, _, _) in &variants {
        print!(" {name:>24}");
    }
    println!();
    for rtt_ms in [1u64, 50] {
        for loss in [0.0, 0.001, 0.01, 0.02, 0.03, 0.05, 0.10] {
            print!("{:<6} {:>6}", format!("{rtt_ms} ms"), loss * 100.0);
            for (_, sack, congestion) in variants {
                let link = LinkConfig {
                    delay: Duration::from_micros(rtt_ms * 500),
                    bandwidth_bps: Some(100_000_000),
                    queue_packets: 100,
                    loss,
                    ..LinkConfig::default()
                };
                let mut config = TransferConfig::new(1, link, bytes, 0);
                let connection = &mut config.endpoint.connection;
                connection.sack = sack;
                connection.congestion = congestion;
                connection.send_buffer = 4 << 20;
                connection.recv_buffer = 4 << 20;
                match run_transfer(&config) {
                    Ok(report) => {
                        let secs = report.transfer_time.as_secs_f64().max(f64::MIN_POSITIVE);
                        let cell = format!(
                            "{:.1} ({}) [{}]",
                            bytes as f64 * 8.0 / secs / 1e6,
                            report.client_connection.rtos,
                            report.to_server.max_queue
                        );
                        print!(" {cell:>24}");
                    }
                    Err(error) => print!(" {:>24}", format!("failed: {error}")),
                }
            }
            println!();
        }
    }
}

fn throughput() {
    let megabytes = 16usize;
    let bytes = megabytes << 20;
    let cases = [
        (
            "ideal link, 1 ms",
            LinkConfig::ideal(Duration::from_millis(1)),
        ),
        (
            "1 Gbit/s, 1 ms, 256-packet queue",
            LinkConfig {
                delay: Duration::from_millis(1),
                bandwidth_bps: Some(1_000_000_000),
                queue_packets: 256,
                ..LinkConfig::default()
            },
        ),
        ("100 Mbit/s, 5 ms", LinkConfig::default()),
        (
            "100 Mbit/s, 5 ms, 1% loss",
            LinkConfig {
                loss: 0.01,
                ..LinkConfig::default()
            },
        ),
        (
            "100 Mbit/s, 5 ms, 2% loss/dup/reorder/corrupt",
            LinkConfig {
                loss: 0.02,
                duplicate: 0.02,
                reorder: 0.02,
                corrupt: 0.02,
                ..LinkConfig::default()
            },
        ),
    ];
    println!("simulator throughput, {megabytes} MB one way per run");
    println!(
        "{:<48} {:>12} {:>14} {:>10} {:>12}",
        "link", "CPU s", "MB per CPU s", "sim Mbit/s", "retransmits"
    );
    for (name, link) in cases {
        let config = TransferConfig::new(1, link, bytes, 0);
        let before = cpu_time();
        let report = match run_transfer(&config) {
            Ok(report) => report,
            Err(error) => {
                println!("{name:<48} failed: {error}");
                continue;
            }
        };
        let cpu = (cpu_time() - before).as_secs_f64();
        let mbit_per_s =
            bytes as f64 * 8.0 / report.transfer_time.as_secs_f64().max(f64::MIN_POSITIVE) / 1e6;
        println!(
            "{name:<48} {cpu:>12.3} {:>14.1} {mbit_per_s:>10.1} {:>12}",
            megabytes as f64 / cpu,
            report.client.retransmits + report.server.retransmits
        );
    }
}
