//! Loading, attaching and feeding the XDP program of `tcpstack-ebpf`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfLoader};

use super::XdpMode;
use crate::io::{IoError, XdpCounters};

/// The object `tcpstack/build.rs` embedded: empty when it was not built (`cargo xtask build`).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpstack-ebpf.o"));

/// Whether this binary carries the XDP program.
pub fn object_embedded() -> bool {
    !EBPF_OBJECT.is_empty()
}

const PROGRAM: &str = "tcpstack";
const RESERVED: &str = "RESERVED";
const ACTIVE_RANGES: &str = "ACTIVE_RANGES";
const XSKS: &str = "XSKS";
const COUNTERS: &str = "COUNTERS";

/// `EndpointKey` of tcpstack-ebpf: address and port in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EndpointKey {
    addr: u32,
    port: u16,
    pad: u16,
}

impl EndpointKey {
    pub(crate) fn new(endpoint: SocketAddrV4) -> EndpointKey {
        EndpointKey {
            addr: u32::from_ne_bytes(endpoint.ip().octets()),
            port: u16::from_ne_bytes(endpoint.port().to_be_bytes()),
            pad: 0,
        }
    }
}

// SAFETY: repr(C) plain integers without padding (4 + 2 + 2 bytes).
unsafe impl aya::Pod for EndpointKey {}

/// `PortRange` of tcpstack-ebpf, host byte order, inclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortRange {
    first: u16,
    last: u16,
}

// SAFETY: repr(C) plain integers without padding.
unsafe impl aya::Pod for PortRange {}

/// The loaded program, attached to one interface until dropped.
pub(crate) struct XdpProgram {
    reserved: HashMap<MapData, EndpointKey, u8>,
    active_ranges: HashMap<MapData, u32, PortRange>,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    logger: Option<tokio::task::JoinHandle<()>>,
    /// Owns the program; dropping it detaches the program from the interface.
    _ebpf: Ebpf,
}

impl XdpProgram {
    pub(crate) fn load_and_attach(
        iface: &str,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<XdpProgram, IoError> {
        if !object_embedded() {
            return Err(IoError::EbpfObjectMissing);
        }
        let debug = tracing::enabled!(target: "tcpstack_ebpf", tracing::Level::DEBUG);
        // aya_log_common::Level: 0 silences the program's log statements, 4 is Debug.
        let log_level: u8 = if debug { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .load(EBPF_OBJECT)
            .map_err(|e| match e {
                aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
                    if crate::io::error::is_permission_error(&io_error) =>
                {
                    IoError::NotPermitted("creating BPF maps")
                }
                other => IoError::EbpfLoad(other.to_string()),
            })?;

        let logger = if debug {
            aya_log::EbpfLogger::init(&mut ebpf)
                .ok()
                .and_then(spawn_logger)
        } else {
            None
        };

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| IoError::EbpfLoad(format!("the object has no program `{PROGRAM}`")))?
            .try_into()
            .map_err(|e: ProgramError| IoError::EbpfLoad(e.to_string()))?;
        program.load().map_err(|e| match e {
            ProgramError::SyscallError(ref s)
                if crate::io::error::is_permission_error(&s.io_error) =>
            {
                IoError::NotPermitted("loading the XDP program")
            }
            ProgramError::LoadError { ref io_error, .. }
                if crate::io::error::is_permission_error(io_error) =>
            {
                IoError::NotPermitted("loading the XDP program")
            }
            other => IoError::EbpfLoad(other.to_string()),
        })?;
        let aya_mode = match mode {
            XdpMode::Auto => AyaXdpMode::Default,
            XdpMode::Native => AyaXdpMode::Driver,
            XdpMode::Skb => AyaXdpMode::Skb,
        };
        program
            .attach_to_if_index(ifindex, aya_mode)
            .map_err(|e| attach_error(iface, mode, e))?;

        let reserved = take_map(&mut ebpf, RESERVED)?;
        let active_ranges = take_map(&mut ebpf, ACTIVE_RANGES)?;
        let xsks = take_map(&mut ebpf, XSKS)?;
        let counters = take_map(&mut ebpf, COUNTERS)?;
        Ok(XdpProgram {
            reserved,
            active_ranges,
            xsks,
            counters,
            logger,
            _ebpf: ebpf,
        })
    }

    pub(crate) fn reserve(&mut self, endpoint: SocketAddrV4) -> std::io::Result<()> {
        self.reserved
            .insert(EndpointKey::new(endpoint), 1, 0)
            .map_err(map_error)
    }

    pub(crate) fn release(&mut self, endpoint: SocketAddrV4) -> std::io::Result<()> {
        match self.reserved.remove(&EndpointKey::new(endpoint)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error(e)),
        }
    }

    /// Steers segments to `addr` whose destination port lies in `first..=last` (active opens).
    pub(crate) fn reserve_active_range(
        &mut self,
        addr: Ipv4Addr,
        first: u16,
        last: u16,
    ) -> std::io::Result<()> {
        self.active_ranges
            .insert(
                u32::from_ne_bytes(addr.octets()),
                PortRange { first, last },
                0,
            )
            .map_err(map_error)
    }

    pub(crate) fn register_socket(
        &mut self,
        queue: u32,
        socket: &impl AsRawFd,
    ) -> std::io::Result<()> {
        self.xsks
            .set(queue, socket.as_raw_fd(), 0)
            .map_err(map_error)
    }

    pub(crate) fn counters(&self) -> XdpCounters {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|values| values.iter().copied().fold(0u64, u64::wrapping_add))
                .unwrap_or(0)
        };
        XdpCounters {
            redirected: sum(0),
            passed: sum(1),
            malformed: sum(2),
            no_socket: sum(3),
        }
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        if let Some(task) = self.logger.take() {
            task.abort();
        }
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, IoError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| IoError::EbpfLoad(format!("the object has no map `{name}`")))?;
    T::try_from(map).map_err(|e| IoError::EbpfLoad(format!("map `{name}`: {e}")))
}

fn map_error(error: aya::maps::MapError) -> std::io::Error {
    match error {
        aya::maps::MapError::SyscallError(s) => s.io_error,
        other => std::io::Error::other(other),
    }
}

fn attach_error(iface: &str, mode: XdpMode, error: ProgramError) -> IoError {
    let os_error = match &error {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    match os_error {
        Some(libc::EPERM | libc::EACCES) => IoError::NotPermitted("attaching the XDP program"),
        Some(libc::EBUSY | libc::EEXIST) => IoError::XdpBusy(iface.to_owned()),
        // The kernel's answer when the driver has no ndo_bpf (dummy, bridge, loopback, ...).
        Some(libc::EOPNOTSUPP) if mode == XdpMode::Native => {
            IoError::NativeXdpUnsupported(iface.to_owned())
        }
        _ => IoError::XdpRefused {
            iface: iface.to_owned(),
            mode: mode.name(),
            reason: match &error {
                ProgramError::SyscallError(s) => format!("{}: {}", s.call, s.io_error),
                other => other.to_string(),
            },
        },
    }
}

/// Forwards the program's aya-log records to the `log` facade (and so to tracing).
fn spawn_logger(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
) -> Option<tokio::task::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    // SAFETY: the AsyncFd owns the logger and with it the ring buffer's descriptor.
    let mut logger = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }
    .ok()?;
    Some(handle.spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_key_has_the_wire_layout() {
        let key = EndpointKey::new(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 0x1f90));
        // SAFETY: EndpointKey is 8 bytes of plain integers.
        let bytes: [u8; 8] = unsafe { std::mem::transmute(key) };
        assert_eq!(bytes, [198, 18, 0, 1, 0x1f, 0x90, 0, 0]);
    }
}
