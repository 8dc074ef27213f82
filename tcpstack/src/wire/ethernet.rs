//! Ethernet II framing (IEEE 802.3 with an EtherType; no FCS, which the NIC strips).

use super::{EthernetHeader, WireError, ETHERNET_HEADER_LEN, ETHERTYPE_VLAN};

/// 802.1ad service tag (QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// The pre-standard QinQ tag some switches still use.
pub const ETHERTYPE_QINQ_LEGACY: u16 = 0x9100;

impl EthernetHeader {
    /// Splits a frame into its header and payload. VLAN-tagged frames are rejected with
    /// [`WireError::VlanTagged`] rather than parsed into a header whose EtherType is the tag.
    pub fn parse(frame: &[u8]) -> Result<(EthernetHeader, &[u8]), WireError> {
        let (header, payload) = frame
            .split_first_chunk::<ETHERNET_HEADER_LEN>()
            .ok_or(WireError::Truncated)?;
        let ethertype = u16::from_be_bytes([header[12], header[13]]);
        if matches!(
            ethertype,
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_LEGACY
        ) {
            return Err(WireError::VlanTagged);
        }
        let mut dst = [0; 6];
        let mut src = [0; 6];
        dst.copy_from_slice(&header[0..6]);
        src.copy_from_slice(&header[6..12]);
        Ok((
            EthernetHeader {
                dst,
                src,
                ethertype,
            },
            payload,
        ))
    }

    /// Appends the 14-byte header.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        out.extend_from_slice(&self.ethertype.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ETHERTYPE_ARP, ETHERTYPE_IPV4};
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let header = EthernetHeader {
            dst: [0x02, 0, 0, 0, 0, 1],
            src: [0x02, 0, 0, 0, 0, 2],
            ethertype: ETHERTYPE_IPV4,
        };
        let mut frame = Vec::new();
        header.emit(&mut frame);
        frame.extend_from_slice(b"payload");
        assert_eq!(
            &frame[..14],
            &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]
        );
        let (parsed, payload) = EthernetHeader::parse(&frame).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(payload, b"payload");
    }

    #[test]
    fn short_frame_is_truncated() {
        assert_eq!(
            EthernetHeader::parse(&[0; 13]).unwrap_err(),
            WireError::Truncated
        );
        assert!(EthernetHeader::parse(&[0; 14]).is_ok());
    }

    #[test]
    fn vlan_tags_are_reported() {
        for tag in [ETHERTYPE_VLAN, ETHERTYPE_QINQ, ETHERTYPE_QINQ_LEGACY] {
            let mut frame = [0u8; 60];
            frame[12..14].copy_from_slice(&tag.to_be_bytes());
            frame[16..18].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
            assert_eq!(
                EthernetHeader::parse(&frame).unwrap_err(),
                WireError::VlanTagged
            );
        }
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = EthernetHeader::parse(&data);
        }
    }
}
