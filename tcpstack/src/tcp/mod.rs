//! One TCP connection (a TCB) as a sans-IO state machine, RFC 9293.
//!
//! Input: parsed segments and the current time. Output: segments to transmit, events for the
//! user, and the next deadline. No sockets, no tokio, no clocks of its own.
//!
//! Layout: [`Connection`] (connection/) drives the RFC 9293 state machine, its TCB in
//! connection/mod.rs and one file per concern beside it (input.rs for segment arrival, ack.rs,
//! recovery.rs, receive.rs, send.rs, timers.rs, options.rs, lifecycle.rs); the send ring and the
//! receive ring with its reassembler live in send_buffer.rs / recv_buffer.rs; RTO estimation in
//! rtt.rs; congestion control behind [`CongestionControl`]; the compact TIME-WAIT record and its
//! rules in time_wait.rs; RFC 6528 ISNs and the timestamp clocks in isn.rs. `reset_for` and
//! `listen_action` are the rules for segments that reach no synchronized connection, shared with
//! the endpoint.
//!
//! LISTEN lives in the endpoint (a listener is no TCB): it applies [`listen_action`] and opens a
//! connection in SYN-RECEIVED with [`Connection::accept`].
//!
//! Where this follows Linux rather than the letter of RFC 9293, and why:
//! - a retransmitted SYN in SYN-RECEIVED is answered with the SYN-ACK again (the RFC's
//!   acceptability test would send a bare ACK the peer in SYN-SENT must ignore);
//! - in a simultaneous open, the peer's SYN-ACK in SYN-RECEIVED establishes the connection, as
//!   figure 7 of §3.5 shows and Linux does, although §3.10.7.4's acceptability test would only
//!   ACK it (its SYN lies below RCV.NXT);
//! - Nagle holds a small segment only while another *small* one is unacknowledged (Minshall's
//!   variant), so a write of MSS + n bytes leaves at once;
//! - zero-window probes are `<SEQ=SND.UNA-1>` without data; a FIN needs no send window;
//! - after an RTO, transmission goes back to SND.UNA (go-back-N with cwnd = 1 SMSS), skipping
//!   what the peer SACKed (RFC 6675 §5.1 allows it; RFC 2018 §8 would forget the SACKs);
//! - during SACK recovery a retransmission is known lost once more than 2·SMSS of data first
//!   sent after it is SACKed (Linux's lost-retransmission rule; RFC 6675 waits for the RTO), and
//!   the rescue retransmission (RFC 6675 rule 4) goes out only when nothing unsent is waiting;
//! - close() in SYN-SENT with data already accepted by send() keeps it and sends the FIN after
//!   it, as in SYN-RECEIVED, instead of deleting the TCB;
//! - keepalive giving up sends a RST; retransmission giving up does not;
//! - once timestamps are in use, a segment without them is still accepted (RFC 7323 §3.2 says
//!   SHOULD drop); RSTs carry none and pass PAWS regardless;
//! - TIME-WAIT ignores every RST (RFC 1337), as Linux only with tcp_rfc1337 = 1.
//!
//! Loss recovery (connection/ack.rs and recovery.rs on top of sack.rs and prr.rs): three duplicate ACKs or
//! IsLost(SND.UNA) start fast recovery (RFC 5681 §3.2, RFC 6675 §5); PRR (RFC 6937) decides how
//! much goes out on each ACK, NextSeg (RFC 6675) what: holes, then new data, then the rescue
//! retransmission. Without SACK blocks from the peer the holes come from partial ACKs (RFC
//! 6582). Limited transmit (RFC 3042) sends new data on the first two duplicate ACKs. A recovery
//! whose every retransmission was D-SACKed (RFC 2883, RFC 3708) is undone once. The algorithm
//! (CUBIC by default, NewReno, or BBR) is chosen per stack (`Config::congestion`) or per connection
//! ([`Connection::set_congestion`]).
//!
//! The receiver side: ACKs carry SACK blocks while data waits out of order, newest range first,
//! a D-SACK first for a duplicate (RFC 2018 §4, RFC 2883; `SackBlocksBuilder` in sack.rs), as
//! many as the 40 bytes of options and, on data segments, the peer's MSS leave room for. They are
//! immediate for out-of-order data and a filled hole, for every second full-sized segment, and,
//! as Linux's quick-ACK mode, for the first 16 segments and after the peer fell silent for an
//! RTO; delayed up to `Config::delayed_ack` otherwise (RFC 5681 §4.2). Timestamps (RFC 7323,
//! timestamps.rs) run on a 1 ms clock per address pair: TS.Recent by the Last.ACK.sent rule,
//! PAWS, an RTT sample from every ACK of new data, and the receiver's own RTT that paces
//! receive-buffer auto-tuning (Linux's dynamic right-sizing, up to `Config::recv_buffer_max`).

pub mod congestion;
mod connection;
mod isn;
pub mod pacing;
pub mod prr;
mod rack;
pub mod rate;
mod recv_buffer;
mod rtt;
pub mod sack;
mod send_buffer;
mod sent;
mod time_wait;
pub mod timestamps;

#[cfg(test)]
mod tests;

use std::net::SocketAddrV4;
use std::time::Duration;

use bytes::Bytes;

use crate::wire::{SeqNum, TcpFlags, TcpHeader};

pub use congestion::{CongestionControl, NewReno};
pub use connection::{Connection, ConnectionStats, IcmpVerdict, ReceiveDrops, MIN_PATH_MTU};
pub(crate) use isn::tuple_hasher;
pub use isn::IsnGenerator;
pub use time_wait::{TimeWait, TimeWaitOutcome, TimeWaitTimestamps};
pub use timestamps::TimestampClock;

/// The eleven states of RFC 9293 §3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    /// Past the handshake with our FIN not yet acknowledged: data (or the FIN) may still go
    /// out, be retransmitted and probed.
    pub fn sends_data(self) -> bool {
        matches!(
            self,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        )
    }
}

/// What the user of a connection is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed (ESTABLISHED).
    Connected,
    /// New in-order data (or the peer's FIN) can be read.
    Readable,
    /// Send-buffer space became free.
    Writable,
    /// The peer sent FIN: no more data will arrive after what is buffered.
    PeerClosed,
    /// The peer reset the connection (or refused it, in SYN-SENT).
    Reset,
    /// Retransmissions, the user timeout or keepalive gave up.
    TimedOut,
    /// The connection reached CLOSED; the TCB can be freed.
    Closed,
}

/// The addresses of a connection, as seen from this side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
}

/// A segment to transmit: header (ports included) and payload. The endpoint adds the IP header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub header: TcpHeader,
    pub payload: Bytes,
}

/// Keepalive settings (RFC 9293 §3.8.4; defaults as Linux's tcp_keepalive_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            probes: 9,
        }
    }
}

/// Per-connection settings, with Linux-like defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// MSS we announce (1460 on Ethernet).
    pub mss: u16,
    pub send_buffer: usize,
    /// The receive buffer a connection starts with (what its window offers at first).
    pub recv_buffer: usize,
    /// Receive-buffer auto-tuning grows the buffer up to this (the maximum of Linux's
    /// `tcp_rmem`); at or below `recv_buffer`, the buffer keeps its size. The window scale is
    /// chosen to cover it.
    pub recv_buffer_max: usize,
    pub rto_initial: Duration,
    pub rto_min: Duration,
    pub rto_max: Duration,
    /// Linux's tcp_syn_retries.
    pub syn_retries: u32,
    /// Linux's tcp_synack_retries.
    pub synack_retries: u32,
    /// Data retransmissions before giving up (Linux's tcp_retries2).
    pub data_retries: u32,
    /// Maximum segment lifetime; TIME-WAIT lasts 2·MSL.
    pub msl: Duration,
    /// How long a connection the user released waits in FIN-WAIT-2 for the peer's FIN
    /// (Linux's tcp_fin_timeout).
    pub fin_wait2_timeout: Duration,
    pub delayed_ack: Duration,
    pub nodelay: bool,
    pub keepalive: Option<KeepaliveConfig>,
    pub user_timeout: Option<Duration>,
    pub window_scaling: bool,
    /// Offer and use selective acknowledgements (RFC 2018), like Linux's tcp_sack.
    pub sack: bool,
    /// Offer and use timestamps (RFC 7323), like Linux's tcp_timestamps.
    pub timestamps: bool,
    /// The congestion control algorithm of new connections (Linux's tcp_congestion_control).
    pub congestion: CongestionAlgorithm,
    /// With SACK, detect losses by time (RACK, RFC 8985 §6) and send tail loss probes (§7)
    /// instead of counting duplicate ACKs (RFC 6675), as Linux's tcp_recovery = 1.
    pub rack: bool,
}

/// The congestion control algorithms a connection can run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CongestionAlgorithm {
    /// RFC 5681 with RFC 6582's fast recovery.
    NewReno,
    /// RFC 9438 with HyStart++ (RFC 9406), Linux's default.
    #[default]
    Cubic,
    /// BBR (draft-ietf-ccwg-bbr; BBRv1's loss-agnostic model, see `congestion::Bbr`), paced.
    Bbr,
}

impl CongestionAlgorithm {
    /// The name Linux gives the algorithm (TCP_CONGESTION, `ss -i`): `reno` for NewReno, whose
    /// fast recovery Linux's reno module implements.
    pub fn name(self) -> &'static str {
        match self {
            CongestionAlgorithm::NewReno => "reno",
            CongestionAlgorithm::Cubic => "cubic",
            CongestionAlgorithm::Bbr => "bbr",
        }
    }

    pub(crate) fn build(self, mss: u32) -> Box<dyn congestion::CongestionControl> {
        match self {
            CongestionAlgorithm::NewReno => Box::new(congestion::NewReno::new(mss)),
            CongestionAlgorithm::Cubic => Box::new(congestion::Cubic::new(mss)),
            CongestionAlgorithm::Bbr => Box::new(congestion::Bbr::new(mss)),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: 1460,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            recv_buffer_max: 6 * 1024 * 1024,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(120),
            syn_retries: 6,
            synack_retries: 5,
            data_retries: 15,
            msl: Duration::from_secs(30),
            fin_wait2_timeout: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            nodelay: false,
            keepalive: None,
            user_timeout: None,
            window_scaling: true,
            sack: true,
            timestamps: true,
            congestion: CongestionAlgorithm::default(),
            rack: true,
        }
    }
}

/// Why a user call on a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection reset by peer")]
    Reset,
    #[error("connection refused")]
    Refused,
    #[error("connection timed out")]
    TimedOut,
    /// An ICMP destination unreachable (host, network, prohibited) ended the handshake.
    #[error("no route to host")]
    Unreachable,
    #[error("connection is closing for writes")]
    Closing,
    #[error("connection is not connected")]
    NotConnected,
    /// Nothing to read yet (the peer has not closed); wait for [`Event::Readable`].
    #[error("no data available yet")]
    WouldBlock,
}

/// The RST answering a segment that reached no connection (RFC 9293 §3.10.7.1): with ACK set,
/// `<SEQ=SEG.ACK><CTL=RST>`, otherwise `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. A RST is never
/// answered, so a RST yields `None`.
pub fn reset_for(incoming: &TcpHeader, payload_len: usize) -> Option<TcpHeader> {
    if incoming.flags.rst() {
        return None;
    }
    let mut reply = TcpHeader {
        src_port: incoming.dst_port,
        dst_port: incoming.src_port,
        ..TcpHeader::default()
    };
    if incoming.flags.ack() {
        reply.seq = incoming.ack;
        reply.flags = TcpFlags::RST;
    } else {
        reply.seq = SeqNum(0);
        reply.ack = incoming.seq + segment_len(incoming, payload_len);
        reply.flags = TcpFlags::RST | TcpFlags::ACK;
    }
    Some(reply)
}

/// SEG.LEN: payload octets plus one for SYN and one for FIN (RFC 9293 §3.4).
pub fn segment_len(header: &TcpHeader, payload_len: usize) -> u32 {
    payload_len as u32 + u32::from(header.flags.syn()) + u32::from(header.flags.fin())
}

/// What a listener does with an arriving segment (RFC 9293 §3.10.7.2, LISTEN state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenAction {
    /// A SYN without ACK: open a connection with [`Connection::accept`].
    Accept,
    /// Answer with this RST.
    Reset(TcpHeader),
    /// Ignore it.
    Drop,
}

/// The LISTEN rules: a RST is ignored, anything with ACK is answered with `<SEQ=SEG.ACK><CTL=RST>`,
/// a SYN opens a connection, anything else is dropped. The endpoint drops the impossible flag sets
/// ([`TcpFlags::is_impossible`]) before asking.
pub fn listen_action(incoming: &TcpHeader, payload_len: usize) -> ListenAction {
    let flags = incoming.flags;
    if flags.rst() {
        ListenAction::Drop
    } else if flags.ack() {
        reset_for(incoming, payload_len).map_or(ListenAction::Drop, ListenAction::Reset)
    } else if flags.syn() {
        ListenAction::Accept
    } else {
        ListenAction::Drop
    }
}
