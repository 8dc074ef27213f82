//! CUBIC (RFC 9438) with HyStart++ (RFC 9406) for leaving the initial slow start.
//!
//! Windows are kept in bytes; the RFC's formulas are in segments, so C·(t−K)³ is scaled by SMSS.
//! During fast recovery the connection takes its sending quota from PRR (RFC 6937); `window()`
//! matters again after `on_recovery_exit`.

use std::time::{Duration, Instant};

use super::CongestionControl;

/// Initial window in segments (RFC 6928; Linux's TCP_INIT_CWND).
const INITIAL_WINDOW_SEGMENTS: u32 = 10;
/// The largest SMSS an IPv4 segment can carry; bigger values would overflow the window.
const MAX_MSS: u32 = 65_535;
/// RFC 9438 §5.1: C = 0.4 (segments per second³).
const C: f64 = 0.4;
/// RFC 9438 §4.6: β_cubic = 0.7.
const BETA: f64 = 0.7;
/// RFC 9438 §4.3, equation 5: α_cubic = 3·(1 − β)/(1 + β).
const ALPHA_RENO_FRIENDLY: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// A congestion-avoidance epoch (RFC 9438 §4.2): the curve W_cubic(t) = C·(t − K)³ + W_max
/// anchored at the start of the current congestion avoidance stage.
#[derive(Clone, Copy, Debug)]
struct Epoch {
    start: Instant,
    /// K in seconds (equation 2).
    k: f64,
    /// W_max in bytes, as used by this epoch's curve.
    w_max: f64,
    /// The Reno-friendly estimate W_est in bytes (§4.3, equation 4).
    w_est: f64,
}

/// The state a congestion event replaces, kept to undo a spurious one (RFC 9438 §4.9).
#[derive(Clone, Copy, Debug)]
struct Prior {
    cwnd: f64,
    cwnd_prior: f64,
    ssthresh: u32,
    w_max: Option<f64>,
    epoch: Option<Epoch>,
}

#[derive(Clone, Debug)]
pub struct Cubic {
    mss: u32,
    /// Kept fractional: per-ACK increments are often below one byte.
    cwnd: f64,
    ssthresh: u32,
    /// W_max in bytes (§4.2): the window just before the last reduction; `None` before the
    /// first one and after an RTO (§4.8), when the next epoch starts with K = 0.
    w_max: Option<f64>,
    /// cwnd_prior (§4.6): the window at the last congestion event.
    cwnd_prior: f64,
    epoch: Option<Epoch>,
    /// Smoothed RTT (RFC 6298 weights) for W_cubic(t + RTT) in §4.2.
    srtt: Option<Duration>,
    /// In the slow start that follows an RTO, which counts 1·SMSS per ACK (RFC 3465 §2.3); it
    /// ends once cwnd reaches ssthresh or another loss begins.
    after_rto: bool,
    fast_convergence: bool,
    hystart: HyStart,
    prior: Option<Prior>,
}

impl Cubic {
    pub fn new(mss: u32) -> Self {
        let mss = mss.clamp(1, MAX_MSS);
        let cwnd = f64::from(INITIAL_WINDOW_SEGMENTS * mss);
        Cubic {
            mss,
            cwnd,
            ssthresh: u32::MAX,
            w_max: None,
            cwnd_prior: cwnd,
            epoch: None,
            srtt: None,
            after_rto: false,
            fast_convergence: true,
            hystart: HyStart::new(),
            prior: None,
        }
    }

    /// Fast convergence (RFC 9438 §4.7) is on by default, as in Linux.
    pub fn with_fast_convergence(mut self, enabled: bool) -> Self {
        self.fast_convergence = enabled;
        self
    }

    fn smss(&self) -> f64 {
        f64::from(self.mss)
    }

    /// Equation 2, in bytes: K = ∛((W_max − cwnd_epoch) / C), or 0 when the epoch starts at or
    /// above W_max (after an RTO or a HyStart++ exit, §4.8 and §4.10).
    fn k(&self, w_max: f64, cwnd_epoch: f64) -> f64 {
        if w_max <= cwnd_epoch {
            return 0.0;
        }
        ((w_max - cwnd_epoch) / (C * self.smss())).cbrt()
    }

    /// Equation 1, in bytes: W_cubic(t) = C·(t − K)³ + W_max.
    fn w_cubic(&self, epoch: &Epoch, t: f64) -> f64 {
        let d = t - epoch.k;
        C * self.smss() * d * d * d + epoch.w_max
    }

    fn start_epoch(&mut self, now: Instant) -> Epoch {
        let cwnd_epoch = self.cwnd;
        let w_max = self.w_max.filter(|&w| w > cwnd_epoch).unwrap_or(cwnd_epoch);
        let epoch = Epoch {
            start: now,
            k: self.k(w_max, cwnd_epoch),
            w_max,
            w_est: cwnd_epoch,
        };
        self.epoch = Some(epoch);
        epoch
    }

    /// Congestion avoidance for one ACK of `acked` new bytes (§4.2–§4.5).
    fn congestion_avoidance(&mut self, acked: f64, now: Instant) {
        let mut epoch = match self.epoch {
            Some(epoch) => epoch,
            None => self.start_epoch(now),
        };
        let t = now.saturating_duration_since(epoch.start).as_secs_f64();
        let rtt = self.srtt.unwrap_or(Duration::ZERO).as_secs_f64();
        // §4.3: W_est grows like Reno with α_cubic, and like Reno itself (α = 1) once it reached
        // the window of the last congestion event.
        let alpha = if epoch.w_est >= self.cwnd_prior {
            1.0
        } else {
            ALPHA_RENO_FRIENDLY
        };
        let cwnd = self.cwnd.max(1.0);
        epoch.w_est += alpha * acked * self.smss() / cwnd;
        if self.w_cubic(&epoch, t) < epoch.w_est {
            // Reno-friendly region.
            self.cwnd = self.cwnd.max(epoch.w_est);
        } else {
            // §4.4 concave and §4.5 convex regions: aim at W_cubic one RTT ahead, never shrinking
            // and growing at most by half per RTT (slower than slow start).
            let target = self
                .w_cubic(&epoch, t + rtt)
                .clamp(self.cwnd, 1.5 * self.cwnd);
            self.cwnd += (target - self.cwnd) * acked / cwnd;
        }
        self.cwnd = self.cwnd.min(f64::from(u32::MAX));
        self.epoch = Some(epoch);
    }

    /// RFC 9438 §4.6 and §4.7: the multiplicative decrease shared by loss and timeout.
    fn reduce(&mut self, flight: u32) {
        self.prior = Some(Prior {
            cwnd: self.cwnd,
            cwnd_prior: self.cwnd_prior,
            ssthresh: self.ssthresh,
            w_max: self.w_max,
            epoch: self.epoch,
        });
        self.w_max = Some(match self.w_max {
            Some(w_max) if self.fast_convergence && self.cwnd < w_max => {
                self.cwnd * (1.0 + BETA) / 2.0
            }
            _ => self.cwnd,
        });
        self.cwnd_prior = self.cwnd;
        let two_segments = 2 * self.mss;
        // Rounded: 0.7 is not exact in binary, and 22000 · 0.7 must be 15400, not 15399.
        self.ssthresh = ((f64::from(flight) * BETA).round() as u32).max(two_segments);
        self.epoch = None;
        self.hystart.stop();
    }
}

impl CongestionControl for Cubic {
    fn window(&self) -> u32 {
        self.cwnd as u32
    }

    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    fn set_mss(&mut self, mss: u32) {
        let mss = mss.clamp(1, MAX_MSS);
        if self.cwnd == f64::from(INITIAL_WINDOW_SEGMENTS * self.mss) {
            self.cwnd = f64::from(INITIAL_WINDOW_SEGMENTS * mss);
            self.cwnd_prior = self.cwnd;
        }
        self.mss = mss;
    }

    fn on_ack(&mut self, acked: u32, flight: u32, now: Instant) {
        self.hystart.on_ack(acked, flight);
        if (self.cwnd as u32) < self.ssthresh {
            let l = if self.after_rto {
                self.mss
            } else {
                HYSTART_L_SEGMENTS * self.mss
            };
            let mut increase = f64::from(acked.min(l));
            if self.hystart.in_css() {
                increase /= CSS_GROWTH_DIVISOR;
            }
            self.cwnd = (self.cwnd + increase).min(f64::from(u32::MAX));
            if self.cwnd >= f64::from(self.ssthresh) {
                self.after_rto = false;
            }
            if self.hystart.css_done() {
                // RFC 9406 §4.2: CSS_ROUNDS rounds of CSS end slow start. W_max is undefined
                // here, so the first epoch starts with K = 0 at this window (RFC 9438 §4.10).
                self.ssthresh = self.cwnd as u32;
                self.cwnd_prior = self.cwnd;
                self.hystart.stop();
            }
        } else {
            self.congestion_avoidance(f64::from(acked), now);
        }
    }

    fn on_fast_retransmit(&mut self, flight: u32, _now: Instant) {
        self.after_rto = false;
        self.reduce(flight);
        // RFC 5681 §3.2 step 3: inflate by the three segments that left the network.
        self.cwnd = f64::from(self.ssthresh) + 3.0 * self.smss();
    }

    fn on_recovery_exit(&mut self) {
        // RFC 6937 §3.1: cwnd = ssthresh; the next ACK starts a new epoch from here.
        self.cwnd = f64::from(self.ssthresh);
        self.epoch = None;
    }

    fn on_rto(&mut self, flight: u32, _now: Instant) {
        // RFC 9438 §4.8: ssthresh as on loss, cwnd as RFC 5681 says; the first epoch after the
        // timeout has K = 0 and W_max = the window it starts with.
        self.reduce(flight);
        self.w_max = None;
        self.cwnd = self.smss();
        self.after_rto = true;
    }

    fn on_rtt_sample(&mut self, rtt: Duration, _now: Instant) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(srtt) => (srtt * 7 + rtt) / 8,
        });
        if self.ssthresh == u32::MAX {
            self.hystart.on_rtt_sample(rtt);
        }
    }

    fn on_idle_restart(&mut self) {
        // RFC 5681 §4.1's restart window; the next ACK starts a new epoch.
        let restart = f64::from(INITIAL_WINDOW_SEGMENTS * self.mss);
        if self.cwnd > restart {
            self.cwnd = restart;
            self.epoch = None;
        }
    }

    fn on_spurious_congestion(&mut self) {
        // RFC 9438 §4.9: restore what the congestion event changed.
        let Some(prior) = self.prior.take() else {
            return;
        };
        self.cwnd = self.cwnd.max(prior.cwnd);
        self.cwnd_prior = prior.cwnd_prior;
        self.ssthresh = prior.ssthresh;
        self.w_max = prior.w_max;
        self.epoch = prior.epoch;
        self.after_rto = false;
    }
}

/// RFC 9406 §4.3: L, the slow-start increase limit per ACK in segments for an unpaced sender.
const HYSTART_L_SEGMENTS: u32 = 8;
const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const MIN_RTT_DIVISOR: u32 = 8;
const N_RTT_SAMPLE: u32 = 8;
const CSS_GROWTH_DIVISOR: f64 = 4.0;
const CSS_ROUNDS: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    SlowStart,
    /// Conservative Slow Start, entered at this baseline RTT after `rounds` rounds.
    Css {
        baseline: Duration,
        rounds: u32,
    },
    /// Only the initial slow start uses HyStart++ (RFC 9406 §4.2).
    Off,
}

/// HyStart++ (RFC 9406 §4.2). A round ends when everything in flight at its start is
/// acknowledged: `to_window_end` counts the bytes still to be acknowledged up to that point
/// (windowEnd = SND.NXT at the round's start).
#[derive(Clone, Debug)]
struct HyStart {
    phase: Phase,
    to_window_end: u32,
    last_round_min_rtt: Option<Duration>,
    current_round_min_rtt: Option<Duration>,
    rtt_sample_count: u32,
}

impl HyStart {
    fn new() -> Self {
        HyStart {
            phase: Phase::SlowStart,
            to_window_end: 0,
            last_round_min_rtt: None,
            current_round_min_rtt: None,
            rtt_sample_count: 0,
        }
    }

    fn in_css(&self) -> bool {
        matches!(self.phase, Phase::Css { .. })
    }

    fn css_done(&self) -> bool {
        matches!(self.phase, Phase::Css { rounds, .. } if rounds >= CSS_ROUNDS)
    }

    fn stop(&mut self) {
        self.phase = Phase::Off;
    }

    /// `flight` is what was outstanding before this ACK, so after it SND.NXT − SND.UNA is
    /// `flight − acked`: the distance to the next round's windowEnd.
    fn on_ack(&mut self, acked: u32, flight: u32) {
        if self.phase == Phase::Off {
            return;
        }
        self.to_window_end = self.to_window_end.saturating_sub(acked);
        if self.to_window_end > 0 {
            return;
        }
        self.to_window_end = flight.saturating_sub(acked);
        self.last_round_min_rtt = self.current_round_min_rtt.take();
        self.rtt_sample_count = 0;
        if let Phase::Css { rounds, .. } = &mut self.phase {
            *rounds += 1;
        }
    }

    fn on_rtt_sample(&mut self, rtt: Duration) {
        if self.phase == Phase::Off {
            return;
        }
        let current = self.current_round_min_rtt.map_or(rtt, |min| min.min(rtt));
        self.current_round_min_rtt = Some(current);
        self.rtt_sample_count = self.rtt_sample_count.saturating_add(1);
        if self.rtt_sample_count < N_RTT_SAMPLE {
            return;
        }
        match self.phase {
            Phase::SlowStart => {
                let Some(last) = self.last_round_min_rtt else {
                    return;
                };
                let threshold = (last / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
                if current >= last + threshold {
                    self.phase = Phase::Css {
                        baseline: current,
                        rounds: 0,
                    };
                }
            }
            Phase::Css { baseline, .. } => {
                // The delay increase was spurious: back to slow start.
                if current < baseline {
                    self.phase = Phase::SlowStart;
                }
            }
            Phase::Off => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSS: u32 = 1000;
    const SEG: f64 = MSS as f64;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    /// A CUBIC that left slow start with a loss at `w_max` segments, recovered, and whose next
    /// ACK starts an epoch at 0.7·w_max.
    fn after_loss_at(w_max_segments: u32, now: Instant) -> Cubic {
        let mut cc = Cubic::new(MSS);
        cc.cwnd = f64::from(w_max_segments * MSS);
        cc.on_fast_retransmit(w_max_segments * MSS, now);
        cc.on_recovery_exit();
        cc
    }

    #[test]
    fn loss_reduces_by_beta_and_remembers_w_max() {
        let now = Instant::now();
        let mut cc = Cubic::new(MSS);
        cc.cwnd = 100.0 * SEG;
        cc.on_fast_retransmit(100 * MSS, now);
        assert_eq!(cc.ssthresh(), 70 * MSS);
        assert_eq!(cc.window(), 73 * MSS, "ssthresh plus three segments");
        assert_eq!(cc.w_max, Some(100.0 * SEG));
        cc.on_recovery_exit();
        assert_eq!(cc.window(), 70 * MSS);
        // ssthresh never falls below 2·SMSS.
        cc.on_fast_retransmit(MSS, now);
        assert_eq!(cc.ssthresh(), 2 * MSS);
    }

    #[test]
    fn k_and_w_cubic_at_fixed_points() {
        let now = Instant::now();
        let mut cc = after_loss_at(100, now);
        cc.on_ack(MSS, 70 * MSS, now);
        let epoch = cc.epoch.expect("the first ACK starts an epoch");
        // K = ∛((100 − 70) / 0.4) = ∛75 s.
        assert!(close(epoch.k, 75f64.cbrt(), 1e-12), "K = {}", epoch.k);
        assert!(close(epoch.k, 4.217_163_326_508_746, 1e-12));
        assert!(close(cc.w_cubic(&epoch, 0.0), 70.0 * SEG, 1e-6));
        assert!(close(cc.w_cubic(&epoch, epoch.k), 100.0 * SEG, 1e-9));
        // One second either side of K: W_max ∓ C segments.
        assert!(close(cc.w_cubic(&epoch, epoch.k + 1.0), 100.4 * SEG, 1e-6));
        assert!(close(cc.w_cubic(&epoch, epoch.k - 1.0), 99.6 * SEG, 1e-6));
        // t = K + 5: W_max + 0.4·125 = 150 segments.
        assert!(close(cc.w_cubic(&epoch, epoch.k + 5.0), 150.0 * SEG, 1e-6));
    }

    #[test]
    fn concave_growth_per_ack_follows_the_target_one_rtt_ahead() {
        let start = Instant::now();
        let mut cc = after_loss_at(100, start);
        let rtt = Duration::from_millis(100);
        cc.srtt = Some(rtt);
        cc.on_ack(MSS, 70 * MSS, start);
        let epoch = cc.epoch.expect("epoch");
        // t = 2 s: target = W_cubic(2.1) (below 1.5·cwnd), cwnd grows by (target − cwnd)/cwnd.
        let now = start + Duration::from_secs(2);
        let before = cc.cwnd;
        let target = cc.w_cubic(&epoch, 2.1);
        let w_est = epoch.w_est + ALPHA_RENO_FRIENDLY * SEG * SEG / before;
        assert!(target > before && target < 1.5 * before && w_est < cc.w_cubic(&epoch, 2.0));
        cc.on_ack(MSS, 70 * MSS, now);
        assert!(close(
            cc.cwnd,
            before + (target - before) * SEG / before,
            1e-9
        ));
        // Near K the curve is flat: cwnd hardly moves.
        let mut plateau = after_loss_at(100, start);
        plateau.srtt = Some(rtt);
        plateau.cwnd = 99.9 * SEG;
        plateau.on_ack(MSS, 70 * MSS, start);
        plateau.cwnd = 99.9 * SEG;
        let k = plateau.epoch.expect("epoch").k;
        plateau.on_ack(MSS, 99 * MSS, start + Duration::from_secs_f64(k - 0.1));
        assert!(plateau.cwnd - 99.9 * SEG < 2.0, "{}", plateau.cwnd);
    }

    #[test]
    fn convex_growth_is_capped_at_half_a_window_per_rtt() {
        let start = Instant::now();
        let mut cc = after_loss_at(100, start);
        cc.srtt = Some(Duration::from_millis(100));
        cc.on_ack(MSS, 70 * MSS, start);
        // At t = K + 20 s, W_cubic is far above 1.5·cwnd: the target is 1.5·cwnd.
        let k = cc.epoch.expect("epoch").k;
        let before = cc.cwnd;
        cc.on_ack(MSS, 70 * MSS, start + Duration::from_secs_f64(k + 20.0));
        assert!(close(cc.cwnd, before + 0.5 * before * SEG / before, 1e-9));
    }

    #[test]
    fn fast_convergence_lowers_w_max_when_the_window_shrank() {
        let now = Instant::now();
        let mut cc = Cubic::new(MSS);
        cc.cwnd = 100.0 * SEG;
        cc.on_fast_retransmit(100 * MSS, now);
        cc.cwnd = 80.0 * SEG;
        cc.on_fast_retransmit(80 * MSS, now);
        // W_max = 80·(1 + 0.7)/2 = 68 segments.
        assert!(close(cc.w_max.expect("w_max"), 68.0 * SEG, 1e-9));
        assert_eq!(cc.ssthresh(), 56 * MSS);
        let mut plain = Cubic::new(MSS).with_fast_convergence(false);
        plain.cwnd = 100.0 * SEG;
        plain.on_fast_retransmit(100 * MSS, now);
        plain.cwnd = 80.0 * SEG;
        plain.on_fast_retransmit(80 * MSS, now);
        assert_eq!(plain.w_max, Some(80.0 * SEG));
    }

    #[test]
    fn reno_friendly_region_dominates_at_small_rtt() {
        let start = Instant::now();
        let mut cc = after_loss_at(100, start);
        let rtt = Duration::from_millis(1);
        cc.srtt = Some(rtt);
        let mut now = start;
        // 50 round trips of 1 ms, each acknowledging a full window one segment at a time.
        for _ in 0..50 {
            let window = cc.window() / MSS;
            for _ in 0..window {
                cc.on_ack(MSS, window * MSS, now);
            }
            now += rtt;
        }
        let epoch = cc.epoch.expect("epoch");
        let t = now.duration_since(start).as_secs_f64();
        let w_cubic = cc.w_cubic(&epoch, t);
        assert!(
            w_cubic < 72.0 * SEG,
            "the cubic curve barely moved: {w_cubic}"
        );
        assert_eq!(cc.cwnd, epoch.w_est, "cwnd is W_est");
        // α_cubic ≈ 0.53 segments per RTT for 50 RTTs from 70 segments.
        let expected = 70.0 + 50.0 * ALPHA_RENO_FRIENDLY;
        assert!(
            close(cc.cwnd / SEG, expected, 1.0),
            "{} vs {expected}",
            cc.cwnd / SEG
        );
    }

    #[test]
    fn rto_resets_to_one_segment_and_starts_the_next_epoch_with_k_zero() {
        let start = Instant::now();
        let mut cc = Cubic::new(MSS);
        cc.cwnd = 100.0 * SEG;
        cc.on_rto(100 * MSS, start);
        assert_eq!((cc.window(), cc.ssthresh()), (MSS, 70 * MSS));
        cc.on_ack(4 * MSS, MSS, start);
        assert_eq!(cc.window(), 2 * MSS, "one SMSS per ACK after an RTO");
        cc.cwnd = 70.0 * SEG;
        cc.on_ack(MSS, 70 * MSS, start);
        let epoch = cc.epoch.expect("epoch");
        assert_eq!(epoch.k, 0.0);
        assert_eq!(epoch.w_max, 70.0 * SEG);
    }

    #[test]
    fn the_one_smss_limit_lasts_only_for_the_slow_start_after_the_rto() {
        let now = Instant::now();
        let mut cc = Cubic::new(MSS);
        cc.on_rto(40 * MSS, now);
        assert_eq!((cc.window(), cc.ssthresh()), (MSS, 28 * MSS));
        for _ in 0..27 {
            cc.on_ack(8 * MSS, MSS, now);
        }
        assert_eq!(cc.window(), 28 * MSS, "1·SMSS per ACK up to ssthresh");
        cc.on_ack(MSS, 28 * MSS, now);
        // A later slow start (after idle, RFC 5681 §4.1) counts up to L = 8·SMSS per ACK again
        // (RFC 9406 §4.3).
        cc.on_idle_restart();
        assert_eq!(cc.window(), 10 * MSS);
        cc.on_ack(8 * MSS, 10 * MSS, now);
        assert_eq!(cc.window(), 18 * MSS);

        // A loss episode before ssthresh is reached ends that slow start too.
        let mut cc = Cubic::new(MSS);
        cc.on_rto(40 * MSS, now);
        cc.on_ack(MSS, MSS, now);
        cc.on_fast_retransmit(30 * MSS, now);
        cc.on_recovery_exit();
        assert_eq!(cc.window(), 21 * MSS);
        cc.on_idle_restart();
        cc.on_ack(8 * MSS, 10 * MSS, now);
        assert_eq!(cc.window(), 18 * MSS);
        // And another RTO starts another.
        cc.on_rto(40 * MSS, now);
        cc.on_ack(8 * MSS, MSS, now);
        assert_eq!(cc.window(), 2 * MSS);
    }

    #[test]
    fn spurious_congestion_is_undone() {
        let now = Instant::now();
        let mut cc = Cubic::new(MSS);
        cc.cwnd = 100.0 * SEG;
        cc.ssthresh = 120 * MSS;
        cc.on_fast_retransmit(100 * MSS, now);
        cc.on_recovery_exit();
        cc.on_spurious_congestion();
        assert_eq!((cc.window(), cc.ssthresh()), (100 * MSS, 120 * MSS));
        assert_eq!(cc.w_max, None);
        cc.on_spurious_congestion();
        assert_eq!(cc.window(), 100 * MSS, "a second undo changes nothing");
    }

    /// A cwnd-limited sender counting in segments: every ACK acknowledges one segment and the
    /// sender then fills the window again.
    struct Sender {
        una: u32,
        nxt: u32,
    }

    impl Sender {
        fn new() -> Self {
            Sender {
                una: 0,
                nxt: INITIAL_WINDOW_SEGMENTS,
            }
        }

        /// Acknowledges the next segment, whose round trip took `rtt(segment)`.
        fn ack(&mut self, cc: &mut Cubic, rtt: impl Fn(u32) -> Duration) {
            let now = Instant::now();
            cc.on_rtt_sample(rtt(self.una), now);
            let flight = (self.nxt - self.una) * MSS;
            self.una += 1;
            cc.on_ack(MSS, flight, now);
            self.nxt = self.nxt.max(self.una + cc.window() / MSS);
        }
    }

    /// Acknowledges segments at a fixed RTT until a HyStart++ round ends.
    fn finish_round(cc: &mut Cubic, sender: &mut Sender, rtt_ms: u64) {
        loop {
            sender.ack(cc, |_| Duration::from_millis(rtt_ms));
            if cc.hystart.rtt_sample_count == 0 {
                return;
            }
        }
    }

    #[test]
    fn hystart_leaves_slow_start_on_an_rtt_increase_then_css_then_avoidance() {
        let mut cc = Cubic::new(MSS);
        let mut sender = Sender::new();
        for _ in 0..3 {
            finish_round(&mut cc, &mut sender, 40);
        }
        assert_eq!(
            cc.window(),
            (INITIAL_WINDOW_SEGMENTS + sender.una) * MSS,
            "standard slow start: one segment per segment acknowledged"
        );
        // RttThresh = clamp(40 ms / 8, 4 ms, 16 ms) = 5 ms: 45 ms is exactly enough.
        let rtt = |_| Duration::from_millis(45);
        for _ in 0..7 {
            sender.ack(&mut cc, rtt);
            assert!(!cc.hystart.in_css(), "fewer than N_RTT_SAMPLE samples");
        }
        sender.ack(&mut cc, rtt);
        assert!(cc.hystart.in_css(), "the 8th sample of the round exits");
        let before = cc.window();
        sender.ack(&mut cc, rtt);
        assert_eq!(cc.window(), before + MSS / 4, "CSS grows by a quarter");

        let mut spurious = cc.clone();
        let mut spurious_sender = Sender {
            una: sender.una,
            nxt: sender.nxt,
        };
        // CSS_ROUNDS rounds of CSS (the first is the one it started in), then congestion
        // avoidance with ssthresh = cwnd.
        let mut rounds = 0;
        while cc.ssthresh() == u32::MAX {
            finish_round(&mut cc, &mut sender, 45);
            rounds += 1;
        }
        assert_eq!(rounds, CSS_ROUNDS);
        assert_eq!(cc.ssthresh(), cc.window());
        assert_eq!(cc.hystart.phase, Phase::Off);

        // A round whose minimum RTT is below the baseline ends CSS: back to slow start.
        finish_round(&mut spurious, &mut spurious_sender, 45);
        for _ in 0..8 {
            spurious_sender.ack(&mut spurious, |_| Duration::from_millis(41));
        }
        assert_eq!(spurious.hystart.phase, Phase::SlowStart);
        let before = spurious.window();
        spurious_sender.ack(&mut spurious, |_| Duration::from_millis(41));
        assert_eq!(spurious.window(), before + MSS);
        assert_eq!(spurious.ssthresh(), u32::MAX);
    }

    #[test]
    fn hystart_needs_eight_samples_per_round() {
        let now = Instant::now();
        let mut cc = Cubic::new(MSS);
        let mut sender = Sender::new();
        while sender.una < 10 {
            sender.ack(&mut cc, |_| Duration::from_millis(10));
        }
        for _ in 0..7 {
            cc.on_rtt_sample(Duration::from_millis(100), now);
        }
        assert!(!cc.hystart.in_css());
        cc.on_rtt_sample(Duration::from_millis(100), now);
        assert!(cc.hystart.in_css());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Ack(u32, u32, u64),
        Rtt(u64),
        FastRetransmit(u32),
        RecoveryExit,
        Rto(u32),
        Undo,
        SetMss(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(a, f, t)| Op::Ack(a, f, t)),
            any::<u64>().prop_map(Op::Rtt),
            any::<u32>().prop_map(Op::FastRetransmit),
            Just(Op::RecoveryExit),
            any::<u32>().prop_map(Op::Rto),
            Just(Op::Undo),
            any::<u32>().prop_map(Op::SetMss),
        ]
    }

    proptest! {
        #![proptest_config(crate::test_support::proptest_config())]

        #[test]
        fn extreme_inputs_never_break_the_window(mss in any::<u32>(), ops in prop::collection::vec(op(), 1..200)) {
            let start = Instant::now();
            let mut cc = Cubic::new(mss);
            for op in ops {
                match op {
                    // Times up to ~30 years, in milliseconds.
                    Op::Ack(acked, flight, ms) => {
                        cc.on_ack(acked, flight, start + Duration::from_millis(ms % 1_000_000_000_000))
                    }
                    Op::Rtt(us) => cc.on_rtt_sample(Duration::from_micros(us), start),
                    Op::FastRetransmit(flight) => cc.on_fast_retransmit(flight, start),
                    Op::RecoveryExit => cc.on_recovery_exit(),
                    Op::Rto(flight) => cc.on_rto(flight, start),
                    Op::Undo => cc.on_spurious_congestion(),
                    Op::SetMss(mss) => cc.set_mss(mss),
                }
                prop_assert!(cc.cwnd.is_finite() && cc.cwnd >= 0.0, "cwnd {}", cc.cwnd);
                prop_assert!(cc.window() >= 1);
                prop_assert!(cc.ssthresh() >= 2 || cc.ssthresh() == u32::MAX);
                if let Some(epoch) = cc.epoch {
                    prop_assert!(epoch.k.is_finite() && epoch.w_max.is_finite() && epoch.w_est.is_finite());
                }
            }
        }
    }
}
