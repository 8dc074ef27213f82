//! RACK-TLP (RFC 8985): time-based loss detection over the log of sent segments (§6) and the
//! tail loss probe (§7), as rules on plain state; the connection calls them on every ACK, on the
//! reordering timer and on the probe timer. Linux's tcp_recovery.c is the model.

use std::time::{Duration, Instant};

use super::sent::{SentLog, SentSegment};
use crate::wire::SeqNum;

/// Slack added to 2·SRTT so that a probe never races the ACK it waits for on a very short
/// path (Linux's TCP_TIMEOUT_MIN).
const PTO_SLACK: Duration = Duration::from_millis(2);
/// The PTO before any RTT sample (§7.2).
const PTO_WITHOUT_RTT: Duration = Duration::from_secs(1);
/// Recoveries a widened reordering window outlives (§6.2 step 4).
const REO_WND_PERSIST: u32 = 16;

/// RACK.xmit_ts/RACK.end_seq order: `t1, seq1` was sent after `t2, seq2` (§6.1, Linux's
/// tcp_rack_sent_after: a later time, or the same time and a higher sequence number).
fn sent_after(t1: Instant, seq1: SeqNum, t2: Instant, seq2: SeqNum) -> bool {
    t1 > t2 || (t1 == t2 && seq1 > seq2)
}

/// RACK's per-connection state (§5.2).
#[derive(Clone, Debug)]
pub(crate) struct Rack {
    /// RACK.xmit_ts and RACK.end_seq: the most recently sent segment delivered so far.
    xmit_ts: Option<Instant>,
    end_seq: SeqNum,
    /// RACK.rtt: the RTT of that segment's delivery.
    rtt: Duration,
    /// RACK.fack: the highest sequence number delivered.
    fack: SeqNum,
    min_rtt: Option<Duration>,
    reordering_seen: bool,
    reo_wnd_mult: u32,
    reo_wnd_persist: u32,
    dsack_round: Option<SeqNum>,
}

impl Rack {
    pub(crate) fn new(snd_una: SeqNum) -> Self {
        Rack {
            xmit_ts: None,
            end_seq: snd_una,
            rtt: Duration::ZERO,
            fack: snd_una,
            min_rtt: None,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: None,
        }
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    #[cfg(test)]
    pub(crate) fn reordering_seen(&self) -> bool {
        self.reordering_seen
    }

    /// §6.1 steps 2–3 for a segment newly acknowledged or SACKed.
    pub(crate) fn on_delivered(&mut self, segment: &SentSegment, now: Instant) {
        let rtt = now.saturating_duration_since(segment.xmit_time);
        if segment.retransmitted {
            // An ACK sooner than the min RTT after a retransmission acknowledges the original:
            // the retransmission's time says nothing.
            if self.min_rtt.is_some_and(|min_rtt| rtt < min_rtt) {
                return;
            }
        } else {
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |min_rtt| min_rtt.min(rtt)));
        }
        self.rtt = rtt;
        let newer = self.xmit_ts.is_none_or(|xmit_ts| {
            sent_after(segment.xmit_time, segment.end, xmit_ts, self.end_seq)
        });
        if newer {
            self.xmit_ts = Some(segment.xmit_time);
            self.end_seq = segment.end;
        }
        // Step 3: an original delivered below the highest delivered one arrived out of order.
        if segment.end > self.fack {
            self.fack = segment.end;
        } else if segment.end < self.fack && !segment.retransmitted {
            self.reordering_seen = true;
        }
    }

    /// §6.2 step 4, on every ACK: a D-SACK widens the reordering window by min_RTT/4, once per
    /// round trip.
    pub(crate) fn on_ack(&mut self, dsack: bool, snd_una: SeqNum, snd_nxt: SeqNum) {
        if self.dsack_round.is_some_and(|round| snd_una >= round) {
            self.dsack_round = None;
        }
        if dsack {
            self.reordering_seen = true;
            if self.dsack_round.is_none() {
                self.dsack_round = Some(snd_nxt);
                self.reo_wnd_mult = self.reo_wnd_mult.saturating_add(1);
                self.reo_wnd_persist = REO_WND_PERSIST;
            }
        }
    }

    /// §6.2 step 4: after 16 recoveries without D-SACK the window shrinks back.
    pub(crate) fn on_recovery_exit(&mut self) {
        if self.reo_wnd_persist > 0 {
            self.reo_wnd_persist -= 1;
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
            }
        }
    }

    /// RACK.reo_wnd (§6.2 step 4): zero while no reordering was seen and the sender is in
    /// recovery or DupThresh segments are SACKed (so RACK is at least as fast as RFC 6675),
    /// otherwise min(reo_wnd_mult · min_RTT/4, SRTT).
    pub(crate) fn reo_wnd(
        &self,
        in_recovery: bool,
        dupthresh_sacked: bool,
        srtt: Option<Duration>,
    ) -> Duration {
        if !self.reordering_seen && (in_recovery || dupthresh_sacked) {
            return Duration::ZERO;
        }
        let window = self.min_rtt.unwrap_or_default() / 4 * self.reo_wnd_mult;
        srtt.map_or(window, |srtt| window.min(srtt))
    }

    /// §6.2 step 5, RACK_detect_loss(): every outstanding segment sent before RACK.xmit_ts whose
    /// time (RACK.rtt + `reo_wnd` after its transmission) has come is marked lost and handed to
    /// `lost`. Returns when the reordering timer must fire for the others, if any wait.
    pub(crate) fn detect_loss(
        &self,
        log: &mut SentLog,
        reo_wnd: Duration,
        now: Instant,
        mut lost: impl FnMut(&SentSegment),
    ) -> Option<Instant> {
        let xmit_ts = self.xmit_ts?;
        let mut timeout: Option<Instant> = None;
        for index in 0..log.len() {
            let segment = *log.get_mut(index).expect("index within the log");
            let sent_before = sent_after(xmit_ts, self.end_seq, segment.xmit_time, segment.end);
            if !sent_before {
                // Originals go out in sequence order: one sent after RACK.xmit_ts means all
                // later ones (and their retransmissions) were too.
                if !segment.retransmitted {
                    break;
                }
                continue;
            }
            if segment.sacked || segment.lost {
                continue;
            }
            let deadline = segment.xmit_time + self.rtt + reo_wnd;
            if deadline <= now {
                log.mark_lost(index);
                lost(&segment);
            } else {
                timeout = Some(timeout.map_or(deadline, |t| t.max(deadline)));
            }
        }
        timeout
    }
}

/// The tail-loss-probe state (§7.3): the probe outstanding, if any.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tlp {
    /// TLP.end_seq: SND.NXT after the probe was sent.
    end_seq: Option<SeqNum>,
    /// TLP.is_retrans: the probe retransmitted the last segment.
    is_retrans: bool,
}

/// What an ACK says about the outstanding probe (§7.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlpVerdict {
    /// No probe, or nothing known yet.
    Pending,
    /// The probe (and, for a retransmission, the original) arrived: no loss.
    Delivered,
    /// The probe repaired a loss; congestion control must react to it.
    RepairedLoss,
}

impl Tlp {
    pub(crate) fn outstanding(&self) -> bool {
        self.end_seq.is_some()
    }

    pub(crate) fn on_probe_sent(&mut self, snd_nxt: SeqNum, is_retrans: bool) {
        self.end_seq = Some(snd_nxt);
        self.is_retrans = is_retrans;
    }

    /// An RTO or a recovery makes the probe moot.
    pub(crate) fn clear(&mut self) {
        self.end_seq = None;
    }

    /// §7.4.2 TLP_process_ack(). `dsack_end` is the end of the ACK's D-SACK block, if any;
    /// `plain_duplicate` says the ACK is a duplicate without SACK blocks.
    pub(crate) fn on_ack(
        &mut self,
        ack: SeqNum,
        dsack_end: Option<SeqNum>,
        plain_duplicate: bool,
    ) -> TlpVerdict {
        let Some(end_seq) = self.end_seq else {
            return TlpVerdict::Pending;
        };
        if ack < end_seq {
            return TlpVerdict::Pending;
        }
        let verdict = if !self.is_retrans || dsack_end == Some(end_seq) {
            TlpVerdict::Delivered
        } else if ack > end_seq {
            TlpVerdict::RepairedLoss
        } else if plain_duplicate {
            TlpVerdict::Delivered
        } else {
            return TlpVerdict::Pending;
        };
        self.end_seq = None;
        verdict
    }
}

/// §7.2 calc_PTO(): 2·SRTT, plus the peer's `max_ack_delay` (RFC 8985's WCDelAckT) when only
/// one segment is in flight (its ACK may be delayed) and otherwise a 2 ms slack as Linux, 1 s
/// before any RTT sample; never later than the RTO would fire.
pub(crate) fn probe_timeout(
    srtt: Option<Duration>,
    one_segment_in_flight: bool,
    max_ack_delay: Duration,
    rto_remaining: Duration,
) -> Duration {
    let pto = match srtt {
        Some(srtt) if one_segment_in_flight => srtt * 2 + max_ack_delay,
        Some(srtt) => srtt * 2 + PTO_SLACK,
        None => PTO_WITHOUT_RTT,
    };
    pto.min(rto_remaining)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::rate::RateEstimator;

    const MSS: u32 = 1000;
    const BASE: u32 = u32::MAX - 2_500;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn seq(offset: u32) -> SeqNum {
        SeqNum(BASE) + offset
    }

    /// `count` segments, segment i sent at `start + i ms`.
    fn log_of(count: u32, start: Instant) -> SentLog {
        let mut log = SentLog::new();
        for i in 0..count {
            let at = start + ms(u64::from(i));
            let rate = RateEstimator::new(at).on_send(0, MSS, at);
            log.on_transmit(seq(i * MSS), seq((i + 1) * MSS), rate, at);
        }
        log
    }

    fn sack(log: &mut SentLog, rack: &mut Rack, from: u32, to: u32, now: Instant) {
        let block = crate::wire::SackBlock {
            start: seq(from),
            end: seq(to),
        };
        log.on_sack(block, |s| rack.on_delivered(s, now));
    }

    #[test]
    fn segments_sent_before_a_delivered_one_are_lost_after_rtt_and_window() {
        let start = Instant::now();
        let mut log = log_of(5, start);
        let mut rack = Rack::new(seq(0));
        // Segment 3 (sent at +3 ms) is SACKed at +103 ms: RACK.rtt = 100 ms.
        let now = start + ms(103);
        sack(&mut log, &mut rack, 3000, 4000, now);
        assert_eq!(rack.min_rtt(), Some(ms(100)));
        let reo_wnd = rack.reo_wnd(false, false, Some(ms(100)));
        assert_eq!(reo_wnd, ms(25), "min_RTT / 4");
        let mut lost = Vec::new();
        // Segments 0–2 were sent at +0..+2 ms: lost at +125..+127 ms. Segment 4 came after.
        let timer = rack.detect_loss(&mut log, reo_wnd, now, |s| lost.push(s.start));
        assert!(lost.is_empty());
        assert_eq!(timer, Some(start + ms(127)));
        let timer = rack.detect_loss(&mut log, reo_wnd, start + ms(126), |s| lost.push(s.start));
        assert_eq!(lost, [seq(0), seq(1000)]);
        assert_eq!(timer, Some(start + ms(127)));
        let timer = rack.detect_loss(&mut log, reo_wnd, start + ms(127), |s| lost.push(s.start));
        assert_eq!(lost, [seq(0), seq(1000), seq(2000)]);
        assert_eq!(timer, None);
        assert_eq!(log.lost_bytes(), 3 * MSS);
        log.check_invariants();
    }

    #[test]
    fn without_reordering_the_window_closes_in_recovery_or_at_dupthresh() {
        let mut rack = Rack::new(seq(0));
        rack.min_rtt = Some(ms(40));
        assert_eq!(rack.reo_wnd(false, false, Some(ms(50))), ms(10));
        assert_eq!(rack.reo_wnd(true, false, Some(ms(50))), Duration::ZERO);
        assert_eq!(rack.reo_wnd(false, true, Some(ms(50))), Duration::ZERO);
        rack.reordering_seen = true;
        assert_eq!(rack.reo_wnd(true, true, Some(ms(50))), ms(10));
        // Bounded by SRTT.
        assert_eq!(rack.reo_wnd(true, true, Some(ms(5))), ms(5));
    }

    #[test]
    fn an_original_delivered_below_fack_is_reordering() {
        let start = Instant::now();
        let mut log = log_of(4, start);
        let mut rack = Rack::new(seq(0));
        sack(&mut log, &mut rack, 2000, 3000, start + ms(50));
        assert!(!rack.reordering_seen());
        sack(&mut log, &mut rack, 1000, 2000, start + ms(51));
        assert!(rack.reordering_seen());
    }

    #[test]
    fn a_retransmission_is_lost_when_later_data_arrives_an_rtt_after_it() {
        let start = Instant::now();
        let mut log = log_of(4, start);
        let mut rack = Rack::new(seq(0));
        sack(&mut log, &mut rack, 1000, 2000, start + ms(100));
        let mut lost = 0;
        rack.detect_loss(&mut log, Duration::ZERO, start + ms(100), |_| lost += 1);
        assert_eq!(lost, 1, "segment 0 sent before segment 1");
        // Segment 0 is retransmitted at +100 ms, then segments 2 and 3 (sent at +2, +3 ms)
        // arrive: they were sent before the retransmission, which is not lost yet.
        let at = start + ms(100);
        let rate = RateEstimator::new(at).on_send(0, MSS, at);
        log.on_transmit(seq(0), seq(1000), rate, at);
        sack(&mut log, &mut rack, 2000, 4000, start + ms(103));
        rack.detect_loss(&mut log, Duration::ZERO, start + ms(103), |_| lost += 1);
        assert_eq!(lost, 1);
        // New data sent at +110 ms and SACKed at +210 ms: the retransmission sent at +100 ms
        // is lost again once its RTT has passed.
        let at = start + ms(110);
        let rate = RateEstimator::new(at).on_send(0, MSS, at);
        log.on_transmit(seq(4000), seq(5000), rate, at);
        sack(&mut log, &mut rack, 4000, 5000, start + ms(210));
        let mut again = Vec::new();
        rack.detect_loss(&mut log, Duration::ZERO, start + ms(210), |s| {
            again.push((s.start, s.retransmitted))
        });
        assert_eq!(again, [(seq(0), true)]);
    }

    #[test]
    fn an_early_ack_of_a_retransmission_does_not_move_rack() {
        let start = Instant::now();
        let mut log = log_of(2, start);
        let mut rack = Rack::new(seq(0));
        sack(&mut log, &mut rack, 1000, 2000, start + ms(101));
        let at = start + ms(150);
        let rate = RateEstimator::new(at).on_send(0, MSS, at);
        log.on_transmit(seq(0), seq(1000), rate, at);
        // 10 ms after the retransmission, below min_RTT: the original was acknowledged.
        log.on_cumulative_ack(seq(1000), |s| rack.on_delivered(s, start + ms(160)));
        assert_eq!(rack.xmit_ts, Some(start + ms(1)));
        assert_eq!(rack.rtt, ms(100));
    }

    #[test]
    fn d_sacks_widen_the_window_once_per_round_and_persist_sixteen_recoveries() {
        let mut rack = Rack::new(seq(0));
        rack.min_rtt = Some(ms(40));
        rack.on_ack(true, seq(0), seq(10_000));
        rack.on_ack(true, seq(5_000), seq(12_000));
        assert_eq!(
            rack.reo_wnd(true, true, None),
            ms(20),
            "one round, one step"
        );
        rack.on_ack(true, seq(10_000), seq(20_000));
        assert_eq!(rack.reo_wnd(true, true, None), ms(30));
        for _ in 0..15 {
            rack.on_recovery_exit();
        }
        assert_eq!(rack.reo_wnd(true, true, None), ms(30));
        rack.on_recovery_exit();
        assert_eq!(rack.reo_wnd(true, true, None), ms(10));
    }

    #[test]
    fn probe_timeout_is_two_srtt_plus_the_ack_delay_for_one_segment() {
        let rto = Duration::from_secs(1);
        let delack = ms(40);
        assert_eq!(probe_timeout(Some(ms(10)), false, delack, rto), ms(22));
        assert_eq!(probe_timeout(Some(ms(10)), true, delack, rto), ms(60));
        assert_eq!(
            probe_timeout(None, false, delack, rto),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_timeout(Some(ms(300)), false, delack, ms(400)),
            ms(400),
            "capped by the RTO"
        );
    }

    #[test]
    fn probe_outcomes_follow_section_7_4() {
        let mut tlp = Tlp::default();
        assert_eq!(tlp.on_ack(seq(0), None, false), TlpVerdict::Pending);
        tlp.on_probe_sent(seq(5000), false);
        assert_eq!(tlp.on_ack(seq(4000), None, false), TlpVerdict::Pending);
        assert_eq!(tlp.on_ack(seq(5000), None, false), TlpVerdict::Delivered);
        assert!(!tlp.outstanding());
        tlp.on_probe_sent(seq(5000), true);
        assert_eq!(
            tlp.on_ack(seq(5000), Some(seq(5000)), false),
            TlpVerdict::Delivered
        );
        tlp.on_probe_sent(seq(5000), true);
        assert_eq!(tlp.on_ack(seq(5000), None, false), TlpVerdict::Pending);
        assert_eq!(tlp.on_ack(seq(6000), None, false), TlpVerdict::RepairedLoss);
        tlp.on_probe_sent(seq(5000), true);
        assert_eq!(tlp.on_ack(seq(5000), None, true), TlpVerdict::Delivered);
    }
}
