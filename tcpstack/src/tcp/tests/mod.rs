//! Packet-level tests of the state machine in smoltcp's style: inject one segment, assert exactly
//! which segments come out (flags, seq, ack, window, payload), with time advanced by hand.
//!
//! The RFC 9293 §3.3.2 state diagram, transition by transition:
//! - CLOSED → SYN-SENT, SYN-SENT → ESTABLISHED: `handshake::active_open_*`
//! - LISTEN → SYN-RECEIVED → ESTABLISHED: `handshake::passive_open_*` (LISTEN is the endpoint's,
//!   its rules are `handshake::listen_rules_and_reset_for`)
//! - SYN-SENT → SYN-RECEIVED → ESTABLISHED (on the peer's SYN-ACK or ACK):
//!   `handshake::simultaneous_open_*`
//! - SYN-SENT → CLOSED: `handshake::close_in_syn_sent_*`, `rst_in_syn_sent_*`, `lost_syn_*`
//! - SYN-RECEIVED → LISTEN (CLOSED here): `handshake::rst_in_syn_received_*`,
//!   `new_syn_in_syn_received_*`, `synack_retries_exhausted_*`
//! - SYN-RECEIVED → FIN-WAIT-1: `handshake::close_in_syn_received_*`
//! - ESTABLISHED → FIN-WAIT-1 → FIN-WAIT-2 → TIME-WAIT → CLOSED: `close::active_close_*`
//! - FIN-WAIT-1 → TIME-WAIT (FIN and ACK together): `close::fin_and_ack_together_*`
//! - FIN-WAIT-1 → CLOSING → TIME-WAIT: `close::simultaneous_close_*`
//! - ESTABLISHED → CLOSE-WAIT → LAST-ACK → CLOSED: `close::passive_close_*`
//! - any synchronized state → CLOSED by RST or ABORT: `close::exact_rst_*`, `close::abort_*`,
//!   `close::rst_in_closing_states_*`, `close::time_wait_rules_*`
//!
//! Losses: `handshake::lost_syn_*`, `lost_syn_ack_*`, `lost_final_ack_*`; `close::lost_fin_*`,
//! `lost_ack_of_fin_*`, `lost_last_ack_in_time_wait_*`, `fin_lost_in_closing_*`.

mod close;
mod data;
mod handshake;
mod icmp;
mod lossy;
mod pair;
mod props;
mod receiver;
mod recovery;
mod timers;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::{Config, Connection, Event, FourTuple, Segment, State};
use crate::wire::{SeqNum, TcpFlags, TcpHeader, TcpOptions};

pub(super) const LOCAL_PORT: u16 = 80;
pub(super) const REMOTE_PORT: u16 = 49152;
/// Our ISN and the peer's in most tests.
pub(super) const ISS: u32 = 1000;
pub(super) const IRS: u32 = 5000;
/// The window field we advertise once scaled: 256 KiB >> 7 (the shift covers the 6 MiB that
/// receive-buffer auto-tuning may reach).
pub(super) const SCALED_WINDOW: u16 = 2048;
/// The window field of our SYN / SYN-ACK: never scaled, capped at 65535.
pub(super) const SYN_WINDOW: u16 = 65535;

pub(super) fn tuple() -> FourTuple {
    FourTuple {
        local: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), LOCAL_PORT),
        remote: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), REMOTE_PORT),
    }
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) const F: TcpFlags = TcpFlags::FIN;
pub(super) const S: TcpFlags = TcpFlags::SYN;
pub(super) const R: TcpFlags = TcpFlags::RST;
pub(super) const P: TcpFlags = TcpFlags::PSH;
pub(super) const A: TcpFlags = TcpFlags::ACK;

/// A segment from the peer (its ports reversed from ours).
pub(super) fn seg(flags: TcpFlags, seq: u32, ack: u32) -> TcpHeader {
    TcpHeader {
        src_port: REMOTE_PORT,
        dst_port: LOCAL_PORT,
        seq: SeqNum(seq),
        ack: if flags.ack() { SeqNum(ack) } else { SeqNum(0) },
        flags,
        window: 65535,
        ..TcpHeader::default()
    }
}

pub(super) fn with_window(mut header: TcpHeader, window: u16) -> TcpHeader {
    header.window = window;
    header
}

pub(super) fn syn_options(mss: u16, window_scale: Option<u8>) -> TcpOptions {
    TcpOptions {
        mss: Some(mss),
        window_scale,
        ..TcpOptions::default()
    }
}

/// One connection under test, a clock, and helpers to talk to it.
pub(super) struct Harness {
    pub conn: Connection,
    pub start: Instant,
    pub now: Instant,
}

impl Harness {
    pub fn client(config: Config, iss: u32) -> Self {
        let start = Instant::now();
        Harness {
            conn: Connection::connect(config, tuple(), SeqNum(iss), start),
            start,
            now: start,
        }
    }

    pub fn server(config: Config, syn: &TcpHeader, iss: u32) -> Self {
        let start = Instant::now();
        Harness {
            conn: Connection::accept(config, tuple(), syn, SeqNum(iss), start),
            start,
            now: start,
        }
    }

    /// A client past the handshake (ISS / IRS, both offering window scale 7 and MSS 1460).
    pub fn established_with(config: Config, iss: u32, irs: u32) -> Self {
        let mut h = Harness::client(config, iss);
        h.expect(S, iss, 0);
        let mut synack = seg(S | A, irs, iss.wrapping_add(1));
        synack.options = syn_options(1460, Some(7));
        h.send(&synack);
        h.expect(A, iss.wrapping_add(1), irs.wrapping_add(1));
        assert_eq!(h.conn.state(), State::Established);
        h.drain_events();
        h
    }

    pub fn established() -> Self {
        Harness::established_with(Config::default(), ISS, IRS)
    }

    pub fn send(&mut self, header: &TcpHeader) {
        self.conn.handle_segment(header, &[], self.now);
    }

    pub fn send_data(&mut self, header: &TcpHeader, payload: &[u8]) {
        self.conn.handle_segment(header, payload, self.now);
    }

    pub fn recv(&mut self) -> Option<Segment> {
        let segment = self.conn.poll_transmit(self.now);
        if let Some(s) = &segment {
            assert_eq!(s.header.src_port, LOCAL_PORT);
            assert_eq!(s.header.dst_port, REMOTE_PORT);
        }
        segment
    }

    /// Asserts the next segment's flags, seq and ack; returns it for further checks.
    #[track_caller]
    pub fn expect(&mut self, flags: TcpFlags, seq: u32, ack: u32) -> Segment {
        let Some(segment) = self.recv() else {
            panic!("expected [{flags}] seq {seq} ack {ack}, got nothing");
        };
        let h = &segment.header;
        assert_eq!(
            (h.flags, h.seq.0, h.ack.0),
            (flags, seq, ack),
            "expected [{flags}] seq {seq} ack {ack}, got {h:?} with {} bytes",
            segment.payload.len()
        );
        segment
    }

    /// As `expect`, also checking window and payload.
    #[track_caller]
    pub fn expect_exact(
        &mut self,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        window: u16,
        payload: &[u8],
    ) -> Segment {
        let segment = self.expect(flags, seq, ack);
        assert_eq!(
            segment.header.window, window,
            "window of {:?}",
            segment.header
        );
        assert_eq!(
            &segment.payload[..],
            payload,
            "payload of {:?}",
            segment.header
        );
        segment
    }

    #[track_caller]
    pub fn expect_nothing(&mut self) {
        if let Some(s) = self.recv() {
            panic!(
                "expected nothing, got {:?} with {} bytes",
                s.header,
                s.payload.len()
            );
        }
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.conn.handle_timeout(self.now);
    }

    /// Moves the clock to the next armed timer and fires it; returns how far that was.
    #[track_caller]
    pub fn fire_next_timer(&mut self) -> Duration {
        let at = self.conn.poll_timeout().expect("a timer should be armed");
        assert!(at >= self.now, "timer in the past");
        let waited = at - self.now;
        self.now = at;
        self.conn.handle_timeout(self.now);
        waited
    }

    /// `count` 10-byte segments after a hole at RCV.NXT, delivered before anything is polled
    /// (one receive batch): each is owed a duplicate ACK.
    pub fn out_of_order_batch(&mut self, rcv_nxt: u32, snd_nxt: u32, count: u32) {
        for k in 1..=count {
            self.send_data(&seg(A, rcv_nxt + 10 * k, snd_nxt), &[k as u8; 10]);
        }
    }

    /// Every segment the connection sends now.
    pub fn drain(&mut self) -> Vec<Segment> {
        std::iter::from_fn(|| self.recv()).collect()
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    pub fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.conn.recv(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}
