//! The send buffer: a byte ring of unacknowledged and unsent data. Segment payloads are copied out
//! into a reusable `BytesMut` arena and handed out as `Bytes`, so steady-state transmission does
//! not allocate.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Largest arena chunk for outgoing payloads; reclaimed once the previous segments are dropped.
const ARENA_CHUNK: usize = 64 * 1024;

/// A buffer that empties keeps at most this much memory: an idle connection gives the rest back
/// (what a request/response exchange of small messages uses stays, so it does not reallocate).
const KEEP_WHEN_EMPTY: usize = 4 * 1024;

#[derive(Debug)]
pub(crate) struct SendBuffer {
    ring: VecDeque<u8>,
    capacity: usize,
    arena: BytesMut,
}

impl SendBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        SendBuffer {
            ring: VecDeque::new(),
            capacity,
            arena: BytesMut::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    pub(crate) fn free(&self) -> usize {
        self.capacity.saturating_sub(self.ring.len())
    }

    /// Appends as much of `data` as fits; returns how much.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        self.ring.extend(&data[..n]);
        n
    }

    /// Drops `n` acknowledged bytes from the front.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.ring.len());
        self.ring.drain(..n);
        if self.ring.is_empty() {
            if self.ring.capacity() > KEEP_WHEN_EMPTY {
                self.ring = VecDeque::new();
            }
            if self.arena.capacity() > KEEP_WHEN_EMPTY {
                self.arena = BytesMut::new();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.ring = VecDeque::new();
        self.arena = BytesMut::new();
    }

    /// A copy of `len` bytes starting `offset` bytes after the front.
    pub(crate) fn slice(&mut self, offset: usize, len: usize) -> Bytes {
        let end = (offset + len).min(self.ring.len());
        if offset >= end {
            return Bytes::new();
        }
        let len = end - offset;
        if self.arena.capacity() < len {
            // Room for what is queued, up to a chunk: a few bytes of a small exchange do not
            // take a whole chunk.
            self.arena
                .reserve(ARENA_CHUNK.min(self.ring.len()).max(len));
        }
        let (front, back) = self.ring.as_slices();
        if offset < front.len() {
            let first = &front[offset..front.len().min(end)];
            self.arena.extend_from_slice(first);
            if end > front.len() {
                self.arena.extend_from_slice(&back[..end - front.len()]);
            }
        } else {
            self.arena
                .extend_from_slice(&back[offset - front.len()..end - front.len()]);
        }
        self.arena.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_is_bounded_and_slices_cross_the_ring_seam() {
        let mut buf = SendBuffer::new(8);
        assert_eq!(buf.push(b"abcdef"), 6);
        buf.consume(4);
        assert_eq!(buf.push(b"ghijklmn"), 6);
        assert_eq!(buf.len(), 8);
        assert_eq!(buf.free(), 0);
        assert_eq!(&buf.slice(0, 8)[..], b"efghijkl");
        assert_eq!(&buf.slice(1, 3)[..], b"fgh");
        assert_eq!(&buf.slice(6, 10)[..], b"kl");
        assert!(buf.slice(8, 1).is_empty());
    }

    #[test]
    fn an_emptied_buffer_gives_its_memory_back() {
        let mut buf = SendBuffer::new(1 << 20);
        assert_eq!(buf.push(&[7; 100_000]), 100_000);
        let segment = buf.slice(0, 1460);
        assert!(buf.arena.capacity() + segment.len() >= 1460);
        buf.consume(100_000);
        assert_eq!((buf.ring.capacity(), buf.arena.capacity()), (0, 0));
        assert_eq!(segment.len(), 1460, "segments in flight keep their bytes");
        // A small exchange keeps its few bytes of ring.
        buf.push(b"ping");
        let _ = buf.slice(0, 4);
        buf.consume(4);
        assert!(buf.ring.capacity() > 0 && buf.ring.capacity() <= KEEP_WHEN_EMPTY);
    }
}
