//! ARP for IPv4 over Ethernet (RFC 826): requests and replies, for neighbour resolution.

use std::net::Ipv4Addr;

use super::{EthernetHeader, MacAddr, WireError, ETHERTYPE_ARP, ETHERTYPE_IPV4};

/// The size of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
pub const BROADCAST_MAC: MacAddr = [0xff; 6];

const HTYPE_ETHERNET: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ArpOperation {
    Request,
    Reply,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ArpPacket {
    pub operation: ArpOperation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    /// Zero in a request (RFC 826 leaves it unspecified; Linux sends zeros).
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// "Who has `target_ip`? Tell `our_ip`."
    pub fn request(our_mac: MacAddr, our_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        ArpPacket {
            operation: ArpOperation::Request,
            sender_mac: our_mac,
            sender_ip: our_ip,
            target_mac: [0; 6],
            target_ip,
        }
    }

    /// The reply to this request from the owner of its target address (`our_mac`).
    pub fn reply(&self, our_mac: MacAddr) -> Self {
        ArpPacket {
            operation: ArpOperation::Reply,
            sender_mac: our_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Parses an ARP packet (the Ethernet payload). Anything but Ethernet/IPv4 requests and
    /// replies is [`WireError::BadArp`]; trailing Ethernet padding is ignored.
    pub fn parse(payload: &[u8]) -> Result<ArpPacket, WireError> {
        let Some(p) = payload.first_chunk::<ARP_LEN>() else {
            return Err(WireError::Truncated);
        };
        let htype = u16::from_be_bytes([p[0], p[1]]);
        let ptype = u16::from_be_bytes([p[2], p[3]]);
        if htype != HTYPE_ETHERNET || ptype != ETHERTYPE_IPV4 || p[4] != 6 || p[5] != 4 {
            return Err(WireError::BadArp);
        }
        let operation = match u16::from_be_bytes([p[6], p[7]]) {
            OP_REQUEST => ArpOperation::Request,
            OP_REPLY => ArpOperation::Reply,
            _ => return Err(WireError::BadArp),
        };
        let mac = |at: usize| -> MacAddr {
            let mut m = [0; 6];
            m.copy_from_slice(&p[at..at + 6]);
            m
        };
        let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
        Ok(ArpPacket {
            operation,
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// Appends the 28-byte ARP packet.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let op = match self.operation {
            ArpOperation::Request => OP_REQUEST,
            ArpOperation::Reply => OP_REPLY,
        };
        out.extend_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        out.extend_from_slice(&[6, 4]);
        out.extend_from_slice(&op.to_be_bytes());
        out.extend_from_slice(&self.sender_mac);
        out.extend_from_slice(&self.sender_ip.octets());
        out.extend_from_slice(&self.target_mac);
        out.extend_from_slice(&self.target_ip.octets());
    }

    /// Appends an Ethernet frame carrying this packet: requests are broadcast, replies go to
    /// the target. Not padded to 60 bytes (the NIC pads short frames).
    pub fn emit_frame(&self, out: &mut Vec<u8>) {
        let dst = match self.operation {
            ArpOperation::Request => BROADCAST_MAC,
            ArpOperation::Reply => self.target_mac,
        };
        EthernetHeader {
            dst,
            src: self.sender_mac,
            ethertype: ETHERTYPE_ARP,
        }
        .emit(out);
        self.emit(out);
    }
}

/// Parses an Ethernet frame carrying ARP.
pub fn parse_arp_frame(frame: &[u8]) -> Result<(EthernetHeader, ArpPacket), WireError> {
    let (ethernet, payload) = EthernetHeader::parse(frame)?;
    if ethernet.ethertype != ETHERTYPE_ARP {
        return Err(WireError::BadArp);
    }
    Ok((ethernet, ArpPacket::parse(payload)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured from Linux over a veth pair: who-has 198.18.0.2 tell 198.18.0.1, and the
    /// kernel's reply (Linux does not pad ARP on veth; the NIC would).
    const LINUX_REQUEST: &str =
        "ffffffffffff6e5a352d9019080600010800060400016e5a352d9019c6120001000000000000c6120002";
    const LINUX_REPLY: &str =
        "6e5a352d90194602a8b630d7080600010800060400024602a8b630d7c61200026e5a352d9019c6120001";
    const REPLIER_MAC: MacAddr = [0x46, 0x02, 0xa8, 0xb6, 0x30, 0xd7];

    #[test]
    fn linux_request_and_our_reply() {
        let frame = crate::wire::tests::unhex(LINUX_REQUEST);
        let (ethernet, request) = parse_arp_frame(&frame).unwrap();
        assert_eq!(ethernet.dst, BROADCAST_MAC);
        assert_eq!(
            request,
            ArpPacket::request(
                [0x6e, 0x5a, 0x35, 0x2d, 0x90, 0x19],
                Ipv4Addr::new(198, 18, 0, 1),
                Ipv4Addr::new(198, 18, 0, 2),
            )
        );
        let mut out = Vec::new();
        request.emit_frame(&mut out);
        assert_eq!(out, frame);

        // Our reply is byte for byte the kernel's.
        let reply = request.reply(REPLIER_MAC);
        let mut out = Vec::new();
        reply.emit_frame(&mut out);
        assert_eq!(out, crate::wire::tests::unhex(LINUX_REPLY));
        assert_eq!(parse_arp_frame(&out).unwrap().1, reply);

        // Ethernet padding after the 28 bytes is ignored.
        let mut padded = frame.clone();
        padded.resize(60, 0);
        assert_eq!(parse_arp_frame(&padded).unwrap().1, request);
    }

    #[test]
    fn malformed() {
        let frame = crate::wire::tests::unhex(LINUX_REQUEST);
        let arp = &frame[14..];
        assert_eq!(ArpPacket::parse(&arp[..27]), Err(WireError::Truncated));
        for (at, value) in [(1, 6), (3, 0xdd), (4, 8), (5, 16), (7, 3)] {
            let mut bad = arp.to_vec();
            bad[at] = value;
            assert_eq!(ArpPacket::parse(&bad), Err(WireError::BadArp), "byte {at}");
        }
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_arp_frame(&data);
            let _ = ArpPacket::parse(&data);
        }

        #[test]
        fn round_trip(request: bool, smac: [u8; 6], sip: [u8; 4], tmac: [u8; 6], tip: [u8; 4]) {
            let packet = ArpPacket {
                operation: if request { ArpOperation::Request } else { ArpOperation::Reply },
                sender_mac: smac, sender_ip: sip.into(), target_mac: tmac, target_ip: tip.into(),
            };
            let mut out = Vec::new();
            packet.emit(&mut out);
            prop_assert_eq!(out.len(), ARP_LEN);
            prop_assert_eq!(ArpPacket::parse(&out).unwrap(), packet);
        }
    }
}
