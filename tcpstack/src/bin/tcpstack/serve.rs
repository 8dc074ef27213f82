//! `tcpstack serve`: one app on one port until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tcpstack::runtime::control::{self, ControlError, ControlServer};
use tcpstack::runtime::{Stack, TcpListener};

use crate::{link, ServeArgs};

/// How long connections get to finish closing at shutdown before they are reset.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let link = link::open(&args.link, Some(args.port))?;
    let local = SocketAddrV4::new(link.addr, args.port);
    let listener = TcpListener::bind(&link.stack, local).with_context(|| {
        format!("cannot listen on {local} (is another tcpstack serving that port?)")
    })?;
    let _control = control_socket(&link.stack, &args)?;
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

    let stats_printer = args.stats_interval.filter(|secs| *secs > 0).map(|secs| {
        tokio::spawn(print_stats_every(
            link.stack.clone(),
            secs,
            args.stats_json.clone(),
        ))
    });

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
    eprintln!("{}", handshake_line(&stack));
    if let Some(path) = &args.stats_json {
        write_stats_json(&stack, path)?;
    }
    match outcome {
        Some(Err(error)) => Err(error).context("the app stopped"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The socket `tcpstack ss` asks; removed when the returned server drops. A path given with
/// `--control` must work; the default one is best effort (another server on the same interface
/// and port in another network namespace may hold it), with a warning when it does not.
fn control_socket(stack: &Stack, args: &ServeArgs) -> anyhow::Result<Option<ControlServer>> {
    if let Some(path) = &args.control {
        return Ok(Some(ControlServer::bind(stack, path)?));
    }
    let path = control::default_path(&args.link.iface, args.port);
    match ControlServer::bind(stack, &path) {
        Ok(server) => Ok(Some(server)),
        Err(error @ (ControlError::InUse(_) | ControlError::Bind { .. })) => {
            eprintln!("tcpstack: warning: {error}; `tcpstack ss` cannot reach this server (give it a path with --control)");
            Ok(None)
        }
        Err(error) => Err(error.into()),
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

async fn print_stats_every(stack: Stack, secs: u64, json: Option<PathBuf>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(secs));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        eprintln!("{}", summary(&stack));
        eprintln!("{}", handshake_line(&stack));
        if let Some(path) = &json {
            if let Err(error) = write_stats_json(&stack, path) {
                eprintln!("tcpstack: {error:#}");
            }
        }
    }
}

/// `handshakes (SYN received → ESTABLISHED): count 12  p50 85µs  p90 …  max 4.10ms`.
fn handshake_line(stack: &Stack) -> String {
    let report = stack.report().handshake;
    let mut line = format!(
        "tcpstack handshakes (SYN received → ESTABLISHED): {}",
        report.passive
    );
    if report.active.count > 0 {
        line.push_str(&format!(
            "\ntcpstack handshakes (SYN sent → ESTABLISHED): {}",
            report.active
        ));
    }
    line
}

/// Replaces `path` in one step (write, then rename), so a reader never sees half a file.
fn write_stats_json(stack: &Stack, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(&stack.report())?;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, json)
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("cannot write the statistics to {}", path.display()))
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
