//! BBR: congestion control from a model of the path (draft-ietf-ccwg-bbr-01), fed by the
//! connection's delivery-rate samples (`tcp::rate`, draft-cheng-iccrg-delivery-rate-estimation).
//!
//! Which BBR this is. The state machine, the bandwidth probing and the response to loss are
//! BBRv1 as Linux's upstream `tcp_bbr.c` runs it, the algorithm tcpstack is compared against;
//! where BBRv3 (the draft) changed a constant without adding a loss response, the draft's value
//! is taken. In detail:
//! - model: a windowed max filter of delivery-rate samples over 10 packet-timed rounds (the
//!   8-phase gain cycle plus 2, v1's `bbr_bw_rtts`), application-limited samples entering only
//!   when they raise it (draft §4.5.2.2); a min-RTT filter of 10 s (§4.5.3, v1 and v3 alike);
//!   rounds counted by delivered bytes (§4.5.1);
//! - STARTUP paces at 4·ln 2 ≈ 2.77 × bw with cwnd gain 2 (v3; v1 has 2/ln 2 ≈ 2.89 for both)
//!   and ends when three rounds in a row raised the max bandwidth by less than 25 % (v1 and v3;
//!   v3's exit on high loss is left out, see below);
//! - DRAIN paces at 0.35 × bw (v3's BBRDrainPacingGain; v1 1/2.89) until the flight is at most
//!   one BDP;
//! - PROBE_BW is v1's gain cycle of min-RTT-long phases 1.25, 0.75, 1, 1, 1, 1, 1, 1 (the 1.25
//!   phase lasts until the flight reached 1.25 BDP or a loss, the 0.75 phase ends early at one
//!   BDP) with cwnd gain 2, entered at the first cruising phase (v1 picks one at random; this
//!   module has no randomness so that simulations replay). v3's DOWN/CRUISE/REFILL/UP with its
//!   2–3 s probing interval is not used;
//! - PROBE_RTT (v1): when the min RTT is 10 s old, cwnd is held at 4 segments for 200 ms and at
//!   least one round, then restored (v3 would probe every 5 s at half the BDP);
//! - pacing rate = gain × bw × (1 − 1 %) (§4.6.2), before the first sample 2.77 × IW / SRTT;
//! - cwnd = cwnd_gain × BDP + the ACK-aggregation allowance (v1's `extra_acked`, v3's
//!   §4.6.4.3, a max over 10 rounds of the data ACKed beyond bw × time) + three send quanta
//!   (`pacing::send_quantum`, Linux's `bbr_quantization_budget`), at least 4 segments; below the
//!   target it grows by what each ACK delivered.
//!
//! Loss. This is the deliberate choice: BBR here does not treat loss as a signal of congestion,
//! as v1. On the first round of fast recovery it conserves packets (cwnd = flight + delivered),
//! afterwards it grows by the delivered bytes back to the model's cwnd, and at the end of
//! recovery it restores the cwnd it had before (v1's `bbr_set_cwnd_to_recover_or_restore`);
//! bytes newly marked lost leave cwnd first. v3's loss response (inflight_hi cut to β = 0.7 when
//! a round loses more than 2 %, bw_lo/inflight_lo, the exit from STARTUP on loss) is not
//! implemented: on a path with random loss of 1–3 % it would cut the rate in most rounds, where
//! v1 keeps the bottleneck's rate. The cost is v1's: on a shallow-buffered bottleneck shared with
//! other flows BBR keeps losing about what its 1.25 phase overshoots. v1's long-term bandwidth
//! estimate for token-bucket policers (`lt_bw`, engaged above 20 % loss) is not implemented.
//!
//! After an RTO cwnd restarts from one segment and grows by what is delivered; the cwnd from
//! before is restored once one flight of that time has been delivered (Linux restores it on
//! leaving the Loss state). All quantities are bytes; bandwidth is bytes per second.

use std::time::{Duration, Instant};

use super::{CongestionControl, PathModel};
use crate::tcp::pacing::send_quantum;
use crate::tcp::rate::RateSample;

/// Initial window in segments (RFC 6928, as the other algorithms).
const INITIAL_WINDOW_SEGMENTS: u32 = 10;
/// The largest SMSS an IPv4 segment can carry.
const MAX_MSS: u32 = 65_535;
/// draft-ietf-ccwg-bbr §4.6.1: BBRStartupPacingGain = 4·ln 2.
const STARTUP_PACING_GAIN: f64 = 2.77;
/// §2.5: BBRStartupCwndGain.
const STARTUP_CWND_GAIN: f64 = 2.0;
/// §2.5: BBRDrainPacingGain.
const DRAIN_PACING_GAIN: f64 = 0.35;
/// §2.5: BBRDefaultCwndGain, for DRAIN and PROBE_BW.
const CWND_GAIN: f64 = 2.0;
/// v1's PROBE_BW pacing gains, one phase per min RTT.
const GAIN_CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// The phase PROBE_BW starts in: the first at gain 1.
const FIRST_CRUISE_PHASE: usize = 2;
/// Rounds the max-bandwidth filter covers: a gain cycle plus two (v1's `bbr_bw_rtts`).
const BW_FILTER_ROUNDS: u64 = GAIN_CYCLE.len() as u64 + 2;
/// §2.10: MinRTTFilterLen.
const MIN_RTT_FILTER: Duration = Duration::from_secs(10);
/// §2.11: ProbeRTTDuration.
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// §2.8: BBRMinPipeCwnd, the cwnd of PROBE_RTT and the floor of cwnd, in segments.
const MIN_PIPE_SEGMENTS: u32 = 4;
/// §4.3.1.2: STARTUP goes on while the max bandwidth grows by this factor per round...
const FULL_BW_GROWTH: f64 = 1.25;
/// ...and ends after this many rounds that did not.
const FULL_BW_ROUNDS: u32 = 3;
/// §4.6.2: pace 1 % below the estimate.
const PACING_MARGIN: f64 = 0.01;
/// §2.9: ExtraAckedFilterLen, in rounds; the filter keeps two halves of this many.
const EXTRA_ACKED_FILTER_ROUNDS: u64 = 10;
/// The ACK-aggregation allowance is at most this much of data at the estimated bandwidth
/// (Linux's `bbr_extra_acked_max_us`).
const EXTRA_ACKED_MAX: Duration = Duration::from_millis(100);

/// The state machine of §4.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// A windowed max filter (Kathleen Nichols' algorithm, as Linux's `win_minmax`): the best, the
/// second-best and the third-best sample of the window, each younger than the one before, so
/// the max of the last `window` time units is kept in constant space.
#[derive(Clone, Copy, Debug, Default)]
struct WindowedMax {
    samples: [(u64, u64); 3],
}

impl WindowedMax {
    fn get(&self) -> u64 {
        self.samples[0].1
    }

    fn reset(&mut self, time: u64, value: u64) {
        self.samples = [(time, value); 3];
    }

    /// A sample of `value` at `time` (non-decreasing) for a window of `window` time units.
    fn update(&mut self, window: u64, time: u64, value: u64) {
        let sample = (time, value);
        if value >= self.samples[0].1 || time.saturating_sub(self.samples[2].0) > window {
            self.reset(time, value);
            return;
        }
        if value >= self.samples[1].1 {
            self.samples[1] = sample;
            self.samples[2] = sample;
        } else if value >= self.samples[2].1 {
            self.samples[2] = sample;
        }
        // Age the best samples out of the window, and keep the younger ones spread over it.
        let age = time.saturating_sub(self.samples[0].0);
        if age > window {
            self.samples = [self.samples[1], self.samples[2], sample];
            if time.saturating_sub(self.samples[0].0) > window {
                self.samples = [self.samples[1], self.samples[2], sample];
            }
        } else if self.samples[1].0 == self.samples[0].0 && age > window / 4 {
            self.samples[1] = sample;
            self.samples[2] = sample;
        } else if self.samples[2].0 == self.samples[1].0 && age > window / 2 {
            self.samples[2] = sample;
        }
    }
}

/// Where the connection's loss recovery is, as far as BBR's cwnd is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    Open,
    /// Fast recovery began on this ACK: its rate sample starts the packet-conserving round.
    Entering,
    /// In fast recovery; cwnd conserves packets until the round that began with it ends.
    Recovering {
        conserving: bool,
    },
    /// An RTO: cwnd restarted, and the prior one comes back once C.delivered reaches `until`.
    AfterTimeout {
        until: u64,
    },
}

#[derive(Clone, Debug)]
pub struct Bbr {
    mss: u32,
    cwnd: u32,
    /// §4.6.4.4's BBR.prior_cwnd: the cwnd before recovery or PROBE_RTT cut it.
    prior_cwnd: u32,
    /// Set when DRAIN starts, for `ss` (Linux does the same); BBR does not use it.
    ssthresh: u32,
    mode: Mode,
    pacing_gain: f64,
    cwnd_gain: f64,
    pacing_rate: u64,
    /// Max of the delivery-rate samples, over rounds.
    max_bw: WindowedMax,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Option<Instant>,
    /// The connection's smoothed RTT, for the pacing rate before the first bandwidth sample.
    srtt: Option<Duration>,
    round_count: u64,
    /// C.delivered at which the next round starts.
    next_round_delivered: u64,
    round_start: bool,
    /// C.delivered as of the last sample.
    delivered: u64,
    full_bw: u64,
    full_bw_count: u32,
    full_bw_reached: bool,
    cycle_index: usize,
    cycle_start: Option<Instant>,
    probe_rtt_done_at: Option<Instant>,
    probe_rtt_round_done: bool,
    /// Samples of data sent before delivery passed this mark came from PROBE_RTT's reduced
    /// flight and say nothing about the path's bandwidth (Linux marks them application-limited).
    probe_rtt_low_until: u64,
    /// Restarting after idle: no PROBE_RTT until data is delivered again.
    idle_restart: bool,
    recovery: Recovery,
    // ACK aggregation (§4.6.4.3).
    ack_epoch_start: Option<Instant>,
    ack_epoch_acked: u64,
    extra_acked: [u64; 2],
    extra_acked_index: usize,
    extra_acked_rounds: u64,
}

impl Bbr {
    pub fn new(mss: u32) -> Self {
        let mss = mss.clamp(1, MAX_MSS);
        let cwnd = INITIAL_WINDOW_SEGMENTS * mss;
        let mut bbr = Bbr {
            mss,
            cwnd,
            prior_cwnd: 0,
            ssthresh: u32::MAX,
            mode: Mode::Startup,
            pacing_gain: STARTUP_PACING_GAIN,
            cwnd_gain: STARTUP_CWND_GAIN,
            pacing_rate: 0,
            max_bw: WindowedMax::default(),
            min_rtt: None,
            min_rtt_stamp: None,
            srtt: None,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            delivered: 0,
            full_bw: 0,
            full_bw_count: 0,
            full_bw_reached: false,
            cycle_index: FIRST_CRUISE_PHASE,
            cycle_start: None,
            probe_rtt_done_at: None,
            probe_rtt_round_done: false,
            probe_rtt_low_until: 0,
            idle_restart: false,
            recovery: Recovery::Open,
            ack_epoch_start: None,
            ack_epoch_acked: 0,
            extra_acked: [0; 2],
            extra_acked_index: 0,
            extra_acked_rounds: 0,
        };
        bbr.init_pacing_rate();
        bbr
    }

    /// The state machine's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The bottleneck bandwidth estimate in bytes per second (0 before the first sample).
    pub fn bandwidth(&self) -> u64 {
        self.max_bw.get()
    }

    /// The min-RTT estimate.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The pacing gain of the current mode or phase.
    pub fn pacing_gain(&self) -> f64 {
        self.pacing_gain
    }

    /// STARTUP decided the pipe is full (§4.3.1.2).
    pub fn full_bandwidth_reached(&self) -> bool {
        self.full_bw_reached
    }

    fn min_pipe(&self) -> u32 {
        MIN_PIPE_SEGMENTS * self.mss
    }

    /// Before the first bandwidth sample: the startup gain × IW / RTT, with 1 ms for an RTT not
    /// yet measured (draft §4.6.2 BBRInitPacingRate, Linux's nominal RTT).
    fn init_pacing_rate(&mut self) {
        let rtt = self
            .srtt
            .unwrap_or(Duration::from_millis(1))
            .max(Duration::from_micros(1));
        let bw = f64::from(INITIAL_WINDOW_SEGMENTS * self.mss) / rtt.as_secs_f64();
        self.pacing_rate = rate_with_gain(bw, STARTUP_PACING_GAIN);
    }

    /// §4.6.2 BBRSetPacingRate: never lower before STARTUP filled the pipe.
    fn set_pacing_rate(&mut self) {
        let bw = self.bandwidth();
        if bw == 0 {
            return;
        }
        let rate = rate_with_gain(bw as f64, self.pacing_gain);
        if self.full_bw_reached || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    /// §4.6.4.2 BBRBDPMultiple: gain × bw × min RTT, rounded up; IW before any RTT is known.
    fn bdp(&self, gain: f64) -> u64 {
        let Some(min_rtt) = self.min_rtt else {
            return u64::from(INITIAL_WINDOW_SEGMENTS * self.mss);
        };
        (self.bandwidth() as f64 * min_rtt.as_secs_f64() * gain).ceil() as u64
    }

    /// §4.6.4.2 BBRQuantizationBudget: room for three send quanta in flight at either end, and
    /// in the probing phase two segments more so that the flight can exceed a tiny BDP.
    fn quantization_budget(&self, inflight: u64) -> u64 {
        let quantum = u64::from(send_quantum(self.pacing_rate, self.mss));
        let mut budget = inflight.saturating_add(3 * quantum);
        if self.mode == Mode::ProbeBw && self.cycle_index == 0 {
            budget = budget.saturating_add(2 * u64::from(self.mss));
        }
        budget
    }

    /// The flight the model aims at for `gain`.
    fn inflight(&self, gain: f64) -> u64 {
        self.quantization_budget(self.bdp(gain))
    }

    /// §4.6.4.3: the extra data recent ACKs delivered at once, which cwnd must cover to keep
    /// sending through the silences between aggregated ACKs. Only once the pipe is full.
    fn ack_aggregation_allowance(&self) -> u64 {
        if !self.full_bw_reached {
            return 0;
        }
        let cap = (self.bandwidth() as f64 * EXTRA_ACKED_MAX.as_secs_f64()) as u64;
        self.extra_acked[0].max(self.extra_acked[1]).min(cap)
    }

    /// §4.5.1 BBRUpdateRound: a round ends when a packet sent after its start is delivered.
    fn update_round(&mut self, sample: &RateSample) {
        self.round_start = false;
        if sample.newly_acked == 0 {
            return;
        }
        if sample.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = sample.total_delivered;
            self.round_count += 1;
            self.round_start = true;
            if let Recovery::Recovering { conserving } = &mut self.recovery {
                *conserving = false;
            }
        }
    }

    fn is_app_limited(&self, sample: &RateSample) -> bool {
        sample.is_app_limited || sample.prior_delivered < self.probe_rtt_low_until
    }

    /// §4.5.2.2: the max filter takes every sample that is not application-limited, and those
    /// that are when they raise the estimate.
    fn update_bandwidth(&mut self, sample: &RateSample) {
        let Some(interval) = sample.interval.filter(|i| !i.is_zero()) else {
            return;
        };
        if sample.delivered == 0 {
            return;
        }
        let bw = u128::from(sample.delivered) * 1_000_000_000 / interval.as_nanos().max(1);
        let bw = u64::try_from(bw).unwrap_or(u64::MAX);
        if !self.is_app_limited(sample) || bw >= self.bandwidth() {
            self.max_bw.update(BW_FILTER_ROUNDS, self.round_count, bw);
        }
    }

    /// §4.6.4.3 BBRUpdateACKAggregation.
    fn update_ack_aggregation(&mut self, sample: &RateSample, now: Instant) {
        if sample.newly_acked == 0 || sample.interval.is_none() {
            return;
        }
        if self.round_start {
            self.extra_acked_rounds += 1;
            if self.extra_acked_rounds >= EXTRA_ACKED_FILTER_ROUNDS / 2 {
                self.extra_acked_rounds = 0;
                self.extra_acked_index ^= 1;
                self.extra_acked[self.extra_acked_index] = 0;
            }
        }
        let epoch_start = *self.ack_epoch_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch_start);
        let mut expected = (self.bandwidth() as f64 * elapsed.as_secs_f64()) as u64;
        // A slower ACK rate than the model's, or an epoch so long it says nothing: start anew.
        let reset_after = (1u64 << 20) * u64::from(self.mss);
        if self.ack_epoch_acked <= expected
            || self
                .ack_epoch_acked
                .saturating_add(u64::from(sample.newly_acked))
                >= reset_after
        {
            self.ack_epoch_acked = 0;
            self.ack_epoch_start = Some(now);
            expected = 0;
        }
        self.ack_epoch_acked += u64::from(sample.newly_acked);
        let extra = (self.ack_epoch_acked.saturating_sub(expected)).min(u64::from(self.cwnd));
        let slot = &mut self.extra_acked[self.extra_acked_index];
        *slot = (*slot).max(extra);
    }

    /// v1's gain cycling: the next phase after a min RTT; the probing phase persists until the
    /// flight reached its target (or data was lost), the draining one ends early at one BDP.
    fn update_cycle_phase(&mut self, sample: &RateSample, now: Instant) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let min_rtt = self.min_rtt.unwrap_or(Duration::ZERO);
        let full_length = self
            .cycle_start
            .is_none_or(|start| now.saturating_duration_since(start) > min_rtt);
        let gain = GAIN_CYCLE[self.cycle_index];
        let prior_in_flight = u64::from(sample.prior_in_flight);
        let next = if gain > 1.0 {
            full_length && (sample.newly_lost > 0 || prior_in_flight >= self.inflight(gain))
        } else if gain < 1.0 {
            full_length || prior_in_flight <= self.inflight(1.0)
        } else {
            full_length
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % GAIN_CYCLE.len();
            self.cycle_start = Some(now);
        }
    }

    /// §4.3.1.2 BBRCheckFullBWReached.
    fn check_full_bandwidth(&mut self, sample: &RateSample) {
        if self.full_bw_reached || !self.round_start || self.is_app_limited(sample) {
            return;
        }
        let bw = self.bandwidth();
        if bw as f64 >= self.full_bw as f64 * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_count = 0;
            return;
        }
        self.full_bw_count += 1;
        self.full_bw_reached = self.full_bw_count >= FULL_BW_ROUNDS;
    }

    /// §4.3.2: STARTUP → DRAIN once the pipe is full, DRAIN → PROBE_BW once the flight is down
    /// to one BDP.
    fn check_drain(&mut self, in_flight: u32, now: Instant) {
        if self.mode == Mode::Startup && self.full_bw_reached {
            self.mode = Mode::Drain;
            self.ssthresh = clamp_u32(self.inflight(1.0));
        }
        if self.mode == Mode::Drain && u64::from(in_flight) <= self.inflight(1.0) {
            self.enter_probe_bw(now);
        }
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        self.cycle_index = FIRST_CRUISE_PHASE;
        self.cycle_start = Some(now);
    }

    /// Back to where the flow was before PROBE_RTT.
    fn reset_mode(&mut self, now: Instant) {
        if self.full_bw_reached {
            self.enter_probe_bw(now);
        } else {
            self.mode = Mode::Startup;
        }
    }

    /// v1's `bbr_save_cwnd`: the cwnd to come back to after recovery or PROBE_RTT.
    fn save_cwnd(&mut self) {
        let cut = !matches!(self.recovery, Recovery::Open) || self.mode == Mode::ProbeRtt;
        self.prior_cwnd = if cut {
            self.prior_cwnd.max(self.cwnd)
        } else {
            self.cwnd
        };
    }

    /// §4.5.3 and §4.3.4: the min-RTT filter, and PROBE_RTT when its value is 10 s old.
    fn update_min_rtt(&mut self, sample: &RateSample, in_flight: u32, now: Instant) {
        let expired = self
            .min_rtt_stamp
            .is_some_and(|stamp| now.saturating_duration_since(stamp) > MIN_RTT_FILTER);
        if let Some(rtt) = sample.rtt {
            if self.min_rtt.is_none_or(|min| rtt <= min) || expired {
                self.min_rtt = Some(rtt);
                self.min_rtt_stamp = Some(now);
            }
        }
        if expired && !self.idle_restart && self.mode != Mode::ProbeRtt {
            self.save_cwnd();
            self.mode = Mode::ProbeRtt;
            self.probe_rtt_done_at = None;
        }
        if self.mode == Mode::ProbeRtt {
            self.probe_rtt_low_until = sample
                .total_delivered
                .saturating_add(u64::from(in_flight.max(1)));
            if self.probe_rtt_done_at.is_none() && in_flight <= self.min_pipe() {
                // The flight is down: hold it there for 200 ms and at least one round.
                self.probe_rtt_done_at = Some(now + PROBE_RTT_DURATION);
                self.probe_rtt_round_done = false;
                self.next_round_delivered = sample.total_delivered;
            } else if self.probe_rtt_done_at.is_some() {
                if self.round_start {
                    self.probe_rtt_round_done = true;
                }
                if self.probe_rtt_round_done {
                    self.check_probe_rtt_done(now);
                }
            }
        }
        if sample.newly_acked > 0 {
            self.idle_restart = false;
        }
    }

    fn check_probe_rtt_done(&mut self, now: Instant) {
        if self.probe_rtt_done_at.is_none_or(|done| now <= done) {
            return;
        }
        self.min_rtt_stamp = Some(now);
        self.cwnd = self.cwnd.max(self.prior_cwnd);
        self.reset_mode(now);
    }

    fn update_gains(&mut self) {
        (self.pacing_gain, self.cwnd_gain) = match self.mode {
            Mode::Startup => (STARTUP_PACING_GAIN, STARTUP_CWND_GAIN),
            Mode::Drain => (DRAIN_PACING_GAIN, CWND_GAIN),
            Mode::ProbeBw => (GAIN_CYCLE[self.cycle_index], CWND_GAIN),
            Mode::ProbeRtt => (1.0, 1.0),
        };
    }

    /// §4.6.4.4–§4.6.4.6 with v1's recovery rules (see the module documentation).
    fn set_cwnd(&mut self, sample: &RateSample, in_flight: u32) {
        let acked = sample.newly_acked;
        if acked > 0 {
            self.cwnd = self.cwnd.saturating_sub(sample.newly_lost).max(self.mss);
            let conservation_floor = in_flight.saturating_add(acked);
            match self.recovery {
                Recovery::Entering => {
                    // The first round of recovery starts now and sends what is delivered.
                    self.next_round_delivered = sample.total_delivered;
                    self.recovery = Recovery::Recovering { conserving: true };
                    self.cwnd = conservation_floor;
                }
                Recovery::Recovering { conserving: true } => {
                    self.cwnd = self.cwnd.max(conservation_floor);
                }
                Recovery::AfterTimeout { until } => {
                    if sample.total_delivered >= until {
                        self.cwnd = self.cwnd.max(self.prior_cwnd);
                        self.recovery = Recovery::Open;
                    }
                    self.grow_cwnd(sample);
                }
                Recovery::Open | Recovery::Recovering { conserving: false } => {
                    self.grow_cwnd(sample);
                }
            }
        }
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_pipe());
        }
    }

    /// Toward the model's target: by what was delivered, down to it at once once the pipe is
    /// known to be full.
    fn grow_cwnd(&mut self, sample: &RateSample) {
        let acked = sample.newly_acked;
        let target = self.quantization_budget(
            self.bdp(self.cwnd_gain)
                .saturating_add(self.ack_aggregation_allowance()),
        );
        let target = clamp_u32(target);
        let initial_window = u64::from(INITIAL_WINDOW_SEGMENTS * self.mss);
        if self.full_bw_reached {
            self.cwnd = self.cwnd.saturating_add(acked).min(target);
        } else if self.cwnd < target || sample.total_delivered < initial_window {
            self.cwnd = self.cwnd.saturating_add(acked);
        }
        self.cwnd = self.cwnd.max(self.min_pipe());
    }
}

/// gain × bw × (1 − margin), in whole bytes per second, at least 1.
fn rate_with_gain(bw: f64, gain: f64) -> u64 {
    let rate = bw * gain * (1.0 - PACING_MARGIN);
    if rate >= u64::MAX as f64 {
        u64::MAX
    } else {
        (rate as u64).max(1)
    }
}

fn clamp_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl CongestionControl for Bbr {
    fn window(&self) -> u32 {
        self.cwnd
    }

    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    fn set_mss(&mut self, mss: u32) {
        let mss = mss.clamp(1, MAX_MSS);
        if self.cwnd == INITIAL_WINDOW_SEGMENTS * self.mss {
            self.cwnd = INITIAL_WINDOW_SEGMENTS * mss;
        }
        self.mss = mss;
        if self.bandwidth() == 0 {
            self.init_pacing_rate();
        }
    }

    /// BBR decides on the rate sample of the same ACK.
    fn on_ack(&mut self, _acked: u32, _flight: u32, _now: Instant) {}

    fn on_fast_retransmit(&mut self, _flight: u32, _now: Instant) {
        self.save_cwnd();
        self.recovery = Recovery::Entering;
    }

    fn on_recovery_exit(&mut self) {
        if matches!(
            self.recovery,
            Recovery::Entering | Recovery::Recovering { .. }
        ) {
            self.cwnd = self.cwnd.max(self.prior_cwnd);
            self.recovery = Recovery::Open;
        }
    }

    fn on_rto(&mut self, flight: u32, _now: Instant) {
        self.save_cwnd();
        // Linux's TCP_CA_Loss entry: STARTUP's growth check starts over.
        self.recovery = Recovery::AfterTimeout {
            until: self.delivered.saturating_add(u64::from(flight)),
        };
        self.cwnd = self.mss;
        self.full_bw = 0;
    }

    fn on_rtt_sample(&mut self, rtt: Duration, _now: Instant) {
        let first = self.srtt.is_none();
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(srtt) => (srtt * 7 + rtt) / 8,
        });
        if first && self.bandwidth() == 0 {
            self.init_pacing_rate();
        }
    }

    fn on_spurious_congestion(&mut self) {
        // Linux's bbr_undo_cwnd, and the restore of leaving recovery.
        self.full_bw = 0;
        self.full_bw_count = 0;
        if self.prior_cwnd > 0 {
            self.cwnd = self.cwnd.max(self.prior_cwnd);
        }
        self.recovery = Recovery::Open;
    }

    fn on_idle_restart(&mut self) {
        // Linux's CA_EVENT_TX_START: pace at the estimate, not above it; cwnd is not cut, the
        // pacing rate spreads the restart.
        self.idle_restart = true;
        self.ack_epoch_start = None;
        self.ack_epoch_acked = 0;
        if self.mode == Mode::ProbeBw && self.bandwidth() > 0 {
            self.pacing_rate = rate_with_gain(self.bandwidth() as f64, 1.0);
        }
    }

    fn on_rate_sample(&mut self, sample: &RateSample, in_flight: u32, now: Instant) {
        self.delivered = self.delivered.max(sample.total_delivered);
        self.update_round(sample);
        self.update_bandwidth(sample);
        self.update_ack_aggregation(sample, now);
        self.update_cycle_phase(sample, now);
        self.check_full_bandwidth(sample);
        self.check_drain(in_flight, now);
        self.update_min_rtt(sample, in_flight, now);
        self.update_gains();
        self.set_pacing_rate();
        self.set_cwnd(sample, in_flight);
    }

    fn pacing_rate(&self) -> Option<u64> {
        Some(self.pacing_rate)
    }

    fn sets_cwnd_in_recovery(&self) -> bool {
        true
    }

    fn path_model(&self) -> Option<PathModel> {
        Some(PathModel {
            bandwidth: self.bandwidth(),
            min_rtt: self.min_rtt,
            mode: match self.mode {
                Mode::Startup => "startup",
                Mode::Drain => "drain",
                Mode::ProbeBw => "probe_bw",
                Mode::ProbeRtt => "probe_rtt",
            },
        })
    }
}

#[cfg(test)]
mod tests;
