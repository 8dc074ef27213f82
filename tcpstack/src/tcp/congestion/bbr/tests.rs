//! BBR's model, state machine and cwnd on synthetic delivery-rate samples.

use super::*;
use proptest::prelude::*;

const MSS: u32 = 1000;
const RTT: Duration = Duration::from_millis(10);

/// Rate samples as a connection on a steady path would produce them: rounds of `acks` ACKs
/// of one segment each, spread over one RTT, each measuring the bandwidth given.
struct Path {
    bbr: Bbr,
    now: Instant,
    delivered: u64,
}

impl Path {
    fn new() -> Self {
        let mut bbr = Bbr::new(MSS);
        let now = Instant::now();
        bbr.on_rtt_sample(RTT, now);
        Path {
            bbr,
            now,
            delivered: 0,
        }
    }

    fn sample(&self, bw: u64, acks: u32, rtt: Duration) -> RateSample {
        let window = u64::from(acks * MSS);
        RateSample {
            delivered: window,
            interval: Some(Duration::from_secs_f64(window as f64 / bw as f64)),
            // The segment acknowledged now left one round ago.
            prior_delivered: (self.delivered + u64::from(MSS)).saturating_sub(window),
            total_delivered: self.delivered + u64::from(MSS),
            is_app_limited: false,
            rtt: Some(rtt),
            newly_acked: MSS,
            newly_lost: 0,
            lost: 0,
            prior_in_flight: acks * MSS,
            tx_in_flight: acks * MSS,
        }
    }

    fn ack(&mut self, sample: RateSample, in_flight: u32, spacing: Duration) {
        self.now += spacing;
        self.delivered = sample.total_delivered;
        self.bbr.on_rate_sample(&sample, in_flight, self.now);
    }

    /// One round at `bw` with the flight at `acks` segments and samples of `rtt`.
    fn round_with(&mut self, bw: u64, acks: u32, rtt: Duration, change: impl Fn(&mut RateSample)) {
        for _ in 0..acks {
            let mut sample = self.sample(bw, acks, rtt);
            change(&mut sample);
            self.ack(sample, (acks - 1) * MSS, rtt / acks);
        }
    }

    fn round(&mut self, bw: u64, acks: u32) {
        self.round_with(bw, acks, RTT, |_| {});
    }

    /// A round whose ACKs leave `in_flight` bytes outstanding.
    fn round_in_flight(&mut self, bw: u64, acks: u32, in_flight: u32) {
        for _ in 0..acks {
            let sample = self.sample(bw, acks, RTT);
            self.ack(sample, in_flight, RTT / acks);
        }
    }

    /// STARTUP doubling up to `bw` (whose BDP is `acks` segments), flat rounds until the pipe
    /// is full, then the flight drained to one BDP.
    fn run_into_probe_bw(&mut self, bw: u64, acks: u32) {
        let mut rate = bw / 16;
        let mut flight = (acks / 16).max(2);
        while rate < bw {
            self.round(rate, flight);
            rate *= 2;
            flight = (flight * 2).min(acks);
        }
        while !self.bbr.full_bandwidth_reached() {
            self.round(bw, acks);
        }
        self.round_with(bw, acks, RTT, |_| {});
        let drained = self.sample(bw, acks, RTT);
        self.ack(drained, acks * MSS / 2, RTT / acks);
        assert_eq!(self.bbr.mode(), Mode::ProbeBw);
    }
}

/// 10 MB/s over 10 ms: a BDP of 100 segments.
const BW: u64 = 10_000_000;
const BDP_SEGMENTS: u32 = 100;

#[test]
fn startup_ends_three_rounds_after_the_bandwidth_stopped_growing() {
    let mut path = Path::new();
    assert_eq!(path.bbr.mode(), Mode::Startup);
    assert_eq!(path.bbr.pacing_gain(), STARTUP_PACING_GAIN);
    for (rate, flight) in [(BW / 8, 12), (BW / 4, 25), (BW / 2, 50), (BW, 100)] {
        path.round(rate, flight);
        assert!(!path.bbr.full_bandwidth_reached());
        assert_eq!(path.bbr.bandwidth(), rate);
    }
    // The queue STARTUP builds: the flight is twice the BDP.
    let mut flat_rounds = 0;
    while !path.bbr.full_bandwidth_reached() {
        path.round_in_flight(BW, BDP_SEGMENTS, 2 * BDP_SEGMENTS * MSS);
        flat_rounds += 1;
        assert!(flat_rounds <= FULL_BW_ROUNDS, "STARTUP must end");
    }
    assert!(flat_rounds >= FULL_BW_ROUNDS - 1);
    // The pipe is full while the flight is still 2 BDP: DRAIN at 0.35 until it is one BDP.
    assert_eq!(path.bbr.mode(), Mode::Drain);
    assert_eq!(
        path.bbr.pacing_rate(),
        Some(rate_with_gain(BW as f64, 0.35))
    );
    assert!(path.bbr.ssthresh() < u32::MAX);
    let sample = path.sample(BW, BDP_SEGMENTS, RTT);
    path.ack(sample, BDP_SEGMENTS * MSS, Duration::ZERO);
    assert_eq!(path.bbr.mode(), Mode::ProbeBw);
    assert_eq!(path.bbr.pacing_gain(), 1.0);
}

#[test]
fn pacing_rate_and_cwnd_follow_the_model() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    path.round(BW, BDP_SEGMENTS);
    assert_eq!(path.bbr.min_rtt(), Some(RTT));
    let gain = path.bbr.pacing_gain();
    assert_eq!(
        path.bbr.pacing_rate(),
        Some((BW as f64 * gain * 0.99) as u64)
    );
    // 2 × BDP plus three quanta of 9 segments (9.9 MB/s / 1024 ≈ 9.7 KB), plus at most the
    // few segments of ACK aggregation these evenly spaced ACKs show.
    let target = 2 * BDP_SEGMENTS * MSS + 3 * send_quantum(path.bbr.pacing_rate, MSS);
    let cwnd = path.bbr.window();
    assert!(
        (target..=target + 3 * MSS).contains(&cwnd),
        "cwnd {cwnd}, target {target}"
    );
}

#[test]
fn the_bandwidth_filter_keeps_the_max_of_ten_rounds() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    // A slower path: the old max holds for the filter's window, then the new rate takes over.
    let mut rounds = 0;
    while path.bbr.bandwidth() == BW {
        path.round(BW / 2, BDP_SEGMENTS / 2);
        rounds += 1;
        assert!(rounds <= BW_FILTER_ROUNDS + 2, "the old max must age out");
    }
    assert!(
        rounds >= BW_FILTER_ROUNDS - 1,
        "aged out after {rounds} rounds"
    );
    assert_eq!(path.bbr.bandwidth(), BW / 2);
}

#[test]
fn application_limited_samples_do_not_lower_the_estimate() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    for _ in 0..3 * BW_FILTER_ROUNDS {
        path.round_with(BW / 10, 10, RTT, |s| s.is_app_limited = true);
    }
    assert_eq!(path.bbr.bandwidth(), BW);
    // One that is faster than the estimate raises it anyway.
    path.round_with(2 * BW, 10, RTT, |s| s.is_app_limited = true);
    assert_eq!(path.bbr.bandwidth(), 2 * BW);
}

#[test]
fn gain_cycling_probes_and_drains_once_per_eight_min_rtts() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    // The flight follows the gain: 1.25 × BDP fills the queue, 0.75 drains it. Two cycles.
    let mut gains = Vec::new();
    for _ in 0..2 * GAIN_CYCLE.len() * BDP_SEGMENTS as usize {
        let gain = path.bbr.pacing_gain();
        let flight = (f64::from(2 * BDP_SEGMENTS) * gain) as u32;
        let mut sample = path.sample(BW, BDP_SEGMENTS, RTT);
        sample.prior_in_flight = flight * MSS;
        path.ack(sample, flight * MSS, RTT / BDP_SEGMENTS);
        gains.push(gain);
    }
    let share = |g: f64| gains.iter().filter(|&&x| x == g).count() as f64 / gains.len() as f64;
    // Each phase lasts about a min RTT: 1/8 of the time probing, 1/8 draining.
    for (gain, expected) in [(1.25, 0.125), (0.75, 0.125), (1.0, 0.75)] {
        assert!(
            (share(gain) - expected).abs() < 0.05,
            "gain {gain}: {} of the time",
            share(gain)
        );
    }
}

#[test]
fn random_loss_leaves_the_model_alone() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    path.round(BW, BDP_SEGMENTS);
    let cwnd = path.bbr.window();
    // 2 % loss: a fast recovery every round, each loss marked, the model's rate unchanged.
    for _ in 0..20 {
        path.bbr.on_fast_retransmit(BDP_SEGMENTS * MSS, path.now);
        for i in 0..BDP_SEGMENTS {
            let mut sample = path.sample(BW, BDP_SEGMENTS, RTT);
            if i % 50 == 0 {
                sample.newly_lost = MSS;
            }
            path.ack(sample, (BDP_SEGMENTS - 1) * MSS, RTT / BDP_SEGMENTS);
        }
        path.bbr.on_recovery_exit();
        assert_eq!(path.bbr.bandwidth(), BW);
        assert_eq!(path.bbr.mode(), Mode::ProbeBw);
        assert!(
            path.bbr.window() >= cwnd - 2 * MSS,
            "{} < {cwnd}",
            path.bbr.window()
        );
    }
    assert!(path.bbr.pacing_rate().unwrap() >= rate_with_gain(BW as f64, 0.75));
}

#[test]
fn the_first_round_of_recovery_conserves_packets() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    path.round(BW, BDP_SEGMENTS);
    let before = path.bbr.window();
    path.bbr.on_fast_retransmit(BDP_SEGMENTS * MSS, path.now);
    // The ACK that starts recovery: cwnd = flight + delivered.
    let sample = path.sample(BW, BDP_SEGMENTS, RTT);
    path.ack(sample, 50 * MSS, Duration::ZERO);
    assert_eq!(path.bbr.window(), 51 * MSS);
    // A loss marked during the round takes its bytes off, but never below the flight plus
    // what this ACK delivered.
    let mut sample = path.sample(BW, BDP_SEGMENTS, RTT);
    sample.newly_lost = 5 * MSS;
    path.ack(sample, 49 * MSS, Duration::ZERO);
    assert_eq!(path.bbr.window(), 50 * MSS);
    // Once the round is over, cwnd grows again by what is delivered...
    for _ in 0..2 * BDP_SEGMENTS {
        let sample = path.sample(BW, BDP_SEGMENTS, RTT);
        path.ack(sample, 49 * MSS, Duration::ZERO);
    }
    assert!(path.bbr.window() > 60 * MSS, "{}", path.bbr.window());
    // ...and leaving recovery restores what it was.
    path.bbr.on_recovery_exit();
    assert!(path.bbr.window() >= before);
}

#[test]
fn a_stale_min_rtt_brings_probe_rtt() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    let before = path.bbr.window();
    let start = path.now;
    // A standing queue: every sample is 2 ms above the min RTT, for 10 s.
    let mut rounds = 0;
    while path.bbr.mode() != Mode::ProbeRtt {
        path.round_with(BW, BDP_SEGMENTS, RTT + Duration::from_millis(2), |_| {});
        rounds += 1;
        assert!(rounds < 2000, "PROBE_RTT must come");
    }
    let entered = path.now;
    assert!(entered.duration_since(path.bbr.min_rtt_stamp.unwrap()) <= RTT);
    let stale = entered - start;
    assert!(stale >= MIN_RTT_FILTER - RTT, "after {stale:?}");
    assert!(stale <= MIN_RTT_FILTER + 2 * RTT, "after {stale:?}");
    assert_eq!(path.bbr.window(), MIN_PIPE_SEGMENTS * MSS);
    // The flight drains to 4 segments; PROBE_RTT holds 200 ms and at least a round there,
    // then restores cwnd and returns to PROBE_BW.
    while path.bbr.mode() == Mode::ProbeRtt {
        assert!(path.bbr.window() <= MIN_PIPE_SEGMENTS * MSS);
        let sample = path.sample(BW / 25, MIN_PIPE_SEGMENTS, RTT);
        path.ack(sample, 3 * MSS, RTT / MIN_PIPE_SEGMENTS);
    }
    let held = path.now - entered;
    assert!(held >= PROBE_RTT_DURATION, "{held:?}");
    assert!(held < PROBE_RTT_DURATION + 3 * RTT, "{held:?}");
    assert_eq!(path.bbr.mode(), Mode::ProbeBw);
    assert!(
        path.bbr.window() >= before,
        "{} < {before}",
        path.bbr.window()
    );
    assert_eq!(path.bbr.min_rtt(), Some(RTT));
    // PROBE_RTT's few samples did not lower the estimate.
    assert_eq!(path.bbr.bandwidth(), BW);
}

#[test]
fn an_rto_restarts_from_one_segment_and_restores_after_a_flight() {
    let mut path = Path::new();
    path.run_into_probe_bw(BW, BDP_SEGMENTS);
    path.round(BW, BDP_SEGMENTS);
    let before = path.bbr.window();
    path.bbr.on_rto(BDP_SEGMENTS * MSS, path.now);
    assert_eq!(path.bbr.window(), MSS);
    let sample = path.sample(BW, BDP_SEGMENTS, RTT);
    path.ack(sample, 0, RTT);
    assert_eq!(
        path.bbr.window(),
        MIN_PIPE_SEGMENTS * MSS,
        "grows, at least 4 segments"
    );
    path.round(BW, BDP_SEGMENTS);
    assert!(path.bbr.window() >= before);
}

#[test]
fn windowed_max_follows_the_window() {
    let mut filter = WindowedMax::default();
    filter.update(10, 0, 100);
    filter.update(10, 3, 80);
    filter.update(10, 6, 60);
    assert_eq!(filter.get(), 100);
    filter.update(10, 11, 50);
    assert_eq!(filter.get(), 80, "100 is 11 rounds old");
    filter.update(10, 14, 50);
    assert_eq!(filter.get(), 60);
    filter.update(10, 30, 10);
    assert_eq!(filter.get(), 10, "everything older than the window is gone");
    filter.update(10, 31, 20);
    assert_eq!(filter.get(), 20);
}

#[derive(Clone, Debug)]
enum Op {
    Sample(RateSample, u32, u64),
    FastRetransmit,
    RecoveryExit,
    Rto(u32),
    Undo,
    Idle,
    Rtt(u64),
    SetMss(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let sample = (
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(delivered, interval, prior, total, app, rtt, (acked, lost, prior_in_flight))| {
                RateSample {
                    delivered,
                    interval: interval.map(Duration::from_nanos),
                    prior_delivered: prior,
                    total_delivered: total,
                    is_app_limited: app,
                    rtt: rtt.map(Duration::from_nanos),
                    newly_acked: acked,
                    newly_lost: lost,
                    lost: 0,
                    prior_in_flight,
                    tx_in_flight: 0,
                }
            },
        );
    prop_oneof![
        4 => (sample, any::<u32>(), 0u64..100_000_000_000).prop_map(|(s, f, t)| Op::Sample(s, f, t)),
        1 => Just(Op::FastRetransmit),
        1 => Just(Op::RecoveryExit),
        1 => any::<u32>().prop_map(Op::Rto),
        1 => Just(Op::Undo),
        1 => Just(Op::Idle),
        1 => any::<u64>().prop_map(Op::Rtt),
        1 => any::<u32>().prop_map(Op::SetMss),
    ]
}

proptest! {
    #![proptest_config(crate::test_support::proptest_config())]

    #[test]
    fn extreme_inputs_never_break_the_model(mss in any::<u32>(), ops in prop::collection::vec(op(), 1..200)) {
        let start = Instant::now();
        let mut now = start;
        let mut bbr = Bbr::new(mss);
        for op in ops {
            match op {
                Op::Sample(sample, in_flight, advance_us) => {
                    now += Duration::from_micros(advance_us % 20_000_000);
                    bbr.on_rate_sample(&sample, in_flight, now);
                }
                Op::FastRetransmit => bbr.on_fast_retransmit(bbr.window(), now),
                Op::RecoveryExit => bbr.on_recovery_exit(),
                Op::Rto(flight) => bbr.on_rto(flight, now),
                Op::Undo => bbr.on_spurious_congestion(),
                Op::Idle => bbr.on_idle_restart(),
                Op::Rtt(ns) => bbr.on_rtt_sample(Duration::from_nanos(ns % 1_000_000_000_000), now),
                Op::SetMss(mss) => bbr.set_mss(mss),
            }
            prop_assert!(bbr.window() >= 1);
            prop_assert!(bbr.pacing_rate().is_some_and(|rate| rate >= 1));
            prop_assert!(bbr.pacing_gain.is_finite() && bbr.cwnd_gain.is_finite());
        }
    }
}
