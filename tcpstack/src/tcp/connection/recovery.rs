//! Fast recovery: entering it (RFC 5681 §3.2, RFC 6582 §3.2, RFC 6675 §5) with the reduction of
//! the congestion controller, the PRR hooks on each ACK (RFC 6937 §3.1), leaving it, and the undo
//! of a recovery whose every retransmission was D-SACKed (RFC 3708 §3, RFC 9438 §4.9).

use std::time::Instant;

use crate::tcp::prr::{Prr, ReductionBound};

use super::{Connection, DUP_ACK_THRESHOLD};

impl Connection {
    /// Fast retransmit and fast recovery start (RFC 5681 §3.2, RFC 6582 §3.2, RFC 6675 §5),
    /// with PRR deciding how much is sent until it ends (RFC 6937 §3.1).
    pub(super) fn enter_recovery(&mut self, flight: u32, now: Instant) {
        self.recover = self.snd_nxt;
        self.in_recovery = true;
        self.partial_ack_seen = false;
        // The reduction starts from FlightSize (RFC 5681 eq. 4, RFC 6675 §5 (4.2), RFC 9438
        // §4.6), an upper bound by RFC 5681 §3.2 step 2. SACKed data has left the network and
        // must not lift that base above the window that was sending (cwnd plus limited
        // transmit, RFC 3042): in a recovery that starts on the ACK ending the previous one,
        // SND.NXT − SND.UNA counts everything SACKed above the new holes, and back-to-back
        // recoveries would raise ssthresh instead of lowering it. Linux bases ssthresh on cwnd
        // (tcp_reno_ssthresh, cubictcp_recalc_ssthresh). Without SACK, FlightSize as RFC 6582.
        let window = self
            .cc
            .window()
            .saturating_add(self.dup_acks.min(DUP_ACK_THRESHOLD - 1) * self.send_mss);
        let unsacked = flight.saturating_sub(self.scoreboard.sacked_bytes());
        self.cc
            .on_fast_retransmit(flight.min(window.max(unsacked)), now);
        self.prr = Some(Prr::new(
            self.cc.ssthresh(),
            flight,
            ReductionBound::SlowStart,
        ));
        self.recovery_budget = 0;
        // A peer that negotiated SACK but sends no blocks gets RFC 6582's recovery, unless RACK
        // found the loss (then the log of sent segments says what to retransmit).
        self.sack_recovery = self.sack_permitted
            && (self.scoreboard.sacked_bytes() > 0
                || (self.rack_active() && self.sent.lost_bytes() > 0));
        if self.sack_recovery {
            self.scoreboard.enter_recovery(self.snd_nxt);
            self.stats.sack_recoveries += 1;
        }
        self.undo_armed = self.sack_recovery;
        self.fast_retransmit_pending = true;
        self.stats.fast_retransmits += 1;
    }

    pub(super) fn exit_recovery(&mut self) {
        self.cc.on_recovery_exit();
        self.rack.on_recovery_exit();
        self.in_recovery = false;
        self.sack_recovery = false;
        self.prr = None;
        self.recovery_budget = 0;
    }

    /// RFC 6937 §3.1, on every ACK during recovery: sndcnt from DeliveredData and pipe.
    pub(super) fn prr_on_ack(&mut self, delivered: u32) {
        let pipe = if self.sack_recovery && self.rack_active() {
            // RFC 8985 with RFC 6937: what is neither SACKed nor marked lost.
            self.sent.in_flight()
        } else if self.sack_recovery {
            self.scoreboard.pipe(self.snd_nxt)
        } else {
            // Without a scoreboard, each duplicate ACK since the last advance stands for a
            // segment that left the network.
            (self.snd_nxt - self.snd_una).saturating_sub(self.dup_acks * self.send_mss)
        };
        if self.cc.sets_cwnd_in_recovery() {
            // Linux's cong_control hook: an algorithm that sets cwnd on every ACK (BBR, with its
            // own packet conservation) governs recovery; PRR is for those that set ssthresh.
            self.recovery_budget = self.cc.window().saturating_sub(pipe);
        } else if let Some(prr) = &mut self.prr {
            self.recovery_budget = prr.on_ack(delivered, pipe, self.send_mss);
        }
    }

    /// RFC 3708 §3 with RFC 9438 §4.9: every retransmission of the last recovery was D-SACKed,
    /// so no segment was lost and the reduction is undone, once, after the recovery ended.
    pub(super) fn undo_if_spurious(&mut self) {
        if self.undo_armed && !self.in_recovery && self.scoreboard.recovery_was_spurious() {
            self.undo_armed = false;
            self.cc.on_spurious_congestion();
            self.stats.cwnd_undos += 1;
        }
    }
}
