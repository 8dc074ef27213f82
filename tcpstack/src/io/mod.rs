//! Frames in and out: AF_XDP, an AF_PACKET raw-socket fallback, and an in-memory link for tests.
//! Knows Ethernet and MAC addresses, never TCP semantics.

pub mod memory;

use std::io;
use std::task::{Context, Poll};

/// A link that moves Ethernet frames for the runtime's driver task.
pub trait Backend: Send + 'static {
    /// Delivers every frame that has arrived to `sink`, returning how many; `Pending` (with the
    /// waker registered) when none has.
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Poll<io::Result<usize>>;

    /// Queues one frame for transmission. Frames may sit in a batch until [`Backend::flush`].
    /// The runtime passes Ethernet frames of ethertype IPv4 with both MACs zeroed: the backend
    /// writes its own source MAC and the destination MAC (the one the IPv4 destination last sent
    /// from, or a resolved neighbour), so MACs stay in `io`.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Hands every queued frame to the link.
    fn flush(&mut self) -> io::Result<()>;
}
