//! The retransmission timer's estimator (RFC 6298).

use std::time::Duration;

/// Clock granularity G of RFC 6298 §2: our timers resolve to a millisecond.
pub(crate) const CLOCK_GRANULARITY: Duration = Duration::from_millis(1);

/// RTO after a SYN timed out and no RTT sample exists (RFC 6298 §5.7).
const RTO_AFTER_SYN_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    /// RFC 6298 §2.1: before any sample, RTO = the initial value (1 s).
    pub(crate) fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min, max),
            min,
            max,
        }
    }

    pub(crate) fn rto(&self) -> Duration {
        self.rto
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub(crate) fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// RFC 6298 §2.2 (first sample) and §2.3 (later samples), alpha = 1/8, beta = 1/4, K = 4.
    pub(crate) fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + delta / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        // §2.4: RTO below 1 s is rounded up to the minimum; Linux's (and our default) is 200 ms.
        self.rto = (srtt + CLOCK_GRANULARITY.max(self.rttvar * 4)).clamp(self.min, self.max);
    }

    /// RFC 6298 §5.5: double the RTO on expiry, bounded by the maximum (§2.5).
    pub(crate) fn backoff(&mut self) {
        self.rto = (self.rto * 2).min(self.max);
    }

    /// RFC 6298 §5.7: after a SYN timed out, data transmission starts with RTO = 3 s unless a
    /// sample has been taken.
    pub(crate) fn after_syn_timeout(&mut self) {
        if self.srtt.is_none() {
            self.rto = RTO_AFTER_SYN_TIMEOUT.clamp(self.min, self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn estimator() -> RttEstimator {
        RttEstimator::new(Duration::from_secs(1), ms(200), Duration::from_secs(120))
    }

    #[test]
    fn initial_rto_is_one_second() {
        assert_eq!(estimator().rto(), Duration::from_secs(1));
    }

    #[test]
    fn first_sample_sets_srtt_and_half_rttvar() {
        let mut rtt = estimator();
        rtt.sample(ms(100));
        assert_eq!(rtt.srtt(), Some(ms(100)));
        assert_eq!(rtt.rttvar(), ms(50));
        // 100 + 4 * 50 = 300 ms.
        assert_eq!(rtt.rto(), ms(300));
    }

    #[test]
    fn later_samples_follow_rfc6298_2_3() {
        let mut rtt = estimator();
        rtt.sample(ms(100));
        rtt.sample(ms(200));
        // RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5.
        assert_eq!(rtt.rttvar(), Duration::from_micros(62_500));
        assert_eq!(rtt.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(rtt.rto(), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn rto_is_clamped_to_min_and_max() {
        let mut rtt = estimator();
        rtt.sample(ms(10));
        assert_eq!(rtt.rto(), ms(200));
        let mut slow = estimator();
        slow.sample(Duration::from_secs(100));
        assert_eq!(slow.rto(), Duration::from_secs(120));
    }

    #[test]
    fn granularity_bounds_the_variance_term() {
        let mut rtt = estimator();
        rtt.min = Duration::ZERO;
        for _ in 0..100 {
            rtt.sample(ms(50));
        }
        assert_eq!(rtt.srtt(), Some(ms(50)));
        assert!(rtt.rttvar() < CLOCK_GRANULARITY / 4);
        assert_eq!(rtt.rto(), ms(50) + CLOCK_GRANULARITY);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut rtt = estimator();
        let mut expected = Duration::from_secs(1);
        for _ in 0..10 {
            rtt.backoff();
            expected = (expected * 2).min(Duration::from_secs(120));
            assert_eq!(rtt.rto(), expected);
        }
        assert_eq!(rtt.rto(), Duration::from_secs(120));
    }

    #[test]
    fn syn_timeout_raises_rto_to_three_seconds_without_a_sample() {
        let mut rtt = estimator();
        rtt.after_syn_timeout();
        assert_eq!(rtt.rto(), Duration::from_secs(3));
        let mut sampled = estimator();
        sampled.sample(ms(100));
        sampled.after_syn_timeout();
        assert_eq!(sampled.rto(), ms(300));
    }
}
