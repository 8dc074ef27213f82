//! One AF_XDP socket bound to one receive queue, with its own UMEM and four rings.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use ::xdp::slab::Slab;
use ::xdp::socket::{XdpSocket, XdpSocketBuilder};
use ::xdp::umem::{FrameSize, UmemCfgBuilder};
use ::xdp::{
    CompletionRing, Packet, RingConfigBuilder, RxRing, Umem, WakableFillRing, WakableTxRing,
};
use tokio::io::unix::AsyncFd;

/// Frames handled per pass over the rx ring, and per completion sweep.
pub(crate) const BATCH: usize = 64;
/// Bounded retries of a TX kick: copy mode sends 32 descriptors per sendto(2) and says EAGAIN
/// while more are left.
const MAX_KICKS: usize = 256;

#[derive(Clone, Copy)]
pub(crate) struct QueueConfig {
    pub(crate) frames: u32,
    pub(crate) ring_size: u32,
    pub(crate) frame_size: FrameSize,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QueueStats {
    pub(crate) rx_frames: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_frames: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) tx_dropped: u64,
}

/// One AF_XDP socket's view: what it moved, the kernel's XDP_STATISTICS and how full its
/// rings are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RingStats {
    /// The receive queue the socket is bound to.
    pub queue: u32,
    /// Zero-copy (the driver DMAs into the UMEM) or copy mode (veth, generic XDP).
    pub zero_copy: bool,
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames the kernel dropped for other reasons (no buffer, ...).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full (user space too slow).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
    /// Times the kernel found the tx ring empty when kicked.
    pub tx_ring_empty: u64,
    /// Received frames waiting in the rx ring for user space.
    pub rx_ring_level: u32,
    /// Buffers waiting in the fill ring for arriving frames.
    pub fill_ring_level: u32,
    /// Descriptors waiting in the tx ring.
    pub tx_ring_level: u32,
    /// Sent buffers the kernel has returned that user space has not yet reclaimed.
    pub completion_ring_level: u32,
    /// UMEM frames free for transmit or restocking.
    pub free_frames: u64,
}

pub(crate) struct XskQueue {
    pub(crate) zero_copy: bool,
    // Rings before the UMEM and the socket, so they are unmapped first.
    fill: WakableFillRing,
    rx: RxRing,
    completion: CompletionRing,
    tx: WakableTxRing,
    fill_view: RingView,
    tx_view: RingView,
    rx_view: RingView,
    completion_view: RingView,
    umem: Umem,
    /// Fill-ring slots the kernel consumed that could not be restocked yet (no free frame).
    fill_deficit: usize,
    pub(crate) stats: QueueStats,
    pub(crate) socket: AsyncFd<XdpSocket>,
}

// SAFETY: every raw pointer inside the rings, views and UMEM points into mappings this struct
// owns, and nothing is shared with another thread; moving the whole struct is sound.
unsafe impl Send for XskQueue {}

impl XskQueue {
    /// Creates, binds and stocks the socket. Zero-copy is used when the driver offers it
    /// (the kernel's default), copy mode otherwise; need-wakeup is always requested.
    pub(crate) fn open(ifindex: u32, queue_id: u32, config: QueueConfig) -> io::Result<XskQueue> {
        let umem_config = UmemCfgBuilder {
            frame_size: config.frame_size,
            frame_count: config.frames,
            ..UmemCfgBuilder::default()
        }
        .build()
        .map_err(io::Error::other)?;
        let mut umem = Umem::map(umem_config)?;
        let rings = RingConfigBuilder {
            rx_count: config.ring_size,
            tx_count: config.ring_size,
            fill_count: config.ring_size,
            completion_count: config.ring_size,
        }
        .build()
        .map_err(io::Error::other)?;

        let mut builder = XdpSocketBuilder::new().map_err(socket_error)?;
        let (rings, bind_flags) = builder
            .build_wakable_rings(&umem, rings)
            .map_err(socket_error)?;
        let fd = builder.as_raw_fd();
        let offsets = mmap_offsets(fd)?;
        let fill_view = RingView::map(fd, libc::XDP_UMEM_PGOFF_FILL_RING as i64, &offsets.fr)?;
        let tx_view = RingView::map(fd, libc::XDP_PGOFF_TX_RING, &offsets.tx)?;
        let rx_view = RingView::map(fd, libc::XDP_PGOFF_RX_RING, &offsets.rx)?;
        let completion_view =
            RingView::map(fd, libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64, &offsets.cr)?;
        let socket = builder
            .bind(::xdp::nic::NicIndex::new(ifindex), queue_id, bind_flags)
            .map_err(socket_error)?;
        let zero_copy = xdp_options(socket.as_raw_fd())? & libc::XDP_OPTIONS_ZEROCOPY != 0;

        let (Some(rx), Some(tx)) = (rings.rx_ring, rings.tx_ring) else {
            return Err(io::Error::other("the xdp crate returned no rx/tx ring"));
        };
        let mut fill = rings.fill_ring;
        // Half the frames wait in the fill ring for arriving frames, half are for transmit.
        let stock = (config.frames as usize / 2).min(config.ring_size as usize);
        // SAFETY: the fill ring and the UMEM belong to the same socket.
        let stocked = unsafe { fill.enqueue(&mut umem, stock, false) }?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "the AF_XDP backend must be created inside a tokio runtime",
            ));
        }
        // SAFETY: the AsyncFd owns the socket, so the descriptor stays open and the same for
        // the AsyncFd's whole life.
        let socket =
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }?;
        Ok(XskQueue {
            zero_copy,
            fill,
            rx,
            completion: rings.completion_ring,
            tx,
            fill_view,
            tx_view,
            rx_view,
            completion_view,
            umem,
            fill_deficit: stock - stocked,
            stats: QueueStats::default(),
            socket,
        })
    }

    /// Hands up to [`BATCH`] received frames to `sink`, recycles their buffers through the fill
    /// ring, and returns how many there were.
    pub(crate) fn recv(&mut self, sink: &mut dyn FnMut(&mut [u8])) -> io::Result<usize> {
        let mut batch = ::xdp::slab::StackSlab::<BATCH>::new();
        // SAFETY: the rx ring and the UMEM belong to the same socket.
        let received = unsafe { self.rx.recv(&self.umem, &mut batch) };
        let mut next = batch.pop_back();
        while let Some(mut packet) = next.take() {
            next = batch.pop_back();
            if let Some(next) = &next {
                prefetch(next);
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += packet.len() as u64;
            sink(&mut packet);
            self.umem.free_packet(packet);
        }
        self.restock(received)?;
        Ok(received)
    }

    fn restock(&mut self, consumed: usize) -> io::Result<()> {
        let wanted = self.fill_deficit + consumed;
        if wanted == 0 {
            return Ok(());
        }
        let wakeup = self.fill_view.needs_wakeup();
        // SAFETY: the fill ring and the UMEM belong to the same socket.
        let stocked = unsafe { self.fill.enqueue(&mut self.umem, wanted, wakeup) }?;
        self.fill_deficit = wanted - stocked;
        Ok(())
    }

    /// Copies `frame` into a UMEM buffer and puts it on the tx ring; `prepare` then edits the
    /// copy in place (MACs). Returns false, counting a drop, when no buffer or slot is free.
    pub(crate) fn send(&mut self, frame: &[u8], prepare: impl FnOnce(&mut [u8])) -> bool {
        // SAFETY: the packet is returned to this UMEM by the completion ring or below.
        let mut packet = match unsafe { self.umem.alloc() } {
            Some(packet) => packet,
            None => {
                self.reclaim();
                // SAFETY: as above.
                match unsafe { self.umem.alloc() } {
                    Some(packet) => packet,
                    None => {
                        self.stats.tx_dropped += 1;
                        return false;
                    }
                }
            }
        };
        if packet.append(frame).is_err() {
            self.umem.free_packet(packet);
            self.stats.tx_dropped += 1;
            return false;
        }
        prepare(&mut packet);
        let mut one = OnePacket(Some(packet));
        // SAFETY: the packet comes from this socket's UMEM.
        let queued = unsafe { self.tx.send(&mut one, false) }.unwrap_or(0);
        if let Some(packet) = one.0.take() {
            self.umem.free_packet(packet);
        }
        if queued == 0 {
            self.stats.tx_dropped += 1;
            return false;
        }
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += frame.len() as u64;
        true
    }

    /// Makes the kernel transmit what the tx ring holds, then recycles completed buffers.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        // Copy mode transmits only inside sendto(2); zero-copy drivers need the kick only when
        // they set need-wakeup.
        if self.tx_view.pending() > 0 && (!self.zero_copy || self.tx_view.needs_wakeup()) {
            self.kick()?;
        }
        self.reclaim();
        // Buffers freed by completions can restock a starved fill ring.
        self.restock(0)
    }

    fn kick(&mut self) -> io::Result<()> {
        let fd = self.socket.get_ref().as_raw_fd();
        for _ in 0..MAX_KICKS {
            if self.tx_view.pending() == 0 {
                return Ok(());
            }
            // SAFETY: a zero-length sendto on an AF_XDP socket only starts transmission.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                continue;
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                // More left (copy mode batches 32), the device queue is busy, or the completion
                // ring is full: recycle completions and go on.
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => self.reclaim(),
                // The link is down: the frames stay queued, as on a real NIC.
                Some(libc::ENETDOWN | libc::ENXIO) => return Ok(()),
                _ => return Err(error),
            }
        }
        Ok(())
    }

    fn reclaim(&mut self) {
        while self.completion.dequeue(&mut self.umem, BATCH) > 0 {}
    }

    /// The kernel's counters for this socket and the rings' levels.
    pub(crate) fn ring_stats(&self, queue: u32) -> RingStats {
        let kernel = self.socket.get_ref().statistics().ok();
        RingStats {
            queue,
            zero_copy: self.zero_copy,
            rx_frames: self.stats.rx_frames,
            tx_frames: self.stats.tx_frames,
            rx_dropped: kernel.as_ref().map_or(0, |s| s.rx_dropped),
            rx_invalid_descs: kernel.as_ref().map_or(0, |s| s.rx_invalid_descs),
            tx_invalid_descs: kernel.as_ref().map_or(0, |s| s.tx_invalid_descs),
            rx_ring_full: kernel.as_ref().map_or(0, |s| s.rx_ring_full),
            fill_ring_empty: kernel.as_ref().map_or(0, |s| s.rx_fill_ring_empty_descs),
            tx_ring_empty: kernel.as_ref().map_or(0, |s| s.tx_ring_empty_descs),
            rx_ring_level: self.rx_view.pending(),
            fill_ring_level: self.fill_view.pending(),
            tx_ring_level: self.tx_view.pending(),
            completion_ring_level: self.completion_view.pending(),
            free_frames: self.umem.allocatable() as u64,
        }
    }

    /// The kernel's drop counters for this socket.
    pub(crate) fn kernel_dropped(&self) -> u64 {
        match self.socket.get_ref().statistics() {
            Ok(s) => s.rx_dropped + s.rx_invalid_descs + s.tx_invalid_descs + s.rx_ring_full,
            Err(_) => 0,
        }
    }
}

/// A slab of at most one packet, for submitting a frame as soon as it is written.
struct OnePacket(Option<Packet>);

impl Slab for OnePacket {
    fn available(&self) -> usize {
        usize::from(self.0.is_none())
    }
    fn len(&self) -> usize {
        usize::from(self.0.is_some())
    }
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }
    fn push_front(&mut self, packet: Packet) -> Option<Packet> {
        if self.0.is_some() {
            return Some(packet);
        }
        self.0 = Some(packet);
        None
    }
    fn pop_back(&mut self) -> Option<Packet> {
        self.0.take()
    }
}

/// A read-only second mapping of a ring's producer, consumer and flags words. The `xdp` crate
/// does not expose the need-wakeup flag or the rings' levels: the flag and the tx level are
/// needed to kick only when the kernel asks for it, every level for the statistics.
struct RingView {
    base: NonNull<u8>,
    len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
}

impl RingView {
    fn map(fd: RawFd, page_offset: i64, offsets: &libc::xdp_ring_offset) -> io::Result<RingView> {
        let len = offsets.desc as usize;
        // SAFETY: maps the head of a ring the socket has configured; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                page_offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        let at = |offset: u64| -> *const AtomicU32 {
            // SAFETY: the kernel places these words inside the first `desc` bytes.
            unsafe { base.as_ptr().add(offset as usize).cast() }
        };
        Ok(RingView {
            base,
            len,
            producer: at(offsets.producer),
            consumer: at(offsets.consumer),
            flags: at(offsets.flags),
        })
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: the mapping lives as long as self.
        unsafe { (*self.flags).load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    /// Descriptors the producer has published and the consumer not yet taken.
    fn pending(&self) -> u32 {
        // SAFETY: the mapping lives as long as self.
        unsafe {
            let producer = (*self.producer).load(Ordering::Acquire);
            let consumer = (*self.consumer).load(Ordering::Acquire);
            producer.wrapping_sub(consumer)
        }
    }
}

impl Drop for RingView {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn mmap_offsets(fd: RawFd) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: plain data; all-zero is valid.
    let mut offsets: libc::xdp_mmap_offsets = unsafe { mem::zeroed() };
    getsockopt(fd, libc::XDP_MMAP_OFFSETS, &mut offsets)?;
    Ok(offsets)
}

fn xdp_options(fd: RawFd) -> io::Result<u32> {
    let mut options = libc::xdp_options { flags: 0 };
    getsockopt(fd, libc::XDP_OPTIONS, &mut options)?;
    Ok(options.flags)
}

fn getsockopt<T>(fd: RawFd, name: libc::c_int, value: &mut T) -> io::Result<()> {
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, name, (value as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn socket_error(error: ::xdp::socket::SocketError) -> io::Error {
    use ::xdp::socket::SocketError;
    match error {
        SocketError::SocketCreation(e) | SocketError::Bind(e) => e,
        SocketError::SetSockOpt { inner, .. }
        | SocketError::GetSockOpt { inner, .. }
        | SocketError::RingMap { inner, .. } => inner,
    }
}

/// Starts loading a received frame into the cache while the one before it is processed. In copy
/// mode the kernel wrote the frame from the sender's CPU moments ago, so its first touch here
/// (the neighbour learning, then the TCP checksum over every byte) waited on another core's
/// cache: measured as a quarter of the receive path's cycles.
#[inline]
fn prefetch(frame: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in frame.chunks(64) {
        // SAFETY: a prefetch is only a hint; the address lies inside `frame`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = frame;
}
