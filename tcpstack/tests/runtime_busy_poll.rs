//! Busy polling (`StackBuilder::busy_poll`): after sending something the peer answers (here a
//! SYN-ACK) the driver keeps polling its backend for the window instead of sleeping, and then
//! sleeps; after a segment nothing answers (a RST), or without a window, it sleeps at once.
//! Counted in polls of the backend, never timed: the windows are far apart from the margins.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tcpstack::io::{memory, Backend, BackendStats};
use tcpstack::runtime::{Stack, TcpListener};
use tcpstack::wire::{self, SeqNum, TcpFlags, TcpHeader};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// A memory link that counts how often the driver polls it for frames.
struct CountedLink {
    link: memory::MemoryBackend,
    polls: Arc<AtomicU64>,
}

impl Backend for CountedLink {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Poll<std::io::Result<usize>> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.link.poll_recv(cx, sink)
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.link.send(frame)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.link.flush()
    }

    fn reserve(&mut self, endpoint: SocketAddrV4) -> std::io::Result<()> {
        self.link.reserve(endpoint)
    }

    fn stats(&self) -> BackendStats {
        self.link.stats()
    }
}

/// A stack on a counted link with `window`, and the peer's end of the link.
fn stack(window: Duration) -> (Stack, memory::MemoryBackend, Arc<AtomicU64>) {
    let (a, b) = memory::pair();
    let polls = Arc::new(AtomicU64::new(0));
    let link = CountedLink {
        link: a,
        polls: polls.clone(),
    };
    let stack = Stack::builder()
        .backend(link)
        .address(SERVER_IP)
        .busy_poll(window)
        .build()
        .expect("stack");
    (stack, b, polls)
}

const LISTENING: u16 = 80;
const CLOSED: u16 = 9;

/// The peer sends a SYN to `port`: the stack answers with a SYN-ACK if it listens there, with a
/// RST if not.
fn knock(peer: &mut memory::MemoryBackend, port: u16) {
    let syn = TcpHeader {
        src_port: 40000,
        dst_port: port,
        seq: SeqNum(1),
        flags: TcpFlags::SYN,
        window: 1024,
        ..TcpHeader::default()
    };
    let mut frame = Vec::new();
    wire::emit_ethernet_ipv4_tcp(
        memory::MAC_B,
        memory::MAC_A,
        PEER_IP,
        SERVER_IP,
        &syn,
        &[],
        1,
        &mut frame,
    );
    peer.send(&frame).expect("send");
    peer.flush().expect("flush");
}

#[tokio::test]
async fn a_busy_polling_stack_polls_through_its_window_then_sleeps() {
    let (stack, mut peer, polls) = stack(Duration::from_millis(30));
    let _listener = TcpListener::bind(&stack, SocketAddrV4::new(SERVER_IP, LISTENING)).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = polls.load(Ordering::Relaxed);
    knock(&mut peer, LISTENING);
    tokio::time::sleep(Duration::from_millis(15)).await;
    let spinning = polls.load(Ordering::Relaxed) - before;
    // Thousands in practice: every pass of the runtime polls the link again.
    assert!(spinning >= 100, "{spinning} polls within the window");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let settled = polls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let idle = polls.load(Ordering::Relaxed) - settled;
    assert!(idle < 10, "{idle} polls after the window");
    assert_eq!(stack.stats().frames_received, 1);
}

#[tokio::test]
async fn a_reset_expects_no_answer_and_starts_no_window() {
    let (stack, mut peer, polls) = stack(Duration::from_millis(30));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = polls.load(Ordering::Relaxed);
    knock(&mut peer, CLOSED);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let woken = polls.load(Ordering::Relaxed) - before;
    assert!(woken < 10, "{woken} polls for one frame");
    assert_eq!(
        (stack.stats().frames_received, stack.stats().frames_sent),
        (1, 1)
    );
}

#[tokio::test]
async fn without_a_window_the_stack_sleeps_at_once() {
    let (stack, mut peer, polls) = stack(Duration::ZERO);
    let _listener = TcpListener::bind(&stack, SocketAddrV4::new(SERVER_IP, LISTENING)).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = polls.load(Ordering::Relaxed);
    knock(&mut peer, LISTENING);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let woken = polls.load(Ordering::Relaxed) - before;
    assert!(woken < 10, "{woken} polls for one frame");
    assert_eq!(stack.stats().frames_received, 1);
}
