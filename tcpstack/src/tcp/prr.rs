//! Proportional Rate Reduction (RFC 6937): how much to send on each ACK during fast recovery, so
//! that the flight shrinks smoothly to ssthresh instead of stopping for half a round trip (RFC
//! 5681) or bursting (RFC 6675 alone). All quantities are in bytes.
//!
//! The connection creates a [`Prr`] when it enters recovery, calls [`Prr::on_ack`] for every ACK
//! during recovery and [`Prr::on_sent`] for every segment it (re)transmits, and sets
//! cwnd = ssthresh when recovery ends (RFC 6937 §3.1).

/// The bound on sending when pipe is below ssthresh (RFC 6937 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReductionBound {
    /// PRR-CRB: never send more than was delivered (strict packet conservation).
    Conservative,
    /// PRR-SSRB, the RFC's default: one extra segment per ACK, like slow start.
    #[default]
    SlowStart,
}

#[derive(Clone, Debug)]
pub struct Prr {
    ssthresh: u32,
    /// RecoverFS: the flight size (SND.NXT − SND.UNA) at the start of recovery.
    recover_fs: u32,
    /// Bytes delivered to the receiver since recovery started.
    prr_delivered: u128,
    /// Bytes sent since recovery started.
    prr_out: u128,
    bound: ReductionBound,
}

impl Prr {
    /// Recovery starts (RFC 6937 §3.1 initialisation): `ssthresh` as the congestion control just
    /// set it, `recover_fs` = SND.NXT − SND.UNA.
    pub fn new(ssthresh: u32, recover_fs: u32, bound: ReductionBound) -> Self {
        Prr {
            ssthresh,
            recover_fs: recover_fs.max(1),
            prr_delivered: 0,
            prr_out: 0,
            bound,
        }
    }

    pub fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    /// One ACK during recovery. `delivered` is DeliveredData: the bytes newly acknowledged
    /// cumulatively plus the bytes newly SACKed (minus those SACKed before and now cumulatively
    /// acknowledged); `pipe` the RFC 6675 estimate after the ACK's scoreboard update. Returns
    /// sndcnt, the bytes that may be sent now (cwnd = pipe + sndcnt).
    pub fn on_ack(&mut self, delivered: u32, pipe: u32, mss: u32) -> u32 {
        let mss = u128::from(mss.max(1));
        let delivered = u128::from(delivered);
        let pipe = u128::from(pipe);
        let ssthresh = u128::from(self.ssthresh);
        self.prr_delivered += delivered;
        let sndcnt = if pipe > ssthresh {
            // Proportional Rate Reduction: CEIL(prr_delivered · ssthresh / RecoverFS) − prr_out,
            // rounded up to whole segments as in the RFC's segment-based examples (and Linux),
            // so that the first ACK of recovery already allows the retransmission.
            let share = self.prr_delivered * ssthresh;
            let allowed = share.div_ceil(u128::from(self.recover_fs) * mss) * mss;
            allowed.saturating_sub(self.prr_out)
        } else {
            let not_yet_sent = self.prr_delivered.saturating_sub(self.prr_out);
            let limit = match self.bound {
                ReductionBound::Conservative => not_yet_sent,
                ReductionBound::SlowStart => not_yet_sent.max(delivered) + mss,
            };
            (ssthresh - pipe).min(limit)
        };
        u32::try_from(sndcnt).unwrap_or(u32::MAX)
    }

    /// Data (new or retransmitted) was sent during recovery: prr_out += bytes.
    pub fn on_sent(&mut self, bytes: u32) {
        self.prr_out += u128::from(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSS: u32 = 1000;

    /// RFC 6937 §5's example: 20 segments in flight, the first lost, every later one delivered
    /// and SACKed. Limited transmit sent two new segments on the first two duplicate ACKs, the
    /// third enters recovery with pipe = 22 − 3 SACKed − 1 lost = 18 segments. Returns the
    /// segments sent on ACKs 3 to 19 and the pipe at the end.
    fn single_loss(ssthresh_segments: u32) -> (Vec<u32>, u32) {
        let mut prr = Prr::new(ssthresh_segments * MSS, 20 * MSS, ReductionBound::default());
        let mut pipe = 18 * MSS;
        let mut sent = Vec::new();
        for ack in 3..=19 {
            if ack > 3 {
                pipe -= MSS;
            }
            let sndcnt = prr.on_ack(MSS, pipe, MSS);
            let segments = sndcnt / MSS;
            prr.on_sent(segments * MSS);
            pipe += segments * MSS;
            sent.push(segments);
        }
        (sent, pipe)
    }

    #[test]
    fn reno_single_loss_sends_one_segment_every_other_ack() {
        let (sent, pipe) = single_loss(10);
        // The retransmission on ACK 3, then new data on every second ACK, until pipe reached
        // ssthresh on ACK 19.
        assert_eq!(sent, [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0]);
        assert_eq!(sent.iter().sum::<u32>(), 8);
        assert_eq!(pipe, 10 * MSS, "recovery ends with pipe = ssthresh");
    }

    #[test]
    fn cubic_single_loss_sends_seven_in_ten_then_holds_pipe() {
        let (sent, pipe) = single_loss(14);
        // CEIL(delivered · 14 / 20) − prr_out while pipe > 14 (ACKs 3–16); on ACK 17 pipe is
        // 14 and PRR-SSRB sends only what keeps it there.
        assert_eq!(sent, [1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1]);
        assert_eq!(sent.iter().sum::<u32>(), 12);
        assert_eq!(pipe, 14 * MSS);
    }

    #[test]
    fn below_ssthresh_the_bounds_differ() {
        // Heavy losses: pipe (4 segments) is far below ssthresh (10 segments).
        let mut ssrb = Prr::new(10 * MSS, 20 * MSS, ReductionBound::SlowStart);
        let mut crb = Prr::new(10 * MSS, 20 * MSS, ReductionBound::Conservative);
        // SSRB: MAX(prr_delivered − prr_out, DeliveredData) + MSS = 2 segments.
        assert_eq!(ssrb.on_ack(MSS, 4 * MSS, MSS), 2 * MSS);
        // CRB: prr_delivered − prr_out = 1 segment.
        assert_eq!(crb.on_ack(MSS, 4 * MSS, MSS), MSS);
        ssrb.on_sent(2 * MSS);
        crb.on_sent(MSS);
        // SSRB keeps growing pipe by one segment per ACK; CRB only replaces what left.
        assert_eq!(ssrb.on_ack(MSS, 5 * MSS, MSS), 2 * MSS);
        assert_eq!(crb.on_ack(MSS, 4 * MSS, MSS), MSS);
        // Never beyond ssthresh − pipe.
        assert_eq!(ssrb.on_ack(3 * MSS, 9 * MSS, MSS), MSS);
        assert_eq!(ssrb.on_ack(MSS, 10 * MSS, MSS), 0);
    }

    #[test]
    fn proportional_part_rounds_up_to_whole_segments() {
        let mut prr = Prr::new(10 * MSS, 20 * MSS, ReductionBound::SlowStart);
        assert_eq!(
            prr.on_ack(100, 30 * MSS, MSS),
            MSS,
            "CEIL(100 · 10 / 20) = 50 bytes"
        );
        prr.on_sent(MSS);
        assert_eq!(
            prr.on_ack(1800, 30 * MSS, MSS),
            0,
            "950 bytes: still one segment"
        );
        assert_eq!(
            prr.on_ack(102, 30 * MSS, MSS),
            MSS,
            "1001 bytes: a second one"
        );
        // Byte granularity with an SMSS of one byte.
        let mut bytes = Prr::new(10, 20, ReductionBound::SlowStart);
        assert_eq!(bytes.on_ack(1, 30, 1), 1);
        bytes.on_sent(1);
        assert_eq!(bytes.on_ack(1, 30, 1), 0);
        // Sending more than allowed (e.g. a retransmission forced by the RFC 6675 rules) only
        // delays the next quota.
        bytes.on_sent(5);
        assert_eq!(bytes.on_ack(10, 30, 1), 0);
        assert_eq!(bytes.on_ack(4, 30, 1), 2);
    }

    /// The three pieces wired as the connection should: RFC 6675 recovery driven by the SACK
    /// scoreboard, sending amounts from PRR, CUBIC's β. 20 segments in flight, the first lost,
    /// limited transmit (RFC 3042) on the first two duplicate ACKs, across the 2^32 wrap.
    #[test]
    fn sack_recovery_with_prr_and_cubic_loses_one_segment_once() {
        use crate::tcp::congestion::{CongestionControl, Cubic};
        use crate::tcp::sack::{NextSeg, SackScoreboard};
        use crate::wire::{SackBlock, SeqNum};
        use std::time::Instant;

        let now = Instant::now();
        let una = SeqNum(u32::MAX - 7_500);
        let mut high_data = una + 20 * MSS;
        let mut cc = Cubic::new(MSS);
        let mut scoreboard = SackScoreboard::new(una, MSS);
        let mut prr: Option<Prr> = None;
        let mut retransmitted = Vec::new();
        let mut new_segments = 0;
        let mut pipe_at_end = 0;
        // The receiver got segments 1..k (the two sent by limited transmit last): each ACK
        // repeats SND.UNA with one growing block.
        for k in 1..22u32 {
            let sack = SackBlock {
                start: una + MSS,
                end: una + (k + 1) * MSS,
            };
            let update = scoreboard.on_ack(una, &[sack], high_data);
            if prr.is_none() {
                if scoreboard.is_lost(una) {
                    // RFC 6675 §5 step (4): enter recovery; PRR starts with RecoverFS.
                    cc.on_fast_retransmit(high_data - una, now);
                    scoreboard.enter_recovery(high_data);
                    prr = Some(Prr::new(
                        cc.ssthresh(),
                        high_data - una,
                        ReductionBound::SlowStart,
                    ));
                } else {
                    // RFC 3042: limited transmit.
                    high_data += MSS;
                    new_segments += 1;
                    continue;
                }
            }
            let Some(prr) = prr.as_mut() else {
                unreachable!()
            };
            let pipe = scoreboard.pipe(high_data);
            let mut budget = prr.on_ack(update.delivered, pipe, MSS);
            while budget >= MSS {
                match scoreboard.next_seg(high_data, true) {
                    Some(NextSeg::Retransmit { start, len }) => {
                        scoreboard.on_retransmit(start, len, false, high_data);
                        retransmitted.push((start, len));
                        prr.on_sent(len);
                        budget -= len;
                    }
                    Some(NextSeg::NewData) => {
                        high_data += MSS;
                        new_segments += 1;
                        prr.on_sent(MSS);
                        budget -= MSS;
                    }
                    Some(NextSeg::Rescue { .. }) | None => break,
                }
            }
            pipe_at_end = scoreboard.pipe(high_data);
        }
        assert_eq!(
            retransmitted,
            [(una, MSS)],
            "the lost segment, exactly once"
        );
        // ssthresh = 0.7 · 22 segments in flight at entry.
        assert_eq!(cc.ssthresh(), 15_400);
        assert!(
            pipe_at_end.abs_diff(cc.ssthresh()) < MSS,
            "pipe {pipe_at_end}"
        );
        // The retransmission arrives (before anything sent after it): the cumulative ACK
        // reaches the recovery point.
        let recovery_point = una + 22 * MSS;
        scoreboard.on_ack(recovery_point, &[], high_data);
        assert!(!scoreboard.in_recovery());
        cc.on_recovery_exit();
        // RFC 6937 ends with cwnd = ssthresh.
        assert_eq!(cc.window(), cc.ssthresh());
        assert_eq!(new_segments, 2 + (high_data - recovery_point) / MSS);
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        /// RFC 6937 §4: while pipe stays above ssthresh, a sender that sends exactly sndcnt has
        /// sent ssthresh bytes once RecoverFS bytes were delivered, and never more than the
        /// proportional share before.
        #[test]
        fn proportional_share_is_exact(
            ssthresh in 1u32..1_000_000,
            extra in 1u32..1_000_000,
            acks in prop::collection::vec(1u32..3000, 1..400),
        ) {
            let recover_fs = ssthresh + extra;
            let mut prr = Prr::new(ssthresh, recover_fs, ReductionBound::SlowStart);
            let mut delivered = 0u64;
            for ack in acks {
                let ack = ack.min(recover_fs - delivered as u32);
                if ack == 0 {
                    break;
                }
                delivered += u64::from(ack);
                let sndcnt = prr.on_ack(ack, u32::MAX, 1);
                prr.on_sent(sndcnt);
                let share = (delivered * u64::from(ssthresh)).div_ceil(u64::from(recover_fs));
                prop_assert_eq!(prr.prr_out, u128::from(share));
            }
            if delivered == u64::from(recover_fs) {
                prop_assert_eq!(prr.prr_out, u128::from(ssthresh));
            }
        }

        #[test]
        fn never_panics(
            ssthresh in any::<u32>(),
            recover_fs in any::<u32>(),
            mss in any::<u32>(),
            acks in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..100),
        ) {
            let mut prr = Prr::new(ssthresh, recover_fs, ReductionBound::SlowStart);
            for (delivered, pipe, sent) in acks {
                let sndcnt = prr.on_ack(delivered, pipe, mss);
                if pipe <= ssthresh {
                    prop_assert!(sndcnt <= ssthresh - pipe);
                }
                prr.on_sent(sent);
            }
        }
    }
}
