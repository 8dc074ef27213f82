//! TCP sequence numbers and their modulo-2^32 arithmetic (RFC 9293 §3.4).

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// A 32-bit TCP sequence number. Ordering is the RFC's: `a < b` when `b` lies in the half of the
/// number circle that follows `a`, so comparisons stay correct across the 2^32 wrap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    pub const fn new(value: u32) -> Self {
        SeqNum(value)
    }

    pub const fn value(self) -> u32 {
        self.0
    }

    /// Signed distance from `other` to `self`: positive when `self` is after `other`.
    pub fn distance(self, other: SeqNum) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// `start <= self < end` on the circle (an empty range when `start == end`).
    pub fn in_range(self, start: SeqNum, end: SeqNum) -> bool {
        self.0.wrapping_sub(start.0) < end.0.wrapping_sub(start.0)
    }

    /// `start <= self <= end` on the circle.
    pub fn in_range_inclusive(self, start: SeqNum, end: SeqNum) -> bool {
        self.0.wrapping_sub(start.0) <= end.0.wrapping_sub(start.0)
    }

    pub fn max(self, other: SeqNum) -> SeqNum {
        if self >= other {
            self
        } else {
            other
        }
    }

    pub fn min(self, other: SeqNum) -> SeqNum {
        if self <= other {
            self
        } else {
            other
        }
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Not a total order over all of u32 (no such order exists on a circle), but consistent for any
/// set of numbers spanning less than 2^31, which TCP's windows guarantee.
impl Ord for SeqNum {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance(*other).cmp(&0)
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    fn add(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(rhs))
    }
}

impl Add<usize> for SeqNum {
    type Output = SeqNum;
    fn add(self, rhs: usize) -> SeqNum {
        SeqNum(self.0.wrapping_add(rhs as u32))
    }
}

impl AddAssign<u32> for SeqNum {
    fn add_assign(&mut self, rhs: u32) {
        self.0 = self.0.wrapping_add(rhs);
    }
}

impl AddAssign<usize> for SeqNum {
    fn add_assign(&mut self, rhs: usize) {
        self.0 = self.0.wrapping_add(rhs as u32);
    }
}

impl Sub<u32> for SeqNum {
    type Output = SeqNum;
    fn sub(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(rhs))
    }
}

impl SubAssign<u32> for SeqNum {
    fn sub_assign(&mut self, rhs: u32) {
        self.0 = self.0.wrapping_sub(rhs);
    }
}

/// The number of sequence numbers from `rhs` up to `self`; `self` must not be before `rhs`.
impl Sub<SeqNum> for SeqNum {
    type Output = u32;
    fn sub(self, rhs: SeqNum) -> u32 {
        debug_assert!(
            self >= rhs,
            "sequence subtraction went negative: {self:?} - {rhs:?}"
        );
        self.0.wrapping_sub(rhs.0)
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqNum({})", self.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_crosses_the_wrap() {
        let below = SeqNum(u32::MAX - 5);
        let above = below + 10u32;
        assert_eq!(above.0, 4);
        assert!(below < above);
        assert!(above > below);
        assert_eq!(above - below, 10);
        assert_eq!(above.distance(below), 10);
        assert_eq!(below.distance(above), -10);
    }

    #[test]
    fn ranges_cross_the_wrap() {
        let start = SeqNum(u32::MAX - 1);
        let end = start + 4u32;
        assert!(start.in_range(start, end));
        assert!(SeqNum(0).in_range(start, end));
        assert!(SeqNum(1).in_range(start, end));
        assert!(!end.in_range(start, end));
        assert!(end.in_range_inclusive(start, end));
        assert!(!SeqNum(u32::MAX - 2).in_range(start, end));
        assert!(!start.in_range(start, start));
    }

    #[test]
    fn max_and_min_follow_circle_order() {
        let a = SeqNum(u32::MAX);
        let b = SeqNum(3);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
    }
}
