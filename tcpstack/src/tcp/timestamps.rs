//! Timestamps (RFC 7323 §3–§5): the per-connection TSval clock, RTT samples from echoed
//! timestamps, and PAWS's "older than" test.

use std::time::{Duration, Instant};

/// RFC 7323 §5.5: TS.Recent is no longer trusted after 24 days without an update, when the
/// peer's 1 ms clock may have wrapped its sign bit.
pub const PAWS_IDLE_LIMIT: Duration = Duration::from_secs(24 * 24 * 60 * 60);

/// A 1 ms timestamp clock (RFC 7323 §5.4: between 1 ms and 1 s per tick) that reads `offset` at
/// `base`. The offset is random per address pair, as Linux's secure_tcp_ts_off, so TSvals
/// reveal no uptime and successive connections between the same hosts see one clock (which
/// TIME-WAIT recycling by timestamps relies on, RFC 6191).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampClock {
    base: Instant,
    offset: u32,
}

impl TimestampClock {
    pub fn new(base: Instant, offset: u32) -> Self {
        TimestampClock { base, offset }
    }

    /// The TSval to send at `now`.
    pub fn tsval(&self, now: Instant) -> u32 {
        let ms = now.saturating_duration_since(self.base).as_millis() as u32;
        self.offset.wrapping_add(ms)
    }

    /// The TSval at the base.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// This clock read from another base: never earlier than this one and at most a tick later
    /// (the bases' difference in whole milliseconds is exact, its remainder rounds up), so TSvals
    /// stay monotonic (RFC 7323 §5.4) when a record is stored against a common time base.
    pub fn rebased(&self, base: Instant) -> TimestampClock {
        let offset = if base <= self.base {
            let behind = (self.base - base).as_millis() as u32;
            self.offset.wrapping_sub(behind)
        } else {
            let ahead = (base - self.base).as_nanos().div_ceil(1_000_000) as u32;
            self.offset.wrapping_add(ahead)
        };
        TimestampClock { base, offset }
    }

    /// The RTT an ACK echoing `tsecr` measures at `now` (RFC 7323 §4.1), at least one tick as
    /// in Linux's tcp_rtt_tsopt_us. `None` for an echo of 0 (ambiguous: a SYN's) or one from the
    /// future, which only a broken or lying peer sends.
    pub fn rtt(&self, tsecr: u32, now: Instant) -> Option<Duration> {
        if tsecr == 0 {
            return None;
        }
        let elapsed = self.tsval(now).wrapping_sub(tsecr);
        (elapsed <= i32::MAX as u32).then(|| Duration::from_millis(u64::from(elapsed.max(1))))
    }
}

/// `a` is older than `b` on the 32-bit timestamp circle (RFC 7323 §5.2).
pub fn is_older(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ticks_in_milliseconds_from_its_offset_and_wraps() {
        let base = Instant::now();
        let clock = TimestampClock::new(base, u32::MAX - 1);
        assert_eq!(clock.tsval(base), u32::MAX - 1);
        assert_eq!(clock.tsval(base + Duration::from_micros(1999)), u32::MAX);
        assert_eq!(clock.tsval(base + Duration::from_millis(5)), 3);
        let now = base + Duration::from_millis(5);
        assert_eq!(clock.rtt(u32::MAX - 1, now), Some(Duration::from_millis(5)));
        assert_eq!(clock.rtt(3, now), Some(Duration::from_millis(1)));
        assert_eq!(clock.rtt(4, now), None, "from the future");
        assert_eq!(clock.rtt(0, now), None);
    }

    #[test]
    fn older_is_modular() {
        assert!(is_older(1, 2));
        assert!(!is_older(2, 2));
        assert!(is_older(u32::MAX, 0));
        assert!(!is_older(0, u32::MAX));
        assert!(is_older(0, 0x7fff_ffff));
        assert!(!is_older(0, 0x8000_0001));
    }
}
