//! `tcpstack serve`: one app on one port until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tcpstack::runtime::{Stack, TcpListener};

use crate::{link, ServeArgs};

/// How long connections get to finish closing at shutdown before they are reset.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.pcap.is_some() {
        anyhow::bail!("--pcap is not supported by this build yet");
    }
    let link = link::open(&args.link, Some(args.port))?;
    let local = SocketAddrV4::new(link.addr, args.port);
    let listener = TcpListener::bind(&link.stack, local).with_context(|| {
        format!("cannot listen on {local} (is another tcpstack serving that port?)")
    })?;
    // The port is reserved on the link now: announce it, and nothing else on stdout.
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "listening on {local} backend={} iface={}",
            link.backend.name(),
            link.iface
        )?;
        stdout.flush()?;
    }

    let stats_printer = args
        .stats_interval
        .filter(|secs| *secs > 0)
        .map(|secs| tokio::spawn(print_stats_every(link.stack.clone(), secs)));

    let outcome = tokio::select! {
        served = args.app.serve(listener) => Some(served),
        signal = shutdown_signal() => {
            signal?;
            None
        }
    };
    // Leaving the select dropped the app: its connections are closing gracefully.
    if let Some(task) = stats_printer {
        task.abort();
    }
    let stack = link.stack.clone();
    link.stack.shutdown(SHUTDOWN_GRACE).await;
    let summary = summary(&stack);
    eprintln!("{summary}");
    if let Some(path) = &args.stats_json {
        std::fs::write(path, serde_json::to_vec_pretty(&stats_json(&stack))?)
            .with_context(|| format!("cannot write the statistics to {}", path.display()))?;
    }
    match outcome {
        Some(Err(error)) => Err(error).context("the app stopped"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.context("cannot install the SIGINT handler"),
        _ = terminate.recv() => Ok(()),
    }
}

async fn print_stats_every(stack: Stack, secs: u64) {
    let mut ticks = tokio::time::interval(Duration::from_secs(secs));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        eprintln!("{}", summary(&stack));
    }
}

/// One paragraph for a person.
fn summary(stack: &Stack) -> String {
    let runtime = stack.stats();
    let endpoint = stack.with_endpoint(|endpoint| endpoint.stats());
    let link = stack.backend_stats();
    format!(
        "tcpstack summary: {} connections established ({} accepted, {} opened by us), {} reset \
         and {} timed out, {} still open and {} in TIME-WAIT at exit; {} packets in ({} bytes) \
         and {} out ({} bytes), {} retransmitted, {} RSTs sent and {} received, {} packets \
         dropped; the link moved {} frames in and {} out, dropping {} on transmit and {} in the \
         kernel; the XDP program redirected {} packets and passed {} to the kernel.",
        endpoint.connections_established,
        runtime.accepted,
        runtime.connected,
        runtime.resets,
        runtime.timeouts,
        endpoint.connections_now,
        endpoint.time_wait_now,
        endpoint.packets_in,
        endpoint.bytes_in,
        endpoint.packets_out,
        endpoint.bytes_out,
        endpoint.retransmits,
        endpoint.resets_sent,
        endpoint.resets_received,
        endpoint.drops.total(),
        link.rx_frames,
        link.tx_frames,
        link.tx_dropped,
        link.kernel_dropped,
        link.xdp.redirected,
        link.xdp.passed,
    )
}

fn stats_json(stack: &Stack) -> serde_json::Value {
    let runtime = stack.stats();
    serde_json::json!({
        "runtime": {
            "accepted": runtime.accepted,
            "connected": runtime.connected,
            "frames_received": runtime.frames_received,
            "frames_ignored": runtime.frames_ignored,
            "frames_sent": runtime.frames_sent,
            "send_errors": runtime.send_errors,
            "resets": runtime.resets,
            "timeouts": runtime.timeouts,
        },
        "endpoint": stack.with_endpoint(|endpoint| endpoint.stats()),
        "link": stack.backend_stats(),
    })
}
