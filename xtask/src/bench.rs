//! `cargo xtask bench`: tcpstack against the kernel's TCP on the lab's link (issue 4, item 6).
//!
//! Two namespaces joined by a veth pair; the servers run in A, stock clients in B. Every round
//! serves the same load from the kernel's TCP first, then from `tcpstack serve --backend xdp`,
//! then `--backend raw`: iperf3 bulk (both directions, 1 and 4 streams), 1-byte
//! request/response and connect-request-response-close (`tcpstack bench`), server CPU per GB
//! and per 10k connections, server memory with 10 000 idle connections, the kernel client's
//! retransmissions and tcpstack's receive-loss counters at -P 4, and the loss rows of
//! `bench/loss.rs` (in a lab of their own, kernel and xdp only). The medians over the
//! rounds, and tcpstack / kernel for each row, go to the terminal, `target/bench/report.json`,
//! `target/bench/report.svg` and a README snippet. A tcpstack row that fails shows as
//! `failed: <reason>` and the rest goes on.

mod load;
mod loss;
mod procs;
mod report;
mod ring;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tcpstack_integration::{Lab, LabSpec};

use crate::{build, deps, require_root, step, tcpstack_bin, workspace_root};
use load::{BenchClient, Load, Service};
use procs::{check_interrupt, cpu_seconds, pause, rss_bytes};
use report::{Machine, Results, RunInfo, Target};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A short run (under three minutes): fewer rounds and shorter tests.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of alternation [default: 5, or 2 with --quick].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Use the binary already built instead of running `cargo xtask build` first.
    #[arg(long)]
    pub no_build: bool,
    /// Internal: the kernel-side echo server, run by the benchmark in namespace A.
    #[arg(long, value_name = "ADDR:PORT", hide = true)]
    pub kernel_echo_server: Option<SocketAddrV4>,
}

/// The lab of the benchmark: like `cargo xtask lab`'s, under its own names so that a running
/// demo is left alone.
fn bench_lab_spec() -> LabSpec {
    LabSpec {
        ns_a: "tcps-bench-a".into(),
        ns_b: "tcps-bench-b".into(),
        if_a: "veth-a".into(),
        if_b: "veth-b".into(),
        addr_a: Ipv4Addr::new(198, 18, 1, 1),
        addr_b: Ipv4Addr::new(198, 18, 1, 2),
        prefix_len: 24,
        ns_link: None,
        routed_mtu: None,
    }
}

/// The lab of the loss rows, made after the main one is gone: the same addresses, the link
/// through a bridge in a third namespace where iptables drops packets (see `LabSpec::lossy`).
fn loss_lab_spec() -> LabSpec {
    LabSpec {
        ns_a: "tcps-bench-loss-a".into(),
        ns_b: "tcps-bench-loss-b".into(),
        ..bench_lab_spec()
    }
    .lossy()
}

/// Idle connections held open for the memory row.
const IDLE_CONNECTIONS: usize = 10_000;

struct Plan {
    rounds: usize,
    /// Rounds (from the first) that also measure memory with idle connections.
    idle_rounds: usize,
    /// Rounds of the loss rows (2 at most: each costs six iperf3 runs and one echo per sender).
    loss_rounds: usize,
    /// Seconds of each iperf3 run of the loss rows.
    loss_secs: u64,
    /// Only the 2 % loss rows.
    quick: bool,
    load: Load,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if let Some(addr) = args.kernel_echo_server {
        return procs::kernel_echo_server(addr);
    }
    require_root("cargo xtask bench (it creates network namespaces and attaches XDP)")?;
    deps::apt(deps::BENCH_PACKAGES)?;
    if !args.no_build {
        build()?;
    }
    let tcpstack = tcpstack_bin();
    if !tcpstack.exists() {
        bail!("{} is missing: run `cargo xtask build`", tcpstack.display());
    }
    let out_dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 5 }).max(1);
    let plan = Plan {
        rounds,
        idle_rounds: if args.quick { 1 } else { rounds },
        loss_rounds: if args.quick { 1 } else { rounds.min(2) },
        loss_secs: if args.quick { LOSS_MIN_SECS } else { 8 },
        quick: args.quick,
        load: Load {
            bulk_secs: if args.quick { 2 } else { 10 },
            rr_secs: if args.quick { 2 } else { 10 },
            crr_workers: 4,
            idle_connections: IDLE_CONNECTIONS,
            scratch: out_dir.clone(),
            congestion: None,
        },
    };
    procs::catch_interrupts();
    procs::raise_nofile_limit()?;

    let spec = bench_lab_spec();
    let loss_spec = loss_lab_spec();
    for ns in [&spec.ns_a, &spec.ns_b, &loss_spec.ns_a, &loss_spec.ns_b]
        .into_iter()
        .chain(&loss_spec.ns_link)
    {
        tcpstack_integration::delete_namespace(ns)
            .with_context(|| format!("removing {ns} left by an earlier run"))?;
    }
    step(&format!(
        "creating the lab: {} ({} on {}) <-> {} ({} on {})",
        spec.ns_a, spec.addr_a, spec.if_a, spec.ns_b, spec.addr_b, spec.if_b
    ));
    // Dropping the lab (on an error, or Ctrl-C) kills every process in it and removes it.
    let lab = Lab::create(spec)?;
    let started_utc = utc_now();
    let started = Instant::now();
    let mut results = Results::default();
    let outcome = measure(&lab, &tcpstack, &plan, &mut results);
    let ceiling = match &outcome {
        Ok(_) => ring::measure(&lab, &tcpstack)?,
        Err(_) => ring::RingCeiling::default(),
    };
    step("removing the lab");
    lab.destroy()?;
    let commands = outcome?;
    let mut loss_results = loss::LossResults::default();
    measure_loss(loss_spec, &tcpstack, &plan, &mut loss_results)?;

    let run = RunInfo {
        quick: args.quick,
        rounds: plan.rounds,
        bulk_secs: plan.load.bulk_secs,
        rr_secs: plan.load.rr_secs,
        crr_workers: plan.load.crr_workers,
        idle_connections: plan.load.idle_connections,
        started_utc,
        elapsed_secs: started.elapsed().as_secs_f64(),
        machine: machine(),
        commands,
    };
    let json_path = out_dir.join("report.json");
    let svg_path = out_dir.join("report.svg");
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&{
            let mut json = report::to_json(&results, &run);
            json["loss"] = loss::to_json(&loss_results);
            json["receive_loss"] = report::receive_loss_json(&results);
            json["ring"] = ring::to_json(&results, &ceiling);
            json
        })?,
    )
    .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&svg_path, report::svg(&results))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    let loss_svg_path = out_dir.join("loss.svg");
    std::fs::write(&loss_svg_path, loss::svg(&loss_results))
        .with_context(|| format!("writing {}", loss_svg_path.display()))?;
    let _ = std::fs::remove_file(out_dir.join("client.stdout"));
    let _ = std::fs::remove_file(out_dir.join("client.stderr"));

    println!();
    print!("{}", report::table(&results));
    println!();
    print!("{}", ring::markdown(&results, &ceiling));
    println!();
    print!("{}", loss::table(&loss_results));
    let notes = report::notes(&results);
    if !notes.is_empty() {
        println!("\nFailures (the full output of each is in report.json):");
        print!("{}", report::notes_text(&notes));
    }
    println!(
        "\nxtask: bench took {:.0} s (build excluded); wrote {}, {} and {}",
        run.elapsed_secs,
        json_path.display(),
        svg_path.display(),
        loss_svg_path.display()
    );
    println!(
        "\n----- README snippet -----\n{}\n{}\n{}",
        report::markdown(&results, &run),
        ring::markdown(&results, &ceiling),
        loss::markdown(&loss_results)
    );
    Ok(())
}

/// All rounds; the client command lines used, for the report.
fn measure(lab: &Lab, tcpstack: &Path, plan: &Plan, results: &mut Results) -> Result<Vec<String>> {
    prepare_peer(lab)?;
    let client = BenchClient::probe(tcpstack, lab).map_err(|e| format!("{e:#}"));
    let mut commands = vec![procs::describe(&load::iperf3_command(
        lab, &plan.load, 4, true,
    ))];
    match &client {
        Ok(client) => {
            for mode in ["rr", "crr"] {
                let conns = if mode == "rr" {
                    1
                } else {
                    plan.load.crr_workers
                };
                commands.push(procs::describe(&client.command(
                    tcpstack,
                    lab,
                    mode,
                    conns,
                    plan.load.rr_secs,
                )));
            }
        }
        Err(why) => println!("xtask: warning: the rr and crr rows cannot run: {why}"),
    }
    for round in 1..=plan.rounds {
        for target in Target::ALL {
            let label = format!("round {round}/{} {:<6}", plan.rounds, target.name());
            bulk_rows(lab, tcpstack, &plan.load, target, &label, results)?;
        }
        for target in Target::ALL {
            let label = format!("round {round}/{} {:<6}", plan.rounds, target.name());
            echo_rows(lab, tcpstack, &plan.load, &client, target, &label, results)?;
        }
        if round <= plan.idle_rounds {
            for target in Target::ALL {
                let label = format!("round {round}/{} {:<6}", plan.rounds, target.name());
                idle_row(lab, tcpstack, &plan.load, target, &label, results)?;
            }
        }
    }
    Ok(commands)
}

/// The peer namespace opens tens of thousands of short connections to one server port, and the
/// client closes first: without TIME-WAIT buckets in B (`tcp_max_tw_buckets=0`) its ports do not
/// pile up from one target's crr run into the next target's rows (which would make the later
/// targets pay for the earlier ones, and the idle row crawl through a nearly exhausted range).
/// Also Linux's widest range below tcpstack's active-open ports (61000+).
fn prepare_peer(lab: &Lab) -> Result<()> {
    lab.exec_in(
        lab.ns_b(),
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.tcp_max_tw_buckets=0",
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 60999",
        ],
    )?;
    Ok(())
}

/// A failure as a table cell and the JSON keep it: the whole chain of context on one line.
fn reason(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

/// iperf3 client->server and -R, 1 and 4 streams, and the server's CPU per GB over all four.
fn bulk_rows(
    lab: &Lab,
    tcpstack: &Path,
    load: &Load,
    target: Target,
    label: &str,
    results: &mut Results,
) -> Result<()> {
    const RUNS: [(&str, usize, bool); 4] = [
        (report::BULK_UP_1, 1, false),
        (report::BULK_UP_4, 4, false),
        (report::BULK_DOWN_1, 1, true),
        (report::BULK_DOWN_4, 4, true),
    ];
    let stats_path = load.scratch.join("serve-stats.json");
    let _ = std::fs::remove_file(&stats_path);
    let flags = match target {
        Target::Kernel => Vec::new(),
        _ => load::stats_flags(&stats_path),
    };
    let mut server = match load::start_server_with(lab, tcpstack, target, Service::Iperf3, &flags) {
        Ok(server) => server,
        Err(error) => {
            check_interrupt()?;
            let why = reason(&error);
            step(&format!("{label} iperf3 server failed: {why}"));
            for (row, ..) in RUNS {
                results.fail(row, target, &why);
            }
            results.fail(report::CPU_PER_GB, target, &why);
            return Ok(());
        }
    };
    let (mut cpu, mut bytes) = (0.0, 0.0);
    let mut cpu_failure = None;
    let mut wedged: Option<String> = None;
    for (row, streams, reverse) in RUNS {
        if let Some(why) = &wedged {
            results.fail(row, target, why);
            continue;
        }
        pause(Duration::from_millis(300))?;
        let counted = target != Target::Kernel && streams == 4;
        let measured = server.check_alive().and_then(|()| {
            // A counter that cannot be read fails its own row, not the throughput's.
            let loss_before = counted.then(|| load::ReceiveLoss::read(&stats_path));
            let before = cpu_seconds(server.pid())?;
            let bulk = load::iperf3(lab, load, streams, reverse)?;
            let used = cpu_seconds(server.pid())? - before;
            let lost = loss_before.map(|before| {
                let before = before?;
                // The server writes its counters every second.
                pause(Duration::from_millis(1100))?;
                Ok::<_, anyhow::Error>(load::ReceiveLoss::read(&stats_path)?.since(&before))
            });
            Ok((bulk, used, lost))
        });
        check_interrupt()?;
        let direction = if reverse { "-R" } else { "  " };
        match measured {
            Ok((bulk, used, lost)) => {
                step(&format!(
                    "{label} iperf3 {direction} -P {streams}: {:.2} Gbit/s, server CPU {used:.2} s",
                    bulk.bits_per_second / 1e9
                ));
                results.record(row, target, bulk.bits_per_second / 1e9);
                if let (false, 4, Some(retransmits)) = (reverse, streams, bulk.client_retransmits) {
                    step(&format!(
                        "{label} kernel client retransmitted {retransmits}"
                    ));
                    results.record(report::RETRANSMITS_UP_4, target, retransmits);
                }
                if let Some(Err(error)) = &lost {
                    let why = reason(error);
                    step(&format!("{label} server receive loss: failed: {why}"));
                    results.fail(report::SERVER_DROPS_4, target, &why);
                }
                if let Some(Ok(lost)) = lost {
                    step(&format!(
                        "{label} server receive loss: {:.0} frames (XDP rx_dropped {:.0}, \
                         rx_ring_full {:.0}, beyond the window {:.0}); fill ring empty {:.0} \
                         times, tx ring empty {:.0}; {:.0} bytes cut by a full receive buffer",
                        lost.frames_lost(),
                        lost.rx_dropped,
                        lost.rx_ring_full,
                        lost.beyond_window,
                        lost.fill_ring_empty,
                        lost.tx_ring_empty,
                        lost.trimmed_bytes
                    ));
                    results.record(report::SERVER_DROPS_4, target, lost.frames_lost());
                    results.receive_loss.push((row, target, lost));
                }
                cpu += used;
                bytes += bulk.bytes;
            }
            Err(error) => {
                let why = reason(&error);
                step(&format!(
                    "{label} iperf3 {direction} -P {streams}: failed: {why}"
                ));
                results.fail(row, target, &why);
                if procs::hung(&error) {
                    wedged = Some(format!("skipped: an earlier iperf3 run hung: {why}"));
                }
                cpu_failure.get_or_insert(why);
            }
        }
    }
    server.stop();
    match cpu_failure {
        None if bytes > 0.0 => results.record(report::CPU_PER_GB, target, cpu / (bytes / 1e9)),
        None => results.fail(report::CPU_PER_GB, target, "no bytes moved"),
        Some(why) => results.fail(
            report::CPU_PER_GB,
            target,
            &format!("an iperf3 run failed: {why}"),
        ),
    }
    Ok(())
}

/// The shortest iperf3 run of the loss rows, `--quick` included.
const LOSS_MIN_SECS: u64 = 5;

/// The loss rows, in a lab of their own (the bridge in between would change every other row).
fn measure_loss(
    spec: LabSpec,
    tcpstack: &Path,
    plan: &Plan,
    results: &mut loss::LossResults,
) -> Result<()> {
    results.senders = loss::senders(tcpstack)?;
    step(&format!(
        "creating the loss lab: {} <-> bridge in {} <-> {}; senders: {}",
        spec.ns_a,
        spec.ns_link.as_deref().unwrap_or("?"),
        spec.ns_b,
        results
            .senders
            .iter()
            .map(loss::Sender::label)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let lab = Lab::create(spec)?;
    // A run shorter than 5 s is one or two retransmission timeouts more or less at 3 %.
    let load = Load {
        bulk_secs: plan.loss_secs.max(LOSS_MIN_SECS),
        ..plan.load.clone()
    };
    // --quick keeps the 2 % rows only.
    let levels: Vec<_> = loss::LOSS_LEVELS
        .iter()
        .filter(|(p, ..)| !plan.quick || *p == 0.02)
        .copied()
        .collect();
    let outcome = (|| {
        prepare_peer(&lab)?;
        for round in 1..=plan.loss_rounds {
            let label = format!("loss {round}/{}", plan.loss_rounds);
            loss::round(&lab, tcpstack, &load, &levels, &label, results)?;
        }
        Ok(())
    })();
    step("removing the loss lab");
    lab.destroy()?;
    outcome
}

/// rr (1 connection) and crr (a few workers) with `tcpstack bench` against the echo servers.
fn echo_rows(
    lab: &Lab,
    tcpstack: &Path,
    load: &Load,
    client: &Result<BenchClient, String>,
    target: Target,
    label: &str,
    results: &mut Results,
) -> Result<()> {
    const RR_ROWS: [&str; 4] = [
        report::RR_RATE,
        report::RR_P50,
        report::RR_P99,
        report::RR_CPU,
    ];
    const CRR_ROWS: [&str; 4] = [
        report::CRR_RATE,
        report::CONNECT_P50,
        report::CONNECT_P99,
        report::CPU_PER_10K,
    ];
    let fail_all = |results: &mut Results, why: &str| {
        for row in RR_ROWS.iter().chain(&CRR_ROWS) {
            results.fail(row, target, why);
        }
    };
    let client = match client {
        Ok(client) => client,
        Err(why) => {
            fail_all(results, why);
            return Ok(());
        }
    };
    let mut server = match load::start_server(lab, tcpstack, target, Service::Echo) {
        Ok(server) => server,
        Err(error) => {
            check_interrupt()?;
            let why = reason(&error);
            step(&format!("{label} echo server failed: {why}"));
            fail_all(results, &why);
            return Ok(());
        }
    };

    pause(Duration::from_millis(200))?;
    // The server's CPU over the run, as cores busy: what busy polling costs shows here.
    let rr = server.check_alive().and_then(|()| {
        let before = cpu_seconds(server.pid())?;
        let started = std::time::Instant::now();
        let rr = client.run(tcpstack, lab, load, "rr", 1)?;
        let cores = (cpu_seconds(server.pid())? - before) / started.elapsed().as_secs_f64();
        Ok((rr, cores))
    });
    check_interrupt()?;
    match &rr {
        Ok((rr, cores)) => {
            step(&format!(
                "{label} rr: {:.0} trans/s, p50 {} us, p99 {} us, server CPU {cores:.2} cores",
                rr.transactions_per_sec, rr.p50_us, rr.p99_us
            ));
            results.record(report::RR_RATE, target, rr.transactions_per_sec);
            results.record(report::RR_P50, target, rr.p50_us);
            results.record(report::RR_P99, target, rr.p99_us);
            results.record(report::RR_CPU, target, *cores);
        }
        Err(error) => {
            let why = reason(error);
            step(&format!("{label} rr: failed: {why}"));
            for row in RR_ROWS {
                results.fail(row, target, &why);
            }
        }
    }

    pause(Duration::from_millis(200))?;
    let crr = match &rr {
        Err(error) if procs::hung(error) => Err(anyhow::anyhow!(
            "skipped: the rr run hung: {}",
            reason(error)
        )),
        _ => Ok(()),
    };
    let crr = crr.and_then(|()| server.check_alive()).and_then(|()| {
        let before = cpu_seconds(server.pid())?;
        let crr = client.run(tcpstack, lab, load, "crr", load.crr_workers)?;
        let used = cpu_seconds(server.pid())? - before;
        let (Some(p50), Some(p99)) = (crr.connect_p50_us, crr.connect_p99_us) else {
            bail!("the crr report has no connect latency");
        };
        if crr.connections <= 0.0 {
            bail!("no connection completed");
        }
        Ok((crr, p50, p99, used))
    });
    check_interrupt()?;
    match crr {
        Ok((crr, p50, p99, used)) => {
            let per_10k = used / crr.connections * 10_000.0;
            step(&format!(
                "{label} crr: {:.0} conn/s, connect p50 {p50} us, p99 {p99} us, server CPU {per_10k:.3} s/10k ({} errors)",
                crr.transactions_per_sec, crr.errors
            ));
            results.record(report::CRR_RATE, target, crr.transactions_per_sec);
            results.record(report::CONNECT_P50, target, p50);
            results.record(report::CONNECT_P99, target, p99);
            results.record(report::CPU_PER_10K, target, per_10k);
        }
        Err(error) => {
            let why = reason(&error);
            step(&format!("{label} crr: failed: {why}"));
            for row in CRR_ROWS {
                results.fail(row, target, &why);
            }
        }
    }
    server.stop();
    Ok(())
}

/// The echo server's RSS while 10 000 idle connections from the peer are established.
fn idle_row(
    lab: &Lab,
    tcpstack: &Path,
    load: &Load,
    target: Target,
    label: &str,
    results: &mut Results,
) -> Result<()> {
    let measured =
        load::start_server(lab, tcpstack, target, Service::Echo).and_then(|mut server| {
            let baseline = rss_bytes(server.pid())?;
            let echo = SocketAddrV4::new(lab.addr_a(), load::ECHO_PORT);
            let held = load::open_idle(lab, echo, load.idle_connections);
            let measured = held.and_then(|held| {
                // Let the server finish accepting what the handshakes queued.
                pause(Duration::from_secs(1))?;
                server.check_alive()?;
                let rss = rss_bytes(server.pid())?;
                drop(held);
                Ok(rss)
            });
            pause(Duration::from_millis(500))?;
            server.stop();
            Ok((baseline, measured?))
        });
    check_interrupt()?;
    match measured {
        Ok((baseline, rss)) => {
            step(&format!(
                "{label} {} idle connections: server RSS {:.1} MB (from {:.1} MB idle)",
                load.idle_connections,
                rss as f64 / 1e6,
                baseline as f64 / 1e6
            ));
            results.record(report::IDLE_RSS, target, rss as f64 / 1e6);
        }
        Err(error) => {
            let why = reason(&error);
            step(&format!("{label} idle connections: failed: {why}"));
            results.fail(report::IDLE_RSS, target, &why);
        }
    }
    Ok(())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".into(), |(_, m)| m.trim().to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |k| k.trim().to_owned());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel,
        link: "veth pair between two namespaces, tx offloads off, AF_XDP in copy mode".into(),
    }
}

fn utc_now() -> String {
    crate::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map_or_else(|_| "unknown date".into(), |d| d.trim().to_owned())
}
