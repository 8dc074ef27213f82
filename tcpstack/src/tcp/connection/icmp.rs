//! ICMP errors about this connection's segments: the RFC 5927 checks, path MTU discovery
//! (RFC 1191 §6) and hard errors during the handshake (RFC 1122 §4.2.3.9).

use std::time::Instant;

use crate::tcp::{ConnectionError, State};
use crate::wire::{IcmpError, QuotedSegment, IPV4_MIN_HEADER_LEN, TCP_MIN_HEADER_LEN};

use super::{Connection, MIN_SEND_MSS};

/// The smallest path MTU an ICMP message may set, as Linux's ip_rt_min_pmtu: a forged or broken
/// "fragmentation needed" with a tiny MTU would otherwise cut the segments to a few bytes
/// (RFC 5927 §7.2).
pub const MIN_PATH_MTU: u32 = 552;

/// RFC 1191 §7's plateau table, for routers that report a next-hop MTU of 0.
const MTU_PLATEAUS: [u32; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

/// What an ICMP error did to the connection; the endpoint counts each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpVerdict {
    /// The quoted sequence number is not of a segment in flight (RFC 5927 §4.1: forged, or
    /// about a segment long acknowledged): nothing changed.
    OutOfWindow,
    /// The path MTU went down and the segments in flight are sent again in the new size.
    PathMtuLowered,
    /// "Fragmentation needed" that would not lower the MSS: nothing changed.
    PathMtuUnchanged,
    /// A hard error while the handshake was in progress: the connection failed.
    Aborted,
    /// A soft error, or a hard one in a synchronized state: counted, nothing else (RFC 5461
    /// §4: a connection that works is not torn down by ICMP).
    Noted,
}

/// What a segment's data and options may take in a packet of `mtu` bytes.
pub(super) fn segment_room_for_mtu(mtu: u32) -> u32 {
    mtu.saturating_sub((IPV4_MIN_HEADER_LEN + TCP_MIN_HEADER_LEN) as u32)
}

impl Connection {
    /// An ICMP destination-unreachable about the segment `quoted` (the endpoint matched its
    /// ports and addresses to this connection).
    pub fn handle_icmp(
        &mut self,
        error: IcmpError,
        quoted: &QuotedSegment,
        now: Instant,
    ) -> IcmpVerdict {
        self.clock = now;
        // RFC 5927 §4.1, as Linux's tcp_v4_err: SND.UNA <= SEG.SEQ <= SND.NXT.
        let in_flight = quoted.seq >= self.snd_una && quoted.seq <= self.snd_nxt;
        if !in_flight || matches!(self.state, State::Closed | State::Listen | State::TimeWait) {
            return IcmpVerdict::OutOfWindow;
        }
        match error {
            IcmpError::FragmentationNeeded { next_hop_mtu } => {
                let mtu = match u32::from(next_hop_mtu) {
                    // RFC 1191 §5: the next plateau below the datagram that did not fit.
                    0 => MTU_PLATEAUS
                        .into_iter()
                        .find(|&p| p < u32::from(quoted.total_len))
                        .unwrap_or(MIN_PATH_MTU),
                    mtu => mtu,
                };
                if self.lower_path_mtu(mtu, now) {
                    IcmpVerdict::PathMtuLowered
                } else {
                    IcmpVerdict::PathMtuUnchanged
                }
            }
            error
                if error.is_hard() && matches!(self.state, State::SynSent | State::SynReceived) =>
            {
                self.fail(match error {
                    IcmpError::Unreachable { code }
                        if code == crate::wire::icmp::CODE_PORT_UNREACHABLE =>
                    {
                        ConnectionError::Refused
                    }
                    _ => ConnectionError::Unreachable,
                });
                IcmpVerdict::Aborted
            }
            _ => IcmpVerdict::Noted,
        }
    }

    /// The path MTU, as far as ICMP has told (`None`: only the MSS negotiation limits segments).
    pub fn path_mtu(&self) -> Option<u32> {
        self.path_mtu
    }

    /// RFC 1191 §6.3–6.5: a smaller path MTU shrinks the segments, never grows them; what is in
    /// flight was dropped for its size and goes again at once, with no congestion response (as
    /// Linux's tcp_simple_retransmit: the network's load did not change, only the unit).
    fn lower_path_mtu(&mut self, mtu: u32, now: Instant) -> bool {
        let mtu = mtu.max(MIN_PATH_MTU);
        let room = segment_room_for_mtu(mtu);
        if room >= self.segment_room {
            return false;
        }
        self.path_mtu = Some(mtu);
        self.set_segment_room(room);
        self.stats.path_mtu_reductions += 1;
        if self.snd_una < self.snd_nxt && self.state.sends_data() {
            self.tx_next = self.snd_una;
            self.rtt_sample = None;
            self.timers.retransmit = Some(now + self.rtt.rto());
        }
        true
    }

    /// Data plus options a segment may carry, and the send MSS that leaves (RFC 6691 §2: the
    /// timestamps come out of it).
    pub(super) fn set_segment_room(&mut self, room: u32) {
        self.segment_room = room;
        let options = if self.timestamps {
            super::TIMESTAMPS_OPTION_LEN
        } else {
            0
        };
        self.send_mss = room.saturating_sub(options).max(MIN_SEND_MSS);
        self.cc.set_mss(self.send_mss);
        self.scoreboard.set_mss(self.send_mss);
    }
}
