//! TIME-WAIT in compact form: what is left of a connection after both FINs, kept for 2·MSL so
//! that a lost last ACK can be repeated and old duplicates die (RFC 9293 §3.6, §3.10.7.4). The
//! same rules serve [`super::Connection`] in TIME-WAIT and the endpoint's compact table.

use std::time::{Duration, Instant};

use super::timestamps::{is_older, TimestampClock};
use super::FourTuple;
use crate::wire::{SeqNum, TcpFlags, TcpHeader, TcpOptions, Timestamps};

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
    /// When TIME-WAIT ends.
    pub deadline: Instant,
    /// 2·MSL, the span restarted by a retransmitted FIN.
    pub duration: Duration,
    /// Present when the connection used timestamps (RFC 7323).
    pub timestamps: Option<TimeWaitTimestamps>,
}

/// What TIME-WAIT keeps of a connection's timestamps: our clock, to stamp its ACKs (RFC 7323
/// §3.2), and TS.Recent, for PAWS and to tell a new incarnation's SYN from an old duplicate
/// (RFC 6191).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWaitTimestamps {
    pub clock: TimestampClock,
    pub recent: u32,
}

/// What to do with a segment that reached a TIME-WAIT connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeWaitOutcome {
    Drop,
    /// Send this segment (an ACK).
    Reply(TcpHeader),
    /// PAWS found an old duplicate by its timestamp (RFC 7323 §5.3): send this ACK, count it.
    PawsRejected(TcpHeader),
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
        now: Instant,
        duration: Duration,
    ) -> Self {
        TimeWait {
            tuple,
            snd_nxt,
            rcv_nxt,
            window,
            deadline: now + duration,
            duration,
            timestamps: None,
        }
    }

    /// The record of a connection that used timestamps.
    pub fn with_timestamps(mut self, timestamps: TimeWaitTimestamps) -> Self {
        self.timestamps = Some(timestamps);
        self
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`, with timestamps when the connection used them.
    pub fn ack(&self, now: Instant) -> TcpHeader {
        let options = TcpOptions {
            timestamps: self.timestamps.map(|ts| Timestamps {
                tsval: ts.clock.tsval(now),
                tsecr: ts.recent,
            }),
            ..TcpOptions::default()
        };
        TcpHeader {
            options,
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
        if flags.rst() {
            // RFC 1337 §3 (TIME-WAIT assassination): a RST must not cut TIME-WAIT short, or an
            // old duplicate could meet a new incarnation of the connection.
            return TimeWaitOutcome::Drop;
        }
        // Both the old connection and this segment carry timestamps: the peer's TSval.
        let tsval = self
            .timestamps
            .zip(header.options.timestamps)
            .map(|(ours, theirs)| (ours.recent, theirs.tsval));
        if flags.syn() {
            // RFC 6191 §2: with timestamps, a SYN is a new incarnation when its TSval is newer
            // than the last one seen, whatever its sequence number; without, when its sequence
            // number lies past the old connection (RFC 9293 §3.6.1).
            let new_incarnation = match tsval {
                Some((recent, tsval)) => is_older(recent, tsval),
                None => header.seq > self.rcv_nxt,
            };
            if !flags.ack() && new_incarnation {
                return TimeWaitOutcome::Reopen;
            }
            // RFC 5961 §4: challenge ACK.
            return TimeWaitOutcome::Reply(self.ack(now));
        }
        if tsval.is_some_and(|(recent, tsval)| is_older(tsval, recent)) {
            // PAWS (RFC 7323 §5.3 R1): an old duplicate, acknowledged and otherwise ignored.
            return TimeWaitOutcome::PawsRejected(self.ack(now));
        }
        let end = header.seq + super::segment_len(header, payload_len);
        if flags.fin() && end == self.rcv_nxt {
            // The peer's FIN again: our last ACK was lost. Acknowledge it and restart 2·MSL
            // (RFC 9293 §3.10.7.4, eighth step).
            self.deadline = now + self.duration;
            if let (Some(ts), Some((_, tsval))) = (self.timestamps.as_mut(), tsval) {
                ts.recent = tsval;
            }
            return TimeWaitOutcome::Reply(self.ack(now));
        }
        if header.seq == self.rcv_nxt && payload_len == 0 && !flags.fin() {
            // A bare ACK of our FIN (a duplicate): nothing to say.
            return TimeWaitOutcome::Drop;
        }
        // Anything else is unacceptable or carries data after the FIN: acknowledge (first step).
        TimeWaitOutcome::Reply(self.ack(now))
    }
}
