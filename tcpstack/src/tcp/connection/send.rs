//! The sender: what goes out next (RFC 9293 §3.8.6.2.1 sender SWS avoidance and Nagle,
//! RFC 6675 NextSeg for holes, new data and the rescue retransmission, PRR's and the congestion
//! window's allowance), SYN and SYN-ACK, retransmissions, the persist timer arming, and the header
//! and options of every segment (RFC 7323 timestamps, SACK blocks within the 40 option bytes).

use std::time::Instant;

use bytes::Bytes;

use crate::tcp::sack::NextSeg;
use crate::tcp::{Segment, State};
use crate::wire::{SeqNum, TcpFlags, TcpHeader, TcpOptions, Timestamps, MAX_SACK_BLOCKS};

use super::{Connection, DUP_ACK_THRESHOLD, TIMESTAMPS_OPTION_LEN};

/// Bytes of a SACK option besides its blocks (two NOPs, kind and length), and per block.
const SACK_OPTION_BASE_LEN: u32 = 4;
const SACK_BLOCK_LEN: u32 = 8;

impl Connection {
    /// The next segment to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Segment> {
        self.clock = self.clock.max(now);
        let segment = self.next_segment(now);
        if let Some(segment) = &segment {
            self.stats.segments_out += 1;
            self.stats.bytes_out += segment.payload.len() as u64;
        } else {
            self.refresh_persist(now);
            self.note_app_limited();
        }
        segment
    }

    pub(super) fn next_segment(&mut self, now: Instant) -> Option<Segment> {
        if let Some(header) = self.control.pop_front() {
            return Some(Segment {
                header,
                payload: Bytes::new(),
            });
        }
        match self.state {
            State::Closed | State::Listen => return None,
            State::TimeWait => {
                let tw = self.time_wait()?;
                if !std::mem::take(&mut self.ack_pending) {
                    return None;
                }
                return Some(Segment {
                    header: tw.ack(now),
                    payload: Bytes::new(),
                });
            }
            State::SynSent | State::SynReceived => {
                if self.syn_pending {
                    return Some(self.send_syn(now));
                }
                if self.ack_pending && self.state == State::SynReceived {
                    return Some(self.send_ack());
                }
                return None;
            }
            _ => {}
        }
        if self.probe_pending {
            self.probe_pending = false;
            if let Some(probe) = self.send_loss_probe(now) {
                return Some(probe);
            }
        }
        if self.pacing_holds_data(now) {
            // Only data waits for its release time; an ACK never does.
            return self.ack_pending.then(|| self.send_ack());
        }
        if let Some(segment) = self.frto_new_segment(now) {
            return Some(segment);
        }
        let rack = self.rack_active();
        if self.fast_retransmit_pending {
            self.fast_retransmit_pending = false;
            // With RACK, the first segment it found lost; otherwise SND.UNA's.
            let start = match self.sent.first_lost() {
                Some((start, _)) if rack && self.in_recovery => Some(start),
                _ => (self.snd_una < self.snd_nxt).then_some(self.snd_una),
            };
            if let Some(start) = start {
                return Some(self.retransmit_one(start, now));
            }
        }
        if rack && self.sack_recovery && self.recovery_budget > 0 {
            // RFC 8985 §6.2 with RFC 6937: what RACK marked lost, then new data.
            if let Some((start, _)) = self.sent.first_lost() {
                return Some(self.retransmit_one(start, now));
            }
        } else if rack && !self.in_recovery && self.snd_una < self.recover && self.frto.is_none() {
            // After an RTO, what RACK finds lost again behind the go-back-N point goes out
            // again as the window allows.
            if let Some(start) = self.lost_behind_go_back_n() {
                return Some(self.retransmit_one(start, now));
            }
        } else if self.sack_recovery && self.recovery_budget > 0 {
            // RFC 6675 §5 step (C): holes first, then new data, then the rescue retransmission.
            let can_send_new_data = self.next_data_end().is_some();
            match self.scoreboard.next_seg(self.snd_nxt, can_send_new_data) {
                Some(NextSeg::Retransmit { start, len }) => {
                    return Some(self.retransmit(start, start + len, false, now));
                }
                // Only for a tail with nothing unsent behind it: when the peer's window holds
                // new data back, the SACKs for the tail are still to come (like Linux, which
                // has no rescue retransmission at all).
                Some(NextSeg::Rescue { start, len }) if self.tx_next >= self.fin_seq() => {
                    return Some(self.retransmit(start, start + len, true, now));
                }
                Some(NextSeg::NewData | NextSeg::Rescue { .. }) | None => {}
            }
        }
        // After an RTO, go-back-N skips what the peer SACKed (RFC 6675 §5.1).
        if self.tx_next < self.snd_nxt {
            if let Some(sacked) = self
                .scoreboard
                .sacked()
                .iter()
                .find(|r| self.tx_next.in_range(r.start, r.end))
            {
                self.tx_next = sacked.end.min(self.snd_nxt);
            }
        }
        let idle_too_long = self.snd_una == self.snd_nxt
            && self
                .last_data_sent
                .is_some_and(|sent| now.saturating_duration_since(sent) > self.rtt.rto());
        if idle_too_long {
            self.cc.on_idle_restart();
            self.last_data_sent = None;
        }
        if let Some(end) = self.next_data_end() {
            let start = self.tx_next;
            self.sws_override = false;
            if start < self.snd_nxt {
                let end = end.min(self.next_sacked_start(start));
                return Some(self.retransmit(start, end, false, now));
            }
            return Some(self.send_range(start, end, now));
        }
        if self.ack_pending {
            return Some(self.send_ack());
        }
        None
    }

    /// The congestion controller paces (BBR) and the next data segment's release time has not
    /// come: the connection's timer wakes it then (see `poll_timeout`).
    fn pacing_holds_data(&mut self, now: Instant) -> bool {
        self.cc.pacing_rate().is_some() && !self.pacer.admit(now)
    }

    /// Where the next data (or FIN) segment starting at `tx_next` should end, if one may be sent
    /// now: the usable window (RFC 9293 §3.8.6), sender SWS avoidance (§3.8.6.2.1) and Nagle
    /// (§3.7.4). Retransmissions after an RTO skip the last two.
    pub(super) fn next_data_end(&self) -> Option<SeqNum> {
        let window_end = (self.snd_una + self.snd_wnd).min(self.congestion_window_end());
        self.next_data_end_within(window_end, self.sws_override)
    }

    /// [`Self::next_data_end`] for a window ending at `window_end`; `override_sws` sends a short
    /// segment regardless of SWS avoidance and Nagle.
    pub(super) fn next_data_end_within(
        &self,
        window_end: SeqNum,
        override_sws: bool,
    ) -> Option<SeqNum> {
        if !self.state.sends_data() {
            return None;
        }
        let data_end = self.send_buf_seq + self.send_buf.len();
        let fin_to_send = self.fin_queued && self.tx_next <= data_end;
        let unsent = if self.tx_next < data_end {
            data_end - self.tx_next
        } else {
            0
        };
        if unsent == 0 {
            return fin_to_send.then_some(data_end + 1u32);
        }
        let usable = if window_end > self.tx_next {
            window_end - self.tx_next
        } else {
            0
        };
        let len = unsent.min(usable).min(self.send_mss);
        if len == 0 {
            return None;
        }
        let end = self.tx_next + len;
        // A FIN rides on the last data segment (FIN needs no window, like Linux).
        let with_fin = |end: SeqNum| {
            if fin_to_send && end == data_end {
                end + 1u32
            } else {
                end
            }
        };
        let retransmission = self.tx_next < self.snd_nxt;
        if len == self.send_mss || retransmission || override_sws {
            return Some(with_fin(end));
        }
        let in_flight = self.snd_nxt != self.snd_una;
        if len < unsent {
            // Window-limited and less than a segment: sender SWS avoidance.
            if !in_flight && len >= self.max_snd_wnd / 2 {
                return Some(with_fin(end));
            }
            return None;
        }
        // All remaining data fits in less than a segment: Nagle holds it while data is in
        // flight, unless disabled or the FIN goes with it. Like Linux, only an unacknowledged
        // *small* segment holds it back (Minshall's variant), so a write of MSS + a few bytes
        // goes out whole.
        let small_in_flight = self.snd_small_end > self.snd_una;
        if small_in_flight && !self.config.nodelay && !self.fin_queued {
            return None;
        }
        Some(with_fin(end))
    }

    /// Arms the persist timer when data waits, nothing is in flight and the window (zero or too
    /// small for SWS avoidance) blocks it; disarms it otherwise.
    pub(super) fn refresh_persist(&mut self, now: Instant) {
        let data_end = self.send_buf_seq + self.send_buf.len();
        let blocked = self.state.sends_data()
            && self.snd_nxt == self.snd_una
            && self.tx_next < data_end
            && self.next_data_end().is_none();
        if !blocked {
            self.timers.persist = None;
            self.persist_backoff = 0;
            if self.snd_nxt == self.snd_una {
                self.stalled_since = None;
            }
            return;
        }
        if self.timers.persist.is_none() {
            self.timers.persist = Some(now + self.persist_interval());
        }
        if self.snd_wnd == 0 && self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
    }

    pub(super) fn send_syn(&mut self, now: Instant) -> Segment {
        self.syn_pending = false;
        let flags = if self.state == State::SynSent {
            TcpFlags::SYN
        } else {
            TcpFlags::SYN | TcpFlags::ACK
        };
        let mut header = self.header(self.iss, flags);
        if !flags.ack() {
            header.ack = SeqNum(0);
        }
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        header.window = self.recv_buf.window().min(usize::from(u16::MAX)) as u16;
        if self.snd_nxt == self.iss {
            self.rtt_sample = Some((self.iss + 1u32, now));
        } else {
            self.stats.retransmits += 1;
        }
        self.tx_next = self.iss + 1u32;
        self.snd_nxt = self.snd_nxt.max(self.tx_next);
        if self.state == State::SynReceived {
            self.rcv_adv = self.rcv_nxt + u32::from(header.window);
            self.ack_pending = false;
        }
        if self.timers.retransmit.is_none() {
            self.timers.retransmit = Some(now + self.rtt.rto());
        }
        Segment {
            header,
            payload: Bytes::new(),
        }
    }

    /// Data from `start` to `end` (a FIN counted in `end` when it falls after the data).
    pub(super) fn send_range(&mut self, start: SeqNum, end: SeqNum, now: Instant) -> Segment {
        let data_end = self.send_buf_seq + self.send_buf.len();
        let payload_end = end.min(data_end);
        let len = if payload_end > start {
            (payload_end - start) as usize
        } else {
            0
        };
        let offset = (start - self.send_buf_seq) as usize;
        let payload = self.send_buf.slice(offset, len);
        let mut flags = TcpFlags::ACK;
        if len > 0 && payload_end == data_end {
            flags |= TcpFlags::PSH;
        }
        if self.fin_queued && end == data_end + 1u32 {
            flags |= TcpFlags::FIN;
        }
        let header = self.header_for_payload(start, flags, len);
        if len > 0 {
            self.last_data_sent = Some(now);
        }
        if let Some(rate) = self.cc.pacing_rate() {
            self.pacer.on_sent(end - start, rate, self.send_mss, now);
        }
        if self.in_recovery {
            let sent = end - start;
            self.recovery_budget = self.recovery_budget.saturating_sub(sent);
            if let Some(prr) = &mut self.prr {
                prr.on_sent(sent);
            }
        }
        if len > 0 && (len as u32) < self.send_mss {
            self.snd_small_end = self.snd_small_end.max(payload_end);
        }
        if start == self.tx_next {
            self.tx_next = end;
        }
        let tx_state = self.rate.on_send(self.sent.in_flight(), end - start, now);
        self.sent.on_transmit(start, end, tx_state, now);
        let new_data = end > self.snd_nxt;
        if new_data {
            if self.rtt_sample.is_none() && start >= self.snd_nxt {
                self.rtt_sample = Some((end, now));
            }
            self.snd_nxt = end;
        }
        if self.timers.retransmit.is_none() {
            self.timers.retransmit = Some(now + self.rtt.rto());
        }
        if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
        if new_data {
            self.arm_loss_probe(now);
        }
        Segment { header, payload }
    }

    /// Sends [`start`, `end`) again: counted, excluded from RTT timing (Karn), and recorded on
    /// the scoreboard (HighRxt, RescueRxt, and for recognising D-SACKs).
    pub(super) fn retransmit(
        &mut self,
        start: SeqNum,
        end: SeqNum,
        rescue: bool,
        now: Instant,
    ) -> Segment {
        self.stats.retransmits += 1;
        if self
            .rtt_sample
            .is_some_and(|(timed_end, _)| timed_end > start && timed_end <= end)
        {
            self.rtt_sample = None;
        }
        if self.sack_permitted {
            self.scoreboard
                .on_retransmit(start, end - start, rescue, self.snd_nxt);
        }
        self.send_range(start, end, now)
    }

    /// Where congestion control lets data end now: cwnd above SND.UNA, the 2 extra segments of
    /// limited transmit (RFC 3042) on the first two duplicate ACKs, PRR's sndcnt in recovery
    /// (RFC 6937), and after an RTO the SACKed bytes below `tx_next`, which are no longer in
    /// flight (RFC 6675 §5.1).
    pub(super) fn congestion_window_end(&self) -> SeqNum {
        if self.in_recovery {
            return if self.recovery_budget > 0 {
                self.tx_next + self.send_mss
            } else {
                self.tx_next
            };
        }
        let mut allowed = self.cc.window();
        if self.snd_una < self.recover {
            allowed = allowed.saturating_add(self.sacked_below(self.tx_next));
        } else if self.dup_acks < DUP_ACK_THRESHOLD {
            allowed = allowed.saturating_add(self.dup_acks * self.send_mss);
        }
        self.snd_una + allowed
    }

    /// SACKed bytes between SND.UNA and `seq`.
    pub(super) fn sacked_below(&self, seq: SeqNum) -> u32 {
        self.scoreboard
            .sacked()
            .iter()
            .take_while(|r| r.start < seq)
            .map(|r| r.end.min(seq) - r.start)
            .sum()
    }

    /// The start of the first SACKed range above `seq` (a retransmission stops there), or
    /// SND.NXT.
    pub(super) fn next_sacked_start(&self, seq: SeqNum) -> SeqNum {
        self.scoreboard
            .sacked()
            .iter()
            .find(|r| r.start > seq)
            .map_or(self.snd_nxt, |r| r.start)
    }

    pub(super) fn send_ack(&mut self) -> Segment {
        let header = self.header(self.snd_nxt, TcpFlags::ACK);
        Segment {
            header,
            payload: Bytes::new(),
        }
    }

    /// Every outgoing segment's header is made here: ports, seq, ack, window. Sending an ACK
    /// clears the pending and delayed ACK.
    pub(super) fn header(&mut self, seq: SeqNum, flags: TcpFlags) -> TcpHeader {
        self.header_for_payload(seq, flags, 0)
    }

    /// As [`Self::header`], for a segment carrying `payload_len` bytes of data.
    pub(super) fn header_for_payload(
        &mut self,
        seq: SeqNum,
        flags: TcpFlags,
        payload_len: usize,
    ) -> TcpHeader {
        let mut header = TcpHeader {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq,
            flags,
            ..TcpHeader::default()
        };
        if flags.ack() {
            header.ack = self.rcv_nxt;
            self.last_ack_sent = self.rcv_nxt;
            header.window = self.advertise_window();
            self.ack_pending = false;
            self.unacked_bytes = 0;
            self.compressed_acks = 0;
            self.timers.delayed_ack = None;
        }
        header.options = self.options_for(flags, payload_len);
        header
    }

    /// The single place where options of an outgoing segment are chosen.
    pub(super) fn options_for(&mut self, flags: TcpFlags, payload_len: usize) -> TcpOptions {
        let mut options = TcpOptions::default();
        // RFC 7323 §3.2: on every segment but RSTs once both SYNs carried them; TSecr is only
        // meaningful with ACK (a SYN's is 0).
        if self.timestamps && !flags.rst() {
            options.timestamps = Some(Timestamps {
                tsval: self.ts_clock.tsval(self.clock),
                tsecr: if flags.ack() { self.ts_recent } else { 0 },
            });
        }
        if flags.ack() && !flags.intersects(TcpFlags::SYN | TcpFlags::RST) && self.sack_permitted {
            let option_space = TcpOptions {
                timestamps: options.timestamps,
                sack_block_count: MAX_SACK_BLOCKS as u8,
                ..TcpOptions::default()
            }
            .sack_blocks_that_fit();
            // A data segment must stay within the peer's MSS, options included.
            let timestamps_len = if options.timestamps.is_some() {
                TIMESTAMPS_OPTION_LEN
            } else {
                0
            };
            let room = self
                .segment_room
                .saturating_sub(payload_len as u32 + timestamps_len + SACK_OPTION_BASE_LEN);
            let max_blocks = option_space.min((room / SACK_BLOCK_LEN) as usize);
            // With no room, what is to report waits for the next segment.
            if max_blocks > 0 {
                for &block in self.sack_blocks_for_ack(max_blocks).as_slice() {
                    options.push_sack_block(block);
                }
            }
        }
        if flags.syn() {
            options.mss = Some(self.config.mss);
            let offer_scale =
                self.config.window_scaling && (self.state == State::SynSent || self.window_scaling);
            if offer_scale {
                options.window_scale = Some(self.rcv_shift_for_buffer());
            }
            options.sack_permitted =
                self.config.sack && (self.state == State::SynSent || self.sack_permitted);
        }
        options
    }
}
