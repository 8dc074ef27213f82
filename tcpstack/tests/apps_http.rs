//! The http app over the kernel's TCP on 127.0.0.1: pattern bodies with digests, keep-alive.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tcpstack::apps::fetch::{fetch, hex};
use tcpstack::apps::http::{self, pattern_sha256};
use tcpstack::apps::{Listener, TokioConnector};
use tokio::net::{TcpListener, TcpStream};

/// A listener that counts the connections it hands out.
struct CountingListener {
    inner: TcpListener,
    accepted: Arc<AtomicUsize>,
}

impl Listener for CountingListener {
    type Stream = TcpStream;

    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let accepted = self.inner.accept().await?;
        self.accepted.fetch_add(1, Ordering::SeqCst);
        Ok(accepted)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

async fn start_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let inner = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = inner.local_addr().expect("local address");
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(http::serve(CountingListener {
        inner,
        accepted: accepted.clone(),
    }));
    (addr, accepted)
}

#[tokio::test]
async fn ten_megabytes_arrive_with_the_right_digest() {
    let (addr, _) = start_server().await;
    let mut body = Vec::new();
    let summary = fetch(
        &TokioConnector,
        &format!("http://{addr}/bytes/10000000"),
        &mut body,
    )
    .await
    .expect("fetch");
    assert_eq!(summary.status, 200);
    assert_eq!(summary.body_bytes, 10_000_000);
    assert_eq!(body.len(), 10_000_000);
    assert_eq!(summary.sha256, hex(&pattern_sha256(10_000_000)));
    assert_eq!(summary.pattern_matches, Some(true));
}

#[tokio::test]
async fn index_and_not_found() {
    let (addr, _) = start_server().await;
    let mut page = Vec::new();
    let summary = fetch(&TokioConnector, &format!("http://{addr}/"), &mut page)
        .await
        .expect("fetch /");
    assert_eq!(summary.status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<html>"));
    assert_eq!(summary.pattern_matches, None);

    let summary = fetch(
        &TokioConnector,
        &format!("http://{addr}/nothing"),
        &mut Vec::new(),
    )
    .await
    .expect("fetch /nothing");
    assert_eq!(summary.status, 404);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let (addr, accepted) = start_server().await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    for len in [0u64, 1, 100_000, 251] {
        let request = Request::get(format!("/bytes/{len}"))
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body.len() as u64, len);
        assert!(body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == http::pattern_byte(i as u64)));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

fn curl(args: &[&str]) -> Vec<u8> {
    let output = match std::process::Command::new("curl")
        .args(["--silent", "--show-error"])
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            panic!("curl is missing ({error}): install the Debian package (`apt-get install curl`)")
        }
    };
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_the_pattern_and_reuses_its_connection() {
    use sha2::{Digest, Sha256};
    let (addr, accepted) = start_server().await;
    let url = format!("http://{addr}/bytes/10000000");
    let body = tokio::task::spawn_blocking(move || curl(&[&url]))
        .await
        .expect("curl task");
    assert_eq!(body.len(), 10_000_000);
    assert_eq!(
        <[u8; 32]>::from(Sha256::digest(&body)),
        pattern_sha256(10_000_000)
    );

    // Two URLs in one curl run: the second goes over the first one's connection.
    let (first, second) = (format!("http://{addr}/"), format!("http://{addr}/bytes/5"));
    let connects = tokio::task::spawn_blocking(move || {
        curl(&[
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{num_connects} ",
            &first,
            &second,
        ])
    })
    .await
    .expect("curl task");
    assert_eq!(String::from_utf8_lossy(&connects), "1 0 ");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
