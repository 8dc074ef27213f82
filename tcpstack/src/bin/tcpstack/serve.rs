//! `tcpstack serve`: one app on one port until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tcpstack::runtime::control::{self, ControlError, ControlServer};
use tcpstack::runtime::{Stack, TcpListener};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::{link, ServeArgs};

/// How long connections get to finish closing at shutdown before they are reset.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Before anything is installed: from here on SIGINT and SIGTERM end the server through the
    // path below, never through the default action that would leave the XDP program or the
    // iptables rules behind.
    let mut signals = ShutdownSignals::install()?;
    let link = link::open(&args.link, Some(args.port))?;
    let ending = serve_until_stopped(&link, &args, &mut signals).await;
    // Every way out after the link opened comes through here: the connections close, and the
    // backend is closed (XDP detached, iptables rules removed) before `run` returns.
    let stack = link.stack.clone();
    link.stack.shutdown(SHUTDOWN_GRACE).await;
    let ending = ending?;
    eprintln!("{}", summary(&stack));
    for line in queue_lines(&stack) {
        eprintln!("{line}");
    }
    eprintln!("{}", handshake_line(&stack));
    if let Some(path) = &args.stats_json {
        write_stats_json(&stack, path)?;
    }
    match ending {
        Ending::AppStopped(Err(error)) => Err(error).context("the app stopped"),
        Ending::AppStopped(Ok(())) | Ending::Signal => Ok(ExitCode::SUCCESS),
    }
}

/// Why serving ended.
enum Ending {
    /// SIGINT or SIGTERM.
    Signal,
    /// The app returned on its own.
    AppStopped(std::io::Result<()>),
}

/// Listens, announces it, and serves until a signal or the app's end. The app and the control
/// socket are gone when this returns; the stack is left to the caller to shut down.
async fn serve_until_stopped(
    link: &link::Link,
    args: &ServeArgs,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<Ending> {
    let local = SocketAddrV4::new(link.addr, args.port);
    let listener = TcpListener::bind(&link.stack, local).with_context(|| {
        format!("cannot listen on {local} (is another tcpstack serving that port?)")
    })?;
    let _control = control_socket(&link.stack, args)?;
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
    let ending = tokio::select! {
        served = args.app.serve(listener) => Ending::AppStopped(served),
        () = signals.recv() => Ending::Signal,
    };
    // Leaving the select dropped the app: its connections are closing gracefully.
    if let Some(task) = stats_printer {
        task.abort();
    }
    Ok(ending)
}

/// SIGINT and SIGTERM, caught from the moment this value exists: tokio installs a handler when
/// the `Signal` is created (`tokio::signal::ctrl_c` only at its first poll, too late for a
/// signal sent right after the `listening on` line).
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())
                .context("cannot install the SIGINT handler")?,
            terminate: signal(SignalKind::terminate())
                .context("cannot install the SIGTERM handler")?,
        })
    }

    /// The next SIGINT or SIGTERM (one that arrived before the call counts).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
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

async fn print_stats_every(stack: Stack, secs: u64, json: Option<PathBuf>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(secs));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        eprintln!("{}", summary(&stack));
        for line in queue_lines(&stack) {
            eprintln!("{line}");
        }
        eprintln!("{}", handshake_line(&stack));
        if let Some(path) = &json {
            if let Err(error) = write_stats_json(&stack, path) {
                eprintln!("tcpstack: {error:#}");
            }
        }
    }
}

/// One line per AF_XDP socket (none for the raw backend): its mode, what it moved, how full
/// its rings are and what the kernel dropped (XDP_STATISTICS).
fn queue_lines(stack: &Stack) -> Vec<String> {
    stack
        .ring_stats()
        .iter()
        .map(|q| {
            format!(
                "tcpstack xdp queue {} ({} mode): {} frames in and {} out; rings hold rx {}, \
                 fill {}, tx {}, completion {}; the kernel dropped {} (rx ring full {}, other \
                 {}), found the fill ring empty {} times and the tx ring empty {}, and saw {} \
                 invalid rx and {} invalid tx descriptors.",
                q.queue,
                if q.zero_copy { "zero-copy" } else { "copy" },
                q.rx_frames,
                q.tx_frames,
                q.rx_ring_level,
                q.fill_ring_level,
                q.tx_ring_level,
                q.completion_ring_level,
                q.rx_ring_full + q.rx_dropped,
                q.rx_ring_full,
                q.rx_dropped,
                q.fill_ring_empty,
                q.tx_ring_empty,
                q.rx_invalid_descs,
                q.tx_invalid_descs,
            )
        })
        .collect()
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
         dropped, {} segments beyond the receive window and {} bytes cut by a full receive \
         buffer; the link moved {} frames in and {} out, dropping {} on transmit and {} in the \
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
        endpoint.receive_drops.beyond_window,
        endpoint.receive_drops.trimmed_bytes,
        link.rx_frames,
        link.tx_frames,
        link.tx_dropped,
        link.kernel_dropped,
        link.xdp.redirected,
        link.xdp.passed,
    )
}
