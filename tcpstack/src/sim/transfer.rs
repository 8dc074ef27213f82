//! The transfer driver: the client connects, each side writes its share of pseudo-random bytes
//! while reading everything the other sends, then closes; both digests are compared at the end.

use std::net::SocketAddrV4;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::link::{LinkConfig, LinkStats};
use super::network::{Network, SERVER_ADDR};
use crate::endpoint::{ConnectionHandle, Endpoint, EndpointConfig, EndpointEvent, EndpointStats};
use crate::tcp::{ConnectionError, ConnectionStats, Event};

pub const SERVER_PORT: u16 = 5201;

/// Steps at one instant after which a run counts as livelocked (a timer that keeps firing
/// without moving, packets that bounce forever).
const MAX_STEPS_WITHOUT_TIME_PASSING: u64 = 100_000;

/// One simulated transfer.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    pub seed: u64,
    pub endpoint: EndpointConfig,
    pub to_server: LinkConfig,
    pub to_client: LinkConfig,
    /// Bytes the client sends.
    pub client_bytes: usize,
    /// Bytes the server sends.
    pub server_bytes: usize,
    /// Virtual time after which a run that has not finished counts as stalled.
    pub time_limit: Duration,
    /// A slow reader: each side reads at most this much per period, so that windows close.
    pub read_rate: Option<ReadRate>,
    /// Prints every packet delivered (see [`Network::trace`]).
    pub trace: bool,
}

impl TransferConfig {
    pub fn new(seed: u64, link: LinkConfig, client_bytes: usize, server_bytes: usize) -> Self {
        TransferConfig {
            seed,
            endpoint: EndpointConfig::default(),
            to_server: link.clone(),
            to_client: link,
            client_bytes,
            server_bytes,
            time_limit: Duration::from_secs(24 * 3600),
            read_rate: None,
            trace: false,
        }
    }
}

/// How fast a slow application reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRate {
    pub bytes: usize,
    pub every: Duration,
}

/// What a finished transfer looked like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReport {
    /// Virtual time from the SYN until both endpoints were empty (TIME-WAIT included).
    pub elapsed: Duration,
    /// Virtual time until both sides had read everything.
    pub transfer_time: Duration,
    pub client: EndpointStats,
    pub server: EndpointStats,
    /// Each side's connection counters as last seen before its endpoint freed it.
    pub client_connection: ConnectionStats,
    pub server_connection: ConnectionStats,
    pub to_server: LinkStats,
    pub to_client: LinkStats,
    pub steps: u64,
}

/// Why a transfer failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("{side}: connection failed with {event:?} after {at:?}")]
    ConnectionFailed {
        side: &'static str,
        event: Event,
        at: Duration,
    },
    #[error("{side}: {error} after {at:?}")]
    Io {
        side: &'static str,
        error: ConnectionError,
        at: Duration,
    },
    #[error("stalled at {at:?}: {detail}")]
    Stalled { at: Duration, detail: String },
    #[error("{direction}: {received} of {sent} bytes arrived, digests {}", if *.digests_match { "match" } else { "differ" })]
    Corrupted {
        direction: &'static str,
        sent: usize,
        received: usize,
        digests_match: bool,
    },
    #[error("{side} endpoint not empty at the end: {detail}")]
    Leak { side: &'static str, detail: String },
}

/// One side's application: a source of pseudo-random bytes and a sink that hashes what arrives.
struct App {
    side: &'static str,
    handle: Option<ConnectionHandle>,
    connected: bool,
    to_send: usize,
    source: SmallRng,
    chunk: Vec<u8>,
    chunk_pos: usize,
    sent: usize,
    sent_digest: Sha256,
    received: usize,
    received_digest: Sha256,
    write_closed: bool,
    peer_closed: bool,
    eof: bool,
    closed: bool,
    /// Bytes this side may still read in the current period; `None` reads without limit.
    read_budget: Option<usize>,
    /// The last read stopped because the budget ran out, not because the data did.
    throttled: bool,
    /// The connection's counters, refreshed after every step while it exists.
    connection_stats: ConnectionStats,
}

impl App {
    fn new(side: &'static str, to_send: usize, seed: u64) -> Self {
        App {
            side,
            handle: None,
            connected: false,
            to_send,
            source: SmallRng::seed_from_u64(seed),
            chunk: Vec::new(),
            chunk_pos: 0,
            sent: 0,
            sent_digest: Sha256::new(),
            received: 0,
            received_digest: Sha256::new(),
            write_closed: false,
            peer_closed: false,
            eof: false,
            closed: false,
            read_budget: None,
            throttled: false,
            connection_stats: ConnectionStats::default(),
        }
    }

    /// The connection's state and counters, for failure messages.
    fn describe(&self, endpoint: &Endpoint) -> String {
        match self.handle.and_then(|h| endpoint.connection(h)) {
            Some(conn) => format!(
                "[{:?}, {} readable, {:?}]",
                conn.state(),
                conn.recv_available(),
                conn.stats()
            ),
            None => "[no connection]".into(),
        }
    }

    fn record_stats(&mut self, endpoint: &Endpoint) {
        if let Some(conn) = self.handle.and_then(|h| endpoint.connection(h)) {
            self.connection_stats = conn.stats();
        }
    }

    fn done(&self) -> bool {
        self.closed && self.eof && self.write_closed
    }

    fn on_event(
        &mut self,
        endpoint: &mut Endpoint,
        event: Event,
        at: Duration,
        buf: &mut [u8],
    ) -> Result<(), TransferError> {
        match event {
            Event::Connected => self.connected = true,
            Event::Reset | Event::TimedOut => {
                return Err(TransferError::ConnectionFailed {
                    side: self.side,
                    event,
                    at,
                })
            }
            Event::Closed => {
                // The endpoint frees a connection (TIME-WAIT or CLOSED) only once all its data
                // has been read, so after the peer's FIN this is the end of the stream.
                self.closed = true;
                self.eof |= self.peer_closed;
                return Ok(());
            }
            Event::PeerClosed => self.peer_closed = true,
            Event::Readable | Event::Writable => {}
        }
        if self.connected {
            self.pump(endpoint, at, buf)?;
        }
        Ok(())
    }

    /// Writes as much as the connection takes, reads all it has, closes once everything is sent.
    fn pump(
        &mut self,
        endpoint: &mut Endpoint,
        at: Duration,
        buf: &mut [u8],
    ) -> Result<(), TransferError> {
        let Some(conn) = self.handle.and_then(|h| endpoint.connection_mut(h)) else {
            return Ok(());
        };
        let side = self.side;
        let io = |error| TransferError::Io { side, error, at };
        while self.sent < self.to_send {
            if self.chunk_pos == self.chunk.len() {
                let len = (self.to_send - self.sent).min(64 * 1024);
                self.chunk.resize(len, 0);
                self.source.fill_bytes(&mut self.chunk);
                self.chunk_pos = 0;
            }
            let n = conn.send(&self.chunk[self.chunk_pos..]).map_err(io)?;
            if n == 0 {
                break;
            }
            self.sent_digest
                .update(&self.chunk[self.chunk_pos..self.chunk_pos + n]);
            self.chunk_pos += n;
            self.sent += n;
        }
        if self.sent == self.to_send && !self.write_closed {
            conn.close();
            self.write_closed = true;
        }
        self.throttled = false;
        while !self.eof {
            let limit = match self.read_budget {
                Some(0) => {
                    self.throttled = true;
                    break;
                }
                Some(budget) => budget.min(buf.len()),
                None => buf.len(),
            };
            match conn.recv(&mut buf[..limit]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    if let Some(budget) = &mut self.read_budget {
                        *budget -= n;
                    }
                    self.received_digest.update(&buf[..n]);
                    self.received += n;
                }
                Err(ConnectionError::WouldBlock) => break,
                Err(error) => return Err(io(error)),
            }
        }
        Ok(())
    }
}

fn check_delivery(direction: &'static str, from: &App, to: &App) -> Result<(), TransferError> {
    let digests_match =
        from.sent_digest.clone().finalize() == to.received_digest.clone().finalize();
    if from.sent != from.to_send || to.received != from.sent || !digests_match {
        return Err(TransferError::Corrupted {
            direction,
            sent: from.sent,
            received: to.received,
            digests_match,
        });
    }
    Ok(())
}

fn check_empty(side: &'static str, endpoint: &Endpoint) -> Result<(), TransferError> {
    if endpoint.is_idle() && endpoint.poll_timeout().is_none() {
        return Ok(());
    }
    Err(TransferError::Leak {
        side,
        detail: format!(
            "{} connections, {} TIME-WAIT entries, next timer {:?}",
            endpoint.connection_count(),
            endpoint.time_wait_count(),
            endpoint.poll_timeout()
        ),
    })
}

/// Runs one transfer to the end: both directions complete, both endpoints empty.
pub fn run_transfer(config: &TransferConfig) -> Result<TransferReport, TransferError> {
    let mut seeds = SmallRng::seed_from_u64(config.seed);
    let mut net = Network::new(
        seeds.gen(),
        config.endpoint.clone(),
        config.to_server.clone(),
        config.to_client.clone(),
    );
    net.trace = config.trace;
    let mut client = App::new("client", config.client_bytes, seeds.gen());
    let mut server = App::new("server", config.server_bytes, seeds.gen());
    let listen_addr = SocketAddrV4::new(SERVER_ADDR, SERVER_PORT);
    let stalled = |net: &Network, detail: String| TransferError::Stalled {
        at: net.elapsed(),
        detail,
    };
    net.server
        .listen(listen_addr)
        .map_err(|e| stalled(&net, format!("listen: {e}")))?;
    let now = net.now();
    client.handle = Some(
        net.client
            .connect(listen_addr, now)
            .map_err(|e| stalled(&net, format!("connect: {e}")))?,
    );
    if let Some(rate) = config.read_rate {
        client.read_budget = Some(rate.bytes);
        server.read_budget = Some(rate.bytes);
    }
    let mut next_read = config.read_rate.map(|rate| net.now() + rate.every);
    let mut buf = vec![0u8; 64 * 1024];
    let mut steps = 0u64;
    let mut transfer_time = None;
    let mut last_progress = (net.now(), 0u64);
    loop {
        let at = net.elapsed();
        // Events can lead to more events (a write that frees space, a close): drain them all.
        loop {
            let mut progressed = false;
            while let Some(event) = net.client.poll_event() {
                progressed = true;
                if let EndpointEvent::Connection(handle, event) = event {
                    if Some(handle) == client.handle {
                        client.on_event(&mut net.client, event, at, &mut buf)?;
                    }
                }
            }
            while let Some(event) = net.server.poll_event() {
                progressed = true;
                match event {
                    EndpointEvent::Incoming(listener) => {
                        while let Some(handle) = net.server.accept(listener) {
                            if server.handle.is_some() {
                                return Err(stalled(&net, "a second connection arrived".into()));
                            }
                            server.handle = Some(handle);
                        }
                    }
                    EndpointEvent::Connection(handle, event) => {
                        if Some(handle) == server.handle {
                            server.on_event(&mut net.server, event, at, &mut buf)?;
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if transfer_time.is_none() && client.eof && server.eof {
            transfer_time = Some(at);
        }
        if client.done() && server.done() && net.client.is_idle() && net.server.is_idle() {
            break;
        }
        if at > config.time_limit {
            return Err(stalled(&net, "time limit".into()));
        }
        if net.now() > last_progress.0 {
            last_progress = (net.now(), steps);
        } else if steps - last_progress.1 > MAX_STEPS_WITHOUT_TIME_PASSING {
            return Err(stalled(
                &net,
                "livelock: the clock stopped advancing".into(),
            ));
        }
        if let (Some(rate), Some(at)) = (config.read_rate, next_read) {
            // A slow reader wakes up on its own clock, but only while it has data waiting.
            if (client.throttled || server.throttled) && net.advance_to(at) {
                let at = net.elapsed();
                for (app, endpoint) in [
                    (&mut client, &mut net.client),
                    (&mut server, &mut net.server),
                ] {
                    app.read_budget = Some(rate.bytes);
                    if app.connected {
                        app.pump(endpoint, at, &mut buf)?;
                    }
                }
                next_read = Some(net.now() + rate.every);
                steps += 1;
                continue;
            }
            if at <= net.now() {
                next_read = Some(net.now() + rate.every);
            }
        }
        if !net.step() {
            return Err(stalled(
                &net,
                format!(
                    "nothing scheduled; client sent {}/{} received {} eof {} closed {} {}; \
                     server sent {}/{} received {} eof {} closed {} {}",
                    client.sent,
                    client.to_send,
                    client.received,
                    client.eof,
                    client.closed,
                    client.describe(&net.client),
                    server.sent,
                    server.to_send,
                    server.received,
                    server.eof,
                    server.closed,
                    server.describe(&net.server),
                ),
            ));
        }
        client.record_stats(&net.client);
        server.record_stats(&net.server);
        steps += 1;
    }
    check_delivery("client to server", &client, &server)?;
    check_delivery("server to client", &server, &client)?;
    net.transmit();
    check_empty("client", &net.client)?;
    check_empty("server", &net.server)?;
    Ok(TransferReport {
        elapsed: net.elapsed(),
        transfer_time: transfer_time.unwrap_or_default(),
        client: net.client.stats(),
        server: net.server.stats(),
        client_connection: client.connection_stats,
        server_connection: server.connection_stats,
        to_server: net.to_server.stats(),
        to_client: net.to_client.stats(),
        steps,
    })
}
