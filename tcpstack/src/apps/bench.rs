//! `bench`: load against any TCP server through any [`Connector`].
//!
//! - `bulk`: each connection writes blocks for the whole duration (and drains whatever comes
//!   back, so an echo server works as well as a discard server): throughput, write latency;
//! - `rr`: each connection sends a request of `size` bytes and waits for as many back (an echo
//!   server), over and over: transactions per second and their latency;
//! - `crr`: each worker connects, sends a request, reads the response and closes, over and
//!   over: connections per second, transaction latency, and the connect (handshake) latency.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use super::{AppStream, Connector};
use crate::latency::{self, LatencyReport};

/// How long a transaction or the final drain may outlast the run before it counts as failed.
const GRACE: Duration = Duration::from_secs(5);
/// After a failed connection, a crr worker waits this long before the next, doubling up to
/// [`RETRY_BACKOFF_MAX`] while failures go on: a refusing server is reported, not flooded.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    Bulk,
    Rr,
    Crr,
}

impl fmt::Display for BenchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchMode::Bulk => "bulk",
            BenchMode::Rr => "rr",
            BenchMode::Crr => "crr",
        })
    }
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub target: SocketAddr,
    pub mode: BenchMode,
    /// Concurrent connections (`crr`: concurrent workers).
    pub conns: usize,
    pub duration: Duration,
    /// Bytes per write (`bulk`, default 128 KiB) or per request and response (default 1).
    pub size: Option<usize>,
}

impl BenchConfig {
    pub fn message_size(&self) -> usize {
        self.size
            .unwrap_or(match self.mode {
                BenchMode::Bulk => 128 * 1024,
                BenchMode::Rr | BenchMode::Crr => 1,
            })
            .max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no transaction completed: {0}")]
    NothingCompleted(io::Error),
}

/// The figures of one run; serialises to JSON, prints as a table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub mode: BenchMode,
    pub target: SocketAddr,
    pub conns: usize,
    pub message_size: usize,
    pub duration_secs: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Writes (`bulk`) or request/response transactions (`rr`, `crr`).
    pub transactions: u64,
    pub transactions_per_sec: f64,
    pub sent_bits_per_sec: f64,
    pub received_bits_per_sec: f64,
    pub connections_opened: u64,
    pub errors: u64,
    /// Per write (`bulk`) or per transaction (`rr`; `crr` from connect to response).
    pub latency: LatencyReport,
    /// Connect (three-way handshake) latency as the client sees it, `crr` only.
    pub connect_latency: Option<LatencyReport>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: &dyn fmt::Display| {
            writeln!(f, "{name:<14}{value}")
        };
        row(f, "mode", &self.mode)?;
        row(f, "target", &self.target)?;
        row(f, "connections", &self.conns)?;
        row(f, "message size", &format_args!("{} B", self.message_size))?;
        row(f, "duration", &format_args!("{:.2} s", self.duration_secs))?;
        row(
            f,
            "transactions",
            &format_args!("{} ({:.1}/s)", self.transactions, self.transactions_per_sec),
        )?;
        row(
            f,
            "sent",
            &format_args!(
                "{} B ({})",
                self.bytes_sent,
                BitRate(self.sent_bits_per_sec)
            ),
        )?;
        row(
            f,
            "received",
            &format_args!(
                "{} B ({})",
                self.bytes_received,
                BitRate(self.received_bits_per_sec)
            ),
        )?;
        row(f, "latency", &self.latency)?;
        if let Some(connect) = &self.connect_latency {
            row(f, "connect", connect)?;
        }
        row(
            f,
            "connections",
            &format_args!("{} opened", self.connections_opened),
        )?;
        row(f, "errors", &self.errors)
    }
}

struct BitRate(f64);

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (value, unit) = match self.0 {
            r if r >= 1e9 => (r / 1e9, "Gbit/s"),
            r if r >= 1e6 => (r / 1e6, "Mbit/s"),
            r if r >= 1e3 => (r / 1e3, "kbit/s"),
            r => (r, "bit/s"),
        };
        write!(f, "{value:.2} {unit}")
    }
}

/// What one connection or worker measured.
struct Tally {
    bytes_sent: u64,
    bytes_received: u64,
    transactions: u64,
    connections: u64,
    errors: u64,
    last_error: Option<io::Error>,
    latency: Histogram<u64>,
    connect_latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            bytes_sent: 0,
            bytes_received: 0,
            transactions: 0,
            connections: 0,
            errors: 0,
            last_error: None,
            latency: latency::new_histogram(),
            connect_latency: latency::new_histogram(),
        }
    }

    fn failed(&mut self, error: io::Error) {
        self.errors += 1;
        self.last_error = Some(error);
    }

    fn merge(&mut self, other: Tally) {
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.transactions += other.transactions;
        self.connections += other.connections;
        self.errors += other.errors;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
        // Same bounds on both sides, values saturated on record: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect_latency.add(&other.connect_latency);
    }
}

/// Runs the benchmark described by `config`.
pub async fn run<C: Connector>(
    connector: Arc<C>,
    config: &BenchConfig,
) -> Result<BenchReport, BenchError> {
    let size = config.message_size();
    let conns = config.conns.max(1);
    let target = config.target;

    // bulk and rr open every connection first, so that connecting is not part of the run.
    let mut streams = Vec::new();
    if config.mode != BenchMode::Crr {
        for _ in 0..conns {
            let stream = connector
                .connect(target)
                .await
                .map_err(|source| BenchError::Connect {
                    addr: target,
                    source,
                })?;
            streams.push(stream);
        }
    }

    let started = Instant::now();
    let deadline = started + config.duration;
    let mut workers = JoinSet::new();
    match config.mode {
        BenchMode::Bulk => {
            for stream in streams {
                workers.spawn(bulk(stream, size, deadline));
            }
        }
        BenchMode::Rr => {
            for stream in streams {
                workers.spawn(request_response(stream, size, deadline));
            }
        }
        BenchMode::Crr => {
            for _ in 0..conns {
                workers.spawn(connect_request_response(
                    connector.clone(),
                    target,
                    size,
                    deadline,
                ));
            }
        }
    }
    let mut total = Tally::new();
    while let Some(finished) = workers.join_next().await {
        match finished {
            Ok(tally) => total.merge(tally),
            Err(error) => total.failed(io::Error::other(error)),
        }
    }
    let elapsed = config
        .duration
        .min(started.elapsed())
        .as_secs_f64()
        .max(1e-9);

    if total.transactions == 0 {
        if let Some(error) = total.last_error.take() {
            return Err(BenchError::NothingCompleted(error));
        }
    }
    if config.mode != BenchMode::Crr {
        total.connections = conns as u64;
    }
    Ok(BenchReport {
        mode: config.mode,
        target,
        conns,
        message_size: size,
        duration_secs: elapsed,
        bytes_sent: total.bytes_sent,
        bytes_received: total.bytes_received,
        transactions: total.transactions,
        transactions_per_sec: total.transactions as f64 / elapsed,
        sent_bits_per_sec: total.bytes_sent as f64 * 8.0 / elapsed,
        received_bits_per_sec: total.bytes_received as f64 * 8.0 / elapsed,
        connections_opened: total.connections,
        errors: total.errors,
        latency: LatencyReport::from_histogram(&total.latency),
        connect_latency: (config.mode == BenchMode::Crr)
            .then(|| LatencyReport::from_histogram(&total.connect_latency)),
    })
}

/// Writes blocks until the deadline while draining the other direction at the same time; then
/// half-closes and waits (until the grace period ends) for the server's FIN.
async fn bulk<S: AppStream>(stream: S, size: usize, deadline: Instant) -> Tally {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = async {
        let mut tally = Tally::new();
        let block: Vec<u8> = (0..size as u64).map(super::http::pattern_byte).collect();
        while Instant::now() < deadline {
            let begun = Instant::now();
            match timeout_at(deadline + GRACE, writer.write_all(&block)).await {
                Ok(Ok(())) => {
                    latency::record(&mut tally.latency, begun.elapsed());
                    tally.bytes_sent += size as u64;
                    tally.transactions += 1;
                }
                Ok(Err(error)) => {
                    tally.failed(error);
                    break;
                }
                Err(_) => {
                    tally.failed(io::ErrorKind::TimedOut.into());
                    break;
                }
            }
        }
        let _ = timeout_at(deadline + GRACE, writer.shutdown()).await;
        tally
    };
    let draining = async {
        let mut buffer = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        let until_eof = async {
            while let Ok(n) = reader.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                received += n as u64;
            }
        };
        let _ = timeout_at(deadline + GRACE, until_eof).await;
        received
    };
    let (mut tally, received) = tokio::join!(writing, draining);
    tally.bytes_received = received;
    tally
}

/// One request of `size` bytes, the same number back.
async fn transaction<S: AppStream>(
    stream: &mut S,
    request: &[u8],
    response: &mut [u8],
) -> io::Result<()> {
    stream.write_all(request).await?;
    stream.read_exact(response).await?;
    Ok(())
}

async fn request_response<S: AppStream>(mut stream: S, size: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::new();
    let request = vec![b'x'; size];
    let mut response = vec![0u8; size];
    while Instant::now() < deadline {
        let begun = Instant::now();
        match timeout_at(
            deadline + GRACE,
            transaction(&mut stream, &request, &mut response),
        )
        .await
        {
            Ok(Ok(())) => {
                latency::record(&mut tally.latency, begun.elapsed());
                tally.transactions += 1;
                tally.bytes_sent += size as u64;
                tally.bytes_received += size as u64;
            }
            Ok(Err(error)) => {
                tally.failed(error);
                break;
            }
            Err(_) => {
                tally.failed(io::ErrorKind::TimedOut.into());
                break;
            }
        }
    }
    let _ = timeout_at(deadline + GRACE, stream.shutdown()).await;
    tally
}

async fn connect_request_response<C: Connector>(
    connector: Arc<C>,
    target: SocketAddr,
    size: usize,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::new();
    let request = vec![b'x'; size];
    let mut response = vec![0u8; size];
    let mut backoff = RETRY_BACKOFF_MIN;
    while Instant::now() < deadline {
        let begun = Instant::now();
        let once = async {
            let mut stream = connector.connect(target).await?;
            let connected = begun.elapsed();
            transaction(&mut stream, &request, &mut response).await?;
            let answered = begun.elapsed();
            // Close: our FIN, then the server's (an echo server closes once it has read ours).
            stream.shutdown().await?;
            let mut rest = [0u8; 64];
            while stream.read(&mut rest).await? > 0 {}
            io::Result::Ok((connected, answered))
        };
        match timeout_at(deadline + GRACE, once).await {
            Ok(Ok((connected, answered))) => {
                latency::record(&mut tally.connect_latency, connected);
                latency::record(&mut tally.latency, answered);
                tally.connections += 1;
                tally.transactions += 1;
                tally.bytes_sent += size as u64;
                tally.bytes_received += size as u64;
                backoff = RETRY_BACKOFF_MIN;
            }
            Ok(Err(error)) => {
                tally.failed(error);
                tokio::time::sleep_until(deadline.min(Instant::now() + backoff)).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Err(_) => {
                tally.failed(io::ErrorKind::TimedOut.into());
                break;
            }
        }
    }
    tally
}
