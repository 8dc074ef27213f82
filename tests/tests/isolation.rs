//! tcpstack takes its own port and nothing else: the kernel of its namespace neither sees nor
//! answers that port's segments, everything else still reaches the kernel, and stopping the
//! server leaves nothing attached or installed.

use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tcpstack_integration::*;

backend_tests!(other_traffic_still_reaches_the_kernel);

fn echo_server(lab: &Lab, backend: Backend) -> Result<Server> {
    lab.serve(backend, ECHO_PORT, &["--app", "echo"])
}

fn echo_once(lab: &Lab, port: u16, len: usize, seed: u64) -> Result<()> {
    let stream = lab.peer_connect(lab.addr_a(), port)?;
    let data = pattern(len, seed);
    let echoed = exchange(&stream, &data, true, usize::MAX)?;
    ensure!(
        sha256_hex(&echoed) == sha256_hex(&data),
        "echo on port {port}: {} of {len} bytes, digest differs",
        echoed.len()
    );
    Ok(())
}

/// In xdp mode the kernel of namespace A never sees a segment of the reserved port: its TCP
/// input counter does not move and it sends no RST, while the capture on the peer's side
/// shows whole connections without any RST. Stopping the server detaches the program.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_kernel_never_sees_the_reserved_port() -> Result<()> {
    let lab = Lab::new()?;
    let server = echo_server(&lab, Backend::Xdp)?;
    ensure!(lab.xdp_attached()?, "no XDP program on {}", lab.spec.if_a);
    let before = kernel_tcp_counters(lab.ns_a())?;
    let capture = lab.capture(lab.ns_b(), &lab.spec.if_b, &format!("tcp port {ECHO_PORT}"))?;
    for seed in 0..3 {
        echo_once(&lab, ECHO_PORT, 100_000, seed)?;
    }
    let segments = capture.finish()?;
    let after = kernel_tcp_counters(lab.ns_a())?;
    ensure!(
        segments.len() > 20,
        "only {} segments captured",
        segments.len()
    );
    if let Some(rst) = segments.iter().find(|s| s.is_rst()) {
        bail!("RST on the reserved port: {rst:?}");
    }
    for counter in ["InSegs", "OutRsts", "OutSegs"] {
        let delta = after[counter] - before[counter];
        ensure!(
            delta == 0,
            "namespace A's kernel TCP {counter} moved by {delta}"
        );
    }
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    ensure!(
        !lab.xdp_attached()?,
        "XDP program still attached after the server stopped"
    );
    Ok(())
}

/// In raw mode the kernel of namespace A does see the port's segments and answers them with
/// RSTs; only tcpstack's iptables rule keeps those off the wire. With the rule, the capture
/// shows no RST; without it, the kernel's RSTs appear. Stopping the server removes the rule.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn raw_kernel_rsts_are_dropped_by_the_iptables_rule_only() -> Result<()> {
    let lab = Lab::new()?;
    let server = echo_server(&lab, Backend::Raw)?;
    let rules = rst_drop_rules(lab.ns_a())?;
    ensure!(
        !rules.is_empty(),
        "no iptables rule dropping RSTs in namespace A"
    );
    let before = kernel_tcp_counters(lab.ns_a())?;
    let capture = lab.capture(lab.ns_b(), &lab.spec.if_b, &format!("tcp port {ECHO_PORT}"))?;
    echo_once(&lab, ECHO_PORT, 100_000, 1)?;
    let segments = capture.finish()?;
    if let Some(rst) = segments.iter().find(|s| s.is_rst()) {
        bail!("RST on the wire although the rule is in place: {rst:?}");
    }
    let resets = kernel_tcp_counters(lab.ns_a())?["OutRsts"] - before["OutRsts"];
    ensure!(
        resets > 0,
        "namespace A's kernel sent no RST: did it see the segments at all?"
    );

    for (table, rule) in &rules {
        iptables_apply(lab.ns_a(), table, &rule.replacen("-A ", "-D ", 1))?;
    }
    let capture = lab.capture(lab.ns_b(), &lab.spec.if_b, &format!("tcp port {ECHO_PORT}"))?;
    // The connection may be refused or reset: only the RST on the wire matters here.
    if let Ok(stream) = lab.peer_connect(lab.addr_a(), ECHO_PORT) {
        let _ = exchange(&stream, b"hello", true, usize::MAX);
    }
    let segments = capture.finish()?;
    let addr_a = lab.addr_a();
    ensure!(
        segments
            .iter()
            .any(|s| s.is_rst() && *s.src.ip() == addr_a && s.src.port() == ECHO_PORT),
        "no RST from namespace A without the rule: {segments:?}"
    );
    for (table, rule) in &rules {
        iptables_apply(lab.ns_a(), table, rule)?;
    }
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    let left = rst_drop_rules(lab.ns_a())?;
    ensure!(
        left.is_empty(),
        "iptables rules left after the server stopped: {left:?}"
    );
    Ok(())
}

/// While tcpstack serves its port, ping and a kernel TCP listener on another port of the same
/// address keep working, and tcpstack keeps echoing in between.
fn other_traffic_still_reaches_the_kernel(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let mut server = echo_server(&lab, backend)?;
    let kernel = EchoServer::start(lab.kernel_listen_a(ECHO_PORT + 1000)?)?;
    lab.exec_in(
        lab.ns_b(),
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            &lab.addr_a().to_string(),
        ],
    )
    .context("ping while tcpstack runs")?;
    thread::scope(|scope| -> Result<()> {
        let ours = scope.spawn(|| echo_once(&lab, ECHO_PORT, 1 << 20, 5));
        echo_once(&lab, kernel.addr.port(), 1 << 20, 6).context("the kernel's listener")?;
        ours.join()
            .map_err(|_| anyhow::anyhow!("echo thread panicked"))?
            .context("tcpstack's echo")
    })?;
    thread::sleep(Duration::from_millis(100));
    server.assert_running()
}
