//! Per-packet cost of the wire layer: parse + verify of a full-size data segment (1460 bytes of
//! payload, timestamps option) by tcpstack's hand-written parser and by pnet_packet, emit, and raw
//! checksum speed. Prints ns/op and ratios; asserts nothing about speed.
//!
//! `cargo bench -p tcpstack --bench wire`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use pnet_packet::ipv4::{self as pnet_ipv4, Ipv4Packet};
use pnet_packet::tcp::{self as pnet_tcp, TcpOptionNumbers, TcpPacket as PnetTcpPacket};
use pnet_packet::Packet;
use tcpstack::wire::{
    self, checksum, SackBlock, SeqNum, TcpFlags, TcpHeader, TcpOptions, Timestamps, WireError,
};

const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn data_segment() -> Vec<u8> {
    let tcp = TcpHeader {
        src_port: 40000,
        dst_port: 5201,
        seq: SeqNum(0x1234_5678),
        ack: SeqNum(0x9abc_def0),
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window: 502,
        urgent_ptr: 0,
        options: TcpOptions {
            timestamps: Some(Timestamps {
                tsval: 2656879445,
                tsecr: 3400942022,
            }),
            ..TcpOptions::default()
        },
    };
    let payload: Vec<u8> = (0..1460u32).map(|i| (i * 7) as u8).collect();
    let mut packet = Vec::new();
    wire::emit_ipv4_tcp(SRC, DST, &tcp, &payload, 1, &mut packet);
    packet
}

/// The same work as `wire::parse_ipv4_tcp` done with pnet_packet: its views, its checksum
/// functions and its option iterator, plus the length checks pnet leaves to the caller.
fn pnet_parse(packet: &[u8]) -> Result<(TcpHeader, usize), WireError> {
    let ip = Ipv4Packet::new(packet).ok_or(WireError::Truncated)?;
    if ip.get_version() != 4 {
        return Err(WireError::NotIpv4);
    }
    let header_len = usize::from(ip.get_header_length()) * 4;
    let total_len = usize::from(ip.get_total_length());
    if header_len < 20 || header_len > packet.len() {
        return Err(WireError::BadIhl);
    }
    if total_len > packet.len() || total_len < header_len {
        return Err(WireError::BadTotalLength);
    }
    if pnet_ipv4::checksum(&ip) != ip.get_checksum() {
        return Err(WireError::BadIpChecksum);
    }
    if ip.get_flags() & 1 != 0 || ip.get_fragment_offset() != 0 {
        return Err(WireError::Fragment);
    }
    let segment = &packet[header_len..total_len];
    let tcp = PnetTcpPacket::new(segment).ok_or(WireError::Truncated)?;
    let offset = usize::from(tcp.get_data_offset()) * 4;
    if offset < 20 || offset > segment.len() {
        return Err(WireError::BadDataOffset);
    }
    let src = ip.get_source();
    let dst = ip.get_destination();
    if pnet_tcp::ipv4_checksum(&tcp, &src, &dst) != tcp.get_checksum() {
        return Err(WireError::BadTcpChecksum);
    }
    let mut options = TcpOptions::default();
    for option in tcp.get_options_iter() {
        let value = option.payload();
        match option.get_number() {
            TcpOptionNumbers::MSS if value.len() == 2 => {
                options.mss = Some(u16::from_be_bytes([value[0], value[1]]));
            }
            TcpOptionNumbers::WSCALE if value.len() == 1 => {
                options.window_scale = Some(value[0].min(14));
            }
            TcpOptionNumbers::SACK_PERMITTED => options.sack_permitted = true,
            TcpOptionNumbers::TIMESTAMPS if value.len() == 8 => {
                options.timestamps = Some(Timestamps {
                    tsval: u32::from_be_bytes([value[0], value[1], value[2], value[3]]),
                    tsecr: u32::from_be_bytes([value[4], value[5], value[6], value[7]]),
                });
            }
            TcpOptionNumbers::SACK => {
                for b in value.chunks_exact(8) {
                    options.push_sack_block(SackBlock {
                        start: SeqNum(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                        end: SeqNum(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
                    });
                }
            }
            _ => {}
        }
    }
    let header = TcpHeader {
        src_port: tcp.get_source(),
        dst_port: tcp.get_destination(),
        seq: SeqNum(tcp.get_sequence()),
        ack: SeqNum(tcp.get_acknowledgement()),
        flags: TcpFlags(tcp.get_flags()),
        window: tcp.get_window(),
        urgent_ptr: tcp.get_urgent_ptr(),
        options,
    };
    Ok((header, segment.len() - offset))
}

/// Best of several rounds, in ns per call.
fn measure(name: &str, iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
        best = best.min(ns);
    }
    println!("{name:<52} {best:>8.1} ns/op");
    best
}

fn main() {
    let packet = data_segment();
    let reference = wire::parse_ipv4_tcp(&packet).expect("bench packet parses");
    let (pnet_header, pnet_payload_len) = pnet_parse(&packet).expect("pnet parses it too");
    assert_eq!(pnet_header, reference.tcp);
    assert_eq!(pnet_payload_len, reference.payload.len());

    println!(
        "wire bench: IPv4 + TCP, 1460-byte payload, TS option ({} bytes)",
        packet.len()
    );
    let hand = measure(
        "parse_ipv4_tcp (hand-written, both checksums)",
        200_000,
        || {
            let parsed = wire::parse_ipv4_tcp(black_box(&packet));
            black_box(&parsed);
        },
    );
    let pnet = measure("pnet_packet parse (same checks)", 200_000, || {
        let parsed = pnet_parse(black_box(&packet));
        black_box(&parsed);
    });
    println!("  pnet / hand-written = {:.2}x", pnet / hand);

    let payload = reference.payload.to_vec();
    let tcp = reference.tcp;
    let mut out = Vec::with_capacity(2048);
    measure("emit_ipv4_tcp (1460-byte payload, TS)", 200_000, || {
        out.clear();
        wire::emit_ipv4_tcp(SRC, DST, black_box(&tcp), black_box(&payload), 7, &mut out);
        black_box(&out);
    });
    let mut ack = tcp;
    ack.options.push_sack_block(SackBlock {
        start: SeqNum(1),
        end: SeqNum(2),
    });
    measure(
        "emit_ipv4_tcp (pure ACK, TS + 1 SACK block)",
        1_000_000,
        || {
            out.clear();
            wire::emit_ipv4_tcp(SRC, DST, black_box(&ack), &[], 7, &mut out);
            black_box(&out);
        },
    );

    let segment = &packet[20..];
    let ours = measure("checksum::checksum over 1480 bytes", 500_000, || {
        black_box(checksum::checksum(black_box(segment)));
    });
    let theirs = measure(
        "pnet_packet::util::checksum over 1480 bytes",
        500_000,
        || {
            black_box(pnet_packet::util::checksum(black_box(segment), 8));
        },
    );
    println!(
        "  checksum: {:.1} GB/s vs pnet {:.1} GB/s ({:.2}x)",
        segment.len() as f64 / ours,
        segment.len() as f64 / theirs,
        theirs / ours
    );
}
