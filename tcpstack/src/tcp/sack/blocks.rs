//! The receiver's SACK blocks (RFC 2018 §4): the ranges an outgoing ACK reports, newest first,
//! repeating the most recent ones, with a D-SACK first for a duplicate (RFC 2883 §4).

use super::{block, len, overlaps, within};
use crate::wire::{SackBlock, SeqNum, MAX_SACK_BLOCKS};

/// Most previously reported blocks a receiver remembers to repeat (RFC 2018 §4).
const MAX_RECENT: usize = 2 * MAX_SACK_BLOCKS;

/// The SACK blocks of one outgoing ACK, in wire order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlocks {
    blocks: [SackBlock; MAX_SACK_BLOCKS],
    len: usize,
}

impl SackBlocks {
    pub fn as_slice(&self) -> &[SackBlock] {
        &self.blocks[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, b: SackBlock, max: usize) -> bool {
        if self.len >= max.min(MAX_SACK_BLOCKS) {
            return false;
        }
        self.blocks[self.len] = b;
        self.len += 1;
        true
    }
}

/// RFC 2883 §4: the part of an arriving segment `[segment.start, segment.end)` that repeats data
/// already received: below RCV.NXT, or else inside an out-of-order range. `None` when nothing of
/// it was a duplicate. Call before the segment is queued.
pub fn duplicate_of(
    segment: SackBlock,
    rcv_nxt: SeqNum,
    out_of_order: &[SackBlock],
) -> Option<SackBlock> {
    if len(segment) == 0 {
        return None;
    }
    if segment.start < rcv_nxt {
        return Some(block(segment.start, segment.end.min(rcv_nxt)));
    }
    out_of_order
        .iter()
        .filter(|r| overlaps(**r, segment))
        .map(|r| block(segment.start.max(r.start), segment.end.min(r.end)))
        .min_by_key(|b| b.start.distance(rcv_nxt))
}

/// Chooses the SACK blocks of each ACK (RFC 2018 §4, RFC 2883 §4). It remembers the blocks it
/// reported last so that they are repeated, most recent first, as the RFC asks.
#[derive(Clone, Debug, Default)]
pub struct SackBlocksBuilder {
    /// Blocks reported in earlier ACKs, most recently reported first.
    recent: [SackBlock; MAX_RECENT],
    recent_len: usize,
}

impl SackBlocksBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The blocks for an ACK sent after processing a segment.
    ///
    /// - `rcv_nxt` and `out_of_order` (the reassembly queue's ranges, any order) as they are after
    ///   the segment was queued;
    /// - `received`: the range of the segment that triggered this ACK (`None` for an ACK no
    ///   segment triggered, e.g. a window update);
    /// - `duplicate`: what [`duplicate_of`] found in that segment, reported first as a D-SACK;
    /// - `max_blocks`: what the option space allows (4, or 3 next to timestamps).
    pub fn build(
        &mut self,
        rcv_nxt: SeqNum,
        out_of_order: &[SackBlock],
        received: Option<SackBlock>,
        duplicate: Option<SackBlock>,
        max_blocks: usize,
    ) -> SackBlocks {
        let containing = |seq: SeqNum| {
            out_of_order
                .iter()
                .copied()
                .find(|r| r.start >= rcv_nxt && seq.in_range(r.start, r.end))
        };
        let mut out = SackBlocks::default();
        let mut reported = 0;
        if let Some(dup) = duplicate.filter(|d| len(*d) > 0) {
            out.push(dup, max_blocks);
            reported = out.len;
            // RFC 2883 §4 (3): a duplicate inside a larger out-of-order range is followed by
            // that range.
            if let Some(range) = containing(dup.start).filter(|r| within(dup, *r)) {
                out.push(range, max_blocks);
            }
        }
        // RFC 2018 §4: first the range holding the segment that triggered the ACK (none when it
        // advanced RCV.NXT), then the most recently reported ones that still exist, each grown
        // to the range that now contains it.
        let newest = received.and_then(|r| containing(r.start));
        let remembered = self.recent[..self.recent_len]
            .iter()
            .filter_map(|b| containing(b.start));
        let mut recent = [SackBlock::default(); MAX_RECENT];
        let mut recent_len = 0;
        for range in newest.into_iter().chain(remembered) {
            if recent_len < MAX_RECENT && !recent[..recent_len].contains(&range) {
                recent[recent_len] = range;
                recent_len += 1;
            }
        }
        // Ranges never reported yet (the history is bounded) come last.
        let fresh = out_of_order
            .iter()
            .copied()
            .filter(|r| r.start >= rcv_nxt && !recent[..recent_len].contains(r));
        for range in recent[..recent_len].iter().copied().chain(fresh) {
            if out.as_slice()[reported..].contains(&range) {
                continue;
            }
            if !out.push(range, max_blocks) {
                break;
            }
        }
        self.recent = recent;
        self.recent_len = recent_len;
        out
    }

    /// Forgets the history, e.g. once the reassembly queue is empty.
    pub fn clear(&mut self) {
        self.recent_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{rel, BASES};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_block_holds_the_newest_segment_then_the_most_recent_ones() {
        for r in BASES {
            let rcv_nxt = SeqNum(r);
            let mut builder = SackBlocksBuilder::new();
            let mut build = |ooo: &[SackBlock], seg: SackBlock, rcv_nxt: SeqNum| {
                builder
                    .build(rcv_nxt, ooo, Some(seg), None, MAX_SACK_BLOCKS)
                    .as_slice()
                    .to_vec()
            };
            let a = rel(r, 2000, 3000);
            let b = rel(r, 4000, 5000);
            let c = rel(r, 6000, 7000);
            assert_eq!(build(&[a], a, rcv_nxt), [a]);
            assert_eq!(build(&[a, b], b, rcv_nxt), [b, a]);
            assert_eq!(build(&[a, b, c], c, rcv_nxt), [c, b, a]);
            // Filling 3000–4000 merges a and b: the merged range comes first, then c.
            let ab = rel(r, 2000, 5000);
            assert_eq!(build(&[ab, c], rel(r, 3000, 4000), rcv_nxt), [ab, c]);
            // A segment that advances RCV.NXT gets no block; the rest is repeated.
            let rcv_nxt = rcv_nxt + 5000u32;
            assert_eq!(build(&[c], rel(r, 0, 2000), rcv_nxt), [c]);
            assert_eq!(build(&[], rel(r, 5000, 6000), rcv_nxt + 2000u32), []);
        }
    }

    #[test]
    fn option_space_limits_the_blocks_to_the_most_recent() {
        let r = BASES[1];
        let mut builder = SackBlocksBuilder::new();
        let ranges: Vec<SackBlock> = (0..5)
            .map(|i| rel(r, 2000 * i + 1000, 2000 * i + 2000))
            .collect();
        let mut last = SackBlocks::default();
        for (i, &seg) in ranges.iter().enumerate() {
            last = builder.build(SeqNum(r), &ranges[..=i], Some(seg), None, 3);
        }
        assert_eq!(last.as_slice(), [ranges[4], ranges[3], ranges[2]]);
        // A segment into an older range brings that one to the front.
        let again = builder.build(SeqNum(r), &ranges, Some(ranges[0]), None, 4);
        assert_eq!(
            again.as_slice(),
            [ranges[0], ranges[4], ranges[3], ranges[2]]
        );
    }

    #[test]
    fn duplicates_are_reported_first_as_d_sack() {
        for r in BASES {
            let rcv_nxt = SeqNum(r) + 5000u32;
            let ooo = [rel(r, 6000, 7000)];
            // Below RCV.NXT, wholly or partly.
            let old = rel(r, 1000, 2000);
            assert_eq!(duplicate_of(old, rcv_nxt, &ooo), Some(old));
            assert_eq!(
                duplicate_of(rel(r, 4500, 5500), rcv_nxt, &ooo),
                Some(rel(r, 4500, 5000))
            );
            // Inside an out-of-order range, and not a duplicate at all.
            assert_eq!(
                duplicate_of(rel(r, 6000, 6500), rcv_nxt, &ooo),
                Some(rel(r, 6000, 6500))
            );
            assert_eq!(duplicate_of(rel(r, 5000, 6000), rcv_nxt, &ooo), None);
            assert_eq!(duplicate_of(rel(r, 7000, 8000), rcv_nxt, &ooo), None);

            let mut builder = SackBlocksBuilder::new();
            builder.build(rcv_nxt, &ooo, Some(ooo[0]), None, 4);
            let blocks = builder.build(rcv_nxt, &ooo, Some(old), Some(old), 4);
            assert_eq!(blocks.as_slice(), [old, ooo[0]]);
            // RFC 2883 §4: a duplicate inside a larger range is followed by that range, once.
            let dup = rel(r, 6000, 6500);
            let blocks = builder.build(rcv_nxt, &ooo, Some(dup), Some(dup), 4);
            assert_eq!(blocks.as_slice(), [dup, ooo[0]]);
            // The D-SACK is reported once and never repeated.
            let blocks = builder.build(rcv_nxt, &ooo, None, None, 4);
            assert_eq!(blocks.as_slice(), [ooo[0]]);
        }
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn receiver_blocks_are_valid(
            base in any::<u32>(),
            segments in prop::collection::vec((0u32..20_000, 1u32..3000), 1..60),
            max_blocks in 0usize..6,
        ) {
            // A small reassembly model: RCV.NXT and sorted, disjoint out-of-order ranges.
            let mut rcv_nxt = SeqNum(base);
            let mut ooo: Vec<SackBlock> = Vec::new();
            let mut builder = SackBlocksBuilder::new();
            for (offset, length) in segments {
                let seg = block(SeqNum(base) + offset, SeqNum(base) + offset + length);
                let dup = duplicate_of(seg, rcv_nxt, &ooo);
                if seg.end > rcv_nxt {
                    ooo.push(block(seg.start.max(rcv_nxt), seg.end));
                    ooo.sort_by_key(|r| r.start.distance(rcv_nxt));
                    let mut merged: Vec<SackBlock> = Vec::new();
                    for r in ooo {
                        match merged.last_mut() {
                            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                            _ => merged.push(r),
                        }
                    }
                    if merged[0].start == rcv_nxt {
                        rcv_nxt = merged.remove(0).end;
                    }
                    ooo = merged;
                }
                let blocks = builder.build(rcv_nxt, &ooo, Some(seg), dup, max_blocks);
                prop_assert!(blocks.as_slice().len() <= max_blocks.min(MAX_SACK_BLOCKS));
                let skip = usize::from(dup.is_some() && !blocks.is_empty());
                for b in &blocks.as_slice()[skip..] {
                    prop_assert!(ooo.contains(b), "{b:?} not in {ooo:?}");
                }
                let mut seen = blocks.as_slice()[skip..].to_vec();
                seen.dedup();
                prop_assert!(seen.len() == blocks.as_slice().len() - skip || dup.is_some());
                if dup.is_none() && max_blocks > 0 {
                    if let Some(holding) = ooo.iter().find(|r| seg.start.in_range(r.start, r.end)) {
                        prop_assert_eq!(blocks.as_slice()[0], *holding);
                    }
                }
            }
        }
    }
}
