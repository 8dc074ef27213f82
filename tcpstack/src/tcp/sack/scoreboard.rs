//! The sender's SACK scoreboard and the loss-recovery rules of RFC 6675: Update() on every ACK,
//! IsLost (§4), SetPipe (§4), NextSeg (§4 rules 1–4, the rescue retransmission), the recovery
//! point and the RTO (§5.1); D-SACKs of spurious retransmissions (RFC 2883, RFC 3708) and
//! Linux's lost-retransmission rule.

use super::{block, len, overlaps, within, DUP_THRESH};
use crate::wire::{SackBlock, SeqNum};

/// Most SACKed ranges the sender remembers. Forgetting one only makes the sender believe less
/// was received (a retransmission too many, never a byte lost), so what a peer sends cannot
/// make the scoreboard grow.
const MAX_SACKED_RANGES: usize = 128;
/// Most retransmitted ranges remembered to recognise D-SACKs of spurious retransmissions and
/// lost retransmissions.
const MAX_RETRANSMITTED: usize = 256;

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
mod tests;
