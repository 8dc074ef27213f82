//! The connection's side of RACK-TLP (RFC 8985), F-RTO (RFC 5682) and delivery-rate sampling
//! (draft-cheng-iccrg-delivery-rate-estimation): feeding the sent-segment log from each ACK,
//! time-based loss detection and the reordering timer, the tail loss probe, and the undo of a
//! spurious retransmission timeout. The rules themselves live in tcp/rack.rs, tcp/rate.rs and
//! tcp/sent.rs.

use std::time::Instant;

use crate::tcp::rack;
use crate::tcp::sack::{self, SackUpdate};
use crate::tcp::sent::SentSegment;
use crate::tcp::Segment;
use crate::wire::{SackBlock, SeqNum, TcpHeader, MAX_SACK_BLOCKS};

use super::{Connection, Frto};

/// New segments F-RTO sends in step 2 (RFC 5682 §3.1).
const FRTO_NEW_SEGMENTS: u8 = 2;

impl Connection {
    /// RACK-TLP runs where Linux's tcp_recovery = 1 runs it: configured, and with SACK.
    pub(super) fn rack_active(&self) -> bool {
        self.config.rack && self.sack_permitted
    }

    /// Updates the sent-segment log with what the ACK newly acknowledged or SACKed, feeding the
    /// delivery-rate estimator and RACK (RFC 8985 §6.1) with each segment. Returns whether data
    /// never retransmitted, sent before the last RTO, was among it (F-RTO, RFC 5682 §3.1).
    pub(super) fn take_delivered(
        &mut self,
        header: &TcpHeader,
        sack: &SackUpdate,
        now: Instant,
    ) -> bool {
        let frto_high = self.frto.map(|frto| frto.high_seq);
        // SACK blocks cover data only: one that reaches the FIN we sent takes the FIN too,
        // which arrived in the same segment.
        let fin_seq = self.fin_seq();
        let fin_sent = self.fin_queued && self.snd_nxt == fin_seq + 1u32;
        let mut original = false;
        let (rate, rack) = (&mut self.rate, &mut self.rack);
        let mut on_delivered = |segment: &SentSegment| {
            rate.on_delivered(
                segment.len(),
                &segment.rate,
                segment.xmit_time,
                segment.retransmitted,
                now,
            );
            rack.on_delivered(segment, now);
            original |= !segment.retransmitted && frto_high.is_some_and(|high| segment.end <= high);
        };
        if header.ack > self.snd_una {
            self.sent.on_cumulative_ack(header.ack, &mut on_delivered);
        }
        if self.sack_permitted {
            let blocks = header.options.sack_blocks();
            let blocks = if sack.dsack.is_some() {
                &blocks[1..]
            } else {
                blocks
            };
            // In sequence order, as Linux's tcp_sacktag_write_queue sorts them: the first block
            // is the newest, and a lower one reported first by this ACK (its earlier ACK lost)
            // must not look like reordering to RACK (RFC 8985 §6.1 step 3).
            let mut sorted = [SackBlock::default(); MAX_SACK_BLOCKS];
            let sorted = &mut sorted[..blocks.len()];
            sorted.copy_from_slice(blocks);
            sorted.sort_unstable_by_key(|block| block.start);
            for &block in sorted.iter() {
                let mut block = block;
                if fin_sent && block.end == fin_seq {
                    block.end = fin_seq + 1u32;
                }
                self.sent.on_sack(block, &mut on_delivered);
            }
        }
        original
    }

    /// RACK_detect_loss_and_arm_timer() (RFC 8985 §6.2 step 5, §6.3): marks what is lost by
    /// time, starts recovery for it, and arms the reordering timer for what may still arrive.
    pub(super) fn rack_detect_loss(&mut self, now: Instant) {
        let dupthresh_sacked = self.sent.sacked_bytes() > (sack::DUP_THRESH - 1) * self.send_mss;
        let in_recovery = self.in_recovery || self.snd_una < self.recover;
        let reo_wnd = self
            .rack
            .reo_wnd(in_recovery, dupthresh_sacked, self.rtt.srtt());
        let (rate, stats) = (&mut self.rate, &mut self.stats);
        self.timers.reorder = self
            .rack
            .detect_loss(&mut self.sent, reo_wnd, now, |segment| {
                rate.on_lost(segment.len());
                stats.rack_losses += 1;
                if segment.retransmitted {
                    stats.lost_retransmits += 1;
                }
            });
        if self.sent.lost_bytes() > 0
            && !self.in_recovery
            && self.snd_una >= self.recover
            && self.frto.is_none()
        {
            self.enter_recovery(self.snd_nxt - self.snd_una, now);
        }
    }

    /// RFC 8985 §6.3: RACK_detect_loss() again once the reordering window has passed.
    pub(super) fn on_reorder_timeout(&mut self, now: Instant) {
        self.timers.reorder = None;
        if self.rack_active() {
            self.rack_detect_loss(now);
            if self.in_recovery && self.sent.lost_bytes() > 0 {
                self.fast_retransmit_pending = true;
            }
        }
    }

    /// On a retransmission timeout: everything not SACKed is lost (RFC 8985 §6.3), no probe is
    /// outstanding any more, and F-RTO watches the next ACKs (RFC 5682 §3.1 step 1).
    pub(super) fn rack_on_rto(&mut self, flight: u32) {
        let lost = self.sent.mark_all_lost();
        self.rate.on_lost(lost);
        self.tlp.clear();
        self.probe_pending = false;
        self.timers.loss_probe = None;
        self.timers.reorder = None;
        self.frto = (self.sack_permitted && flight > 0).then_some(Frto {
            high_seq: self.snd_nxt,
            new_data: false,
            new_segments_left: 0,
        });
    }

    /// RFC 8985 §7.4: whether the ACK answers an outstanding probe; a probe that repaired a loss
    /// reduces the window once (§7.4.2, Linux's CWR).
    pub(super) fn tlp_on_ack(
        &mut self,
        dsack_end: Option<SeqNum>,
        plain_duplicate: bool,
        now: Instant,
    ) {
        if self.tlp.on_ack(self.snd_una, dsack_end, plain_duplicate)
            == rack::TlpVerdict::RepairedLoss
            && !self.in_recovery
        {
            self.cc.on_fast_retransmit(self.snd_nxt - self.snd_una, now);
            self.cc.on_recovery_exit();
        }
    }

    /// RFC 5682 §3.1 steps 2 and 3, on each ACK after a timeout; Linux's tcp_process_loss.
    pub(super) fn frto_on_ack(
        &mut self,
        una_advanced: bool,
        original_delivered: bool,
        duplicate: bool,
    ) {
        let Some(mut frto) = self.frto else {
            return;
        };
        if original_delivered {
            // Step 3b (and, as Linux, already at step 2): data never retransmitted arrived, so
            // not everything sent before the timeout was lost.
            self.undo_spurious_rto();
            return;
        }
        if self.snd_una >= frto.high_seq && !frto.new_data {
            // The retransmissions covered everything: an ordinary RTO recovery.
            self.frto = None;
            return;
        }
        if frto.new_data {
            if duplicate {
                // Step 3a: the new data is SACKed, the old is not: the loss was real.
                self.frto = None;
                self.tx_next = self.snd_una;
            }
            return;
        }
        if una_advanced {
            // Step 2b: the retransmission arrived; send new data instead of more old data, if
            // there is any the window admits, and decide on the next ACK. Without new data
            // (a full send buffer the application refills only now) the go-back-N goes on,
            // and data never retransmitted acknowledged later still proves the timeout
            // spurious, as in Linux.
            let data_end = self.send_buf_seq + self.send_buf.len();
            if self.snd_nxt < data_end && self.snd_nxt < self.snd_una + self.snd_wnd {
                frto.high_seq = self.snd_nxt;
                frto.new_data = true;
                frto.new_segments_left = FRTO_NEW_SEGMENTS;
                self.tx_next = self.snd_nxt;
                self.frto = Some(frto);
            }
        }
    }

    /// RFC 5682 §3.1 step 2b: one of the (up to two) new segments, within the peer's window
    /// but whatever the congestion window says ("an F-RTO sender simply chooses different
    /// segments to transmit"). When not even the first can go, F-RTO gives way to the
    /// conventional go-back-N, as the RFC recommends without new data to send.
    pub(super) fn frto_new_segment(&mut self, now: Instant) -> Option<Segment> {
        let mut frto = self
            .frto
            .filter(|f| f.new_data && f.new_segments_left > 0)?;
        let first = frto.new_segments_left == FRTO_NEW_SEGMENTS;
        frto.new_segments_left -= 1;
        self.frto = Some(frto);
        let end = (self.tx_next == self.snd_nxt)
            .then(|| self.next_data_end_within(self.snd_una + self.snd_wnd, true))
            .flatten();
        match end {
            Some(end) => Some(self.send_range(self.tx_next, end, now)),
            None => {
                if first {
                    self.frto = None;
                    self.tx_next = self.snd_una;
                }
                None
            }
        }
    }

    /// F-RTO found the timeout spurious: undo its window reduction (RFC 5682 §3.2 with RFC 9438
    /// §4.9) and its go-back-N; nothing was lost.
    fn undo_spurious_rto(&mut self) {
        self.frto = None;
        self.cc.on_spurious_congestion();
        self.recover = self.snd_una;
        self.tx_next = self.snd_nxt;
        self.sent.clear_lost();
        self.stats.spurious_rtos += 1;
    }

    /// RFC 8985 §7.2: (re)arms the probe timer while data is in flight, nothing is being
    /// recovered and no probe is outstanding; disarms it otherwise.
    pub(super) fn arm_loss_probe(&mut self, now: Instant) {
        let eligible = self.rack_active()
            && self.state.sends_data()
            && !self.in_recovery
            && self.snd_una >= self.recover
            && self.frto.is_none()
            && !self.tlp.outstanding()
            && self.snd_una < self.snd_nxt;
        self.timers.loss_probe = None;
        if !eligible {
            return;
        }
        let rto_remaining = self
            .timers
            .retransmit
            .map_or(self.rtt.rto(), |at| at.saturating_duration_since(now));
        let one_segment = self.sent.in_flight() <= self.send_mss;
        // The peer's largest ACK delay is unknown; assume it delays as this stack does (40 ms,
        // Linux's minimum delayed-ACK timeout) rather than RFC 8985's worst case of 200 ms,
        // which the 200 ms minimum RTO would always beat. A probe that comes too early costs
        // one segment, which the peer's D-SACK reports.
        let pto = rack::probe_timeout(
            self.rtt.srtt(),
            one_segment,
            self.config.delayed_ack,
            rto_remaining,
        );
        // When the RTO comes first anyway, it does the job.
        if pto < rto_remaining {
            self.timers.loss_probe = Some(now + pto);
        }
    }

    /// RFC 8985 §7.3: the tail loss probe, a new segment if the peer's window admits one
    /// (whatever cwnd says), else the last segment sent again; then the RTO is re-armed.
    pub(super) fn send_loss_probe(&mut self, now: Instant) -> Option<Segment> {
        if !self.rack_active() || self.snd_una == self.snd_nxt || self.tlp.outstanding() {
            return None;
        }
        let new_data = (self.tx_next == self.snd_nxt)
            .then(|| self.next_data_end_within(self.snd_una + self.snd_wnd, true))
            .flatten();
        let segment = match new_data {
            Some(end) => {
                let start = self.tx_next;
                let segment = self.send_range(start, end, now);
                self.tlp.on_probe_sent(self.snd_nxt, false);
                segment
            }
            None => {
                let last = *self.sent.last()?;
                let segment = self.retransmit(last.start, last.end, false, now);
                self.tlp.on_probe_sent(self.snd_nxt, true);
                segment
            }
        };
        self.stats.tlps += 1;
        self.timers.retransmit = Some(now + self.rtt.rto());
        Some(segment)
    }

    /// After an RTO, the first segment RACK found lost again behind the go-back-N point, if the
    /// window lets it go out.
    pub(super) fn lost_behind_go_back_n(&self) -> Option<SeqNum> {
        let (start, _) = self
            .sent
            .first_lost()
            .filter(|(start, _)| *start < self.tx_next)?;
        let in_flight = self.sent.in_flight();
        (in_flight == 0 || in_flight + self.send_mss <= self.cc.window()).then_some(start)
    }

    /// One segment from `start`: at most an MSS, and not into data the peer SACKed.
    pub(super) fn retransmit_one(&mut self, start: SeqNum, now: Instant) -> Segment {
        let end = self
            .snd_nxt
            .min(start + self.send_mss)
            .min(self.next_sacked_start(start));
        self.retransmit(start, end, false, now)
    }

    /// draft-cheng-iccrg-delivery-rate-estimation §3.4: nothing left to send, the window not
    /// full, nothing lost waiting: the application, not the network, limits the rate.
    pub(super) fn note_app_limited(&mut self) {
        let data_end = self.send_buf_seq + self.send_buf.len();
        let in_flight = self.sent.in_flight();
        if self.tx_next >= data_end && in_flight < self.cc.window() && self.sent.lost_bytes() == 0 {
            self.rate.on_app_limited(in_flight);
        }
    }
}
