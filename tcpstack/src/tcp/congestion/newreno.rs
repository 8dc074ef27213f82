//! NewReno: slow start and congestion avoidance (RFC 5681), fast retransmit and fast recovery with
//! partial ACKs (RFC 6582).

use std::time::Instant;

use super::CongestionControl;

/// Initial window in segments (RFC 6928; Linux's TCP_INIT_CWND).
const INITIAL_WINDOW_SEGMENTS: u32 = 10;

#[derive(Clone, Debug)]
pub struct NewReno {
    mss: u32,
    cwnd: u32,
    ssthresh: u32,
    /// Bytes acknowledged in congestion avoidance since cwnd last grew (RFC 5681 §3.1, byte
    /// counting).
    bytes_acked: u32,
    /// In the slow start that follows an RTO, which counts 1·SMSS per ACK (RFC 3465 §2.3)
    /// instead of 2·SMSS (§2.2); it ends once cwnd reaches ssthresh or another loss begins.
    after_rto: bool,
}

impl NewReno {
    pub fn new(mss: u32) -> Self {
        let mss = mss.max(1);
        NewReno {
            mss,
            cwnd: INITIAL_WINDOW_SEGMENTS * mss,
            ssthresh: u32::MAX,
            bytes_acked: 0,
            after_rto: false,
        }
    }

    /// RFC 5681 equation 4: ssthresh = max(FlightSize / 2, 2·SMSS).
    fn halve(&self, flight: u32) -> u32 {
        (flight / 2).max(2 * self.mss)
    }
}

impl CongestionControl for NewReno {
    fn window(&self) -> u32 {
        self.cwnd
    }

    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    fn set_mss(&mut self, mss: u32) {
        let mss = mss.max(1);
        if self.cwnd == INITIAL_WINDOW_SEGMENTS * self.mss {
            self.cwnd = INITIAL_WINDOW_SEGMENTS * mss;
        }
        self.mss = mss;
    }

    fn on_ack(&mut self, acked: u32, _flight: u32, _now: Instant) {
        if self.cwnd < self.ssthresh {
            // Slow start, RFC 5681 equation 2 with RFC 3465's limit L.
            let limit = if self.after_rto {
                self.mss
            } else {
                2 * self.mss
            };
            self.cwnd = self.cwnd.saturating_add(acked.min(limit));
            if self.cwnd >= self.ssthresh {
                self.after_rto = false;
            }
        } else {
            // Congestion avoidance: one SMSS per window of acknowledged bytes (RFC 5681 §3.1).
            self.bytes_acked = self.bytes_acked.saturating_add(acked);
            if self.bytes_acked >= self.cwnd {
                self.bytes_acked -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(self.mss);
            }
        }
    }

    fn on_fast_retransmit(&mut self, flight: u32, _now: Instant) {
        self.after_rto = false;
        self.ssthresh = self.halve(flight);
        self.cwnd = self.ssthresh + 3 * self.mss;
        self.bytes_acked = 0;
    }

    fn on_recovery_exit(&mut self) {
        // RFC 6937 §3.1: PRR has brought the flight down to ssthresh; cwnd = ssthresh.
        self.cwnd = self.ssthresh;
        self.bytes_acked = 0;
    }

    fn on_idle_restart(&mut self) {
        self.cwnd = self.cwnd.min(INITIAL_WINDOW_SEGMENTS * self.mss);
    }

    fn on_rto(&mut self, flight: u32, _now: Instant) {
        self.ssthresh = self.halve(flight);
        // RFC 5681 equation 5: the loss window is one segment.
        self.cwnd = self.mss;
        self.bytes_acked = 0;
        self.after_rto = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    #[test]
    fn slow_start_then_congestion_avoidance() {
        let now = Instant::now();
        let mut cc = NewReno::new(MSS);
        assert_eq!(cc.window(), 10 * MSS);
        cc.on_ack(MSS, 0, now);
        assert_eq!(cc.window(), 11 * MSS);
        cc.on_ack(5 * MSS, 0, now);
        assert_eq!(
            cc.window(),
            13 * MSS,
            "slow start counts at most 2·SMSS per ACK"
        );
        cc.on_rto(20 * MSS, now);
        assert_eq!((cc.window(), cc.ssthresh()), (MSS, 10 * MSS));
        cc.on_ack(2 * MSS, 0, now);
        assert_eq!(
            cc.window(),
            2 * MSS,
            "after an RTO slow start counts 1·SMSS per ACK"
        );
        let mut ca = NewReno::new(MSS);
        ca.ssthresh = 4 * MSS;
        ca.cwnd = 4 * MSS;
        for _ in 0..3 {
            ca.on_ack(MSS, 0, now);
            assert_eq!(ca.window(), 4 * MSS);
        }
        ca.on_ack(MSS, 0, now);
        assert_eq!(ca.window(), 5 * MSS);
    }

    #[test]
    fn the_one_smss_limit_lasts_only_for_the_slow_start_after_the_rto() {
        let now = Instant::now();
        let mut cc = NewReno::new(MSS);
        cc.on_rto(40 * MSS, now);
        assert_eq!((cc.window(), cc.ssthresh()), (MSS, 20 * MSS));
        for _ in 0..19 {
            cc.on_ack(2 * MSS, 0, now);
        }
        assert_eq!(cc.window(), 20 * MSS, "1·SMSS per ACK up to ssthresh");
        for _ in 0..20 {
            cc.on_ack(2 * MSS, 0, now);
        }
        assert_eq!(cc.window(), 21 * MSS, "congestion avoidance");
        // A later slow start (after idle, RFC 5681 §4.1) counts 2·SMSS per ACK again.
        cc.on_idle_restart();
        assert_eq!(cc.window(), 10 * MSS);
        cc.on_ack(2 * MSS, 0, now);
        assert_eq!(cc.window(), 12 * MSS);

        // A loss episode before ssthresh is reached ends that slow start too.
        let mut cc = NewReno::new(MSS);
        cc.on_rto(40 * MSS, now);
        cc.on_ack(MSS, 0, now);
        cc.on_fast_retransmit(30 * MSS, now);
        cc.on_recovery_exit();
        assert_eq!(cc.window(), 15 * MSS);
        cc.on_idle_restart();
        cc.on_ack(2 * MSS, 0, now);
        assert_eq!(cc.window(), 12 * MSS);
        // And another RTO starts another.
        cc.on_rto(40 * MSS, now);
        cc.on_ack(2 * MSS, 0, now);
        assert_eq!(cc.window(), 2 * MSS);
    }

    #[test]
    fn fast_recovery_reduces_then_exits_at_ssthresh() {
        let now = Instant::now();
        let mut cc = NewReno::new(MSS);
        cc.on_fast_retransmit(10 * MSS, now);
        assert_eq!((cc.ssthresh(), cc.window()), (5 * MSS, 8 * MSS));
        cc.on_recovery_exit();
        assert_eq!(cc.window(), 5 * MSS);
        cc.on_fast_retransmit(MSS, now);
        assert_eq!(cc.ssthresh(), 2 * MSS, "ssthresh is never below 2·SMSS");
    }

    #[test]
    fn idle_restart_caps_cwnd_at_the_initial_window() {
        let now = Instant::now();
        let mut cc = NewReno::new(MSS);
        for _ in 0..20 {
            cc.on_ack(2 * MSS, 0, now);
        }
        assert_eq!(cc.window(), 50 * MSS);
        cc.on_idle_restart();
        assert_eq!(cc.window(), 10 * MSS);
        cc.on_rto(0, now);
        cc.on_idle_restart();
        assert_eq!(cc.window(), MSS, "a smaller window stays");
    }
}
