//! The fifth step of segment arrival (RFC 9293 §3.10.7.4): ACK acceptability (RFC 5961 §5.2),
//! duplicate-ACK counting and limited transmit (RFC 5681 §2–§3.2, RFC 3042), partial ACKs (RFC
//! 6582), the SACK scoreboard update (RFC 6675 Update(), RFC 2883), the send window update
//! (SND.WL1/SND.WL2) and RTT samples (RFC 6298, Karn's rule; RFC 7323 §4.1 with timestamps).

use std::time::Instant;

use crate::tcp::sack::SackUpdate;
use crate::tcp::{Event, State};
use crate::wire::{SeqNum, TcpFlags, TcpHeader};

use super::{Connection, DUP_ACK_THRESHOLD};

impl Connection {
    /// Fifth step for synchronized states. Returns false when the segment is to be dropped.
    pub(super) fn process_ack(
        &mut self,
        header: &TcpHeader,
        payload_len: usize,
        now: Instant,
    ) -> bool {
        let ack = header.ack;
        // RFC 5961 §5.2: SND.UNA - MAX.SND.WND <= SEG.ACK <= SND.NXT, else ACK and drop.
        if ack > self.snd_nxt || self.snd_una.distance(ack) > self.max_snd_wnd as i32 {
            self.ack_pending = true;
            return false;
        }
        let window = u32::from(header.window) << self.snd_shift;
        let flight_before = self.snd_nxt - self.snd_una;
        self.rate.begin_ack(self.sent.in_flight());
        let sack = self.take_sack_blocks(header);
        let original_delivered = self.take_delivered(header, &sack, now);
        // RFC 6937's DeliveredData; without SACK information a duplicate ACK stands for one
        // segment that left the network.
        let mut delivered = sack.delivered;
        // A duplicate ACK as RFC 5681 §2 defines it; with SACK also any ACK that SACKs new data,
        // whatever its window or payload (RFC 6675 §2), as a receiver that auto-tunes its
        // buffer moves the window on many of its ACKs.
        let duplicate = payload_len == 0
            && !header.flags.intersects(TcpFlags::SYN | TcpFlags::FIN)
            && window == self.snd_wnd;
        let una_advanced = ack > self.snd_una;
        if una_advanced {
            let acked = ack - self.snd_una;
            let ack_covers_syn = self.snd_una == self.iss;
            self.take_rtt_sample(ack, header, now);
            let data_acked = if ack > self.send_buf_seq {
                ((ack - self.send_buf_seq) as usize).min(self.send_buf.len())
            } else {
                0
            };
            self.send_buf.consume(data_acked);
            self.send_buf_seq += data_acked;
            self.snd_una = ack;
            if self.tx_next < self.snd_una {
                self.tx_next = self.snd_una;
            }
            self.retries = 0;
            self.dup_acks = 0;
            if !self.sack_permitted {
                delivered = acked;
            }
            let flight = self.snd_nxt - self.snd_una;
            if self.in_recovery {
                if ack >= self.recover {
                    self.exit_recovery();
                } else if !self.sack_recovery {
                    // RFC 6582 §3.2 step 5: retransmit the next hole (cwnd comes from PRR).
                    self.fast_retransmit_pending = true;
                    if !self.partial_ack_seen {
                        self.partial_ack_seen = true;
                        self.timers.retransmit = Some(now + self.rtt.rto());
                    }
                }
            } else {
                // The SYN's sequence number is no data for congestion control.
                let acked_data = acked - u32::from(ack_covers_syn);
                if acked_data > 0 {
                    self.cc.on_ack(acked_data, flight_before, now);
                }
            }
            // RFC 6298 §5.2 and §5.3 (RFC 6582's impatient variant without SACK).
            if flight == 0 {
                self.timers.retransmit = None;
                self.stalled_since = None;
            } else {
                if !self.in_recovery || self.sack_recovery || !self.partial_ack_seen {
                    self.timers.retransmit = Some(now + self.rtt.rto());
                }
                self.stalled_since = Some(now);
            }
            if data_acked > 0
                && !self.fin_queued
                && matches!(self.state, State::Established | State::CloseWait)
            {
                self.push_event(Event::Writable);
            }
        } else if ack == self.snd_una && flight_before > 0 && (duplicate || sack.newly_sacked > 0) {
            self.dup_acks += 1;
            if header.options.sack_blocks().is_empty() {
                delivered = self.send_mss;
            }
            // With RACK, SACKed data finds losses by time below; duplicate ACKs count only from
            // a peer that sends no SACK blocks at all (a D-SACK reports no loss).
            let counted = !self.rack_active()
                || (header.options.sack_blocks().is_empty() && self.scoreboard.sacked_bytes() == 0);
            if counted
                && !self.in_recovery
                && self.dup_acks == DUP_ACK_THRESHOLD
                && ack >= self.recover
            {
                // RFC 6582 §3.2 steps 1–2, RFC 6675 §5 step (4).
                self.enter_recovery(flight_before, now);
            }
        }
        let plain_duplicate = !una_advanced && duplicate && header.options.sack_blocks().is_empty();
        self.tlp_on_ack(sack.dsack.map(|block| block.end), plain_duplicate, now);
        if self.rack_active() {
            self.rack
                .on_ack(sack.dsack.is_some(), self.snd_una, self.snd_nxt);
            self.rack_detect_loss(now);
        } else if self.sack_permitted
            && !self.in_recovery
            && ack >= self.recover
            && self.snd_una < self.snd_nxt
            && self.scoreboard.is_lost(self.snd_una)
        {
            // RFC 6675 §5: IsLost(HighACK + 1) starts recovery too, whatever the duplicate ACKs
            // (a receiver whose window moves sends none).
            self.enter_recovery(self.snd_nxt - self.snd_una, now);
        }
        if self.in_recovery {
            self.prr_on_ack(delivered);
        }
        self.undo_if_spurious();
        // The send window (RFC 9293 §3.10.7.4, fifth step).
        if ack >= self.snd_una
            && (self.snd_wl1 < header.seq || (self.snd_wl1 == header.seq && self.snd_wl2 <= ack))
        {
            self.update_send_window(window, header.seq, ack);
        }
        // After the window update: step 2b of F-RTO asks whether it admits new data.
        if self.frto.is_some() {
            self.frto_on_ack(
                una_advanced,
                original_delivered,
                duplicate || sack.newly_sacked > 0,
            );
        }
        if let Some(sample) = self.rate.finish_ack(self.rack.min_rtt(), now) {
            self.cc.on_rate_sample(&sample, self.sent.in_flight(), now);
            if self.in_recovery && self.cc.sets_cwnd_in_recovery() {
                // The model set cwnd from this sample: the recovery allowance follows it.
                self.prr_on_ack(0);
            }
        }
        self.arm_loss_probe(now);
        true
    }

    /// Feeds the ACK and its SACK blocks to the scoreboard (RFC 6675 Update(), RFC 2883 D-SACK).
    pub(super) fn take_sack_blocks(&mut self, header: &TcpHeader) -> SackUpdate {
        if !self.sack_permitted {
            return SackUpdate::default();
        }
        let update = self
            .scoreboard
            .on_ack(header.ack, header.options.sack_blocks(), self.snd_nxt);
        if update.dsack.is_some() {
            self.stats.dsacks_received += 1;
        }
        if update.spurious_retransmission {
            self.stats.spurious_retransmits += 1;
        }
        // With RACK, lost retransmissions are counted as RACK finds them.
        if !self.rack_active() {
            self.stats.lost_retransmits += u64::from(update.lost_retransmissions);
        }
        update
    }

    pub(super) fn update_send_window(&mut self, window: u32, seq: SeqNum, ack: SeqNum) {
        self.snd_wnd = window;
        self.snd_wl1 = seq;
        self.snd_wl2 = ack;
        self.max_snd_wnd = self.max_snd_wnd.max(window);
    }

    /// One RTT sample per ACK of new data: from the timed segment when the ACK covers it, else
    /// from the echoed timestamp (RFC 7323 §4.1), which Karn's rule does not restrict because
    /// it names the transmission it answers, so the RTO follows the path even during
    /// retransmission. Linux's tcp_ack_update_rtt chooses the same way.
    pub(super) fn take_rtt_sample(&mut self, ack: SeqNum, header: &TcpHeader, now: Instant) {
        let timed = match self.rtt_sample {
            Some((end, sent)) if ack >= end => {
                self.rtt_sample = None;
                Some(now.saturating_duration_since(sent))
            }
            _ => None,
        };
        let echoed = || {
            let tsecr = header.options.timestamps.filter(|_| self.timestamps)?.tsecr;
            self.ts_clock.rtt(tsecr, now)
        };
        if let Some(rtt) = timed.or_else(echoed) {
            self.rtt.sample(rtt);
            self.cc.on_rtt_sample(rtt, now);
        }
    }
}
