//! Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport,
//! secretkey), with M a 4-microsecond clock and F SipHash-2-4 keyed by a 128-bit secret.

use std::hash::Hasher;
use std::time::Instant;

use siphasher::sip::SipHasher24;

use super::{FourTuple, TimestampClock};
use crate::wire::SeqNum;

/// Generates RFC 6528 ISNs. The secret comes from the endpoint's injected seed, so tests replay.
#[derive(Clone, Debug)]
pub struct IsnGenerator {
    key: [u8; 16],
    base: Instant,
}

impl IsnGenerator {
    /// `secret` keys the hash; `base` is the instant at which the clock M reads zero.
    pub fn new(secret: [u8; 16], base: Instant) -> Self {
        IsnGenerator { key: secret, base }
    }

    /// A generator whose 128-bit secret is derived from a 64-bit seed.
    pub fn from_seed(seed: u64, base: Instant) -> Self {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..].copy_from_slice(&(seed ^ 0x9e37_79b9_7f4a_7c15).rotate_left(29).to_le_bytes());
        Self::new(key, base)
    }

    /// The ISN for a connection on `tuple` opened at `now`.
    pub fn isn(&self, tuple: &FourTuple, now: Instant) -> SeqNum {
        let ticks = now.saturating_duration_since(self.base).as_micros() / 4;
        SeqNum((ticks as u32).wrapping_add(self.hash(tuple)))
    }

    /// The timestamp clock of connections between the addresses of `tuple` (RFC 7323 §5.4,
    /// §7.1): keyed by the address pair only, like Linux's secure_tcp_ts_off, so that a new
    /// connection's TSvals follow the ones of an old connection in TIME-WAIT (RFC 6191).
    pub fn timestamp_clock(&self, tuple: &FourTuple) -> TimestampClock {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(b"ts");
        hasher.write(&tuple.local.ip().octets());
        hasher.write(&tuple.remote.ip().octets());
        TimestampClock::new(self.base, hasher.finish() as u32)
    }

    fn hash(&self, tuple: &FourTuple) -> u32 {
        tuple_hasher(&self.key, tuple).finish() as u32
    }
}

/// SipHash-2-4 keyed by `key`, fed the 4-tuple in network byte order: the F of RFC 6528, and
/// the start of a SYN cookie's hash (RFC 4987 §3.6).
pub(crate) fn tuple_hasher(key: &[u8; 16], tuple: &FourTuple) -> SipHasher24 {
    let mut hasher = SipHasher24::new_with_key(key);
    hasher.write(&tuple.local.ip().octets());
    hasher.write(&tuple.local.port().to_be_bytes());
    hasher.write(&tuple.remote.ip().octets());
    hasher.write(&tuple.remote.port().to_be_bytes());
    hasher
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tuple;
    use std::time::Duration;

    #[test]
    fn isn_advances_with_a_four_microsecond_clock() {
        let base = Instant::now();
        let isn = IsnGenerator::from_seed(7, base);
        let a = isn.isn(&tuple(1000), base);
        let b = isn.isn(&tuple(1000), base + Duration::from_micros(400));
        assert_eq!(b - a, 100);
    }

    #[test]
    fn isn_depends_on_tuple_and_secret() {
        let base = Instant::now();
        let one = IsnGenerator::from_seed(1, base);
        let two = IsnGenerator::from_seed(2, base);
        assert_ne!(one.isn(&tuple(1000), base), one.isn(&tuple(1001), base));
        assert_ne!(one.isn(&tuple(1000), base), two.isn(&tuple(1000), base));
        assert_eq!(
            one.isn(&tuple(1000), base),
            one.clone().isn(&tuple(1000), base)
        );
    }
}
