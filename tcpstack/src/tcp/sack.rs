//! Selective acknowledgement: the blocks a receiver reports (RFC 2018 §4, D-SACK of RFC 2883) and
//! the sender's scoreboard with the loss-recovery rules of RFC 6675 (IsLost, SetPipe, NextSeg).
//!
//! Everything is in absolute sequence numbers ([`SeqNum`]) and bytes, and stays correct across
//! the 2^32 wrap because every range lies within one window (less than 2^31) of SND.UNA / RCV.NXT.

use crate::wire::{SackBlock, SeqNum, MAX_SACK_BLOCKS};

/// RFC 6675 §2: DupThresh, the number of duplicate ACKs (or SACKed segments) that signal a loss.
pub const DUP_THRESH: u32 = 3;

/// Most SACKed ranges the sender remembers. Forgetting one only makes the sender believe less
/// was received (a retransmission too many, never a byte lost), so what a peer sends cannot
/// make the scoreboard grow.
const MAX_SACKED_RANGES: usize = 128;
/// Most retransmitted ranges remembered to recognise D-SACKs of spurious retransmissions and
/// lost retransmissions.
const MAX_RETRANSMITTED: usize = 256;
/// Most previously reported blocks a receiver remembers to repeat (RFC 2018 §4).
const MAX_RECENT: usize = 2 * MAX_SACK_BLOCKS;

fn block(start: SeqNum, end: SeqNum) -> SackBlock {
    SackBlock { start, end }
}

fn len(b: SackBlock) -> u32 {
    if b.end > b.start {
        b.end - b.start
    } else {
        0
    }
}

/// `inner` lies within `outer`.
fn within(inner: SackBlock, outer: SackBlock) -> bool {
    inner.start >= outer.start && inner.end <= outer.end
}

fn overlaps(a: SackBlock, b: SackBlock) -> bool {
    a.start < b.end && b.start < a.end
}

// ------------------------------------------------------------------------------------------------
// Receiver side
// ------------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------------
// Sender side
// ------------------------------------------------------------------------------------------------

/// What one ACK changed on the scoreboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackUpdate {
    /// Bytes newly acknowledged cumulatively.
    pub acked: u32,
    /// Bytes SACKed for the first time.
    pub newly_sacked: u32,
    /// RFC 6937's DeliveredData: acked plus the change in SACKed bytes.
    pub delivered: u32,
    /// The D-SACK block the ACK carried (RFC 2883 §4), if any.
    pub dsack: Option<SackBlock>,
    /// The D-SACK reports a duplicate of data we retransmitted: that retransmission was
    /// spurious (RFC 3708).
    pub spurious_retransmission: bool,
    /// Retransmissions of this recovery found lost: data sent after them was SACKed.
    pub lost_retransmissions: u32,
}

/// What to send next during SACK loss recovery (RFC 6675 §4, NextSeg()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextSeg {
    /// Rules (1) and (3): retransmit `len` bytes from `start`.
    Retransmit { start: SeqNum, len: u32 },
    /// Rule (2): send new data.
    NewData,
    /// Rule (4): the one rescue retransmission per recovery, holding the highest outstanding
    /// unSACKed byte.
    Rescue { start: SeqNum, len: u32 },
}

#[derive(Clone, Copy, Debug)]
struct Retransmitted {
    range: SackBlock,
    dsacked: bool,
    in_recovery: bool,
    /// HighData when it was sent: SACKs for data beyond it mean it was lost again.
    sent_before: SeqNum,
    /// Lost again, and not yet retransmitted again.
    lost: bool,
}

/// The sender's view of what the peer SACKed (RFC 6675 §3, §4).
#[derive(Clone, Debug)]
pub struct SackScoreboard {
    mss: u32,
    /// HighACK: SND.UNA.
    snd_una: SeqNum,
    /// SACKed ranges above SND.UNA: sorted, disjoint and not touching.
    sacked: Vec<SackBlock>,
    sacked_bytes: u32,
    /// HighRxt, as the end of the highest byte retransmitted in this recovery.
    high_rxt: SeqNum,
    rescue_rxt: Option<SeqNum>,
    /// RecoveryPoint while in SACK loss recovery.
    recovery_point: Option<SeqNum>,
    retransmitted: Vec<Retransmitted>,
    recovery_retransmissions: u32,
    recovery_dsacked: u32,
}

impl SackScoreboard {
    pub fn new(snd_una: SeqNum, mss: u32) -> Self {
        SackScoreboard {
            mss: mss.max(1),
            snd_una,
            sacked: Vec::new(),
            sacked_bytes: 0,
            high_rxt: snd_una,
            rescue_rxt: None,
            recovery_point: None,
            retransmitted: Vec::new(),
            recovery_retransmissions: 0,
            recovery_dsacked: 0,
        }
    }

    pub fn set_mss(&mut self, mss: u32) {
        self.mss = mss.max(1);
    }

    /// The SACKed ranges above SND.UNA, in sequence order.
    pub fn sacked(&self) -> &[SackBlock] {
        &self.sacked
    }

    pub fn sacked_bytes(&self) -> u32 {
        self.sacked_bytes
    }

    pub fn is_sacked(&self, seq: SeqNum) -> bool {
        self.sacked.iter().any(|r| seq.in_range(r.start, r.end))
    }

    /// The end of the highest SACKed byte ("the highest octet covered by any received SACK").
    pub fn high_sacked(&self) -> Option<SeqNum> {
        self.sacked.last().map(|r| r.end)
    }

    pub fn in_recovery(&self) -> bool {
        self.recovery_point.is_some()
    }

    /// Processes an acceptable ACK (SND.UNA ≤ `ack` ≤ `high_data`): its cumulative
    /// acknowledgement and SACK blocks, first to last as on the wire. Blocks outside
    /// [SND.UNA, HighData) are cut to it or ignored (RFC 6675 §5: a SACK beyond what was sent is
    /// invalid). The first block is a D-SACK (RFC 2883 §4) when it starts below `ack`, wherever
    /// it ends, or lies inside the second block, as Linux's tcp_check_dsack decides; like any
    /// block it must end by HighData.
    pub fn on_ack(&mut self, ack: SeqNum, blocks: &[SackBlock], high_data: SeqNum) -> SackUpdate {
        let mut update = SackUpdate::default();
        if !ack.in_range_inclusive(self.snd_una, high_data) {
            return update;
        }
        let before = self.sacked_bytes;
        update.acked = self.update(ack);
        let after_ack = self.sacked_bytes;
        let mut blocks = blocks;
        if let Some(&first) = blocks.first() {
            let inside_second = blocks.get(1).is_some_and(|second| within(first, *second));
            let span = first.end.0.wrapping_sub(first.start.0);
            let sensible = span > 0 && span <= i32::MAX as u32 && first.end <= high_data;
            if sensible && (first.start < ack || inside_second) {
                update.dsack = Some(first);
                update.spurious_retransmission = self.on_dsack(first);
                blocks = &blocks[1..];
            }
        }
        for &b in blocks {
            if let Some(b) = self.clip(b, high_data) {
                self.insert(b);
            }
        }
        update.lost_retransmissions = self.detect_lost_retransmissions();
        // Forgetting a range (the scoreboard is bounded) can shrink the total: never negative.
        update.newly_sacked = self.sacked_bytes.saturating_sub(after_ack);
        // SACKed bytes the cumulative ACK now covers were already delivered when SACKed.
        let sacked_then_acked = before - after_ack;
        update.delivered = update.acked.saturating_sub(sacked_then_acked) + update.newly_sacked;
        update
    }

    /// RFC 6675 Update() for the cumulative acknowledgement: forget what is below SND.UNA.
    /// Returns the bytes newly acknowledged.
    pub fn update(&mut self, snd_una: SeqNum) -> u32 {
        if snd_una <= self.snd_una {
            return 0;
        }
        let acked = snd_una - self.snd_una;
        self.snd_una = snd_una;
        self.sacked.retain_mut(|r| {
            if r.start < snd_una {
                r.start = snd_una;
            }
            r.end > r.start
        });
        self.recount();
        if self.high_rxt < snd_una {
            self.high_rxt = snd_una;
        }
        if self
            .recovery_point
            .is_some_and(|recovery_point| snd_una >= recovery_point)
        {
            self.recovery_point = None;
        }
        acked
    }

    /// The part of a SACK block within [SND.UNA, HighData), or `None` when it has none or is
    /// not a sensible range at all (empty, inverted or longer than half the sequence space).
    fn clip(&self, b: SackBlock, high_data: SeqNum) -> Option<SackBlock> {
        let window = high_data.0.wrapping_sub(self.snd_una.0);
        let end_offset = b.end.0.wrapping_sub(self.snd_una.0);
        let span = b.end.0.wrapping_sub(b.start.0);
        if end_offset == 0 || end_offset > window || span == 0 || span > i32::MAX as u32 {
            return None;
        }
        Some(block(self.snd_una + end_offset.saturating_sub(span), b.end))
    }

    fn recount(&mut self) {
        self.sacked_bytes = self.sacked.iter().map(|r| len(*r)).sum();
    }

    fn insert(&mut self, mut b: SackBlock) {
        let first = self
            .sacked
            .iter()
            .position(|r| r.end >= b.start)
            .unwrap_or(self.sacked.len());
        let mut last = first;
        while last < self.sacked.len() && self.sacked[last].start <= b.end {
            b.start = b.start.min(self.sacked[last].start);
            b.end = b.end.max(self.sacked[last].end);
            last += 1;
        }
        self.sacked.splice(first..last, [b]);
        self.sacked.truncate(MAX_SACKED_RANGES);
        self.recount();
    }

    /// The lowest sequence number not yet considered lost: every unSACKed byte below it has
    /// DupThresh SACKed segments, or more than (DupThresh − 1)·SMSS SACKed bytes, above it.
    fn loss_boundary(&self) -> SeqNum {
        let (mut bytes, mut segments) = (0u64, 0u64);
        for r in self.sacked.iter().rev() {
            let n = u64::from(len(*r));
            bytes += n;
            // A SACKed range holds at least one segment; count full-sized ones.
            segments += n.div_ceil(u64::from(self.mss)).max(1);
            if segments >= u64::from(DUP_THRESH)
                || bytes > u64::from(DUP_THRESH - 1) * u64::from(self.mss)
            {
                return r.start;
            }
        }
        self.snd_una
    }

    /// RFC 6675 §4 IsLost(seq): DupThresh discontiguous SACKed segments, or more than
    /// (DupThresh − 1)·SMSS SACKed bytes, lie above `seq`.
    pub fn is_lost(&self, seq: SeqNum) -> bool {
        seq >= self.snd_una && !self.is_sacked(seq) && seq < self.loss_boundary()
    }

    /// The unSACKed ranges in [SND.UNA, `high_data`), in order.
    fn holes(&self, high_data: SeqNum) -> impl Iterator<Item = SackBlock> + '_ {
        let mut from = self.snd_una;
        let mut ranges = self.sacked.iter();
        std::iter::from_fn(move || loop {
            if from >= high_data {
                return None;
            }
            match ranges.next() {
                Some(r) if r.start < high_data => {
                    let hole = block(from, r.start);
                    from = r.end;
                    if len(hole) > 0 {
                        return Some(hole);
                    }
                }
                _ => {
                    let hole = block(from, high_data);
                    from = high_data;
                    return Some(hole);
                }
            }
        })
    }

    /// RFC 6675 §4 SetPipe(): the bytes estimated in flight. Every unSACKed byte below
    /// `high_data` (SND.MAX) counts once unless it is lost, and once more if it was
    /// retransmitted (below HighRxt).
    pub fn pipe(&self, high_data: SeqNum) -> u32 {
        let lost_below = self.loss_boundary();
        let mut pipe = 0u64;
        for hole in self.holes(high_data) {
            let lost = block(hole.start, hole.end.min(lost_below));
            let retransmitted = block(hole.start, hole.end.min(self.high_rxt));
            pipe += u64::from(len(hole) - len(lost)) + u64::from(len(retransmitted));
        }
        // A retransmission found lost is no longer in flight.
        let lost_again: u64 = self
            .retransmitted
            .iter()
            .filter(|r| r.lost)
            .filter_map(|r| self.unsacked_part(r.range))
            .map(|hole| u64::from(len(block(hole.start, hole.end.min(self.high_rxt)))))
            .sum();
        let pipe = pipe.saturating_sub(lost_again);
        u32::try_from(pipe).unwrap_or(u32::MAX)
    }

    /// RFC 6675 §5 step (4.1): loss recovery starts. RecoveryPoint = HighData, HighRxt =
    /// HighACK, no rescue retransmission yet.
    pub fn enter_recovery(&mut self, high_data: SeqNum) {
        self.recovery_point = Some(high_data);
        self.high_rxt = self.snd_una;
        self.rescue_rxt = None;
        self.recovery_retransmissions = 0;
        self.recovery_dsacked = 0;
        for r in &mut self.retransmitted {
            r.in_recovery = false;
        }
    }

    /// RFC 6675 §5.1: an RTO ends SACK loss recovery; the scoreboard keeps being updated and
    /// used, so retransmissions after the timeout can skip what was SACKed. (RFC 2018 §8 would
    /// forget every SACK here for fear of reneging: [`SackScoreboard::clear`].)
    pub fn on_rto(&mut self) {
        self.recovery_point = None;
        self.high_rxt = self.snd_una;
    }

    /// Forgets all SACK information (RFC 2018 §8, or on detected reneging).
    pub fn clear(&mut self) {
        self.sacked.clear();
        self.sacked_bytes = 0;
    }

    /// RFC 6675 §4 NextSeg(). `high_data` is SND.MAX; `can_send_new_data` says whether unsent
    /// data exists and the peer's window admits it (rule 2).
    pub fn next_seg(&self, high_data: SeqNum, can_send_new_data: bool) -> Option<NextSeg> {
        let high_sacked = self.high_sacked();
        // Rules (1) and (3): the smallest unSACKed byte at or above HighRxt and below the
        // highest SACKed byte. IsLost falls as sequence numbers grow, so if that byte is not
        // lost no higher one is.
        let candidate = high_sacked.and_then(|high_sacked| {
            self.holes(high_data)
                .map(|hole| block(hole.start.max(self.high_rxt), hole.end.min(high_sacked)))
                .find(|hole| len(*hole) > 0)
        });
        let segment = |hole: SackBlock| NextSeg::Retransmit {
            start: hole.start,
            len: len(hole).min(self.mss),
        };
        if let Some(hole) = self.lost_retransmission() {
            return Some(segment(hole));
        }
        if let Some(hole) = candidate {
            if hole.start < self.loss_boundary() {
                return Some(segment(hole));
            }
        }
        if can_send_new_data {
            return Some(NextSeg::NewData);
        }
        if let Some(hole) = candidate {
            return Some(segment(hole));
        }
        // Rule (4): once per recovery (re-armed when HighACK passes RescueRxt), a segment ending
        // at the highest outstanding unSACKed byte.
        self.recovery_point?;
        if self.rescue_rxt.is_some_and(|rescue| self.snd_una <= rescue) {
            return None;
        }
        let last_hole = self.holes(high_data).last()?;
        let start = last_hole.start.max(last_hole.end - self.mss);
        Some(NextSeg::Rescue {
            start,
            len: last_hole.end - start,
        })
    }

    /// A segment [`start`, `start + len`) was retransmitted (RFC 6675 §5 step (C.3)) while
    /// `high_data` was SND.MAX: HighRxt moves up, except for the rescue retransmission, which
    /// sets RescueRxt = RecoveryPoint.
    pub fn on_retransmit(&mut self, start: SeqNum, len: u32, rescue: bool, high_data: SeqNum) {
        let end = start + len;
        // A lost retransmission sent again is tracked by its new entry.
        self.retransmitted
            .retain(|r| !(r.lost && overlaps(r.range, block(start, end))));
        if rescue {
            self.rescue_rxt = self.recovery_point.or(Some(end));
        } else if end > self.high_rxt {
            self.high_rxt = end;
        }
        if self.retransmitted.len() >= MAX_RETRANSMITTED {
            self.retransmitted.remove(0);
        }
        self.retransmitted.push(Retransmitted {
            range: block(start, end),
            dsacked: false,
            in_recovery: self.in_recovery(),
            sent_before: high_data,
            lost: false,
        });
        if self.in_recovery() {
            self.recovery_retransmissions += 1;
        }
    }

    /// SACKed bytes at or above `seq`.
    fn sacked_above(&self, seq: SeqNum) -> u32 {
        self.sacked
            .iter()
            .filter(|r| r.end > seq)
            .map(|r| r.end - r.start.max(seq))
            .sum()
    }

    /// The first part of `range` at or above SND.UNA that is not SACKed.
    fn unsacked_part(&self, range: SackBlock) -> Option<SackBlock> {
        let from = range.start.max(self.snd_una);
        self.holes(range.end)
            .map(|hole| block(hole.start.max(from), hole.end))
            .find(|hole| len(*hole) > 0)
    }

    /// A retransmission is lost when data first sent after it was SACKed: more than
    /// (DupThresh − 1)·SMSS above the HighData of its sending, the margin IsLost allows for
    /// reordering (the rule of Linux's tcp_mark_lost_retrans; RFC 6675 alone would wait for
    /// the RTO). Returns how many were found lost.
    fn detect_lost_retransmissions(&mut self) -> u32 {
        if self.recovery_point.is_none() {
            return 0;
        }
        let margin = (DUP_THRESH - 1) * self.mss;
        let Some(high_sacked) = self.high_sacked() else {
            return 0;
        };
        let mut found = 0;
        for i in 0..self.retransmitted.len() {
            let r = self.retransmitted[i];
            if r.lost
                || r.dsacked
                || !r.in_recovery
                || r.range.end <= self.snd_una
                || high_sacked <= r.sent_before + margin
            {
                continue;
            }
            if self.sacked_above(r.sent_before) > margin && self.unsacked_part(r.range).is_some() {
                self.retransmitted[i].lost = true;
                found += 1;
            }
        }
        found
    }

    /// The un-SACKed part of the lowest lost retransmission, to send again first.
    fn lost_retransmission(&self) -> Option<SackBlock> {
        self.retransmitted
            .iter()
            .filter(|r| r.lost)
            .filter_map(|r| self.unsacked_part(r.range))
            .min_by_key(|hole| hole.start.distance(self.snd_una))
    }

    /// RFC 3708 §3: a D-SACK for a retransmitted segment means the original arrived too.
    fn on_dsack(&mut self, dsack: SackBlock) -> bool {
        let mut spurious = false;
        for r in &mut self.retransmitted {
            if !r.dsacked && overlaps(r.range, dsack) {
                r.dsacked = true;
                spurious = true;
                if r.in_recovery {
                    self.recovery_dsacked += 1;
                }
            }
        }
        spurious
    }

    /// The scoreboard's own invariants, for the tests: bounded, sorted, disjoint and not
    /// touching ranges in [SND.UNA, `high_data`], and an exact byte count.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self, high_data: SeqNum) {
        assert!(self.sacked.len() <= MAX_SACKED_RANGES);
        let mut previous_end = self.snd_una;
        for (i, r) in self.sacked.iter().enumerate() {
            assert!(r.start < r.end, "empty range {r:?}");
            if i == 0 {
                assert!(r.start >= previous_end, "{r:?} below SND.UNA");
            } else {
                assert!(
                    r.start > previous_end,
                    "touching ranges in {:?}",
                    self.sacked
                );
            }
            assert!(r.end <= high_data, "{r:?} beyond {high_data:?}");
            previous_end = r.end;
        }
        assert_eq!(
            self.sacked_bytes,
            self.sacked.iter().map(|r| len(*r)).sum::<u32>()
        );
    }

    /// Every retransmission of the current (or just finished) recovery was D-SACKed: the
    /// recovery was spurious and congestion control may undo it (RFC 3708 §3, RFC 9438 §4.9).
    pub fn recovery_was_spurious(&self) -> bool {
        self.recovery_retransmissions > 0 && self.recovery_dsacked >= self.recovery_retransmissions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSS: u32 = 1000;
    /// Bases for every scenario: an ordinary one and one that crosses 2^32 mid-window.
    const BASES: [u32; 2] = [1_000_000, u32::MAX - 4_500];

    /// A block at offsets relative to `base`.
    fn rel(base: u32, start: u32, end: u32) -> SackBlock {
        block(SeqNum(base) + start, SeqNum(base) + end)
    }

    // ---- receiver ----

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

    // ---- sender ----

    /// Ten segments sent from `base`; the 1st and 5th lost, the others SACKed.
    fn two_holes(base: u32) -> (SackScoreboard, SeqNum) {
        let una = SeqNum(base);
        let mut sb = SackScoreboard::new(una, MSS);
        let high_data = una + 12_000u32;
        sb.on_ack(una, &[rel(base, 1000, 4000)], high_data);
        let update = sb.on_ack(
            una,
            &[rel(base, 5000, 10_000), rel(base, 1000, 4000)],
            high_data,
        );
        assert_eq!(update.newly_sacked, 5000);
        assert_eq!(update.delivered, 5000);
        (sb, high_data)
    }

    #[test]
    fn records_merges_and_validates_blocks() {
        for base in BASES {
            let una = SeqNum(base);
            let mut sb = SackScoreboard::new(una, MSS);
            let high_data = una + 10_000u32;
            let blocks = [
                rel(base, 3000, 4000),
                rel(base, 1000, 2000),
                // Touches the first: merged.
                rel(base, 4000, 5000),
                // Beyond what was sent: ignored.
                rel(base, 9000, 11_000),
                // Empty and inverted: ignored.
                rel(base, 6000, 6000),
                rel(base, 8000, 7000),
            ];
            let update = sb.on_ack(una, &blocks, high_data);
            assert_eq!(sb.sacked(), [rel(base, 1000, 2000), rel(base, 3000, 5000)]);
            assert_eq!(
                (update.newly_sacked, update.acked, update.dsack),
                (3000, 0, None)
            );
            // Overlapping everything: one range.
            sb.on_ack(una, &[rel(base, 500, 6000)], high_data);
            assert_eq!(sb.sacked(), [rel(base, 500, 6000)]);
            assert_eq!(sb.sacked_bytes(), 5500);
            // A later block partly below SND.UNA is cut to it.
            let update = sb.on_ack(
                una + 700u32,
                &[rel(base, 6500, 7000), rel(base, 0, 6200)],
                high_data,
            );
            assert_eq!(sb.sacked(), [rel(base, 700, 6200), rel(base, 6500, 7000)]);
            assert_eq!(update.acked, 700);
            // DeliveredData: 700 acked (200 of them SACKed before) + 700 newly SACKed.
            assert_eq!(update.delivered, 500 + 700);
            // The cumulative ACK passes the first range.
            let update = sb.on_ack(una + 6200u32, &[], high_data);
            assert_eq!(sb.sacked(), [rel(base, 6500, 7000)]);
            assert_eq!(
                update.delivered, 0,
                "those bytes were delivered when SACKed"
            );
            // An ACK outside [SND.UNA, HighData] changes nothing.
            assert_eq!(
                sb.on_ack(una, &[rel(base, 8000, 9000)], high_data),
                SackUpdate::default()
            );
            assert_eq!(sb.sacked(), [rel(base, 6500, 7000)]);
        }
    }

    #[test]
    fn is_lost_counts_segments_and_bytes_above() {
        for base in BASES {
            let (sb, _) = two_holes(base);
            let at = |off: u32| SeqNum(base) + off;
            assert!(sb.is_lost(at(0)));
            assert!(sb.is_lost(at(4000)) && sb.is_lost(at(4999)));
            assert!(!sb.is_lost(at(1500)), "SACKed");
            assert!(!sb.is_lost(at(10_000)), "nothing SACKed above");

            let una = SeqNum(base);
            let high_data = una + 20_000u32;
            // One range of exactly (DupThresh − 1)·SMSS bytes: not lost; one byte more: lost.
            let mut sb = SackScoreboard::new(una, MSS);
            sb.on_ack(una, &[rel(base, 1000, 3000)], high_data);
            assert!(!sb.is_lost(una));
            sb.on_ack(una, &[rel(base, 3000, 3001)], high_data);
            assert!(sb.is_lost(una));
            // Three discontiguous small segments: lost; two: not.
            let mut sb = SackScoreboard::new(una, MSS);
            sb.on_ack(
                una,
                &[rel(base, 1000, 1100), rel(base, 2000, 2100)],
                high_data,
            );
            assert!(!sb.is_lost(una));
            sb.on_ack(una, &[rel(base, 3000, 3100)], high_data);
            assert!(sb.is_lost(una));
            assert!(sb.is_lost(una + 999u32), "three segments above 999 too");
            assert!(!sb.is_lost(una + 1100u32), "only two above 1100");
        }
    }

    #[test]
    fn pipe_counts_unsacked_not_lost_and_retransmitted_bytes() {
        for base in BASES {
            let (mut sb, high_data) = two_holes(base);
            let at = |off: u32| SeqNum(base) + off;
            // Holes 0–1000 and 4000–5000 are lost; 10 000–12 000 is in flight.
            assert_eq!(sb.pipe(high_data), 2000);
            assert_eq!(sb.pipe(at(10_000)), 0);
            sb.enter_recovery(high_data);
            sb.on_retransmit(at(0), MSS, false, high_data);
            assert_eq!(
                sb.pipe(high_data),
                3000,
                "a retransmitted lost segment is in flight"
            );
            sb.on_retransmit(at(4000), MSS, false, high_data);
            assert_eq!(sb.pipe(high_data), 4000);
            // The first retransmission arrives: SND.UNA moves to the next SACKed range's end.
            sb.on_ack(at(4000), &[rel(base, 5000, 10_000)], high_data);
            assert_eq!(sb.pipe(high_data), 3000);
        }
    }

    #[test]
    fn next_seg_follows_rules_one_to_four() {
        for base in BASES {
            let (mut sb, high_data) = two_holes(base);
            let at = |off: u32| SeqNum(base) + off;
            sb.enter_recovery(high_data);
            // Rule (1): the first lost hole, even if new data could be sent.
            let first = sb.next_seg(high_data, true);
            assert_eq!(
                first,
                Some(NextSeg::Retransmit {
                    start: at(0),
                    len: MSS
                })
            );
            sb.on_retransmit(at(0), MSS, false, high_data);
            assert_eq!(
                sb.next_seg(high_data, true),
                Some(NextSeg::Retransmit {
                    start: at(4000),
                    len: MSS
                })
            );
            sb.on_retransmit(at(4000), MSS, false, high_data);
            // Rule (2): nothing lost above HighRxt, new data allowed.
            assert_eq!(sb.next_seg(high_data, true), Some(NextSeg::NewData));
            // Rule (4): no new data, nothing unSACKed between HighRxt and the highest SACK: the
            // rescue retransmission ends at the highest outstanding byte (12 000).
            let rescue = sb.next_seg(high_data, false);
            assert_eq!(
                rescue,
                Some(NextSeg::Rescue {
                    start: at(11_000),
                    len: MSS
                })
            );
            sb.on_retransmit(at(11_000), MSS, true, high_data);
            assert_eq!(
                sb.next_seg(high_data, false),
                None,
                "one rescue per recovery"
            );
            assert_eq!(sb.pipe(high_data), 4000, "HighRxt did not move");

            // Rule (3): an unSACKed hole below the highest SACK that is not (yet) lost.
            let una = SeqNum(base);
            let mut sb = SackScoreboard::new(una, MSS);
            sb.on_ack(una, &[rel(base, 2500, 3500)], high_data);
            sb.enter_recovery(high_data);
            assert!(!sb.is_lost(una));
            assert_eq!(sb.next_seg(high_data, true), Some(NextSeg::NewData));
            assert_eq!(
                sb.next_seg(high_data, false),
                Some(NextSeg::Retransmit {
                    start: una,
                    len: MSS
                })
            );
            sb.on_retransmit(una, MSS, false, high_data);
            assert_eq!(
                sb.next_seg(high_data, false),
                Some(NextSeg::Retransmit {
                    start: at(1000),
                    len: MSS
                })
            );
            sb.on_retransmit(at(1000), MSS, false, high_data);
            assert_eq!(
                sb.next_seg(high_data, false),
                Some(NextSeg::Retransmit {
                    start: at(2000),
                    len: 500
                }),
                "a short hole is one short segment"
            );
        }
    }

    #[test]
    fn recovery_ends_at_the_recovery_point_and_rescue_rearms() {
        let base = BASES[1];
        let (mut sb, high_data) = two_holes(base);
        let at = |off: u32| SeqNum(base) + off;
        sb.enter_recovery(high_data);
        assert!(sb.in_recovery());
        sb.on_ack(at(11_000), &[], high_data);
        assert!(sb.in_recovery());
        assert!(sb.sacked().is_empty());
        sb.on_ack(high_data, &[], high_data);
        assert!(!sb.in_recovery());
        // An RTO ends recovery but keeps the SACKs.
        let (mut sb, high_data) = two_holes(base);
        sb.enter_recovery(high_data);
        sb.on_rto();
        assert!(!sb.in_recovery());
        assert_eq!(sb.sacked_bytes(), 8000);
        sb.clear();
        assert_eq!(sb.sacked_bytes(), 0);
    }

    #[test]
    fn d_sack_reveals_spurious_retransmissions() {
        for base in BASES {
            let (mut sb, high_data) = two_holes(base);
            let at = |off: u32| SeqNum(base) + off;
            sb.enter_recovery(high_data);
            sb.on_retransmit(at(0), MSS, false, high_data);
            assert!(!sb.recovery_was_spurious());
            // The original arrives, then the retransmission: D-SACK below the ACK.
            let update = sb.on_ack(
                at(4000),
                &[rel(base, 0, 1000), rel(base, 5000, 10_000)],
                high_data,
            );
            assert_eq!(update.dsack, Some(rel(base, 0, 1000)));
            assert!(update.spurious_retransmission);
            assert!(sb.recovery_was_spurious());
            assert_eq!(sb.sacked(), [rel(base, 5000, 10_000)]);
            // A D-SACK inside the second block, for data never retransmitted.
            let update = sb.on_ack(
                at(4000),
                &[rel(base, 6000, 7000), rel(base, 5000, 10_000)],
                high_data,
            );
            assert_eq!(update.dsack, Some(rel(base, 6000, 7000)));
            assert!(!update.spurious_retransmission);
            assert_eq!(update.newly_sacked, 0);
            // A second retransmission not D-SACKed: the recovery was not all spurious.
            sb.on_retransmit(at(4000), MSS, false, high_data);
            assert!(!sb.recovery_was_spurious());
        }
    }

    #[test]
    fn a_first_block_starting_below_the_ack_is_a_d_sack_wherever_it_ends() {
        for base in BASES {
            let (mut sb, high_data) = two_holes(base);
            let at = |off: u32| SeqNum(base) + off;
            // A duplicate reported whole across the cumulative ACK: no new data SACKed.
            let dsack = rel(base, 3500, 4500);
            let update = sb.on_ack(at(4000), &[dsack, rel(base, 5000, 10_000)], high_data);
            assert_eq!(update.dsack, Some(dsack));
            // Delivered: only the hole 0–1000 the ACK covers.
            assert_eq!((update.newly_sacked, update.delivered), (0, 1000));
            assert_eq!(sb.sacked(), [rel(base, 5000, 10_000)]);
            // Starting at the ACK, it is an ordinary SACK block.
            let update = sb.on_ack(at(4000), &[rel(base, 4000, 4500)], high_data);
            assert_eq!(update.dsack, None);
            assert_eq!(update.newly_sacked, 500);
            // Past HighData it is neither.
            let beyond = block(at(3000), high_data + 1u32);
            let update = sb.on_ack(at(4000), &[beyond], high_data);
            assert_eq!((update.dsack, update.newly_sacked), (None, 0));
            assert_eq!(sb.sacked_bytes(), 5500);
        }
    }

    #[test]
    fn memory_is_bounded_whatever_the_peer_sends() {
        let una = SeqNum(u32::MAX - 100_000);
        let mut sb = SackScoreboard::new(una, MSS);
        let high_data = una + 1_000_000u32;
        for i in 0..1000u32 {
            let start = una + (i * 2 + 1) * 500;
            sb.on_ack(una, &[block(start, start + 500u32)], high_data);
            assert!(sb.sacked().len() <= MAX_SACKED_RANGES);
        }
        assert_eq!(sb.sacked().len(), MAX_SACKED_RANGES);
        for i in 0..2 * MAX_RETRANSMITTED as u32 {
            sb.on_retransmit(una + i * 10, 10, false, high_data);
        }
        assert_eq!(sb.retransmitted.len(), MAX_RETRANSMITTED);
    }

    fn assert_invariants(sb: &SackScoreboard, high_data: SeqNum) -> Result<(), TestCaseError> {
        sb.check_invariants(high_data);
        prop_assert!(sb.pipe(high_data) <= 2 * (high_data - sb.snd_una));
        match sb.next_seg(high_data, false) {
            Some(NextSeg::Retransmit { start, len }) | Some(NextSeg::Rescue { start, len }) => {
                prop_assert!(len > 0 && len <= MSS);
                prop_assert!(start >= sb.snd_una && start + len <= high_data);
                prop_assert!(!sb.is_sacked(start));
            }
            Some(NextSeg::NewData) => prop_assert!(false, "no new data was offered"),
            None => {}
        }
        Ok(())
    }

    #[derive(Clone, Debug)]
    enum Op {
        Ack(u32, Vec<(u32, u32)>),
        Garbage(Vec<(u32, u32)>),
        Retransmit(u32, u32, bool),
        EnterRecovery,
        Rto,
    }

    fn op() -> impl Strategy<Value = Op> {
        let offsets = prop::collection::vec((0u32..70_000, 0u32..70_000), 0..5);
        prop_oneof![
            (0u32..5000, offsets.clone()).prop_map(|(a, b)| Op::Ack(a, b)),
            prop::collection::vec((any::<u32>(), any::<u32>()), 0..5).prop_map(Op::Garbage),
            (0u32..70_000, 1u32..3000, any::<bool>()).prop_map(|(s, l, r)| Op::Retransmit(s, l, r)),
            Just(Op::EnterRecovery),
            Just(Op::Rto),
        ]
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn scoreboard_stays_consistent(base in any::<u32>(), ops in prop::collection::vec(op(), 1..100)) {
            let start = SeqNum(base);
            let high_data = start + 64_000u32;
            let mut sb = SackScoreboard::new(start, MSS);
            for op in ops {
                match op {
                    Op::Ack(advance, blocks) => {
                        let ack = (sb.snd_una + advance).min(high_data);
                        let blocks: Vec<SackBlock> = blocks
                            .into_iter()
                            .map(|(s, e)| block(start + s, start + e))
                            .collect();
                        let before = sb.sacked_bytes;
                        let update = sb.on_ack(ack, &blocks, high_data);
                        prop_assert!(update.delivered <= update.acked + update.newly_sacked);
                        prop_assert!(update.newly_sacked <= sb.sacked_bytes || before > 0);
                    }
                    Op::Garbage(blocks) => {
                        let blocks: Vec<SackBlock> =
                            blocks.into_iter().map(|(s, e)| block(SeqNum(s), SeqNum(e))).collect();
                        sb.on_ack(sb.snd_una, &blocks, high_data);
                    }
                    Op::Retransmit(s, l, rescue) => sb.on_retransmit(start + s, l, rescue, high_data),
                    Op::EnterRecovery => sb.enter_recovery(high_data),
                    Op::Rto => sb.on_rto(),
                }
                assert_invariants(&sb, high_data)?;
            }
        }

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
