//! The receive buffer: a fixed ring holding in-order data not yet read by the application, and,
//! after it, out-of-order data placed at its final position. An assembler with a bounded number
//! of ranges remembers which out-of-order bytes are present, so nothing a peer sends can make it
//! grow: data beyond the ring is cut off and ranges beyond the limit are forgotten (the peer
//! retransmits them).

/// Most out-of-order ranges remembered at once (smoltcp uses 4; Linux has no fixed limit).
pub(crate) const MAX_RANGES: usize = 32;

/// The largest window shift RFC 7323 §2.3 allows.
pub(crate) const MAX_WINDOW_SHIFT: u8 = 14;

/// The smallest window-scale shift that lets a 16-bit window field offer all of `capacity`.
pub(crate) fn window_shift_for(capacity: usize) -> u8 {
    let mut shift = 0u8;
    while shift < MAX_WINDOW_SHIFT && (capacity >> shift) > usize::from(u16::MAX) {
        shift += 1;
    }
    shift
}

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// `capacity` bytes plus 2^shift − 1 of slack: a scaled window field counts in units of
    /// 2^shift, and since an offered window never shrinks (RFC 9293 §3.8.6.2.2) it is rounded up,
    /// so the ring must hold data up to the rounded-up edge rather than drop it. Allocated with the
    /// first byte of data, so idle connections cost no buffer memory.
    ring: Box<[u8]>,
    slack: usize,
    /// The size the window offers; the slack beyond it is never offered on its own.
    capacity: usize,
    /// Index of the first readable byte.
    read: usize,
    /// In-order bytes ready for the application.
    readable: usize,
    /// Out-of-order ranges as offsets from the next expected byte: sorted, disjoint, not touching.
    ranges: Vec<(usize, usize)>,
}

impl RecvBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        Self::growable(capacity, capacity)
    }

    /// A buffer of `capacity` that may [`grow`](Self::grow) up to `max_capacity`; its slack
    /// suits the window shift that covers `max_capacity`.
    pub(crate) fn growable(capacity: usize, max_capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let slack = (1usize << window_shift_for(max_capacity.max(capacity))) - 1;
        RecvBuffer {
            ring: Box::default(),
            slack,
            capacity,
            read: 0,
            readable: 0,
            ranges: Vec::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn readable(&self) -> usize {
        self.readable
    }

    /// Room after the next expected byte: the most the window may offer.
    pub(crate) fn window(&self) -> usize {
        self.capacity.saturating_sub(self.readable)
    }

    pub(crate) fn has_out_of_order(&self) -> bool {
        !self.ranges.is_empty()
    }

    /// The out-of-order ranges as `[start, end)` offsets from the next expected byte, in order.
    pub(crate) fn out_of_order(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.ranges.iter().copied()
    }

    /// Stores `data`, whose first byte is `offset` bytes after the next expected one. Returns how
    /// many bytes became readable in order (0 for out-of-order data).
    pub(crate) fn write(&mut self, offset: usize, data: &[u8]) -> usize {
        let room = self.capacity + self.slack - self.readable;
        if offset >= room || data.is_empty() {
            return 0;
        }
        if self.ring.is_empty() {
            self.ring = vec![0u8; self.capacity + self.slack].into_boxed_slice();
        }
        let len = data.len().min(room - offset);
        self.copy_in(self.readable + offset, &data[..len]);
        if offset > 0 {
            self.add_range(offset, offset + len);
            return 0;
        }
        let mut contiguous = len;
        let merged = self
            .ranges
            .iter()
            .take_while(|&&(start, _)| start <= contiguous)
            .count();
        for &(_, end) in &self.ranges[..merged] {
            contiguous = contiguous.max(end);
        }
        self.ranges.drain(..merged);
        for range in &mut self.ranges {
            range.0 -= contiguous;
            range.1 -= contiguous;
        }
        self.readable += contiguous;
        contiguous
    }

    /// Raises the capacity to `capacity` (never lowers it), keeping every byte held, in order
    /// and out of order, at its offset.
    pub(crate) fn grow(&mut self, capacity: usize) {
        if capacity <= self.capacity {
            return;
        }
        if !self.ring.is_empty() {
            let mut ring = vec![0u8; capacity + self.slack].into_boxed_slice();
            let (head, tail) = self.ring.split_at(self.read);
            ring[..tail.len()].copy_from_slice(tail);
            ring[tail.len()..tail.len() + head.len()].copy_from_slice(head);
            self.ring = ring;
            self.read = 0;
        }
        self.capacity = capacity;
    }

    /// Copies readable data into `buf`; returns how much.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.readable);
        if n == 0 {
            return 0;
        }
        let cap = self.ring.len();
        let first = n.min(cap - self.read);
        buf[..first].copy_from_slice(&self.ring[self.read..self.read + first]);
        buf[first..n].copy_from_slice(&self.ring[..n - first]);
        self.read = (self.read + n) % cap;
        self.readable -= n;
        n
    }

    fn copy_in(&mut self, offset: usize, data: &[u8]) {
        let cap = self.ring.len();
        let at = (self.read + offset) % cap;
        let first = data.len().min(cap - at);
        self.ring[at..at + first].copy_from_slice(&data[..first]);
        self.ring[..data.len() - first].copy_from_slice(&data[first..]);
    }

    fn add_range(&mut self, mut start: usize, mut end: usize) {
        let first = self
            .ranges
            .iter()
            .position(|&(_, e)| e >= start)
            .unwrap_or(self.ranges.len());
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].0 <= end {
            start = start.min(self.ranges[last].0);
            end = end.max(self.ranges[last].1);
            last += 1;
        }
        if first == last && self.ranges.len() >= MAX_RANGES {
            return;
        }
        self.ranges
            .splice(first..last, std::iter::once((start, end)));
    }

    #[cfg(test)]
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(buf: &mut RecvBuffer) -> Vec<u8> {
        let mut out = vec![0; buf.readable()];
        let n = buf.read(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn reassembles_out_of_order_and_overlapping_segments() {
        let mut buf = RecvBuffer::new(16);
        assert_eq!(buf.write(6, b"ghi"), 0);
        assert_eq!(buf.write(3, b"def"), 0);
        assert_eq!(buf.range_count(), 1);
        assert_eq!(buf.write(11, b"lm"), 0);
        assert_eq!(buf.range_count(), 2);
        assert_eq!(buf.write(0, b"abcd"), 9);
        assert_eq!(read_all(&mut buf), b"abcdefghi");
        assert_eq!(buf.write(0, b"jk"), 4);
        assert_eq!(read_all(&mut buf), b"jklm");
        assert!(!buf.has_out_of_order());
    }

    #[test]
    fn data_beyond_the_ring_is_cut_off_and_wraps() {
        let mut buf = RecvBuffer::new(8);
        assert_eq!(buf.write(0, b"0123456789"), 8);
        assert_eq!(buf.window(), 0);
        assert_eq!(buf.write(0, b"x"), 0);
        let mut out = [0u8; 5];
        assert_eq!(buf.read(&mut out), 5);
        assert_eq!(&out, b"01234");
        assert_eq!(buf.write(0, b"abcdef"), 5);
        assert_eq!(read_all(&mut buf), b"567abcde");
    }

    #[test]
    fn memory_is_taken_with_the_first_byte_of_data() {
        let mut buf = RecvBuffer::new(256 * 1024);
        assert_eq!(buf.ring.len(), 0);
        assert_eq!(buf.read(&mut [0u8; 16]), 0);
        assert_eq!(buf.write(0, b""), 0);
        assert_eq!(buf.ring.len(), 0);
        assert_eq!(buf.window(), 256 * 1024);
        assert_eq!(buf.write(5, b"x"), 0);
        assert_eq!(buf.ring.len(), 256 * 1024 + 7);
    }

    #[test]
    fn growing_keeps_in_order_and_out_of_order_data_across_the_wrap() {
        let mut buf = RecvBuffer::growable(8, 64);
        assert_eq!(buf.write(0, b"012345"), 6);
        let mut out = [0u8; 5];
        assert_eq!(buf.read(&mut out), 5);
        // The ring now wraps: "5abc" in order, then a two-byte hole, then "xy".
        assert_eq!(buf.write(0, b"abc"), 3);
        assert_eq!(buf.write(2, b"xy"), 0);
        buf.grow(32);
        assert_eq!(buf.capacity(), 32);
        assert_eq!(buf.window(), 28);
        assert_eq!(buf.write(0, b"de"), 4);
        assert_eq!(read_all(&mut buf), b"5abcdexy");
        buf.grow(16);
        assert_eq!(buf.capacity(), 32, "never shrinks");
    }

    #[test]
    fn range_count_is_bounded() {
        let mut buf = RecvBuffer::new(1024);
        for i in 0..200 {
            buf.write(2 + 3 * i, b"x");
        }
        assert_eq!(buf.range_count(), MAX_RANGES);
    }
}
