//! IPv4 (RFC 791): header parse with every length cross-checked, emit of an option-less header.

use std::net::Ipv4Addr;

use super::checksum::Checksum;
use super::{Ipv4Header, WireError, IPPROTO_TCP, IPV4_MIN_HEADER_LEN};

/// The TTL tcpstack sends with, as Linux's `net.ipv4.ip_default_ttl`.
pub const DEFAULT_TTL: u8 = 64;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

impl Ipv4Header {
    /// A header for a TCP segment of `tcp_len` bytes (header + payload): no options, DF set
    /// (we do path MTU discovery, RFC 1191), TTL 64.
    pub fn for_tcp(src: Ipv4Addr, dst: Ipv4Addr, identification: u16, tcp_len: usize) -> Self {
        Ipv4Header {
            src,
            dst,
            protocol: IPPROTO_TCP,
            ttl: DEFAULT_TTL,
            dscp_ecn: 0,
            identification,
            dont_fragment: true,
            header_len: IPV4_MIN_HEADER_LEN,
            total_len: IPV4_MIN_HEADER_LEN + tcp_len,
        }
    }

    /// Parses and checksum-verifies an IPv4 header. The payload returned ends where the total
    /// length says, so trailing Ethernet padding (frames shorter than 60 bytes) is cut off.
    /// Options are skipped (their bytes are covered by the checksum only). Fragments are rejected:
    /// tcpstack does not reassemble, and DF on every segment we send means a peer's fragments are
    /// rare.
    pub fn parse(packet: &[u8]) -> Result<(Ipv4Header, &[u8]), WireError> {
        let Some(fixed) = packet.first_chunk::<IPV4_MIN_HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if fixed[0] >> 4 != 4 {
            return Err(WireError::NotIpv4);
        }
        let header_len = usize::from(fixed[0] & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER_LEN || header_len > packet.len() {
            return Err(WireError::BadIhl);
        }
        let total_len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if total_len > packet.len() || total_len < header_len {
            return Err(WireError::BadTotalLength);
        }
        let mut sum = Checksum::new();
        sum.add_bytes(&packet[..header_len]);
        if !sum.is_valid() {
            return Err(WireError::BadIpChecksum);
        }
        let flags_fragment = u16::from_be_bytes([fixed[6], fixed[7]]);
        if flags_fragment & (FLAG_MF | FRAGMENT_OFFSET_MASK) != 0 {
            return Err(WireError::Fragment);
        }
        let header = Ipv4Header {
            src: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
            dst: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
            protocol: fixed[9],
            ttl: fixed[8],
            dscp_ecn: fixed[1],
            identification: u16::from_be_bytes([fixed[4], fixed[5]]),
            dont_fragment: flags_fragment & FLAG_DF != 0,
            header_len,
            total_len,
        };
        Ok((header, &packet[header_len..total_len]))
    }

    /// Appends a 20-byte header (no options; `header_len` is not consulted) with its checksum.
    /// `total_len` must already count the payload that will follow.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let total_len = u16::try_from(self.total_len).unwrap_or(u16::MAX);
        let flags: u16 = if self.dont_fragment { FLAG_DF } else { 0 };
        let mut header = [0u8; IPV4_MIN_HEADER_LEN];
        header[0] = 0x45;
        header[1] = self.dscp_ecn;
        header[2..4].copy_from_slice(&total_len.to_be_bytes());
        header[4..6].copy_from_slice(&self.identification.to_be_bytes());
        header[6..8].copy_from_slice(&flags.to_be_bytes());
        header[8] = self.ttl;
        header[9] = self.protocol;
        header[12..16].copy_from_slice(&self.src.octets());
        header[16..20].copy_from_slice(&self.dst.octets());
        let mut sum = Checksum::new();
        sum.add_bytes(&header);
        header[10..12].copy_from_slice(&sum.finish().to_be_bytes());
        out.extend_from_slice(&header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Ipv4Header {
        Ipv4Header::for_tcp(
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            0x1234,
            4,
        )
    }

    fn sample_packet() -> Vec<u8> {
        let mut out = Vec::new();
        sample().emit(&mut out);
        out.extend_from_slice(b"abcd");
        out
    }

    /// Rewrites the header checksum so only the field under test is wrong.
    fn fix_checksum(packet: &mut [u8]) {
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        packet[10] = 0;
        packet[11] = 0;
        let sum = super::super::checksum::checksum(&packet[..header_len]);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn emit_matches_known_bytes() {
        let packet = sample_packet();
        #[rustfmt::skip]
        let expected = [
            0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x9c, 0x84,
            198, 18, 0, 1, 198, 18, 0, 2,
        ];
        assert_eq!(&packet[..20], &expected);
    }

    #[test]
    fn round_trip() {
        let packet = sample_packet();
        let (header, payload) = Ipv4Header::parse(&packet).unwrap();
        assert_eq!(header, sample());
        assert_eq!(payload, b"abcd");
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut packet = sample_packet();
        packet.extend_from_slice(&[0; 22]);
        let (_, payload) = Ipv4Header::parse(&packet).unwrap();
        assert_eq!(payload, b"abcd");
    }

    #[test]
    fn options_are_skipped() {
        let mut packet = sample_packet();
        // IHL 6 with one NOP,NOP,NOP,EOL option word.
        packet.splice(20..20, [1, 1, 1, 0]);
        packet[0] = 0x46;
        packet[3] += 4;
        fix_checksum(&mut packet);
        let (header, payload) = Ipv4Header::parse(&packet).unwrap();
        assert_eq!(header.header_len, 24);
        assert_eq!(payload, b"abcd");
    }

    #[test]
    fn malformations() {
        let good = sample_packet();
        assert_eq!(
            Ipv4Header::parse(&good[..19]).unwrap_err(),
            WireError::Truncated
        );

        let mut p = good.clone();
        p[0] = 0x65;
        assert_eq!(Ipv4Header::parse(&p).unwrap_err(), WireError::NotIpv4);

        for ihl in [0u8, 4] {
            let mut p = good.clone();
            p[0] = 0x40 | ihl;
            assert_eq!(Ipv4Header::parse(&p).unwrap_err(), WireError::BadIhl);
        }
        // IHL 15 = 60 bytes, past the 24-byte buffer.
        let mut p = good.clone();
        p[0] = 0x4f;
        assert_eq!(Ipv4Header::parse(&p).unwrap_err(), WireError::BadIhl);

        // Total length claims more than arrived.
        let mut p = good.clone();
        p[3] = 25;
        fix_checksum(&mut p);
        assert_eq!(
            Ipv4Header::parse(&p).unwrap_err(),
            WireError::BadTotalLength
        );
        // Total length shorter than the header.
        let mut p = good.clone();
        p[3] = 19;
        fix_checksum(&mut p);
        assert_eq!(
            Ipv4Header::parse(&p).unwrap_err(),
            WireError::BadTotalLength
        );

        let mut p = good.clone();
        p[10] ^= 1;
        assert_eq!(Ipv4Header::parse(&p).unwrap_err(), WireError::BadIpChecksum);

        // More-fragments set, and a non-zero offset.
        for flags in [0x20u8, 0x00] {
            let mut p = good.clone();
            p[6] = flags;
            p[7] = if flags == 0 { 1 } else { 0 };
            fix_checksum(&mut p);
            assert_eq!(Ipv4Header::parse(&p).unwrap_err(), WireError::Fragment);
        }
    }

    #[test]
    fn every_single_bit_flip_in_the_header_is_caught() {
        let good = sample_packet();
        for bit in 0..160 {
            let mut p = good.clone();
            p[bit / 8] ^= 0x80 >> (bit % 8);
            assert!(Ipv4Header::parse(&p).is_err(), "bit {bit} flip not caught");
        }
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Ipv4Header::parse(&data);
        }

        #[test]
        fn valid_headers_round_trip(
            src: [u8; 4], dst: [u8; 4], ident: u16, ttl: u8, dscp_ecn: u8, protocol: u8,
            df: bool, payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = Ipv4Header {
                src: src.into(),
                dst: dst.into(),
                protocol,
                ttl,
                dscp_ecn,
                identification: ident,
                dont_fragment: df,
                header_len: 20,
                total_len: 20 + payload.len(),
            };
            let mut packet = Vec::new();
            header.emit(&mut packet);
            packet.extend_from_slice(&payload);
            let (parsed, parsed_payload) = Ipv4Header::parse(&packet).unwrap();
            prop_assert_eq!(parsed, header);
            prop_assert_eq!(parsed_payload, &payload[..]);
        }
    }
}
