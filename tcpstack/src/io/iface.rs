//! What the backends need to know about a network interface, asked of the kernel through libc:
//! index, MAC address, MTU, first IPv4 address and number of receive queues.

use std::ffi::{CStr, CString};
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::IoError;
use crate::wire::MacAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    pub mtu: u32,
    /// The first IPv4 address configured on the interface, if any.
    pub ipv4: Option<Ipv4Addr>,
    /// Receive queues (or combined channels); 1 when the driver does not say.
    pub rx_queues: u32,
}

impl Interface {
    pub fn lookup(name: &str) -> Result<Interface, IoError> {
        let no_such = || IoError::NoSuchInterface(name.to_owned());
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(no_such());
        }
        let c_name = CString::new(name).map_err(|_| no_such())?;
        // SAFETY: c_name is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(no_such());
        }
        // SAFETY: plain socket(2) call; the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(IoError::os("socket(AF_INET)", io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };

        let mut req = ifreq(name);
        ioctl(&sock, libc::SIOCGIFHWADDR, &mut req)
            .map_err(|e| IoError::os("ioctl(SIOCGIFHWADDR)", e))?;
        // SAFETY: SIOCGIFHWADDR filled the ifru_hwaddr member.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (byte, raw) in mac.iter_mut().zip(hw.iter()) {
            *byte = *raw as u8;
        }

        let mut req = ifreq(name);
        ioctl(&sock, libc::SIOCGIFMTU, &mut req)
            .map_err(|e| IoError::os("ioctl(SIOCGIFMTU)", e))?;
        // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
        let mtu = u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).unwrap_or(1500);

        Ok(Interface {
            name: name.to_owned(),
            index,
            mac,
            mtu,
            ipv4: first_ipv4(name)?,
            rx_queues: rx_queues(&sock, name),
        })
    }
}

impl Interface {
    /// Whether generic receive offload is on: packet sockets then see merged segments larger
    /// than the MTU, with checksums that do not cover them. `None` when the driver cannot say.
    pub fn gro_enabled(&self) -> Option<bool> {
        // SAFETY: plain socket(2) call; the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd was just returned by socket(2).
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut value = EthtoolValue {
            cmd: ETHTOOL_GGRO,
            data: 0,
        };
        let mut req = ifreq(&self.name);
        req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        ioctl(&sock, libc::SIOCETHTOOL, &mut req).ok()?;
        Some(value.data != 0)
    }
}

impl Interface {
    /// The driver's name (`ethtool -i`), e.g. `veth`; `None` when the driver cannot say.
    pub fn driver(&self) -> Option<String> {
        // SAFETY: plain socket(2) call; the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd was just returned by socket(2).
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ethtool_drvinfo is plain data; all-zero is a valid value.
        let mut info: EthtoolDriverInfo = unsafe { mem::zeroed() };
        info.cmd = ETHTOOL_GDRVINFO;
        let mut req = ifreq(&self.name);
        req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDriverInfo).cast();
        ioctl(&sock, libc::SIOCETHTOOL, &mut req).ok()?;
        let name = CStr::from_bytes_until_nul(&info.driver).ok()?;
        Some(name.to_string_lossy().into_owned())
    }
}

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct EthtoolDriverInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x03;

/// `struct ethtool_value` (linux/ethtool.h).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_GGRO: u32 = 0x2b;

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn ioctl<T>(sock: &OwnedFd, request: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure `request` expects and outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn first_ipv4(name: &str) -> Result<Option<Ipv4Addr>, IoError> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(IoError::os("getifaddrs", io::Error::last_os_error()));
    }
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned, which stays valid until freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let entry_name = unsafe { CStr::from_ptr(entry.ifa_name) };
        // SAFETY: ifa_addr points to at least a sockaddr.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        if entry_name.to_bytes() == name.as_bytes() && family == libc::AF_INET {
            // SAFETY: family AF_INET means the address is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            break;
        }
    }
    // SAFETY: list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Receive queues in use, from ETHTOOL_GCHANNELS (sysfs would show the wrong namespace after
/// a setns). Drivers without channel support have one queue.
fn rx_queues(sock: &OwnedFd, name: &str) -> u32 {
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_data = (&mut channels as *mut EthtoolChannels).cast();
    match ioctl(sock, libc::SIOCETHTOOL, &mut req) {
        Ok(()) => channels.rx_count.max(channels.combined_count).max(1),
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found() {
        let lo = Interface::lookup("lo").expect("every Linux host has lo");
        assert!(lo.index > 0);
        assert_eq!(lo.mac, [0; 6]);
        assert_eq!(lo.ipv4, Some(Ipv4Addr::LOCALHOST));
        assert!(lo.mtu > 0);
        assert!(lo.rx_queues >= 1);
        assert!(
            lo.gro_enabled().is_some(),
            "the core answers ETHTOOL_GGRO for every device"
        );
    }

    #[test]
    fn unknown_interface_is_named() {
        match Interface::lookup("tcps-nope0") {
            Err(IoError::NoSuchInterface(name)) => assert_eq!(name, "tcps-nope0"),
            other => panic!("expected NoSuchInterface, got {other:?}"),
        }
        assert!(matches!(
            Interface::lookup("a-name-longer-than-ifnamsiz"),
            Err(IoError::NoSuchInterface(_))
        ));
    }
}
