//! The log of transmitted segments that RACK (RFC 8985) and the delivery-rate estimator
//! (draft-cheng-iccrg-delivery-rate-estimation §3.2) read: per segment its sequence range, the
//! time of its latest transmission, whether it was ever retransmitted, SACKed or marked lost,
//! and the rate state it was sent with. Linux keeps the same per skb (`tcp_skb_cb`).
//!
//! A `VecDeque` ordered by sequence number: new data is pushed at the back, the cumulative ACK
//! pops the front, so in steady state nothing allocates. Ranges that a retransmission or a SACK
//! block cuts inside a segment are split (rare: both normally follow the segments as sent).

use std::collections::VecDeque;
use std::time::Instant;

use super::rate::TxRateState;
use crate::wire::{SackBlock, SeqNum};

/// One transmitted segment (SYN excluded; a FIN counts as its last sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SentSegment {
    pub start: SeqNum,
    pub end: SeqNum,
    /// The latest transmission.
    pub xmit_time: Instant,
    pub retransmitted: bool,
    pub sacked: bool,
    /// Marked lost since its latest transmission (no longer counted in flight).
    pub lost: bool,
    pub rate: TxRateState,
}

impl SentSegment {
    pub(crate) fn len(&self) -> u32 {
        self.end - self.start
    }
}

/// The outstanding segments, SND.UNA to SND.NXT, with running byte counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct SentLog {
    segments: VecDeque<SentSegment>,
    outstanding: u32,
    sacked: u32,
    lost: u32,
}

impl SentLog {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.segments.len()
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SentSegment> {
        self.segments.iter()
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut SentSegment> {
        self.segments.get_mut(index)
    }

    pub(crate) fn last(&self) -> Option<&SentSegment> {
        self.segments.back()
    }

    /// Bytes SACKed.
    pub(crate) fn sacked_bytes(&self) -> u32 {
        self.sacked
    }

    /// Bytes marked lost and not sent again.
    pub(crate) fn lost_bytes(&self) -> u32 {
        self.lost
    }

    /// Bytes in flight (RFC 8985's view, Linux's tcp_packets_in_flight): outstanding, neither
    /// SACKed nor marked lost since their latest transmission.
    pub(crate) fn in_flight(&self) -> u32 {
        self.outstanding - self.sacked - self.lost
    }

    /// [`start`, `end`) was transmitted at `now`: new data is appended, a retransmission
    /// updates the segments it covers.
    pub(crate) fn on_transmit(
        &mut self,
        start: SeqNum,
        end: SeqNum,
        rate: TxRateState,
        now: Instant,
    ) {
        if start >= end {
            return;
        }
        let log_end = self.segments.back().map(|s| s.end);
        let new_from = match log_end {
            Some(log_end) if start < log_end => {
                let first = self.split_at(start);
                let last = self.split_at(end.min(log_end));
                for index in first..last {
                    let segment = &mut self.segments[index];
                    segment.xmit_time = now;
                    segment.retransmitted = true;
                    segment.rate = rate;
                    if segment.lost {
                        segment.lost = false;
                        self.lost -= segment.len();
                    }
                }
                log_end
            }
            _ => start,
        };
        if end > new_from {
            self.segments.push_back(SentSegment {
                start: new_from,
                end,
                xmit_time: now,
                retransmitted: false,
                sacked: false,
                lost: false,
                rate,
            });
            self.outstanding += end - new_from;
        }
    }

    /// The cumulative ACK reached `ack`: the segments below it leave the log. `delivered` sees
    /// each fully acknowledged segment that was not SACKed before (SACKed ones were delivered
    /// then).
    pub(crate) fn on_cumulative_ack(
        &mut self,
        ack: SeqNum,
        mut delivered: impl FnMut(&SentSegment),
    ) {
        while let Some(front) = self.segments.front() {
            if front.end <= ack {
                let segment = self.segments.pop_front().expect("front exists");
                self.forget(&segment, segment.len());
                if !segment.sacked {
                    delivered(&segment);
                }
            } else {
                if front.start < ack {
                    // A partial acknowledgement trims the segment; it is delivered once whole.
                    let front = self.segments.front_mut().expect("front exists");
                    let trimmed = ack - front.start;
                    front.start = ack;
                    let front = *front;
                    self.forget(&front, trimmed);
                }
                break;
            }
        }
    }

    fn forget(&mut self, segment: &SentSegment, bytes: u32) {
        self.outstanding -= bytes;
        if segment.sacked {
            self.sacked -= bytes;
        } else if segment.lost {
            self.lost -= bytes;
        }
    }

    /// A SACK block (not a D-SACK): every segment within it not SACKed before is marked and
    /// seen by `delivered`.
    pub(crate) fn on_sack(&mut self, block: SackBlock, mut delivered: impl FnMut(&SentSegment)) {
        let (Some(front), Some(back)) = (self.segments.front(), self.segments.back()) else {
            return;
        };
        let start = block.start.max(front.start);
        let end = block.end.min(back.end);
        if start >= end {
            return;
        }
        let first = self.split_at(start);
        let last = self.split_at(end);
        for index in first..last {
            let segment = &mut self.segments[index];
            if segment.sacked {
                continue;
            }
            segment.sacked = true;
            let len = segment.len();
            if segment.lost {
                segment.lost = false;
                self.lost -= len;
            }
            self.sacked += len;
            delivered(&self.segments[index]);
        }
    }

    /// Marks the segment at `index` lost; returns its length if it was not already.
    pub(crate) fn mark_lost(&mut self, index: usize) -> u32 {
        let Some(segment) = self.segments.get_mut(index) else {
            return 0;
        };
        if segment.lost || segment.sacked {
            return 0;
        }
        segment.lost = true;
        let len = segment.len();
        self.lost += len;
        len
    }

    /// An RTO: everything not SACKed is lost (RFC 8985 §6.3, Linux's tcp_timeout_mark_lost).
    /// Returns the bytes newly marked.
    pub(crate) fn mark_all_lost(&mut self) -> u32 {
        (0..self.segments.len()).map(|i| self.mark_lost(i)).sum()
    }

    /// A spurious RTO was undone: nothing is lost after all (Linux's tcp_undo_cwnd_reduction
    /// with unmark_loss).
    pub(crate) fn clear_lost(&mut self) {
        if self.lost == 0 {
            return;
        }
        for segment in &mut self.segments {
            segment.lost = false;
        }
        self.lost = 0;
    }

    /// The lowest range marked lost and not yet sent again.
    pub(crate) fn first_lost(&self) -> Option<(SeqNum, SeqNum)> {
        if self.lost == 0 {
            return None;
        }
        self.segments
            .iter()
            .find(|s| s.lost)
            .map(|s| (s.start, s.end))
    }

    /// The index of the segment starting at `seq`, splitting the one that holds it; the log's
    /// length when `seq` lies at or beyond its end.
    fn split_at(&mut self, seq: SeqNum) -> usize {
        let index = self.segments.partition_point(|s| s.end <= seq);
        let Some(segment) = self.segments.get(index).copied() else {
            return index;
        };
        if segment.start >= seq {
            return index;
        }
        let mut tail = segment;
        tail.start = seq;
        self.segments[index].end = seq;
        self.segments.insert(index + 1, tail);
        index + 1
    }

    /// The log's own invariants, for the tests: ordered, contiguous, exact counts.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut previous: Option<SeqNum> = None;
        let (mut outstanding, mut sacked, mut lost) = (0, 0, 0);
        for s in &self.segments {
            assert!(s.start < s.end, "empty segment {s:?}");
            if let Some(previous) = previous {
                assert_eq!(previous, s.start, "gap or overlap in the log");
            }
            assert!(!(s.sacked && s.lost), "{s:?} both SACKed and lost");
            previous = Some(s.end);
            outstanding += s.len();
            sacked += if s.sacked { s.len() } else { 0 };
            lost += if s.lost { s.len() } else { 0 };
        }
        assert_eq!(
            (self.outstanding, self.sacked, self.lost),
            (outstanding, sacked, lost)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::rate::RateEstimator;
    use std::time::Duration;

    const MSS: u32 = 1000;
    const BASES: [u32; 2] = [1_000_000, u32::MAX - 4_500];

    fn sent(base: u32, count: u32, now: Instant) -> SentLog {
        let mut log = SentLog::new();
        let rate = RateEstimator::new(now).on_send(0, MSS, now);
        for i in 0..count {
            let start = SeqNum(base) + i * MSS;
            log.on_transmit(start, start + MSS, rate, now);
        }
        log.check_invariants();
        log
    }

    fn block(base: u32, from: u32, to: u32) -> SackBlock {
        SackBlock {
            start: SeqNum(base) + from,
            end: SeqNum(base) + to,
        }
    }

    #[test]
    fn cumulative_acks_pop_whole_segments_and_trim_partial_ones() {
        for base in BASES {
            let now = Instant::now();
            let mut log = sent(base, 5, now);
            assert_eq!(log.in_flight(), 5 * MSS);
            let mut seen = Vec::new();
            log.on_cumulative_ack(SeqNum(base) + 2500u32, |s| seen.push(s.start));
            assert_eq!(seen, [SeqNum(base), SeqNum(base) + MSS]);
            assert_eq!(log.len(), 3);
            assert_eq!(log.in_flight(), 2500);
            log.check_invariants();
            log.on_cumulative_ack(SeqNum(base) + 5 * MSS, |s| seen.push(s.start));
            assert!(log.is_empty());
            assert_eq!(seen.len(), 5, "the trimmed segment is delivered once whole");
            log.check_invariants();
        }
    }

    #[test]
    fn sacks_mark_once_and_split_at_their_edges() {
        for base in BASES {
            let now = Instant::now();
            let mut log = sent(base, 5, now);
            let mut seen = 0;
            log.on_sack(block(base, 1000, 3000), |_| seen += 1);
            log.on_sack(block(base, 1000, 3000), |_| seen += 1);
            assert_eq!(seen, 2);
            assert_eq!(log.sacked_bytes(), 2 * MSS);
            // A block ending inside a segment splits it.
            log.on_sack(block(base, 4000, 4500), |_| seen += 1);
            assert_eq!((seen, log.len(), log.sacked_bytes()), (3, 6, 2500));
            log.check_invariants();
            // The cumulative ACK over SACKed segments delivers only the others.
            let mut acked = 0;
            log.on_cumulative_ack(SeqNum(base) + 5000u32, |_| acked += 1);
            assert_eq!(acked, 3);
            assert_eq!(log.sacked_bytes(), 0);
            log.check_invariants();
        }
    }

    #[test]
    fn lost_segments_leave_the_flight_until_sent_again() {
        for base in BASES {
            let now = Instant::now();
            let mut log = sent(base, 4, now);
            assert_eq!(log.mark_lost(1), MSS);
            assert_eq!(log.mark_lost(1), 0, "marked once");
            assert_eq!(log.in_flight(), 3 * MSS);
            assert_eq!(
                log.first_lost(),
                Some((SeqNum(base) + MSS, SeqNum(base) + 2 * MSS))
            );
            let later = now + Duration::from_millis(10);
            let rate = RateEstimator::new(later).on_send(0, MSS, later);
            log.on_transmit(SeqNum(base) + MSS, SeqNum(base) + 2 * MSS, rate, later);
            assert_eq!(log.first_lost(), None);
            assert_eq!(log.in_flight(), 4 * MSS);
            let retransmitted: Vec<_> = log.iter().map(|s| s.retransmitted).collect();
            assert_eq!(retransmitted, [false, true, false, false]);
            assert_eq!(log.iter().nth(1).map(|s| s.xmit_time), Some(later));
            // An RTO marks everything but the SACKed.
            log.on_sack(block(base, 3000, 4000), |_| {});
            assert_eq!(log.mark_all_lost(), 3 * MSS);
            assert_eq!(log.in_flight(), 0);
            log.check_invariants();
            log.clear_lost();
            assert_eq!((log.lost_bytes(), log.in_flight()), (0, 3 * MSS));
            log.check_invariants();
        }
    }

    #[test]
    fn a_retransmission_cut_differently_splits_the_segments() {
        for base in BASES {
            let now = Instant::now();
            let mut log = sent(base, 3, now);
            let rate = RateEstimator::new(now).on_send(0, MSS, now);
            log.on_transmit(SeqNum(base) + 500u32, SeqNum(base) + 1500u32, rate, now);
            let ranges: Vec<_> = log
                .iter()
                .map(|s| (s.start - SeqNum(base), s.retransmitted))
                .collect();
            assert_eq!(
                ranges,
                [
                    (0, false),
                    (500, true),
                    (1000, true),
                    (1500, false),
                    (2000, false)
                ]
            );
            log.check_invariants();
        }
    }

    #[test]
    fn steady_state_reuses_its_storage() {
        let now = Instant::now();
        let rate = RateEstimator::new(now).on_send(0, MSS, now);
        let mut log = SentLog::new();
        let mut next = SeqNum(7);
        for _ in 0..64 {
            log.on_transmit(next, next + MSS, rate, now);
            next += MSS;
        }
        let mut steady = |log: &mut SentLog, rounds: usize| {
            for _ in 0..rounds {
                log.on_transmit(next, next + MSS, rate, now);
                next += MSS;
                log.on_cumulative_ack(next - 64 * MSS, |_| {});
            }
        };
        steady(&mut log, 100);
        let capacity = log.segments.capacity();
        steady(&mut log, 10_000);
        assert_eq!(log.len(), 64);
        assert_eq!(log.segments.capacity(), capacity);
        log.check_invariants();
    }
}
