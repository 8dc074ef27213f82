//! Segment arrival (RFC 9293 §3.10.7): the dispatch by state, SYN-SENT (§3.10.7.3), TIME-WAIT
//! through the compact record of time_wait.rs, and the first four steps for synchronized states
//! (§3.10.7.4: sequence acceptability, RST and SYN with RFC 5961's challenge ACKs, PAWS of RFC
//! 7323 §5) before handing over to ack.rs and receive.rs.

use std::time::Instant;

use crate::tcp::time_wait::TimeWaitOutcome;
use crate::tcp::{reset_for, segment_len, ConnectionError, State};
use crate::wire::{TcpFlags, TcpHeader};

use super::Connection;

impl Connection {
    /// Processes one arriving segment (RFC 9293 §3.10.7).
    pub fn handle_segment(&mut self, header: &TcpHeader, payload: &[u8], now: Instant) {
        self.clock = self.clock.max(now);
        self.stats.segments_in += 1;
        match self.state {
            State::Closed | State::Listen => {
                // §3.10.7.1: a TCB that is gone answers like no connection.
                if let Some(rst) = reset_for(header, payload.len()) {
                    self.queue_control(rst);
                }
            }
            State::SynSent => self.on_segment_syn_sent(header, payload, now),
            State::TimeWait => self.on_segment_time_wait(header, payload.len(), now),
            _ => self.on_segment_synchronized(header, payload, now),
        }
        self.refresh_persist(now);
    }

    /// §3.10.7.3.
    pub(super) fn on_segment_syn_sent(&mut self, header: &TcpHeader, payload: &[u8], now: Instant) {
        let flags = header.flags;
        // First, the ACK bit.
        if flags.ack() && (header.ack <= self.iss || header.ack > self.snd_nxt) {
            if let Some(rst) = reset_for(header, payload.len()) {
                self.queue_control(rst);
            }
            return;
        }
        let ack_acceptable = flags.ack()
            && header
                .ack
                .in_range_inclusive(self.snd_una + 1u32, self.snd_nxt);
        // Second, the RST bit: only a RST that acknowledges our SYN refuses the connection.
        if flags.rst() {
            if ack_acceptable {
                self.fail(ConnectionError::Refused);
            }
            return;
        }
        // Fourth, the SYN bit.
        if !flags.syn() {
            return;
        }
        self.take_syn(header);
        self.last_received = now;
        if ack_acceptable {
            self.snd_una = header.ack;
            self.take_rtt_sample(header.ack, header, now);
            self.timers.retransmit = None;
            self.update_send_window(u32::from(header.window), header.seq, header.ack);
            self.establish();
            self.ack_pending = true;
            // Data or a FIN on the SYN-ACK continues at the sixth step.
            let payload_seq = header.seq + 1u32;
            self.process_data_and_fin(header, payload_seq, payload, now);
        } else {
            // Simultaneous open (§3.5 figure 7): SYN-RECEIVED, send SYN,ACK.
            self.state = State::SynReceived;
            self.rtt_sample = None;
            self.update_send_window(u32::from(header.window), header.seq, self.iss);
            self.syn_pending = true;
        }
    }

    pub(super) fn on_segment_time_wait(
        &mut self,
        header: &TcpHeader,
        payload_len: usize,
        now: Instant,
    ) {
        let Some(mut tw) = self.time_wait else {
            return;
        };
        let outcome = tw.handle_segment(header, payload_len, now);
        self.time_wait = Some(tw);
        match outcome {
            TimeWaitOutcome::Drop | TimeWaitOutcome::Reopen => {}
            TimeWaitOutcome::Reply(reply) => self.queue_control(reply),
            TimeWaitOutcome::PawsRejected(reply) => {
                self.stats.paws_rejected += 1;
                self.queue_control(reply);
            }
        }
    }

    /// §3.10.7.4, SYN-RECEIVED through LAST-ACK.
    pub(super) fn on_segment_synchronized(
        &mut self,
        header: &TcpHeader,
        payload: &[u8],
        now: Instant,
    ) {
        let flags = header.flags;
        let seq = header.seq;

        // A retransmission of the SYN we answered means our SYN-ACK was lost: send it again, as
        // Linux does (the acceptability test would only produce a bare ACK).
        if self.state == State::SynReceived && flags.syn() && !flags.ack() && Some(seq) == self.irs
        {
            self.syn_pending = true;
            return;
        }

        // RFC 7323 §5.3 R1: PAWS before the sequence number test; the old duplicate is
        // acknowledged (which also repairs a lost ACK) and dropped. As Linux's tcp_send_dupack,
        // the ACK reports its data below RCV.NXT in a D-SACK (RFC 2883 §4): most often the
        // original of a segment already retransmitted, which makes that retransmission spurious.
        if self.paws_rejects(header, now) {
            self.stats.paws_rejected += 1;
            self.ack_pending = true;
            self.note_received_for_sack(seq, (seq + payload.len()).min(self.rcv_nxt));
            return;
        }

        // Simultaneous open: the peer's SYN-ACK acknowledges our SYN and repeats its own, which
        // the acceptability test below would only answer with an ACK. RFC 9293 §3.5 figure 7
        // (line 6) reaches ESTABLISHED on it, and so does Linux's tcp_validate_incoming for a
        // SYN-RECEIVED that was in SYN-SENT: seq + 1 == end_seq == rcv_nxt, ack == snd_nxt.
        if self.state == State::SynReceived
            && !self.passive
            && flags.syn()
            && flags.ack()
            && !flags.intersects(TcpFlags::RST | TcpFlags::FIN)
            && payload.is_empty()
            && seq + 1u32 == self.rcv_nxt
            && header.ack == self.snd_nxt
        {
            self.last_received = now;
            self.update_ts_recent(header, now);
            self.snd_una = header.ack;
            self.take_rtt_sample(header.ack, header, now);
            self.timers.retransmit = None;
            // The window field of a SYN is never scaled (RFC 7323 §2.2).
            self.update_send_window(u32::from(header.window), seq, header.ack);
            self.establish();
            return;
        }

        // First, the sequence number: the four acceptability cases.
        let seg_len = segment_len(header, payload.len());
        let rcv_wnd = self.receive_window();
        // One leniency, as Linux's tcp_sequence: a segment without text exactly at the right
        // edge is accepted. A peer that filled our window has its SND.NXT there, and its ACKs
        // must not be ignored.
        let acceptable = match (seg_len, rcv_wnd) {
            (0, 0) => seq == self.rcv_nxt,
            (0, _) => seq.in_range_inclusive(self.rcv_nxt, self.rcv_nxt + rcv_wnd),
            (_, 0) => false,
            (_, _) => {
                seq.in_range(self.rcv_nxt, self.rcv_nxt + rcv_wnd)
                    || (seq + (seg_len - 1)).in_range(self.rcv_nxt, self.rcv_nxt + rcv_wnd)
            }
        };
        // With a zero window, a segment at RCV.NXT still has its ACK and RST processed; its
        // data is dropped below and acknowledged (§3.10.7.4, "special allowance").
        let zero_window_probe = !acceptable && rcv_wnd == 0 && seq == self.rcv_nxt;
        if !acceptable && !zero_window_probe {
            if !payload.is_empty() && seq > self.rcv_nxt {
                self.stats.receive_drops.beyond_window += 1;
            }
            if !flags.rst() {
                self.ack_pending = true;
                // An old duplicate is reported in a D-SACK (RFC 2883 §4).
                self.note_received_for_sack(seq, seq + payload.len());
            }
            return;
        }
        self.last_received = now;
        self.keepalive_probes = 0;

        // Second, the RST bit (RFC 5961 §3.2: exact match resets, otherwise a challenge ACK).
        if flags.rst() {
            if seq != self.rcv_nxt {
                self.challenge_ack();
                return;
            }
            match self.state {
                State::SynReceived if self.passive => self.enter_closed(),
                State::SynReceived => self.fail(ConnectionError::Refused),
                State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait => {
                    self.fail(ConnectionError::Reset)
                }
                _ => self.enter_closed(),
            }
            return;
        }

        // Fourth, the SYN bit (the third, security, does not apply).
        if flags.syn() {
            if self.state == State::SynReceived && self.passive {
                self.enter_closed();
            } else {
                self.challenge_ack();
            }
            return;
        }

        // RFC 7323 §5.3 R3, after the RST and SYN checks as in Linux, so a segment answered
        // with a challenge ACK does not change the echo.
        self.update_ts_recent(header, now);

        // Fifth, the ACK field.
        if !flags.ack() {
            return;
        }
        if self.state == State::SynReceived {
            if !header
                .ack
                .in_range_inclusive(self.snd_una + 1u32, self.snd_nxt)
            {
                if let Some(rst) = reset_for(header, payload.len()) {
                    self.queue_control(rst);
                }
                return;
            }
            self.update_send_window(
                u32::from(header.window) << self.snd_shift,
                header.seq,
                header.ack,
            );
            self.establish();
        }
        if !self.process_ack(header, payload.len(), now) {
            return;
        }
        let fin_acked = self.fin_queued && self.snd_una == self.fin_seq() + 1u32;
        match self.state {
            State::FinWait1 if fin_acked => {
                self.state = State::FinWait2;
                if self.released {
                    self.timers.fin_wait2 = Some(now + self.config.fin_wait2_timeout);
                }
            }
            State::Closing if fin_acked => {
                self.enter_time_wait(now);
                return;
            }
            State::LastAck if fin_acked => {
                self.enter_closed();
                return;
            }
            _ => {}
        }

        // Sixth, URG: ignored. Seventh and eighth: the segment text and FIN.
        let payload_seq = seq + u32::from(flags.syn());
        if zero_window_probe && !payload.is_empty() {
            self.ack_pending = true;
            return;
        }
        // RFC 1122 §4.2.2.13: new data for a user that released the connection is lost, and a
        // RST tells the peer so (Linux's TCPAbortOnData in FIN-WAIT-1 and -2).
        let new_data = payload_seq + payload.len() > self.rcv_nxt;
        if self.released
            && !payload.is_empty()
            && new_data
            && matches!(self.state, State::FinWait1 | State::FinWait2)
        {
            self.abort();
            return;
        }
        self.process_data_and_fin(header, payload_seq, payload, now);
    }
}
