//! One-line segment summaries in the format of `tcpdump -n -S` (absolute sequence numbers), for the
//! debug log, so a log and a capture of the same connection read alike.

use std::fmt;
use std::net::IpAddr;

use super::tcp::{
    OPT_EOL, OPT_MSS, OPT_NOP, OPT_SACK, OPT_SACK_PERMITTED, OPT_TIMESTAMPS, OPT_WINDOW_SCALE,
};
use super::{IpHeader, TcpFlags, TcpHeader, TcpPacket, TCP_MAX_OPTIONS_LEN};

/// `IP 198.18.0.1.5201 > 198.18.0.2.40000: Flags [S.], seq 123, ack 456, win 65535, options
/// [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0`, or `IP6 2001:db8::1.5201 > ...`
/// over IPv6.
///
/// The rules are tcpdump's (print-tcp.c): `seq` only when the segment has data or SYN/FIN/RST,
/// as a `first:next` range when it has data; `ack` only with ACK; `urg` only with URG. The
/// options are printed in the order [`TcpOptions::write`](super::TcpOptions::write) lays them
/// out, which is Linux's, so for segments we emit and for Linux peers the line matches tcpdump's
/// exactly; other peers' options show in that canonical order.
#[derive(Clone, Copy, Debug)]
pub struct TcpdumpLine<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub tcp: &'a TcpHeader,
    pub payload_len: usize,
}

impl<'a> TcpdumpLine<'a> {
    pub fn new(ip: &impl IpHeader, tcp: &'a TcpHeader, payload_len: usize) -> Self {
        TcpdumpLine {
            src: ip.src(),
            dst: ip.dst(),
            tcp,
            payload_len,
        }
    }

    pub fn of_packet<Ip: IpHeader>(packet: &'a TcpPacket<'_, Ip>) -> Self {
        Self::new(&packet.ip, &packet.tcp, packet.payload.len())
    }
}

impl fmt::Display for TcpdumpLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tcp = self.tcp;
        let family = if self.src.is_ipv6() { "IP6" } else { "IP" };
        write!(
            f,
            "{family} {}.{} > {}.{}: Flags [{}]",
            self.src, tcp.src_port, self.dst, tcp.dst_port, tcp.flags
        )?;
        let length = self.payload_len;
        if length > 0
            || tcp
                .flags
                .intersects(TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST)
        {
            write!(f, ", seq {}", tcp.seq.0)?;
            if length > 0 {
                // Sequence arithmetic is modulo 2^32; tcpdump prints the wrapped value too.
                write!(f, ":{}", tcp.seq.0.wrapping_add(length as u32))?;
            }
        }
        if tcp.flags.ack() {
            write!(f, ", ack {}", tcp.ack.0)?;
        }
        write!(f, ", win {}", tcp.window)?;
        if tcp.flags.contains(TcpFlags::URG) {
            write!(f, ", urg {}", tcp.urgent_ptr)?;
        }
        let mut area = [0u8; TCP_MAX_OPTIONS_LEN];
        let options_len = tcp.options.write(&mut area).unwrap_or(0);
        if options_len > 0 {
            write!(f, ", options [")?;
            write_options(f, &area[..options_len])?;
            write!(f, "]")?;
        }
        write!(f, ", length {length}")
    }
}

/// Names options as tcpdump does. Only well-formed areas reach here (they come from `write`),
/// but a short option still prints rather than panics.
fn write_options(f: &mut fmt::Formatter<'_>, mut area: &[u8]) -> fmt::Result {
    let mut first = true;
    while let [kind, rest @ ..] = area {
        if !first {
            write!(f, ",")?;
        }
        first = false;
        match *kind {
            OPT_NOP | OPT_EOL => {
                write!(f, "{}", if *kind == OPT_NOP { "nop" } else { "eol" })?;
                area = rest;
                continue;
            }
            _ => {}
        }
        let len = rest.first().map_or(0, |&l| usize::from(l));
        let Some(value) = area.get(2..len) else {
            return write!(f, "opt-{kind} [bad length]");
        };
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        match (*kind, value.len()) {
            (OPT_MSS, 2) => write!(f, "mss {}", u16::from_be_bytes([value[0], value[1]]))?,
            (OPT_WINDOW_SCALE, 1) => write!(f, "wscale {}", value[0])?,
            (OPT_SACK_PERMITTED, 0) => write!(f, "sackOK")?,
            (OPT_TIMESTAMPS, 8) => {
                write!(f, "TS val {} ecr {}", be32(value), be32(&value[4..]))?;
            }
            (OPT_SACK, n) if n % 8 == 0 => {
                write!(f, "sack {} ", n / 8)?;
                for block in value.chunks_exact(8) {
                    write!(f, "{{{}:{}}}", be32(block), be32(&block[4..]))?;
                }
            }
            (kind, _) => write!(f, "opt-{kind}")?,
        }
        area = &area[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::{unhex, LINUX_FRAMES, LINUX_IPV6_FRAMES};
    use crate::wire::{
        parse_ethernet_ipv4_tcp, parse_ethernet_ipv6_tcp, Ipv4Header, SackBlock, SeqNum,
        TcpOptions, Timestamps,
    };
    use std::net::Ipv4Addr;

    /// `tcpdump -S -nn -r` of the capture in `LINUX_FRAMES`, timestamps cut off.
    const TCPDUMP_SAYS: [&str; 8] = [
        "IP 198.18.0.1.52506 > 198.18.0.2.5201: Flags [S], seq 1317530197, win 64240, options [mss 1460,sackOK,TS val 2656879445 ecr 0,nop,wscale 10], length 0",
        "IP 198.18.0.2.5201 > 198.18.0.1.52506: Flags [S.], seq 1800735382, ack 1317530198, win 65160, options [mss 1460,sackOK,TS val 3400942022 ecr 2656879445,nop,wscale 10], length 0",
        "IP 198.18.0.1.52506 > 198.18.0.2.5201: Flags [.], ack 1800735383, win 63, options [nop,nop,TS val 2656879445 ecr 3400942022], length 0",
        "IP 198.18.0.1.52506 > 198.18.0.2.5201: Flags [P.], seq 1317530198:1317530204, ack 1800735383, win 63, options [nop,nop,TS val 2656879445 ecr 3400942022], length 6",
        "IP 198.18.0.2.5201 > 198.18.0.1.52506: Flags [.], ack 1317530204, win 64, options [nop,nop,TS val 3400942022 ecr 2656879445], length 0",
        "IP 198.18.0.1.52506 > 198.18.0.2.5201: Flags [F.], seq 1317530204, ack 1800735383, win 63, options [nop,nop,TS val 2656879445 ecr 3400942022], length 0",
        "IP 198.18.0.2.5201 > 198.18.0.1.52506: Flags [F.], seq 1800735383, ack 1317530205, win 64, options [nop,nop,TS val 3400942022 ecr 2656879445], length 0",
        "IP 198.18.0.1.52506 > 198.18.0.2.5201: Flags [.], ack 1800735384, win 63, options [nop,nop,TS val 2656879445 ecr 3400942022], length 0",
    ];

    #[test]
    fn matches_tcpdump_on_a_linux_capture() {
        for (hex, expected) in LINUX_FRAMES.iter().zip(TCPDUMP_SAYS) {
            let frame = unhex(hex);
            let (_, packet) = parse_ethernet_ipv4_tcp(&frame).unwrap();
            assert_eq!(TcpdumpLine::of_packet(&packet).to_string(), expected);
        }
    }

    /// `tcpdump -S -n -r` of the capture in `LINUX_IPV6_FRAMES`, timestamps cut off.
    const TCPDUMP_SAYS_IPV6: [&str; 8] = [
        "IP6 2001:db8::1.59338 > 2001:db8::2.5201: Flags [S], seq 3264144590, win 64800, options [mss 1440,sackOK,TS val 381127586 ecr 0,nop,wscale 10], length 0",
        "IP6 2001:db8::2.5201 > 2001:db8::1.59338: Flags [S.], seq 1344701546, ack 3264144591, win 64260, options [mss 1440,sackOK,TS val 1046947458 ecr 381127586,nop,wscale 10], length 0",
        "IP6 2001:db8::1.59338 > 2001:db8::2.5201: Flags [.], ack 1344701547, win 64, options [nop,nop,TS val 381127586 ecr 1046947458], length 0",
        "IP6 2001:db8::1.59338 > 2001:db8::2.5201: Flags [P.], seq 3264144591:3264144597, ack 1344701547, win 64, options [nop,nop,TS val 381127587 ecr 1046947458], length 6",
        "IP6 2001:db8::2.5201 > 2001:db8::1.59338: Flags [.], ack 3264144597, win 63, options [nop,nop,TS val 1046947459 ecr 381127587], length 0",
        "IP6 2001:db8::1.59338 > 2001:db8::2.5201: Flags [F.], seq 3264144597, ack 1344701547, win 64, options [nop,nop,TS val 381127587 ecr 1046947459], length 0",
        "IP6 2001:db8::2.5201 > 2001:db8::1.59338: Flags [F.], seq 1344701547, ack 3264144598, win 63, options [nop,nop,TS val 1046947459 ecr 381127587], length 0",
        "IP6 2001:db8::1.59338 > 2001:db8::2.5201: Flags [.], ack 1344701548, win 64, options [nop,nop,TS val 381127587 ecr 1046947459], length 0",
    ];

    #[test]
    fn matches_tcpdump_on_a_linux_ipv6_capture() {
        for (hex, expected) in LINUX_IPV6_FRAMES.iter().zip(TCPDUMP_SAYS_IPV6) {
            let frame = unhex(hex);
            let (_, packet) = parse_ethernet_ipv6_tcp(&frame).unwrap();
            assert_eq!(TcpdumpLine::of_packet(&packet).to_string(), expected);
        }
    }

    fn ip() -> Ipv4Header {
        Ipv4Header::for_tcp(
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            0,
            20,
        )
    }

    #[test]
    fn the_example_from_the_brief() {
        let tcp = TcpHeader {
            src_port: 5201,
            dst_port: 40000,
            seq: SeqNum(123),
            ack: SeqNum(456),
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window: 65535,
            urgent_ptr: 0,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamps: Some(Timestamps { tsval: 1, tsecr: 0 }),
                ..TcpOptions::default()
            },
        };
        assert_eq!(
            TcpdumpLine::new(&ip(), &tcp, 0).to_string(),
            "IP 198.18.0.1.5201 > 198.18.0.2.40000: Flags [S.], seq 123, ack 456, win 65535, \
             options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0"
        );
    }

    #[test]
    fn sack_rst_urg_and_no_options() {
        let mut options = TcpOptions::default();
        options.push_sack_block(SackBlock {
            start: SeqNum(1001),
            end: SeqNum(2001),
        });
        options.push_sack_block(SackBlock {
            start: SeqNum(3001),
            end: SeqNum(4001),
        });
        let tcp = TcpHeader {
            src_port: 1,
            dst_port: 2,
            seq: SeqNum(u32::MAX),
            ack: SeqNum(7),
            flags: TcpFlags::ACK | TcpFlags::URG | TcpFlags::PSH,
            window: 10,
            urgent_ptr: 3,
            options,
        };
        assert_eq!(
            TcpdumpLine::new(&ip(), &tcp, 2).to_string(),
            "IP 198.18.0.1.1 > 198.18.0.2.2: Flags [P.U], seq 4294967295:1, ack 7, win 10, \
             urg 3, options [nop,nop,sack 2 {1001:2001}{3001:4001}], length 2"
        );
        let rst = TcpHeader {
            flags: TcpFlags::RST,
            options: TcpOptions::default(),
            ..tcp
        };
        assert_eq!(
            TcpdumpLine::new(&ip(), &rst, 0).to_string(),
            "IP 198.18.0.1.1 > 198.18.0.2.2: Flags [R], seq 4294967295, win 10, length 0"
        );
        let none = TcpHeader {
            flags: TcpFlags::empty(),
            ..rst
        };
        assert_eq!(
            TcpdumpLine::new(&ip(), &none, 0).to_string(),
            "IP 198.18.0.1.1 > 198.18.0.2.2: Flags [none], win 10, length 0"
        );
    }
}
