//! The raw-socket fallback (`--backend raw`): an AF_PACKET socket on the interface, filtered in
//! the kernel by a classic BPF program to the reserved endpoints and the active-open range.
//! Packet sockets see frames after GRO, so the interface needs `gro off` (a warning says so).
//! The kernel still receives those segments and would answer them with RSTs, so an
//! [`IptablesGuard`] drops the kernel's outgoing RSTs from the reserved ports while the backend
//! lives. Works on any interface and needs no eBPF object; slower than AF_XDP (one copy and one
//! system call per frame).

pub mod filter;
pub mod iptables;

pub use iptables::{remove_leftover_rules, IptablesGuard};

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;

use self::filter::Reservations;
use super::ethernet::{write_macs, Neighbours, Route};
use super::iface::Interface;
use super::{Backend, BackendStats, IoError};

/// Frames read per `poll_recv`, so one busy socket cannot hold the driver forever.
const RECV_BATCH: usize = 64;
/// Frames handed to the kernel per sendmmsg(2).
const SEND_BATCH: usize = 64;
const SOCKET_BUFFER: libc::c_int = 8 << 20;
/// linux/if_packet.h (newer than some libc releases).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

#[derive(Clone, Debug)]
pub struct RawConfig {
    pub iface: String,
    /// Local address; the interface's first IPv4 address when `None`.
    pub addr: Option<Ipv4Addr>,
    /// Local ports of active opens, inclusive.
    pub active_ports: (u16, u16),
}

impl RawConfig {
    pub fn new(iface: impl Into<String>) -> RawConfig {
        RawConfig {
            iface: iface.into(),
            addr: None,
            active_ports: (61000, 65535),
        }
    }
}

pub struct RawBackend {
    socket: AsyncFd<OwnedFd>,
    reservations: Reservations,
    iptables: IptablesGuard,
    neighbours: Neighbours,
    interface: Interface,
    addr: Ipv4Addr,
    rx_buffer: Vec<u8>,
    /// Frames waiting for `flush`; the first `tx_queued` are in use, the rest are spare buffers.
    tx_batch: Vec<Vec<u8>>,
    tx_queued: usize,
    stats: BackendStats,
    /// Socket drops read so far (the kernel's counter resets on each read).
    socket_drops: std::cell::Cell<u64>,
}

impl RawBackend {
    /// Opens the socket and installs the RST rule for the active-open range. Must run inside a
    /// tokio runtime.
    pub fn new(config: RawConfig) -> Result<RawBackend, IoError> {
        let interface = Interface::lookup(&config.iface)?;
        let addr = match config.addr.or(interface.ipv4) {
            Some(addr) => addr,
            None => return Err(IoError::NoIpv4Address(interface.name.clone())),
        };
        let (first, last) = config.active_ports;
        let (first, last) = (first.min(last), first.max(last));
        let reservations = Reservations {
            listeners: Vec::new(),
            active_ranges: vec![(addr, first, last)],
        };
        let mut iptables = IptablesGuard::new();
        iptables.add(iptables::rule(addr, &iptables::port_range(first, last)))?;

        if interface.gro_enabled() == Some(true) {
            tracing::warn!(
                iface = %interface.name,
                "generic receive offload is on: the raw backend drops the merged segments it \
                 sees; turn it off with `ethtool -K {} gro off`",
                interface.name
            );
        }
        let fd = open_packet_socket(interface.index, &reservations)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(IoError::os(
                "registering the raw socket",
                io::Error::other("the raw backend must be created inside a tokio runtime"),
            ));
        }
        // SAFETY: the AsyncFd owns the descriptor for its whole life.
        let socket = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| IoError::os("registering the raw socket", e.into()))?;
        let frame_len = interface.mtu as usize + 18;
        tracing::info!(iface = %interface.name, %addr, "raw backend ready");
        Ok(RawBackend {
            socket,
            reservations,
            iptables,
            neighbours: Neighbours::new(interface.mac, interface.index),
            interface,
            addr,
            rx_buffer: vec![0; frame_len.max(2048)],
            tx_batch: Vec::with_capacity(SEND_BATCH),
            tx_queued: 0,
            stats: BackendStats::default(),
            socket_drops: std::cell::Cell::new(0),
        })
    }

    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The iptables rules this backend holds.
    pub fn iptables_rules(&self) -> &[Vec<String>] {
        self.iptables.rules()
    }

    /// Tells the backend a neighbour's MAC (used when the kernel table is not to be asked).
    pub fn insert_neighbour(&mut self, addr: Ipv4Addr, mac: crate::wire::MacAddr) {
        self.neighbours.insert(addr, mac);
    }

    fn refilter(&self) -> io::Result<()> {
        attach_filter(self.socket.get_ref().as_raw_fd(), &self.reservations)
    }

    /// Hands the queued frames to the kernel with as few sendmmsg(2) calls as it takes.
    fn send_batch(&mut self) {
        let queued = self.tx_queued;
        if queued == 0 {
            return;
        }
        self.tx_queued = 0;
        let fd = self.socket.get_ref().as_raw_fd();
        let frames = &self.tx_batch[..queued];
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all-zero is valid (no address, no control data).
        let mut messages: Vec<libc::mmsghdr> =
            (0..queued).map(|_| unsafe { mem::zeroed() }).collect();
        for (message, iovec) in messages.iter_mut().zip(iovecs.iter_mut()) {
            message.msg_hdr.msg_iov = iovec;
            message.msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < queued {
            // SAFETY: every message points at an iovec describing a live frame buffer.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    messages[done..].as_mut_ptr(),
                    (queued - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent <= 0 {
                if sent < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A full device queue loses the rest as a congested link would; TCP recovers.
                self.stats.tx_dropped += (queued - done) as u64;
                break;
            }
            for frame in &frames[done..done + sent as usize] {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += frame.len() as u64;
            }
            done += sent as usize;
        }
    }

    fn transmit(fd: RawFd, frame: &[u8], stats: &mut BackendStats) {
        // SAFETY: `frame` is valid for reads of its length; the socket is bound to the
        // interface, so no address is needed.
        let sent =
            unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT) };
        if sent < 0 {
            // A full device queue loses the frame as a congested link would; TCP recovers.
            stats.tx_dropped += 1;
        } else {
            stats.tx_frames += 1;
            stats.tx_bytes += frame.len() as u64;
        }
    }
}

impl Backend for RawBackend {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        let fd = self.socket.get_ref().as_raw_fd();
        let stats = &mut self.stats;
        self.neighbours
            .poll_resolved(cx, &mut |frame| Self::transmit(fd, frame, stats));

        let mut received = 0;
        loop {
            let mut guard = match self.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            };
            let mut would_block = false;
            while received < RECV_BATCH {
                // SAFETY: the buffer is valid for writes of its length.
                let len = unsafe {
                    libc::recv(
                        fd,
                        self.rx_buffer.as_mut_ptr().cast(),
                        self.rx_buffer.len(),
                        libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    )
                };
                if len < 0 {
                    let error = io::Error::last_os_error();
                    match error.kind() {
                        io::ErrorKind::WouldBlock => {
                            would_block = true;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => return Poll::Ready(Err(error)),
                    }
                }
                let len = len as usize;
                if len > self.rx_buffer.len() {
                    // Larger than the MTU allows (GRO on the receive path): not a frame the
                    // peer sent as such; drop it.
                    self.stats.kernel_dropped += 1;
                    continue;
                }
                let frame = &self.rx_buffer[..len];
                self.neighbours.learn(frame);
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += len as u64;
                sink(frame);
                received += 1;
            }
            if would_block {
                guard.clear_ready();
                if received == 0 {
                    continue;
                }
            }
            break;
        }
        if received == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(received))
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let local_mac = self.neighbours.local_mac();
        if let Route::Mac(mac) = self.neighbours.route(frame, tokio::time::Instant::now()) {
            if self.tx_queued == self.tx_batch.len() {
                self.tx_batch.push(Vec::with_capacity(frame.len()));
            }
            let buffer = &mut self.tx_batch[self.tx_queued];
            buffer.clear();
            buffer.extend_from_slice(frame);
            write_macs(buffer, mac, local_mac);
            self.tx_queued += 1;
            if self.tx_queued == SEND_BATCH {
                self.send_batch();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_batch();
        Ok(())
    }

    fn reserve(&mut self, endpoint: SocketAddrV4) -> io::Result<()> {
        if self.reservations.listeners.contains(&endpoint) {
            return Ok(());
        }
        self.iptables
            .add(iptables::rule(*endpoint.ip(), &endpoint.port().to_string()))?;
        self.reservations.listeners.push(endpoint);
        self.refilter()
    }

    fn release(&mut self, endpoint: SocketAddrV4) -> io::Result<()> {
        self.reservations.listeners.retain(|l| *l != endpoint);
        self.refilter()?;
        self.iptables.remove(&iptables::rule(
            *endpoint.ip(),
            &endpoint.port().to_string(),
        ))?;
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        let mut stats = self.stats;
        stats.tx_dropped += self.neighbours.dropped;
        stats.tx_awaiting_neighbour = self.neighbours.queued() as u64;
        self.socket_drops
            .set(self.socket_drops.get() + socket_drops(self.socket.get_ref().as_raw_fd()));
        stats.kernel_dropped += self.socket_drops.get();
        stats
    }
}

/// Creates the AF_PACKET socket with the filter attached before it is bound, so no unfiltered
/// frame is ever queued on it.
fn open_packet_socket(ifindex: u32, reservations: &Reservations) -> Result<OwnedFd, IoError> {
    // Protocol 0: receives nothing until bound with a protocol below.
    // SAFETY: plain socket(2) call; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(IoError::os("socket(AF_PACKET)", io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket(2).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = sock.as_raw_fd();
    attach_filter(raw, reservations).map_err(|e| IoError::os("attaching the socket filter", e))?;
    let one: libc::c_int = 1;
    // Our own transmissions must not come back as received frames. Best effort: kernels before
    // 4.20 lack the option, and the filter matches destination ports only anyway.
    let _ = setsockopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one);
    let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &SOCKET_BUFFER));
    let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &SOCKET_BUFFER));

    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of the given length.
    let rc = unsafe {
        libc::bind(
            raw,
            (&addr as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(IoError::os(
            "binding the AF_PACKET socket",
            io::Error::last_os_error(),
        ));
    }
    Ok(sock)
}

fn attach_filter(fd: RawFd, reservations: &Reservations) -> io::Result<()> {
    let program: Vec<libc::sock_filter> = filter::program(reservations)
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many reserved endpoints"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of its size for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Frames the socket dropped for lack of buffer space since the last call (PACKET_STATISTICS
/// resets the kernel's counters on every read).
fn socket_drops(fd: RawFd) -> u64 {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` is writable for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return 0;
    }
    u64::from(stats.tp_drops)
}
