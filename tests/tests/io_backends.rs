//! The io backends against the kernel's TCP, without the protocol core: the test itself plays
//! the server, answering the kernel's SYN with a hand-built SYN-ACK through the backend, and
//! checks what the kernel of tcpstack's namespace does meanwhile (no RST, ping and other ports
//! still served).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tcpstack::io::raw::{iptables, remove_leftover_rules, IptablesGuard, RawBackend, RawConfig};
use tcpstack::io::xdp::{XdpBackend, XdpConfig, XdpMode};
use tcpstack::io::{Backend, BackendStats, IoError};
use tcpstack::wire::{self, SeqNum, TcpFlags, TcpHeader, TcpOptions};
use tcpstack_integration::{in_netns, Lab};

const PORT: u16 = 7777;
const OTHER_PORT: u16 = 8888;
const OUR_ISS: u32 = 0x1234_5678;

/// Waits until the backend delivers a TCP frame matching `wanted`, returning it. Frames that
/// arrive meanwhile wait in `backlog` for later calls, so a batch holding two awaited segments
/// loses neither.
async fn next_segment(
    backend: &mut dyn Backend,
    backlog: &mut VecDeque<Vec<u8>>,
    mut wanted: impl FnMut(&TcpHeader, &[u8]) -> bool,
) -> Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let matches = |frame: &[u8], wanted: &mut dyn FnMut(&TcpHeader, &[u8]) -> bool| {
            wire::parse_ethernet_ipv4_tcp(frame)
                .map(|(_, packet)| wanted(&packet.tcp, packet.payload))
                .unwrap_or(false)
        };
        if let Some(index) = backlog.iter().position(|f| matches(f, &mut wanted)) {
            return Ok(backlog.remove(index).unwrap_or_default());
        }
        let wait = std::future::poll_fn(|cx| {
            backend.poll_recv(cx, &mut |frame| backlog.push_back(frame.to_vec()))
        });
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(result) => {
                result.context("poll_recv")?;
            }
            Err(_) => bail!("no matching segment within 10 s"),
        }
    }
}

fn syn_ack_for(syn_frame: &[u8]) -> Result<Vec<u8>> {
    let (_, syn) = wire::parse_ethernet_ipv4_tcp(syn_frame).map_err(anyhow::Error::msg)?;
    let header = TcpHeader {
        src_port: syn.tcp.dst_port,
        dst_port: syn.tcp.src_port,
        seq: SeqNum::new(OUR_ISS),
        ack: SeqNum::new(syn.tcp.seq.value().wrapping_add(1)),
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window: 65535,
        urgent_ptr: 0,
        options: TcpOptions {
            mss: Some(1460),
            ..TcpOptions::default()
        },
    };
    let mut frame = Vec::new();
    // MACs zero: the backend addresses the frame, as the runtime relies on.
    wire::emit_ethernet_ipv4_tcp(
        [0; 6],
        [0; 6],
        syn.ip.dst,
        syn.ip.src,
        &header,
        &[],
        1,
        &mut frame,
    );
    Ok(frame)
}

/// The kernel's `Tcp: OutRsts` counter in namespace `ns`.
fn out_rsts(lab: &Lab, ns: &str) -> Result<u64> {
    let snmp = lab.exec_in(ns, &["cat", "/proc/net/snmp"])?;
    let mut tcp_lines = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp_lines.next(), tcp_lines.next()) else {
        bail!("no Tcp lines in /proc/net/snmp");
    };
    let index = names
        .split_whitespace()
        .position(|n| n == "OutRsts")
        .context("no OutRsts column")?;
    values
        .split_whitespace()
        .nth(index)
        .context("short Tcp line")?
        .parse()
        .context("OutRsts is not a number")
}

/// Ping and a kernel listener on another port of namespace A still answer.
fn kernel_still_served(lab: &Lab) -> Result<()> {
    lab.exec_in(
        lab.ns_b(),
        &["ping", "-c", "1", "-W", "2", &lab.addr_a().to_string()],
    )
    .context("ping from the peer namespace")?;
    let listener = lab.kernel_listen_a(OTHER_PORT)?;
    let accept = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 5];
        stream.read_exact(&mut buf)?;
        stream.write_all(&buf)?;
        Ok(buf)
    });
    let mut client = lab.peer_connect(lab.addr_a(), OTHER_PORT)?;
    client.write_all(b"other")?;
    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed)?;
    assert_eq!(&echoed, b"other");
    let served = accept
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))??;
    assert_eq!(served, b"other");
    Ok(())
}

/// What [`handshake_through`] saw.
struct Handshake {
    stats: BackendStats,
    /// RSTs the kernel of namespace A sent (by its own count) while the backend held the port.
    kernel_rsts: u64,
}

/// Runs `open` (a backend on namespace A's interface) on a thread inside namespace A, reserves
/// PORT, and plays the server's side of a handshake with the kernel of namespace B, which
/// connects and sends "hello". While the backend is still attached, counts the RSTs the kernel
/// of A sent, checks it still serves ping and another port, and runs `while_attached`; then
/// drops the backend.
fn handshake_through<B, F>(
    lab: &Lab,
    open: F,
    while_attached: impl FnOnce() -> Result<()>,
) -> Result<Handshake>
where
    B: Backend,
    F: FnOnce(String) -> Result<B> + Send,
{
    let iface = lab.spec.if_a.clone();
    let addr_a = lab.addr_a();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (handshake_tx, handshake_rx) = mpsc::channel::<()>();
    let rsts_before = out_rsts(lab, lab.ns_a())?;

    std::thread::scope(|scope| -> Result<Handshake> {
        let server = scope.spawn(move || {
            in_netns(lab.ns_a(), move || -> Result<BackendStats> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let mut backend = open(iface)?;
                    let mut backlog = VecDeque::new();
                    backend.reserve(SocketAddrV4::new(addr_a, PORT))?;
                    let _ = ready_tx.send(());
                    let syn = next_segment(&mut backend, &mut backlog, |tcp, _| {
                        tcp.dst_port == PORT && tcp.flags == TcpFlags::SYN
                    })
                    .await
                    .context("the peer's SYN")?;
                    backend.send(&syn_ack_for(&syn)?)?;
                    backend.flush()?;
                    next_segment(&mut backend, &mut backlog, |tcp, payload| {
                        tcp.dst_port == PORT
                            && tcp.flags.ack()
                            && tcp.ack == SeqNum::new(OUR_ISS.wrapping_add(1))
                            && payload.is_empty()
                    })
                    .await
                    .context("the kernel's ACK of our SYN-ACK")?;
                    next_segment(&mut backend, &mut backlog, |tcp, payload| {
                        tcp.dst_port == PORT && payload == b"hello"
                    })
                    .await
                    .context("the peer's data")?;
                    let _ = handshake_tx.send(());
                    // Stay attached while the test thread checks the kernel's other services.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    while done_rx.try_recv().is_err() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(backend.stats())
                })
            })?
        });
        let outcome = (|| -> Result<u64> {
            ready_rx
                .recv_timeout(Duration::from_secs(20))
                .context("the backend did not start")?;
            let mut peer = lab.peer_connect(addr_a, PORT)?;
            peer.write_all(b"hello")?;
            handshake_rx
                .recv_timeout(Duration::from_secs(20))
                .context("the handshake did not complete")?;
            std::thread::sleep(Duration::from_millis(200));
            let rsts = out_rsts(lab, lab.ns_a())? - rsts_before;
            kernel_still_served(lab)?;
            while_attached()?;
            drop(peer);
            Ok(rsts)
        })();
        let _ = done_tx.send(());
        let stats = server
            .join()
            .map_err(|_| anyhow::anyhow!("backend thread panicked"))??;
        let kernel_rsts = outcome?;
        eprintln!("backend stats: {stats:?}");
        assert!(
            stats.rx_frames >= 3,
            "SYN, ACK and data received: {stats:?}"
        );
        assert!(stats.tx_frames >= 1, "SYN-ACK sent: {stats:?}");
        Ok(Handshake { stats, kernel_rsts })
    })
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_backend_steers_the_reserved_port_and_nothing_else() -> Result<()> {
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    let lab = Lab::new()?;
    let handshake = handshake_through(
        &lab,
        |iface| {
            let mut config = XdpConfig::new(iface);
            config.mode = XdpMode::Auto;
            Ok(XdpBackend::new(config)?)
        },
        || Ok(()),
    )?;
    assert_eq!(
        handshake.kernel_rsts, 0,
        "the kernel of namespace A never saw the reserved port's segments"
    );
    let xdp = handshake.stats.xdp;
    assert!(xdp.redirected >= 3, "SYN, ACK and data redirected: {xdp:?}");
    assert!(xdp.passed >= 1, "ping and the other port passed: {xdp:?}");
    assert_eq!(xdp.no_socket, 0);
    // Detached with the backend: the reserved port is the kernel's again (refused, not stolen).
    let refused = lab.peer_connect(lab.addr_a(), PORT);
    assert!(
        refused.is_err(),
        "nothing listens on the port once the backend is gone"
    );
    lab.destroy()
}

/// Packets counted by the OUTPUT rules carrying tcpstack's comment in namespace `ns`.
fn tcpstack_rule_hits(lab: &Lab, ns: &str) -> Result<Option<u64>> {
    let listing = lab.exec_in(ns, &["iptables", "-w", "-L", "OUTPUT", "-v", "-n", "-x"])?;
    let mut hits = None;
    for line in listing.lines().filter(|l| l.contains("/* tcpstack */")) {
        let packets: u64 = line
            .split_whitespace()
            .next()
            .context("empty rule line")?
            .parse()
            .context("packet count")?;
        hits = Some(hits.unwrap_or(0) + packets);
    }
    Ok(hits)
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn raw_backend_sees_the_reserved_port_and_its_rule_hides_the_kernels_rsts() -> Result<()> {
    let lab = Lab::new()?;
    let handshake = handshake_through(
        &lab,
        |iface| Ok(RawBackend::new(RawConfig::new(iface))?),
        || {
            // The kernel answered the SYN with a RST; the rule dropped it (else the peer's
            // connect would have been refused before our SYN-ACK arrived).
            let hits = tcpstack_rule_hits(&lab, lab.ns_a())?;
            assert!(
                matches!(hits, Some(n) if n >= 1),
                "tcpstack's rules dropped the kernel's RSTs: {hits:?}"
            );
            Ok(())
        },
    )?;
    assert!(
        handshake.kernel_rsts >= 1,
        "the kernel of A still sees the port in raw mode"
    );
    assert_eq!(
        tcpstack_rule_hits(&lab, lab.ns_a())?,
        None,
        "the rules are gone with the backend"
    );
    lab.destroy()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn leftover_rules_are_removed() -> Result<()> {
    let lab = Lab::new()?;
    let addr = lab.addr_a();
    let removed = in_netns(lab.ns_a(), move || -> Result<usize> {
        let mut guard = IptablesGuard::new();
        guard.add(iptables::rule(addr, "7"))?;
        guard.add(iptables::rule(addr, &iptables::port_range(61000, 65535)))?;
        // A killed process never runs Drop.
        std::mem::forget(guard);
        Ok(remove_leftover_rules()?)
    })??;
    assert_eq!(removed, 2);
    assert_eq!(tcpstack_rule_hits(&lab, lab.ns_a())?, None);
    lab.destroy()
}

const PEER_PORT: u16 = 9999;
const ACTIVE_PORT: u16 = 61000;

/// Our side of an active open through a backend in namespace A, to a kernel listener in B,
/// starting with an empty neighbour table in A: the SYN waits for the kernel to resolve B's
/// MAC, goes out, and the SYN-ACK to a port of the active-open range comes back through the
/// backend. Returns the backend's statistics.
fn active_open_through<B, F>(lab: &Lab, open: F) -> Result<BackendStats>
where
    B: Backend,
    F: FnOnce(String) -> Result<B> + Send,
{
    active_open_to(lab, lab.addr_b(), open)
}

/// [`active_open_through`] to `addr_b`, an address of namespace B that may sit behind a route.
fn active_open_to<B, F>(lab: &Lab, addr_b: std::net::Ipv4Addr, open: F) -> Result<BackendStats>
where
    B: Backend,
    F: FnOnce(String) -> Result<B> + Send,
{
    let iface = lab.spec.if_a.clone();
    let addr_a = lab.addr_a();
    lab.exec_in(lab.ns_a(), &["ip", "neigh", "flush", "all"])?;
    let listener = in_netns(lab.ns_b(), move || {
        std::net::TcpListener::bind(SocketAddrV4::new(addr_b, PEER_PORT))
    })??;
    std::thread::scope(|scope| -> Result<BackendStats> {
        let accepted = scope.spawn(move || -> std::io::Result<SocketAddrV4> {
            // Gives up in time, so a failed handshake fails the test instead of hanging it.
            listener.set_nonblocking(true)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            let peer = loop {
                match listener.accept() {
                    Ok((_stream, peer)) => break peer,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if std::time::Instant::now() > deadline {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "no connection accepted",
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            };
            match peer {
                std::net::SocketAddr::V4(v4) => Ok(v4),
                other => Err(std::io::Error::other(format!("unexpected peer {other}"))),
            }
        });
        let stats = in_netns(lab.ns_a(), move || -> Result<BackendStats> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut backend = open(iface)?;
                let mut backlog = VecDeque::new();
                let iss = 0x0bad_cafe_u32;
                let mut syn = TcpHeader {
                    src_port: ACTIVE_PORT,
                    dst_port: PEER_PORT,
                    seq: SeqNum::new(iss),
                    ack: SeqNum::new(0),
                    flags: TcpFlags::SYN,
                    window: 65535,
                    urgent_ptr: 0,
                    options: TcpOptions {
                        mss: Some(1460),
                        ..TcpOptions::default()
                    },
                };
                let mut frame = Vec::new();
                wire::emit_ethernet_ipv4_tcp(
                    [0; 6],
                    [0; 6],
                    addr_a,
                    addr_b,
                    &syn,
                    &[],
                    1,
                    &mut frame,
                );
                backend.send(&frame)?;
                backend.flush()?;
                let syn_ack = next_segment(&mut backend, &mut backlog, |tcp, _| {
                    tcp.dst_port == ACTIVE_PORT
                        && tcp.flags == TcpFlags::SYN | TcpFlags::ACK
                        && tcp.ack == SeqNum::new(iss.wrapping_add(1))
                })
                .await
                .context("the kernel's SYN-ACK to our active open")?;
                let (_, reply) =
                    wire::parse_ethernet_ipv4_tcp(&syn_ack).map_err(anyhow::Error::msg)?;
                syn.seq = SeqNum::new(iss.wrapping_add(1));
                syn.ack = SeqNum::new(reply.tcp.seq.value().wrapping_add(1));
                syn.flags = TcpFlags::ACK;
                syn.options = TcpOptions::default();
                frame.clear();
                wire::emit_ethernet_ipv4_tcp(
                    [0; 6],
                    [0; 6],
                    addr_a,
                    addr_b,
                    &syn,
                    &[],
                    2,
                    &mut frame,
                );
                backend.send(&frame)?;
                backend.flush()?;
                Ok(backend.stats())
            })
        })??;
        let peer = accepted
            .join()
            .map_err(|_| anyhow::anyhow!("accept thread panicked"))??;
        assert_eq!(peer, SocketAddrV4::new(addr_a, ACTIVE_PORT));
        Ok(stats)
    })
    .and_then(|stats| {
        let b = lab.addr_b().to_string();
        let neighbours = lab.exec_in(lab.ns_a(), &["ip", "neigh", "show", &b])?;
        assert!(
            neighbours.contains("lladdr"),
            "the kernel of A resolved B for us: {neighbours:?}"
        );
        Ok(stats)
    })
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_backend_active_open_resolves_the_neighbour_and_gets_the_syn_ack() -> Result<()> {
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    let lab = Lab::new()?;
    let stats = active_open_through(&lab, |iface| Ok(XdpBackend::new(XdpConfig::new(iface))?))?;
    assert!(stats.xdp.redirected >= 1, "SYN-ACK redirected: {stats:?}");
    lab.destroy()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn raw_backend_active_open_resolves_the_neighbour_and_gets_the_syn_ack() -> Result<()> {
    let lab = Lab::new()?;
    active_open_through(&lab, |iface| Ok(RawBackend::new(RawConfig::new(iface))?))?;
    lab.destroy()
}

/// Sends hand-made frames out of B's interface through an AF_PACKET socket.
fn inject(lab: &Lab, frames: Vec<Vec<u8>>) -> Result<()> {
    let if_b = lab.spec.if_b.clone();
    in_netns(lab.ns_b(), move || -> Result<()> {
        let index = tcpstack::io::iface::Interface::lookup(&if_b)?.index;
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
        }
        // SAFETY: all-zero sockaddr_ll is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        for frame in &frames {
            // SAFETY: frame and addr are valid for the call.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                let error = std::io::Error::last_os_error();
                // SAFETY: fd is ours.
                unsafe { libc::close(fd) };
                bail!("sendto: {error}");
            }
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        Ok(())
    })?
}

fn fix_ip_checksum(frame: &mut [u8], header_len: usize) {
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = wire::checksum::checksum(&frame[14..14 + header_len]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_program_parses_ipv4_options_and_leaves_fragments_vlan_and_runts_to_the_kernel() -> Result<()>
{
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    let lab = Lab::new()?;
    let iface = lab.spec.if_a.clone();
    let addr_a = lab.addr_a();
    let mac = |ns: &str, name: &str| -> Result<[u8; 6]> {
        let name = name.to_owned();
        Ok(in_netns(ns, move || tcpstack::io::iface::Interface::lookup(&name))??.mac)
    };
    let (mac_a, mac_b) = (mac(lab.ns_a(), &iface)?, mac(lab.ns_b(), &lab.spec.if_b)?);
    let syn = TcpHeader {
        src_port: 40000,
        dst_port: PORT,
        seq: SeqNum::new(1),
        ack: SeqNum::new(0),
        flags: TcpFlags::SYN,
        window: 1024,
        urgent_ptr: 0,
        options: TcpOptions::default(),
    };
    let mut plain = Vec::new();
    wire::emit_ethernet_ipv4_tcp(mac_b, mac_a, lab.addr_b(), addr_a, &syn, &[], 7, &mut plain);
    let mut vlan = plain.clone();
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let mut first_fragment = plain.clone();
    first_fragment[20] |= 0x20; // more fragments
    fix_ip_checksum(&mut first_fragment, 20);
    let mut later_fragment = plain.clone();
    later_fragment[20..22].copy_from_slice(&0x0003u16.to_be_bytes()); // offset 24 bytes
    fix_ip_checksum(&mut later_fragment, 20);
    // IPv4 options (three NOPs and an end-of-list) move the TCP header by four bytes.
    let mut with_options = plain.clone();
    with_options.splice(34..34, [1, 1, 1, 0]);
    with_options[14] = 0x46;
    let total = u16::from_be_bytes([with_options[16], with_options[17]]) + 4;
    with_options[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut with_options, 24);
    let mut runt = plain.clone();
    runt.truncate(14 + 20 + 2);

    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let lab_ref = &lab;
    std::thread::scope(|scope| -> Result<()> {
        let lab = lab_ref;
        let server = scope.spawn(move || {
            in_netns(
                lab.ns_a(),
                move || -> Result<(BackendStats, BackendStats)> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let mut backend = XdpBackend::new(XdpConfig::new(iface))?;
                        backend.reserve(SocketAddrV4::new(addr_a, PORT))?;
                        let before = backend.stats();
                        let _ = ready_tx.send(());
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                        while done_rx.try_recv().is_err() && tokio::time::Instant::now() < deadline
                        {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(20),
                                std::future::poll_fn(|cx| backend.poll_recv(cx, &mut |_| {})),
                            )
                            .await;
                        }
                        Ok((before, backend.stats()))
                    })
                },
            )?
        });
        let sent = (|| -> Result<()> {
            ready_rx
                .recv_timeout(Duration::from_secs(20))
                .context("the backend did not start")?;
            inject(
                lab,
                vec![vlan, first_fragment, later_fragment, runt, with_options],
            )?;
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        })();
        let _ = done_tx.send(());
        let (before, after) = server
            .join()
            .map_err(|_| anyhow::anyhow!("backend thread panicked"))??;
        sent?;
        eprintln!("before {before:?}\nafter {after:?}");
        // Only the segment with IPv4 options is ours; the tagged frame and both fragments go
        // to the kernel untouched, and so does the runt (counted as malformed).
        assert_eq!(after.xdp.redirected, before.xdp.redirected + 1, "{after:?}");
        assert_eq!(after.rx_frames, before.rx_frames + 1, "{after:?}");
        assert!(after.xdp.passed >= before.xdp.passed + 3, "{after:?}");
        assert_eq!(after.xdp.malformed, before.xdp.malformed + 1, "{after:?}");
        Ok(())
    })?;
    lab.destroy()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_backend_opens_one_socket_per_queue_and_serves_them_all() -> Result<()> {
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    const QUEUES: u32 = 4;
    const FLOWS: usize = 32;
    let lab = Lab::new()?;
    lab.multiqueue_veth(QUEUES)?;
    let iface = lab.spec.if_a.clone();
    let addr_a = lab.addr_a();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let lab_ref = &lab;
    std::thread::scope(|scope| -> Result<()> {
        let lab = lab_ref;
        let server = scope.spawn(move || {
            in_netns(
                lab.ns_a(),
                move || -> Result<(u32, Vec<u64>, BackendStats)> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let mut backend = XdpBackend::new(XdpConfig::new(iface))?;
                        backend.reserve(SocketAddrV4::new(addr_a, PORT))?;
                        let _ = ready_tx.send(());
                        let mut sources = std::collections::HashSet::new();
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                        while sources.len() < FLOWS {
                            let polled = std::future::poll_fn(|cx| {
                                backend.poll_recv(cx, &mut |frame| {
                                    if let Ok((_, p)) = wire::parse_ethernet_ipv4_tcp(frame) {
                                        if p.tcp.dst_port == PORT && p.tcp.flags == TcpFlags::SYN {
                                            sources.insert(p.tcp.src_port);
                                        }
                                    }
                                })
                            });
                            if tokio::time::timeout_at(deadline, polled).await.is_err() {
                                bail!(
                                    "{} of {FLOWS} flows seen, per queue {:?}, {:?}",
                                    sources.len(),
                                    backend.received_per_queue(),
                                    backend.stats()
                                );
                            }
                        }
                        Ok((
                            backend.interface().rx_queues,
                            backend.received_per_queue(),
                            backend.stats(),
                        ))
                    })
                },
            )?
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .context("the backend did not start")?;
        // FLOWS connection attempts from distinct source ports; only their SYNs matter.
        let script = format!(
            "import socket\n\
             socks = []\n\
             for _ in range({FLOWS}):\n\
             \x20   s = socket.socket(); s.setblocking(False)\n\
             \x20   s.connect_ex(('{addr_a}', {PORT})); socks.append(s)\n\
             import time; time.sleep(3)\n"
        );
        let peers = lab.spawn_in(lab.ns_b(), &["python3", "-c", &script])?;
        let (queues, per_queue, stats) = server
            .join()
            .map_err(|_| anyhow::anyhow!("backend thread panicked"))??;
        peers.signal(libc::SIGKILL);
        eprintln!("queues {queues}, received per queue {per_queue:?}, {stats:?}");
        assert_eq!(queues, QUEUES, "ETHTOOL_GCHANNELS sees the veth's queues");
        assert_eq!(per_queue.len(), QUEUES as usize, "one socket per queue");
        assert_eq!(stats.xdp.no_socket, 0, "every queue had its socket");
        assert!(
            per_queue.iter().filter(|&&n| n > 0).count() >= 2,
            "flows spread over the queues: {per_queue:?}"
        );
        Ok(())
    })?;
    lab.destroy()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn a_second_tcpstack_on_the_same_interface_or_ports_is_refused() -> Result<()> {
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    let lab = Lab::new()?;
    let iface = lab.spec.if_a.clone();
    in_netns(lab.ns_a(), move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let _first = XdpBackend::new(XdpConfig::new(iface.clone()))?;
            match XdpBackend::new(XdpConfig::new(iface.clone())) {
                Err(IoError::XdpBusy(name)) => assert_eq!(name, iface),
                Err(other) => bail!("expected XdpBusy, got {other}"),
                Ok(_) => bail!("a second XDP backend attached to the same interface"),
            }
            let _raw = RawBackend::new(RawConfig::new(iface.clone()))?;
            match RawBackend::new(RawConfig::new(iface.clone())) {
                Err(IoError::PortInUse { ports, .. }) => assert_eq!(ports, "61000:65535"),
                Err(other) => bail!("expected PortInUse, got {other}"),
                Ok(_) => bail!("a second raw backend took the same ports"),
            }
            Ok(())
        })
    })??;
    lab.destroy()
}

/// Counts, in namespace B, the frames of IP protocol 253 addressed to B that arrive within
/// `window` of the last one, and what its packet socket dropped.
/// Says on `bound` when it listens.
fn count_in_b(
    lab: &Lab,
    expected: usize,
    window: Duration,
    bound: mpsc::Sender<()>,
) -> Result<(usize, u64)> {
    let if_b = lab.spec.if_b.clone();
    let addr_b = lab.addr_b();
    in_netns(lab.ns_b(), move || -> Result<(usize, u64)> {
        let index = tcpstack::io::iface::Interface::lookup(&if_b)?.index;
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        if fd < 0 {
            bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
        }
        let set = |level, name, value: libc::c_int| {
            // SAFETY: value outlives the call.
            unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: window.as_micros() as libc::suseconds_t,
        };
        // SAFETY: timeout outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        // SAFETY: all-zero sockaddr_ll is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = index as i32;
        // SAFETY: addr is a valid sockaddr_ll.
        unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        let _ = bound.send(());
        let mut count = 0;
        let mut buf = vec![0u8; 4096];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while count < expected && std::time::Instant::now() < deadline {
            // SAFETY: buf is writable for its length.
            let len = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if len < 0 {
                break;
            }
            let frame = &buf[..len as usize];
            if frame.len() >= 34 && frame[23] == 253 && frame[30..34] == addr_b.octets() {
                count += 1;
            }
        }
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: stats is writable for len bytes.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            );
            libc::close(fd);
        }
        Ok((count, u64::from(stats.tp_drops)))
    })?
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_backend_moves_bursts_larger_than_its_rings_and_recycles_frames() -> Result<()> {
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    let lab = Lab::new()?;
    let stats = bursts_through(&lab, |iface, addr_b, mac_b| {
        let mut backend = XdpBackend::new(XdpConfig::new(iface))?;
        backend.insert_neighbour(addr_b, mac_b);
        Ok(backend)
    })?;
    assert_eq!(stats.xdp.redirected, BURST_FRAMES as u64, "{stats:?}");
    lab.destroy()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn raw_backend_moves_bursts_in_batches() -> Result<()> {
    let lab = Lab::new()?;
    bursts_through(&lab, |iface, addr_b, mac_b| {
        let mut backend = RawBackend::new(RawConfig::new(iface))?;
        backend.insert_neighbour(addr_b, mac_b);
        Ok(backend)
    })?;
    lab.destroy()
}

/// More than the 2048 transmit buffers, the 2048-slot rings and the 4096-frame UMEM of the xdp
/// backend.
const BURST_FRAMES: usize = 10_000;

/// Sends BURST_FRAMES frames from A to B through the backend `open` makes (flushing every 64,
/// as the runtime does), then has B inject as many segments to the reserved port, paced so
/// that no ring overflows; checks every frame arrives exactly once each way.
fn bursts_through<B, F>(lab: &Lab, open: F) -> Result<BackendStats>
where
    B: Backend,
    F: FnOnce(String, std::net::Ipv4Addr, [u8; 6]) -> Result<B> + Send,
{
    const FRAMES: usize = BURST_FRAMES;
    let iface = lab.spec.if_a.clone();
    let (addr_a, addr_b) = (lab.addr_a(), lab.addr_b());
    let mac = |ns: &str, name: &str| -> Result<[u8; 6]> {
        let name = name.to_owned();
        Ok(in_netns(ns, move || tcpstack::io::iface::Interface::lookup(&name))??.mac)
    };
    let (mac_a, mac_b) = (mac(lab.ns_a(), &iface)?, mac(lab.ns_b(), &lab.spec.if_b)?);
    let received = std::sync::atomic::AtomicUsize::new(0);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (bound_tx, bound_rx) = mpsc::channel::<()>();
    let lab_ref = lab;
    let received_ref = &received;
    std::thread::scope(|scope| -> Result<BackendStats> {
        let lab = lab_ref;
        // B counts what A sends.
        let counter =
            scope.spawn(move || count_in_b(lab, FRAMES, Duration::from_millis(500), bound_tx));
        let server = scope.spawn(move || {
            in_netns(lab.ns_a(), move || -> Result<BackendStats> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let mut backend = open(iface, addr_b, mac_b)?;
                    backend.reserve(SocketAddrV4::new(addr_a, PORT))?;
                    // Transmit: IPv4 frames of protocol 253, flushed every 64 as the runtime does.
                    let mut frame = Vec::new();
                    wire::emit_ethernet_ipv4_tcp(
                        [0; 6],
                        [0; 6],
                        addr_a,
                        addr_b,
                        &TcpHeader::default(),
                        &[0u8; 64],
                        0,
                        &mut frame,
                    );
                    frame[23] = 253;
                    fix_ip_checksum(&mut frame, 20);
                    bound_rx
                        .recv_timeout(Duration::from_secs(20))
                        .context("the counter in B did not start")?;
                    for i in 0..FRAMES {
                        backend.send(&frame)?;
                        if i % 64 == 63 {
                            backend.flush()?;
                        }
                    }
                    backend.flush()?;
                    // Receive: B injects FRAMES segments to the reserved port.
                    let _ = ready_tx.send(());
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    let mut count = 0;
                    while count < FRAMES {
                        let polled = std::future::poll_fn(|cx| {
                            backend.poll_recv(cx, &mut |frame| {
                                // Only B's SYNs: the kernel of B also answers A's protocol-253
                                // frames with ICMP, which must not reach us but are not
                                // what this counts.
                                if let Ok((_, p)) = wire::parse_ethernet_ipv4_tcp(frame) {
                                    if p.tcp.dst_port == PORT && p.tcp.flags == TcpFlags::SYN {
                                        count += 1;
                                    }
                                }
                            })
                        });
                        if tokio::time::timeout_at(deadline, polled).await.is_err() {
                            break;
                        }
                        received_ref.store(count, std::sync::atomic::Ordering::Release);
                    }
                    Ok(backend.stats())
                })
            })?
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the backend did not finish transmitting")?;
        let (counted, counter_drops) = counter
            .join()
            .map_err(|_| anyhow::anyhow!("counter thread panicked"))??;
        // B sends in chunks, never more than a ring's worth ahead of what A has read, so no
        // frame is lost to a full ring however slowly A's thread is scheduled.
        let mut syn = TcpHeader {
            src_port: 40000,
            dst_port: PORT,
            flags: TcpFlags::SYN,
            window: 1024,
            ..TcpHeader::default()
        };
        let mut sent = 0;
        while sent < FRAMES {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while sent.saturating_sub(received.load(std::sync::atomic::Ordering::Acquire)) > 1024 {
                if std::time::Instant::now() > deadline {
                    bail!("the backend stopped reading after {sent} frames");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let chunk: Vec<Vec<u8>> = (0..512.min(FRAMES - sent))
                .map(|i| {
                    syn.src_port = 10_000 + ((sent + i) % 50_000) as u16;
                    let mut f = Vec::new();
                    wire::emit_ethernet_ipv4_tcp(
                        mac_b,
                        mac_a,
                        addr_b,
                        addr_a,
                        &syn,
                        &[],
                        1,
                        &mut f,
                    );
                    f
                })
                .collect();
            sent += chunk.len();
            inject(lab, chunk)?;
        }
        let stats = server
            .join()
            .map_err(|_| anyhow::anyhow!("backend thread panicked"))??;
        eprintln!("counted in B {counted} (drops {counter_drops}); {stats:?}");
        assert_eq!(stats.tx_frames, FRAMES as u64, "{stats:?}");
        assert_eq!(stats.tx_dropped, 0, "{stats:?}");
        assert_eq!(
            counted as u64 + counter_drops,
            FRAMES as u64,
            "all sent frames left A"
        );
        assert_eq!(stats.rx_frames, FRAMES as u64, "{stats:?}");
        assert_eq!(stats.kernel_dropped, 0, "{stats:?}");
        Ok(stats)
    })
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn xdp_backend_reaches_an_off_link_address_through_its_gateway() -> Result<()> {
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    let lab = Lab::new()?;
    // B also owns 198.18.250.1, which A reaches through B as its gateway.
    let behind = std::net::Ipv4Addr::new(198, 18, 250, 1);
    lab.exec_in(
        lab.ns_b(),
        &["ip", "addr", "add", "198.18.250.1/32", "dev", "lo"],
    )?;
    // B answers ARP only for addresses of the asking interface, so asking the link for
    // 198.18.250.1 itself would go unanswered: only the gateway's MAC works.
    for conf in ["all", "default", lab.spec.if_b.as_str()] {
        let key = format!("net.ipv4.conf.{conf}.arp_ignore=1");
        lab.exec_in(lab.ns_b(), &["sysctl", "-q", "-w", &key])?;
    }
    let via = lab.addr_b().to_string();
    lab.exec_in(
        lab.ns_a(),
        &["ip", "route", "add", "198.18.250.0/24", "via", &via],
    )?;
    active_open_to(&lab, behind, |iface| {
        Ok(XdpBackend::new(XdpConfig::new(iface))?)
    })?;
    lab.destroy()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn released_ports_go_back_to_the_kernel() -> Result<()> {
    if !tcpstack::io::xdp::object_embedded() {
        bail!("eBPF object missing: run `cargo xtask build` before these tests");
    }
    let lab = Lab::new()?;
    let iface = lab.spec.if_a.clone();
    let endpoint = SocketAddrV4::new(lab.addr_a(), OTHER_PORT);
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let lab_ref = &lab;
    std::thread::scope(|scope| -> Result<()> {
        let lab = lab_ref;
        let holder = scope.spawn(move || {
            in_netns(lab.ns_a(), move || -> Result<(usize, usize)> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let mut xdp = XdpBackend::new(XdpConfig::new(iface.clone()))?;
                    let mut raw = RawBackend::new(RawConfig::new(iface))?;
                    xdp.reserve(endpoint)?;
                    raw.reserve(endpoint)?;
                    let while_reserved = raw.iptables_rules().to_vec();
                    xdp.release(endpoint)?;
                    raw.release(endpoint)?;
                    let _ = held_tx.send(());
                    // Both stay alive (the program attached) while the kernel serves the port.
                    let _ = go_rx.recv_timeout(Duration::from_secs(30));
                    Ok((while_reserved.len(), raw.iptables_rules().len()))
                })
            })?
        });
        held_rx
            .recv_timeout(Duration::from_secs(20))
            .context("the backends did not start")?;
        let served = kernel_still_served(lab);
        let _ = go_tx.send(());
        let counts = holder
            .join()
            .map_err(|_| anyhow::anyhow!("holder thread panicked"))??;
        served.context("the released port is the kernel's again")?;
        assert_eq!(
            counts,
            (2, 1),
            "the range's rule and the port's while reserved, the range's after"
        );
        Ok(())
    })?;
    lab.destroy()
}

/// A panic while a stack runs on the raw backend (a bug in some task) unwinds through the
/// stack's owner, and the backend's guard removes both iptables rules (the active-open range's
/// and the listener's) on the way: the kernel's RSTs are not left dropped for ports nobody
/// serves any more.
#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn a_panic_with_the_raw_backend_open_still_removes_its_rules() -> Result<()> {
    let lab = Lab::new()?;
    let iface = lab.spec.if_a.clone();
    let ns_a = lab.ns_a().to_owned();
    let addr_a = lab.addr_a();
    let installed = std::sync::Mutex::new(Vec::new());
    let unwound = in_netns(lab.ns_a(), || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let backend = RawBackend::new(RawConfig::new(iface)).expect("the raw backend");
                let stack = tcpstack::runtime::Stack::builder()
                    .backend(backend)
                    .address(addr_a)
                    .build()
                    .expect("a stack");
                let _listener =
                    tcpstack::runtime::TcpListener::bind(&stack, SocketAddrV4::new(addr_a, PORT))
                        .expect("listens");
                *installed.lock().expect("lock") =
                    tcpstack_integration::rst_drop_rules(&ns_a).expect("iptables-save");
                panic!("a deliberate panic with the raw backend open");
            })
        }))
    })?;
    assert!(unwound.is_err(), "the closure panicked");
    let installed = installed.into_inner()?;
    assert_eq!(
        installed.len(),
        2,
        "the range's rule and the listener's were installed: {installed:?}"
    );
    let left = tcpstack_integration::rst_drop_rules(lab.ns_a())?;
    assert!(left.is_empty(), "rules left after the panic: {left:?}");
    lab.destroy()
}
