//! The tokio-shaped API over an in-memory link: handshakes, data, closes, errors.

mod runtime_support;

use std::io::ErrorKind;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use runtime_support::*;
use tcpstack::io::memory::{self, LinkConfig};
use tcpstack::io::Backend;
use tcpstack::runtime::{Stack, TcpListener, TcpStream};
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

/// One end of a memory link that shows what a real link does around the stack: its `reserve`
/// fails while `refuse_reserve` is set (a full XDP map, a missing iptables), and `dropped` is
/// set when it is dropped (the moment a real one detaches its XDP program or removes its
/// iptables rules).
struct ProbedLink {
    link: memory::MemoryBackend,
    refuse_reserve: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl ProbedLink {
    fn new(link: memory::MemoryBackend) -> Self {
        ProbedLink {
            link,
            refuse_reserve: Arc::default(),
            dropped: Arc::default(),
        }
    }
}

impl Backend for ProbedLink {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Poll<std::io::Result<usize>> {
        self.link.poll_recv(cx, sink)
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.link.send(frame)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.link.flush()
    }

    fn reserve(&mut self, endpoint: SocketAddrV4) -> std::io::Result<()> {
        if self.refuse_reserve.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                ErrorKind::OutOfMemory,
                "the reserved-endpoint map is full",
            ));
        }
        self.link.reserve(endpoint)
    }

    fn stats(&self) -> tcpstack::io::BackendStats {
        self.link.stats()
    }
}

impl Drop for ProbedLink {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_bind_the_link_refuses_leaves_nothing_listening() {
    let (a, b) = memory::pair();
    let link = ProbedLink::new(a);
    let refuse = link.refuse_reserve.clone();
    refuse.store(true, Ordering::SeqCst);
    let server = Stack::builder()
        .backend(link)
        .address(SERVER_IP)
        .build()
        .unwrap();
    let client = Stack::builder()
        .backend(b)
        .address(CLIENT_IP)
        .build()
        .unwrap();

    let error = TcpListener::bind(&server, server_addr(80)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::OutOfMemory, "the link's own error");
    // Nothing answers SYNs on the port...
    let error = within(10, TcpStream::connect(&client, server_addr(80)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    // ...and once the link can steer it, the port binds (not "address in use") and serves.
    refuse.store(false, Ordering::SeqCst);
    let listener = TcpListener::bind(&server, server_addr(80)).unwrap();
    let (stream, accepted) = within(10, async {
        tokio::join!(
            TcpStream::connect(&client, server_addr(80)),
            listener.accept()
        )
    })
    .await;
    assert_eq!(accepted.unwrap().1, stream.unwrap().local_addr().unwrap());
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

#[tokio::test]
async fn readable_waits_for_data_and_for_the_fin() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(7)).unwrap();
    let (mut stream, (accepted, _)) = within(10, async {
        tokio::join!(
            async { TcpStream::connect(&client, server_addr(7)).await.unwrap() },
            async { listener.accept().await.unwrap() }
        )
    })
    .await;
    let quiet = tokio::time::timeout(Duration::from_millis(200), accepted.readable()).await;
    assert!(quiet.is_err(), "readable before the peer sent anything");

    stream.write_all(b"x").await.unwrap();
    within(10, accepted.readable()).await.unwrap();
    within(10, accepted.readable()).await.unwrap();
    let (mut reader, _writer) = accepted.into_split();
    let mut byte = [0u8; 1];
    assert_eq!(reader.read(&mut byte).await.unwrap(), 1);
    let quiet = tokio::time::timeout(Duration::from_millis(200), reader.readable()).await;
    assert!(quiet.is_err(), "readable again once the data was read");

    stream.shutdown().await.unwrap();
    within(10, reader.readable()).await.unwrap();
    assert_eq!(reader.read(&mut byte).await.unwrap(), 0, "the FIN");
}

/// `shutdown` closes the backend before it returns, although a task (a control socket's, say)
/// still holds a clone of the stack and a connection is still held: what the backend installed
/// goes on the caller's path, not whenever the runtime drops that task. Its counters survive.
#[tokio::test]
async fn shutdown_closes_the_backend_before_returning_whoever_holds_the_stack() {
    let (a, b) = memory::link(LinkConfig::default());
    let link = ProbedLink::new(a);
    let dropped = link.dropped.clone();
    let server = Stack::builder()
        .backend(link)
        .address(SERVER_IP)
        .seed(1)
        .build()
        .unwrap();
    let client = Stack::builder()
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
            dropped.load(Ordering::SeqCst),
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
