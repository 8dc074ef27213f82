//! The kernel's routing and neighbour tables over rtnetlink, hand-written on libc: the next hop
//! toward an address (RTM_GETROUTE), the MAC of an IPv4 neighbour (RTM_GETNEIGH), and a request
//! that the kernel resolve one it does not know (RTM_NEWNEIGH with NTF_USE, which makes the
//! kernel send the ARP request and keep the answer).

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::wire::MacAddr;

const NLMSG_HDR_LEN: usize = 16;
const NDMSG_LEN: usize = 12;
const RTA_HDR_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Neighbour states in which the link-layer address can be used (linux/neighbour.h).
const NUD_USABLE: u16 = libc::NUD_REACHABLE
    | libc::NUD_STALE
    | libc::NUD_DELAY
    | libc::NUD_PROBE
    | libc::NUD_PERMANENT
    | libc::NUD_NOARP;

/// A NETLINK_ROUTE socket for neighbour requests.
pub struct NeighbourTable {
    sock: OwnedFd,
    sequence: u32,
    buffer: Vec<u8>,
}

impl NeighbourTable {
    pub fn open() -> io::Result<NeighbourTable> {
        // SAFETY: plain socket(2) call; the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2).
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval that outlives the call.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(NeighbourTable {
            sock,
            sequence: 0,
            buffer: vec![0; 8192],
        })
    }

    /// The MAC the kernel holds for `addr` on interface `ifindex`, if it holds a usable one.
    pub fn lookup(&mut self, ifindex: u32, addr: Ipv4Addr) -> io::Result<Option<MacAddr>> {
        self.sequence = self.sequence.wrapping_add(1);
        let request = neighbour_request(
            libc::RTM_GETNEIGH,
            libc::NLM_F_REQUEST as u16,
            self.sequence,
            ifindex,
            addr,
            0,
        );
        self.send(&request)?;
        let len = self.recv()?;
        match parse_neighbour_reply(&self.buffer[..len], addr)? {
            Reply::Neighbour(mac) => Ok(mac),
            Reply::Error(errno) if errno == libc::ENOENT => Ok(None),
            Reply::Error(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Asks the kernel to resolve `addr` (it sends the ARP request; the reply fills its table,
    /// where [`NeighbourTable::lookup`] finds it). Replies that reach an XDP socket never feed
    /// the kernel's table, which is why tcpstack does not send its own ARP requests.
    pub fn request_resolution(&mut self, ifindex: u32, addr: Ipv4Addr) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE;
        let request = neighbour_request(
            libc::RTM_NEWNEIGH,
            flags as u16,
            self.sequence,
            ifindex,
            addr,
            libc::NTF_USE,
        );
        self.send(&request)?;
        let len = self.recv()?;
        match parse_neighbour_reply(&self.buffer[..len], addr)? {
            Reply::Error(0) | Reply::Neighbour(_) => Ok(()),
            Reply::Error(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// The gateway packets to `addr` go through, or `None` when `addr` is on a local link.
    pub fn next_hop(&mut self, addr: Ipv4Addr) -> io::Result<Option<Ipv4Addr>> {
        self.sequence = self.sequence.wrapping_add(1);
        let request = route_request(self.sequence, addr);
        self.send(&request)?;
        let len = self.recv()?;
        parse_route_reply(&self.buffer[..len])
    }

    fn send(&self, request: &[u8]) -> io::Result<()> {
        // SAFETY: `request` is a valid buffer for the duration of the call; the kernel is the
        // default destination of a netlink socket.
        let sent = unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&mut self) -> io::Result<usize> {
        // SAFETY: the buffer is valid for writes of its length.
        let len = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.buffer.as_mut_ptr().cast(),
                self.buffer.len(),
                0,
            )
        };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(len as usize)
    }
}

/// nlmsghdr + ndmsg + NDA_DST, as `ip neigh get` sends it.
fn neighbour_request(
    message_type: u16,
    flags: u16,
    sequence: u32,
    ifindex: u32,
    addr: Ipv4Addr,
    ndm_flags: u8,
) -> Vec<u8> {
    let total = NLMSG_HDR_LEN + NDMSG_LEN + RTA_HDR_LEN + 4;
    let mut msg = Vec::with_capacity(total);
    // nlmsghdr: len, type, flags, seq, pid (native byte order).
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&message_type.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&sequence.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // ndmsg: family, pad1, pad2, ifindex, state, flags, type.
    msg.push(libc::AF_INET as u8);
    msg.extend_from_slice(&[0, 0, 0]);
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.push(ndm_flags);
    msg.push(0);
    // rtattr NDA_DST.
    msg.extend_from_slice(&((RTA_HDR_LEN + 4) as u16).to_ne_bytes());
    msg.extend_from_slice(&libc::NDA_DST.to_ne_bytes());
    msg.extend_from_slice(&addr.octets());
    msg
}

const RTMSG_LEN: usize = 12;

/// nlmsghdr + rtmsg (AF_INET, /32) + RTA_DST, as `ip route get` sends it.
fn route_request(sequence: u32, addr: Ipv4Addr) -> Vec<u8> {
    let total = NLMSG_HDR_LEN + RTMSG_LEN + RTA_HDR_LEN + 4;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_GETROUTE.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&sequence.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    msg.extend_from_slice(&[libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&((RTA_HDR_LEN + 4) as u16).to_ne_bytes());
    msg.extend_from_slice(&libc::RTA_DST.to_ne_bytes());
    msg.extend_from_slice(&addr.octets());
    msg
}

fn parse_route_reply(buf: &[u8]) -> io::Result<Option<Ipv4Addr>> {
    let mut at = 0;
    while at + NLMSG_HDR_LEN <= buf.len() {
        let len = read_u32(buf, at)? as usize;
        let message_type = read_u16(buf, at + 4)?;
        if len < NLMSG_HDR_LEN || at + len > buf.len() {
            return Err(malformed());
        }
        let body = &buf[at + NLMSG_HDR_LEN..at + len];
        match message_type {
            NLMSG_ERROR => {
                let errno = -(read_u32(body, 0)? as i32);
                return Err(io::Error::from_raw_os_error(errno));
            }
            libc::RTM_NEWROUTE => {
                if body.len() < RTMSG_LEN {
                    return Err(malformed());
                }
                let mut gateway = None;
                for (kind, value) in attributes(&body[RTMSG_LEN..])? {
                    if kind == libc::RTA_GATEWAY && value.len() == 4 {
                        gateway = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]));
                    }
                }
                return Ok(gateway);
            }
            _ => {}
        }
        at += align4(len);
    }
    Err(malformed())
}

/// The (type, value) pairs of a run of rtattrs.
fn attributes(mut buf: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while buf.len() >= RTA_HDR_LEN {
        let len = usize::from(read_u16(buf, 0)?);
        let kind = read_u16(buf, 2)?;
        if len < RTA_HDR_LEN || len > buf.len() {
            return Err(malformed());
        }
        out.push((kind, &buf[RTA_HDR_LEN..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// An RTM_NEWNEIGH for the address: its MAC when the state makes it usable.
    Neighbour(Option<MacAddr>),
    /// NLMSG_ERROR with a positive errno (0 is an acknowledgement).
    Error(i32),
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply")
}

fn read_u16(buf: &[u8], at: usize) -> io::Result<u16> {
    buf.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(malformed)
}

fn read_u32(buf: &[u8], at: usize) -> io::Result<u32> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(malformed)
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn parse_neighbour_reply(buf: &[u8], addr: Ipv4Addr) -> io::Result<Reply> {
    let mut at = 0;
    while at + NLMSG_HDR_LEN <= buf.len() {
        let len = read_u32(buf, at)? as usize;
        let message_type = read_u16(buf, at + 4)?;
        if len < NLMSG_HDR_LEN || at + len > buf.len() {
            return Err(malformed());
        }
        let body = &buf[at + NLMSG_HDR_LEN..at + len];
        match message_type {
            NLMSG_ERROR => {
                let errno = read_u32(body, 0)? as i32;
                return Ok(Reply::Error(-errno));
            }
            NLMSG_DONE => break,
            libc::RTM_NEWNEIGH => {
                if let Some(mac) = parse_ndmsg(body, addr)? {
                    return Ok(Reply::Neighbour(mac));
                }
            }
            _ => {}
        }
        at += align4(len);
    }
    Ok(Reply::Neighbour(None))
}

/// `Some(mac)` when `body` describes `addr`; the inner option is `None` while unusable.
fn parse_ndmsg(body: &[u8], addr: Ipv4Addr) -> io::Result<Option<Option<MacAddr>>> {
    if body.len() < NDMSG_LEN {
        return Err(malformed());
    }
    let state = read_u16(body, 8)?;
    let mut destination = None;
    let mut lladdr = None;
    let mut at = NDMSG_LEN;
    while at + RTA_HDR_LEN <= body.len() {
        let len = usize::from(read_u16(body, at)?);
        let kind = read_u16(body, at + 2)?;
        if len < RTA_HDR_LEN || at + len > body.len() {
            return Err(malformed());
        }
        let value = &body[at + RTA_HDR_LEN..at + len];
        match kind {
            libc::NDA_DST if value.len() == 4 => {
                destination = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]));
            }
            libc::NDA_LLADDR if value.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(value);
                lladdr = Some(mac);
            }
            _ => {}
        }
        at += align4(len);
    }
    if destination != Some(addr) {
        return Ok(None);
    }
    Ok(Some(lladdr.filter(|_| state & NUD_USABLE != 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const MAC: MacAddr = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((RTA_HDR_LEN + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn new_neigh(state: u16, dst: Ipv4Addr, lladdr: Option<MacAddr>) -> Vec<u8> {
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        body.extend_from_slice(&3i32.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        body.extend(attr(libc::NDA_DST, &dst.octets()));
        if let Some(mac) = lladdr {
            body.extend(attr(libc::NDA_LLADDR, &mac));
        }
        message(libc::RTM_NEWNEIGH, &body)
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR_LEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn request_layout_matches_iproute2() {
        let req = neighbour_request(libc::RTM_GETNEIGH, 1, 7, 3, PEER, 0);
        assert_eq!(req.len(), 36);
        assert_eq!(read_u32(&req, 0).unwrap(), 36);
        assert_eq!(read_u16(&req, 4).unwrap(), libc::RTM_GETNEIGH);
        assert_eq!(read_u32(&req, 8).unwrap(), 7);
        assert_eq!(req[16], libc::AF_INET as u8);
        assert_eq!(read_u32(&req, 20).unwrap(), 3);
        assert_eq!(read_u16(&req, 28).unwrap(), 8);
        assert_eq!(read_u16(&req, 30).unwrap(), libc::NDA_DST);
        assert_eq!(&req[32..36], &PEER.octets());
    }

    #[test]
    fn reachable_neighbour_yields_its_mac() {
        let reply = new_neigh(libc::NUD_REACHABLE, PEER, Some(MAC));
        assert_eq!(
            parse_neighbour_reply(&reply, PEER).unwrap(),
            Reply::Neighbour(Some(MAC))
        );
        let stale = new_neigh(libc::NUD_STALE, PEER, Some(MAC));
        assert_eq!(
            parse_neighbour_reply(&stale, PEER).unwrap(),
            Reply::Neighbour(Some(MAC))
        );
    }

    #[test]
    fn incomplete_or_other_neighbours_yield_nothing() {
        let incomplete = new_neigh(libc::NUD_INCOMPLETE, PEER, None);
        assert_eq!(
            parse_neighbour_reply(&incomplete, PEER).unwrap(),
            Reply::Neighbour(None)
        );
        let failed = new_neigh(libc::NUD_FAILED, PEER, Some(MAC));
        assert_eq!(
            parse_neighbour_reply(&failed, PEER).unwrap(),
            Reply::Neighbour(None)
        );
        let other = new_neigh(libc::NUD_REACHABLE, Ipv4Addr::new(198, 18, 0, 9), Some(MAC));
        assert_eq!(
            parse_neighbour_reply(&other, PEER).unwrap(),
            Reply::Neighbour(None)
        );
    }

    #[test]
    fn errors_and_acks_are_reported() {
        let mut body = (-libc::ENOENT).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_neighbour_reply(&message(NLMSG_ERROR, &body), PEER).unwrap(),
            Reply::Error(libc::ENOENT)
        );
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_neighbour_reply(&message(NLMSG_ERROR, &ack), PEER).unwrap(),
            Reply::Error(0)
        );
    }

    fn new_route(gateway: Option<Ipv4Addr>) -> Vec<u8> {
        let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 254, 2, 0, 1];
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend(attr(libc::RTA_DST, &PEER.octets()));
        if let Some(gw) = gateway {
            body.extend(attr(libc::RTA_GATEWAY, &gw.octets()));
        }
        body.extend(attr(4, &3u32.to_ne_bytes()));
        message(libc::RTM_NEWROUTE, &body)
    }

    #[test]
    fn routes_name_their_gateway() {
        let gw = Ipv4Addr::new(198, 18, 0, 254);
        assert_eq!(parse_route_reply(&new_route(Some(gw))).unwrap(), Some(gw));
        assert_eq!(parse_route_reply(&new_route(None)).unwrap(), None);
        let request = route_request(9, PEER);
        assert_eq!(read_u16(&request, 4).unwrap(), libc::RTM_GETROUTE);
        assert_eq!(request[17], 32, "a host route lookup");
        assert_eq!(&request[request.len() - 4..], &PEER.octets());
    }

    #[test]
    fn unreachable_routes_are_errors() {
        let mut body = (-libc::ENETUNREACH).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        let error = parse_route_reply(&message(NLMSG_ERROR, &body)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENETUNREACH));
    }

    #[test]
    fn local_routes_resolve_on_loopback() {
        let mut table = NeighbourTable::open().expect("rtnetlink is always there");
        assert_eq!(table.next_hop(Ipv4Addr::LOCALHOST).unwrap(), None);
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let reply = new_neigh(libc::NUD_REACHABLE, PEER, Some(MAC));
        for cut in 0..reply.len() {
            let _ = parse_neighbour_reply(&reply[..cut], PEER);
        }
        let route = new_route(Some(PEER));
        for cut in 0..route.len() {
            let _ = parse_route_reply(&route[..cut]);
        }
        let mut lying = reply.clone();
        lying[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_neighbour_reply(&lying, PEER).is_err());
    }
}
