//! Option negotiation on the peer's SYN (RFC 9293 §3.7.1 MSS, RFC 6691, RFC 7323 §2 window scale
//! and §3 timestamps, RFC 2018 SACK-permitted) and the timestamp rules on every segment: PAWS
//! (RFC 7323 §5.3 R1) and TS.Recent (§4.3, §5.3 R3).

use std::time::Instant;

use crate::tcp::recv_buffer::MAX_WINDOW_SHIFT;
use crate::tcp::timestamps::{self};
use crate::wire::TcpHeader;

use super::icmp::segment_room_for_mtu;
use super::{Connection, DEFAULT_PEER_MSS};

impl Connection {
    /// Takes the peer's SYN: IRS, RCV.NXT and the options (RFC 9293 §3.7.1, RFC 7323 §2).
    pub(super) fn take_syn(&mut self, syn: &TcpHeader) {
        self.irs = Some(syn.seq);
        self.rcv_nxt = syn.seq + 1u32;
        let peer_mss = syn.options.mss.unwrap_or(DEFAULT_PEER_MSS);
        // The MSS counts data without options (RFC 6691 §2, RFC 9293 §3.7.1): the timestamps
        // in every segment come out of it, as Linux's mss_cache (1448 on Ethernet).
        self.timestamps = self.config.timestamps && syn.options.timestamps.is_some();
        let path_room = self.path_mtu.map_or(u32::MAX, segment_room_for_mtu);
        self.set_segment_room(u32::from(peer_mss.min(self.config.mss)).min(path_room));
        match syn.options.window_scale {
            Some(shift) if self.config.window_scaling => {
                self.window_scaling = true;
                self.snd_shift = shift.min(MAX_WINDOW_SHIFT);
                self.rcv_shift = self.rcv_shift_for_buffer();
            }
            _ => {
                self.window_scaling = false;
                self.snd_shift = 0;
                self.rcv_shift = 0;
            }
        }
        self.sack_permitted = self.config.sack && syn.options.sack_permitted;
        match syn.options.timestamps {
            Some(ts) if self.config.timestamps => {
                self.timestamps = true;
                self.ts_recent = ts.tsval;
                self.ts_recent_at = self.clock;
            }
            _ => self.timestamps = false,
        }
        self.last_ack_sent = self.rcv_nxt;
        self.rcv_adv = self.rcv_nxt + self.recv_buf.window().min(usize::from(u16::MAX));
    }

    /// PAWS (RFC 7323 §5.3 R1): a timestamped segment older than TS.Recent is an old duplicate,
    /// unless TS.Recent has gone 24 days without an update (§5.5). RSTs are exempt (§5.2 asks
    /// them to carry no timestamps, and Linux accepts them regardless).
    pub(super) fn paws_rejects(&self, header: &TcpHeader, now: Instant) -> bool {
        let Some(ts) = header.options.timestamps.filter(|_| self.timestamps) else {
            return false;
        };
        !header.flags.rst()
            && timestamps::is_older(ts.tsval, self.ts_recent)
            && now.saturating_duration_since(self.ts_recent_at) <= timestamps::PAWS_IDLE_LIMIT
    }

    /// RFC 7323 §4.3 (2) / §5.3 R3: TS.Recent takes the TSval of an acceptable segment that
    /// starts at or before Last.ACK.sent, so the echo belongs to the earliest segment an ACK
    /// covers, and a delayed ACK echoes the first of the segments it acknowledges.
    pub(super) fn update_ts_recent(&mut self, header: &TcpHeader, now: Instant) {
        let Some(ts) = header.options.timestamps.filter(|_| self.timestamps) else {
            return;
        };
        let fresh = !timestamps::is_older(ts.tsval, self.ts_recent)
            || now.saturating_duration_since(self.ts_recent_at) > timestamps::PAWS_IDLE_LIMIT;
        if fresh && header.seq <= self.last_ack_sent {
            self.ts_recent = ts.tsval;
            self.ts_recent_at = now;
        }
    }
}
