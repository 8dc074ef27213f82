//! Two connections over a seeded lossy link (loss, duplication, reordering by random delay):
//! every byte arrives once and in order, both sides reach CLOSED, no timer stays armed.
//! The endpoint's simulator does this at scale; this keeps the state machine honest on its own.

use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

struct InFlight {
    at: Instant,
    order: u64,
    to_server: bool,
    segment: Segment,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

struct Link {
    rng: SmallRng,
    loss: f64,
    duplicate: f64,
    delay: Duration,
    jitter: Duration,
    queue: BinaryHeap<InFlight>,
    order: u64,
}

impl Link {
    fn push(&mut self, now: Instant, to_server: bool, segment: Segment) {
        if std::env::var("LOSSY_TRACE").is_ok() {
            let h = &segment.header;
            eprintln!(
                "{:?} {} {} seq {} ack {} win {} len {}",
                now,
                if to_server { "C>S" } else { "S>C" },
                h.flags,
                h.seq,
                h.ack,
                h.window,
                segment.payload.len()
            );
        }
        if self.rng.gen_bool(self.loss) {
            if std::env::var("LOSSY_TRACE").is_ok() {
                eprintln!("   lost");
            }
            return;
        }
        let copies = if self.rng.gen_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.jitter.mul_f64(self.rng.gen::<f64>());
            self.order += 1;
            self.queue.push(InFlight {
                at: now + self.delay + jitter,
                order: self.order,
                to_server,
                segment: segment.clone(),
            });
        }
    }
}

struct Side {
    conn: Connection,
    data: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    closed_write: bool,
}

impl Side {
    fn pump(&mut self) {
        if self.sent < self.data.len() {
            self.sent += self.conn.send(&self.data[self.sent..]).unwrap_or(0);
        }
        if self.sent == self.data.len() && !self.closed_write {
            self.conn.close();
            self.closed_write = true;
        }
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = self.conn.recv(&mut buf) {
            if n == 0 {
                break;
            }
            self.received.extend_from_slice(&buf[..n]);
        }
    }
}

fn run(seed: u64, loss: f64, client_bytes: usize, server_bytes: usize) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let config = Config {
        recv_buffer: [4096, 20_000, 262_144][rng.gen_range(0..3)],
        send_buffer: [3000, 65_536][rng.gen_range(0..2)],
        nodelay: rng.gen_bool(0.5),
        ..Config::default()
    };
    let start = Instant::now();
    let mut now = start;
    let client_iss = rng.gen::<u32>();
    let server_iss = rng.gen::<u32>();
    let client_tuple = FourTuple {
        local: tuple().remote,
        remote: tuple().local,
    };
    let mut link = Link {
        rng: SmallRng::seed_from_u64(seed ^ 0xdead_beef),
        loss,
        duplicate: loss / 2.0,
        delay: ms(rng.gen_range(1..30)),
        jitter: ms(rng.gen_range(0..20)),
        queue: BinaryHeap::new(),
        order: 0,
    };
    let mut client = Side {
        conn: Connection::connect(config.clone(), client_tuple, SeqNum(client_iss), now),
        data: (0..client_bytes)
            .map(|i| (i * 13 + i / 256) as u8)
            .collect(),
        sent: 0,
        received: Vec::new(),
        closed_write: false,
    };
    let mut server: Option<Side> = None;
    let server_data: Vec<u8> = (0..server_bytes).map(|i| (i * 7 + 3) as u8).collect();

    for _ in 0..2_000_000 {
        client.pump();
        while let Some(s) = client.conn.poll_transmit(now) {
            link.push(now, true, s);
        }
        if let Some(server) = server.as_mut() {
            server.pump();
            while let Some(s) = server.conn.poll_transmit(now) {
                link.push(now, false, s);
            }
        }
        let next_timer = [
            client.conn.poll_timeout(),
            server.as_ref().and_then(|s| s.conn.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        let next_packet = link.queue.peek().map(|p| p.at);
        let Some(at) = [next_timer, next_packet].into_iter().flatten().min() else {
            break;
        };
        now = now.max(at);
        assert!(
            now - start < Duration::from_secs(3600),
            "seed {seed}: no progress in an hour"
        );
        if next_packet.is_some_and(|p| p <= now) {
            let Some(p) = link.queue.pop() else { break };
            if p.to_server {
                match server.as_mut() {
                    Some(server) => {
                        server
                            .conn
                            .handle_segment(&p.segment.header, &p.segment.payload, now)
                    }
                    None if p.segment.header.flags == TcpFlags::SYN => {
                        let conn = Connection::accept(
                            config.clone(),
                            tuple(),
                            &p.segment.header,
                            SeqNum(server_iss),
                            now,
                        );
                        server = Some(Side {
                            conn,
                            data: server_data.clone(),
                            sent: 0,
                            received: Vec::new(),
                            closed_write: false,
                        });
                    }
                    None => {}
                }
            } else {
                client
                    .conn
                    .handle_segment(&p.segment.header, &p.segment.payload, now);
            }
        } else {
            client.conn.handle_timeout(now);
            if let Some(server) = server.as_mut() {
                server.conn.handle_timeout(now);
            }
        }
        let server_done = server
            .as_ref()
            .is_some_and(|s| s.conn.state() == State::Closed);
        if client.conn.state() == State::Closed && server_done && link.queue.is_empty() {
            break;
        }
    }
    let server = server.unwrap_or_else(|| panic!("seed {seed}: the SYN never arrived"));
    if server.received != client.data {
        let diff = server
            .received
            .iter()
            .zip(&client.data)
            .position(|(a, b)| a != b);
        eprintln!(
            "seed {seed}: got {} of {} bytes, first difference at {diff:?}; client {:?} {:?}, server {:?} {:?}; config {config:?}",
            server.received.len(),
            client.data.len(),
            client.conn.state(),
            client.conn.error(),
            server.conn.state(),
            server.conn.error(),
        );
    }
    assert!(
        server.received == client.data,
        "seed {seed}: client → server bytes differ"
    );
    assert!(
        client.received == server.data,
        "seed {seed}: server → client bytes differ"
    );
    assert_eq!(client.conn.state(), State::Closed, "seed {seed}");
    assert_eq!(server.conn.state(), State::Closed, "seed {seed}");
    assert_eq!(client.conn.error(), None, "seed {seed}");
    assert_eq!(server.conn.error(), None, "seed {seed}");
    assert_eq!(client.conn.poll_timeout(), None, "seed {seed}");
    assert_eq!(server.conn.poll_timeout(), None, "seed {seed}");
}

#[test]
fn clean_link_transfers_both_ways() {
    for seed in 0..10 {
        run(seed, 0.0, 50_000, 30_000);
    }
}

#[test]
fn lossy_duplicating_reordering_link_delivers_everything_once() {
    // LOSSY_SEED=n replays one seed; LOSSY_SEEDS=n runs more of them; LOSSY_MAX_BYTES=n sends
    // up to n bytes each way.
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds = match (env("LOSSY_SEED"), env("LOSSY_SEEDS")) {
        (Some(seed), _) => seed..seed + 1,
        (None, Some(count)) => 0..count,
        (None, None) => 0..60,
    };
    for seed in seeds {
        let mut rng = SmallRng::seed_from_u64(seed);
        let loss = [0.01, 0.05, 0.1, 0.2][rng.gen_range(0..4)];
        let max_bytes = env("LOSSY_MAX_BYTES").map_or(60_000, |n| n as usize);
        run(
            seed,
            loss,
            rng.gen_range(0..max_bytes),
            rng.gen_range(0..max_bytes),
        );
    }
}
