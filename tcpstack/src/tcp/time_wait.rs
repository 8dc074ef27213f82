//! TIME-WAIT in compact form: what is left of a connection after both FINs, kept for 2·MSL so
//! that a lost last ACK can be repeated and old duplicates die (RFC 9293 §3.6, §3.10.7.4). The
//! same rules serve [`super::Connection`] in TIME-WAIT and the endpoint's compact table.

use std::time::{Duration, Instant};

use super::FourTuple;
use crate::wire::{SeqNum, TcpFlags, TcpHeader};

/// A closed connection waiting out 2·MSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWait {
    pub tuple: FourTuple,
    /// The sequence number after our FIN.
    pub snd_nxt: SeqNum,
    /// The sequence number after the peer's FIN.
    pub rcv_nxt: SeqNum,
    /// The window field we advertise, already scaled down.
    pub window: u16,
    /// Our window-scale shift, to test RST acceptability against the real window.
    pub window_shift: u8,
    /// When TIME-WAIT ends.
    pub deadline: Instant,
    /// 2·MSL, the span restarted by a retransmitted FIN.
    pub duration: Duration,
}

/// What to do with a segment that reached a TIME-WAIT connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeWaitOutcome {
    Drop,
    /// Send this segment (an ACK).
    Reply(TcpHeader),
    /// An acceptable RST ended TIME-WAIT (RFC 9293 §3.10.7.4, second step).
    Closed,
    /// A SYN with a sequence number past the old connection: the caller may drop this record and
    /// treat the SYN as a new connection attempt (RFC 9293 §3.6.1, as Linux does).
    Reopen,
}

impl TimeWait {
    pub fn new(
        tuple: FourTuple,
        snd_nxt: SeqNum,
        rcv_nxt: SeqNum,
        window: u16,
        window_shift: u8,
        now: Instant,
        duration: Duration,
    ) -> Self {
        TimeWait {
            tuple,
            snd_nxt,
            rcv_nxt,
            window,
            window_shift,
            deadline: now + duration,
            duration,
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`.
    pub fn ack(&self) -> TcpHeader {
        TcpHeader {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags: TcpFlags::ACK,
            window: self.window,
            ..TcpHeader::default()
        }
    }

    /// The TIME-WAIT rules for one arriving segment.
    pub fn handle_segment(
        &mut self,
        header: &TcpHeader,
        payload_len: usize,
        now: Instant,
    ) -> TimeWaitOutcome {
        let flags = header.flags;
        let window = u32::from(self.window) << self.window_shift;
        if flags.rst() {
            // RFC 5961 §3.2: only an exact RST closes; one inside the window gets a challenge ACK.
            return if header.seq == self.rcv_nxt {
                TimeWaitOutcome::Closed
            } else if window > 0 && header.seq.in_range(self.rcv_nxt, self.rcv_nxt + window) {
                TimeWaitOutcome::Reply(self.ack())
            } else {
                TimeWaitOutcome::Drop
            };
        }
        if flags.syn() {
            if !flags.ack() && header.seq > self.rcv_nxt {
                return TimeWaitOutcome::Reopen;
            }
            // RFC 5961 §4: challenge ACK.
            return TimeWaitOutcome::Reply(self.ack());
        }
        let end = header.seq + super::segment_len(header, payload_len);
        if flags.fin() && end == self.rcv_nxt {
            // The peer's FIN again: our last ACK was lost. Acknowledge it and restart 2·MSL
            // (RFC 9293 §3.10.7.4, eighth step).
            self.deadline = now + self.duration;
            return TimeWaitOutcome::Reply(self.ack());
        }
        if header.seq == self.rcv_nxt && payload_len == 0 && !flags.fin() {
            // A bare ACK of our FIN (a duplicate): nothing to say.
            return TimeWaitOutcome::Drop;
        }
        // Anything else is unacceptable or carries data after the FIN: acknowledge (first step).
        TimeWaitOutcome::Reply(self.ack())
    }
}
