//! Pacing: the release time of a connection's next data segment when its congestion control
//! asks for a rate (as BBR does), after Linux's internal TCP pacing (`tcp_pacing_check`,
//! `tcp_update_skb_after_send`) and the burst size of `tcp_tso_autosize`.
//!
//! A segment of `len` bytes sent at `rate` pushes the release time `len / rate` further. Time
//! the connection did not use (it waited for an ACK, or its timer woke late) is kept as credit
//! of up to one send quantum, about 1 ms of data: so a timer with 1 ms granularity, as tokio's,
//! does not lower the average rate, and a burst after a pause stays one quantum long.

use std::time::{Duration, Instant};

/// The largest send quantum, as Linux's GSO limit caps `tcp_tso_autosize`.
const MAX_QUANTUM: u64 = 64 * 1024;
/// Below this rate (bytes/s; Linux's `bbr_min_tso_rate`, 1.2 Mbit/s) a quantum is one segment.
const LOW_RATE: u64 = 150_000;
/// The quantum is about 1/2^10 s of data (Linux's `sk_pacing_shift`).
const QUANTUM_SHIFT: u32 = 10;

/// The bytes that may leave back to back at `rate` bytes/s: about 1 ms of data, at least two
/// segments (one at very low rates), at most 64 KB, in whole segments.
pub fn send_quantum(rate: u64, mss: u32) -> u32 {
    let mss = u64::from(mss.max(1));
    let min_segments = if rate < LOW_RATE { 1 } else { 2 };
    let segments = ((rate >> QUANTUM_SHIFT).min(MAX_QUANTUM) / mss).max(min_segments);
    u32::try_from(segments * mss).unwrap_or(u32::MAX)
}

/// How long `bytes` take at `rate` bytes/s.
fn transmission_time(bytes: u64, rate: u64) -> Duration {
    let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// One connection's pacing state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pacer {
    /// When the next paced segment may leave (Linux's `tcp_wstamp_ns`); `None` before the first.
    release: Option<Instant>,
    /// A segment is being held back until `release`: the connection's timer must fire then.
    holding: bool,
}

impl Pacer {
    /// A segment may leave at `now`. When it may not, the pacer remembers that one is waiting,
    /// so [`Pacer::deadline`] asks for a wake-up at the release time.
    pub fn admit(&mut self, now: Instant) -> bool {
        let admitted = self.release.is_none_or(|release| release <= now);
        self.holding = !admitted;
        admitted
    }

    /// A segment of `len` bytes left at `now` while pacing at `rate` bytes/s.
    pub fn on_sent(&mut self, len: u32, rate: u64, mss: u32, now: Instant) {
        let credit = transmission_time(u64::from(send_quantum(rate, mss)), rate);
        let earliest = now.checked_sub(credit).unwrap_or(now);
        let start = self
            .release
            .map_or(earliest, |release| release.max(earliest));
        self.release = Some(start + transmission_time(u64::from(len), rate));
        self.holding = false;
    }

    /// The release time while a segment is held back, for the connection's `poll_timeout`.
    pub fn deadline(&self) -> Option<Instant> {
        self.release.filter(|_| self.holding)
    }

    /// The connection's timer fired at `now`: a held segment whose time has come is no longer
    /// waiting on the timer (the next `poll_transmit` sends it, or holds it again).
    pub fn on_timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|release| release <= now) {
            self.holding = false;
        }
    }

    /// Forgets the schedule (a new congestion control algorithm, which may not pace).
    pub fn reset(&mut self) {
        *self = Pacer::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    #[test]
    fn quantum_is_a_millisecond_of_data_within_bounds() {
        // 100 Mbit/s: 12.5 MB/s, 12 207 bytes per 1/1024 s: 12 segments.
        assert_eq!(send_quantum(12_500_000, MSS), 12 * MSS);
        assert_eq!(send_quantum(1_000_000_000, MSS), 65 * MSS, "64 KB at most");
        assert_eq!(
            send_quantum(1_000_000, MSS),
            2 * MSS,
            "two segments at least"
        );
        assert_eq!(send_quantum(100_000, MSS), MSS, "one below 1.2 Mbit/s");
        assert_eq!(send_quantum(u64::MAX, u32::MAX), u32::MAX);
    }

    #[test]
    fn segments_leave_at_the_rate_after_one_quantum() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let rate = 1_000_000; // 1 MB/s: 1 ms per segment, a quantum of two segments.
        let mut pacer = Pacer::default();
        let mut sent = Vec::new();
        let mut now = t0;
        while sent.len() < 6 {
            if pacer.admit(now) {
                pacer.on_sent(MSS, rate, MSS, now);
                sent.push(now - t0);
            } else {
                let deadline = pacer.deadline().expect("a held segment asks for a timer");
                assert!(deadline > now);
                now = deadline;
                pacer.on_timeout(now);
                assert_eq!(pacer.deadline(), None);
            }
        }
        let ms = Duration::from_millis;
        // A quantum (two segments) plus the one the credit leaves room for, then one per ms.
        assert_eq!(sent, [ms(0), ms(0), ms(0), ms(1), ms(2), ms(3)]);
    }

    #[test]
    fn a_late_wake_up_keeps_the_average_rate_up_to_one_quantum() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let rate = 1_000_000;
        let mut pacer = Pacer::default();
        for _ in 0..3 {
            assert!(pacer.admit(t0));
            pacer.on_sent(MSS, rate, MSS, t0);
        }
        assert!(!pacer.admit(t0));
        assert_eq!(pacer.deadline(), Some(t0 + Duration::from_millis(1)));
        // The timer fires 1.5 ms late: the two segments due by then leave at once.
        let late = t0 + Duration::from_micros(2_500);
        assert!(pacer.admit(late));
        pacer.on_sent(MSS, rate, MSS, late);
        assert!(pacer.admit(late));
        pacer.on_sent(MSS, rate, MSS, late);
        assert!(!pacer.admit(late));
        // After a long pause only one quantum of credit remains.
        let idle = late + Duration::from_secs(1);
        let mut burst = 0;
        while pacer.admit(idle) {
            pacer.on_sent(MSS, rate, MSS, idle);
            burst += 1;
        }
        assert_eq!(burst, 3);
    }

    #[test]
    fn nothing_held_means_no_deadline() {
        let now = Instant::now();
        let mut pacer = Pacer::default();
        assert!(pacer.admit(now));
        assert_eq!(pacer.deadline(), None);
        while pacer.admit(now) {
            pacer.on_sent(MSS, 1_000_000, MSS, now);
            assert_eq!(
                pacer.deadline(),
                None,
                "only a held segment needs the timer"
            );
        }
        assert!(pacer.deadline().is_some());
        pacer.reset();
        assert!(pacer.admit(now));
    }
}
