//! The bench client against the echo app over the kernel's TCP on 127.0.0.1. Figures are only
//! checked for sanity, never for speed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tcpstack::apps::bench::{self, BenchConfig, BenchMode};
use tcpstack::apps::{echo, TokioConnector};
use tokio::net::TcpListener;

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(echo::serve_echo(listener));
    addr
}

fn config(target: SocketAddr, mode: BenchMode) -> BenchConfig {
    BenchConfig {
        target,
        mode,
        conns: 2,
        duration: Duration::from_millis(500),
        size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response() {
    let target = echo_server().await;
    let report = bench::run(Arc::new(TokioConnector), &config(target, BenchMode::Rr))
        .await
        .expect("rr");
    assert!(report.transactions > 0);
    assert_eq!(report.errors, 0);
    assert_eq!(report.latency.count, report.transactions);
    assert!(report.latency.p50_us <= report.latency.max_us);
    assert_eq!(report.bytes_sent, report.transactions);
    assert!(report.transactions_per_sec > 0.0);
    assert_eq!(report.connections_opened, 2);
    let json = serde_json::to_value(&report).expect("JSON");
    assert_eq!(json["mode"], "rr");
    assert!(report.to_string().contains("p99.9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_request_response() {
    let target = echo_server().await;
    let mut config = config(target, BenchMode::Crr);
    config.size = Some(100);
    let report = bench::run(Arc::new(TokioConnector), &config)
        .await
        .expect("crr");
    assert!(report.transactions > 0);
    assert_eq!(report.errors, 0);
    assert_eq!(report.connections_opened, report.transactions);
    let connect = report.connect_latency.expect("crr reports connect latency");
    assert_eq!(connect.count, report.transactions);
    assert_eq!(report.bytes_received, 100 * report.transactions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_against_echo() {
    let target = echo_server().await;
    let report = bench::run(Arc::new(TokioConnector), &config(target, BenchMode::Bulk))
        .await
        .expect("bulk");
    assert!(report.bytes_sent > 0);
    assert_eq!(report.bytes_sent, report.transactions * 128 * 1024);
    // The echo sends everything back before its FIN, and bulk drains it.
    assert_eq!(report.bytes_received, report.bytes_sent);
    assert!(report.sent_bits_per_sec > 0.0);
    assert!(report.connect_latency.is_none());
}

#[tokio::test]
async fn refused_connections_are_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("local address");
    drop(listener);
    let result = bench::run(Arc::new(TokioConnector), &config(target, BenchMode::Rr)).await;
    assert!(
        matches!(result, Err(bench::BenchError::Connect { .. })),
        "{result:?}"
    );
    let result = bench::run(Arc::new(TokioConnector), &config(target, BenchMode::Crr)).await;
    assert!(
        matches!(result, Err(bench::BenchError::NothingCompleted(_))),
        "{result:?}"
    );
}

/// A connector whose every attempt is refused at once, counting the attempts.
#[derive(Default)]
struct RefusingConnector {
    attempts: std::sync::atomic::AtomicU64,
}

impl tcpstack::apps::Connector for RefusingConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, _addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(std::io::ErrorKind::ConnectionRefused.into())
    }
}

/// crr backs off between failed connections (10 ms, doubling), so a refusing server sees a
/// handful of attempts in half a second, not a flood.
#[tokio::test]
async fn crr_backs_off_from_a_refusing_server() {
    let connector = Arc::new(RefusingConnector::default());
    let target = "127.0.0.1:9".parse().expect("address");
    let config = BenchConfig {
        conns: 1,
        ..config(target, BenchMode::Crr)
    };
    let result = bench::run(connector.clone(), &config).await;
    assert!(
        matches!(result, Err(bench::BenchError::NothingCompleted(_))),
        "{result:?}"
    );
    let attempts = connector
        .attempts
        .load(std::sync::atomic::Ordering::Relaxed);
    // 10 + 20 + 40 + 80 + 160 + 320 ms of backoff outlast the 500 ms run: at most 7 attempts.
    assert!((2..=7).contains(&attempts), "{attempts} attempts");
}
