//! Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation): the per-connection
//! counters of §3.1, the state each transmitted segment remembers (§3.2), the per-ACK sample
//! (§3.3) and application-limited detection (§3.4). Linux's tcp_rate.c does the same.

use std::time::{Duration, Instant};

/// One delivery-rate sample, produced by the connection on every ACK that newly acknowledges or
/// SACKs data or marks data lost (draft-cheng-iccrg-delivery-rate-estimation §3.3; Linux's
/// `struct rate_sample`). All byte counts are bytes, not segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSample {
    /// Bytes delivered (C.delivered − P.delivered) over `interval`.
    pub delivered: u64,
    /// max(send_elapsed, ack_elapsed); `None` when this ACK gives no valid sample (no newly
    /// delivered packet, or the interval is below the min RTT, as the draft discards).
    pub interval: Option<std::time::Duration>,
    /// P.delivered: C.delivered when the sampled packet was sent.
    pub prior_delivered: u64,
    /// C.delivered after this ACK (total bytes delivered over the connection's life).
    pub total_delivered: u64,
    /// The sampled packet was sent while the connection was application-limited.
    pub is_app_limited: bool,
    /// RTT of the most recently sent packet this ACK newly delivered, if it was never
    /// retransmitted (Karn).
    pub rtt: Option<std::time::Duration>,
    /// Bytes this ACK newly acknowledged cumulatively or SACKed.
    pub newly_acked: u32,
    /// Bytes this ACK newly marked lost (RACK or RFC 6675).
    pub newly_lost: u32,
    /// Bytes lost (C.lost − P.lost) since the sampled packet was sent (BBRv3's loss rate).
    pub lost: u64,
    /// Bytes in flight before this ACK was processed.
    pub prior_in_flight: u32,
    /// Bytes in flight when the sampled packet was sent (P.tx_in_flight).
    pub tx_in_flight: u32,
}

/// What a segment remembers of the connection's counters at its (latest) transmission (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxRateState {
    /// C.delivered at the transmission.
    pub delivered: u64,
    /// C.delivered_time at the transmission.
    pub delivered_time: Instant,
    /// C.first_sent_time at the transmission.
    pub first_sent_time: Instant,
    /// C.app_limited was set.
    pub is_app_limited: bool,
    /// Bytes in flight with this segment counted.
    pub tx_in_flight: u32,
    /// C.lost at the transmission.
    pub lost: u64,
}

/// The sample being built over one ACK, from the most recently sent segment it delivered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    prior_delivered: u64,
    prior_time: Instant,
    send_elapsed: Duration,
    is_app_limited: bool,
    tx_in_flight: u32,
    prior_lost: u64,
    rtt: Option<Duration>,
}

/// The connection's delivery-rate counters (§3.1) and the sample of the ACK in progress.
#[derive(Clone, Debug)]
pub(crate) struct RateEstimator {
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    lost: u64,
    /// C.app_limited: the C.delivered value beyond which the application-limited period ends,
    /// or 0 when not application-limited (§3.4).
    app_limited: u64,
    pending: Option<Pending>,
    newly_acked: u32,
    newly_lost: u32,
    prior_in_flight: u32,
}

impl RateEstimator {
    pub(crate) fn new(now: Instant) -> Self {
        RateEstimator {
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            lost: 0,
            app_limited: 0,
            pending: None,
            newly_acked: 0,
            newly_lost: 0,
            prior_in_flight: 0,
        }
    }

    pub(crate) fn is_app_limited(&self) -> bool {
        self.app_limited != 0
    }

    /// §3.2 OnPacketSent: `in_flight` is the flight before this segment, `len` its length.
    /// When nothing was in flight the send and ACK clocks restart here.
    pub(crate) fn on_send(&mut self, in_flight: u32, len: u32, now: Instant) -> TxRateState {
        if in_flight == 0 {
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        TxRateState {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            is_app_limited: self.is_app_limited(),
            tx_in_flight: in_flight.saturating_add(len),
            lost: self.lost,
        }
    }

    /// §3.4: the sender has nothing to send and the window is not full, so rate samples taken
    /// until what is in flight now is delivered may reflect the application, not the network.
    pub(crate) fn on_app_limited(&mut self, in_flight: u32) {
        self.app_limited = (self.delivered + u64::from(in_flight)).max(1);
    }

    /// An ACK starts being processed with `prior_in_flight` bytes in flight.
    pub(crate) fn begin_ack(&mut self, prior_in_flight: u32) {
        self.pending = None;
        self.newly_acked = 0;
        self.newly_lost = 0;
        self.prior_in_flight = prior_in_flight;
    }

    /// §3.3 UpdateRateSample: `len` bytes sent at `xmit_time` with `state` were delivered
    /// (cumulatively acknowledged or SACKed for the first time).
    pub(crate) fn on_delivered(
        &mut self,
        len: u32,
        state: &TxRateState,
        xmit_time: Instant,
        retransmitted: bool,
        now: Instant,
    ) {
        self.delivered += u64::from(len);
        self.delivered_time = now;
        self.newly_acked = self.newly_acked.saturating_add(len);
        // The most recently sent segment carries the freshest state: the one with the highest
        // P.delivered, and of those the latest sent.
        let newer = self.pending.is_none_or(|pending| {
            state.delivered > pending.prior_delivered
                || (state.delivered == pending.prior_delivered
                    && xmit_time.saturating_duration_since(state.first_sent_time)
                        > pending.send_elapsed)
        });
        if newer {
            self.pending = Some(Pending {
                prior_delivered: state.delivered,
                prior_time: state.delivered_time,
                send_elapsed: xmit_time.saturating_duration_since(state.first_sent_time),
                is_app_limited: state.is_app_limited,
                tx_in_flight: state.tx_in_flight,
                prior_lost: state.lost,
                rtt: (!retransmitted).then(|| now.saturating_duration_since(xmit_time)),
            });
            // The next interval's send phase starts where this segment's ended.
            self.first_sent_time = xmit_time;
        }
    }

    /// `len` bytes were newly marked lost.
    pub(crate) fn on_lost(&mut self, len: u32) {
        self.lost += u64::from(len);
        self.newly_lost = self.newly_lost.saturating_add(len);
    }

    /// §3.3 GenerateRateSample, at the end of an ACK: `None` when the ACK neither delivered nor
    /// marked lost anything. `min_rtt` discards intervals too short to be trusted.
    pub(crate) fn finish_ack(
        &mut self,
        min_rtt: Option<Duration>,
        now: Instant,
    ) -> Option<RateSample> {
        if self.newly_acked == 0 && self.newly_lost == 0 {
            return None;
        }
        // §3.4: the application-limited period ends once its data is delivered.
        if self.app_limited != 0 && self.delivered > self.app_limited {
            self.app_limited = 0;
        }
        let mut sample = RateSample {
            total_delivered: self.delivered,
            newly_acked: self.newly_acked,
            newly_lost: self.newly_lost,
            prior_in_flight: self.prior_in_flight,
            ..RateSample::default()
        };
        if let Some(pending) = self.pending.take() {
            let ack_elapsed = now.saturating_duration_since(pending.prior_time);
            let interval = pending.send_elapsed.max(ack_elapsed);
            sample.delivered = self.delivered - pending.prior_delivered;
            sample.prior_delivered = pending.prior_delivered;
            sample.is_app_limited = pending.is_app_limited;
            sample.rtt = pending.rtt;
            sample.lost = self.lost - pending.prior_lost;
            sample.tx_in_flight = pending.tx_in_flight;
            // An interval shorter than the min RTT comes from ACK compression or a stretched
            // send phase and would overestimate the rate (§3.3).
            let valid = !interval.is_zero() && min_rtt.is_none_or(|min_rtt| interval >= min_rtt);
            sample.interval = valid.then_some(interval);
        }
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends `count` back-to-back segments at `at`, returning their states.
    fn send(
        rate: &mut RateEstimator,
        in_flight: &mut u32,
        count: u32,
        at: Instant,
    ) -> Vec<TxRateState> {
        (0..count)
            .map(|_| {
                let state = rate.on_send(*in_flight, MSS, at);
                *in_flight += MSS;
                state
            })
            .collect()
    }

    #[test]
    fn a_window_per_round_trip_measures_the_window_over_the_rtt() {
        let start = Instant::now();
        let mut rate = RateEstimator::new(start);
        let mut in_flight = 0;
        let first = send(&mut rate, &mut in_flight, 10, start);
        // The first window is ACKed one segment at a time over the next 10 ms, 100 ms later;
        // each ACK sends a segment of the second window.
        let mut second = Vec::new();
        for (i, state) in first.iter().enumerate() {
            let now = start + ms(100) + ms(i as u64);
            rate.begin_ack(in_flight);
            rate.on_delivered(MSS, state, start, false, now);
            in_flight -= MSS;
            let sample = rate.finish_ack(Some(ms(100)), now).expect("a sample");
            assert_eq!(sample.newly_acked, MSS);
            assert_eq!(sample.rtt, Some(now - start));
            assert_eq!(sample.total_delivered, u64::from(MSS) * (i as u64 + 1));
            second.push(rate.on_send(in_flight, MSS, now));
            in_flight += MSS;
        }
        // The second window's ACKs arrive an RTT after each was sent: 10 segments per 100 ms.
        for (i, state) in second.iter().enumerate() {
            let sent = start + ms(100) + ms(i as u64);
            let now = sent + ms(100);
            rate.begin_ack(in_flight);
            rate.on_delivered(MSS, state, sent, false, now);
            in_flight -= MSS;
            let sample = rate.finish_ack(Some(ms(100)), now).expect("a sample");
            assert_eq!(sample.delivered, u64::from(10 * MSS));
            assert_eq!(sample.prior_delivered, u64::from(MSS) * (i as u64 + 1));
            // The send phase runs from the first window's transmission (all at `start`) to this
            // segment's, which is longer than the ACK phase of 100 ms.
            assert_eq!(sample.interval, Some(ms(100 + i as u64)));
            assert_eq!(sample.tx_in_flight, 10 * MSS);
        }
    }

    #[test]
    fn intervals_below_the_min_rtt_are_discarded() {
        let start = Instant::now();
        let mut rate = RateEstimator::new(start);
        let mut in_flight = 0;
        let states = send(&mut rate, &mut in_flight, 2, start);
        let now = start + ms(5);
        rate.begin_ack(in_flight);
        rate.on_delivered(MSS, &states[1], start, false, now);
        let sample = rate.finish_ack(Some(ms(10)), now).expect("a sample");
        assert_eq!(sample.interval, None);
        assert_eq!(sample.delivered, u64::from(MSS));
    }

    #[test]
    fn retransmitted_segments_give_no_rtt_and_losses_are_counted() {
        let start = Instant::now();
        let mut rate = RateEstimator::new(start);
        let mut in_flight = 0;
        let states = send(&mut rate, &mut in_flight, 3, start);
        let now = start + ms(50);
        rate.begin_ack(in_flight);
        rate.on_lost(MSS);
        let sample = rate.finish_ack(None, now).expect("a loss gives a sample");
        assert_eq!(
            (sample.newly_lost, sample.newly_acked, sample.interval),
            (MSS, 0, None)
        );
        rate.begin_ack(in_flight);
        rate.on_delivered(MSS, &states[2], now, true, now + ms(20));
        let sample = rate.finish_ack(None, now + ms(20)).expect("a sample");
        assert_eq!(sample.rtt, None);
        assert_eq!(sample.lost, u64::from(MSS));
        rate.begin_ack(in_flight);
        assert_eq!(
            rate.finish_ack(None, now),
            None,
            "nothing delivered or lost"
        );
    }

    #[test]
    fn app_limited_marks_samples_until_its_data_is_delivered() {
        let start = Instant::now();
        let mut rate = RateEstimator::new(start);
        let mut in_flight = 0;
        let states = send(&mut rate, &mut in_flight, 2, start);
        rate.on_app_limited(in_flight);
        let limited = send(&mut rate, &mut in_flight, 1, start + ms(1));
        assert!(!states[0].is_app_limited);
        assert!(limited[0].is_app_limited);
        for (i, (state, sent)) in [
            (states[0], start),
            (states[1], start),
            (limited[0], start + ms(1)),
        ]
        .iter()
        .enumerate()
        {
            let now = start + ms(100 + i as u64);
            rate.begin_ack(in_flight);
            rate.on_delivered(MSS, state, *sent, false, now);
            let sample = rate.finish_ack(None, now).expect("a sample");
            assert_eq!(sample.is_app_limited, i == 2);
        }
        // Three segments delivered, the marker was two: the period is over.
        assert!(!rate.is_app_limited());
    }
}
