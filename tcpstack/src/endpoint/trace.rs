//! What the endpoint tells a person about its connections: a `tracing` span per connection
//! (4-tuple, both ISNs, and once negotiated the MSS, the window shifts as `ours/theirs`,
//! SACK-permitted and timestamps) with events for state changes, retransmissions, the end of the
//! handshake and the first byte received; one tcpdump-style debug line per segment; and
//! histograms of handshake latency.
//!
//! Durations come from the `now` values the endpoint is given, never from a clock. When the
//! tracing level is off, a connection's span is disabled and nothing here formats anything: the
//! histograms cost one record per handshake. Handshakes completed by a SYN cookie are not timed:
//! the endpoint kept no record of their SYN.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tracing::{debug, field, Level, Span};

use crate::latency::{self, LatencyReport};
use crate::tcp::{Connection, State};
use crate::wire::{self, SeqNum, TcpdumpLine};

/// Target of the per-segment lines (`RUST_LOG=tcpstack::segment=debug` shows only them).
pub const SEGMENT_RX_TARGET: &str = "tcpstack::segment::rx";
pub const SEGMENT_TX_TARGET: &str = "tcpstack::segment::tx";

/// Handshake durations in microseconds (see [`latency::new_histogram`]): passive opens from the
/// SYN received to ESTABLISHED, active opens from the SYN sent to ESTABLISHED.
#[derive(Clone, Debug)]
pub struct HandshakeLatency {
    pub passive: Histogram<u64>,
    pub active: Histogram<u64>,
}

impl Default for HandshakeLatency {
    fn default() -> Self {
        HandshakeLatency {
            passive: latency::new_histogram(),
            active: latency::new_histogram(),
        }
    }
}

impl HandshakeLatency {
    pub fn report(&self) -> HandshakeReport {
        HandshakeReport {
            passive: LatencyReport::from_histogram(&self.passive),
            active: LatencyReport::from_histogram(&self.active),
        }
    }
}

/// Percentiles of [`HandshakeLatency`], for printing and JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandshakeReport {
    pub passive: LatencyReport,
    pub active: LatencyReport,
}

/// What the endpoint remembers to trace one connection.
#[derive(Debug)]
pub(super) struct ConnectionTrace {
    span: Span,
    /// When the SYN was received (passive) or the connection opened to send its SYN (active);
    /// `None` for a SYN-cookie handshake, whose SYN left no record.
    opened_at: Option<Instant>,
    passive: bool,
    established: bool,
    first_byte: bool,
    /// Last state and retransmit count reported; followed only while the span is enabled.
    state: State,
    retransmits: u64,
}

impl ConnectionTrace {
    pub(super) fn new(conn: &Connection, isn: SeqNum, passive: bool, now: Instant) -> Self {
        let tuple = conn.tuple();
        // A passive open knows the peer's ISN from its SYN; an active one learns it from the
        // SYN-ACK and records it with the other negotiated options in `established`.
        let span = tracing::debug_span!(
            "tcp",
            local = %tuple.local,
            remote = %tuple.remote,
            isn = isn.0,
            peer_isn = conn.peer_isn().map(|peer_isn| peer_isn.0),
            passive,
            mss = field::Empty,
            wscale = field::Empty,
            sack = field::Empty,
            timestamps = field::Empty,
        );
        ConnectionTrace {
            span,
            opened_at: Some(now),
            passive,
            established: false,
            first_byte: false,
            state: conn.state(),
            retransmits: 0,
        }
    }

    /// The connection reached ESTABLISHED at `now`: one sample in the histogram of its kind.
    pub(super) fn established(
        &mut self,
        conn: &Connection,
        now: Instant,
        histograms: &mut HandshakeLatency,
    ) {
        if self.established {
            return;
        }
        self.established = true;
        let duration = self
            .opened_at
            .map(|opened_at| now.saturating_duration_since(opened_at));
        if let Some(duration) = duration {
            let histogram = if self.passive {
                &mut histograms.passive
            } else {
                &mut histograms.active
            };
            latency::record(histogram, duration);
        }
        if self.span.is_disabled() {
            return;
        }
        if let Some(peer_isn) = conn.peer_isn() {
            self.span.record("peer_isn", peer_isn.0);
        }
        self.span.record("mss", conn.mss());
        // What both SYNs carried, not what we offered (RFC 2018 §2, RFC 7323 §2.2 and §3.2).
        let negotiated = conn.stats();
        self.span.record("sack", negotiated.sack);
        self.span.record("timestamps", negotiated.timestamps);
        match conn.window_scale() {
            Some((ours, theirs)) => self
                .span
                .record("wscale", field::display(Shifts(ours, theirs))),
            None => self.span.record("wscale", "off"),
        };
        match duration {
            Some(duration) => {
                debug!(parent: &self.span, duration_us = micros(duration), "handshake done");
            }
            None => debug!(parent: &self.span, "handshake done by SYN cookie"),
        }
    }

    /// The handshake of a SYN cookie: its start is unknown, so it is not timed.
    pub(super) fn start_unknown(&mut self) {
        self.opened_at = None;
    }

    /// Data became readable at `now`; the first time, the time to first byte since the open.
    pub(super) fn readable(&mut self, now: Instant) {
        if self.first_byte {
            return;
        }
        self.first_byte = true;
        if self.span.is_disabled() {
            return;
        }
        match self.opened_at {
            Some(opened_at) => {
                let since_open = now.saturating_duration_since(opened_at);
                debug!(parent: &self.span, since_open_us = micros(since_open), "first byte");
            }
            None => debug!(parent: &self.span, "first byte"),
        }
    }

    /// Reports state changes and retransmissions since the last call.
    pub(super) fn follow(&mut self, conn: &Connection) {
        if self.span.is_disabled() {
            return;
        }
        let state = conn.state();
        if state != self.state {
            debug!(parent: &self.span, from = ?self.state, to = ?state, "state");
            self.state = state;
        }
        let retransmits = conn.stats().retransmits;
        if retransmits > self.retransmits {
            debug!(parent: &self.span, total = retransmits, "retransmission");
            self.retransmits = retransmits;
        }
    }
}

/// `wscale 7/7`: our shift, then the peer's.
struct Shifts(u8, u8);

impl std::fmt::Display for Shifts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Logs a received, well-formed segment as tcpdump prints it, when debug logging is on there.
#[inline]
pub(super) fn segment_in(packet: &wire::TcpPacket<'_>) {
    if tracing::enabled!(target: SEGMENT_RX_TARGET, Level::DEBUG) {
        debug!(target: SEGMENT_RX_TARGET, "{}", TcpdumpLine::of_packet(packet));
    }
}

/// Logs a segment we are about to send (a whole IPv4 packet), when debug logging is on there.
#[inline]
pub(super) fn segment_out(packet: &[u8]) {
    if tracing::enabled!(target: SEGMENT_TX_TARGET, Level::DEBUG) {
        match wire::parse_ipv4_tcp(packet) {
            Ok(parsed) => debug!(target: SEGMENT_TX_TARGET, "{}", TcpdumpLine::of_packet(&parsed)),
            Err(error) => debug!(target: SEGMENT_TX_TARGET, %error, "unparsable packet sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use super::*;
    use crate::endpoint::{Endpoint, EndpointConfig};

    const SERVER: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(198, 18, 0, 1), 7);

    /// Delivers every packet `from` has to send into `to` at `now`; returns how many.
    fn deliver(from: &mut Endpoint, to: &mut Endpoint, now: Instant) -> usize {
        let mut packet = Vec::new();
        let mut count = 0;
        while from.poll_transmit(now, &mut packet) {
            to.handle_packet(&packet, now);
            count += 1;
        }
        count
    }

    fn micros_of(histogram: &Histogram<u64>) -> Vec<u64> {
        histogram
            .iter_recorded()
            .flat_map(|v| std::iter::repeat_n(v.value_iterated_to(), v.count_at_value() as usize))
            .collect()
    }

    /// One sample per handshake on each side, each the virtual time between the SYN and
    /// ESTABLISHED as that side saw it.
    #[test]
    fn every_handshake_is_one_sample_of_its_virtual_duration() {
        let start = Instant::now();
        let mut server = Endpoint::new(EndpointConfig::default(), *SERVER.ip(), 1, start);
        let mut client = Endpoint::new(
            EndpointConfig::default(),
            std::net::Ipv4Addr::new(198, 18, 0, 2),
            2,
            start,
        );
        server.listen(SERVER).expect("listens");
        let ms = Duration::from_millis;
        // Client → server one way takes `delay`, server → client twice that.
        for (i, delay) in [ms(5), ms(10), ms(40)].into_iter().enumerate() {
            let t0 = start + ms(1000) * i as u32;
            client.connect(SERVER, t0).expect("connects");
            assert_eq!(deliver(&mut client, &mut server, t0 + delay), 1, "SYN");
            let syn_ack_at = t0 + delay * 3;
            assert_eq!(deliver(&mut server, &mut client, syn_ack_at), 1, "SYN-ACK");
            assert_eq!(
                deliver(&mut client, &mut server, syn_ack_at + delay),
                1,
                "ACK"
            );
            while server.poll_event().is_some() {}
            while client.poll_event().is_some() {}
            assert!(server.accept(SERVER).is_some());
        }

        let passive = &server.handshake_latency().passive;
        let active = &client.handshake_latency().active;
        assert!(server.handshake_latency().active.is_empty());
        assert!(client.handshake_latency().passive.is_empty());
        // Passive: SYN received (t0 + d) → final ACK (t0 + 4d) = 3d. Active: SYN (t0) → SYN-ACK (t0 + 3d).
        let expected = [15_000u64, 30_000, 120_000];
        for (histogram, expected) in [(passive, expected), (active, expected)] {
            let samples = micros_of(histogram);
            assert_eq!(samples.len(), 3, "{samples:?}");
            for (sample, want) in samples.iter().zip(expected) {
                assert!(histogram.equivalent(*sample, want), "{sample} vs {want}");
            }
        }
        let report = server.handshake_latency().report();
        assert_eq!(report.passive.count, 3);
        assert_eq!(report.active.count, 0);
        let json = serde_json::to_value(report).expect("serialises");
        assert_eq!(json["passive"]["count"], 3);
        assert!(histogram_equivalent(
            passive,
            json["passive"]["max_us"].as_u64(),
            120_000
        ));
    }

    fn histogram_equivalent(histogram: &Histogram<u64>, value: Option<u64>, want: u64) -> bool {
        value.is_some_and(|v| histogram.equivalent(v, want))
    }

    /// A retransmitted SYN does not restart the clock: the handshake counts from the first SYN.
    #[test]
    fn a_lost_syn_counts_from_the_first_one() {
        let start = Instant::now();
        let mut server = Endpoint::new(EndpointConfig::default(), *SERVER.ip(), 1, start);
        let mut client = Endpoint::new(
            EndpointConfig::default(),
            std::net::Ipv4Addr::new(198, 18, 0, 2),
            2,
            start,
        );
        server.listen(SERVER).expect("listens");
        client.connect(SERVER, start).expect("connects");
        let mut lost = Vec::new();
        assert!(
            client.poll_transmit(start, &mut lost),
            "the first SYN is lost"
        );
        assert!(!client.poll_transmit(start, &mut lost));
        let rto = client.poll_timeout().expect("the SYN is timed");
        client.handle_timeout(rto);
        assert_eq!(deliver(&mut client, &mut server, rto), 1, "SYN again");
        assert_eq!(deliver(&mut server, &mut client, rto), 1, "SYN-ACK");
        assert_eq!(deliver(&mut client, &mut server, rto), 1, "ACK");
        let samples = micros_of(&client.handshake_latency().active);
        let want = u64::try_from((rto - start).as_micros()).expect("fits");
        assert_eq!(samples.len(), 1);
        assert!(client
            .handshake_latency()
            .active
            .equivalent(samples[0], want));
        assert_eq!(server.handshake_latency().passive.len(), 1);
        assert_eq!(client.stats().retransmits, 1);
    }
}
