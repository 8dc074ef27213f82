//! The timers (RFC 9293 §3.8): the next deadline, retransmission timeouts with backoff and go-back-N
//! (RFC 6298 §5, RFC 6582 §3.2 step 4, RFC 6675 §5.1), the persist timer and its zero-window probes
//! (§3.8.6.1), keepalive (§3.8.4), the user timeout (§3.8.3, RFC 5482) and the delayed ACK.

use std::time::{Duration, Instant};

use crate::tcp::{ConnectionError, State};
use crate::wire::TcpFlags;

use super::Connection;

impl Connection {
    /// The earliest armed timer; `None` when nothing is armed (always so once CLOSED).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        [
            self.timers.retransmit,
            self.timers.persist,
            self.timers.delayed_ack,
            self.timers.reorder,
            self.timers.loss_probe,
            self.timers
                .fin_wait2
                .filter(|_| self.state == State::FinWait2),
            self.keepalive_deadline(),
            self.user_timeout_deadline(),
            self.time_wait().map(|tw| tw.deadline),
            self.pacer.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if let Some(tw) = self.time_wait() {
            if tw.is_expired(now) {
                self.enter_closed();
            }
            return;
        }
        if self.state == State::Closed {
            return;
        }
        self.pacer.on_timeout(now);
        if self.state == State::FinWait2 && self.timers.fin_wait2.is_some_and(|t| t <= now) {
            self.enter_closed();
            return;
        }
        if self.user_timeout_deadline().is_some_and(|t| t <= now) {
            // RFC 9293 §3.8.3 / RFC 5482: the user timeout aborts the connection.
            self.fail(ConnectionError::TimedOut);
            return;
        }
        if self.timers.retransmit.is_some_and(|t| t <= now) {
            self.on_retransmit_timeout(now);
            if self.state == State::Closed {
                return;
            }
        }
        if self.timers.reorder.is_some_and(|t| t <= now) {
            self.on_reorder_timeout(now);
        }
        if self.timers.loss_probe.is_some_and(|t| t <= now) {
            self.timers.loss_probe = None;
            self.probe_pending = self.rack_active() && self.snd_una < self.snd_nxt;
        }
        if self.timers.persist.is_some_and(|t| t <= now) {
            self.on_persist_timeout(now);
        }
        if self.timers.delayed_ack.is_some_and(|t| t <= now) {
            self.timers.delayed_ack = None;
            self.ack_pending = true;
        }
        if self.keepalive_deadline().is_some_and(|t| t <= now) {
            self.on_keepalive_timeout(now);
        }
    }

    /// RFC 6298 §5.4–5.6 with the retry limits of Linux's tcp_syn_retries, tcp_synack_retries
    /// and tcp_retries2.
    pub(super) fn on_retransmit_timeout(&mut self, now: Instant) {
        self.timers.retransmit = None;
        let limit = match self.state {
            State::SynSent => self.config.syn_retries,
            State::SynReceived => self.config.synack_retries,
            _ => self.config.data_retries,
        };
        // The receiver shrank its window to zero under data in flight: the retransmission
        // becomes a zero-window probe, and, as in Linux, does not count toward giving up while
        // the peer keeps answering (within the largest RTO).
        let zero_window = self.snd_wnd == 0
            && !matches!(self.state, State::SynSent | State::SynReceived)
            && self.snd_una != self.snd_nxt;
        if zero_window {
            if now.saturating_duration_since(self.last_received) > self.config.rto_max {
                self.fail(ConnectionError::TimedOut);
                return;
            }
        } else if self.retries >= limit {
            self.fail(ConnectionError::TimedOut);
            return;
        } else {
            self.retries += 1;
        }
        self.stats.rtos += 1;
        self.rtt.backoff();
        // Karn: nothing sent before now may be timed.
        self.rtt_sample = None;
        if matches!(self.state, State::SynSent | State::SynReceived) {
            self.syn_pending = true;
        } else {
            let flight = self.snd_nxt - self.snd_una;
            self.cc.on_rto(flight, now);
            // RFC 6582 §3.2 step 4: no fast retransmit for losses from before the timeout.
            self.recover = self.snd_nxt;
            self.in_recovery = false;
            self.sack_recovery = false;
            self.prr = None;
            self.recovery_budget = 0;
            self.undo_armed = false;
            // RFC 6675 §5.1: SACK recovery ends; the scoreboard stays, so that the go-back-N
            // retransmission skips what the peer SACKed.
            self.scoreboard.on_rto();
            self.rack_on_rto(flight);
            self.dup_acks = 0;
            self.fast_retransmit_pending = false;
            // Go back to the oldest unacknowledged byte and resend from there as cwnd allows.
            self.tx_next = self.snd_una;
            // With a zero window, send the first segment anyway (the fast-retransmit path
            // ignores the window).
            self.fast_retransmit_pending = zero_window;
        }
        self.timers.retransmit = Some(now + self.rtt.rto());
    }

    pub(super) fn on_persist_timeout(&mut self, now: Instant) {
        self.timers.persist = None;
        if self.snd_wnd == 0 {
            // RFC 9293 §3.8.6.1: a zero-window probe, `<SEQ=SND.UNA-1><ACK=RCV.NXT>` like Linux,
            // answered by an ACK with the current window.
            let probe = self.header(self.snd_una - 1u32, TcpFlags::ACK);
            self.queue_control(probe);
            self.persist_backoff = self.persist_backoff.saturating_add(1);
            self.timers.persist = Some(now + self.persist_interval());
        } else {
            // The override timeout of sender SWS avoidance (RFC 9293 §3.8.6.2.1).
            self.sws_override = true;
        }
    }

    pub(super) fn on_keepalive_timeout(&mut self, now: Instant) {
        let Some(keepalive) = self.config.keepalive else {
            return;
        };
        if self.keepalive_probes >= keepalive.probes {
            // Like Linux, tell the peer with a RST that we gave up.
            self.queue_final_reset();
            self.fail(ConnectionError::TimedOut);
            return;
        }
        // RFC 9293 §3.8.4: <SEQ=SND.NXT-1>, no data.
        let probe = self.header(self.snd_nxt - 1u32, TcpFlags::ACK);
        self.queue_control(probe);
        self.keepalive_probes += 1;
        self.last_keepalive_probe = now;
    }

    pub(super) fn keepalive_deadline(&self) -> Option<Instant> {
        let keepalive = self.config.keepalive?;
        if !matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait2
        ) || self.snd_nxt != self.snd_una
            || !self.send_buf.is_empty()
        {
            return None;
        }
        Some(if self.keepalive_probes == 0 {
            self.last_received + keepalive.idle
        } else {
            self.last_keepalive_probe + keepalive.interval
        })
    }

    pub(super) fn user_timeout_deadline(&self) -> Option<Instant> {
        let timeout = self.config.user_timeout?;
        let since = self.stalled_since?;
        Some(since + timeout)
    }

    pub(super) fn persist_interval(&self) -> Duration {
        let factor = 1u32 << self.persist_backoff.min(16);
        (self.rtt.rto().saturating_mul(factor)).min(self.config.rto_max)
    }
}
