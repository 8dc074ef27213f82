//! What the endpoint logs, read back through a capturing `tracing` layer on the simulated
//! network: each connection's span (4-tuple, both ISNs, negotiated options) and its events
//! (handshake done, first byte, state changes, retransmissions), and the tcpdump-style line of
//! every segment at debug level. The clock is virtual, so every duration is exact.
//!
//! Each test installs its subscriber for its own thread only (`with_default`), so tests running
//! in parallel do not see each other's records.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tcpstack::endpoint::{
    ConnectionHandle, Endpoint, EndpointConfig, SEGMENT_RX_TARGET, SEGMENT_TX_TARGET,
};
use tcpstack::sim::{LinkConfig, Network, CLIENT_ADDR, SERVER_ADDR, SERVER_PORT};
use tcpstack::tcp::State;
use tcpstack::wire::{self, TcpFlags};
use tracing::field::{Field, Visit};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// One-way delay of both directions of the simulated link.
const DELAY: Duration = Duration::from_millis(10);
/// Steps a scenario may take before it counts as stuck.
const MAX_STEPS: usize = 10_000;

// ---- the capturing layer ----

/// A span as created, with the fields recorded on it since.
#[derive(Clone, Debug)]
struct SpanRecord {
    name: &'static str,
    fields: BTreeMap<&'static str, String>,
}

#[derive(Clone, Debug)]
struct EventRecord {
    target: String,
    level: tracing::Level,
    /// The event's fields, `message` included.
    fields: BTreeMap<&'static str, String>,
    /// Index into `Log::spans` of the span the event belongs to.
    span: Option<usize>,
}

impl EventRecord {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }

    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("event {self:?} has no field {name}"))
    }
}

#[derive(Debug, Default)]
struct Log {
    /// Every span ever created, in order; span IDs may be reused once a span closes, indexes not.
    spans: Vec<SpanRecord>,
    /// Live span ID → index in `spans`.
    live: BTreeMap<u64, usize>,
    events: Vec<EventRecord>,
}

/// Records every span and event that reaches it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Log>>);

impl Capture {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().expect("log lock")
    }
}

/// Field values as text: strings bare, everything else (numbers, bools, `%display`) by Debug.
struct FieldsVisitor<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for FieldsVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl<S> Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldsVisitor(&mut fields));
        let mut log = self.log();
        let index = log.spans.len();
        log.spans.push(SpanRecord {
            name: attrs.metadata().name(),
            fields,
        });
        log.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, _ctx: Context<'_, S>) {
        let mut log = self.log();
        if let Some(&index) = log.live.get(&id.into_u64()) {
            values.record(&mut FieldsVisitor(&mut log.spans[index].fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldsVisitor(&mut fields));
        let span_id = ctx.event_span(event).map(|span| span.id().into_u64());
        let mut log = self.log();
        let span = span_id.and_then(|id| log.live.get(&id).copied());
        log.events.push(EventRecord {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
            span,
        });
    }

    fn on_close(&self, id: span::Id, _ctx: Context<'_, S>) {
        self.log().live.remove(&id.into_u64());
    }
}

/// Runs `f` with a subscriber that passes what `filter` (RUST_LOG syntax) enables to a fresh
/// capture; returns `f`'s result and the capture.
fn captured<R>(filter: &str, f: impl FnOnce() -> R) -> (R, Capture) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new(filter))
        .with(capture.clone());
    let result = tracing::subscriber::with_default(subscriber, f);
    (result, capture)
}

// ---- scenarios ----

fn server_addr() -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_ADDR, SERVER_PORT)
}

fn network(client: EndpointConfig, server: EndpointConfig) -> Network {
    let mut net = Network::new(
        11,
        client,
        LinkConfig::ideal(DELAY),
        LinkConfig::ideal(DELAY),
    );
    let now = net.now();
    // `Network::new` gives both endpoints one config; the server may differ.
    net.server = Endpoint::new(server, SERVER_ADDR, 12, now);
    net.server.listen(server_addr()).expect("listens");
    net
}

/// Steps until `done` holds (checked before each step).
fn run_until(net: &mut Network, what: &str, mut done: impl FnMut(&mut Network) -> bool) {
    for _ in 0..MAX_STEPS {
        if done(net) {
            return;
        }
        assert!(net.step(), "the network went quiet before {what}");
    }
    panic!("{what} did not happen in {MAX_STEPS} steps");
}

fn state_of(endpoint: &Endpoint, handle: ConnectionHandle) -> Option<State> {
    endpoint.connection(handle).map(|conn| conn.state())
}

/// What the full scenario leaves behind besides the log.
struct Outcome {
    lost_syn: Vec<u8>,
    client_port: u16,
}

/// The client's first SYN is lost; the retransmitted one (after the 1 s initial RTO) completes
/// the handshake. The client writes 5 bytes at once, the server answers 5, then both close.
///
/// Client timeline: SYN at 0 (lost), again at 1.000, SYN-ACK at 1.020 (ESTABLISHED), data
/// back at 1.040. Server: SYN at 1.010, ACK and data together at 1.030.
fn lost_syn_then_echo_and_close() -> Outcome {
    let mut net = network(EndpointConfig::default(), EndpointConfig::default());
    let start = net.now();
    let client = net.client.connect(server_addr(), start).expect("connects");
    let client_port = net
        .client
        .connection(client)
        .expect("opened")
        .tuple()
        .local
        .port();
    let mut lost_syn = Vec::new();
    assert!(net.client.poll_transmit(start, &mut lost_syn), "the SYN");

    run_until(&mut net, "the client's handshake", |net| {
        state_of(&net.client, client) == Some(State::Established)
    });
    assert_eq!(net.elapsed(), Duration::from_millis(1020));
    net.client
        .connection_mut(client)
        .expect("open")
        .send(b"hello")
        .expect("sends");

    let mut accepted = None;
    run_until(&mut net, "the server's first byte", |net| {
        while net.server.poll_event().is_some() {}
        if accepted.is_none() {
            accepted = net.server.accept(server_addr());
        }
        accepted
            .and_then(|handle| net.server.connection(handle))
            .is_some_and(|conn| conn.recv_available() == 5)
    });
    let server = accepted.expect("accepted");
    assert_eq!(net.elapsed(), Duration::from_millis(1030));
    let conn = net.server.connection_mut(server).expect("open");
    conn.recv(&mut [0u8; 5]).expect("reads");
    conn.send(b"world").expect("sends");

    run_until(&mut net, "the client's first byte", |net| {
        net.client
            .connection(client)
            .is_some_and(|conn| conn.recv_available() == 5)
    });
    let conn = net.client.connection_mut(client).expect("open");
    conn.recv(&mut [0u8; 5]).expect("reads");
    conn.close();
    run_until(&mut net, "the server seeing the FIN", |net| {
        state_of(&net.server, server) == Some(State::CloseWait)
    });
    net.server.connection_mut(server).expect("open").close();
    run_until(&mut net, "both ends finishing", |net| {
        net.server.connection(server).is_none() && net.client.connection(client).is_none()
    });
    Outcome {
        lost_syn,
        client_port,
    }
}

/// The one span of `passive` (true: the server's).
fn span_of(log: &Log, passive: bool) -> (usize, &SpanRecord) {
    let mut spans = log.spans.iter().enumerate().filter(|(_, span)| {
        span.fields.get("passive").map(String::as_str) == Some(&passive.to_string())
    });
    let found = spans.next().expect("a span for the connection");
    assert!(
        spans.next().is_none(),
        "one span per connection: {:?}",
        log.spans
    );
    found
}

fn events_of(log: &Log, span: usize) -> Vec<&EventRecord> {
    log.events.iter().filter(|e| e.span == Some(span)).collect()
}

/// The states the connection went through by its state events, from `initial`; each event must
/// start where the one before it ended.
fn state_changes(events: &[&EventRecord], initial: &str) -> Vec<String> {
    let mut current = initial.to_owned();
    let mut visited = vec![current.clone()];
    for event in events.iter().filter(|e| e.message() == "state") {
        assert_eq!(event.field("from"), current, "{events:?}");
        current = event.field("to").to_owned();
        visited.push(current.clone());
    }
    visited
}

fn position(events: &[&EventRecord], message: &str) -> usize {
    events
        .iter()
        .position(|e| e.message() == message)
        .unwrap_or_else(|| panic!("no {message:?} event in {events:?}"))
}

#[test]
fn a_connection_span_carries_the_tuple_both_isns_and_the_negotiated_options() {
    let (outcome, capture) = captured("tcpstack=debug", lost_syn_then_echo_and_close);
    let log = capture.log();
    assert!(
        log.spans.iter().all(|span| span.name == "tcp"),
        "{:?}",
        log.spans
    );
    assert_eq!(log.spans.len(), 2, "{:?}", log.spans);
    let (_, client) = span_of(&log, false);
    let (_, server) = span_of(&log, true);

    let syn = wire::parse_ipv4_tcp(&outcome.lost_syn).expect("our SYN parses");
    assert!(syn.tcp.flags.syn() && !syn.tcp.flags.ack());
    let client_addr = format!("{CLIENT_ADDR}:{}", outcome.client_port);
    let server_addr = server_addr().to_string();
    assert_eq!(client.fields["local"], client_addr);
    assert_eq!(client.fields["remote"], server_addr);
    assert_eq!(server.fields["local"], server_addr);
    assert_eq!(server.fields["remote"], client_addr);
    // Our ISN is the SYN's sequence number; each side's peer ISN is the other's ISN.
    assert_eq!(client.fields["isn"], syn.tcp.seq.0.to_string());
    assert_eq!(server.fields["peer_isn"], client.fields["isn"]);
    assert_eq!(client.fields["peer_isn"], server.fields["isn"]);
    assert_ne!(client.fields["isn"], server.fields["isn"]);
    for span in [client, server] {
        // 1460 less the 12 bytes of timestamps every segment carries (RFC 7323 §3.2).
        assert_eq!(span.fields["mss"], "1448", "{span:?}");
        assert_eq!(span.fields["sack"], "true", "{span:?}");
        assert_eq!(span.fields["timestamps"], "true", "{span:?}");
        // A 6 MiB receive buffer at most needs a shift of 7 (RFC 7323 §2.3), on both sides.
        assert_eq!(span.fields["wscale"], "7/7", "{span:?}");
    }
}

#[test]
fn handshake_first_byte_state_and_retransmission_events_carry_virtual_times() {
    let (_, capture) = captured("tcpstack=debug", lost_syn_then_echo_and_close);
    let log = capture.log();
    let (client_span, _) = span_of(&log, false);
    let (server_span, _) = span_of(&log, true);
    let client = events_of(&log, client_span);
    let server = events_of(&log, server_span);
    for event in client.iter().chain(&server) {
        assert_eq!(event.level, tracing::Level::DEBUG, "{event:?}");
        assert!(event.target.starts_with("tcpstack::endpoint"), "{event:?}");
    }

    // The client: from its first SYN, through the lost one's retransmission.
    let handshake = position(&client, "handshake done");
    assert_eq!(client[handshake].field("duration_us"), "1020000");
    let first_byte = position(&client, "first byte");
    assert_eq!(client[first_byte].field("since_open_us"), "1040000");
    let retransmissions: Vec<_> = client
        .iter()
        .filter(|e| e.message() == "retransmission")
        .collect();
    assert_eq!(retransmissions.len(), 1, "{client:?}");
    assert_eq!(retransmissions[0].field("total"), "1");
    let retransmission = position(&client, "retransmission");
    assert!(
        retransmission < handshake && handshake < first_byte,
        "{client:?}"
    );

    // The server: from the SYN it received to the ACK, which came with the first byte.
    let handshake = position(&server, "handshake done");
    assert_eq!(server[handshake].field("duration_us"), "20000");
    let first_byte = position(&server, "first byte");
    assert_eq!(server[first_byte].field("since_open_us"), "20000");
    assert!(handshake < first_byte, "{server:?}");
    assert!(
        server.iter().all(|e| e.message() != "retransmission"),
        "{server:?}"
    );

    // The client closed first and ends in TIME-WAIT; the server, in LAST-ACK then CLOSED.
    let client_states = state_changes(&client, "SynSent");
    assert_eq!(client_states[1], "Established", "{client_states:?}");
    assert!(
        client_states.contains(&"FinWait1".to_owned()),
        "{client_states:?}"
    );
    assert_eq!(client_states.last().map(String::as_str), Some("TimeWait"));
    let server_states = state_changes(&server, "SynReceived");
    assert_eq!(
        server_states,
        [
            "SynReceived",
            "Established",
            "CloseWait",
            "LastAck",
            "Closed"
        ],
    );
    // Exactly one event per kind where one is due, and none outside a connection's span.
    for events in [&client, &server] {
        for once in ["handshake done", "first byte"] {
            assert_eq!(
                events.iter().filter(|e| e.message() == once).count(),
                1,
                "{events:?}"
            );
        }
    }
    assert!(
        log.events
            .iter()
            .filter(|e| e.span.is_none())
            .all(|e| e.target == SEGMENT_RX_TARGET || e.target == SEGMENT_TX_TARGET),
        "{:?}",
        log.events
    );
}

#[test]
fn the_span_records_what_both_syns_carried_not_what_we_offered() {
    let server_config = {
        let mut config = EndpointConfig::default();
        config.connection.sack = false;
        config.connection.timestamps = false;
        config
    };
    let (_, capture) = captured("tcpstack=debug", || {
        let mut net = network(EndpointConfig::default(), server_config);
        let client = net
            .client
            .connect(server_addr(), net.now())
            .expect("connects");
        run_until(&mut net, "the handshake", |net| {
            state_of(&net.client, client) == Some(State::Established)
        });
    });
    let log = capture.log();
    let (_, client) = span_of(&log, false);
    assert_eq!(client.fields["sack"], "false", "{client:?}");
    assert_eq!(client.fields["timestamps"], "false", "{client:?}");
    // No timestamps: the whole 1460 bytes are data.
    assert_eq!(client.fields["mss"], "1460", "{client:?}");
    assert_eq!(client.fields["wscale"], "7/7", "{client:?}");
}

// ---- the per-segment lines ----

/// Moves every packet `from` has to `to` at `now`, keeping a copy of each.
fn deliver(from: &mut Endpoint, to: &mut Endpoint, now: Instant, sent: &mut Vec<Vec<u8>>) {
    let mut packet = Vec::new();
    while from.poll_transmit(now, &mut packet) {
        to.handle_packet(&packet, now);
        sent.push(packet.clone());
    }
}

/// A handshake, packet by packet; returns the packets in the order they were sent.
fn handshake_packets() -> Vec<Vec<u8>> {
    let mut net = network(EndpointConfig::default(), EndpointConfig::default());
    let now = net.now();
    net.client.connect(server_addr(), now).expect("connects");
    let mut sent = Vec::new();
    deliver(&mut net.client, &mut net.server, now, &mut sent);
    deliver(&mut net.server, &mut net.client, now, &mut sent);
    deliver(&mut net.client, &mut net.server, now, &mut sent);
    assert_eq!(sent.len(), 3, "SYN, SYN-ACK, ACK");
    sent
}

/// The line tcpdump -n -S prints for a segment of the handshake, written out here from the
/// parsed header rather than by the formatter under test.
fn tcpdump_says(packet: &[u8]) -> String {
    let p = wire::parse_ipv4_tcp(packet).expect("parses");
    let t = &p.tcp;
    let ends = format!(
        "IP {}.{} > {}.{}",
        p.ip.src, t.src_port, p.ip.dst, t.dst_port
    );
    let ts = t.options.timestamps.expect("timestamps on every segment");
    let syn_options = |ecr: u32| {
        format!(
            "options [mss 1460,sackOK,TS val {} ecr {ecr},nop,wscale 7]",
            ts.tsval
        )
    };
    if t.flags == TcpFlags::SYN {
        format!(
            "{ends}: Flags [S], seq {}, win {}, {}, length 0",
            t.seq.0,
            t.window,
            syn_options(0)
        )
    } else if t.flags == TcpFlags::SYN | TcpFlags::ACK {
        format!(
            "{ends}: Flags [S.], seq {}, ack {}, win {}, {}, length 0",
            t.seq.0,
            t.ack.0,
            t.window,
            syn_options(ts.tsecr)
        )
    } else {
        assert_eq!(t.flags, TcpFlags::ACK, "a handshake has no other segment");
        format!(
            "{ends}: Flags [.], ack {}, win {}, options [nop,nop,TS val {} ecr {}], length 0",
            t.ack.0, t.window, ts.tsval, ts.tsecr
        )
    }
}

#[test]
fn at_debug_every_segment_is_one_tcpdump_line_sent_then_received() {
    let (sent, capture) = captured("tcpstack=debug", handshake_packets);
    let log = capture.log();
    let lines: Vec<(&str, &str)> = log
        .events
        .iter()
        .filter(|e| e.target.starts_with("tcpstack::segment"))
        .map(|e| {
            assert_eq!(e.level, tracing::Level::DEBUG, "{e:?}");
            (e.target.as_str(), e.message())
        })
        .collect();
    let mut expected = Vec::new();
    for packet in &sent {
        let line = tcpdump_says(packet);
        expected.push((SEGMENT_TX_TARGET, line.clone()));
        expected.push((SEGMENT_RX_TARGET, line));
    }
    let expected: Vec<(&str, &str)> = expected.iter().map(|(t, l)| (*t, l.as_str())).collect();
    assert_eq!(lines, expected);

    // The three packets are the handshake of one connection (RFC 9293 §3.5).
    let parsed: Vec<_> = sent
        .iter()
        .map(|p| wire::parse_ipv4_tcp(p).expect("parses"))
        .collect();
    assert_eq!(parsed[1].tcp.ack.0, parsed[0].tcp.seq.0.wrapping_add(1));
    assert_eq!(parsed[2].tcp.ack.0, parsed[1].tcp.seq.0.wrapping_add(1));
    assert_eq!(parsed[0].ip.src, CLIENT_ADDR);
    assert_eq!(parsed[0].tcp.dst_port, SERVER_PORT);
}

/// "Off" means off: at info level the endpoint creates no span and formats no line.
#[test]
fn at_info_a_handshake_logs_nothing() {
    let (sent, capture) = captured("tcpstack=info", handshake_packets);
    assert_eq!(sent.len(), 3);
    let log = capture.log();
    assert!(log.spans.is_empty(), "{:?}", log.spans);
    assert!(log.events.is_empty(), "{:?}", log.events);
}
