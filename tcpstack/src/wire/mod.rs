//! Byte layouts: Ethernet II, IPv4, TCP header and options, checksums. Knows nothing of
//! connections or time. Every parser returns a [`WireError`] on malformed input, never panics.

pub mod seq;

pub use seq::SeqNum;

use std::fmt;
use std::net::Ipv4Addr;

/// Why a frame, packet or segment was rejected. Each variant is a drop reason the endpoint counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    #[error("buffer too short")]
    Truncated,
    #[error("not an IPv4 frame")]
    NotIpv4,
    #[error("not a TCP packet")]
    NotTcp,
    #[error("IPv4 header length field is invalid")]
    BadIhl,
    #[error("IPv4 total length disagrees with the buffer")]
    BadTotalLength,
    #[error("IPv4 header checksum mismatch")]
    BadIpChecksum,
    #[error("IPv4 fragment")]
    Fragment,
    #[error("TCP data offset is invalid")]
    BadDataOffset,
    #[error("malformed TCP option")]
    BadOption,
    #[error("TCP checksum mismatch")]
    BadTcpChecksum,
}

/// A 48-bit Ethernet address.
pub type MacAddr = [u8; 6];

/// TCP control bits (RFC 9293 §3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    pub const fn empty() -> Self {
        TcpFlags(0)
    }

    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }

    pub fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    pub fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    pub fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    pub fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    pub fn psh(self) -> bool {
        self.contains(Self::PSH)
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

/// tcpdump's notation: `S`, `S.`, `.`, `P.`, `F.`, `R`, `R.`, ...
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (flag, letter) in [
            (Self::FIN, 'F'),
            (Self::SYN, 'S'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'W'),
        ] {
            if self.contains(flag) {
                write!(f, "{letter}")?;
            }
        }
        if self.ack() {
            write!(f, ".")?;
        }
        if self.0 == 0 {
            write!(f, "none")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{self}]")
    }
}

/// One SACK block (RFC 2018): `start` is the first sequence number of the block, `end` the one
/// after its last.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct SackBlock {
    pub start: SeqNum,
    pub end: SeqNum,
}

/// The most SACK blocks a header can carry (four without timestamps, three with).
pub const MAX_SACK_BLOCKS: usize = 4;

/// RFC 7323 timestamps option.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Timestamps {
    pub tsval: u32,
    pub tsecr: u32,
}

/// The TCP options tcpstack understands; unknown options are skipped by their length on parse.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack_blocks: [SackBlock; MAX_SACK_BLOCKS],
    /// How many entries of `sack_blocks` are in use.
    pub sack_block_count: u8,
    pub timestamps: Option<Timestamps>,
}

impl TcpOptions {
    pub fn sack_blocks(&self) -> &[SackBlock] {
        &self.sack_blocks[..usize::from(self.sack_block_count).min(MAX_SACK_BLOCKS)]
    }

    /// Appends a SACK block; returns false when the header has no room left.
    pub fn push_sack_block(&mut self, block: SackBlock) -> bool {
        let n = usize::from(self.sack_block_count);
        if n >= MAX_SACK_BLOCKS {
            return false;
        }
        self.sack_blocks[n] = block;
        self.sack_block_count += 1;
        true
    }
}

/// A TCP header with its options decoded.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub flags: TcpFlags,
    /// The raw 16-bit window field, before any window-scale shift.
    pub window: u16,
    pub urgent_ptr: u16,
    pub options: TcpOptions,
}

/// The IPv4 header fields tcpstack uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub dscp_ecn: u8,
    pub identification: u16,
    pub dont_fragment: bool,
    /// Header length in bytes (IHL × 4).
    pub header_len: usize,
    /// The total length field: header plus payload.
    pub total_len: usize,
}

/// An Ethernet II header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EthernetHeader {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const IPPROTO_TCP: u8 = 6;
pub const ETHERNET_HEADER_LEN: usize = 14;
pub const IPV4_MIN_HEADER_LEN: usize = 20;
pub const TCP_MIN_HEADER_LEN: usize = 20;
/// The largest TCP options area (data offset 15 words).
pub const TCP_MAX_OPTIONS_LEN: usize = 40;

/// An IPv4 packet carrying TCP, parsed and checksum-verified, borrowing its payload.
#[derive(Clone, Copy, Debug)]
pub struct TcpPacket<'a> {
    pub ip: Ipv4Header,
    pub tcp: TcpHeader,
    pub payload: &'a [u8],
}
