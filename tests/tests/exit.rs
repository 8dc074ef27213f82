//! How `tcpstack serve` ends: on SIGTERM it closes its connections and takes away what it
//! installed (the raw backend's iptables rules, the XDP program) before it exits 0, however soon
//! after its `listening on` line the signal comes.

use std::net::Shutdown;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tcpstack_integration::*;

backend_tests!(
    sigterm_right_after_the_ready_line_exits_cleanly,
    sigterm_with_a_live_connection_leaves_nothing_installed,
);

/// Fails unless `out` is a clean exit: status 0 (not killed by the signal) and the summary on
/// stderr, which is printed only after the stack was shut down.
fn ensure_clean_exit(out: &std::process::Output) -> Result<()> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "serve exited with {} after SIGTERM\n{stderr}",
        out.status
    );
    ensure!(
        stderr.contains("tcpstack summary:"),
        "no summary on stderr:\n{stderr}"
    );
    Ok(())
}

/// SIGTERM the moment `listening on` is read: the handlers were installed before that line.
fn sigterm_right_after_the_ready_line_exits_cleanly(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let server = lab.serve(backend, ECHO_PORT, &["--app", "echo"])?;
    server.terminate();
    ensure_clean_exit(&server.wait()?)?;
    let left = lab.tcpstack_leftovers()?;
    ensure!(left.is_empty(), "left behind after SIGTERM: {left:?}");
    Ok(())
}

/// SIGTERM while a kernel peer's connection is open and the control socket has answered
/// `tcpstack ss` (its task holds the stack too): the peer reads a clean end of stream, and what
/// serve installed is gone already when it prints its summary, not only once the process and
/// its runtime's last tasks have ended.
fn sigterm_with_a_live_connection_leaves_nothing_installed(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let control = lab.dir.join("control.sock");
    let mut server = lab.serve(
        backend,
        ECHO_PORT,
        &["--app", "echo", "--control", &control.to_string_lossy()],
    )?;
    ensure!(
        !lab.tcpstack_leftovers()?.is_empty(),
        "serve installed nothing to remove: the test would prove nothing"
    );
    let stream = lab.peer_connect(lab.addr_a(), ECHO_PORT)?;
    let data = pattern(50_000, 51);
    ensure!(exchange(&stream, &data, false, data.len())? == data);
    ensure!(
        lab.ss(&control)?.len() == 1,
        "tcpstack ss lists one connection"
    );
    server.terminate();
    let rest = read_to_end(&stream).context("reading after SIGTERM")?;
    ensure!(rest.is_empty(), "{} unexpected bytes", rest.len());
    stream.shutdown(Shutdown::Write)?;
    server
        .process
        .wait_for_stderr("tcpstack summary:", Duration::from_secs(15))?;
    let left = lab.tcpstack_leftovers()?;
    ensure!(
        left.is_empty(),
        "still installed when serve printed its summary: {left:?}"
    );
    ensure_clean_exit(&server.wait()?)?;
    let left = lab.tcpstack_leftovers()?;
    ensure!(left.is_empty(), "left behind after SIGTERM: {left:?}");
    Ok(())
}
