//! IPv6 (RFC 8200): the fixed header, extension headers walked to the upper-layer header, and
//! emit of a header with no extensions.
//!
//! Extension headers are skipped only where RFC 8200 lets a destination skip them: Hop-by-Hop
//! (first only, §4.1) and Destination Options whose every option is Pad1, PadN or marked "skip
//! over" by its top two bits (§4.2); a Routing header with no segments left (§4.4). A fragment
//! (§4.5) is [`WireError::Fragment`] (no reassembly, as for IPv4); an option whose action bits say
//! discard, a Routing header still to be routed, or a chain that runs past the packet is
//! [`WireError::BadExtensionHeader`]; ESP, AH, "no next header" and anything unknown end the walk
//! as [`WireError::NotTcp`]. The walk stops after [`MAX_EXTENSION_HEADERS`], so a packet of
//! nothing but empty extension headers costs a bounded amount of work.

use std::net::Ipv6Addr;

use super::{Ipv6Header, WireError, IPPROTO_TCP, IPV6_HEADER_LEN};

/// The hop limit tcpstack sends with, as Linux's `net.ipv6.conf.*.hop_limit`.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// Next Header values (IANA "Assigned Internet Protocol Numbers").
pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_NONE: u8 = 59;
pub const NEXT_DESTINATION_OPTIONS: u8 = 60;

/// The most extension headers walked before giving up (Linux's default
/// `net.ipv6.max_dst_opts_number` and friends allow 8 options; no real path needs more than a
/// handful of headers).
pub const MAX_EXTENSION_HEADERS: usize = 8;

const OPTION_PAD1: u8 = 0;
const OPTION_PADN: u8 = 1;

impl Ipv6Header {
    /// A header for a TCP segment of `tcp_len` bytes (header + payload): no extension headers,
    /// traffic class and flow label zero, hop limit 64.
    pub fn for_tcp(src: Ipv6Addr, dst: Ipv6Addr, tcp_len: usize) -> Self {
        Ipv6Header {
            src,
            dst,
            next_header: IPPROTO_TCP,
            hop_limit: DEFAULT_HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
            header_len: IPV6_HEADER_LEN,
            payload_len: tcp_len,
        }
    }

    /// Parses the fixed header and walks the extension headers (module docs). Returns the header,
    /// with `next_header` the upper-layer protocol and `header_len` counting the extension
    /// headers, and the upper-layer packet, which ends where the payload length says (so
    /// Ethernet padding is cut off).
    pub fn parse(packet: &[u8]) -> Result<(Ipv6Header, &[u8]), WireError> {
        let Some(fixed) = packet.first_chunk::<IPV6_HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if fixed[0] >> 4 != 6 {
            return Err(WireError::NotIpv6);
        }
        // A payload length of zero with a Jumbo Payload option (RFC 2675) cannot come over
        // Ethernet; zero is otherwise only right for a packet with nothing after the header.
        let payload_len = usize::from(u16::from_be_bytes([fixed[4], fixed[5]]));
        let end = IPV6_HEADER_LEN + payload_len;
        if end > packet.len() {
            return Err(WireError::BadTotalLength);
        }
        let packet = &packet[..end];
        let mut next_header = fixed[6];
        let mut offset = IPV6_HEADER_LEN;
        let mut walked = 0;
        loop {
            match next_header {
                IPPROTO_TCP | NEXT_ICMPV6 => break,
                NEXT_FRAGMENT => return Err(WireError::Fragment),
                NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DESTINATION_OPTIONS => {}
                _ => return Err(WireError::NotTcp),
            }
            // §4.1: Hop-by-Hop Options may only come first.
            if walked == MAX_EXTENSION_HEADERS || (next_header == NEXT_HOP_BY_HOP && walked > 0) {
                return Err(WireError::BadExtensionHeader);
            }
            let Some(&[following, ext_len]) = packet[offset..].first_chunk::<2>() else {
                return Err(WireError::BadExtensionHeader);
            };
            let len = (usize::from(ext_len) + 1) * 8;
            let Some(extension) = packet.get(offset..offset + len) else {
                return Err(WireError::BadExtensionHeader);
            };
            match next_header {
                // §4.4: with segments left, we would be a hop on a source route, not its end.
                NEXT_ROUTING if extension[3] != 0 => return Err(WireError::BadExtensionHeader),
                NEXT_ROUTING => {}
                _ => check_options(&extension[2..])?,
            }
            next_header = following;
            offset += len;
            walked += 1;
        }
        let header = Ipv6Header {
            src: Ipv6Addr::from(*fixed[8..24].first_chunk::<16>().expect("40-byte header")),
            dst: Ipv6Addr::from(*fixed[24..40].first_chunk::<16>().expect("40-byte header")),
            next_header,
            hop_limit: fixed[7],
            traffic_class: (fixed[0] << 4) | (fixed[1] >> 4),
            flow_label: u32::from_be_bytes([0, fixed[1] & 0x0f, fixed[2], fixed[3]]),
            header_len: offset,
            payload_len,
        };
        Ok((header, &packet[offset..]))
    }

    /// Appends the 40-byte fixed header. `payload_len` must already count what follows, and
    /// `next_header` names it; `header_len` is not consulted (no extension headers are emitted).
    pub fn emit(&self, out: &mut Vec<u8>) {
        let payload_len = u16::try_from(self.payload_len).unwrap_or(u16::MAX);
        let mut header = [0u8; IPV6_HEADER_LEN];
        let flow_label = self.flow_label & 0x000f_ffff;
        let first_word = (6u32 << 28) | (u32::from(self.traffic_class) << 20) | flow_label;
        header[0..4].copy_from_slice(&first_word.to_be_bytes());
        header[4..6].copy_from_slice(&payload_len.to_be_bytes());
        header[6] = self.next_header;
        header[7] = self.hop_limit;
        header[8..24].copy_from_slice(&self.src.octets());
        header[24..40].copy_from_slice(&self.dst.octets());
        out.extend_from_slice(&header);
    }
}

/// The options of a Hop-by-Hop or Destination Options header (RFC 8200 §4.2): each is type,
/// length, data, except Pad1. tcpstack understands no option but the padding, so an option whose
/// action bits (the top two of its type) ask for anything but "skip over it" discards the packet.
fn check_options(mut options: &[u8]) -> Result<(), WireError> {
    while let [kind, rest @ ..] = options {
        if *kind == OPTION_PAD1 {
            options = rest;
            continue;
        }
        let Some((&len, data)) = rest.split_first() else {
            return Err(WireError::BadExtensionHeader);
        };
        let Some(after) = data.get(usize::from(len)..) else {
            return Err(WireError::BadExtensionHeader);
        };
        if *kind != OPTION_PADN && kind >> 6 != 0 {
            return Err(WireError::BadExtensionHeader);
        }
        options = after;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    /// A packet of `extensions` (each: next-header value it is, its bytes) before 4 bytes of TCP.
    fn packet_with(extensions: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let body_len: usize = extensions.iter().map(|(_, e)| e.len()).sum::<usize>() + 4;
        let mut header = Ipv6Header::for_tcp(SRC, DST, body_len);
        header.next_header = extensions.first().map_or(IPPROTO_TCP, |(kind, _)| *kind);
        let mut out = Vec::new();
        header.emit(&mut out);
        for (i, (_, bytes)) in extensions.iter().enumerate() {
            let mut bytes = bytes.clone();
            bytes[0] = extensions.get(i + 1).map_or(IPPROTO_TCP, |(kind, _)| *kind);
            bytes[1] = (bytes.len() / 8 - 1) as u8;
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(b"tcp!");
        out
    }

    /// An 8-byte Hop-by-Hop or Destination Options header holding `options` (padded with PadN).
    fn options_header(options: &[u8]) -> Vec<u8> {
        let mut header = vec![0, 0];
        header.extend_from_slice(options);
        let pad = (8 - header.len() % 8) % 8;
        match pad {
            0 => {}
            1 => header.push(OPTION_PAD1),
            n => header.extend(
                [OPTION_PADN, (n - 2) as u8]
                    .into_iter()
                    .chain(vec![0; n - 2]),
            ),
        }
        header
    }

    #[test]
    fn round_trip_without_extensions() {
        let mut header = Ipv6Header::for_tcp(SRC, DST, 4);
        header.traffic_class = 0xb8;
        header.flow_label = 0x9_8765;
        let mut out = Vec::new();
        header.emit(&mut out);
        assert_eq!(out.len(), IPV6_HEADER_LEN);
        assert_eq!(&out[..4], &[0x6b, 0x89, 0x87, 0x65]);
        out.extend_from_slice(b"tcp!");
        // Ethernet padding after the payload is cut off.
        out.extend_from_slice(&[0; 6]);
        let (parsed, body) = Ipv6Header::parse(&out).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(body, b"tcp!");
    }

    #[test]
    fn extension_headers_are_skipped_where_rfc_8200_allows() {
        let hop_by_hop = options_header(&[0x05, 2, 0, 0]); // router alert: "skip over"
        let destination = options_header(&[OPTION_PAD1, OPTION_PAD1]);
        let routing_done = vec![0, 0, 4, 0, 0, 0, 0, 0]; // segments left 0
        let packet = packet_with(&[
            (NEXT_HOP_BY_HOP, hop_by_hop),
            (NEXT_ROUTING, routing_done),
            (NEXT_DESTINATION_OPTIONS, destination),
        ]);
        let (parsed, body) = Ipv6Header::parse(&packet).unwrap();
        assert_eq!(parsed.next_header, IPPROTO_TCP);
        assert_eq!(parsed.header_len, IPV6_HEADER_LEN + 24);
        assert_eq!(body, b"tcp!");
    }

    #[test]
    fn extension_headers_rfc_8200_does_not_let_us_skip_are_refused() {
        let bad = |extensions: &[(u8, Vec<u8>)]| {
            Ipv6Header::parse(&packet_with(extensions)).map(|(header, _)| header)
        };
        let discard = options_header(&[0x42, 0]); // action bits 01: discard
        assert_eq!(
            bad(&[(NEXT_DESTINATION_OPTIONS, discard)]).unwrap_err(),
            WireError::BadExtensionHeader
        );
        let jumbo = options_header(&[0xc2, 4, 0, 1, 0, 0]);
        assert_eq!(
            bad(&[(NEXT_HOP_BY_HOP, jumbo)]).unwrap_err(),
            WireError::BadExtensionHeader
        );
        let routing_to_go = vec![0, 0, 4, 1, 0, 0, 0, 0];
        assert_eq!(
            bad(&[(NEXT_ROUTING, routing_to_go)]).unwrap_err(),
            WireError::BadExtensionHeader
        );
        let pad = options_header(&[]);
        assert_eq!(
            bad(&[
                (NEXT_DESTINATION_OPTIONS, pad.clone()),
                (NEXT_HOP_BY_HOP, pad.clone())
            ])
            .unwrap_err(),
            WireError::BadExtensionHeader,
            "Hop-by-Hop after another header"
        );
        let chain: Vec<_> = (0..=MAX_EXTENSION_HEADERS)
            .map(|_| (NEXT_DESTINATION_OPTIONS, pad.clone()))
            .collect();
        assert_eq!(bad(&chain).unwrap_err(), WireError::BadExtensionHeader);
        assert!(
            bad(&chain[1..]).is_ok(),
            "{MAX_EXTENSION_HEADERS} headers are fine"
        );
        let fragment = vec![0; 8];
        assert_eq!(
            bad(&[(NEXT_FRAGMENT, fragment)]).unwrap_err(),
            WireError::Fragment
        );
        for other in [50, 51, NEXT_NONE, 17] {
            assert_eq!(
                bad(&[(other, pad.clone())]).unwrap_err(),
                WireError::NotTcp,
                "next header {other}"
            );
        }
    }

    #[test]
    fn lengths_are_cross_checked() {
        let packet = packet_with(&[(NEXT_DESTINATION_OPTIONS, options_header(&[]))]);
        for cut in 0..IPV6_HEADER_LEN {
            assert_eq!(
                Ipv6Header::parse(&packet[..cut]).unwrap_err(),
                WireError::Truncated
            );
        }
        for cut in IPV6_HEADER_LEN..packet.len() {
            assert_eq!(
                Ipv6Header::parse(&packet[..cut]).unwrap_err(),
                WireError::BadTotalLength,
                "cut to {cut}"
            );
        }
        // A payload length that ends inside the extension header.
        let mut short = packet.clone();
        short[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(
            Ipv6Header::parse(&short).unwrap_err(),
            WireError::BadExtensionHeader
        );
        let mut v4 = packet;
        v4[0] = 0x45;
        assert_eq!(Ipv6Header::parse(&v4).unwrap_err(), WireError::NotIpv6);
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Ipv6Header::parse(&data);
        }

        #[test]
        fn parse_never_panics_behind_a_valid_fixed_header(
            next in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut header = Ipv6Header::for_tcp(SRC, DST, body.len());
            header.next_header = next;
            let mut packet = Vec::new();
            header.emit(&mut packet);
            packet.extend_from_slice(&body);
            if let Ok((parsed, upper)) = Ipv6Header::parse(&packet) {
                prop_assert_eq!(parsed.header_len + upper.len(), packet.len());
            }
        }
    }
}
