//! The receiver: the seventh and eighth steps of segment arrival (RFC 9293 §3.10.7.4, data with
//! reassembly and the FIN), delayed and quick ACKs (RFC 5681 §4.2), the SACK blocks ACKs carry
//! (RFC 2018 §4, RFC 2883), the advertised window with its scale and SWS avoidance (RFC 7323 §2,
//! RFC 9293 §3.8.6.2.2), and receive-buffer auto-tuning from the receiver's RTT (Linux's dynamic
//! right-sizing).

use std::time::Instant;

use crate::tcp::recv_buffer::{self};
use crate::tcp::rtt::CLOCK_GRANULARITY;
use crate::tcp::sack::{self};
use crate::tcp::{Event, State};
use crate::wire::{SackBlock, SeqNum, TcpFlags, TcpHeader};

use super::{
    Connection, COMPRESSED_ACK_MAX_DELAY, DUP_ACK_THRESHOLD, MAX_COMPRESSED_ACKS, QUICK_ACKS,
};

impl Connection {
    /// Seventh and eighth steps: deliver data (reassembling) and process the FIN.
    pub(super) fn process_data_and_fin(
        &mut self,
        header: &TcpHeader,
        payload_seq: SeqNum,
        payload: &[u8],
        now: Instant,
    ) {
        let receiving = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        if !receiving {
            // CLOSE-WAIT, CLOSING, LAST-ACK: the peer already sent FIN; ignore text and FIN.
            if !payload.is_empty() || header.flags.fin() {
                self.ack_pending = true;
            }
            return;
        }
        let window_end = self.rcv_nxt + self.receive_window().max(1);
        if !payload.is_empty() {
            // Trim what was already received; the buffer cuts what lies beyond the window.
            let skip = if payload_seq < self.rcv_nxt {
                ((self.rcv_nxt - payload_seq) as usize).min(payload.len())
            } else {
                0
            };
            // RFC 5681 §4.2: each out-of-order segment gets its own duplicate ACK, so one still
            // pending from an earlier segment goes out first instead of merging with this one
            // (a sender without SACK counts them).
            if self.ack_pending && payload_seq > self.rcv_nxt {
                let pending = self.header(self.snd_nxt, TcpFlags::ACK);
                self.queue_control(pending);
            }
            self.note_received_for_sack(payload_seq, payload_seq + payload.len());
            let data = &payload[skip..];
            let start = payload_seq + skip;
            // Never negative after the trim (the acceptability test guarantees it); 0 keeps an
            // empty remainder harmless anyway.
            let offset = usize::try_from(start.distance(self.rcv_nxt)).unwrap_or(0);
            let in_window = self.receive_window() as usize;
            let fits = data.len().min(in_window.saturating_sub(offset));
            self.stats.receive_drops.trimmed_bytes += (data.len() - fits) as u64;
            let data = &data[..fits];
            if !data.is_empty() {
                let had_holes = self.recv_buf.has_out_of_order();
                let segment_size = (payload.len() as u32).min(u32::from(self.config.mss));
                self.rcv_mss = self.rcv_mss.max(segment_size);
                if segment_size >= self.rcv_mss {
                    self.measure_receiver_rtt(header, now);
                }
                let advanced = self.recv_buf.write(offset, data);
                if advanced > 0 {
                    self.rcv_nxt += advanced;
                    self.stats.bytes_in += advanced as u64;
                    self.push_event(Event::Readable);
                    self.unacked_bytes = self.unacked_bytes.saturating_add(advanced as u32);
                    // The peer was silent longer than an RTO: it restarts from a small window,
                    // ACK it quickly again (Linux's tcp_event_data_recv).
                    if self
                        .last_data_received
                        .is_some_and(|at| now.saturating_duration_since(at) > self.rtt.rto())
                    {
                        self.quick_acks = QUICK_ACKS;
                    }
                    self.last_data_received = Some(now);
                    // RFC 5681 §4.2: ACK at least every second full-sized segment; at once
                    // when a segment fills (part of) a hole, and in quick-ACK mode.
                    let quick = self.quick_acks > 0;
                    self.quick_acks = self.quick_acks.saturating_sub(1);
                    if quick || had_holes || self.unacked_bytes >= 2 * self.rcv_mss {
                        self.ack_pending = true;
                    } else if self.timers.delayed_ack.is_none() {
                        self.timers.delayed_ack = Some(now + self.config.delayed_ack);
                    }
                } else {
                    self.acknowledge_out_of_order(now);
                }
            } else {
                self.ack_pending = true;
            }
        }
        if header.flags.fin() {
            let fin_seq = payload_seq + payload.len();
            if fin_seq.in_range(self.rcv_nxt, window_end) && self.pending_fin.is_none() {
                self.pending_fin = Some(fin_seq);
            } else if fin_seq < self.rcv_nxt {
                self.ack_pending = true;
            }
        }
        if let Some(fin_seq) = self.pending_fin {
            if fin_seq == self.rcv_nxt {
                self.pending_fin = None;
                self.receive_fin(now);
            } else if fin_seq < self.rcv_nxt {
                // Data continued past a claimed FIN: forget it.
                self.pending_fin = None;
            }
        }
    }

    /// An out-of-order segment: a duplicate ACK at once (RFC 5681 §4.2), for the first
    /// [`DUP_ACK_THRESHOLD`] at one RCV.NXT at least, which the sender's fast retransmit needs.
    /// With SACK, later ones are compressed as Linux's tcp_comp_sack: one ACK, whose blocks
    /// report them all, for up to [`MAX_COMPRESSED_ACKS`] segments or a short delay. Each ACK
    /// spares the sender an ACK to process and the path a packet, which counts most during
    /// recovery, when every arriving segment is out of order.
    fn acknowledge_out_of_order(&mut self, now: Instant) {
        if self.dup_acks_for != self.rcv_nxt {
            self.dup_acks_for = self.rcv_nxt;
            self.dup_acks_sent = 0;
        }
        if !self.sack_permitted
            || self.dup_acks_sent < DUP_ACK_THRESHOLD
            || self.compressed_acks >= MAX_COMPRESSED_ACKS
        {
            self.dup_acks_sent = self.dup_acks_sent.saturating_add(1);
            self.ack_pending = true;
            return;
        }
        self.compressed_acks += 1;
        let rtt = match (self.rcv_rtt, self.rtt.srtt()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(COMPRESSED_ACK_MAX_DELAY * 20),
        };
        let deadline = now + (rtt / 20).min(COMPRESSED_ACK_MAX_DELAY);
        self.timers.delayed_ack = Some(
            self.timers
                .delayed_ack
                .map_or(deadline, |armed| armed.min(deadline)),
        );
    }

    /// The peer's FIN is next in sequence (eighth step).
    pub(super) fn receive_fin(&mut self, now: Instant) {
        self.rcv_nxt += 1u32;
        self.peer_closed = true;
        self.ack_pending = true;
        self.push_event(Event::Readable);
        self.push_event(Event::PeerClosed);
        match self.state {
            State::SynReceived | State::Established => self.state = State::CloseWait,
            State::FinWait1 => {
                let fin_acked = self.snd_una == self.fin_seq() + 1u32;
                if fin_acked {
                    self.enter_time_wait(now);
                } else {
                    self.state = State::Closing;
                }
            }
            State::FinWait2 => self.enter_time_wait(now),
            _ => {}
        }
    }

    /// The SACK blocks of the next ACK (RFC 2018 §4, RFC 2883 §4): a D-SACK for the duplicate
    /// just received, then the out-of-order range holding the newest segment, then the ranges
    /// reported most recently. Each received segment and duplicate is reported first once.
    pub(super) fn sack_blocks_for_ack(&mut self, max_blocks: usize) -> sack::SackBlocks {
        let received = self.sack_received.take();
        let duplicate = self.sack_duplicate.take();
        if duplicate.is_none() && !self.recv_buf.has_out_of_order() {
            self.sack_blocks.clear();
            return sack::SackBlocks::default();
        }
        let (out_of_order, count) = self.out_of_order_blocks();
        self.sack_blocks.build(
            self.rcv_nxt,
            &out_of_order[..count],
            received,
            duplicate,
            max_blocks,
        )
    }

    /// Notes an arriving data segment `[start, end)` for the SACK blocks of the next ACK; call
    /// before it is queued, so that data already held is recognised as a duplicate.
    pub(super) fn note_received_for_sack(&mut self, start: SeqNum, end: SeqNum) {
        if !self.sack_permitted || start >= end {
            return;
        }
        let segment = SackBlock { start, end };
        let (out_of_order, count) = self.out_of_order_blocks();
        self.sack_duplicate = sack::duplicate_of(segment, self.rcv_nxt, &out_of_order[..count]);
        self.sack_received = Some(segment);
    }

    /// The reassembly queue's ranges in sequence numbers, and how many there are.
    pub(super) fn out_of_order_blocks(&self) -> ([SackBlock; recv_buffer::MAX_RANGES], usize) {
        let mut blocks = [SackBlock::default(); recv_buffer::MAX_RANGES];
        let mut count = 0;
        for (slot, (start, end)) in blocks.iter_mut().zip(self.recv_buf.out_of_order()) {
            *slot = SackBlock {
                start: self.rcv_nxt + start,
                end: self.rcv_nxt + end,
            };
            count += 1;
        }
        (blocks, count)
    }

    /// The window field for a non-SYN segment, with receiver SWS avoidance (RFC 9293
    /// §3.8.6.2.2): the right edge moves only by at least min(buffer/2, MSS) and never left.
    pub(super) fn advertise_window(&mut self) -> u16 {
        let max_window = u32::from(u16::MAX) << self.rcv_shift;
        let available = (self.recv_buf.window() as u32).min(max_window);
        let potential_edge = self.rcv_nxt + available;
        let current_edge = self.rcv_adv.max(self.rcv_nxt);
        let threshold = (self.recv_buf.capacity() as u32 / 2).min(self.send_mss);
        let edge = if potential_edge > current_edge && potential_edge - current_edge >= threshold {
            potential_edge
        } else {
            current_edge
        };
        let window = edge - self.rcv_nxt;
        // Round up so the scaled window never shrinks; the buffer's slack holds the rest.
        let field = window
            .div_ceil(1 << self.rcv_shift)
            .min(u32::from(u16::MAX));
        self.rcv_adv = self.rcv_nxt + (field << self.rcv_shift);
        field as u16
    }

    /// RCV.WND: what we last offered, counted from RCV.NXT.
    pub(super) fn receive_window(&self) -> u32 {
        if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv - self.rcv_nxt
        } else {
            0
        }
    }

    /// After the application read: announce a window that doubled and moved by at least
    /// min(buffer/2, MSS), as Linux's tcp_cleanup_rbuf.
    pub(super) fn window_update_due(&self) -> bool {
        if !matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        ) {
            return false;
        }
        let current = self.receive_window();
        let max_window = u32::from(u16::MAX) << self.rcv_shift;
        let available = (self.recv_buf.window() as u32).min(max_window);
        let threshold = (self.recv_buf.capacity() as u32 / 2).min(self.send_mss);
        available > current
            && available - current >= threshold
            && current <= self.recv_buf.capacity() as u32 / 2
            && available >= 2 * current
    }

    /// The smallest shift that lets the 16-bit field cover the receive buffer as large as
    /// auto-tuning may make it (the shift is fixed on the SYN, RFC 7323 §2.2).
    pub(super) fn rcv_shift_for_buffer(&self) -> u8 {
        recv_buffer::window_shift_for(self.config.recv_buffer.max(self.config.recv_buffer_max))
    }

    /// Linux's tcp_rcv_rtt_measure_ts: a full-sized data segment echoing our timestamp took
    /// about one RTT since we sent what it echoes; smoothed by 1/8 as RFC 6298's SRTT.
    pub(super) fn measure_receiver_rtt(&mut self, header: &TcpHeader, now: Instant) {
        let Some(ts) = header.options.timestamps.filter(|_| self.timestamps) else {
            return;
        };
        let Some(sample) = self.ts_clock.rtt(ts.tsecr, now) else {
            return;
        };
        self.rcv_rtt = Some(match self.rcv_rtt {
            None => sample,
            Some(rtt) => rtt * 7 / 8 + sample / 8,
        });
    }

    /// Receive-buffer auto-tuning, as Linux's tcp_rcv_space_adjust: once per RTT, when the
    /// application read more than in any RTT before, the buffer grows to twice that plus room
    /// for 16 segments, more when the rate is still climbing, so the window stays ahead of the
    /// bandwidth-delay product the sender can reach. Up to `Config::recv_buffer_max`; it never
    /// shrinks (an offered window must not, RFC 9293 §3.8.6.2.2).
    pub(super) fn tune_receive_buffer(&mut self) {
        let now = self.clock;
        let Some(rtt) = self.rcv_rtt.or(self.rtt.srtt()) else {
            return;
        };
        if now.saturating_duration_since(self.rcv_space_since) < rtt.max(CLOCK_GRANULARITY) {
            return;
        }
        let copied = self.rcv_space_copied as u64;
        let space = u64::from(self.rcv_space.max(1));
        if copied > space {
            let mut target = 2 * copied + 16 * u64::from(self.rcv_mss);
            target += 2 * (target * (copied - space) / space);
            let max_window = if self.window_scaling {
                self.config.recv_buffer_max
            } else {
                usize::from(u16::MAX)
            };
            let capacity = usize::try_from(target)
                .unwrap_or(usize::MAX)
                .min(max_window);
            self.recv_buf.grow(capacity);
            self.rcv_space = u32::try_from(copied).unwrap_or(u32::MAX);
        }
        self.rcv_space_copied = 0;
        self.rcv_space_since = now;
    }
}
