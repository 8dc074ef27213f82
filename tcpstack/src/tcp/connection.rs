//! The TCB: RFC 9293's state machine for one connection, sans-IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::congestion::CongestionControl;
use super::prr::{Prr, ReductionBound};
use super::rack::{self, Rack, Tlp, TlpVerdict};
use super::rate::RateEstimator;
use super::recv_buffer::{self, RecvBuffer, MAX_WINDOW_SHIFT};
use super::rtt::{RttEstimator, CLOCK_GRANULARITY};
use super::sack::{self, NextSeg, SackBlocksBuilder, SackScoreboard, SackUpdate};
use super::send_buffer::SendBuffer;
use super::sent::SentLog;
use super::time_wait::{TimeWait, TimeWaitOutcome, TimeWaitTimestamps};
use super::timestamps::{self, TimestampClock};
use super::{
    reset_for, segment_len, Config, CongestionAlgorithm, ConnectionError, Event, FourTuple,
    KeepaliveConfig, Segment, State,
};
use crate::wire::{
    SackBlock, SeqNum, TcpFlags, TcpHeader, TcpOptions, Timestamps, MAX_SACK_BLOCKS,
};

/// MSS assumed when the peer's SYN has no MSS option (RFC 9293 §3.7.1).
const DEFAULT_PEER_MSS: u16 = 536;
/// Smallest send MSS we accept from a peer (Linux's tcp_min_snd_mss).
const MIN_SEND_MSS: u32 = 48;
/// Bytes the timestamps option takes in every segment, padding included (RFC 7323 §3.2).
const TIMESTAMPS_OPTION_LEN: u32 = 12;
/// Bytes of a SACK option besides its blocks (two NOPs, kind and length), and per block.
const SACK_OPTION_BASE_LEN: u32 = 4;
const SACK_BLOCK_LEN: u32 = 8;
/// In-order segments acknowledged at once in quick-ACK mode, at the start and after the peer
/// fell silent (Linux's TCP_MAX_QUICKACKS).
const QUICK_ACKS: u32 = 16;
/// Duplicate ACKs that trigger fast retransmit (RFC 5681 §3.2).
const DUP_ACK_THRESHOLD: u32 = 3;
/// One-off control segments (duplicate ACKs, challenge ACKs, probes, RSTs) queued at most, so
/// that every out-of-order segment of a receive batch (the backends hand over up to 64 frames at
/// a time) gets its own duplicate ACK (RFC 5681 §4.2); beyond that ACKs and probes are dropped.
const MAX_CONTROL_QUEUE: usize = 64;
/// A challenge ACK is queued only while fewer control segments than this wait: the rate limit of
/// RFC 5961 §7, so that a burst of forged segments gets a few answers, not one each.
const MAX_CHALLENGE_ACKS: usize = 4;

/// Per-connection counters and the current estimator and congestion state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub segments_in: u64,
    pub segments_out: u64,
    /// Payload bytes received and sent (retransmissions included).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Segments sent again (RTO, fast retransmit, SYN/SYN-ACK retransmission).
    pub retransmits: u64,
    /// Fast recoveries entered (RFC 6582 or RFC 6675), SACK-based ones included.
    pub fast_retransmits: u64,
    /// Retransmission timer expirations.
    pub rtos: u64,
    /// Fast recoveries driven by the SACK scoreboard (RFC 6675).
    pub sack_recoveries: u64,
    /// ACKs that carried a D-SACK block (RFC 2883).
    pub dsacks_received: u64,
    /// Retransmissions a D-SACK showed to be unnecessary (RFC 3708).
    pub spurious_retransmits: u64,
    /// Congestion-window reductions undone because the recovery proved spurious (RFC 3708 §3).
    pub cwnd_undos: u64,
    /// Retransmissions found lost during SACK recovery (data sent after them was SACKed) and
    /// sent again without waiting for the RTO.
    pub lost_retransmits: u64,
    /// Tail loss probes sent (RFC 8985 §7).
    pub tlps: u64,
    /// Segments RACK found lost by time (RFC 8985 §6.2).
    pub rack_losses: u64,
    /// Retransmission timeouts F-RTO showed to be spurious and undid (RFC 5682).
    pub spurious_rtos: u64,
    /// The congestion control algorithm the connection runs.
    pub congestion: CongestionAlgorithm,
    /// Both SYNs carried SACK-permitted (RFC 2018).
    pub sack: bool,
    pub srtt: Option<Duration>,
    pub rttvar: Duration,
    pub rto: Duration,
    pub cwnd: u32,
    pub ssthresh: u32,
    /// Both SYNs carried timestamps (RFC 7323).
    pub timestamps: bool,
    /// Segments dropped by PAWS as old duplicates (RFC 7323 §5).
    pub paws_rejected: u64,
}

/// The armed timers; `None` is disarmed. Keepalive and the user timeout are derived from state.
#[derive(Clone, Copy, Debug, Default)]
struct Timers {
    retransmit: Option<Instant>,
    persist: Option<Instant>,
    delayed_ack: Option<Instant>,
    /// RACK's reordering timer (RFC 8985 §6.3).
    reorder: Option<Instant>,
    /// The tail loss probe timer, PTO (RFC 8985 §7.2).
    loss_probe: Option<Instant>,
}

/// F-RTO (RFC 5682 §3.1, the SACK-enhanced variant) after a retransmission timeout.
#[derive(Clone, Copy, Debug)]
struct Frto {
    /// "recover": SND.NXT when the timeout fired, then when new data went out in step 2b.
    high_seq: SeqNum,
    /// Step 2b sent (or may send) new data instead of retransmitting.
    new_data: bool,
}

/// One TCB.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    tuple: FourTuple,
    state: State,
    /// Opened by `accept` (a passive OPEN): a RST or SYN in SYN-RECEIVED just ends it.
    passive: bool,

    // Send sequence space (RFC 9293 §3.3.1).
    iss: SeqNum,
    snd_una: SeqNum,
    /// SND.NXT: the sequence number after the highest one sent. Control segments carry it.
    snd_nxt: SeqNum,
    /// Where the next data segment starts: SND.NXT, except after an RTO, when it goes back to
    /// SND.UNA and walks forward again as retransmissions go out.
    tx_next: SeqNum,
    snd_wnd: u32,
    snd_wl1: SeqNum,
    snd_wl2: SeqNum,
    max_snd_wnd: u32,
    /// Shift applied to the peer's window field (0 unless both SYNs carried window scale).
    snd_shift: u8,
    /// Both SYNs carry window scale (RFC 7323 §2.2), as far as we know yet.
    window_scaling: bool,
    /// Both SYNs carry SACK-permitted (RFC 2018 §2), as far as we know yet.
    sack_permitted: bool,
    send_mss: u32,
    /// Data plus options one segment may carry: the peer's MSS (and ours). SACK blocks on a data
    /// segment use what the data leaves of it.
    segment_room: u32,
    send_buf: SendBuffer,
    /// Timestamps are in use (RFC 7323 §3.2): offered, in SYN-SENT; afterwards both SYNs had them.
    timestamps: bool,
    ts_clock: TimestampClock,
    /// TS.Recent: the TSval to echo (RFC 7323 §4.3), and when it was last updated (§5.5).
    ts_recent: u32,
    ts_recent_at: Instant,
    /// Last.ACK.sent: the ACK field of the last segment we sent (RFC 7323 §4.3).
    last_ack_sent: SeqNum,
    /// The latest time the connection was told of; stamps the segments it builds.
    clock: Instant,
    /// Sequence number of the first byte in `send_buf`.
    send_buf_seq: SeqNum,
    /// The user called close(): a FIN follows the buffered data.
    fin_queued: bool,
    /// End of the last data segment shorter than the MSS (Minshall's Nagle variant, as Linux).
    snd_small_end: SeqNum,

    // Receive sequence space.
    /// IRS, the peer's ISN: `None` until its SYN arrives.
    irs: Option<SeqNum>,
    rcv_nxt: SeqNum,
    /// Shift applied to our window field.
    rcv_shift: u8,
    /// Right edge of the window we advertised last (RCV.NXT + RCV.WND at that time).
    rcv_adv: SeqNum,
    recv_buf: RecvBuffer,
    /// Receive-buffer auto-tuning (Linux's dynamic right-sizing, tcp_rcv_space_adjust): the most
    /// the application read in one RTT so far, what it read in the current RTT, and since when.
    rcv_space: u32,
    rcv_space_copied: usize,
    rcv_space_since: Instant,
    /// The RTT as the receiver sees it (Linux's rcv_rtt_est): from the timestamps echoed on
    /// full-sized data segments, so a connection that only receives, and so takes no RTT samples
    /// of its own, still measures its rounds.
    rcv_rtt: Option<Duration>,
    /// A FIN that arrived ahead of missing data.
    pending_fin: Option<SeqNum>,
    /// The peer's FIN has been processed.
    peer_closed: bool,
    /// Chooses the SACK blocks of our ACKs and remembers the ones reported (RFC 2018 §4).
    sack_blocks: SackBlocksBuilder,
    /// The last data segment received, until an ACK reported it: its block goes first.
    sack_received: Option<SackBlock>,
    /// Data of that segment we already had, reported once as a D-SACK (RFC 2883 §4).
    sack_duplicate: Option<SackBlock>,

    // What to send next.
    syn_pending: bool,
    ack_pending: bool,
    /// Bytes received in order since we last sent an ACK (RFC 5681 §4.2 delayed ACK).
    unacked_bytes: u32,
    /// The peer's full-sized segment as seen so far (Linux's rcv_mss): the largest payload
    /// received, starting from the 536-byte default and capped by the MSS we announced.
    rcv_mss: u32,
    /// Segments left to acknowledge without delay (Linux's quick-ACK mode), so the peer's slow
    /// start is not held back by delayed ACKs.
    quick_acks: u32,
    /// When the last in-order data arrived: a gap longer than the RTO restarts quick-ACK mode.
    last_data_received: Option<Instant>,
    fast_retransmit_pending: bool,
    /// The persist timer fired with a non-zero window: send despite sender SWS avoidance.
    sws_override: bool,
    control: VecDeque<TcpHeader>,

    timers: Timers,
    rtt: RttEstimator,
    /// The segment being timed: its end sequence number and when it was sent (RFC 6298 §3).
    rtt_sample: Option<(SeqNum, Instant)>,
    /// Consecutive expirations of the retransmission timer.
    retries: u32,
    persist_backoff: u32,
    /// Since when the oldest outstanding data (or a zero window) has gone unacknowledged.
    stalled_since: Option<Instant>,
    last_received: Instant,
    /// When data was last sent, for the restart window after idle (RFC 5681 §4.1).
    last_data_sent: Option<Instant>,
    keepalive_probes: u32,
    last_keepalive_probe: Instant,

    cc: Box<dyn CongestionControl>,
    dup_acks: u32,
    in_recovery: bool,
    /// RFC 6582's `recover`, stored as the sequence number after the highest one sent. Also set
    /// by an RTO: until SND.UNA reaches it, go-back-N retransmission is under way.
    recover: SeqNum,
    partial_ack_seen: bool,
    /// What the peer SACKed, and RFC 6675's recovery state (HighRxt, RescueRxt, RecoveryPoint).
    scoreboard: SackScoreboard,
    /// The current recovery is driven by the scoreboard (RFC 6675), not by RFC 6582.
    sack_recovery: bool,
    /// RFC 6937 state during fast recovery.
    prr: Option<Prr>,
    /// PRR's sndcnt: bytes that may be sent now during recovery. A segment started within it is
    /// sent whole, as Linux counts sndcnt in segments.
    recovery_budget: u32,
    /// The last recovery's reduction may still be undone if D-SACKs prove it spurious.
    undo_armed: bool,
    /// Every data segment sent and not yet cumulatively acknowledged.
    sent: SentLog,
    rate: RateEstimator,
    rack: Rack,
    tlp: Tlp,
    /// The loss probe timer fired: the next transmission is the probe.
    probe_pending: bool,
    frto: Option<Frto>,

    time_wait: Option<TimeWait>,
    events: VecDeque<Event>,
    error: Option<ConnectionError>,
    stats: ConnectionStats,
}

impl Connection {
    fn new(config: Config, tuple: FourTuple, iss: SeqNum, now: Instant, state: State) -> Self {
        let rtt = RttEstimator::new(config.rto_initial, config.rto_min, config.rto_max);
        let send_mss = u32::from(DEFAULT_PEER_MSS.min(config.mss)).max(MIN_SEND_MSS);
        Connection {
            tuple,
            state,
            passive: false,
            iss,
            snd_una: iss,
            tx_next: iss,
            snd_nxt: iss,
            snd_wnd: 0,
            snd_wl1: SeqNum(0),
            snd_wl2: iss,
            max_snd_wnd: 0,
            snd_shift: 0,
            window_scaling: false,
            sack_permitted: false,
            timestamps: config.timestamps,
            // Replaced by the endpoint's per-address-pair clock; a connection on its own still
            // gets an offset nobody can guess, from its ISN.
            ts_clock: TimestampClock::new(now, iss.0.rotate_left(13) ^ 0x5bd1_e995),
            ts_recent: 0,
            ts_recent_at: now,
            last_ack_sent: SeqNum(0),
            clock: now,
            send_mss,
            segment_room: send_mss,
            send_buf: SendBuffer::new(config.send_buffer),
            send_buf_seq: iss + 1u32,
            fin_queued: false,
            snd_small_end: iss,
            irs: None,
            rcv_nxt: SeqNum(0),
            rcv_shift: 0,
            rcv_adv: SeqNum(0),
            recv_buf: RecvBuffer::growable(config.recv_buffer, config.recv_buffer_max),
            rcv_space: (10 * u32::from(config.mss)).min(config.recv_buffer as u32),
            rcv_space_copied: 0,
            rcv_space_since: now,
            rcv_rtt: None,
            pending_fin: None,
            peer_closed: false,
            sack_blocks: SackBlocksBuilder::new(),
            sack_received: None,
            sack_duplicate: None,
            syn_pending: true,
            ack_pending: false,
            unacked_bytes: 0,
            rcv_mss: u32::from(DEFAULT_PEER_MSS.min(config.mss)),
            quick_acks: QUICK_ACKS,
            last_data_received: None,
            fast_retransmit_pending: false,
            sws_override: false,
            // Empty until used: most connections never queue more than one or two.
            control: VecDeque::new(),
            timers: Timers::default(),
            rtt,
            rtt_sample: None,
            retries: 0,
            persist_backoff: 0,
            stalled_since: None,
            last_received: now,
            last_data_sent: None,
            keepalive_probes: 0,
            last_keepalive_probe: now,
            cc: config.congestion.build(send_mss),
            dup_acks: 0,
            in_recovery: false,
            recover: iss,
            partial_ack_seen: false,
            scoreboard: SackScoreboard::new(iss, send_mss),
            sack_recovery: false,
            prr: None,
            recovery_budget: 0,
            undo_armed: false,
            sent: SentLog::new(),
            rate: RateEstimator::new(now),
            rack: Rack::new(iss),
            tlp: Tlp::default(),
            probe_pending: false,
            frto: None,
            time_wait: None,
            events: VecDeque::with_capacity(8),
            error: None,
            stats: ConnectionStats::default(),
            config,
        }
    }

    /// Active open: enters SYN-SENT with a SYN ready to transmit.
    pub fn connect(config: Config, tuple: FourTuple, isn: SeqNum, now: Instant) -> Self {
        Self::new(config, tuple, isn, now, State::SynSent)
    }

    /// Passive open from a listener's SYN: enters SYN-RECEIVED with a SYN-ACK ready to transmit.
    /// Data on the SYN is not accepted (the peer retransmits it), as Linux without Fast Open.
    pub fn accept(
        config: Config,
        tuple: FourTuple,
        syn: &TcpHeader,
        isn: SeqNum,
        now: Instant,
    ) -> Self {
        let mut conn = Self::new(config, tuple, isn, now, State::SynReceived);
        conn.passive = true;
        conn.stats.segments_in = 1;
        conn.take_syn(syn);
        // The peer's SYN window is never scaled (RFC 7323 §2.2).
        conn.update_send_window(u32::from(syn.window), syn.seq, isn);
        conn
    }

    pub fn tuple(&self) -> FourTuple {
        self.tuple
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Why the connection failed, if it did.
    pub fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// The compact TIME-WAIT record, while in TIME-WAIT: the endpoint may keep it instead of the TCB.
    pub fn time_wait(&self) -> Option<TimeWait> {
        self.time_wait.filter(|_| self.state == State::TimeWait)
    }

    /// Bytes that `recv` would return now.
    pub fn recv_available(&self) -> usize {
        self.recv_buf.readable()
    }

    /// Room left in the send buffer.
    pub fn send_capacity(&self) -> usize {
        self.send_buf.free()
    }

    /// The peer's initial sequence number (IRS, RFC 9293 §3.3.1), once its SYN has arrived.
    pub fn peer_isn(&self) -> Option<SeqNum> {
        self.irs
    }

    /// Effective send MSS (RFC 9293 §3.7.1).
    pub fn mss(&self) -> u32 {
        self.send_mss
    }

    /// The window-scale shifts in use, ours then the peer's; `None` unless both SYNs carried the
    /// option (RFC 7323 §2.2).
    pub fn window_scale(&self) -> Option<(u8, u8)> {
        self.window_scaling
            .then_some((self.rcv_shift, self.snd_shift))
    }

    /// The clock our TSvals come from (RFC 7323 §5.4); the endpoint shares one per address pair.
    /// Set it before the first segment goes out.
    pub fn set_timestamp_clock(&mut self, clock: TimestampClock) {
        self.ts_clock = clock;
    }

    /// Bytes written by the user and not yet acknowledged (ss's Send-Q).
    pub fn send_queued(&self) -> usize {
        self.send_buf.len()
    }

    /// Disables (true) or enables (false) Nagle's algorithm (RFC 9293 §3.7.4).
    pub fn set_nodelay(&mut self, nodelay: bool) {
        self.config.nodelay = nodelay;
    }

    pub fn set_keepalive(&mut self, keepalive: Option<KeepaliveConfig>) {
        self.config.keepalive = keepalive;
        self.keepalive_probes = 0;
    }

    pub fn set_user_timeout(&mut self, timeout: Option<Duration>) {
        self.config.user_timeout = timeout;
    }

    /// Switches the congestion control algorithm (Linux's TCP_CONGESTION). Meant for before data
    /// flows: the new algorithm starts from its initial window, as a fresh connection would. A
    /// recovery under way ends with the old algorithm's reduction; holes it leaves are repaired
    /// by the next recovery or the RTO.
    pub fn set_congestion(&mut self, algorithm: CongestionAlgorithm) {
        self.config.congestion = algorithm;
        self.cc = algorithm.build(self.send_mss);
        self.undo_armed = false;
        self.in_recovery = false;
        self.sack_recovery = false;
        self.prr = None;
        self.recovery_budget = 0;
    }

    /// The congestion control algorithm in use (Linux's TCP_CONGESTION, read).
    pub fn congestion(&self) -> CongestionAlgorithm {
        self.config.congestion
    }

    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            rto: self.rtt.rto(),
            cwnd: self.cc.window(),
            ssthresh: self.cc.ssthresh(),
            congestion: self.config.congestion,
            sack: self.sack_permitted,
            timestamps: self.timestamps,
            ..self.stats
        }
    }

    // ----- user calls (RFC 9293 §3.10.1–§3.10.5) -----

    /// Copies as much of `data` into the send buffer as fits; returns how much (0 when full).
    /// Data written before the handshake completes is sent once it does.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, ConnectionError> {
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => {
                if self.fin_queued {
                    Err(ConnectionError::Closing)
                } else {
                    Ok(self.send_buf.push(data))
                }
            }
            State::Closed | State::Listen => {
                Err(self.error.unwrap_or(ConnectionError::NotConnected))
            }
            State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck
            | State::TimeWait => Err(ConnectionError::Closing),
        }
    }

    /// Reads in-order data. `Ok(0)` with a non-empty `buf` means the peer closed (EOF);
    /// [`ConnectionError::WouldBlock`] means nothing has arrived yet.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, ConnectionError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.recv_buf.read(buf);
        if n > 0 {
            self.rcv_space_copied += n;
            self.tune_receive_buffer();
            if self.window_update_due() {
                self.ack_pending = true;
            }
            return Ok(n);
        }
        if self.peer_closed {
            return Ok(0);
        }
        if let Some(error) = self.error {
            return Err(error);
        }
        match self.state {
            State::Closed | State::Listen => Err(ConnectionError::NotConnected),
            _ => Err(ConnectionError::WouldBlock),
        }
    }

    /// CLOSE (RFC 9293 §3.10.4): a FIN follows the buffered data. Half-close: the peer's data is
    /// still delivered afterwards.
    pub fn close(&mut self) {
        match self.state {
            State::Listen => self.enter_closed(),
            // RFC 9293 deletes a SYN-SENT TCB and fails the queued SENDs; as send() already
            // accepted them, data written before close() is still delivered, FIN after it.
            State::SynSent if !self.send_buf.is_empty() => self.fin_queued = true,
            State::SynSent => self.enter_closed(),
            // The FIN waits until the SYN is acknowledged and ESTABLISHED is reached.
            State::SynReceived => self.fin_queued = true,
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// ABORT (RFC 9293 §3.10.5): sends `<SEQ=SND.NXT><CTL=RST>` where the peer has a TCB, then
    /// discards everything and enters CLOSED.
    pub fn abort(&mut self) {
        match self.state {
            State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait => self.queue_final_reset(),
            _ => {}
        }
        self.recv_buf = RecvBuffer::new(1);
        self.peer_closed = false;
        if self.state != State::Closed {
            self.enter_closed();
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- segment arrival (RFC 9293 §3.10.7) -----

    /// Processes one arriving segment (RFC 9293 §3.10.7).
    pub fn handle_segment(&mut self, header: &TcpHeader, payload: &[u8], now: Instant) {
        self.clock = self.clock.max(now);
        self.stats.segments_in += 1;
        self.stats.bytes_in += payload.len() as u64;
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
    fn on_segment_syn_sent(&mut self, header: &TcpHeader, payload: &[u8], now: Instant) {
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

    fn on_segment_time_wait(&mut self, header: &TcpHeader, payload_len: usize, now: Instant) {
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
    fn on_segment_synchronized(&mut self, header: &TcpHeader, payload: &[u8], now: Instant) {
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
            State::FinWait1 if fin_acked => self.state = State::FinWait2,
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
        self.process_data_and_fin(header, payload_seq, payload, now);
    }

    /// Fifth step for synchronized states. Returns false when the segment is to be dropped.
    fn process_ack(&mut self, header: &TcpHeader, payload_len: usize, now: Instant) -> bool {
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
        let dsack_end = sack.dsack.map(|block| block.end);
        if self.tlp.on_ack(self.snd_una, dsack_end, plain_duplicate) == TlpVerdict::RepairedLoss
            && !self.in_recovery
        {
            // RFC 8985 §7.4.2: the probe repaired a loss; reduce the window once (Linux's CWR).
            self.cc.on_fast_retransmit(self.snd_nxt - self.snd_una, now);
            self.cc.on_recovery_exit();
        }
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
        }
        self.arm_loss_probe(now);
        true
    }

    /// RACK-TLP runs where Linux's tcp_recovery = 1 runs it: configured, and with SACK.
    fn rack_active(&self) -> bool {
        self.config.rack && self.sack_permitted
    }

    /// Updates the sent-segment log with what the ACK newly acknowledged or SACKed, feeding the
    /// delivery-rate estimator and RACK (RFC 8985 §6.1) with each segment. Returns whether data
    /// never retransmitted, sent before the last RTO, was among it (F-RTO, RFC 5682 §3.1).
    fn take_delivered(&mut self, header: &TcpHeader, sack: &SackUpdate, now: Instant) -> bool {
        let frto_high = self.frto.map(|frto| frto.high_seq);
        // SACK blocks cover data only: one that reaches the FIN we sent takes the FIN too,
        // which arrived in the same segment.
        let fin_seq = self.fin_seq();
        let fin_sent = self.fin_queued && self.snd_nxt == fin_seq + 1u32;
        let mut original = false;
        let (rate, rack) = (&mut self.rate, &mut self.rack);
        let mut on_delivered = |segment: &super::sent::SentSegment| {
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
            for &block in blocks {
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
    fn rack_detect_loss(&mut self, now: Instant) {
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

    /// RFC 5682 §3.1 steps 2 and 3, on each ACK after a timeout; Linux's tcp_process_loss.
    fn frto_on_ack(&mut self, una_advanced: bool, original_delivered: bool, duplicate: bool) {
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
                self.tx_next = self.snd_nxt;
                self.frto = Some(frto);
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
    fn arm_loss_probe(&mut self, now: Instant) {
        let eligible = self.rack_active()
            && matches!(
                self.state,
                State::Established
                    | State::CloseWait
                    | State::FinWait1
                    | State::Closing
                    | State::LastAck
            )
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

    /// Feeds the ACK and its SACK blocks to the scoreboard (RFC 6675 Update(), RFC 2883 D-SACK).
    fn take_sack_blocks(&mut self, header: &TcpHeader) -> SackUpdate {
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

    /// Fast retransmit and fast recovery start (RFC 5681 §3.2, RFC 6582 §3.2, RFC 6675 §5),
    /// with PRR deciding how much is sent until it ends (RFC 6937 §3.1).
    fn enter_recovery(&mut self, flight: u32, now: Instant) {
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

    fn exit_recovery(&mut self) {
        self.cc.on_recovery_exit();
        self.rack.on_recovery_exit();
        self.in_recovery = false;
        self.sack_recovery = false;
        self.prr = None;
        self.recovery_budget = 0;
    }

    /// RFC 6937 §3.1, on every ACK during recovery: sndcnt from DeliveredData and pipe.
    fn prr_on_ack(&mut self, delivered: u32) {
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
        if let Some(prr) = &mut self.prr {
            self.recovery_budget = prr.on_ack(delivered, pipe, self.send_mss);
        }
    }

    /// RFC 3708 §3 with RFC 9438 §4.9: every retransmission of the last recovery was D-SACKed,
    /// so no segment was lost and the reduction is undone, once, after the recovery ended.
    fn undo_if_spurious(&mut self) {
        if self.undo_armed && !self.in_recovery && self.scoreboard.recovery_was_spurious() {
            self.undo_armed = false;
            self.cc.on_spurious_congestion();
            self.stats.cwnd_undos += 1;
        }
    }

    /// Seventh and eighth steps: deliver data (reassembling) and process the FIN.
    fn process_data_and_fin(
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
            let data = &data[..data.len().min(in_window.saturating_sub(offset))];
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
                    // Out of order: duplicate ACK at once (RFC 5681 §4.2).
                    self.ack_pending = true;
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

    /// The peer's FIN is next in sequence (eighth step).
    fn receive_fin(&mut self, now: Instant) {
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

    // ----- timers -----

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
            self.keepalive_deadline(),
            self.user_timeout_deadline(),
            self.time_wait().map(|tw| tw.deadline),
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
            // RFC 8985 §6.3: RACK_detect_loss() again once the reordering window has passed.
            self.timers.reorder = None;
            if self.rack_active() {
                self.rack_detect_loss(now);
                if self.in_recovery && self.sent.lost_bytes() > 0 {
                    self.fast_retransmit_pending = true;
                }
            }
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
    fn on_retransmit_timeout(&mut self, now: Instant) {
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
            // RFC 8985 §6.3: everything not SACKed is lost; no probe is outstanding any more.
            let lost = self.sent.mark_all_lost();
            self.rate.on_lost(lost);
            self.tlp.clear();
            self.probe_pending = false;
            self.timers.loss_probe = None;
            self.timers.reorder = None;
            // RFC 5682 §3.1 step 1: watch the next ACKs for proof the timeout was spurious.
            self.frto = (self.sack_permitted && flight > 0).then_some(Frto {
                high_seq: self.snd_nxt,
                new_data: false,
            });
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

    fn on_persist_timeout(&mut self, now: Instant) {
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

    fn on_keepalive_timeout(&mut self, now: Instant) {
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

    fn keepalive_deadline(&self) -> Option<Instant> {
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

    fn user_timeout_deadline(&self) -> Option<Instant> {
        let timeout = self.config.user_timeout?;
        let since = self.stalled_since?;
        Some(since + timeout)
    }

    fn persist_interval(&self) -> Duration {
        let factor = 1u32 << self.persist_backoff.min(16);
        (self.rtt.rto().saturating_mul(factor)).min(self.config.rto_max)
    }

    // ----- transmission -----

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

    /// draft-cheng-iccrg-delivery-rate-estimation §3.4: nothing left to send, the window not
    /// full, nothing lost waiting: the application, not the network, limits the rate.
    fn note_app_limited(&mut self) {
        let data_end = self.send_buf_seq + self.send_buf.len();
        let in_flight = self.sent.in_flight();
        if self.tx_next >= data_end && in_flight < self.cc.window() && self.sent.lost_bytes() == 0 {
            self.rate.on_app_limited(in_flight);
        }
    }

    fn next_segment(&mut self, now: Instant) -> Option<Segment> {
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
            if let Some((start, _)) = self
                .sent
                .first_lost()
                .filter(|(start, _)| *start < self.tx_next)
            {
                let in_flight = self.sent.in_flight();
                if in_flight == 0 || in_flight + self.send_mss <= self.cc.window() {
                    return Some(self.retransmit_one(start, now));
                }
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

    /// One segment from `start`: at most an MSS, and not into data the peer SACKed.
    fn retransmit_one(&mut self, start: SeqNum, now: Instant) -> Segment {
        let end = self
            .snd_nxt
            .min(start + self.send_mss)
            .min(self.next_sacked_start(start));
        self.retransmit(start, end, false, now)
    }

    /// RFC 8985 §7.3: the tail loss probe, a new segment if the peer's window admits one
    /// (whatever cwnd says), else the last segment sent again; then the RTO is re-armed.
    fn send_loss_probe(&mut self, now: Instant) -> Option<Segment> {
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

    /// Where the next data (or FIN) segment starting at `tx_next` should end, if one may be sent
    /// now: the usable window (RFC 9293 §3.8.6), sender SWS avoidance (§3.8.6.2.1) and Nagle
    /// (§3.7.4). Retransmissions after an RTO skip the last two.
    fn next_data_end(&self) -> Option<SeqNum> {
        let window_end = (self.snd_una + self.snd_wnd).min(self.congestion_window_end());
        self.next_data_end_within(window_end, self.sws_override)
    }

    /// [`Self::next_data_end`] for a window ending at `window_end`; `override_sws` sends a short
    /// segment regardless of SWS avoidance and Nagle.
    fn next_data_end_within(&self, window_end: SeqNum, override_sws: bool) -> Option<SeqNum> {
        if !matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        ) {
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
    fn refresh_persist(&mut self, now: Instant) {
        let data_end = self.send_buf_seq + self.send_buf.len();
        let blocked = matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        ) && self.snd_nxt == self.snd_una
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

    fn send_syn(&mut self, now: Instant) -> Segment {
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
    fn send_range(&mut self, start: SeqNum, end: SeqNum, now: Instant) -> Segment {
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
    fn retransmit(&mut self, start: SeqNum, end: SeqNum, rescue: bool, now: Instant) -> Segment {
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
    fn congestion_window_end(&self) -> SeqNum {
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
    fn sacked_below(&self, seq: SeqNum) -> u32 {
        self.scoreboard
            .sacked()
            .iter()
            .take_while(|r| r.start < seq)
            .map(|r| r.end.min(seq) - r.start)
            .sum()
    }

    /// The start of the first SACKed range above `seq` (a retransmission stops there), or
    /// SND.NXT.
    fn next_sacked_start(&self, seq: SeqNum) -> SeqNum {
        self.scoreboard
            .sacked()
            .iter()
            .find(|r| r.start > seq)
            .map_or(self.snd_nxt, |r| r.start)
    }

    fn send_ack(&mut self) -> Segment {
        let header = self.header(self.snd_nxt, TcpFlags::ACK);
        Segment {
            header,
            payload: Bytes::new(),
        }
    }

    /// Every outgoing segment's header is made here: ports, seq, ack, window. Sending an ACK
    /// clears the pending and delayed ACK.
    fn header(&mut self, seq: SeqNum, flags: TcpFlags) -> TcpHeader {
        self.header_for_payload(seq, flags, 0)
    }

    /// As [`Self::header`], for a segment carrying `payload_len` bytes of data.
    fn header_for_payload(
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
            self.timers.delayed_ack = None;
        }
        header.options = self.options_for(flags, payload_len);
        header
    }

    /// The single place where options of an outgoing segment are chosen.
    fn options_for(&mut self, flags: TcpFlags, payload_len: usize) -> TcpOptions {
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

    /// The SACK blocks of the next ACK (RFC 2018 §4, RFC 2883 §4): a D-SACK for the duplicate
    /// just received, then the out-of-order range holding the newest segment, then the ranges
    /// reported most recently. Each received segment and duplicate is reported first once.
    fn sack_blocks_for_ack(&mut self, max_blocks: usize) -> sack::SackBlocks {
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
    fn note_received_for_sack(&mut self, start: SeqNum, end: SeqNum) {
        if !self.sack_permitted || start >= end {
            return;
        }
        let segment = SackBlock { start, end };
        let (out_of_order, count) = self.out_of_order_blocks();
        self.sack_duplicate = sack::duplicate_of(segment, self.rcv_nxt, &out_of_order[..count]);
        self.sack_received = Some(segment);
    }

    /// The reassembly queue's ranges in sequence numbers, and how many there are.
    fn out_of_order_blocks(&self) -> ([SackBlock; recv_buffer::MAX_RANGES], usize) {
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
    fn advertise_window(&mut self) -> u16 {
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
    fn receive_window(&self) -> u32 {
        if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv - self.rcv_nxt
        } else {
            0
        }
    }

    /// After the application read: announce a window that doubled and moved by at least
    /// min(buffer/2, MSS), as Linux's tcp_cleanup_rbuf.
    fn window_update_due(&self) -> bool {
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

    // ----- helpers -----

    /// Takes the peer's SYN: IRS, RCV.NXT and the options (RFC 9293 §3.7.1, RFC 7323 §2).
    fn take_syn(&mut self, syn: &TcpHeader) {
        self.irs = Some(syn.seq);
        self.rcv_nxt = syn.seq + 1u32;
        let peer_mss = syn.options.mss.unwrap_or(DEFAULT_PEER_MSS);
        let uses_timestamps = self.config.timestamps && syn.options.timestamps.is_some();
        self.segment_room = u32::from(peer_mss.min(self.config.mss));
        // The MSS counts data without options (RFC 6691 §2, RFC 9293 §3.7.1): the timestamps
        // in every segment come out of it, as Linux's mss_cache (1448 on Ethernet).
        let options = if uses_timestamps {
            TIMESTAMPS_OPTION_LEN
        } else {
            0
        };
        self.send_mss = self.segment_room.saturating_sub(options).max(MIN_SEND_MSS);
        self.cc.set_mss(self.send_mss);
        self.scoreboard.set_mss(self.send_mss);
        match syn.options.window_scale {
            Some(shift) if self.config.window_scaling => {
                self.window_scaling = true;
                self.snd_shift = shift.min(MAX_WINDOW_SHIFT);
                self.rcv_shift = self.rcv_shift_for_buffer();
            }
            _ => {
                self.window_scaling = false;
                self.snd_shift = 0;
                self.rcv_shift = 0;
            }
        }
        self.sack_permitted = self.config.sack && syn.options.sack_permitted;
        match syn.options.timestamps {
            Some(ts) if self.config.timestamps => {
                self.timestamps = true;
                self.ts_recent = ts.tsval;
                self.ts_recent_at = self.clock;
            }
            _ => self.timestamps = false,
        }
        self.last_ack_sent = self.rcv_nxt;
        self.rcv_adv = self.rcv_nxt + self.recv_buf.window().min(usize::from(u16::MAX));
    }

    /// The smallest shift that lets the 16-bit field cover the receive buffer as large as
    /// auto-tuning may make it (the shift is fixed on the SYN, RFC 7323 §2.2).
    fn rcv_shift_for_buffer(&self) -> u8 {
        recv_buffer::window_shift_for(self.config.recv_buffer.max(self.config.recv_buffer_max))
    }

    /// Linux's tcp_rcv_rtt_measure_ts: a full-sized data segment echoing our timestamp took
    /// about one RTT since we sent what it echoes; smoothed by 1/8 as RFC 6298's SRTT.
    fn measure_receiver_rtt(&mut self, header: &TcpHeader, now: Instant) {
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
    fn tune_receive_buffer(&mut self) {
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

    fn update_send_window(&mut self, window: u32, seq: SeqNum, ack: SeqNum) {
        self.snd_wnd = window;
        self.snd_wl1 = seq;
        self.snd_wl2 = ack;
        self.max_snd_wnd = self.max_snd_wnd.max(window);
    }

    /// One RTT sample per ACK of new data: from the timed segment when the ACK covers it, else
    /// from the echoed timestamp (RFC 7323 §4.1), which Karn's rule does not restrict because
    /// it names the transmission it answers, so the RTO follows the path even during
    /// retransmission. Linux's tcp_ack_update_rtt chooses the same way.
    fn take_rtt_sample(&mut self, ack: SeqNum, header: &TcpHeader, now: Instant) {
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

    /// PAWS (RFC 7323 §5.3 R1): a timestamped segment older than TS.Recent is an old duplicate,
    /// unless TS.Recent has gone 24 days without an update (§5.5). RSTs are exempt (§5.2 asks
    /// them to carry no timestamps, and Linux accepts them regardless).
    fn paws_rejects(&self, header: &TcpHeader, now: Instant) -> bool {
        let Some(ts) = header.options.timestamps.filter(|_| self.timestamps) else {
            return false;
        };
        !header.flags.rst()
            && timestamps::is_older(ts.tsval, self.ts_recent)
            && now.saturating_duration_since(self.ts_recent_at) <= timestamps::PAWS_IDLE_LIMIT
    }

    /// RFC 7323 §4.3 (2) / §5.3 R3: TS.Recent takes the TSval of an acceptable segment that
    /// starts at or before Last.ACK.sent, so the echo belongs to the earliest segment an ACK
    /// covers, and a delayed ACK echoes the first of the segments it acknowledges.
    fn update_ts_recent(&mut self, header: &TcpHeader, now: Instant) {
        let Some(ts) = header.options.timestamps.filter(|_| self.timestamps) else {
            return;
        };
        let fresh = !timestamps::is_older(ts.tsval, self.ts_recent)
            || now.saturating_duration_since(self.ts_recent_at) > timestamps::PAWS_IDLE_LIMIT;
        if fresh && header.seq <= self.last_ack_sent {
            self.ts_recent = ts.tsval;
            self.ts_recent_at = now;
        }
    }

    fn establish(&mut self) {
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

    fn challenge_ack(&mut self) {
        if self.control.len() < MAX_CHALLENGE_ACKS {
            let ack = self.header(self.snd_nxt, TcpFlags::ACK);
            self.queue_control(ack);
        }
    }

    fn fin_seq(&self) -> SeqNum {
        self.send_buf_seq + self.send_buf.len()
    }

    fn enter_time_wait(&mut self, now: Instant) {
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
    fn fail(&mut self, error: ConnectionError) {
        self.error = Some(error);
        self.push_event(match error {
            ConnectionError::TimedOut => Event::TimedOut,
            _ => Event::Reset,
        });
        self.recv_buf = RecvBuffer::new(1);
        self.enter_closed();
    }

    fn enter_closed(&mut self) {
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

    /// The SACKed ranges on the scoreboard.
    #[cfg(test)]
    pub(crate) fn sacked(&self) -> &[crate::wire::SackBlock] {
        self.scoreboard.sacked()
    }

    /// SND.UNA and RCV.NXT.
    #[cfg(test)]
    pub(crate) fn snd_una_and_rcv_nxt(&self) -> (SeqNum, SeqNum) {
        (self.snd_una, self.rcv_nxt)
    }

    /// The receive buffer's current size (auto-tuning grows it).
    #[cfg(test)]
    pub(crate) fn recv_capacity(&self) -> usize {
        self.recv_buf.capacity()
    }

    /// Internal invariants, checked by the property tests after every step.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self, now: Instant) {
        assert!(self.snd_una <= self.tx_next, "SND.UNA <= tx_next");
        assert!(self.tx_next <= self.snd_nxt, "tx_next <= SND.NXT");
        assert!(self.send_buf.len() <= self.config.send_buffer);
        let slack = (1usize << self.rcv_shift) - 1;
        assert!(self.recv_buf.readable() <= self.recv_buf.capacity() + slack);
        assert!(
            self.recv_buf.capacity()
                <= self
                    .config
                    .recv_buffer
                    .max(self.config.recv_buffer_max)
                    .max(1)
        );
        assert!(self.control.len() <= MAX_CONTROL_QUEUE);
        assert_eq!(
            self.in_recovery,
            self.prr.is_some(),
            "PRR runs exactly in recovery"
        );
        assert!(!self.sack_recovery || self.in_recovery);
        assert!(self.sack_permitted || self.scoreboard.sacked().is_empty());
        self.sent.check_invariants();
        if let (Some(first), Some(last)) = (self.sent.iter().next(), self.sent.last()) {
            assert!(
                first.start >= self.snd_una,
                "the sent log reaches below SND.UNA"
            );
            assert!(
                last.end <= self.snd_nxt,
                "the sent log reaches beyond SND.NXT"
            );
        }
        self.scoreboard.check_invariants(self.snd_nxt);
        assert!(
            self.scoreboard
                .sacked()
                .iter()
                .all(|r| r.start >= self.snd_una),
            "SACKed ranges below SND.UNA"
        );
        assert!(self.events.len() <= 7, "events are deduplicated");
        if self.state != State::Closed && self.state != State::TimeWait {
            assert!(self.send_buf_seq + self.send_buf.len() + 1u32 >= self.snd_nxt);
        }
        if self.state == State::Closed {
            assert_eq!(self.poll_timeout(), None, "nothing armed once CLOSED");
        }
        if let Some(at) = self.poll_timeout() {
            assert!(
                at > now,
                "a timer due at or before now survived handle_timeout"
            );
        }
    }

    /// Queues a control segment. A full queue drops ACKs and probes, which later segments
    /// repeat; a RST instead displaces the oldest of them, and is dropped only when the queue
    /// holds nothing but RSTs, each answering a segment whose retransmission gets another.
    fn queue_control(&mut self, header: TcpHeader) {
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
    fn queue_final_reset(&mut self) {
        let rst = self.header(self.snd_nxt, TcpFlags::RST);
        self.control.clear();
        self.control.push_back(rst);
    }

    fn push_event(&mut self, event: Event) {
        if !self.events.contains(&event) {
            self.events.push_back(event);
        }
    }
}
