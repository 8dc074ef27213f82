//! The TCP header and its options (RFC 9293 §3.1, §3.2; RFC 7323; RFC 2018).

use std::net::IpAddr;

use super::checksum::{self, Checksum};
use super::{
    SackBlock, SeqNum, TcpFlags, TcpHeader, TcpOptions, Timestamps, WireError, MAX_SACK_BLOCKS,
    TCP_MAX_OPTIONS_LEN, TCP_MIN_HEADER_LEN,
};

/// Option kinds (RFC 9293 §3.2, RFC 7323, RFC 2018).
pub const OPT_EOL: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WINDOW_SCALE: u8 = 3;
pub const OPT_SACK_PERMITTED: u8 = 4;
pub const OPT_SACK: u8 = 5;
pub const OPT_TIMESTAMPS: u8 = 8;

const LEN_MSS: usize = 4;
const LEN_WINDOW_SCALE: usize = 3;
const LEN_SACK_PERMITTED: usize = 2;
const LEN_TIMESTAMPS: usize = 10;
const SACK_BLOCK_LEN: usize = 8;

/// RFC 7323 §2.3: a shift count above 14 is treated as 14.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// Offset of the checksum field in the TCP header.
const CHECKSUM_OFFSET: usize = 16;

impl TcpHeader {
    /// Parses a segment (header, options, payload) without checking its checksum; see
    /// [`TcpHeader::parse_verified`] for received segments.
    pub fn parse(segment: &[u8]) -> Result<(TcpHeader, &[u8]), WireError> {
        let Some(fixed) = segment.first_chunk::<TCP_MIN_HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        let header_len = usize::from(fixed[12] >> 4) * 4;
        if header_len < TCP_MIN_HEADER_LEN || header_len > segment.len() {
            return Err(WireError::BadDataOffset);
        }
        let options = TcpOptions::parse(&segment[TCP_MIN_HEADER_LEN..header_len])?;
        let header = TcpHeader {
            src_port: u16::from_be_bytes([fixed[0], fixed[1]]),
            dst_port: u16::from_be_bytes([fixed[2], fixed[3]]),
            seq: SeqNum(u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]])),
            ack: SeqNum(u32::from_be_bytes([
                fixed[8], fixed[9], fixed[10], fixed[11],
            ])),
            // The four bits between data offset and the flags are reserved (RFC 9293 §3.1);
            // the former NS bit (RFC 3540) is historic and ignored.
            flags: TcpFlags(fixed[13]),
            window: u16::from_be_bytes([fixed[14], fixed[15]]),
            urgent_ptr: u16::from_be_bytes([fixed[18], fixed[19]]),
            options,
        };
        Ok((header, &segment[header_len..]))
    }

    /// Verifies the checksum over the pseudo-header of `src` and `dst` (RFC 9293 §3.1 for IPv4,
    /// RFC 8200 §8.1 for IPv6), then parses. The checksum comes first so that any corrupted
    /// segment reports as a checksum failure.
    pub fn parse_verified(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        segment: &[u8],
    ) -> Result<(TcpHeader, &[u8]), WireError> {
        if segment.len() < TCP_MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if !checksum::verify_tcp(src, dst, segment) {
            return Err(WireError::BadTcpChecksum);
        }
        Self::parse(segment)
    }

    /// Bytes of header this header emits as: 20 plus its options, padded to a 4-byte multiple.
    pub fn header_len(&self) -> usize {
        TCP_MIN_HEADER_LEN + self.options.emitted_len()
    }

    /// Appends header, options and `payload` with the checksum over the pseudo-header of `src`
    /// and `dst` (IPv4 or IPv6).
    pub fn emit(
        &self,
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let mut header = [0u8; TCP_MIN_HEADER_LEN + TCP_MAX_OPTIONS_LEN];
        let options_len = self
            .options
            .write(&mut header[TCP_MIN_HEADER_LEN..])
            .unwrap_or(0);
        let header_len = TCP_MIN_HEADER_LEN + options_len;
        header[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        header[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        header[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        header[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        // header_len <= 60, so the data offset fits its four bits.
        header[12] = ((header_len / 4) as u8) << 4;
        header[13] = self.flags.0;
        header[14..16].copy_from_slice(&self.window.to_be_bytes());
        header[18..20].copy_from_slice(&self.urgent_ptr.to_be_bytes());

        let mut sum = Checksum::pseudo_header(
            src.into(),
            dst.into(),
            super::IPPROTO_TCP,
            header_len + payload.len(),
        );
        sum.add_bytes(&header[..header_len]);
        sum.add_bytes(payload);
        header[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&sum.finish().to_be_bytes());

        out.reserve(header_len + payload.len());
        out.extend_from_slice(&header[..header_len]);
        out.extend_from_slice(payload);
    }
}

impl TcpOptions {
    /// Parses an options area (the bytes between the fixed header and the data offset).
    ///
    /// Malformed lengths: a length of 0 or 1, a kind with no room for its length byte, or a length
    /// running past the options area make the whole segment unparseable, so it is rejected with
    /// [`WireError::BadOption`] (RFC 9293 §3.2, MUST-7: be prepared for an illegal option length).
    /// The RFC's *suggested* reaction, resetting the connection, is not taken: the segment is
    /// dropped and counted, so a corrupted or forged segment cannot tear a connection down.
    ///
    /// A known option with a *wrong* length (say MSS with length 3) is different: its length byte
    /// is well-formed, so parsing can continue past it. RFC 9293 §3.2 requires that options we
    /// do not implement be ignored without error as long as they carry a length (MUST-5), and
    /// §3.1 gives each option a fixed size; an option whose size is not the defined one is not an
    /// option we can interpret, so it is skipped by its length and its value is not used, exactly
    /// like an unknown kind. This is what Linux does (tcp_parse_options only acts on an option
    /// when `opsize` matches), so a segment a Linux peer accepts we accept too, and a middlebox's
    /// odd option never kills a connection.
    ///
    /// EOL ends the list; the bytes after it are padding. A window-scale shift above 14 is
    /// clamped to 14 (RFC 7323 §2.3). A repeated option overrides the earlier one.
    pub fn parse(area: &[u8]) -> Result<TcpOptions, WireError> {
        let mut options = TcpOptions::default();
        let mut rest = area;
        while let [kind, after_kind @ ..] = rest {
            match *kind {
                OPT_EOL => break,
                OPT_NOP => {
                    rest = after_kind;
                    continue;
                }
                _ => {}
            }
            let Some(&len) = after_kind.first() else {
                return Err(WireError::BadOption);
            };
            let len = usize::from(len);
            if len < 2 || len > rest.len() {
                return Err(WireError::BadOption);
            }
            let value = &rest[2..len];
            match (*kind, value) {
                (OPT_MSS, &[hi, lo]) => options.mss = Some(u16::from_be_bytes([hi, lo])),
                (OPT_WINDOW_SCALE, &[shift]) => {
                    options.window_scale = Some(shift.min(MAX_WINDOW_SCALE));
                }
                (OPT_SACK_PERMITTED, []) => options.sack_permitted = true,
                (OPT_TIMESTAMPS, &[a, b, c, d, e, f, g, h]) => {
                    options.timestamps = Some(Timestamps {
                        tsval: u32::from_be_bytes([a, b, c, d]),
                        tsecr: u32::from_be_bytes([e, f, g, h]),
                    });
                }
                (OPT_SACK, blocks)
                    if !blocks.is_empty()
                        && blocks.len() % SACK_BLOCK_LEN == 0
                        && blocks.len() <= SACK_BLOCK_LEN * MAX_SACK_BLOCKS =>
                {
                    options.sack_blocks = [SackBlock::default(); MAX_SACK_BLOCKS];
                    options.sack_block_count = 0;
                    for block in blocks.chunks_exact(SACK_BLOCK_LEN) {
                        options.push_sack_block(SackBlock {
                            start: SeqNum(u32::from_be_bytes([
                                block[0], block[1], block[2], block[3],
                            ])),
                            end: SeqNum(u32::from_be_bytes([
                                block[4], block[5], block[6], block[7],
                            ])),
                        });
                    }
                }
                // Unknown kinds, and known kinds of the wrong length: skipped (see above).
                _ => {}
            }
            rest = &rest[len..];
        }
        Ok(options)
    }

    /// How many SACK blocks fit beside the other options in 40 bytes.
    pub fn sack_blocks_that_fit(&self) -> usize {
        let room = TCP_MAX_OPTIONS_LEN - self.emitted_len_without_sack();
        // NOP, NOP, kind, length, then the blocks.
        (room.saturating_sub(4) / SACK_BLOCK_LEN).min(self.sack_blocks().len())
    }

    /// The length of the options area as [`TcpOptions::write`] lays it out (a multiple of 4).
    pub fn emitted_len(&self) -> usize {
        let blocks = self.sack_blocks_that_fit();
        let sack = if blocks > 0 {
            4 + SACK_BLOCK_LEN * blocks
        } else {
            0
        };
        self.emitted_len_without_sack() + sack
    }

    fn emitted_len_without_sack(&self) -> usize {
        let mss = if self.mss.is_some() { 4 } else { 0 };
        // SACK-permitted rides in the two padding bytes before the timestamps when both are set.
        let ts_and_sack_permitted = match (self.timestamps.is_some(), self.sack_permitted) {
            (true, _) => 12,
            (false, true) => 4,
            (false, false) => 0,
        };
        let window_scale = if self.window_scale.is_some() { 4 } else { 0 };
        mss + ts_and_sack_permitted + window_scale
    }

    /// Writes the options the way Linux's `tcp_options_write` lays them out, so our segments look
    /// like a kernel's in a capture: MSS; SACK-permitted packed with timestamps (or NOP,NOP before
    /// either alone); NOP, window scale; NOP, NOP, SACK blocks (as many as fit in 40 bytes).
    /// Returns the length written, or `None` when `out` is shorter than [`Self::emitted_len`].
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.emitted_len();
        let out = out.get_mut(..len)?;
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = self.mss {
            let [hi, lo] = mss.to_be_bytes();
            put(&[OPT_MSS, LEN_MSS as u8, hi, lo]);
        }
        match (self.timestamps, self.sack_permitted) {
            (Some(ts), sack_permitted) => {
                if sack_permitted {
                    put(&[OPT_SACK_PERMITTED, LEN_SACK_PERMITTED as u8]);
                } else {
                    put(&[OPT_NOP, OPT_NOP]);
                }
                put(&[OPT_TIMESTAMPS, LEN_TIMESTAMPS as u8]);
                put(&ts.tsval.to_be_bytes());
                put(&ts.tsecr.to_be_bytes());
            }
            (None, true) => put(&[
                OPT_NOP,
                OPT_NOP,
                OPT_SACK_PERMITTED,
                LEN_SACK_PERMITTED as u8,
            ]),
            (None, false) => {}
        }
        if let Some(shift) = self.window_scale {
            put(&[OPT_NOP, OPT_WINDOW_SCALE, LEN_WINDOW_SCALE as u8, shift]);
        }
        let blocks = self.sack_blocks_that_fit();
        if blocks > 0 {
            // blocks <= 4, so the length (at most 34) fits a byte.
            put(&[
                OPT_NOP,
                OPT_NOP,
                OPT_SACK,
                (2 + SACK_BLOCK_LEN * blocks) as u8,
            ]);
            for block in &self.sack_blocks()[..blocks] {
                put(&block.start.0.to_be_bytes());
                put(&block.end.0.to_be_bytes());
            }
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn header(options: TcpOptions) -> TcpHeader {
        TcpHeader {
            src_port: 40000,
            dst_port: 5201,
            seq: SeqNum(1000),
            ack: SeqNum(2000),
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 502,
            urgent_ptr: 0,
            options,
        }
    }

    fn emit(h: &TcpHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        h.emit(SRC, DST, payload, &mut out);
        out
    }

    /// A segment with a hand-made options area and a correct checksum.
    fn segment_with_raw_options(options: &[u8], data_offset_words: u8) -> Vec<u8> {
        let mut seg = emit(&header(TcpOptions::default()), b"");
        seg.extend_from_slice(options);
        seg[12] = data_offset_words << 4;
        seg[16] = 0;
        seg[17] = 0;
        let sum = checksum::tcp_checksum(SRC, DST, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        seg
    }

    fn options_of(raw: &[u8]) -> Result<TcpOptions, WireError> {
        assert_eq!(raw.len() % 4, 0);
        let seg = segment_with_raw_options(raw, 5 + (raw.len() / 4) as u8);
        TcpHeader::parse_verified(SRC, DST, &seg).map(|(h, _)| h.options)
    }

    fn ts(tsval: u32, tsecr: u32) -> Option<Timestamps> {
        Some(Timestamps { tsval, tsecr })
    }

    fn block(start: u32, end: u32) -> SackBlock {
        SackBlock {
            start: SeqNum(start),
            end: SeqNum(end),
        }
    }

    #[test]
    fn linux_syn_layout() {
        let options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: ts(0x0102_0304, 0),
            ..TcpOptions::default()
        };
        let mut area = [0u8; 40];
        let len = options.write(&mut area).unwrap();
        #[rustfmt::skip]
        let expected = [
            2, 4, 0x05, 0xb4,             // mss 1460
            4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, // sackOK, TS val ecr 0
            1, 3, 3, 7,                   // nop, wscale 7
        ];
        assert_eq!(&area[..len], &expected);
        assert_eq!(header(options).header_len(), 40);
    }

    #[test]
    fn linux_data_layout_with_sack() {
        let mut options = TcpOptions {
            timestamps: ts(5, 6),
            ..TcpOptions::default()
        };
        options.push_sack_block(block(100, 200));
        let mut area = [0u8; 40];
        let len = options.write(&mut area).unwrap();
        #[rustfmt::skip]
        let expected = [
            1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6,
            1, 1, 5, 10, 0, 0, 0, 100, 0, 0, 0, 200,
        ];
        assert_eq!(&area[..len], &expected);
    }

    #[test]
    fn sack_blocks_that_do_not_fit_are_dropped() {
        let mut options = TcpOptions {
            timestamps: ts(1, 2),
            ..TcpOptions::default()
        };
        for i in 0..4 {
            options.push_sack_block(block(i * 10, i * 10 + 5));
        }
        // 12 bytes of timestamps leave room for three blocks.
        assert_eq!(options.sack_blocks_that_fit(), 3);
        assert_eq!(options.emitted_len(), 40);
        let seg = emit(&header(options), b"x");
        let (parsed, payload) = TcpHeader::parse_verified(SRC, DST, &seg).unwrap();
        assert_eq!(parsed.options.sack_blocks(), &options.sack_blocks()[..3]);
        assert_eq!(payload, b"x");

        options.timestamps = None;
        assert_eq!(options.sack_blocks_that_fit(), 4);
        assert_eq!(options.emitted_len(), 36);

        // MSS + TS + WS leave 20 bytes: two blocks.
        options.timestamps = ts(1, 2);
        options.mss = Some(1460);
        options.window_scale = Some(1);
        assert_eq!(options.sack_blocks_that_fit(), 2);
        assert_eq!(options.emitted_len(), 40);
    }

    #[test]
    fn every_option_combination_round_trips() {
        for bits in 0u32..64 {
            let mut options = TcpOptions {
                mss: (bits & 1 != 0).then_some(1460),
                window_scale: (bits & 2 != 0).then_some(14),
                sack_permitted: bits & 4 != 0,
                timestamps: (bits & 8 != 0).then_some(Timestamps {
                    tsval: 0xdead_beef,
                    tsecr: 0xffff_ffff,
                }),
                ..TcpOptions::default()
            };
            let blocks = (bits >> 4) as usize; // 0..=3
            for i in 0..blocks as u32 {
                options.push_sack_block(block(u32::MAX - i, i * 7));
            }
            let fit = options.sack_blocks_that_fit();
            let h = header(options);
            let seg = emit(&h, b"payload");
            assert_eq!(seg.len(), h.header_len() + 7);
            assert_eq!(h.header_len() % 4, 0);
            assert!(h.header_len() <= 60);
            let (parsed, payload) = TcpHeader::parse_verified(SRC, DST, &seg).unwrap();
            let mut expected = h;
            expected.options.sack_block_count = fit as u8;
            for b in &mut expected.options.sack_blocks[fit..] {
                *b = SackBlock::default();
            }
            assert_eq!(parsed, expected, "combination {bits:#b}");
            assert_eq!(payload, b"payload");
        }
    }

    #[test]
    fn structural_malformations() {
        let good = emit(&header(TcpOptions::default()), b"data");
        assert_eq!(
            TcpHeader::parse(&good[..19]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            TcpHeader::parse_verified(SRC, DST, &good[..19]).unwrap_err(),
            WireError::Truncated
        );
        for words in [0u8, 4] {
            let seg = segment_with_raw_options(&[], words);
            assert_eq!(
                TcpHeader::parse_verified(SRC, DST, &seg).unwrap_err(),
                WireError::BadDataOffset
            );
        }
        // Data offset 15 (60 bytes) in a 24-byte segment.
        let seg = segment_with_raw_options(&[1, 1, 1, 1], 15);
        assert_eq!(
            TcpHeader::parse_verified(SRC, DST, &seg).unwrap_err(),
            WireError::BadDataOffset
        );
    }

    #[test]
    fn option_length_malformations() {
        // Length 0 and 1.
        assert_eq!(options_of(&[2, 0, 0, 0]), Err(WireError::BadOption));
        assert_eq!(options_of(&[2, 1, 0, 0]), Err(WireError::BadOption));
        assert_eq!(options_of(&[99, 0, 0, 0]), Err(WireError::BadOption));
        // Running past the options area (MSS claims 4 bytes, 2 remain).
        assert_eq!(options_of(&[1, 1, 2, 4]), Err(WireError::BadOption));
        assert_eq!(options_of(&[8, 10, 0, 0]), Err(WireError::BadOption));
        // A kind in the last byte with no room for its length.
        assert_eq!(options_of(&[1, 1, 1, 2]), Err(WireError::BadOption));
    }

    #[test]
    fn known_option_with_wrong_length_is_skipped() {
        // MSS with length 3, then a valid window scale: the MSS is ignored, parsing goes on.
        let options = options_of(&[2, 3, 5, 3, 3, 7, 1, 1]).unwrap();
        assert_eq!(options.mss, None);
        assert_eq!(options.window_scale, Some(7));
        // SACK with a length that is not 2 + 8n, SACK-permitted with a body, TS of length 8.
        let options = options_of(&[5, 6, 0, 0, 0, 0, 4, 3, 0, 1, 1, 1]).unwrap();
        assert_eq!(options.sack_block_count, 0);
        assert!(!options.sack_permitted);
        let options = options_of(&[8, 8, 0, 0, 0, 1, 0, 0]).unwrap();
        assert_eq!(options.timestamps, None);
    }

    #[test]
    fn unknown_options_eol_and_clamping() {
        // Unknown kind 30 (MPTCP) of length 6 skipped; window scale 15 clamped; EOL ends the list
        // and what follows it (an MSS here) is padding.
        let options = options_of(&[30, 6, 9, 9, 9, 9, 3, 3, 15, 0, 2, 4, 5, 0xb4, 0, 0]).unwrap();
        assert_eq!(options.window_scale, Some(14));
        assert_eq!(options.mss, None);
    }

    #[test]
    fn sack_with_four_blocks_parses() {
        let mut raw = vec![1, 1, 5, 34];
        for i in 1..=4u32 {
            raw.extend_from_slice(&(i * 100).to_be_bytes());
            raw.extend_from_slice(&(i * 100 + 50).to_be_bytes());
        }
        let options = options_of(&raw).unwrap();
        assert_eq!(
            options.sack_blocks(),
            &[
                block(100, 150),
                block(200, 250),
                block(300, 350),
                block(400, 450)
            ]
        );
    }

    fn arb_options() -> impl Strategy<Value = TcpOptions> {
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=MAX_WINDOW_SCALE),
            any::<bool>(),
            proptest::option::of(any::<(u32, u32)>()),
            proptest::collection::vec(any::<(u32, u32)>(), 0..=MAX_SACK_BLOCKS),
        )
            .prop_map(|(mss, window_scale, sack_permitted, ts, blocks)| {
                let mut options = TcpOptions {
                    mss,
                    window_scale,
                    sack_permitted,
                    timestamps: ts.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
                    ..TcpOptions::default()
                };
                for (start, end) in blocks {
                    options.push_sack_block(block(start, end));
                }
                options
            })
    }

    prop_compose! {
        fn arb_header()(
            src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: u8, window: u16,
            urgent_ptr: u16, options in arb_options(),
        ) -> TcpHeader {
            TcpHeader {
                src_port, dst_port, seq: SeqNum(seq), ack: SeqNum(ack), flags: TcpFlags(flags),
                window, urgent_ptr, options,
            }
        }
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = TcpHeader::parse(&data);
            let _ = TcpHeader::parse_verified(SRC, DST, &data);
            let _ = TcpOptions::parse(&data);
        }

        #[test]
        fn valid_headers_round_trip(
            h in arb_header(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            // Independent of the emitter: room left beside the other options, 8 bytes a block.
            let used: usize = h.options.mss.map_or(0, |_| 4)
                + if h.options.timestamps.is_some() { 12 } else if h.options.sack_permitted { 4 } else { 0 }
                + h.options.window_scale.map_or(0, |_| 4);
            let fit = ((40 - used).saturating_sub(4) / 8).min(h.options.sack_blocks().len());
            let seg = emit(&h, &payload);
            let (parsed, parsed_payload) = TcpHeader::parse_verified(SRC, DST, &seg).unwrap();
            let mut expected = h;
            expected.options.sack_block_count = fit as u8;
            for b in &mut expected.options.sack_blocks[fit..] {
                *b = SackBlock::default();
            }
            prop_assert_eq!(parsed, expected);
            prop_assert_eq!(parsed_payload, &payload[..]);
        }

        #[test]
        fn mutated_segments_never_panic(
            h in arb_header(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut seg = emit(&h, b"some payload");
            for (at, value) in flips {
                let at = at % seg.len();
                seg[at] = value;
            }
            let cut = cut % (seg.len() + 1);
            let _ = TcpHeader::parse(&seg[..cut]);
            let _ = TcpHeader::parse_verified(SRC, DST, &seg[..cut]);
        }
    }
}
