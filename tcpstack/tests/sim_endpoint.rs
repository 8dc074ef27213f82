//! Endpoint-level packet tests: inject one IPv4 packet, assert exactly what comes out.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use tcpstack::endpoint::{Endpoint, EndpointConfig, EndpointError, EndpointEvent};
use tcpstack::tcp::{Event, State};
use tcpstack::wire::{self, SeqNum, TcpFlags, TcpHeader};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT: u16 = 80;

fn local(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(LOCAL, port)
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(PEER, port)
}

fn endpoint(config: EndpointConfig, now: Instant) -> Endpoint {
    Endpoint::new(config, LOCAL, 7, now)
}

/// An IPv4 packet from `from` to `to`.
fn packet(
    from: SocketAddrV4,
    to: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: &[u8],
) -> Vec<u8> {
    let header = TcpHeader {
        src_port: from.port(),
        dst_port: to.port(),
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags,
        window: 65535,
        ..TcpHeader::default()
    };
    let mut out = Vec::new();
    wire::emit_ipv4_tcp(*from.ip(), *to.ip(), &header, payload, 1, &mut out);
    out
}

/// Everything the endpoint sends now, parsed.
fn sent(endpoint: &mut Endpoint, now: Instant) -> Vec<(TcpHeader, usize)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while endpoint.poll_transmit(now, &mut buf) {
        let parsed = wire::parse_ipv4_tcp(&buf).expect("the endpoint sends valid packets");
        assert_eq!(parsed.ip.src, LOCAL);
        out.push((parsed.tcp, parsed.payload.len()));
    }
    out
}

fn events(endpoint: &mut Endpoint) -> Vec<EndpointEvent> {
    std::iter::from_fn(|| endpoint.poll_event()).collect()
}

#[test]
fn syn_to_a_closed_port_gets_rst_ack() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.handle_packet(
        &packet(peer(40000), local(81), 1000, 0, TcpFlags::SYN, &[]),
        now,
    );
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 1);
    let (rst, len) = out[0];
    // RFC 9293 §3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    assert_eq!(rst.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!(rst.seq, SeqNum(0));
    assert_eq!(rst.ack, SeqNum(1001));
    assert_eq!((rst.src_port, rst.dst_port), (81, 40000));
    assert_eq!(len, 0);
    let stats = ep.stats();
    assert_eq!(stats.drops.no_connection, 1);
    assert_eq!(stats.resets_sent, 1);
    assert_eq!(stats.packets_out, 1);
    assert_eq!(ep.connection_count(), 0);
}

#[test]
fn stray_ack_gets_rst_with_its_ack_as_seq() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.handle_packet(
        &packet(
            peer(40000),
            local(81),
            5000,
            777_777,
            TcpFlags::ACK,
            b"data",
        ),
        now,
    );
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 1);
    let (rst, _) = out[0];
    // <SEQ=SEG.ACK><CTL=RST>.
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!(rst.seq, SeqNum(777_777));
}

#[test]
fn a_rst_is_never_answered() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    ep.handle_packet(
        &packet(peer(40000), local(81), 1, 0, TcpFlags::RST, &[]),
        now,
    );
    ep.handle_packet(
        &packet(
            peer(40000),
            local(PORT),
            1,
            0,
            TcpFlags::RST | TcpFlags::ACK,
            &[],
        ),
        now,
    );
    assert!(sent(&mut ep, now).is_empty());
    let stats = ep.stats();
    assert_eq!(stats.drops.stray_reset, 2);
    assert_eq!(stats.resets_received, 2);
    assert_eq!(stats.resets_sent, 0);
}

#[test]
fn ack_to_a_listener_gets_rst() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    ep.handle_packet(
        &packet(peer(40000), local(PORT), 9, 4242, TcpFlags::ACK, &[]),
        now,
    );
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.flags, TcpFlags::RST);
    assert_eq!(out[0].0.seq, SeqNum(4242));
    assert_eq!(ep.stats().drops.bad_ack, 1);
}

#[test]
fn impossible_flag_sets_to_a_listener_are_dropped_and_counted() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    let impossible = [
        TcpFlags::SYN | TcpFlags::FIN,
        TcpFlags::SYN | TcpFlags::RST,
        TcpFlags::SYN | TcpFlags::FIN | TcpFlags::ACK,
        TcpFlags::SYN | TcpFlags::RST | TcpFlags::ACK,
        TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST,
        // The "Christmas tree" probe.
        TcpFlags::SYN | TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG,
    ];
    for (i, flags) in impossible.into_iter().enumerate() {
        let port = 40000 + i as u16;
        ep.handle_packet(&packet(peer(port), local(PORT), 1000, 0, flags, b"x"), now);
        assert!(sent(&mut ep, now).is_empty(), "{flags:?} is answered");
    }
    let stats = ep.stats();
    assert_eq!(stats.drops.impossible_flags, impossible.len() as u64);
    assert_eq!(stats.drops.total(), impossible.len() as u64);
    assert_eq!(stats.passive_opens, 0);
    assert_eq!(stats.resets_sent, 0);
    assert_eq!(ep.connection_count(), 0);
    assert!(events(&mut ep).is_empty());

    // A plain SYN on the same tuple as the first probe still opens a connection.
    ep.handle_packet(
        &packet(peer(40000), local(PORT), 1000, 0, TcpFlags::SYN, &[]),
        now,
    );
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(ep.stats().passive_opens, 1);
}

#[test]
fn syn_fin_to_a_closed_port_still_gets_rst() {
    // RFC 9293 §3.10.7.1: with no listener, everything but a RST is answered; Linux does too.
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.handle_packet(
        &packet(
            peer(40000),
            local(81),
            1000,
            0,
            TcpFlags::SYN | TcpFlags::FIN,
            &[],
        ),
        now,
    );
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!(out[0].0.ack, SeqNum(1002));
    let stats = ep.stats();
    assert_eq!(stats.drops.impossible_flags, 0);
    assert_eq!(stats.drops.no_connection, 1);
}

#[test]
fn malformed_and_misaddressed_packets_are_counted_and_dropped() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    let mut bad = packet(peer(40000), local(PORT), 1, 0, TcpFlags::SYN, b"xyz");
    let last = bad.len() - 1;
    bad[last] ^= 0x10;
    ep.handle_packet(&bad, now);
    ep.handle_packet(&[0x45, 0, 0], now);
    let elsewhere = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 9), PORT);
    ep.handle_packet(
        &packet(peer(40000), elsewhere, 1, 0, TcpFlags::SYN, &[]),
        now,
    );
    let from_broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 40000);
    ep.handle_packet(
        &packet(from_broadcast, local(PORT), 1, 0, TcpFlags::SYN, &[]),
        now,
    );
    assert!(sent(&mut ep, now).is_empty());
    let stats = ep.stats();
    assert_eq!(stats.drops.wire.bad_tcp_checksum, 1);
    assert_eq!(stats.drops.wire.truncated, 1);
    assert_eq!(stats.drops.wrong_destination, 1);
    assert_eq!(stats.drops.bad_source, 1);
    assert_eq!(stats.drops.total(), 4);
    assert_eq!(stats.packets_in, 4);
    assert_eq!(ep.connection_count(), 0);
}

/// Sends the peer's SYN and returns the SYN-ACK.
fn syn(ep: &mut Endpoint, port: u16, isn: u32, now: Instant) -> Option<TcpHeader> {
    ep.handle_packet(
        &packet(peer(port), local(PORT), isn, 0, TcpFlags::SYN, &[]),
        now,
    );
    let out = sent(ep, now);
    assert!(out.len() <= 1, "{out:?}");
    out.first().map(|(h, _)| *h)
}

/// Completes a handshake the endpoint answered with `syn_ack`.
fn final_ack(ep: &mut Endpoint, port: u16, isn: u32, syn_ack: &TcpHeader, now: Instant) {
    let ack = syn_ack.seq.0.wrapping_add(1);
    ep.handle_packet(
        &packet(peer(port), local(PORT), isn + 1, ack, TcpFlags::ACK, &[]),
        now,
    );
}

#[test]
fn half_open_queue_overflow_drops_the_syn_without_cookies() {
    let now = Instant::now();
    let config = EndpointConfig {
        max_half_open: 2,
        syn_cookies: false,
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    ep.listen(local(PORT)).unwrap();
    let first = syn(&mut ep, 40001, 100, now).expect("SYN-ACK");
    assert_eq!(first.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(first.ack, SeqNum(101));
    assert!(syn(&mut ep, 40002, 200, now).is_some());
    assert_eq!(syn(&mut ep, 40003, 300, now), None, "third SYN is dropped");
    assert_eq!(ep.stats().drops.half_open_full, 1);
    assert_eq!(ep.stats().passive_opens, 2);
    // Completing one handshake frees a half-open slot.
    final_ack(&mut ep, 40001, 100, &first, now);
    assert!(syn(&mut ep, 40003, 300, now).is_some());
}

#[test]
fn accept_queue_holds_established_connections_until_accepted() {
    let now = Instant::now();
    let config = EndpointConfig {
        accept_backlog: 1,
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    ep.listen(local(PORT)).unwrap();
    let syn_ack = syn(&mut ep, 40001, 100, now).unwrap();
    assert!(
        events(&mut ep).is_empty(),
        "nothing to accept before the handshake completes"
    );
    final_ack(&mut ep, 40001, 100, &syn_ack, now);
    assert_eq!(events(&mut ep), vec![EndpointEvent::Incoming(local(PORT))]);
    // The accept queue is full: the next SYN is dropped, to be retransmitted.
    assert_eq!(syn(&mut ep, 40002, 200, now), None);
    assert_eq!(ep.stats().drops.accept_queue_full, 1);

    let handle = ep.accept(local(PORT)).expect("a queued connection");
    assert_eq!(ep.accept(local(PORT)), None);
    assert_eq!(
        events(&mut ep),
        vec![EndpointEvent::Connection(handle, Event::Connected)]
    );
    let conn = ep.connection_mut(handle).unwrap();
    assert_eq!(conn.state(), State::Established);
    assert_eq!(conn.tuple().remote, peer(40001));
    assert!(
        syn(&mut ep, 40002, 200, now).is_some(),
        "room again after accept"
    );
    assert_eq!(ep.stats().connections_established, 1);
}

#[test]
fn listen_twice_is_addr_in_use() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    assert_eq!(ep.listen(local(PORT)), Err(EndpointError::AddrInUse));
}

#[test]
fn active_opens_use_the_ephemeral_range_until_it_runs_out() {
    let now = Instant::now();
    let config = EndpointConfig {
        ephemeral_ports: (61000, 61002),
        ..EndpointConfig::default()
    };
    assert_eq!(EndpointConfig::default().ephemeral_ports, (61000, 65535));
    let mut ep = endpoint(config, now);
    let mut ports: Vec<u16> = (0..3)
        .map(|_| {
            let h = ep.connect(peer(PORT), now).unwrap();
            ep.connection_mut(h).unwrap().tuple().local.port()
        })
        .collect();
    ports.sort();
    assert_eq!(ports, vec![61000, 61001, 61002]);
    assert_eq!(ep.connect(peer(PORT), now), Err(EndpointError::NoFreePort));
    // Another remote has its own tuples.
    assert!(ep.connect(peer(PORT + 1), now).is_ok());
    assert_eq!(ep.stats().active_opens, 4);
    let syns = sent(&mut ep, now);
    assert_eq!(syns.len(), 4);
    assert!(syns.iter().all(|(h, _)| h.flags == TcpFlags::SYN));
}

#[test]
fn time_wait_entry_reacks_a_retransmitted_fin_and_expires() {
    let mut now = Instant::now();
    let config = EndpointConfig::default();
    let msl = config.connection.msl;
    let mut ep = endpoint(config, now);
    let handle = ep.connect(peer(PORT), now).unwrap();
    let our_port = ep.connection_mut(handle).unwrap().tuple().local.port();
    let syn = sent(&mut ep, now)[0].0;
    let our_isn = syn.seq.0;
    let their_isn = 5_000u32;
    let from_peer =
        |seq: u32, ack: u32, flags| packet(peer(PORT), local(our_port), seq, ack, flags, &[]);
    ep.handle_packet(
        &from_peer(their_isn, our_isn + 1, TcpFlags::SYN | TcpFlags::ACK),
        now,
    );
    assert_eq!(sent(&mut ep, now).len(), 1, "the handshake's ACK");
    ep.connection_mut(handle).unwrap().close();
    let fin = sent(&mut ep, now);
    assert_eq!(fin.len(), 1);
    assert!(fin[0].0.flags.fin());
    now += Duration::from_millis(10);
    // The peer acknowledges our FIN and sends its own: we enter TIME-WAIT.
    ep.handle_packet(
        &from_peer(their_isn + 1, our_isn + 2, TcpFlags::FIN | TcpFlags::ACK),
        now,
    );
    let last_ack = sent(&mut ep, now);
    assert_eq!(last_ack.len(), 1);
    assert_eq!(last_ack[0].0.flags, TcpFlags::ACK);
    assert_eq!(last_ack[0].0.seq, SeqNum(our_isn + 2));
    assert_eq!(last_ack[0].0.ack, SeqNum(their_isn + 2));
    let evs = events(&mut ep);
    assert!(
        evs.contains(&EndpointEvent::Connection(handle, Event::PeerClosed)),
        "{evs:?}"
    );
    assert_eq!(
        evs.last(),
        Some(&EndpointEvent::Connection(handle, Event::Closed))
    );
    assert_eq!(ep.connection_count(), 0, "the TCB is freed");
    assert_eq!(ep.time_wait_count(), 1, "a compact entry replaces it");
    assert!(ep.connection_mut(handle).is_none());
    assert_eq!(ep.poll_timeout(), Some(now + 2 * msl));

    // Our last ACK was lost: the peer retransmits its FIN, the entry acknowledges it again and
    // restarts 2·MSL (RFC 9293 §3.10.7.4).
    now += Duration::from_secs(1);
    ep.handle_packet(
        &from_peer(their_isn + 1, our_isn + 2, TcpFlags::FIN | TcpFlags::ACK),
        now,
    );
    let again = sent(&mut ep, now);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0.flags, TcpFlags::ACK);
    assert_eq!(again[0].0.seq, SeqNum(our_isn + 2));
    assert_eq!(again[0].0.ack, SeqNum(their_isn + 2));
    assert_eq!(ep.poll_timeout(), Some(now + 2 * msl));

    now += 2 * msl;
    ep.handle_timeout(now);
    assert_eq!(ep.time_wait_count(), 0);
    assert_eq!(ep.poll_timeout(), None);
    assert!(ep.is_idle());
    let stats = ep.stats();
    assert_eq!(stats.time_wait_entries, 1);
    assert_eq!(stats.connections_closed, 1);
    // After TIME-WAIT the tuple is closed: the same FIN now gets a RST.
    ep.handle_packet(
        &from_peer(their_isn + 1, our_isn + 2, TcpFlags::FIN | TcpFlags::ACK),
        now,
    );
    let rst = sent(&mut ep, now);
    assert_eq!(rst[0].0.flags, TcpFlags::RST);
}

#[test]
fn timers_follow_many_connections() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    for i in 0..200u16 {
        let remote = SocketAddrV4::new(PEER, 1000 + i);
        ep.connect(remote, now + Duration::from_millis(u64::from(i)))
            .unwrap();
        sent(&mut ep, now + Duration::from_millis(u64::from(i)));
    }
    let rto = EndpointConfig::default().connection.rto_initial;
    assert_eq!(ep.poll_timeout(), Some(now + rto));
    // Firing the first deadline retransmits exactly the first SYN.
    ep.handle_timeout(now + rto);
    let out = sent(&mut ep, now + rto);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.dst_port, 1000);
    assert_eq!(
        ep.poll_timeout(),
        Some(now + rto + Duration::from_millis(1))
    );
}

#[test]
fn a_new_syn_takes_over_a_listeners_time_wait_entry() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    let syn_ack = syn(&mut ep, 40001, 100, now).unwrap();
    final_ack(&mut ep, 40001, 100, &syn_ack, now);
    let handle = ep.accept(local(PORT)).unwrap();
    // The server closes first, so the TIME-WAIT entry is on the listening port.
    ep.connection_mut(handle).unwrap().close();
    let fin = sent(&mut ep, now);
    assert!(fin[0].0.flags.fin());
    let our_fin_end = fin[0].0.seq.0 + 1;
    ep.handle_packet(
        &packet(
            peer(40001),
            local(PORT),
            101,
            our_fin_end,
            TcpFlags::FIN | TcpFlags::ACK,
            &[],
        ),
        now,
    );
    assert_eq!(sent(&mut ep, now).len(), 1, "the last ACK");
    assert_eq!(ep.time_wait_count(), 1);
    assert_eq!(ep.connection_count(), 0);

    // A SYN+FIN beyond the old sequence space neither reopens the entry nor is answered.
    ep.handle_packet(
        &packet(
            peer(40001),
            local(PORT),
            100_000,
            0,
            TcpFlags::SYN | TcpFlags::FIN,
            &[],
        ),
        now,
    );
    assert!(sent(&mut ep, now).is_empty());
    assert_eq!(ep.time_wait_count(), 1);
    assert_eq!(ep.stats().drops.impossible_flags, 1);
    assert_eq!(ep.stats().time_wait_reopened, 0);

    // RFC 9293 §3.6.1: a SYN beyond the old connection's sequence space may reopen the tuple.
    let later = now + Duration::from_secs(1);
    let new_syn_ack = syn(&mut ep, 40001, 100_000, later).expect("a SYN-ACK for the new SYN");
    assert_eq!(new_syn_ack.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(new_syn_ack.ack, SeqNum(100_001));
    assert_eq!(ep.time_wait_count(), 0);
    assert_eq!(ep.connection_count(), 1);
    assert_eq!(ep.stats().time_wait_reopened, 1);

    // An old SYN (not beyond the old sequence space) only gets the entry's ACK.
    let mut ep2 = endpoint(EndpointConfig::default(), now);
    ep2.listen(local(PORT)).unwrap();
    let syn_ack = syn(&mut ep2, 40001, 100, now).unwrap();
    final_ack(&mut ep2, 40001, 100, &syn_ack, now);
    let handle = ep2.accept(local(PORT)).unwrap();
    ep2.connection_mut(handle).unwrap().close();
    let fin_end = sent(&mut ep2, now)[0].0.seq.0 + 1;
    ep2.handle_packet(
        &packet(
            peer(40001),
            local(PORT),
            101,
            fin_end,
            TcpFlags::FIN | TcpFlags::ACK,
            &[],
        ),
        now,
    );
    sent(&mut ep2, now);
    let reply = syn(&mut ep2, 40001, 50, later).expect("a challenge ACK");
    assert_eq!(reply.flags, TcpFlags::ACK);
    assert_eq!(reply.ack, SeqNum(102));
    assert_eq!(ep2.time_wait_count(), 1);
}

/// Random segments and random bytes: no panic, bounded tables, and once the peers go quiet
/// every half-open connection times out and the endpoint is empty again.
#[test]
fn random_segments_and_garbage_leave_nothing_behind() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    let start = Instant::now();
    let config = EndpointConfig {
        max_half_open: 16,
        accept_backlog: 4,
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, start);
    ep.listen(local(PORT)).unwrap();
    let mut rng = SmallRng::seed_from_u64(99);
    let mut now = start;
    let mut seqs: Vec<u32> = Vec::new();
    for _ in 0..20_000 {
        now += Duration::from_micros(rng.gen_range(0..2000));
        if rng.gen_bool(0.1) {
            let len = rng.gen_range(0..80);
            let garbage: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            ep.handle_packet(&garbage, now);
        } else {
            let from = peer(40000 + rng.gen_range(0..32));
            let to = local(if rng.gen_bool(0.8) { PORT } else { 81 });
            // Mostly numbers the endpoint has used, so that some segments are acceptable.
            let pick = |rng: &mut SmallRng, seqs: &[u32]| {
                if !seqs.is_empty() && rng.gen_bool(0.7) {
                    seqs[rng.gen_range(0..seqs.len())].wrapping_add(rng.gen_range(0..3))
                } else {
                    rng.gen()
                }
            };
            // A small range, so that some final ACKs hit a half-open connection's RCV.NXT.
            let seq = rng.gen_range(0..200u32);
            let ack = pick(&mut rng, &seqs);
            let flags = TcpFlags(rng.gen::<u8>() & 0x1f);
            let payload = vec![0u8; rng.gen_range(0..3) * 100];
            ep.handle_packet(&packet(from, to, seq, ack, flags, &payload), now);
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        for (header, _) in sent(&mut ep, now) {
            seqs.push(header.seq.0.wrapping_add(1));
            if seqs.len() > 64 {
                seqs.remove(0);
            }
        }
        while let Some(event) = ep.poll_event() {
            if let EndpointEvent::Incoming(listener) = event {
                // Accept and abort at once, like a server that is shutting down.
                while let Some(handle) = ep.accept(listener) {
                    if let Some(conn) = ep.connection_mut(handle) {
                        conn.abort();
                    }
                }
            }
        }
        assert!(
            ep.connection_count() <= 16 + 4 + 32,
            "{}",
            ep.connection_count()
        );
    }
    let stats = ep.stats();
    assert!(stats.drops.wire.total() > 0);
    assert!(stats.passive_opens > 0);
    assert!(stats.resets_sent > 0);
    assert!(stats.connections_established > 0, "{stats:?}");
    // Quiet from now on: every timer runs out.
    let mut fired = 0;
    while let Some(deadline) = ep.poll_timeout() {
        ep.handle_timeout(deadline);
        sent(&mut ep, deadline);
        events(&mut ep);
        fired += 1;
        assert!(fired < 100_000, "timers keep firing");
    }
    assert_eq!(ep.connection_count(), 0);
    assert_eq!(ep.time_wait_count(), 0);
    assert!(ep.is_idle());
}

#[test]
fn a_full_half_open_queue_answers_with_syn_cookies() {
    let now = Instant::now();
    let config = EndpointConfig {
        max_half_open: 1,
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    ep.listen(local(PORT)).unwrap();
    let normal = syn(&mut ep, 40001, 100, now).unwrap();
    assert!(
        normal.options.window_scale.is_none(),
        "the test SYN offers no scaling"
    );
    assert_eq!(ep.connection_count(), 1);

    // The queue is full: the SYN-ACK carries a cookie and no state is kept.
    ep.handle_packet(
        &packet_with_mss(peer(40002), local(PORT), 200, 0, TcpFlags::SYN, 1400),
        now,
    );
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 1);
    let cookie = out[0].0;
    assert_eq!(cookie.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(cookie.ack, SeqNum(201));
    assert_eq!(cookie.options.mss, Some(1460), "we still announce our MSS");
    assert_eq!(
        cookie.options.window_scale, None,
        "a cookie cannot remember scaling"
    );
    assert_eq!(ep.connection_count(), 1);
    assert_eq!(ep.stats().syn_cookies_sent, 1);

    // A forged ACK gets a RST; the right one brings the connection back, established.
    let t = now + Duration::from_millis(30);
    ep.handle_packet(
        &packet(
            peer(40002),
            local(PORT),
            201,
            cookie.seq.0 + 2,
            TcpFlags::ACK,
            &[],
        ),
        t,
    );
    assert_eq!(sent(&mut ep, t)[0].0.flags, TcpFlags::RST);
    ep.handle_packet(
        &packet(
            peer(40002),
            local(PORT),
            201,
            cookie.seq.0 + 1,
            TcpFlags::ACK,
            b"hi",
        ),
        t,
    );
    assert_eq!(events(&mut ep), vec![EndpointEvent::Incoming(local(PORT))]);
    let handle = ep.accept(local(PORT)).unwrap();
    let conn = ep.connection_mut(handle).unwrap();
    assert_eq!(conn.state(), State::Established);
    assert_eq!(conn.tuple().remote, peer(40002));
    assert_eq!(conn.mss(), 1400);
    let mut buf = [0u8; 8];
    assert_eq!(
        conn.recv(&mut buf),
        Ok(2),
        "data on the cookie's ACK is kept"
    );
    let stats = ep.stats();
    assert_eq!(stats.syn_cookies_accepted, 1);
    assert_eq!(stats.drops.bad_ack, 1);
    assert_eq!(stats.drops.half_open_full, 0);
}

/// A SYN with an MSS option.
fn packet_with_mss(
    from: SocketAddrV4,
    to: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    mss: u16,
) -> Vec<u8> {
    let mut header = TcpHeader {
        src_port: from.port(),
        dst_port: to.port(),
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags,
        window: 65535,
        ..TcpHeader::default()
    };
    header.options.mss = Some(mss);
    let mut out = Vec::new();
    wire::emit_ipv4_tcp(*from.ip(), *to.ip(), &header, &[], 1, &mut out);
    out
}

#[test]
fn unlisten_resets_connections_nobody_accepted() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    let syn_ack = syn(&mut ep, 40001, 100, now).unwrap();
    final_ack(&mut ep, 40001, 100, &syn_ack, now);
    syn(&mut ep, 40002, 200, now).unwrap();
    assert_eq!(ep.connection_count(), 2);
    events(&mut ep);
    ep.unlisten(local(PORT)).unwrap();
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(h, _)| h.flags.rst()), "{out:?}");
    assert_eq!(ep.connection_count(), 0);
    assert!(events(&mut ep).is_empty(), "nobody knew these handles");
    assert_eq!(
        ep.unlisten(local(PORT)),
        Err(EndpointError::UnknownConnection)
    );
    // The port is closed now.
    assert_eq!(
        syn(&mut ep, 40003, 300, now).unwrap().flags,
        TcpFlags::RST | TcpFlags::ACK
    );
}

/// A segment from `from` to the listening port with a timestamps option (and SACK-permitted on
/// a SYN).
fn packet_with_timestamps(
    from: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    tsval: u32,
    tsecr: u32,
) -> Vec<u8> {
    let mut header = TcpHeader {
        src_port: from.port(),
        dst_port: PORT,
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags,
        window: 65535,
        ..TcpHeader::default()
    };
    header.options.timestamps = Some(wire::Timestamps { tsval, tsecr });
    header.options.sack_permitted = flags == TcpFlags::SYN;
    let mut out = Vec::new();
    wire::emit_ipv4_tcp(*from.ip(), LOCAL, &header, &[], 1, &mut out);
    out
}

#[test]
fn time_wait_entries_keep_timestamps_ignore_rsts_and_reopen_for_a_newer_tsval() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    let client = peer(40007);
    ep.handle_packet(
        &packet_with_timestamps(client, 100, 0, TcpFlags::SYN, 5000, 0),
        now,
    );
    let syn_ack = sent(&mut ep, now)[0].0;
    let ours = syn_ack.options.timestamps.expect("timestamps negotiated");
    assert_eq!(ours.tsecr, 5000);
    assert!(syn_ack.options.sack_permitted);
    let iss = syn_ack.seq.0;
    ep.handle_packet(
        &packet_with_timestamps(client, 101, iss + 1, TcpFlags::ACK, 5001, ours.tsval),
        now,
    );
    let handle = ep.accept(local(PORT)).unwrap();
    ep.connection_mut(handle).unwrap().close();
    let fin = sent(&mut ep, now)[0].0;
    assert!(fin.flags.fin());
    assert_eq!(fin.options.timestamps.map(|ts| ts.tsecr), Some(5001));
    let fin_ack = TcpFlags::FIN | TcpFlags::ACK;
    ep.handle_packet(
        &packet_with_timestamps(client, 101, iss + 2, fin_ack, 5002, ours.tsval),
        now,
    );
    let last_ack = sent(&mut ep, now)[0].0;
    assert_eq!(last_ack.options.timestamps.map(|ts| ts.tsecr), Some(5002));
    assert_eq!(ep.time_wait_count(), 1);
    assert_eq!(ep.connection_count(), 0);

    let later = now + Duration::from_secs(1);
    // RFC 1337: an exact RST does not end TIME-WAIT.
    ep.handle_packet(
        &packet(client, local(PORT), 102, 0, TcpFlags::RST, &[]),
        later,
    );
    assert!(sent(&mut ep, later).is_empty());
    assert_eq!(ep.time_wait_count(), 1);
    // An old SYN, though its sequence number lies beyond the old connection: a challenge ACK
    // with our timestamps, echoing the last TSval seen.
    ep.handle_packet(
        &packet_with_timestamps(client, 900_000, 0, TcpFlags::SYN, 4000, 0),
        later,
    );
    let challenge = sent(&mut ep, later)[0].0;
    assert_eq!(challenge.flags, TcpFlags::ACK);
    assert_eq!(challenge.options.timestamps.map(|ts| ts.tsecr), Some(5002));
    assert_eq!(ep.time_wait_count(), 1);
    // An old duplicate of the peer's FIN: PAWS drops it (and acknowledges).
    ep.handle_packet(
        &packet_with_timestamps(client, 101, iss + 2, fin_ack, 4999, ours.tsval),
        later,
    );
    assert_eq!(sent(&mut ep, later)[0].0.flags, TcpFlags::ACK);
    assert_eq!(ep.stats().paws_rejected, 1);
    // RFC 6191: a newer TSval reopens the tuple, even with a sequence number below the old one.
    ep.handle_packet(
        &packet_with_timestamps(client, 50, 0, TcpFlags::SYN, 6000, 0),
        later,
    );
    let new_syn_ack = sent(&mut ep, later)[0].0;
    assert_eq!(new_syn_ack.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(new_syn_ack.ack, SeqNum(51));
    // The address pair's clock went on: the new connection's TSvals follow the old ones.
    let new_ts = new_syn_ack.options.timestamps.expect("timestamps");
    assert_eq!(new_ts.tsecr, 6000);
    assert_eq!(new_ts.tsval.wrapping_sub(ours.tsval), 1000);
    assert_eq!(ep.time_wait_count(), 0);
    assert_eq!(ep.stats().time_wait_reopened, 1);
}

#[test]
fn a_syn_cookie_keeps_window_scale_and_sack_in_its_timestamp() {
    let now = Instant::now();
    let config = EndpointConfig {
        max_half_open: 0,
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    ep.listen(local(PORT)).unwrap();
    let client = peer(40008);
    let mut syn = TcpHeader {
        src_port: client.port(),
        dst_port: PORT,
        seq: SeqNum(100),
        flags: TcpFlags::SYN,
        window: 65535,
        ..TcpHeader::default()
    };
    syn.options.mss = Some(1460);
    syn.options.window_scale = Some(9);
    syn.options.sack_permitted = true;
    syn.options.timestamps = Some(wire::Timestamps {
        tsval: 5000,
        tsecr: 0,
    });
    let mut frame = Vec::new();
    wire::emit_ipv4_tcp(PEER, LOCAL, &syn, &[], 1, &mut frame);
    ep.handle_packet(&frame, now);
    let cookie = sent(&mut ep, now)[0].0;
    assert_eq!(ep.stats().syn_cookies_sent, 1);
    assert_eq!(ep.connection_count(), 0, "no state kept");
    assert_eq!(cookie.options.window_scale, Some(7));
    assert!(cookie.options.sack_permitted);
    let ts = cookie.options.timestamps.expect("timestamps answered");
    assert_eq!(ts.tsecr, 5000);
    // The low six bits: the peer's shift 9, and SACK-permitted (Linux's layout).
    assert_eq!(ts.tsval & 0x3f, 0x10 | 9);
    // The final ACK echoes that TSval: the connection gets every option back.
    let ack = TcpFlags::ACK;
    ep.handle_packet(
        &packet_with_timestamps(client, 101, cookie.seq.0 + 1, ack, 5001, ts.tsval),
        now,
    );
    assert_eq!(ep.stats().syn_cookies_accepted, 1);
    let handle = ep.accept(local(PORT)).expect("established from the cookie");
    let conn = ep.connection_mut(handle).unwrap();
    assert!(conn.stats().timestamps);
    assert!(conn.stats().sack);
    assert_eq!(conn.window_scale(), Some((7, 9)));
    conn.send(b"hi").unwrap();
    let data = sent(&mut ep, now)[0].0;
    assert_eq!(data.options.timestamps.map(|ts| ts.tsecr), Some(5001));
}

#[test]
fn a_syn_cookie_without_timestamps_uses_neither_sack_nor_window_scale() {
    let now = Instant::now();
    let config = EndpointConfig {
        max_half_open: 0,
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    ep.listen(local(PORT)).unwrap();
    let client = peer(40009);
    let mut syn = TcpHeader {
        src_port: client.port(),
        dst_port: PORT,
        seq: SeqNum(100),
        flags: TcpFlags::SYN,
        window: 65535,
        ..TcpHeader::default()
    };
    syn.options.window_scale = Some(9);
    syn.options.sack_permitted = true;
    let mut frame = Vec::new();
    wire::emit_ipv4_tcp(PEER, LOCAL, &syn, &[], 1, &mut frame);
    ep.handle_packet(&frame, now);
    let cookie = sent(&mut ep, now)[0].0;
    assert_eq!(cookie.options.timestamps, None);
    assert_eq!(
        cookie.options.window_scale, None,
        "a cookie cannot remember it"
    );
    assert!(!cookie.options.sack_permitted);
    ep.handle_packet(
        &packet(
            client,
            local(PORT),
            101,
            cookie.seq.0 + 1,
            TcpFlags::ACK,
            &[],
        ),
        now,
    );
    let handle = ep.accept(local(PORT)).expect("established from the cookie");
    let conn = ep.connection_mut(handle).unwrap();
    assert!(!conn.stats().timestamps);
    assert!(!conn.stats().sack);
    assert_eq!(conn.window_scale(), None);
}

/// A segment from the peer's listening port to our `port`, with timestamps.
fn reply_with_timestamps(
    port: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    tsval: u32,
    tsecr: u32,
) -> Vec<u8> {
    let header = TcpHeader {
        src_port: PORT,
        dst_port: port,
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags,
        window: 65535,
        options: wire::TcpOptions {
            timestamps: Some(wire::Timestamps { tsval, tsecr }),
            ..wire::TcpOptions::default()
        },
        ..TcpHeader::default()
    };
    let mut out = Vec::new();
    wire::emit_ipv4_tcp(PEER, LOCAL, &header, &[], 1, &mut out);
    out
}

/// Connects from the only ephemeral port, with timestamps, and closes first: the tuple ends in
/// our TIME-WAIT table. Returns our SYN's TSval and the old connection's SND.NXT.
fn active_close_into_time_wait(ep: &mut Endpoint, now: Instant) -> (u32, u32) {
    let handle = ep.connect(peer(PORT), now).unwrap();
    let syn = sent(ep, now)[0].0;
    let port = syn.src_port;
    let ours = syn.options.timestamps.expect("timestamps offered").tsval;
    let isn = syn.seq.0;
    let synack = TcpFlags::SYN | TcpFlags::ACK;
    ep.handle_packet(
        &reply_with_timestamps(port, 7000, isn + 1, synack, 100, ours),
        now,
    );
    sent(ep, now);
    ep.connection_mut(handle).unwrap().close();
    sent(ep, now);
    let fin_ack = TcpFlags::FIN | TcpFlags::ACK;
    ep.handle_packet(
        &reply_with_timestamps(port, 7001, isn + 2, fin_ack, 101, ours),
        now,
    );
    sent(ep, now);
    assert_eq!(ep.time_wait_count(), 1);
    (ours, isn + 2)
}

#[test]
fn with_every_port_in_time_wait_an_active_open_reuses_one_quiet_for_a_second() {
    let now = Instant::now();
    let config = EndpointConfig {
        ephemeral_ports: (61000, 61000),
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    let (old_tsval, old_snd_nxt) = active_close_into_time_wait(&mut ep, now);
    // Too soon: the old connection's TSvals could still be as new as ours.
    let soon = now + Duration::from_millis(999);
    assert_eq!(ep.connect(peer(PORT), soon), Err(EndpointError::NoFreePort));
    // A second later the entry gives way; the new SYN's TSval and ISN lie past the old ones.
    let later = now + Duration::from_secs(1);
    assert!(ep.connect(peer(PORT), later).is_ok());
    assert_eq!(ep.time_wait_count(), 0);
    assert_eq!(ep.stats().time_wait_reused, 1);
    let syn = sent(&mut ep, later)[0].0;
    assert_eq!(syn.flags, TcpFlags::SYN);
    assert_eq!(syn.src_port, 61000);
    assert_eq!(syn.seq.0, old_snd_nxt + 65537);
    let tsval = syn.options.timestamps.expect("timestamps").tsval;
    assert_eq!(tsval.wrapping_sub(old_tsval), 1000);

    // Without timestamps the entry is never taken over.
    let config = EndpointConfig {
        ephemeral_ports: (61000, 61000),
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    let handle = ep.connect(peer(PORT), now).unwrap();
    let syn = sent(&mut ep, now)[0].0;
    let isn = syn.seq.0;
    let from_peer = |seq, ack, flags| packet(peer(PORT), local(61000), seq, ack, flags, &[]);
    ep.handle_packet(
        &from_peer(7000, isn + 1, TcpFlags::SYN | TcpFlags::ACK),
        now,
    );
    ep.connection_mut(handle).unwrap().close();
    sent(&mut ep, now);
    ep.handle_packet(
        &from_peer(7001, isn + 2, TcpFlags::FIN | TcpFlags::ACK),
        now,
    );
    sent(&mut ep, now);
    assert_eq!(ep.time_wait_count(), 1);
    let much_later = now + Duration::from_secs(30);
    assert_eq!(
        ep.connect(peer(PORT), much_later),
        Err(EndpointError::NoFreePort)
    );
}

#[test]
fn a_syn_for_a_connection_in_syn_sent_reaches_it_simultaneous_open() {
    let now = Instant::now();
    let config = EndpointConfig {
        ephemeral_ports: (40000, 40000),
        ..EndpointConfig::default()
    };
    let mut ep = endpoint(config, now);
    let handle = ep.connect(peer(PORT), now).unwrap();
    let (our_syn, _) = sent(&mut ep, now)[0];
    assert_eq!(our_syn.flags, TcpFlags::SYN);
    // The peer opened to us at the same moment: its SYN goes to the connection (RFC 9293 §3.5
    // figure 7, line 3), not to the RST of §3.10.7.1.
    ep.handle_packet(
        &packet(peer(PORT), local(40000), 300, 0, TcpFlags::SYN, &[]),
        now,
    );
    assert_eq!(ep.connection(handle).unwrap().state(), State::SynReceived);
    let out = sent(&mut ep, now);
    assert_eq!(out.len(), 1, "{out:?}");
    let (synack, _) = out[0];
    assert_eq!(synack.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!((synack.seq, synack.ack), (our_syn.seq, SeqNum(301)));
    assert_eq!(ep.stats().resets_sent, 0);
    // Its SYN-ACK establishes (line 6), and nothing needs saying.
    ep.handle_packet(
        &packet(
            peer(PORT),
            local(40000),
            300,
            our_syn.seq.0.wrapping_add(1),
            TcpFlags::SYN | TcpFlags::ACK,
            &[],
        ),
        now,
    );
    assert_eq!(ep.connection(handle).unwrap().state(), State::Established);
    assert_eq!(
        events(&mut ep),
        vec![
            EndpointEvent::Connection(handle, Event::Connected),
            EndpointEvent::Connection(handle, Event::Writable),
        ]
    );
    assert!(sent(&mut ep, now).is_empty());
    assert_eq!(ep.stats().connections_established, 1);
}

/// One side of [`two_active_opens_at_the_same_moment_connect_transfer_and_close`].
struct Side {
    handle: tcpstack::endpoint::ConnectionHandle,
    data: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    connected_at: Option<Duration>,
    /// Packets the endpoint had sent when the connection was established.
    sent_to_connect: u64,
    closed: bool,
}

impl Side {
    fn pump(&mut self, ep: &mut Endpoint, at: Duration) {
        let mut buf = [0u8; 8192];
        while let Some(event) = ep.poll_event() {
            let EndpointEvent::Connection(handle, event) = event else {
                panic!("no listener, so no {event:?}");
            };
            assert_eq!(handle, self.handle);
            match event {
                Event::Connected => {
                    self.connected_at = Some(at);
                    self.sent_to_connect = ep.stats().packets_out;
                }
                Event::Closed => self.closed = true,
                Event::Reset | Event::TimedOut => panic!("{event:?} at {at:?}"),
                _ => {}
            }
        }
        if self.connected_at.is_none() || self.closed {
            return;
        }
        let conn = ep.connection_mut(self.handle).expect("open");
        if self.sent < self.data.len() {
            self.sent += conn.send(&self.data[self.sent..]).unwrap();
            if self.sent == self.data.len() {
                conn.close();
            }
        }
        while let Ok(n) = conn.recv(&mut buf) {
            if n == 0 {
                break;
            }
            self.received.extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn two_active_opens_at_the_same_moment_connect_transfer_and_close() {
    use tcpstack::sim::{LinkConfig, Network, CLIENT_ADDR, SERVER_ADDR};

    // Both endpoints' only ephemeral port is 40000, so each opens the other's tuple.
    let config = EndpointConfig {
        ephemeral_ports: (40000, 40000),
        ..EndpointConfig::default()
    };
    let link = LinkConfig::ideal(Duration::from_millis(5));
    let mut net = Network::new(11, config, link.clone(), link);
    let now = net.now();
    let a = net
        .client
        .connect(SocketAddrV4::new(SERVER_ADDR, 40000), now)
        .unwrap();
    let b = net
        .server
        .connect(SocketAddrV4::new(CLIENT_ADDR, 40000), now)
        .unwrap();
    let pattern = |seed: usize| (0..300_000).map(move |i| (i * seed + i / 977) as u8);
    let mut sides = [
        Side {
            handle: a,
            data: pattern(7).collect(),
            sent: 0,
            received: Vec::new(),
            connected_at: None,
            sent_to_connect: 0,
            closed: false,
        },
        Side {
            handle: b,
            data: pattern(13).collect(),
            sent: 0,
            received: Vec::new(),
            connected_at: None,
            sent_to_connect: 0,
            closed: false,
        },
    ];
    for _ in 0..1_000_000 {
        let at = net.elapsed();
        sides[0].pump(&mut net.client, at);
        sides[1].pump(&mut net.server, at);
        if sides.iter().all(|s| s.closed) && net.client.is_idle() && net.server.is_idle() {
            break;
        }
        assert!(net.step(), "nothing scheduled before both closed");
    }
    // The SYNs cross after 5 ms, the SYN-ACKs after 10: each side sent SYN and SYN-ACK only,
    // and is ESTABLISHED one round trip after its open, as after a three-way handshake.
    for side in &sides {
        assert_eq!(side.connected_at, Some(Duration::from_millis(10)));
        assert_eq!(side.sent_to_connect, 2, "SYN, SYN-ACK");
        assert!(side.closed);
    }
    assert!(sides[0].received == sides[1].data, "A received B's bytes");
    assert!(sides[1].received == sides[0].data, "B received A's bytes");
    for ep in [&net.client, &net.server] {
        let stats = ep.stats();
        assert_eq!(stats.connections_established, 1);
        assert_eq!(stats.resets_sent, 0);
        assert_eq!(ep.connection_count(), 0);
        assert_eq!(ep.time_wait_count(), 0);
        assert_eq!(ep.poll_timeout(), None);
    }
}

/// An ICMP destination unreachable from a router on the path, quoting `original` (a packet the
/// endpoint sent), with its quoted sequence number replaced by `seq` when given (a forgery).
fn icmp_about(original: &[u8], error: wire::IcmpError, seq: Option<u32>) -> Vec<u8> {
    let mut quoted = original.to_vec();
    if let Some(seq) = seq {
        quoted[24..28].copy_from_slice(&seq.to_be_bytes());
    }
    let mut out = Vec::new();
    wire::icmp::emit_destination_unreachable(
        Ipv4Addr::new(198, 18, 0, 254),
        LOCAL,
        error,
        &quoted,
        &mut out,
    );
    out
}

/// RFC 1191 and RFC 5927 through the endpoint: a "fragmentation needed" quoting a segment in
/// flight lowers the MSS and the segment goes again in the new size; the same message with a
/// sequence number outside the flight, or about a connection that does not exist, or ICMP
/// that is not an error about TCP, changes nothing and is counted.
#[test]
fn icmp_fragmentation_needed_lowers_the_mss_and_forgeries_change_nothing() {
    let now = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), now);
    ep.listen(local(PORT)).unwrap();
    let mut syn = TcpHeader {
        src_port: 40001,
        dst_port: PORT,
        seq: SeqNum(100),
        flags: TcpFlags::SYN,
        window: 65535,
        ..TcpHeader::default()
    };
    syn.options.mss = Some(1460);
    let mut buf = Vec::new();
    wire::emit_ipv4_tcp(PEER, LOCAL, &syn, &[], 1, &mut buf);
    ep.handle_packet(&buf, now);
    let (syn_ack, _) = sent(&mut ep, now)[0];
    final_ack(&mut ep, 40001, 100, &syn_ack, now);
    let handle = ep.accept(local(PORT)).unwrap();
    let conn = ep.connection_mut(handle).unwrap();
    assert_eq!(conn.mss(), 1460);
    conn.send(&[7; 1460]).unwrap();
    let mut first = Vec::new();
    assert!(ep.poll_transmit(now, &mut first));
    assert_eq!(first.len(), 1500);
    let frag_needed = wire::IcmpError::FragmentationNeeded { next_hop_mtu: 1280 };

    let beyond_the_flight = syn_ack.seq.0.wrapping_add(1 + 1460 + 1);
    ep.handle_packet(
        &icmp_about(&first, frag_needed, Some(beyond_the_flight)),
        now,
    );
    let mut other = first.clone();
    other[22..24].copy_from_slice(&40999u16.to_be_bytes()); // another peer port
    ep.handle_packet(&icmp_about(&other, frag_needed, None), now);
    let mut echo_reply = icmp_about(&first, frag_needed, None);
    echo_reply[20] = 0;
    echo_reply[22..24].fill(0);
    let sum = wire::checksum::checksum(&echo_reply[20..]);
    echo_reply[22..24].copy_from_slice(&sum.to_be_bytes());
    ep.handle_packet(&echo_reply, now);
    assert_eq!(ep.connection(handle).unwrap().mss(), 1460);
    assert!(sent(&mut ep, now).is_empty());
    let stats = ep.stats();
    assert_eq!(stats.icmp.out_of_window, 1);
    assert_eq!(stats.icmp.no_connection, 1);
    assert_eq!(stats.drops.wire.unsupported_icmp, 1);

    ep.handle_packet(&icmp_about(&first, frag_needed, None), now);
    assert_eq!(ep.stats().icmp.path_mtu_lowered, 1);
    assert_eq!(ep.connection(handle).unwrap().mss(), 1240);
    let resent = sent(&mut ep, now);
    assert_eq!(
        resent
            .iter()
            .map(|(h, len)| (h.seq, *len))
            .collect::<Vec<_>>(),
        [(syn_ack.seq + 1u32, 1240), (syn_ack.seq + 1241u32, 220)]
    );
}

/// What the runtime busy-polls after: segments taking sequence space (SYN, FIN, data), which
/// the peer answers, and never a RST or a pure ACK.
#[test]
fn only_segments_taking_sequence_space_count_as_awaiting_an_answer() {
    let start = Instant::now();
    let at = |ms| start + Duration::from_millis(ms);
    let mut ep = endpoint(EndpointConfig::default(), start);
    ep.listen(local(PORT)).unwrap();
    assert_eq!(ep.last_sequenced_sent(), None);
    ep.handle_packet(
        &packet(peer(40000), local(81), 1000, 0, TcpFlags::SYN, &[]),
        at(1),
    );
    assert_eq!(
        sent(&mut ep, at(1))[0].0.flags,
        TcpFlags::RST | TcpFlags::ACK
    );
    assert_eq!(ep.last_sequenced_sent(), None, "a RST");
    let syn_ack = syn(&mut ep, 40001, 100, at(2)).expect("SYN-ACK");
    assert_eq!(ep.last_sequenced_sent(), Some(at(2)), "a SYN-ACK");
    final_ack(&mut ep, 40001, 100, &syn_ack, at(3));
    let handle = ep.accept(local(PORT)).expect("established");
    let ack = syn_ack.seq.0.wrapping_add(1);
    ep.handle_packet(
        &packet(peer(40001), local(PORT), 101, ack, TcpFlags::ACK, b"hi"),
        at(4),
    );
    let out = sent(&mut ep, at(4));
    assert!(
        !out.is_empty(),
        "the data is acknowledged at once (quick ACKs)"
    );
    assert!(
        out.iter()
            .all(|(h, len)| h.flags == TcpFlags::ACK && *len == 0),
        "{out:?}"
    );
    assert_eq!(ep.last_sequenced_sent(), Some(at(2)), "pure ACKs");
    ep.connection_mut(handle).unwrap().send(b"ok").unwrap();
    assert_eq!(sent(&mut ep, at(5))[0].1, 2);
    assert_eq!(ep.last_sequenced_sent(), Some(at(5)), "data");
}
