//! How `tcpstack serve` ends: on SIGTERM it closes its connections and takes away what it
//! installed (the raw backend's iptables rules, the XDP program) before it exits 0, however soon
//! after its `listening on` line the signal comes; and when it cannot start, it says why in one
//! sentence with what to do, and exits 1 (never a panic, never a bare OS error).

use std::net::Shutdown;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tcpstack_integration::*;

backend_tests!(
    sigterm_right_after_the_ready_line_exits_cleanly,
    sigterm_with_a_live_connection_leaves_nothing_installed,
    no_such_interface,
    not_root,
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
    let mut server = lab.serve_echo_with_control(backend, ECHO_PORT)?;
    ensure!(
        !lab.tcpstack_leftovers()?.is_empty(),
        "serve installed nothing to remove: the test would prove nothing"
    );
    let stream = lab.peer_connect(lab.addr_a(), ECHO_PORT)?;
    let data = pattern(50_000, 51);
    ensure!(exchange(&stream, &data, false, data.len())? == data);
    ensure!(lab.ss()?.len() == 1, "tcpstack ss lists one connection");
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

/// Runs `cmd`, a tcpstack command line bound to fail, and checks it fails as a user error
/// should: exit status 1 (not a signal, not a panic's 101), and on stderr one line,
/// `tcpstack: ` then one sentence that contains `hint` (what to do), without a panic or an
/// OS error's text. Returns that line.
fn user_error(lab: &Lab, mut cmd: Command, hint: &str) -> Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| describe(&cmd))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        out.status.code() == Some(1),
        "`{}` exited with {}, not 1:\n{stderr}",
        describe(&cmd),
        out.status
    );
    let [line] = lines[..] else {
        anyhow::bail!("expected one line on stderr, got:\n{stderr}");
    };
    ensure!(
        line.starts_with("tcpstack: ")
            && line.contains(hint)
            && !line.contains("panicked")
            && !line.contains("os error"),
        "not the one-sentence error with {hint:?}: {line}"
    );
    let left = lab.tcpstack_leftovers()?;
    ensure!(left.is_empty(), "a failed start left {left:?}");
    println!("{}: {line}", describe(&cmd));
    Ok(line.to_owned())
}

fn serve_args<'a>(iface: &'a str, backend: &'a str) -> Vec<&'a str> {
    vec![
        "serve",
        "--iface",
        iface,
        "--port",
        "7",
        "--backend",
        backend,
    ]
}

fn no_such_interface(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let cmd = lab.tcpstack(&serve_args("tcps-missing0", backend.as_str()));
    let line = user_error(&lab, cmd, "check the name with `ip link`")?;
    ensure!(line.contains("no such interface `tcps-missing0`"), "{line}");
    Ok(())
}

/// As the nobody user (no capabilities either: setpriv drops them with the uid).
fn not_root(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let bin = require_tcpstack_bin()?;
    let bin = bin.to_string_lossy();
    let mut args = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &bin,
    ];
    let serve = serve_args(&lab.spec.if_a, backend.as_str());
    args.extend_from_slice(&serve);
    let cmd = lab.command_in(lab.ns_a(), &args);
    user_error(&lab, cmd, "run it as root")?;
    Ok(())
}

/// A bridge's driver has no native XDP (so has a dummy device, but this kernel may lack the
/// dummy module; every lab already needs bridges). The kernel refuses the attachment with
/// EOPNOTSUPP, and serve says to use generic XDP.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn native_xdp_on_a_driver_without_it() -> Result<()> {
    let lab = Lab::new()?;
    let ns = lab.ns_a();
    lab.exec_in(ns, &["ip", "link", "add", "tcps-br0", "type", "bridge"])?;
    lab.exec_in(
        ns,
        &["ip", "addr", "add", "198.18.251.1/32", "dev", "tcps-br0"],
    )?;
    lab.exec_in(ns, &["ip", "link", "set", "tcps-br0", "up"])?;
    let mut args = serve_args("tcps-br0", "xdp");
    args.extend(["--xdp-mode", "native"]);
    let line = user_error(&lab, lab.tcpstack(&args), "use --xdp-mode skb")?;
    ensure!(
        line.contains("`tcps-br0` does not support native XDP"),
        "{line}"
    );
    let link = lab.exec_in(ns, &["ip", "-d", "link", "show", "tcps-br0"])?;
    ensure!(
        !link.contains("xdp"),
        "an XDP program on the bridge: {link}"
    );
    Ok(())
}

/// A binary built without the eBPF object, asked for the xdp backend.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_without_the_ebpf_object() -> Result<()> {
    let bin = tcpstack_bin_without_ebpf()?;
    let lab = Lab::new()?;
    let bin = bin.to_string_lossy();
    let mut args = vec![bin.as_ref()];
    args.extend(serve_args(&lab.spec.if_a, "xdp"));
    let cmd = lab.command_in(lab.ns_a(), &args);
    let line = user_error(
        &lab,
        cmd,
        "build it with `cargo xtask build`, or use --backend raw",
    )?;
    ensure!(line.contains("eBPF object missing"), "{line}");
    Ok(())
}
