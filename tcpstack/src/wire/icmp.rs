//! ICMPv4 errors about the TCP segments we sent: destination unreachable (RFC 792) and its
//! fragmentation-needed code, which carries the next-hop MTU of path MTU discovery (RFC 1191
//! §4). Every other ICMP message is the kernel's (the XDP program and the raw filter only hand
//! us destination-unreachable messages that quote one of our segments).
//!
//! An ICMP error quotes the IPv4 header of the datagram it is about and at least the first 8
//! bytes after it (RFC 792): for TCP, the ports and the sequence number, which is what the
//! RFC 5927 checks need. Nothing of the quote is trusted beyond that: its checksums are not
//! checked (routers may rewrite the TTL without fixing them), only its layout.

use std::net::Ipv4Addr;

use super::checksum::{self, Checksum};
use super::{Ipv4Header, SeqNum, WireError, IPPROTO_TCP, IPV4_MIN_HEADER_LEN};

pub const IPPROTO_ICMP: u8 = 1;
pub const TYPE_DESTINATION_UNREACHABLE: u8 = 3;
/// RFC 792 codes of destination unreachable that tcpstack names.
pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
pub const CODE_PORT_UNREACHABLE: u8 = 3;
pub const CODE_FRAGMENTATION_NEEDED: u8 = 4;
/// Type, code, checksum and the 4 bytes of "unused" (RFC 1191: unused + next-hop MTU).
pub const ICMP_HEADER_LEN: usize = 8;
/// The part of the quoted TCP header RFC 792 guarantees: ports and sequence number.
pub const QUOTED_TCP_LEN: usize = 8;

/// What an ICMP destination-unreachable message reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// Fragmentation needed and DF set (RFC 1191 §4): the MTU of the hop that could not forward
    /// the datagram, 0 from a router older than RFC 1191.
    FragmentationNeeded { next_hop_mtu: u16 },
    /// Any other destination-unreachable code (RFC 792, RFC 1812 §5.2.7.1).
    Unreachable { code: u8 },
}

impl IcmpError {
    /// A hard error in RFC 1122 §4.2.3.9's sense (protocol or port unreachable, and the
    /// administrative prohibitions of RFC 1812 §5.2.7.1, as Linux's icmp_err_convert marks them
    /// fatal): the destination will not take the segment, retrying will not help.
    pub fn is_hard(self) -> bool {
        match self {
            IcmpError::FragmentationNeeded { .. } => false,
            // 0 net, 1 host unreachable, 5 source route failed, 11/12 TOS unreachable: soft.
            IcmpError::Unreachable { code } => !matches!(code, 0 | 1 | 5 | 11 | 12),
        }
    }
}

/// The start of the TCP segment an ICMP error is about, as the error quotes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedSegment {
    /// The quoted datagram's source: ours, if it is about something we sent.
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNum,
    /// The quoted datagram's total length field (RFC 1191 §7 estimates a plateau from it when
    /// the next-hop MTU is 0).
    pub total_len: u16,
}

/// A checksum-verified ICMP destination-unreachable message about a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpMessage {
    pub error: IcmpError,
    pub quoted: QuotedSegment,
}

impl IcmpMessage {
    /// Parses the ICMP part of an IPv4 packet (what follows the IPv4 header). Only
    /// destination unreachable quoting IPv4/TCP is accepted.
    pub fn parse(message: &[u8]) -> Result<IcmpMessage, WireError> {
        let Some(header) = message.first_chunk::<ICMP_HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if !checksum::verify(message) {
            return Err(WireError::BadIcmpChecksum);
        }
        if header[0] != TYPE_DESTINATION_UNREACHABLE {
            return Err(WireError::UnsupportedIcmp);
        }
        let code = header[1];
        let error = match code {
            CODE_FRAGMENTATION_NEEDED => IcmpError::FragmentationNeeded {
                next_hop_mtu: u16::from_be_bytes([header[6], header[7]]),
            },
            code => IcmpError::Unreachable { code },
        };
        let quote = &message[ICMP_HEADER_LEN..];
        let Some(ip) = quote.first_chunk::<IPV4_MIN_HEADER_LEN>() else {
            return Err(WireError::BadQuote);
        };
        let header_len = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || header_len < IPV4_MIN_HEADER_LEN || ip[9] != IPPROTO_TCP {
            return Err(WireError::BadQuote);
        }
        let Some(tcp) = quote
            .get(header_len..)
            .and_then(|rest| rest.first_chunk::<QUOTED_TCP_LEN>())
        else {
            return Err(WireError::BadQuote);
        };
        Ok(IcmpMessage {
            error,
            quoted: QuotedSegment {
                src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
                dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
                src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
                dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
                seq: SeqNum(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]])),
                total_len: u16::from_be_bytes([ip[2], ip[3]]),
            },
        })
    }
}

/// Appends an IPv4 packet from `router` to `dst` carrying a destination-unreachable `error`
/// about `original` (an IPv4 packet), quoting its header and the first 8 bytes after it, as a
/// router does (RFC 792, RFC 1812 §4.3.2.3 allows more). For tests and the simulator: tcpstack
/// never sends ICMP itself.
pub fn emit_destination_unreachable(
    router: Ipv4Addr,
    dst: Ipv4Addr,
    error: IcmpError,
    original: &[u8],
    out: &mut Vec<u8>,
) {
    let header_len = original
        .first()
        .map_or(IPV4_MIN_HEADER_LEN, |b| usize::from(b & 0x0f) * 4);
    let quote = &original[..original.len().min(header_len + QUOTED_TCP_LEN)];
    let mut message = vec![0u8; ICMP_HEADER_LEN];
    message[0] = TYPE_DESTINATION_UNREACHABLE;
    match error {
        IcmpError::FragmentationNeeded { next_hop_mtu } => {
            message[1] = CODE_FRAGMENTATION_NEEDED;
            message[6..8].copy_from_slice(&next_hop_mtu.to_be_bytes());
        }
        IcmpError::Unreachable { code } => message[1] = code,
    }
    message.extend_from_slice(quote);
    let mut sum = Checksum::new();
    sum.add_bytes(&message);
    message[2..4].copy_from_slice(&sum.finish().to_be_bytes());
    let mut ip = Ipv4Header::for_tcp(router, dst, 0, message.len());
    ip.protocol = IPPROTO_ICMP;
    ip.dont_fragment = false;
    ip.emit(out);
    out.extend_from_slice(&message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_ipv4, IpPacket};
    use proptest::prelude::*;

    const US: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

    fn original() -> Vec<u8> {
        let tcp = crate::wire::TcpHeader {
            src_port: 5201,
            dst_port: 40000,
            seq: SeqNum(0xdead_beef),
            flags: crate::wire::TcpFlags::ACK,
            ..Default::default()
        };
        let mut out = Vec::new();
        crate::wire::emit_ipv4_tcp(US, PEER, &tcp, &[7; 1448], 1, &mut out);
        out
    }

    fn frag_needed(mtu: u16) -> Vec<u8> {
        let mut out = Vec::new();
        emit_destination_unreachable(
            ROUTER,
            US,
            IcmpError::FragmentationNeeded { next_hop_mtu: mtu },
            &original(),
            &mut out,
        );
        out
    }

    #[test]
    fn fragmentation_needed_round_trips() {
        let packet = frag_needed(1280);
        let Ok(IpPacket::Icmp { ip, message }) = parse_ipv4(&packet) else {
            panic!("not parsed as ICMP");
        };
        assert_eq!((ip.src, ip.dst), (ROUTER, US));
        assert_eq!(
            message.error,
            IcmpError::FragmentationNeeded { next_hop_mtu: 1280 }
        );
        assert_eq!(
            message.quoted,
            QuotedSegment {
                src: US,
                dst: PEER,
                src_port: 5201,
                dst_port: 40000,
                seq: SeqNum(0xdead_beef),
                total_len: 1488,
            }
        );
    }

    #[test]
    fn hard_and_soft_codes() {
        assert!(IcmpError::Unreachable {
            code: CODE_PORT_UNREACHABLE
        }
        .is_hard());
        assert!(IcmpError::Unreachable {
            code: CODE_PROTOCOL_UNREACHABLE
        }
        .is_hard());
        assert!(!IcmpError::Unreachable { code: 1 }.is_hard());
        assert!(!IcmpError::FragmentationNeeded { next_hop_mtu: 0 }.is_hard());
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let icmp = frag_needed(1280)[IPV4_MIN_HEADER_LEN..].to_vec();
        assert!(IcmpMessage::parse(&icmp).is_ok());
        assert_eq!(
            IcmpMessage::parse(&icmp[..7]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad_sum = icmp.clone();
        bad_sum[6] ^= 1;
        assert_eq!(
            IcmpMessage::parse(&bad_sum).unwrap_err(),
            WireError::BadIcmpChecksum
        );
        let refresh = |m: &mut Vec<u8>| {
            m[2..4].fill(0);
            let sum = checksum::checksum(m);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
        };
        let mut echo = icmp.clone();
        echo[0] = 8;
        refresh(&mut echo);
        assert_eq!(
            IcmpMessage::parse(&echo).unwrap_err(),
            WireError::UnsupportedIcmp
        );
        let mut udp = icmp.clone();
        udp[ICMP_HEADER_LEN + 9] = 17;
        refresh(&mut udp);
        assert_eq!(IcmpMessage::parse(&udp).unwrap_err(), WireError::BadQuote);
        let mut short = icmp[..ICMP_HEADER_LEN + 20 + 7].to_vec();
        refresh(&mut short);
        assert_eq!(IcmpMessage::parse(&short).unwrap_err(), WireError::BadQuote);
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn random_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = IcmpMessage::parse(&data);
        }
    }
}
