//! One direction of a simulated link: a bottleneck queue in front of a serialising transmitter,
//! then a propagation delay, with seeded loss, duplication, reordering and corruption.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How one direction of a link behaves. Probabilities are per packet, in `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Transmitter rate in bit/s; `None` sends every packet the instant it arrives.
    pub bandwidth_bps: Option<u64>,
    /// Packets the bottleneck queue holds (the one on the wire included) before it tail-drops.
    pub queue_packets: usize,
    pub loss: f64,
    pub duplicate: f64,
    /// Fraction of packets held back by an extra random delay up to `reorder_delay`.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Fraction of packets with one bit flipped. One flip is always caught by the Internet
    /// checksum; several can cancel out, so the simulator never makes more than one.
    pub corrupt: f64,
    /// Scripted losses on top of the random ones.
    pub drop_pattern: Option<DropPattern>,
    /// A scripted stall of the path (e.g. a link-layer retransmission burst or a route change).
    pub delay_spike: Option<DelaySpike>,
}

/// Packets `first..first + count` (numbered as for [`DropPattern`]) arrive `extra` late, and
/// the link stays first-in first-out behind them: what follows waits for them. No packet is
/// lost, so a sender that times out meanwhile did so spuriously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelaySpike {
    pub first: u64,
    pub count: u64,
    pub extra: Duration,
}

/// Deterministic loss: the packets handed to the link are numbered from 0, and packet `n` is
/// dropped when `n % period` is one of `offsets` (and `n >= period`, so that the handshake
/// and the first window pass).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropPattern {
    pub period: u64,
    pub offsets: Vec<u64>,
}

impl DropPattern {
    fn drops(&self, n: u64) -> bool {
        self.period > 0 && n >= self.period && self.offsets.contains(&(n % self.period))
    }
}

impl Default for LinkConfig {
    /// A clean 100 Mbit/s link with 5 ms one-way delay and a 100-packet queue.
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(5),
            bandwidth_bps: Some(100_000_000),
            queue_packets: 100,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            corrupt: 0.0,
            drop_pattern: None,
            delay_spike: None,
        }
    }
}

impl LinkConfig {
    /// A link that delivers everything after `delay`, with no rate limit.
    pub fn ideal(delay: Duration) -> Self {
        LinkConfig {
            delay,
            bandwidth_bps: None,
            ..LinkConfig::default()
        }
    }
}

/// What a link did with the packets it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub delivered: u64,
    pub bytes_delivered: u64,
    pub lost: u64,
    pub queue_drops: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// The most packets the bottleneck queue held at once (the one on the wire included).
    pub max_queue: u64,
}

struct InFlight {
    arrival: Instant,
    /// Breaks ties between packets due at the same instant: first sent, first delivered.
    order: u64,
    packet: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
/// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest arrival first.
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.arrival, other.order).cmp(&(self.arrival, self.order))
    }
}

/// One direction of a simulated link.
pub struct Link {
    config: LinkConfig,
    rng: SmallRng,
    /// When each packet in the bottleneck queue finishes serialising, oldest first.
    departures: VecDeque<Instant>,
    in_flight: BinaryHeap<InFlight>,
    next_order: u64,
    /// The arrival of the last spiked packet, which later ones may not overtake.
    spike_floor: Option<Instant>,
    stats: LinkStats,
}

impl Link {
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Link {
            config,
            rng: SmallRng::seed_from_u64(seed),
            departures: VecDeque::new(),
            in_flight: BinaryHeap::new(),
            next_order: 0,
            spike_floor: None,
            stats: LinkStats::default(),
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Changes how the link behaves from now on (a route change, a new loss rate); packets
    /// already on the link keep their arrival times.
    pub fn config_mut(&mut self) -> &mut LinkConfig {
        &mut self.config
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Packets sent and not yet delivered or dropped.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Hands a packet to the link at `now`.
    pub fn send(&mut self, now: Instant, packet: &[u8]) {
        let n = self.stats.sent;
        self.stats.sent += 1;
        if self
            .config
            .drop_pattern
            .as_ref()
            .is_some_and(|pattern| pattern.drops(n))
        {
            self.stats.lost += 1;
            return;
        }
        if self.chance(self.config.loss) {
            self.stats.lost += 1;
            return;
        }
        let Some(departure) = self.enqueue(now, packet.len()) else {
            self.stats.queue_drops += 1;
            return;
        };
        let copies = if self.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut copy = packet.to_vec();
            if !copy.is_empty() && self.chance(self.config.corrupt) {
                self.stats.corrupted += 1;
                let bit = self.rng.gen_range(0..copy.len() * 8);
                copy[bit / 8] ^= 1 << (bit % 8);
            }
            let mut arrival = departure + self.config.delay;
            if let Some(spike) = self.config.delay_spike {
                if (spike.first..spike.first + spike.count).contains(&n) {
                    arrival += spike.extra;
                    self.spike_floor = Some(arrival);
                }
                arrival = arrival.max(self.spike_floor.unwrap_or(arrival));
            }
            if self.chance(self.config.reorder) {
                self.stats.reordered += 1;
                let extra = self.config.reorder_delay.as_nanos() as u64;
                arrival += Duration::from_nanos(self.rng.gen_range(0..=extra));
            }
            let order = self.next_order;
            self.next_order += 1;
            self.in_flight.push(InFlight {
                arrival,
                order,
                packet: copy,
            });
        }
    }

    /// When the next packet arrives at the far end.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|p| p.arrival)
    }

    /// The next packet that has arrived by `now`.
    pub fn receive(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_arrival()? > now {
            return None;
        }
        let packet = self.in_flight.pop()?.packet;
        self.stats.delivered += 1;
        self.stats.bytes_delivered += packet.len() as u64;
        Some(packet)
    }

    /// Puts a packet of `len` bytes in the bottleneck queue; returns when it has been serialised,
    /// or `None` when the queue is full (tail drop).
    fn enqueue(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(bps) = self.config.bandwidth_bps.filter(|&bps| bps > 0) else {
            return Some(now);
        };
        while self.departures.front().is_some_and(|&t| t <= now) {
            self.departures.pop_front();
        }
        if self.departures.len() >= self.config.queue_packets.max(1) {
            return None;
        }
        let start = self.departures.back().map_or(now, |&t| t.max(now));
        let nanos = (len as u128 * 8 * 1_000_000_000).div_ceil(u128::from(bps));
        let departure = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.departures.push_back(departure);
        self.stats.max_queue = self.stats.max_queue.max(self.departures.len() as u64);
        Some(departure)
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.gen_bool(probability.min(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(link: &mut Link, now: Instant) -> Vec<(Instant, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(at) = link.next_arrival() {
            let p = link.receive(at.max(now)).expect("due packet");
            out.push((at, p));
        }
        out
    }

    #[test]
    fn delivers_after_delay_in_order() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(Duration::from_millis(7)), 1);
        link.send(t0, b"one");
        link.send(t0, b"two");
        assert_eq!(link.next_arrival(), Some(t0 + Duration::from_millis(7)));
        assert_eq!(link.receive(t0), None, "nothing arrives before the delay");
        let got = drain(&mut link, t0);
        assert_eq!(got[0].1, b"one");
        assert_eq!(got[1].1, b"two");
        assert_eq!(link.stats().delivered, 2);
    }

    #[test]
    fn bandwidth_serialises_and_queue_tail_drops() {
        let t0 = Instant::now();
        let config = LinkConfig {
            delay: Duration::ZERO,
            bandwidth_bps: Some(8_000_000), // 1 byte per microsecond
            queue_packets: 2,
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 1);
        for _ in 0..3 {
            link.send(t0, &[0; 1000]);
        }
        assert_eq!(link.stats().queue_drops, 1);
        assert_eq!(link.stats().max_queue, 2);
        let got = drain(&mut link, t0);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, t0 + Duration::from_millis(1));
        assert_eq!(got[1].0, t0 + Duration::from_millis(2));
        // Once the first packet has left, the queue has room again.
        link.send(t0 + Duration::from_millis(1), &[0; 1000]);
        assert_eq!(link.stats().queue_drops, 1);
    }

    #[test]
    fn corruption_flips_exactly_one_bit() {
        let t0 = Instant::now();
        let config = LinkConfig {
            corrupt: 1.0,
            ..LinkConfig::ideal(Duration::ZERO)
        };
        let mut link = Link::new(config, 9);
        let original = vec![0x5a; 64];
        for _ in 0..50 {
            link.send(t0, &original);
        }
        for (_, p) in drain(&mut link, t0) {
            let flipped: u32 = p
                .iter()
                .zip(&original)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
        }
    }

    #[test]
    fn impairments_follow_their_rates_and_the_seed() {
        let t0 = Instant::now();
        let config = LinkConfig {
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.2,
            ..LinkConfig::ideal(Duration::from_millis(1))
        };
        let run = |seed| {
            let mut link = Link::new(config.clone(), seed);
            for i in 0..10_000u32 {
                link.send(t0, &i.to_be_bytes());
            }
            let order: Vec<Vec<u8>> = drain(&mut link, t0).into_iter().map(|(_, p)| p).collect();
            (link.stats(), order)
        };
        let (stats, order) = run(42);
        assert!((800..1200).contains(&stats.lost), "{stats:?}");
        assert!((700..1100).contains(&stats.duplicated), "{stats:?}");
        assert!((1500..2200).contains(&stats.reordered), "{stats:?}");
        assert_eq!(stats.delivered, 10_000 - stats.lost + stats.duplicated);
        assert!(
            order.windows(2).any(|w| w[0] > w[1]),
            "some packets overtake others"
        );
        assert_eq!(run(42).1, order, "the same seed replays the same run");
        assert_ne!(run(43).1, order);
    }

    #[test]
    fn a_delay_spike_holds_its_packets_and_everything_behind_them() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(5);
        let extra = Duration::from_millis(300);
        let config = LinkConfig {
            delay_spike: Some(DelaySpike {
                first: 1,
                count: 2,
                extra,
            }),
            ..LinkConfig::ideal(delay)
        };
        let mut link = Link::new(config, 1);
        for i in 0..4u8 {
            link.send(t0 + Duration::from_millis(u64::from(i)), &[i]);
        }
        let got = drain(&mut link, t0);
        let arrivals: Vec<_> = got.iter().map(|(at, p)| (*at - t0, p[0])).collect();
        assert_eq!(
            arrivals,
            [
                (delay, 0),
                (Duration::from_millis(1) + delay + extra, 1),
                (Duration::from_millis(2) + delay + extra, 2),
                (Duration::from_millis(2) + delay + extra, 3),
            ]
        );
        assert_eq!(link.stats().lost, 0);
    }
}
