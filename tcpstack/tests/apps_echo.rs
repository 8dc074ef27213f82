//! The echo and discard apps over the kernel's TCP on 127.0.0.1.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tcpstack::apps::echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect()
}

#[tokio::test]
async fn echo_returns_everything_and_closes_after_our_fin() {
    let (listener, addr) = listener().await;
    tokio::spawn(echo::serve_echo(listener));

    let sent = payload(4 * 1024 * 1024);
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let to_send = sent.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&to_send).await.expect("write");
        // Half-close: the echo must still send back everything, then its own FIN.
        writer.shutdown().await.expect("shutdown");
    });
    let mut received = Vec::new();
    reader
        .read_to_end(&mut received)
        .await
        .expect("read until the server's FIN");
    writing.await.expect("writer");
    assert_eq!(received.len(), sent.len());
    assert_eq!(Sha256::digest(&received), Sha256::digest(&sent));
}

#[tokio::test]
async fn echo_serves_connections_concurrently() {
    let (listener, addr) = listener().await;
    tokio::spawn(echo::serve_echo(listener));
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"first").await.expect("write");
    let mut other = TcpStream::connect(addr).await.expect("connect");
    other.write_all(b"second").await.expect("write");
    let mut answer = [0u8; 6];
    other.read_exact(&mut answer).await.expect("read");
    assert_eq!(&answer, b"second");
    let mut answer = [0u8; 5];
    idle.read_exact(&mut answer).await.expect("read");
    assert_eq!(&answer, b"first");
}

#[tokio::test]
async fn discard_reads_everything_and_answers_nothing() {
    let (listener, addr) = listener().await;
    tokio::spawn(echo::serve_discard(listener));
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&payload(1024 * 1024))
        .await
        .expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .await
        .expect("read until the server's FIN");
    assert!(received.is_empty());
}
