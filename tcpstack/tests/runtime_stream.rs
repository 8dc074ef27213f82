//! The tokio-shaped API over an in-memory link: handshakes, data, closes, errors.

mod runtime_support;

use std::io::ErrorKind;
use std::time::Duration;

use runtime_support::*;
use tcpstack::io::memory::{self, LinkConfig};
use tcpstack::runtime::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn connect_and_accept_agree_on_addresses() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(7)).unwrap();
    let (stream, (accepted, peer)) = within(10, async {
        tokio::join!(
            async { TcpStream::connect(&client, server_addr(7)).await.unwrap() },
            async { listener.accept().await.unwrap() }
        )
    })
    .await;
    assert_eq!(stream.peer_addr().unwrap(), server_addr(7));
    assert_eq!(*stream.local_addr().unwrap().ip(), CLIENT_IP);
    assert_eq!(peer, stream.local_addr().unwrap());
    assert_eq!(accepted.local_addr().unwrap(), server_addr(7));
    assert_eq!(accepted.peer_addr().unwrap(), stream.local_addr().unwrap());
    assert_eq!(server.stats().accepted, 1);
    assert_eq!(client.stats().connected, 1);
}

/// Echoes every connection it accepts until the peer closes, then closes too.
fn spawn_echo(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
}

/// Sends `data` and reads back as many bytes concurrently; returns what came back.
async fn echo_through(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let len = data.len();
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        writer.write_all(&data).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(len);
    reader.read_to_end(&mut back).await.unwrap();
    send.await.unwrap();
    back
}

/// Sends `data`, reads all of it back, and only then half-closes and waits for the server's
/// FIN: nothing is left unread when this side enters TIME-WAIT.
async fn echo_then_close(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let len = data.len();
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        writer.write_all(&data).await.unwrap();
        writer
    });
    let mut back = vec![0u8; len];
    reader.read_exact(&mut back).await.unwrap();
    let mut writer = send.await.unwrap();
    writer.shutdown().await.unwrap();
    assert_eq!(
        reader.read(&mut [0u8; 1]).await.unwrap(),
        0,
        "EOF after the echo"
    );
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_of_one_megabyte_keeps_its_digest() {
    let (server, client) = stacks();
    spawn_echo(TcpListener::bind(&server, server_addr(7)).unwrap());
    let data = pattern(1 << 20, 1);
    let back = within(60, async {
        let stream = TcpStream::connect(&client, server_addr(7)).await.unwrap();
        echo_through(stream, data.clone()).await
    })
    .await;
    assert_eq!(back.len(), data.len());
    assert_eq!(digest(&back), digest(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_send_a_megabyte_at_once() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(9)).unwrap();
    let up = pattern(1 << 20, 2);
    let down = pattern(1 << 20, 3);
    let (got_up, got_down) = within(60, async {
        let exchange = |stream: TcpStream, data: Vec<u8>| async move {
            let (mut reader, mut writer) = stream.into_split();
            let send = tokio::spawn(async move {
                writer.write_all(&data).await.unwrap();
                writer.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            send.await.unwrap();
            got
        };
        let client_side = async {
            let stream = TcpStream::connect(&client, server_addr(9)).await.unwrap();
            exchange(stream, up.clone()).await
        };
        let server_side = async {
            let (stream, _) = listener.accept().await.unwrap();
            exchange(stream, down.clone()).await
        };
        let (got_down, got_up) = tokio::join!(client_side, server_side);
        (got_up, got_down)
    })
    .await;
    assert_eq!(digest(&got_up), digest(&up));
    assert_eq!(digest(&got_down), digest(&down));
}

#[tokio::test]
async fn half_close_still_receives_the_answer() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let server_task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.unwrap();
            assert_eq!(request, b"question");
            // Our side is still open for writing after the peer's FIN.
            stream.write_all(b"answer after your FIN").await.unwrap();
        });
        let mut stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        stream.write_all(b"question").await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(
            stream.write(b"more").await.unwrap_err().kind(),
            ErrorKind::BrokenPipe
        );
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer after your FIN");
        server_task.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_a_stream_closes_it_gracefully() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let data = pattern(300_000, 4);
        let sent = data.clone();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(&sent).await.unwrap();
            // Dropped with most of the data still unsent: it must all arrive before the FIN.
        });
        let mut stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(digest(&got), digest(&data));
        assert_eq!(stream.read(&mut [0u8; 16]).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn abort_resets_the_peer() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let mut stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        stream.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        accepted.read_exact(&mut one).await.unwrap();
        stream.abort();
        let error = accepted.read(&mut one).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);
        assert_eq!(
            accepted.write(b"y").await.unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
    })
    .await;
}

#[tokio::test]
async fn zero_linger_drop_resets_the_peer() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        stream.set_linger(Some(Duration::ZERO)).unwrap();
        drop(stream);
        let error = accepted.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test]
async fn dropping_a_stream_with_unread_data_resets_the_peer() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let mut stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        stream.write_all(b"never read").await.unwrap();
        while accepted.info().map(|info| info.recv_queue).unwrap_or(0) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(accepted);
        let error = stream.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_refused() {
    let (_server, client) = stacks();
    let error = within(10, TcpStream::connect(&client, server_addr(81)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test(start_paused = true)]
async fn connecting_into_a_black_hole_times_out() {
    let (_server, client) = stacks_over(LinkConfig {
        loss: 1.0,
        ..LinkConfig::default()
    });
    // Linux's tcp_syn_retries 6 gives up after about 127 s of (paused, auto-advanced) time.
    let error = within(600, TcpStream::connect(&client, server_addr(80)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut);
}

#[tokio::test]
async fn binding_the_same_address_twice_fails() {
    let (server, _client) = stacks();
    let _first = TcpListener::bind(&server, server_addr(80)).unwrap();
    let error = TcpListener::bind(&server, server_addr(80)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AddrInUse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_connections() {
    let (server, client) = stacks();
    spawn_echo(TcpListener::bind(&server, server_addr(7)).unwrap());
    within(120, async {
        let mut tasks = Vec::new();
        for i in 0..100u8 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let data = pattern(20_000 + usize::from(i) * 100, i);
                let stream = TcpStream::connect(&client, server_addr(7)).await.unwrap();
                let back = echo_then_close(stream, data.clone()).await;
                assert_eq!(digest(&back), digest(&data), "connection {i}");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    assert_eq!(server.stats().accepted, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_survives_a_lossy_link() {
    let (server, client) = stacks_over(LinkConfig {
        loss: 0.02,
        delay: Duration::from_millis(1),
        seed: 7,
    });
    spawn_echo(TcpListener::bind(&server, server_addr(7)).unwrap());
    let data = pattern(256 * 1024, 5);
    let back = within(120, async {
        let stream = TcpStream::connect(&client, server_addr(7)).await.unwrap();
        echo_through(stream, data.clone()).await
    })
    .await;
    assert_eq!(digest(&back), digest(&data));
}

#[tokio::test]
async fn dropping_the_write_half_sends_fin_while_reading_goes_on() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        let (mut reader, writer) = stream.into_split();
        drop(writer);
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        accepted.write_all(b"still here").await.unwrap();
        drop(accepted);
        let mut answer = Vec::new();
        reader.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"still here");
    })
    .await;
}

#[tokio::test]
async fn socket_options_round_trip() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        assert!(stream.nodelay().unwrap());
        stream.set_nodelay(false).unwrap();
        assert!(!stream.nodelay().unwrap());
        stream
            .set_keepalive(Some(tcpstack::tcp::KeepaliveConfig::default()))
            .unwrap();
        stream.set_linger(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(stream.linger().unwrap(), Some(Duration::from_secs(1)));
    })
    .await;
}

#[tokio::test]
async fn dropping_the_stack_fails_pending_calls_instead_of_hanging() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    drop(server);
    let error = within(10, listener.accept()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotConnected);
    drop(client);
}

#[tokio::test]
async fn graceful_shutdown_closes_open_connections() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    within(20, async {
        let mut stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        accepted.write_all(b"bye").await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.map(|_| got)
        });
        server.shutdown(Duration::from_secs(5)).await;
        // The buffered data and then the server's FIN arrive: EOF, not a reset.
        assert_eq!(reader.await.unwrap().unwrap(), b"bye");
        drop(accepted);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_listener_frees_its_port() {
    let (server, client) = stacks();
    drop(TcpListener::bind(&server, server_addr(80)).unwrap());
    let error = within(10, TcpStream::connect(&client, server_addr(80)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    TcpListener::bind(&server, server_addr(80)).unwrap();
}

/// A backend that records when it is dropped (the moment a real one detaches its XDP program
/// or removes its iptables rules).
struct DropRecorder<B> {
    inner: B,
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<B: tcpstack::io::Backend> tcpstack::io::Backend for DropRecorder<B> {
    fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, sink)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.inner.send(frame)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn stats(&self) -> tcpstack::io::BackendStats {
        self.inner.stats()
    }
}

impl<B> Drop for DropRecorder<B> {
    fn drop(&mut self) {
        self.dropped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `shutdown` closes the backend before it returns, although a task (a control socket's, say)
/// still holds a clone of the stack and a connection is still held: what the backend installed
/// goes on the caller's path, not whenever the runtime drops that task. Its counters survive.
#[tokio::test]
async fn shutdown_closes_the_backend_before_returning_whoever_holds_the_stack() {
    let (a, b) = memory::link(LinkConfig::default());
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tcpstack::runtime::Stack::builder()
        .backend(DropRecorder {
            inner: a,
            dropped: dropped.clone(),
        })
        .address(SERVER_IP)
        .seed(1)
        .build()
        .unwrap();
    let client = tcpstack::runtime::Stack::builder()
        .backend(b)
        .address(CLIENT_IP)
        .seed(2)
        .build()
        .unwrap();
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    let held = server.clone();
    let holder = tokio::spawn(async move {
        let _held = held;
        std::future::pending::<()>().await
    });
    let observer = server.clone();
    within(20, async {
        let mut stream = TcpStream::connect(&client, server_addr(80)).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        server.shutdown(Duration::from_secs(1)).await;
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "the backend outlived shutdown"
        );
        assert!(observer.backend_stats().rx_frames >= 3, "counters kept");
        let error = TcpListener::bind(&observer, server_addr(81)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotConnected);
        drop(accepted);
    })
    .await;
    holder.abort();
}
