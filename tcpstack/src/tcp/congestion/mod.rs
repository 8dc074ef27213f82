//! Congestion control (RFC 5681) behind a trait: NewReno and CUBIC (RFC 9438), which react to
//! loss, and BBR, which follows a model of the path built from delivery-rate samples. The
//! connection owns loss detection, the recovery point (RFC 6582's `recover`) and, for the
//! loss-based algorithms, how much is sent during recovery (PRR, RFC 6937); those only decide
//! cwnd and ssthresh. A model-based algorithm ([`CongestionControl::sets_cwnd_in_recovery`])
//! sets cwnd on every ACK, in recovery too, and may ask for pacing.

mod bbr;
mod cubic;
mod newreno;

use std::fmt;
use std::time::{Duration, Instant};

pub use bbr::Bbr;
pub use cubic::Cubic;
pub use newreno::NewReno;

/// What a model-based algorithm believes about the path, for statistics (Linux's
/// `INET_DIAG_BBRINFO`, `ss -i`'s `bbr:(bw:…,mrtt:…)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathModel {
    /// The bottleneck bandwidth estimate, payload bytes per second.
    pub bandwidth: u64,
    /// The round-trip propagation delay estimate.
    pub min_rtt: Option<Duration>,
    /// The state machine's mode, as BBR names it (`startup`, `drain`, `probe_bw`, `probe_rtt`).
    pub mode: &'static str,
}

/// A congestion control algorithm. All quantities are in bytes.
pub trait CongestionControl: fmt::Debug + Send {
    /// The congestion window.
    fn window(&self) -> u32;
    /// The slow-start threshold.
    fn ssthresh(&self) -> u32;
    /// The sender's maximum segment size became known (after the SYN exchange).
    fn set_mss(&mut self, mss: u32);
    /// `acked` new bytes were cumulatively acknowledged outside of fast recovery.
    fn on_ack(&mut self, acked: u32, flight: u32, now: Instant);
    /// Three duplicate ACKs: fast retransmit and enter fast recovery (RFC 5681 §3.2 steps 2–3).
    fn on_fast_retransmit(&mut self, flight: u32, now: Instant);
    /// A full ACK ends fast recovery: cwnd = ssthresh (RFC 6937 §3.1, as Linux; PRR has
    /// brought the flight down to it, so RFC 6582's burst guard is not needed).
    fn on_recovery_exit(&mut self);
    /// The retransmission timer expired (RFC 5681 §3.1, equations 4 and 5).
    fn on_rto(&mut self, flight: u32, now: Instant);
    /// A round-trip time measurement, taken on every ACK that yields one (Karn's rule applied).
    /// CUBIC needs it for W_cubic(t + RTT) (RFC 9438 §4.2) and HyStart++ (RFC 9406 §4.2).
    fn on_rtt_sample(&mut self, _rtt: Duration, _now: Instant) {}
    /// The last congestion event (fast retransmit or RTO) was spurious, e.g. every retransmission
    /// of the recovery was D-SACKed (RFC 3708) or Eifel-detected: restore the window it reduced
    /// (RFC 9438 §4.9).
    fn on_spurious_congestion(&mut self) {}
    /// Data is about to go out after more than an RTO without sending: RFC 5681 §4.1 limits
    /// cwnd to the restart window min(IW, cwnd), as Linux's tcp_slow_start_after_idle.
    fn on_idle_restart(&mut self) {}
    /// Called once per ACK that carries a `RateSample` (see tcp::rate), after loss detection
    /// and after `on_ack`/`on_fast_retransmit` for that ACK. `in_flight` is the flight after the
    /// ACK. Model-based algorithms (BBR) take their decisions here.
    fn on_rate_sample(
        &mut self,
        _sample: &crate::tcp::rate::RateSample,
        _in_flight: u32,
        _now: Instant,
    ) {
    }
    /// The pacing rate in bytes per second, or `None` to send as the window allows.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
    /// The algorithm sets cwnd itself on every ACK, during fast recovery too (Linux's
    /// `cong_control` hook, which BBR uses): the connection then sends up to cwnd − pipe in
    /// recovery instead of PRR's quota, which is for algorithms that only set ssthresh.
    fn sets_cwnd_in_recovery(&self) -> bool {
        false
    }
    /// The path model of a model-based algorithm.
    fn path_model(&self) -> Option<PathModel> {
        None
    }
}
