//! State transitions around the data phase: ESTABLISHED (RFC 9293 §3.5), TIME-WAIT (§3.6) and its
//! hand-over to the compact record, failure and CLOSED; challenge ACKs (RFC 5961 §7 rate limit),
//! the bounded queue of one-off control segments, and user events.

use std::time::Instant;

use crate::tcp::recv_buffer::RecvBuffer;
use crate::tcp::time_wait::{TimeWait, TimeWaitTimestamps};
use crate::tcp::{ConnectionError, Event, State};
use crate::wire::{SeqNum, TcpFlags, TcpHeader};

use super::{Connection, Timers, MAX_CONTROL_QUEUE};

/// A challenge ACK is queued only while fewer control segments than this wait: the rate limit of
/// RFC 5961 §7, so that a burst of forged segments gets a few answers, not one each.
const MAX_CHALLENGE_ACKS: usize = 4;

impl Connection {
    pub(super) fn establish(&mut self) {
        if self.retries > 0 {
            self.rtt.after_syn_timeout();
        }
        self.retries = 0;
        self.syn_pending = false;
        self.state = if self.fin_queued {
            State::FinWait1
        } else {
            State::Established
        };
        self.push_event(Event::Connected);
        if !self.fin_queued {
            self.push_event(Event::Writable);
        }
    }

    pub(super) fn challenge_ack(&mut self) {
        if self.control.len() < MAX_CHALLENGE_ACKS {
            let ack = self.header(self.snd_nxt, TcpFlags::ACK);
            self.queue_control(ack);
        }
    }

    pub(super) fn fin_seq(&self) -> SeqNum {
        self.send_buf_seq + self.send_buf.len()
    }

    pub(super) fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        let window = self.advertise_window();
        let record = TimeWait::new(
            self.tuple,
            self.snd_nxt,
            self.rcv_nxt,
            window,
            now,
            self.config.msl * 2,
        );
        self.time_wait = Some(if self.timestamps {
            record.with_timestamps(TimeWaitTimestamps {
                clock: self.ts_clock,
                recent: self.ts_recent,
            })
        } else {
            record
        });
        self.timers = Timers::default();
        self.stalled_since = None;
        self.send_buf.clear();
    }

    /// A failure: record it, tell the user, close.
    pub(super) fn fail(&mut self, error: ConnectionError) {
        self.error = Some(error);
        self.push_event(match error {
            ConnectionError::TimedOut => Event::TimedOut,
            _ => Event::Reset,
        });
        self.recv_buf = RecvBuffer::new(1);
        self.enter_closed();
    }

    pub(super) fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.timers = Timers::default();
        self.stalled_since = None;
        self.time_wait = None;
        self.send_buf.clear();
        self.syn_pending = false;
        self.ack_pending = false;
        self.fast_retransmit_pending = false;
        self.push_event(Event::Closed);
    }

    /// Queues a control segment. A full queue drops ACKs and probes, which later segments
    /// repeat; a RST instead displaces the oldest of them, and is dropped only when the queue
    /// holds nothing but RSTs, each answering a segment whose retransmission gets another.
    pub(super) fn queue_control(&mut self, header: TcpHeader) {
        if self.control.len() >= MAX_CONTROL_QUEUE {
            match self.control.iter().position(|h| !h.flags.rst()) {
                Some(oldest) if header.flags.rst() => {
                    self.control.remove(oldest);
                }
                _ => return,
            }
        }
        self.control.push_back(header);
    }

    /// `<SEQ=SND.NXT><CTL=RST>`, the end of this connection (ABORT, keepalive giving up): the
    /// ACKs and probes still waiting would only reach a peer about to drop its TCB, so the RST
    /// replaces them and can never be lost behind them.
    pub(super) fn queue_final_reset(&mut self) {
        let rst = self.header(self.snd_nxt, TcpFlags::RST);
        self.control.clear();
        self.control.push_back(rst);
    }

    pub(super) fn push_event(&mut self, event: Event) {
        if !self.events.contains(&event) {
            self.events.push_back(event);
        }
    }
}
