//! The TCB: RFC 9293's state machine for one connection, sans-IO: its fields, construction
//! (active and passive OPEN) and the user calls (§3.10.1–§3.10.5). One file per concern beside it:
//! input.rs (segment arrival), ack.rs, recovery.rs, receive.rs, send.rs, timers.rs, options.rs
//! and lifecycle.rs.

mod ack;
mod icmp;
mod input;
mod lifecycle;
mod options;
mod rack;
mod receive;
mod recovery;
mod send;
mod timers;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::congestion::{CongestionControl, PathModel};
use super::pacing::Pacer;
use super::prr::Prr;
use super::rack::{Rack, Tlp};
use super::rate::RateEstimator;
use super::recv_buffer::RecvBuffer;
use super::rtt::RttEstimator;
use super::sack::{SackBlocksBuilder, SackScoreboard};
use super::send_buffer::SendBuffer;
use super::sent::SentLog;
use super::time_wait::TimeWait;
use super::timestamps::TimestampClock;
use super::{
    Config, CongestionAlgorithm, ConnectionError, Event, FourTuple, KeepaliveConfig, State,
};
use crate::wire::{SackBlock, SeqNum, TcpHeader};
pub use icmp::{IcmpVerdict, MIN_PATH_MTU};

/// MSS assumed when the peer's SYN has no MSS option (RFC 9293 §3.7.1).
const DEFAULT_PEER_MSS: u16 = 536;
/// Smallest send MSS we accept from a peer (Linux's tcp_min_snd_mss).
const MIN_SEND_MSS: u32 = 48;
/// Bytes the timestamps option takes in every segment, padding included (RFC 7323 §3.2).
const TIMESTAMPS_OPTION_LEN: u32 = 12;
/// In-order segments acknowledged at once in quick-ACK mode, at the start and after the peer
/// fell silent (Linux's TCP_MAX_QUICKACKS).
const QUICK_ACKS: u32 = 16;
/// Duplicate ACKs that trigger fast retransmit (RFC 5681 §3.2).
const DUP_ACK_THRESHOLD: u32 = 3;
/// With SACK, duplicate ACKs beyond the first [`DUP_ACK_THRESHOLD`] for one RCV.NXT wait at most
/// this many segments (Linux's tcp_comp_sack_nr) ...
const MAX_COMPRESSED_ACKS: u32 = 44;
/// ... or this long, or a twentieth of the RTT when shorter (tcp_comp_sack_delay_ns).
const COMPRESSED_ACK_MAX_DELAY: Duration = Duration::from_millis(1);
/// One-off control segments (duplicate ACKs, challenge ACKs, probes, RSTs) queued at most, so
/// that every out-of-order segment of a receive batch (the backends hand over up to 64 frames at
/// a time) gets its own duplicate ACK (RFC 5681 §4.2); beyond that ACKs and probes are dropped.
const MAX_CONTROL_QUEUE: usize = 64;

/// Per-connection counters and the current estimator and congestion state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub segments_in: u64,
    pub segments_out: u64,
    /// Payload bytes received in order, each counted once (Linux's tcpi_bytes_received), and
    /// sent, retransmissions included (tcpi_bytes_sent).
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
    /// Times an ICMP "fragmentation needed" lowered the path MTU (RFC 1191).
    pub path_mtu_reductions: u64,
    /// The congestion control algorithm the connection runs.
    pub congestion: CongestionAlgorithm,
    /// What a model-based algorithm (BBR) believes about the path.
    pub path: Option<PathModel>,
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
    pub receive_drops: ReceiveDrops,
}

/// Received data a connection threw away because it did not fit the receive window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReceiveDrops {
    /// Segments with text that lay wholly beyond the window, dropped and acknowledged
    /// (RFC 9293 §3.10.7.4).
    pub beyond_window: u64,
    /// Bytes cut off the end of accepted segments that ran past the window (the receive
    /// buffer was full).
    pub trimmed_bytes: u64,
}

impl ReceiveDrops {
    pub fn add(&mut self, other: ReceiveDrops) {
        self.beyond_window += other.beyond_window;
        self.trimmed_bytes += other.trimmed_bytes;
    }
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
    /// A released connection gives up waiting for the peer's FIN (Linux's tcp_fin_timeout).
    fin_wait2: Option<Instant>,
}

/// F-RTO (RFC 5682 §3.1, the SACK-enhanced variant) after a retransmission timeout.
#[derive(Clone, Copy, Debug)]
struct Frto {
    /// "recover": SND.NXT when the timeout fired, then when new data went out in step 2b.
    high_seq: SeqNum,
    /// Step 2b sent (or may send) new data instead of retransmitting.
    new_data: bool,
    /// New segments step 2b may still send, whatever the congestion window says.
    new_segments_left: u8,
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
    /// The path MTU an ICMP "fragmentation needed" reported (RFC 1191); `None` until one does.
    path_mtu: Option<u32>,
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
    /// The user released the connection ([`Connection::release`]): nothing more is read.
    released: bool,
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
    /// The RCV.NXT that out-of-order segments were last acknowledged at, the duplicate ACKs
    /// sent at once for it, and those held back since the last ACK (SACK compression).
    dup_acks_for: SeqNum,
    dup_acks_sent: u32,
    compressed_acks: u32,
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
    /// Release times of data segments when the congestion controller paces (BBR).
    pacer: Pacer,
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
            path_mtu: None,
            segment_room: send_mss,
            send_buf: SendBuffer::new(config.send_buffer),
            send_buf_seq: iss + 1u32,
            fin_queued: false,
            released: false,
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
            dup_acks_for: SeqNum(0),
            dup_acks_sent: 0,
            compressed_acks: 0,
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
            pacer: Pacer::default(),
            recovery_budget: 0,
            undo_armed: false,
            sent: SentLog::new(),
            rate: RateEstimator::new(now),
            rack: Rack::new(iss),
            tlp: Tlp::default(),
            probe_pending: false,
            frto: None,
            time_wait: None,
            events: VecDeque::new(),
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
        self.pacer.reset();
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
            path: self.cc.path_model(),
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

    /// The user is gone and reads nothing more: CLOSE, or ABORT when unread data would be lost
    /// (RFC 1122 §4.2.2.13, RFC 2525 §2.17, as Linux's tcp_close). Data that still arrives
    /// afterwards resets the connection, and FIN-WAIT-2 waits for the peer's FIN only for
    /// `fin_wait2_timeout`.
    pub fn release(&mut self) {
        self.released = true;
        if self.recv_available() > 0 {
            self.abort();
            return;
        }
        self.close();
        if self.state == State::FinWait2 {
            self.timers.fin_wait2 = Some(self.clock + self.config.fin_wait2_timeout);
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
}
