//! Two endpoints and the two directions of the link between them, run event by event on a
//! virtual clock.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::link::{Link, LinkConfig};
use crate::endpoint::{Endpoint, EndpointConfig};
use crate::wire;

/// The client's address (RFC 2544 benchmarking range).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The server's address.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// A client endpoint and a server endpoint joined by a link, with a virtual clock.
pub struct Network {
    start: Instant,
    now: Instant,
    pub client: Endpoint,
    pub server: Endpoint,
    pub to_server: Link,
    pub to_client: Link,
    /// Prints every packet as it arrives, tcpdump-style, to stderr.
    pub trace: bool,
    scratch: Vec<u8>,
}

impl Network {
    /// Every random choice (ISNs, ports, link impairments) derives from `seed`.
    pub fn new(
        seed: u64,
        endpoint: EndpointConfig,
        to_server: LinkConfig,
        to_client: LinkConfig,
    ) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let start = Instant::now();
        Network {
            start,
            now: start,
            client: Endpoint::new(endpoint.clone(), CLIENT_ADDR, rng.gen(), start),
            server: Endpoint::new(endpoint, SERVER_ADDR, rng.gen(), start),
            to_server: Link::new(to_server, rng.gen()),
            to_client: Link::new(to_client, rng.gen()),
            trace: false,
            scratch: Vec::with_capacity(2048),
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the network was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves everything both endpoints have to send onto the links.
    pub fn transmit(&mut self) {
        while self.client.poll_transmit(self.now, &mut self.scratch) {
            self.to_server.send(self.now, &self.scratch);
        }
        while self.server.poll_transmit(self.now, &mut self.scratch) {
            self.to_client.send(self.now, &self.scratch);
        }
    }

    /// The next instant at which anything happens: a packet arrives or a timer fires.
    pub fn next_event(&self) -> Option<Instant> {
        [
            self.to_server.next_arrival(),
            self.to_client.next_arrival(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves the clock to `at`, or to the next event if that comes first (then returns false:
    /// `step` must run before the clock may pass it).
    pub fn advance_to(&mut self, at: Instant) -> bool {
        match self.next_event() {
            Some(next) if next < at => false,
            _ => {
                self.now = self.now.max(at);
                true
            }
        }
    }

    /// Advances the clock to the next event, delivers what has arrived, fires due timers and
    /// transmits what that produced. False when nothing is scheduled any more.
    pub fn step(&mut self) -> bool {
        self.transmit();
        let Some(next) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(packet) = self.to_server.receive(now) {
            self.print(&packet);
            self.server.handle_packet(&packet, now);
        }
        while let Some(packet) = self.to_client.receive(now) {
            self.print(&packet);
            self.client.handle_packet(&packet, now);
        }
        for endpoint in [&mut self.client, &mut self.server] {
            if endpoint.poll_timeout().is_some_and(|t| t <= now) {
                endpoint.handle_timeout(now);
            }
        }
        self.transmit();
        true
    }

    fn print(&self, packet: &[u8]) {
        if !self.trace {
            return;
        }
        let at = self.elapsed().as_secs_f64();
        match wire::parse_ipv4_tcp(packet) {
            Ok(p) => {
                let t = &p.tcp;
                eprintln!(
                    "{at:12.6} {}:{} > {}:{} [{}] seq {} ack {} win {} len {}{}",
                    p.ip.src,
                    t.src_port,
                    p.ip.dst,
                    t.dst_port,
                    t.flags,
                    t.seq.0,
                    t.ack.0,
                    t.window,
                    p.payload.len(),
                    t.options
                        .sack_blocks()
                        .iter()
                        .map(|b| format!(" sack {}-{}", b.start.0, b.end.0))
                        .collect::<String>()
                );
            }
            Err(error) => eprintln!("{at:12.6} dropped: {error}"),
        }
    }
}
