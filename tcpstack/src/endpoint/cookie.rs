//! SYN cookies (RFC 4987 §3.6): when a listener's half-open queue is full, the SYN-ACK's ISN
//! encodes the connection instead of a TCB, and the final ACK brings it back.
//!
//! ISN layout, as Linux's: 5 bits of a 64-second counter, 3 bits of MSS index, 24 bits of a
//! keyed hash of the 4-tuple, the counter and the peer's ISN. Window scaling, SACK and
//! timestamps cannot be remembered, so a connection opened from a cookie uses none of them.

use std::hash::Hasher;
use std::time::{Duration, Instant};

use siphasher::sip::SipHasher24;

use crate::tcp::FourTuple;
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
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(&tuple.local.ip().octets());
        hasher.write(&tuple.local.port().to_be_bytes());
        hasher.write(&tuple.remote.ip().octets());
        hasher.write(&tuple.remote.port().to_be_bytes());
        hasher.write(&peer_isn.0.to_be_bytes());
        hasher.write(&counter.to_be_bytes());
        hasher.finish() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn tuple(port: u16) -> FourTuple {
        FourTuple {
            local: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 80),
            remote: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), port),
        }
    }

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
}
