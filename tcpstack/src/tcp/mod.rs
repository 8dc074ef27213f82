//! One TCP connection (a TCB) as a sans-IO state machine, RFC 9293.
//!
//! Input: parsed segments and the current time. Output: segments to transmit, events for the
//! user, and the next deadline. No sockets, no tokio, no clocks of its own.
//!
//! STUB: the API below is the contract other layers build on; the implementation is in progress.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::{SeqNum, TcpHeader};

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
    pub recv_buffer: usize,
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
    pub delayed_ack: Duration,
    pub nodelay: bool,
    pub keepalive: Option<KeepaliveConfig>,
    pub user_timeout: Option<Duration>,
    pub window_scaling: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: 1460,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(120),
            syn_retries: 6,
            synack_retries: 5,
            data_retries: 15,
            msl: Duration::from_secs(30),
            delayed_ack: Duration::from_millis(40),
            nodelay: false,
            keepalive: None,
            user_timeout: None,
            window_scaling: true,
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
    #[error("connection is closing for writes")]
    Closing,
    #[error("connection is not connected")]
    NotConnected,
}

/// One TCB.
#[derive(Debug)]
pub struct Connection {
    _private: (),
}

impl Connection {
    /// Active open: enters SYN-SENT with a SYN ready to transmit.
    pub fn connect(_config: Config, _tuple: FourTuple, _isn: SeqNum, _now: Instant) -> Self {
        todo!("active open")
    }

    /// Passive open from a listener's SYN: enters SYN-RECEIVED with a SYN-ACK ready to transmit.
    pub fn accept(
        _config: Config,
        _tuple: FourTuple,
        _syn: &TcpHeader,
        _isn: SeqNum,
        _now: Instant,
    ) -> Self {
        todo!("passive open")
    }

    pub fn tuple(&self) -> FourTuple {
        todo!()
    }

    pub fn state(&self) -> State {
        todo!()
    }

    /// Processes one arriving segment (RFC 9293 §3.10.7).
    pub fn handle_segment(&mut self, _header: &TcpHeader, _payload: &[u8], _now: Instant) {
        todo!()
    }

    /// Fires every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }

    /// The next segment to send, if any.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Segment> {
        todo!()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }

    /// The earliest armed timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Copies as much of `data` into the send buffer as fits; returns how much.
    pub fn send(&mut self, _data: &[u8]) -> Result<usize, ConnectionError> {
        todo!()
    }

    /// Reads in-order data. `Ok(0)` with a non-empty `buf` means the peer closed (EOF).
    pub fn recv(&mut self, _buf: &mut [u8]) -> Result<usize, ConnectionError> {
        todo!()
    }

    /// Half-close: a FIN follows the buffered data (RFC 9293 §3.10.4 CLOSE).
    pub fn close(&mut self) {
        todo!()
    }

    /// ABORT: sends RST and discards both buffers (RFC 9293 §3.10.5).
    pub fn abort(&mut self) {
        todo!()
    }

    /// TCP_NODELAY: `true` turns Nagle's algorithm (RFC 9293 §3.7.4) off.
    pub fn set_nodelay(&mut self, _nodelay: bool) {
        todo!()
    }

    /// Keepalive (RFC 9293 §3.8.4); `None` turns it off. Rearms the idle timer.
    pub fn set_keepalive(&mut self, _keepalive: Option<KeepaliveConfig>) {
        todo!()
    }
}
