//! Frames in and out: AF_XDP, an AF_PACKET raw-socket fallback, and an in-memory link for tests.
//! Knows Ethernet and MAC addresses, never TCP semantics.

mod error;
pub mod ethernet;
pub mod iface;
pub mod memory;
pub mod netlink;
pub mod raw;
pub mod xdp;

pub use error::{require_root, IoError};

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
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

    /// Steers the segments addressed to `endpoint` (a listener) to this backend from now on;
    /// when this returns, they no longer reach the kernel. Links that see every frame anyway
    /// (the in-memory one) keep the default, which does nothing.
    fn reserve(&mut self, endpoint: SocketAddrV4) -> io::Result<()> {
        let _ = endpoint;
        Ok(())
    }

    /// Undoes [`Backend::reserve`].
    fn release(&mut self, endpoint: SocketAddrV4) -> io::Result<()> {
        let _ = endpoint;
        Ok(())
    }

    /// Counters for the statistics line and the summary.
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }

    /// Each AF_XDP socket's rings and kernel drop counters, by queue; empty for backends
    /// without rings.
    fn ring_stats(&self) -> Vec<xdp::RingStats> {
        Vec::new()
    }
}

/// What a backend has moved and lost. Counters a backend does not have stay zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames dropped on transmit: no free buffer, ring full, or no neighbour resolved in time.
    pub tx_dropped: u64,
    /// Frames queued while their destination MAC is being resolved.
    pub tx_awaiting_neighbour: u64,
    /// Frames the kernel dropped before user space saw them (AF_XDP: rx ring full, no fill
    /// buffer, invalid descriptors; AF_PACKET: socket buffer overruns).
    pub kernel_dropped: u64,
    /// XDP program verdicts (xdp backend only), summed over CPUs.
    pub xdp: XdpCounters,
}

/// The per-CPU counters of the XDP program, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XdpCounters {
    pub redirected: u64,
    pub passed: u64,
    pub malformed: u64,
    /// Reserved segments dropped because no AF_XDP socket was bound to their receive queue.
    pub no_socket: u64,
}

/// Which backend `open` creates (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    #[default]
    Xdp,
    Raw,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Xdp => "xdp",
            BackendKind::Raw => "raw",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendKind, String> {
        match s {
            "xdp" => Ok(BackendKind::Xdp),
            "raw" => Ok(BackendKind::Raw),
            other => Err(format!("unknown backend `{other}`: use xdp or raw")),
        }
    }
}

/// Everything `open` needs, as the command line gives it.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub iface: String,
    /// Local address; the interface's first IPv4 address when `None`.
    pub addr: Option<Ipv4Addr>,
    pub xdp_mode: xdp::XdpMode,
    /// AF_XDP sockets (queues 0..n); all receive queues when `None`.
    pub queues: Option<u32>,
    /// Local ports of active opens (`EndpointConfig::ephemeral_ports`).
    pub active_ports: (u16, u16),
}

impl BackendConfig {
    pub fn new(kind: BackendKind, iface: impl Into<String>) -> BackendConfig {
        BackendConfig {
            kind,
            iface: iface.into(),
            addr: None,
            xdp_mode: xdp::XdpMode::Auto,
            queues: None,
            active_ports: (61000, 65535),
        }
    }
}

/// Opens the backend `config` names on its interface, inside the current tokio runtime.
/// Returns it with the local address it serves (the interface's when none was given).
/// Listeners still need [`Backend::reserve`] before their segments arrive.
pub fn open(config: &BackendConfig) -> Result<(Box<dyn Backend>, Ipv4Addr), IoError> {
    match config.kind {
        BackendKind::Xdp => {
            let backend = xdp::XdpBackend::new(xdp::XdpConfig {
                iface: config.iface.clone(),
                mode: config.xdp_mode,
                addr: config.addr,
                queues: config.queues,
                active_ports: config.active_ports,
                ..xdp::XdpConfig::new(config.iface.clone())
            })?;
            let addr = backend.addr();
            Ok((Box::new(backend), addr))
        }
        BackendKind::Raw => {
            let backend = raw::RawBackend::new(raw::RawConfig {
                iface: config.iface.clone(),
                addr: config.addr,
                active_ports: config.active_ports,
            })?;
            let addr = backend.addr();
            Ok((Box::new(backend), addr))
        }
    }
}
