//! `tcpstack serve`'s link options through the binary: `--addr` picks which of the interface's
//! addresses is served, `--xdp-mode skb` attaches generic XDP, `--queues N` opens one AF_XDP
//! socket per queue, and `--stats-json` reports each socket's rings.

use std::net::Ipv4Addr;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tcpstack_integration::*;

backend_tests!(addr_picks_the_address_served);

/// A second address on A's veth, given with `--addr`: tcpstack serves it, and the first
/// address's port stays the kernel's (nothing listens there: refused).
fn addr_picks_the_address_served(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let second = Ipv4Addr::from(u32::from(lab.addr_a()) + 2);
    let cidr = format!("{second}/{}", lab.spec.prefix_len);
    lab.exec_in(
        lab.ns_a(),
        &["ip", "addr", "add", &cidr, "dev", &lab.spec.if_a],
    )?;
    let mut server = lab.serve(
        backend,
        ECHO_PORT,
        &["--app", "echo", "--addr", &second.to_string()],
    )?;
    ensure!(
        server.listen.ip() == &second,
        "ready line {:?}",
        server.ready_line
    );
    let stream = lab.peer_connect(second, ECHO_PORT)?;
    let data = pattern(100_000, 61);
    ensure!(
        exchange(&stream, &data, true, usize::MAX)? == data,
        "the echo on {second} differs"
    );
    match lab.peer_connect(lab.addr_a(), ECHO_PORT) {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused) => {}
        Err(e) => bail!("connecting to the first address: {e:#}, expected refused"),
        Ok(_) => bail!("{} answered on port {ECHO_PORT} too", lab.addr_a()),
    }
    server.assert_running()
}

/// The default `--xdp-mode auto` attaches generic XDP on veth (native XDP's own 256-frame ring
/// drops a sender's bursts there), and `--xdp-mode native` still gets native.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn auto_xdp_mode_is_generic_on_veth() -> Result<()> {
    let lab = Lab::new()?;
    for (flags, generic) in [(&[][..], true), (&["--xdp-mode", "native"][..], false)] {
        let mut args = vec!["--app", "echo"];
        args.extend(flags);
        let server = lab.serve(Backend::Xdp, ECHO_PORT, &args)?;
        let link = lab.exec_in(lab.ns_a(), &["ip", "-d", "link", "show", &lab.spec.if_a])?;
        ensure!(
            link.contains("xdpgeneric") == generic && link.contains("prog/xdp"),
            "{flags:?}: {link}"
        );
        let stream = lab.peer_connect(lab.addr_a(), ECHO_PORT)?;
        let data = pattern(50_000, 80);
        ensure!(
            exchange(&stream, &data, true, usize::MAX)? == data,
            "{flags:?}: the echo differs"
        );
        server.stop()?;
    }
    Ok(())
}

/// On a veth of four queues, `--xdp-mode skb --queues 4` attaches generic XDP (`ip link` says
/// xdpgeneric) and opens four sockets; connections echo, and `--stats-json` has one entry per
/// queue: copy mode (veth has no zero-copy), a stocked fill ring, frames that add up to the
/// link's and came through more than one socket. The exit summary has a line per queue. Asking for more queues than exist is refused.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_skb_mode_with_a_socket_on_every_queue() -> Result<()> {
    const QUEUES: u64 = 4;
    let lab = Lab::new()?;
    lab.multiqueue_veth(QUEUES as u32)?;
    let too_many = lab
        .tcpstack(&[
            "serve",
            "--iface",
            &lab.spec.if_a,
            "--port",
            "7",
            "--queues",
            "5",
        ])
        .output()?;
    let refusal = String::from_utf8_lossy(&too_many.stderr);
    ensure!(
        too_many.status.code() == Some(1)
            && refusal.contains("the interface has 4 receive queue(s), 5 were asked for"),
        "--queues 5 on four queues: {} {refusal}",
        too_many.status
    );

    let json = lab.dir.join("stats.json");
    let server = lab.serve(
        Backend::Xdp,
        ECHO_PORT,
        &[
            "--app",
            "echo",
            "--xdp-mode",
            "skb",
            "--queues",
            &QUEUES.to_string(),
            "--stats-json",
            &json.to_string_lossy(),
        ],
    )?;
    let link = lab.exec_in(lab.ns_a(), &["ip", "-d", "link", "show", &lab.spec.if_a])?;
    ensure!(link.contains("xdpgeneric"), "not generic XDP: {link}");
    for seed in 0..16 {
        let stream = lab.peer_connect(lab.addr_a(), ECHO_PORT)?;
        let data = pattern(20_000, 70 + seed);
        ensure!(
            exchange(&stream, &data, true, usize::MAX)? == data,
            "echo {seed} differs"
        );
    }
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for queue in 0..QUEUES {
        let line = format!("tcpstack xdp queue {queue} (copy mode): ");
        ensure!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
    }

    let stats = read_json(&json)?;
    let queues = stats
        .pointer("/xdp_queues")
        .and_then(Value::as_array)
        .with_context(|| format!("no xdp_queues array in {stats}"))?;
    ensure!(queues.len() as u64 == QUEUES, "{queues:?}");
    let mut rx_frames = 0;
    let mut receiving = 0;
    for (index, queue) in queues.iter().enumerate() {
        ensure!(number(queue, "/queue")? == index as u64, "{queue}");
        ensure!(
            queue.pointer("/zero_copy") == Some(&Value::Bool(false)),
            "veth offers copy mode only: {queue}"
        );
        ensure!(
            number(queue, "/fill_ring_level")? > 0,
            "the fill ring was stocked: {queue}"
        );
        for level in ["rx_ring_level", "tx_ring_level", "completion_ring_level"] {
            number(queue, &format!("/{level}"))?;
        }
        for drops in ["rx_dropped", "rx_ring_full", "fill_ring_empty"] {
            number(queue, &format!("/{drops}"))?;
        }
        let received = number(queue, "/rx_frames")?;
        rx_frames += received;
        receiving += usize::from(received > 0);
    }
    ensure!(
        receiving >= 2,
        "16 connections spread over the queues' sockets: {queues:?}"
    );
    ensure!(
        rx_frames > 0 && rx_frames == number(&stats, "/link/rx_frames")?,
        "the queues' frames ({rx_frames}) are not the link's: {stats}"
    );
    println!("xdp_queues: {queues:?}");
    Ok(())
}
