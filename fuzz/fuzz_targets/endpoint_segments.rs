//! Fuzz target: an endpoint with a listener fed an arbitrary sequence of well-formed segments
//! (checksums right, so they reach the TCP rules), ICMP errors quoting what it sent (with the
//! sequence number kept or replaced, any code and MTU) and raw bytes, on a virtual clock that the
//! input advances. No panic; the tables stay within the configured bounds; once the input ends
//! and every timer runs out, nothing is left.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tcpstack::endpoint::{Endpoint, EndpointConfig, EndpointEvent};
use tcpstack::wire::{self, SeqNum, TcpFlags, TcpHeader};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT: u16 = 80;
const MAX_HALF_OPEN: usize = 8;
const ACCEPT_BACKLOG: usize = 4;
const PEER_PORTS: u16 = 8;

/// Reads the input front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, len: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let config = EndpointConfig {
        max_half_open: MAX_HALF_OPEN,
        accept_backlog: ACCEPT_BACKLOG,
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(config, LOCAL, 7, start);
    ep.listen(SocketAddrV4::new(LOCAL, PORT)).expect("listen");
    let mut input = Input(data);
    let mut now = start;
    // Sequence numbers the endpoint sent, so that inputs can pick acceptable ACKs.
    let mut ours: Vec<u32> = Vec::new();
    let mut buf = Vec::new();
    // The last packet the endpoint sent, for ICMP errors to quote.
    let mut last_sent = Vec::new();
    let mut steps = 0;
    while !input.0.is_empty() && steps < 256 {
        steps += 1;
        now += Duration::from_millis(u64::from(input.u8()) * 4);
        let kind = input.u8();
        if kind & 0x0f == 0 {
            let len = usize::from(input.u8());
            let raw = input.bytes(len).to_vec();
            ep.handle_packet(&raw, now);
        } else if kind & 0x0f == 1 && !last_sent.is_empty() {
            let mut quoted = last_sent.clone();
            if kind & 0x10 != 0 {
                quoted[24..28].copy_from_slice(&input.u32().to_be_bytes());
            }
            let code = input.u8() % 16;
            let error = match code {
                4 => wire::IcmpError::FragmentationNeeded {
                    next_hop_mtu: u16::from_le_bytes([input.u8(), input.u8()]),
                },
                code => wire::IcmpError::Unreachable { code },
            };
            let mut packet = Vec::new();
            let router = Ipv4Addr::new(198, 18, 0, 254);
            wire::icmp::emit_destination_unreachable(router, LOCAL, error, &quoted, &mut packet);
            ep.handle_packet(&packet, now);
        } else {
            let choose = input.u8();
            let seq = input.u32();
            let ack = match (choose as usize).checked_sub(128) {
                Some(i) if !ours.is_empty() => ours[i % ours.len()].wrapping_add(1),
                _ => input.u32(),
            };
            let header = TcpHeader {
                src_port: 40000 + u16::from(kind >> 4) % PEER_PORTS,
                dst_port: if kind & 0x08 == 0 { PORT } else { PORT + 1 },
                seq: SeqNum(seq),
                ack: SeqNum(ack),
                flags: TcpFlags(input.u8()),
                window: u16::from_le_bytes([input.u8(), input.u8()]),
                ..TcpHeader::default()
            };
            let payload_len = usize::from(input.u8() % 4) * 300;
            let payload = vec![0x61; payload_len];
            let mut packet = Vec::new();
            wire::emit_ipv4_tcp(PEER, LOCAL, &header, &payload, 1, &mut packet);
            ep.handle_packet(&packet, now);
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        // As a runtime does: user calls first (the accepted connections are released), then what they
        // and the segment queued goes out.
        while let Some(event) = ep.poll_event() {
            if let EndpointEvent::Incoming(listener) = event {
                while let Some(handle) = ep.accept(listener) {
                    if let Some(conn) = ep.connection_mut(handle) {
                        conn.release();
                    }
                }
            }
        }
        while ep.poll_transmit(now, &mut buf) {
            let sent = wire::parse_ipv4_tcp(&buf).expect("the endpoint sends valid packets");
            ours.push(sent.tcp.seq.0);
            last_sent.clone_from(&buf);
            if ours.len() > 32 {
                ours.remove(0);
            }
        }
        assert!(
            ep.connection_count() <= MAX_HALF_OPEN + ACCEPT_BACKLOG + usize::from(PEER_PORTS),
            "{} connections",
            ep.connection_count()
        );
        assert!(ep.time_wait_count() <= usize::from(PEER_PORTS));
    }
    // Quiet from now on: every connection and TIME-WAIT entry times out.
    let mut fired = 0;
    while let Some(deadline) = ep.poll_timeout() {
        ep.handle_timeout(deadline);
        while ep.poll_transmit(deadline, &mut buf) {}
        while ep.poll_event().is_some() {}
        fired += 1;
        assert!(fired < 100_000, "timers keep firing");
    }
    assert_eq!(ep.connection_count(), 0);
    assert_eq!(ep.time_wait_count(), 0);
});
