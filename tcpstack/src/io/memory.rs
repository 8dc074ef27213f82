//! An in-memory Ethernet link for tests: two connected [`MemoryBackend`]s, each the other's
//! peer, with optional seeded loss and a fixed one-way delay. No privileges, no sockets.
//!
//! MACs are fixed ([`MAC_A`], [`MAC_B`]): a backend writes its own MAC as the source and its
//! peer's as the destination of every frame it sends, whatever the frame carried.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, Sleep};

use super::{Backend, BackendStats};
use crate::wire::{MacAddr, ETHERNET_HEADER_LEN};

/// The MAC of the first backend returned by [`link`].
pub const MAC_A: MacAddr = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
/// The MAC of the second backend returned by [`link`].
pub const MAC_B: MacAddr = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];

/// Most spare frame buffers a backend keeps for reuse.
const FREE_BUFFERS: usize = 1024;

/// How the link misbehaves; the default is a perfect link.
#[derive(Clone, Debug, Default)]
pub struct LinkConfig {
    /// Probability in [0, 1] that a frame is dropped, drawn per frame in each direction.
    pub loss: f64,
    /// One-way delay added to every frame.
    pub delay: Duration,
    /// Seeds the loss decisions, so a test replays the same drops.
    pub seed: u64,
}

/// A perfect link: no loss, no delay.
pub fn pair() -> (MemoryBackend, MemoryBackend) {
    link(LinkConfig::default())
}

/// Two backends joined by a link that behaves as `config` says in both directions.
pub fn link(config: LinkConfig) -> (MemoryBackend, MemoryBackend) {
    let a_to_b = Arc::new(Mutex::new(Queue::default()));
    let b_to_a = Arc::new(Mutex::new(Queue::default()));
    let a = MemoryBackend::new(MAC_A, MAC_B, b_to_a.clone(), a_to_b.clone(), &config, 0);
    let b = MemoryBackend::new(MAC_B, MAC_A, a_to_b, b_to_a, &config, 1);
    (a, b)
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<InFlight>,
    /// The receiving backend's driver, woken when frames arrive.
    waker: Option<Waker>,
}

struct InFlight {
    deliver_at: Option<Instant>,
    bytes: Vec<u8>,
}

/// One end of an in-memory link.
pub struct MemoryBackend {
    mac: MacAddr,
    peer_mac: MacAddr,
    rx: Arc<Mutex<Queue>>,
    tx: Arc<Mutex<Queue>>,
    /// Frames queued by `send`, handed to the peer on `flush`.
    batch: Vec<InFlight>,
    /// Frames taken from `rx`, delivered to the sink outside the queue's lock.
    arrived: Vec<Vec<u8>>,
    free: Vec<Vec<u8>>,
    loss: f64,
    delay: Duration,
    rng: SmallRng,
    timer: Option<Pin<Box<Sleep>>>,
    stats: BackendStats,
}

impl MemoryBackend {
    fn new(
        mac: MacAddr,
        peer_mac: MacAddr,
        rx: Arc<Mutex<Queue>>,
        tx: Arc<Mutex<Queue>>,
        config: &LinkConfig,
        direction: u64,
    ) -> Self {
        MemoryBackend {
            mac,
            peer_mac,
            rx,
            tx,
            batch: Vec::new(),
            arrived: Vec::new(),
            free: Vec::new(),
            loss: config.loss.clamp(0.0, 1.0),
            delay: config.delay,
            rng: SmallRng::seed_from_u64(
                config.seed ^ direction.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            timer: None,
            stats: BackendStats::default(),
        }
    }

    /// This end's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic elsewhere cannot leave a queue of whole frames inconsistent.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Backend for MemoryBackend {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        let now = Instant::now();
        let mut next_deadline = None;
        {
            let mut rx = lock(&self.rx);
            while let Some(front) = rx.frames.front() {
                match front.deliver_at {
                    Some(at) if at > now => {
                        next_deadline = Some(at);
                        break;
                    }
                    _ => {}
                }
                if let Some(frame) = rx.frames.pop_front() {
                    self.arrived.push(frame.bytes);
                }
            }
            if self.arrived.is_empty() {
                match &rx.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => rx.waker = Some(cx.waker().clone()),
                }
            }
        }
        if self.arrived.is_empty() {
            if let Some(at) = next_deadline {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                timer.as_mut().reset(at);
                if timer.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            }
            return Poll::Pending;
        }
        let count = self.arrived.len();
        for frame in self.arrived.drain(..) {
            self.stats.rx_bytes += frame.len() as u64;
            sink(&frame);
            if self.free.len() < FREE_BUFFERS {
                self.free.push(frame);
            }
        }
        self.stats.rx_frames += count as u64;
        Poll::Ready(Ok(count))
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < ETHERNET_HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than an Ethernet header",
            ));
        }
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            self.stats.tx_dropped += 1;
            return Ok(());
        }
        let mut bytes = self.free.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(frame);
        bytes[0..6].copy_from_slice(&self.peer_mac);
        bytes[6..12].copy_from_slice(&self.mac);
        let deliver_at = (!self.delay.is_zero()).then(|| Instant::now() + self.delay);
        self.batch.push(InFlight { deliver_at, bytes });
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += frame.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let waker = {
            let mut tx = lock(&self.tx);
            tx.frames.extend(self.batch.drain(..));
            tx.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn frame(tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETHERNET_HEADER_LEN + 4];
        f[12] = 0x08;
        f[ETHERNET_HEADER_LEN] = tag;
        f
    }

    async fn recv_all(backend: &mut MemoryBackend) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        poll_fn(|cx| backend.poll_recv(cx, &mut |f| got.push(f.to_vec())))
            .await
            .expect("memory link never fails");
        got
    }

    #[tokio::test]
    async fn frames_cross_in_order_with_link_macs() {
        let (mut a, mut b) = pair();
        a.send(&frame(1)).unwrap();
        a.send(&frame(2)).unwrap();
        a.flush().unwrap();
        let got = recv_all(&mut b).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][ETHERNET_HEADER_LEN], 1);
        assert_eq!(got[1][ETHERNET_HEADER_LEN], 2);
        assert_eq!(&got[0][0..6], &MAC_B);
        assert_eq!(&got[0][6..12], &MAC_A);
        assert_eq!(a.stats().tx_frames, 2);
        assert_eq!(b.stats().rx_frames, 2);
    }

    #[tokio::test]
    async fn nothing_crosses_before_flush() {
        let (mut a, mut b) = pair();
        a.send(&frame(1)).unwrap();
        let pending = poll_fn(|cx| Poll::Ready(b.poll_recv(cx, &mut |_| {}).is_pending())).await;
        assert!(pending);
        a.flush().unwrap();
        assert_eq!(recv_all(&mut b).await.len(), 1);
    }

    #[tokio::test]
    async fn full_loss_drops_everything_and_counts_it() {
        let (mut a, _b) = link(LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        });
        for _ in 0..10 {
            a.send(&frame(0)).unwrap();
        }
        a.flush().unwrap();
        assert_eq!(a.stats().tx_dropped, 10);
        assert_eq!(a.stats().tx_frames, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_frames_back() {
        let (mut a, mut b) = link(LinkConfig {
            delay: Duration::from_millis(50),
            ..LinkConfig::default()
        });
        let start = Instant::now();
        a.send(&frame(7)).unwrap();
        a.flush().unwrap();
        let got = recv_all(&mut b).await;
        assert_eq!(got.len(), 1);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn runt_frames_are_refused() {
        let (mut a, _b) = pair();
        assert_eq!(
            a.send(&[0u8; 4]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
