//! SYN cookies (RFC 4987 §3.6): when a listener's half-open queue is full, the SYN-ACK's ISN
//! encodes the connection instead of a TCB, and the final ACK brings it back.
//!
//! ISN layout, as Linux's: 5 bits of a 64-second counter, 3 bits of MSS index, 24 bits of a
//! keyed hash of the 4-tuple, the counter and the peer's ISN. When the SYN carried timestamps,
//! the SYN-ACK's TSval keeps its window scale and SACK-permitted in its low bits, which the
//! final ACK echoes, as Linux's cookie_init_timestamp does; without timestamps, a connection
//! opened from a cookie uses none of these options.

use std::hash::Hasher;
use std::time::{Duration, Instant};

use crate::tcp::{tuple_hasher, FourTuple};
use crate::wire::SeqNum;

/// MSS values a cookie can carry; a SYN's MSS is rounded down to one of them.
const MSS_TABLE: [u16; 8] = [536, 1024, 1220, 1300, 1380, 1400, 1440, 1460];
/// How long one counter value lasts.
const PERIOD: Duration = Duration::from_secs(64);
/// A cookie is accepted for this many periods after the one it was made in.
const MAX_AGE: u32 = 2;
/// How long after the last cookie went out ACKs can still carry one.
pub(super) const MAX_LIFETIME: Duration =
    Duration::from_secs(PERIOD.as_secs() * (MAX_AGE as u64 + 1));

/// Low bits of a cookie SYN-ACK's TSval that carry the SYN's options (Linux's TSBITS).
const TS_OPTION_BITS: u32 = 6;
const TS_OPTION_MASK: u32 = (1 << TS_OPTION_BITS) - 1;
/// The window-scale field (4 bits) when the SYN had no window scale.
const NO_WINDOW_SCALE: u32 = 0xf;
const SACK_PERMITTED_BIT: u32 = 1 << 4;
/// The largest window shift (RFC 7323 §2.3).
const MAX_WINDOW_SHIFT: u8 = 14;

/// The SYN options a cookie SYN-ACK's TSval remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CookieOptions {
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
}

impl CookieOptions {
    /// A TSval no later than `tsval_now` (our clock never runs backwards for the peer) whose
    /// low bits carry these options.
    pub(super) fn encode(self, tsval_now: u32) -> u32 {
        let bits = self.window_scale.map_or(NO_WINDOW_SCALE, |shift| {
            u32::from(shift.min(MAX_WINDOW_SHIFT))
        }) | if self.sack_permitted {
            SACK_PERMITTED_BIT
        } else {
            0
        };
        let tsval = (tsval_now & !TS_OPTION_MASK) | bits;
        if tsval > tsval_now {
            (tsval_now & !TS_OPTION_MASK).wrapping_sub(1 << TS_OPTION_BITS) | bits
        } else {
            tsval
        }
    }

    /// The options from the TSecr of the ACK that completes a cookie handshake. Four bits hold
    /// every shift up to 14 and the "none" value, so any TSecr decodes to options some SYN could
    /// have had; a peer that changes them only harms its own connection, as with Linux.
    pub(super) fn decode(tsecr: u32) -> Self {
        let shift = tsecr & 0xf;
        CookieOptions {
            window_scale: (shift != NO_WINDOW_SCALE).then_some(shift as u8),
            sack_permitted: tsecr & SACK_PERMITTED_BIT != 0,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct CookieJar {
    key: [u8; 16],
    base: Instant,
}

impl CookieJar {
    pub(super) fn new(key: [u8; 16], base: Instant) -> Self {
        CookieJar { key, base }
    }

    /// The ISN of a SYN-ACK answering a SYN with sequence number `peer_isn` and MSS `mss`, and
    /// the MSS the cookie carries.
    pub(super) fn make(
        &self,
        tuple: &FourTuple,
        peer_isn: SeqNum,
        mss: u16,
        now: Instant,
    ) -> (SeqNum, u16) {
        let index = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0);
        let counter = self.counter(now);
        let cookie = (counter & 0x1f) << 27
            | (index as u32) << 24
            | (self.hash(tuple, peer_isn, counter) & 0x00ff_ffff);
        (SeqNum(cookie), MSS_TABLE[index])
    }

    /// The MSS of a valid cookie, from the ACK's `ack - 1`; `None` when forged or expired.
    pub(super) fn check(
        &self,
        tuple: &FourTuple,
        peer_isn: SeqNum,
        cookie: SeqNum,
        now: Instant,
    ) -> Option<u16> {
        let counter = self.counter(now);
        let age = counter.wrapping_sub(cookie.0 >> 27) & 0x1f;
        if age > MAX_AGE {
            return None;
        }
        let made = counter.wrapping_sub(age);
        if self.hash(tuple, peer_isn, made) & 0x00ff_ffff != cookie.0 & 0x00ff_ffff {
            return None;
        }
        Some(MSS_TABLE[((cookie.0 >> 24) & 0x7) as usize])
    }

    fn counter(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.base).as_secs() / PERIOD.as_secs()) as u32
    }

    fn hash(&self, tuple: &FourTuple, peer_isn: SeqNum, counter: u32) -> u32 {
        let mut hasher = tuple_hasher(&self.key, tuple);
        hasher.write(&peer_isn.0.to_be_bytes());
        hasher.write(&counter.to_be_bytes());
        hasher.finish() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tuple;

    #[test]
    fn a_cookie_checks_out_for_its_tuple_and_period_only() {
        let base = Instant::now();
        let jar = CookieJar::new([7; 16], base);
        let now = base + Duration::from_secs(1000);
        let (cookie, mss) = jar.make(&tuple(1), SeqNum(5), 1400, now);
        assert_eq!(mss, 1400);
        assert_eq!(jar.check(&tuple(1), SeqNum(5), cookie, now), Some(1400));
        let later = now + PERIOD * MAX_AGE;
        assert_eq!(jar.check(&tuple(1), SeqNum(5), cookie, later), Some(1400));
        assert_eq!(
            jar.check(&tuple(1), SeqNum(5), cookie, later + PERIOD),
            None
        );
        assert_eq!(jar.check(&tuple(2), SeqNum(5), cookie, now), None);
        assert_eq!(jar.check(&tuple(1), SeqNum(6), cookie, now), None);
        assert_eq!(jar.check(&tuple(1), SeqNum(5), cookie + 1u32, now), None);
        // An MSS between table entries rounds down; below the table, the minimum.
        assert_eq!(jar.make(&tuple(1), SeqNum(5), 1459, now).1, 1440);
        assert_eq!(jar.make(&tuple(1), SeqNum(5), 100, now).1, 536);
    }

    #[test]
    fn options_ride_in_the_low_bits_of_a_tsval_never_ahead_of_the_clock() {
        let options = CookieOptions {
            window_scale: Some(7),
            sack_permitted: true,
        };
        let tsval = options.encode(1_000_000);
        assert!(tsval <= 1_000_000 && 1_000_000 - tsval < 128);
        assert_eq!(CookieOptions::decode(tsval), options);
        // Low bits of the clock below the options' value: the previous 64 ms step.
        let early = options.encode(0x1_0000);
        assert_eq!(early, 0xffc0 | 0x17);
        let none = CookieOptions {
            window_scale: None,
            sack_permitted: false,
        };
        assert_eq!(CookieOptions::decode(none.encode(12_345)), none);
    }
}
