//! Destination MACs for the frames the runtime hands a backend, shared by the AF_XDP and raw
//! backends. Answers go to the MAC the peer last sent from; for a destination never heard from
//! (an active open) the kernel's neighbour table is asked, and when it has no entry the kernel
//! is asked to resolve it while the frames wait here.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::netlink::NeighbourTable;
use crate::wire::{MacAddr, ETHERNET_HEADER_LEN, ETHERTYPE_IPV4};

/// Most peers remembered from received frames; past it the memory starts over (the kernel's
/// table still answers).
const MAX_LEARNED: usize = 16 * 1024;
/// Most frames held for one unresolved destination (the kernel holds 3 skbs per neighbour by
/// default; a SYN and its retransmissions fit).
const MAX_QUEUED_PER_DESTINATION: usize = 16;
const FIRST_RETRY: Duration = Duration::from_millis(2);
const MAX_RETRY: Duration = Duration::from_millis(250);
/// Close to the kernel's 3 ARP probes one second apart.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3);

/// Where a frame's destination MAC stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Send it to this MAC.
    Mac(MacAddr),
    /// A copy is held until the neighbour is resolved; [`Neighbours::poll_resolved`] releases it.
    Queued,
    /// Not an IPv4 frame, or the queue for its destination is full: dropped.
    Dropped,
}

struct Pending {
    frames: Vec<Vec<u8>>,
    started: Instant,
    next_lookup: Instant,
    retry: Duration,
}

pub struct Neighbours {
    local_mac: MacAddr,
    ifindex: u32,
    learned: HashMap<Ipv4Addr, MacAddr>,
    /// The last pair learned or looked up: most frames in a row belong to one peer.
    recent: Option<(Ipv4Addr, MacAddr)>,
    pending: HashMap<Ipv4Addr, Pending>,
    /// The gateway (or the destination itself) each destination asked about goes through.
    next_hops: HashMap<Ipv4Addr, Ipv4Addr>,
    table: Option<NeighbourTable>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Frames given up on because their destination never resolved.
    pub dropped: u64,
}

impl Neighbours {
    pub fn new(local_mac: MacAddr, ifindex: u32) -> Neighbours {
        Neighbours {
            local_mac,
            ifindex,
            learned: HashMap::new(),
            recent: None,
            pending: HashMap::new(),
            next_hops: HashMap::new(),
            table: None,
            timer: None,
            dropped: 0,
        }
    }

    /// Remembers the source MAC of a received IPv4 frame for its source address.
    pub fn learn(&mut self, frame: &[u8]) {
        let (Some(source), Some(mac)) = (ipv4_source(frame), source_mac(frame)) else {
            return;
        };
        if self.recent == Some((source, mac)) || mac[0] & 1 != 0 || mac == [0; 6] {
            return;
        }
        self.remember(source, mac);
    }

    fn remember(&mut self, addr: Ipv4Addr, mac: MacAddr) {
        self.recent = Some((addr, mac));
        if self.learned.get(&addr) == Some(&mac) {
            return;
        }
        if self.learned.len() >= MAX_LEARNED {
            self.learned.clear();
        }
        self.learned.insert(addr, mac);
    }

    /// This host's MAC: the source of every frame sent.
    pub fn local_mac(&self) -> MacAddr {
        self.local_mac
    }

    /// The destination MAC of `frame`; when unknown, keeps a copy until it is.
    pub fn route(&mut self, frame: &[u8], now: Instant) -> Route {
        let Some(destination) = ipv4_destination(frame) else {
            return Route::Dropped;
        };
        if let Some(mac) = self.lookup(destination) {
            return Route::Mac(mac);
        }
        let pending = self.pending.entry(destination).or_insert_with(|| Pending {
            frames: Vec::new(),
            started: now,
            next_lookup: now + FIRST_RETRY,
            retry: FIRST_RETRY,
        });
        if pending.frames.is_empty() {
            let next_hop = self
                .next_hops
                .get(&destination)
                .copied()
                .unwrap_or(destination);
            if let Some(table) = self.table.as_mut() {
                if let Err(error) = table.request_resolution(self.ifindex, next_hop) {
                    tracing::debug!(%destination, %error, "asking the kernel to resolve failed");
                }
            }
        }
        if pending.frames.len() >= MAX_QUEUED_PER_DESTINATION {
            self.dropped += 1;
            return Route::Dropped;
        }
        let mut copy = frame.to_vec();
        write_macs(&mut copy, [0; 6], self.local_mac);
        pending.frames.push(copy);
        Route::Queued
    }

    /// Frames waiting for a neighbour.
    pub fn queued(&self) -> usize {
        self.pending.values().map(|p| p.frames.len()).sum()
    }

    /// Asks the kernel again for the destinations frames wait on, passes every frame whose
    /// destination resolved (MACs written) to `send`, and drops those that waited too long.
    /// Registers `cx` to be woken for the next retry.
    pub fn poll_resolved(&mut self, cx: &mut Context<'_>, send: &mut dyn FnMut(&[u8])) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut next_wakeup: Option<Instant> = None;
        let destinations: Vec<Ipv4Addr> = self.pending.keys().copied().collect();
        for destination in destinations {
            let due = self
                .pending
                .get(&destination)
                .is_some_and(|p| p.next_lookup <= now);
            let resolved = if due { self.lookup(destination) } else { None };
            let Some(pending) = self.pending.get_mut(&destination) else {
                continue;
            };
            if let Some(mac) = resolved {
                for mut frame in pending.frames.drain(..) {
                    write_macs(&mut frame, mac, self.local_mac);
                    send(&frame);
                }
                self.pending.remove(&destination);
                continue;
            }
            if now.duration_since(pending.started) >= GIVE_UP_AFTER {
                self.dropped += pending.frames.len() as u64;
                tracing::debug!(%destination, "no neighbour entry appeared; frames dropped");
                self.pending.remove(&destination);
                continue;
            }
            if due {
                pending.retry = (pending.retry * 2).min(MAX_RETRY);
                pending.next_lookup = now + pending.retry;
            }
            next_wakeup = Some(match next_wakeup {
                Some(at) => at.min(pending.next_lookup),
                None => pending.next_lookup,
            });
        }
        if let Some(at) = next_wakeup {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            timer.as_mut().reset(at);
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }

    fn lookup(&mut self, destination: Ipv4Addr) -> Option<MacAddr> {
        match self.recent {
            Some((addr, mac)) if addr == destination => return Some(mac),
            _ => {}
        }
        if let Some(&mac) = self.learned.get(&destination) {
            self.recent = Some((destination, mac));
            return Some(mac);
        }
        if self.table.is_none() {
            match NeighbourTable::open() {
                Ok(table) => self.table = Some(table),
                Err(error) => {
                    tracing::warn!(%error, "cannot open rtnetlink for neighbour lookups");
                    return None;
                }
            }
        }
        let table = self.table.as_mut()?;
        // Off-link destinations are reached through their gateway's MAC.
        let next_hop = match table.next_hop(destination) {
            Ok(gateway) => gateway.unwrap_or(destination),
            Err(error) => {
                tracing::debug!(%destination, %error, "route lookup failed");
                destination
            }
        };
        if self.next_hops.len() >= MAX_LEARNED {
            self.next_hops.clear();
        }
        self.next_hops.insert(destination, next_hop);
        match table.lookup(self.ifindex, next_hop) {
            Ok(Some(mac)) => {
                self.remember(destination, mac);
                Some(mac)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(%destination, %error, "neighbour lookup failed");
                None
            }
        }
    }

    /// Tells the resolver about a neighbour directly (tests, static setups).
    pub fn insert(&mut self, addr: Ipv4Addr, mac: MacAddr) {
        self.remember(addr, mac);
    }
}

pub fn write_macs(frame: &mut [u8], destination: MacAddr, source: MacAddr) {
    if let Some(header) = frame.get_mut(..12) {
        header[..6].copy_from_slice(&destination);
        header[6..12].copy_from_slice(&source);
    }
}

fn is_ipv4(frame: &[u8]) -> bool {
    frame.len() >= ETHERNET_HEADER_LEN + 20
        && u16::from_be_bytes([frame[12], frame[13]]) == ETHERTYPE_IPV4
}

fn source_mac(frame: &[u8]) -> Option<MacAddr> {
    frame.get(6..12)?.try_into().ok()
}

/// The IPv4 destination of an Ethernet frame.
pub fn ipv4_destination(frame: &[u8]) -> Option<Ipv4Addr> {
    if !is_ipv4(frame) {
        return None;
    }
    let at = ETHERNET_HEADER_LEN + 16;
    let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn ipv4_source(frame: &[u8]) -> Option<Ipv4Addr> {
    if !is_ipv4(frame) {
        return None;
    }
    let at = ETHERNET_HEADER_LEN + 12;
    let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    const LOCAL: MacAddr = [0x02, 0, 0, 0, 0, 1];
    const PEER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 2];
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const US: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn frame(src_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; ETHERNET_HEADER_LEN + 20];
        f[6..12].copy_from_slice(&src_mac);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[26..30].copy_from_slice(&src.octets());
        f[30..34].copy_from_slice(&dst.octets());
        f
    }

    #[tokio::test]
    async fn answers_go_to_the_mac_the_peer_sent_from() {
        let mut n = Neighbours::new(LOCAL, 0);
        n.learn(&frame(PEER_MAC, PEER, US));
        let reply = frame([0; 6], US, PEER);
        assert_eq!(n.route(&reply, Instant::now()), Route::Mac(PEER_MAC));
    }

    #[tokio::test]
    async fn a_peer_that_moves_is_followed() {
        let mut n = Neighbours::new(LOCAL, 0);
        let other_peer = Ipv4Addr::new(198, 18, 0, 3);
        n.learn(&frame(PEER_MAC, PEER, US));
        n.learn(&frame([0x02, 0, 0, 0, 0, 3], other_peer, US));
        let moved = [0x02, 0, 0, 0, 0, 9];
        n.learn(&frame(moved, PEER, US));
        assert_eq!(
            n.route(&frame([0; 6], US, PEER), Instant::now()),
            Route::Mac(moved)
        );
        assert_eq!(
            n.route(&frame([0; 6], US, other_peer), Instant::now()),
            Route::Mac([0x02, 0, 0, 0, 0, 3])
        );
        assert_eq!(
            n.route(&frame([0; 6], US, PEER), Instant::now()),
            Route::Mac(moved)
        );
    }

    #[tokio::test]
    async fn multicast_sources_are_not_learned() {
        let mut n = Neighbours::new(LOCAL, 0);
        n.learn(&frame([0x01, 0, 0x5e, 0, 0, 1], PEER, US));
        n.learn(&frame([0; 6], PEER, US));
        assert!(n.learned.is_empty());
    }

    #[tokio::test]
    async fn non_ipv4_frames_are_dropped() {
        let mut n = Neighbours::new(LOCAL, 0);
        let mut arp = frame([0; 6], US, PEER);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(n.route(&arp, Instant::now()), Route::Dropped);
        assert_eq!(n.route(&[0u8; 10], Instant::now()), Route::Dropped);
    }

    #[tokio::test]
    async fn queued_frames_leave_once_resolved() {
        // ifindex 0 matches no interface, so the kernel never knows the neighbour.
        let mut n = Neighbours::new(LOCAL, 0);
        let syn = frame([0; 6], US, PEER);
        assert_eq!(n.route(&syn, Instant::now()), Route::Queued);
        assert_eq!(n.queued(), 1);
        n.insert(PEER, PEER_MAC);
        tokio::time::sleep(FIRST_RETRY * 2).await;
        let mut sent = Vec::new();
        std::future::poll_fn(|cx| {
            n.poll_resolved(cx, &mut |f| sent.push(f.to_vec()));
            Poll::Ready(())
        })
        .await;
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0][0..6], &PEER_MAC);
        assert_eq!(&sent[0][6..12], &LOCAL);
        assert_eq!(n.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unresolved_frames_are_dropped_after_a_while() {
        let mut n = Neighbours::new(LOCAL, 0);
        for _ in 0..MAX_QUEUED_PER_DESTINATION + 2 {
            let syn = frame([0; 6], US, PEER);
            n.route(&syn, Instant::now());
        }
        assert_eq!(n.queued(), MAX_QUEUED_PER_DESTINATION);
        assert_eq!(n.dropped, 2);
        tokio::time::advance(GIVE_UP_AFTER + Duration::from_millis(1)).await;
        std::future::poll_fn(|cx| {
            n.poll_resolved(cx, &mut |_| panic!("nothing resolves"));
            Poll::Ready(())
        })
        .await;
        assert_eq!(n.queued(), 0);
        assert_eq!(n.dropped, MAX_QUEUED_PER_DESTINATION as u64 + 2);
    }
}
