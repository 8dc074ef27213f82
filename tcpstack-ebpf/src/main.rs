//! XDP program of tcpstack: hands the TCP segments addressed to tcpstack's reserved endpoints to
//! the AF_XDP socket of the receive queue; every other frame goes on to the kernel untouched.
//!
//! A segment is tcpstack's when its destination (IPv4 address, port) is in [`RESERVED`] (the
//! listening endpoints) or its destination port lies in the active-open range [`ACTIVE_RANGES`]
//! holds for its destination address. User space (`tcpstack::io::xdp`) fills both maps and
//! registers its sockets in [`XSKS`] before it announces readiness.
//!
//! ICMP destination-unreachable messages (RFC 792, RFC 1191's fragmentation needed) are
//! tcpstack's too when the datagram they quote is one of its segments: quoted source (address,
//! port) reserved as above. User space checks the rest (RFC 5927); other ICMP (echo, errors
//! about the kernel's own traffic) stays the kernel's.
//!
//! Only untagged Ethernet II frames carrying unfragmented IPv4/TCP or ICMP are parsed; VLAN-tagged
//! frames and IPv4 fragments go to the kernel whole, never half-parsed. The map layouts
//! (`EndpointKey`, `PortRange`, the map names and the counter indices) are mirrored in
//! `tcpstack/src/io/xdp/program.rs`: change both together.

#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use aya_log_ebpf::debug;

/// A listening endpoint; both fields in network byte order, as they appear on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EndpointKey {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Inclusive range of local ports used for active opens, in host byte order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Indices of [`COUNTERS`]; each frame the program sees is counted in exactly one of them.
const COUNTER_REDIRECTED: u32 = 0;
const COUNTER_PASSED: u32 = 1;
const COUNTER_MALFORMED: u32 = 2;
/// A reserved segment arrived on a queue without a registered socket, and was dropped.
const COUNTER_NO_SOCKET: u32 = 3;
const COUNTERS_LEN: u32 = 4;

#[map]
static RESERVED: HashMap<EndpointKey, u8> = HashMap::with_max_entries(1024, 0);

/// Key: a local IPv4 address in network byte order.
#[map]
static ACTIVE_RANGES: HashMap<u32, PortRange> = HashMap::with_max_entries(64, 0);

/// Key: receive queue index; value: the AF_XDP socket bound to that queue.
#[map]
static XSKS: XskMap = XskMap::with_max_entries(256, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMP: u8 = 1;
const ICMP_DESTINATION_UNREACHABLE: u8 = 3;
/// Type, code, checksum and 4 more bytes precede the quoted datagram (RFC 792).
const ICMP_HEADER_LEN: usize = 8;
/// More-fragments flag and fragment offset of the IPv4 flags/fragment field (RFC 791 §3.1).
const IPV4_FRAGMENT_MASK: u16 = 0x3fff;

enum Verdict {
    Redirect,
    Pass,
    Malformed,
}

#[xdp]
pub fn tcpstack(ctx: XdpContext) -> u32 {
    match classify(&ctx) {
        Verdict::Pass => {
            count(COUNTER_PASSED);
            xdp_action::XDP_PASS
        }
        Verdict::Malformed => {
            // The kernel's own parser drops and counts it; we only note that we saw it.
            count(COUNTER_MALFORMED);
            xdp_action::XDP_PASS
        }
        Verdict::Redirect => {
            let queue = ctx.rx_queue_index();
            if XSKS.get(queue).is_none() {
                // The segment is ours: handing it to the kernel would only earn the peer a RST.
                count(COUNTER_NO_SOCKET);
                debug!(&ctx, "no AF_XDP socket on queue {}, dropped", queue);
                return xdp_action::XDP_DROP;
            }
            match XSKS.redirect(queue, u64::from(xdp_action::XDP_DROP)) {
                Ok(action) => {
                    count(COUNTER_REDIRECTED);
                    action
                }
                Err(action) => {
                    count(COUNTER_NO_SOCKET);
                    action
                }
            }
        }
    }
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let start = ctx.data();
    let end = ctx.data_end();

    // Ethernet II. A VLAN tag (0x8100, 0x88a8) or any other ethertype is the kernel's business.
    let Some(ethertype) = load_be16(start, end, 12) else {
        return Verdict::Malformed;
    };
    if ethertype != ETH_P_IPV4 {
        return Verdict::Pass;
    }

    // IPv4 (RFC 791 §3.1).
    let Some(version_ihl) = load_u8(start, end, ETH_HLEN) else {
        return Verdict::Malformed;
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Verdict::Malformed;
    }
    let Some(fragment) = load_be16(start, end, ETH_HLEN + 6) else {
        return Verdict::Malformed;
    };
    let Some(protocol) = load_u8(start, end, ETH_HLEN + 9) else {
        return Verdict::Malformed;
    };
    let Some(daddr) = load_raw32(start, end, ETH_HLEN + 16) else {
        return Verdict::Malformed;
    };
    if fragment & IPV4_FRAGMENT_MASK != 0 {
        return Verdict::Pass;
    }
    match protocol {
        IPPROTO_TCP => {
            // TCP destination port, after any IPv4 options (header_len is at most 60).
            let Some(dport) = load_raw16(start, end, ETH_HLEN + header_len + 2) else {
                return Verdict::Malformed;
            };
            classify_endpoint(daddr, dport)
        }
        IPPROTO_ICMP => classify_icmp(start, end, ETH_HLEN + header_len),
        _ => Verdict::Pass,
    }
}

/// An ICMP error at `icmp` is ours when the datagram it quotes came from one of our endpoints.
#[inline(always)]
fn classify_icmp(start: usize, end: usize, icmp: usize) -> Verdict {
    let Some(kind) = load_u8(start, end, icmp) else {
        return Verdict::Malformed;
    };
    if kind != ICMP_DESTINATION_UNREACHABLE {
        return Verdict::Pass;
    }
    let quoted = icmp + ICMP_HEADER_LEN;
    let Some(version_ihl) = load_u8(start, end, quoted) else {
        return Verdict::Pass;
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let Some(protocol) = load_u8(start, end, quoted + 9) else {
        return Verdict::Pass;
    };
    if version_ihl >> 4 != 4 || header_len < 20 || protocol != IPPROTO_TCP {
        return Verdict::Pass;
    }
    let Some(saddr) = load_raw32(start, end, quoted + 12) else {
        return Verdict::Pass;
    };
    let Some(sport) = load_raw16(start, end, quoted + header_len) else {
        return Verdict::Pass;
    };
    classify_endpoint(saddr, sport)
}

/// Redirect when (`addr`, `port`), both in network order, is a reserved endpoint or in the
/// active-open range of `addr`.
#[inline(always)]
fn classify_endpoint(addr: u32, port: u16) -> Verdict {
    let key = EndpointKey {
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: the value is plain data and only read.
    if unsafe { RESERVED.get(&key) }.is_some() {
        return Verdict::Redirect;
    }
    // SAFETY: as above.
    if let Some(range) = unsafe { ACTIVE_RANGES.get(&addr) } {
        let port = u16::from_be(port);
        if range.first <= port && port <= range.last {
            return Verdict::Redirect;
        }
    }
    Verdict::Pass
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer runs on this CPU while we do.
        unsafe { *counter += 1 };
    }
}

/// Pointer to `N` bytes at `offset` past `start`, if they lie before `end`. The explicit
/// comparison against `end` is what the verifier needs to see before every packet access.
#[inline(always)]
fn bytes_at<const N: usize>(start: usize, end: usize, offset: usize) -> Option<*const [u8; N]> {
    let at = start + offset;
    if at + N > end {
        return None;
    }
    Some(at as *const [u8; N])
}

#[inline(always)]
fn load_u8(start: usize, end: usize, offset: usize) -> Option<u8> {
    // SAFETY: bounds checked by `bytes_at`.
    bytes_at::<1>(start, end, offset).map(|p| unsafe { (*p)[0] })
}

#[inline(always)]
fn load_be16(start: usize, end: usize, offset: usize) -> Option<u16> {
    // SAFETY: bounds checked by `bytes_at`; [u8; 2] has no alignment requirement.
    bytes_at::<2>(start, end, offset).map(|p| u16::from_be_bytes(unsafe { *p }))
}

/// Two bytes in network order, kept as they are (for map keys).
#[inline(always)]
fn load_raw16(start: usize, end: usize, offset: usize) -> Option<u16> {
    // SAFETY: as `load_be16`.
    bytes_at::<2>(start, end, offset).map(|p| u16::from_ne_bytes(unsafe { *p }))
}

/// Four bytes in network order, kept as they are (for map keys).
#[inline(always)]
fn load_raw32(start: usize, end: usize, offset: usize) -> Option<u32> {
    // SAFETY: as `load_be16`.
    bytes_at::<4>(start, end, offset).map(|p| u32::from_ne_bytes(unsafe { *p }))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
