//! The table of connections: demultiplexing by 4-tuple, listeners with accept and half-open
//! queues, TIME-WAIT entries, RSTs for strays, ISN secrets and counters. Sans-IO: takes IPv4
//! packets and a clock, returns IPv4 packets and events.
//!
//! Driving it: feed packets to [`Endpoint::handle_packet`], call [`Endpoint::handle_timeout`] at
//! [`Endpoint::poll_timeout`], drain [`Endpoint::poll_transmit`] until it returns false and
//! [`Endpoint::poll_event`] until `None` after each of those and after using a connection through
//! [`Endpoint::connection_mut`]. Every operation costs O(log n) in the number of connections: the
//! timers sit in one heap, and only connections that were touched are looked at again.
//!
//! Files: the table and timers here; the compact TIME-WAIT table in time_wait_table.rs;
//! listeners, their queues and SYN cookies in listener.rs (the cookie encoding in cookie.rs);
//! counters in stats.rs; handshake latency and segment tracing in trace.rs.

mod cookie;
mod listener;
mod stats;
mod time_wait_table;
mod trace;

pub use stats::{DropCounts, EndpointStats, IcmpCounts, WireErrorCounts};
pub use trace::{HandshakeLatency, HandshakeReport, SEGMENT_RX_TARGET, SEGMENT_TX_TARGET};

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::tcp::{
    self, Connection, Event, FourTuple, IcmpVerdict, IsnGenerator, ReceiveDrops, Segment, State,
    TimeWait, TimeWaitOutcome,
};
use crate::wire::{self, IcmpMessage, IpPacket, SeqNum, TcpHeader};
use crate::FastHashMap;

use cookie::CookieJar;
use time_wait_table::TimeWaitTable;
use trace::ConnectionTrace;

/// How long a TIME-WAIT entry with timestamps must have heard nothing before an active open may
/// take its tuple over (Linux's tcp_tw_reuse: one second, so the new TSvals are clearly newer).
const TIME_WAIT_REUSE_AFTER: Duration = Duration::from_secs(1);

/// Identifies one connection inside an [`Endpoint`]; never reused while the endpoint lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub u64);

/// Endpoint-wide settings.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub connection: tcp::Config,
    /// Most connections in SYN-RECEIVED per listener.
    pub max_half_open: usize,
    /// Most established connections waiting in a listener's accept queue.
    pub accept_backlog: usize,
    /// First and last ephemeral port for active opens. The default lies above Linux's
    /// ip_local_port_range (32768–60999) so that the kernel's own connections are never stolen.
    pub ephemeral_ports: (u16, u16),
    /// Most endpoint-generated replies (RSTs, TIME-WAIT ACKs) waiting for `poll_transmit`.
    pub max_queued_replies: usize,
    /// Answer SYNs with SYN cookies when a listener's half-open queue is full (RFC 4987 §3.6)
    /// instead of dropping them.
    pub syn_cookies: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            connection: tcp::Config::default(),
            max_half_open: 1024,
            accept_backlog: 1024,
            ephemeral_ports: (61000, 65535),
            max_queued_replies: 1024,
            syn_cookies: true,
        }
    }
}

/// What the endpoint tells its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A connection on this listening address finished its handshake and can be accepted.
    Incoming(SocketAddrV4),
    /// Something happened on one connection. Connections waiting in an accept queue report
    /// nothing until accepted; `accept` then reports `Connected`. `Closed` is the last event of
    /// a handle: it comes when the connection reached CLOSED or was replaced by a TIME-WAIT entry.
    Connection(ConnectionHandle, Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("address already in use")]
    AddrInUse,
    #[error("no ephemeral port is free")]
    NoFreePort,
    #[error("no such connection")]
    UnknownConnection,
}

/// Where a connection stands with respect to its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Opened by `connect`.
    Active,
    /// In SYN-RECEIVED, counted against this listener's half-open queue.
    HalfOpen(SocketAddrV4),
    /// Established, waiting in this listener's accept queue.
    Queued(SocketAddrV4),
    /// Handed out by `accept`.
    Accepted,
    /// Passive, being aborted without ever reaching a user (its listener is gone or full).
    Orphan,
}

impl Role {
    fn is_user_visible(self) -> bool {
        matches!(self, Role::Active | Role::Accepted)
    }
}

struct Slot {
    conn: Connection,
    role: Role,
    /// The deadline this connection has in the timer heap, and that entry's generation.
    timer: Option<(Instant, u64)>,
    /// Queued in `touched` (must be looked at again).
    touched: bool,
    /// Queued in `sending` (may have segments to transmit).
    sending: bool,
    trace: ConnectionTrace,
}

struct Listener {
    half_open: usize,
    accept_queue: VecDeque<ConnectionHandle>,
}

/// A connection's timer in the heap. Stale entries (the connection re-armed or was freed) are
/// skipped when they surface: an entry is live only while its generation is the one its
/// connection recorded.
#[derive(Debug, PartialEq, Eq)]
struct TimerEntry {
    deadline: Instant,
    generation: u64,
    handle: ConnectionHandle,
}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reversed, so that `BinaryHeap` pops the earliest deadline first. Generations are unique, so
/// this order is total.
impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.generation).cmp(&(self.deadline, self.generation))
    }
}

/// A segment the endpoint itself answers with (not from a connection).
struct Reply {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    header: TcpHeader,
    payload: Bytes,
}

pub struct Endpoint {
    config: EndpointConfig,
    local_addr: Ipv4Addr,
    isn: IsnGenerator,
    cookies: CookieJar,
    /// When the last SYN cookie went out: ACKs are checked for cookies only for a while after.
    last_cookie: Option<Instant>,
    /// When the last segment occupying sequence space (data, SYN or FIN) went out.
    last_sequenced_sent: Option<Instant>,
    rng: SmallRng,
    now: Instant,
    next_handle: u64,
    next_timer_generation: u64,
    ip_identification: u16,
    /// Boxed: a hash table keeps up to twice its entries' size in empty buckets, and a slot is
    /// large, so the table holds pointers and an idle connection costs about its own size.
    connections: FastHashMap<ConnectionHandle, Box<Slot>>,
    by_tuple: FastHashMap<FourTuple, ConnectionHandle>,
    listeners: FastHashMap<SocketAddrV4, Listener>,
    time_wait: TimeWaitTable,
    timers: BinaryHeap<TimerEntry>,
    /// Connections to look at again: events, state changes, timers.
    touched: VecDeque<ConnectionHandle>,
    /// Connections that may have segments to send.
    sending: VecDeque<ConnectionHandle>,
    replies: VecDeque<Reply>,
    events: VecDeque<EndpointEvent>,
    stats: EndpointStats,
    /// Retransmits of connections already freed.
    retransmits_of_freed: u64,
    /// PAWS rejections of freed connections and of TIME-WAIT entries.
    paws_rejected_elsewhere: u64,
    /// Receive-window drops of connections already freed.
    receive_drops_of_freed: ReceiveDrops,
    handshakes: HandshakeLatency,
}

impl Endpoint {
    /// `seed` keys the ISN hash (RFC 6528) and everything else random, so tests replay exactly.
    pub fn new(config: EndpointConfig, local_addr: Ipv4Addr, seed: u64, now: Instant) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let isn = IsnGenerator::from_seed(rng.gen(), now);
        let cookies = CookieJar::new(rng.gen(), now);
        let time_wait = TimeWaitTable::new(now, config.connection.msl * 2);
        Endpoint {
            config,
            local_addr,
            isn,
            cookies,
            last_cookie: None,
            last_sequenced_sent: None,
            rng,
            now,
            next_handle: 0,
            next_timer_generation: 0,
            ip_identification: 0,
            connections: FastHashMap::default(),
            by_tuple: FastHashMap::default(),
            listeners: FastHashMap::default(),
            time_wait,
            timers: BinaryHeap::new(),
            touched: VecDeque::new(),
            sending: VecDeque::new(),
            replies: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            retransmits_of_freed: 0,
            receive_drops_of_freed: ReceiveDrops::default(),
            paws_rejected_elsewhere: 0,
            handshakes: HandshakeLatency::default(),
        }
    }

    pub fn local_addr(&self) -> Ipv4Addr {
        self.local_addr
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Active open from an ephemeral port (RFC 6056 §3.3.1: a random starting point, then the
    /// next free port). When none is free, a port whose TIME-WAIT entry with `remote` used
    /// timestamps and has heard nothing for a second is taken over, as Linux's tcp_tw_reuse:
    /// the new connection's TSvals, from the same clock, are newer than any of the old one, so
    /// the peer's PAWS rejects the old connection's duplicates (RFC 7323 §5; RFC 6191 §4).
    pub fn connect(
        &mut self,
        remote: SocketAddrV4,
        now: Instant,
    ) -> Result<ConnectionHandle, EndpointError> {
        self.advance(now);
        let (first, last) = self.config.ephemeral_ports;
        let (first, last) = (first.min(last), first.max(last));
        let count = u32::from(last - first) + 1;
        let start = self.rng.gen_range(0..count);
        let tuple = (0..count)
            .map(|i| {
                let port = first + ((start + i) % count) as u16;
                FourTuple {
                    local: SocketAddrV4::new(self.local_addr, port),
                    remote,
                }
            })
            .find(|tuple| self.tuple_is_free(tuple));
        let (tuple, isn) = match tuple {
            Some(tuple) => (tuple, self.isn.isn(&tuple, now)),
            None => {
                let (tuple, old_snd_nxt) = (0..count)
                    .map(|i| FourTuple {
                        local: SocketAddrV4::new(
                            self.local_addr,
                            first + ((start + i) % count) as u16,
                        ),
                        remote,
                    })
                    .find_map(|tuple| Some((tuple, self.reusable_time_wait(&tuple, now)?)))
                    .ok_or(EndpointError::NoFreePort)?;
                self.time_wait.remove(&tuple);
                self.stats.time_wait_reused += 1;
                // Past anything the old connection may still have in flight, as Linux does.
                (tuple, old_snd_nxt + (u32::from(u16::MAX) + 2))
            }
        };
        let mut conn = Connection::connect(self.config.connection.clone(), tuple, isn, now);
        conn.set_timestamp_clock(self.isn.timestamp_clock(&tuple));
        self.stats.active_opens += 1;
        Ok(self.insert(conn, Role::Active, isn))
    }

    /// A connection, for `send`, `recv`, `close` and the like. The endpoint looks at it again on
    /// the next call to any of its `&mut self` methods.
    pub fn connection_mut(&mut self, handle: ConnectionHandle) -> Option<&mut Connection> {
        if !self.connections.contains_key(&handle) {
            return None;
        }
        self.touch(handle);
        self.connections.get_mut(&handle).map(|slot| &mut slot.conn)
    }

    pub fn connection(&self, handle: ConnectionHandle) -> Option<&Connection> {
        self.connections.get(&handle).map(|slot| &slot.conn)
    }

    /// Every connection in the table (TIME-WAIT entries not included), in no particular order;
    /// reading them does not mark them touched.
    pub fn connections(&self) -> impl Iterator<Item = (ConnectionHandle, &Connection)> + '_ {
        self.connections
            .iter()
            .map(|(handle, slot)| (*handle, &slot.conn))
    }

    /// Connections in the table (TIME-WAIT entries not included).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn time_wait_count(&self) -> usize {
        self.time_wait.len()
    }

    /// No connection, no TIME-WAIT entry, nothing left to send.
    pub fn is_idle(&self) -> bool {
        self.connections.is_empty() && self.time_wait.is_empty() && self.replies.is_empty()
    }

    pub fn stats(&self) -> EndpointStats {
        let mut receive_drops = self.receive_drops_of_freed;
        let (live_retransmits, live_paws_rejected) =
            self.connections.values().fold((0, 0), |(r, p), slot| {
                let stats = slot.conn.stats();
                receive_drops.add(stats.receive_drops);
                (r + stats.retransmits, p + stats.paws_rejected)
            });
        EndpointStats {
            receive_drops,
            retransmits: self.retransmits_of_freed + live_retransmits,
            paws_rejected: self.paws_rejected_elsewhere + live_paws_rejected,
            connections_now: self.connections.len() as u64,
            time_wait_now: self.time_wait.len() as u64,
            ..self.stats
        }
    }

    /// How long the handshakes that completed took, passive and active opens apart.
    pub fn handshake_latency(&self) -> &HandshakeLatency {
        &self.handshakes
    }

    /// Processes one received IPv4 packet (header included).
    pub fn handle_packet(&mut self, packet: &[u8], now: Instant) {
        self.advance(now);
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        let parsed = match wire::parse_ipv4(packet) {
            Ok(IpPacket::Tcp(parsed)) => parsed,
            Ok(IpPacket::Icmp { ip, message }) => {
                self.handle_icmp(&ip, &message, now);
                return;
            }
            Err(error) => {
                self.stats.drops.wire.count(error);
                return;
            }
        };
        trace::segment_in(&parsed);
        if parsed.ip.dst != self.local_addr {
            self.stats.drops.wrong_destination += 1;
            return;
        }
        let src = parsed.ip.src;
        if !self.is_acceptable_source(src) {
            self.stats.drops.bad_source += 1;
            return;
        }
        let header = &parsed.tcp;
        if header.flags.rst() {
            self.stats.resets_received += 1;
        }
        let tuple = FourTuple {
            local: SocketAddrV4::new(parsed.ip.dst, header.dst_port),
            remote: SocketAddrV4::new(src, header.src_port),
        };
        if let Some(&handle) = self.by_tuple.get(&tuple) {
            if let Some(slot) = self.connections.get_mut(&handle) {
                slot.conn.handle_segment(header, parsed.payload, now);
                self.touch(handle);
                self.sync_touched();
            }
            return;
        }
        let listener = self.listener_for(tuple.local);
        if header.flags.is_impossible()
            && (listener.is_some() || self.time_wait.get(&tuple).is_some())
        {
            self.stats.drops.impossible_flags += 1;
            return;
        }
        if self.handle_time_wait(&tuple, header, parsed.payload.len(), now) {
            return;
        }
        if let Some(listener) = listener {
            self.handle_listen(listener, tuple, header, parsed.payload, now);
            return;
        }
        // RFC 9293 §3.10.7.1: CLOSED. A RST is never answered.
        match tcp::reset_for(header, parsed.payload.len()) {
            Some(reset) => {
                self.stats.drops.no_connection += 1;
                self.queue_reply(&tuple, reset);
            }
            None => self.stats.drops.stray_reset += 1,
        }
    }

    /// RFC 5927 §4: an ICMP error must quote a segment of one of our connections, from our
    /// address, with a sequence number in flight (the connection checks that); anything else
    /// changes nothing.
    fn handle_icmp(&mut self, ip: &wire::Ipv4Header, message: &IcmpMessage, now: Instant) {
        self.stats.icmp.received += 1;
        if ip.dst != self.local_addr {
            self.stats.drops.wrong_destination += 1;
            return;
        }
        let quoted = &message.quoted;
        let tuple = FourTuple {
            local: SocketAddrV4::new(quoted.src, quoted.src_port),
            remote: SocketAddrV4::new(quoted.dst, quoted.dst_port),
        };
        let Some(&handle) = self.by_tuple.get(&tuple) else {
            self.stats.icmp.no_connection += 1;
            return;
        };
        let Some(slot) = self.connections.get_mut(&handle) else {
            self.stats.icmp.no_connection += 1;
            return;
        };
        let counter = match slot.conn.handle_icmp(message.error, quoted, now) {
            IcmpVerdict::OutOfWindow => &mut self.stats.icmp.out_of_window,
            IcmpVerdict::PathMtuLowered => &mut self.stats.icmp.path_mtu_lowered,
            IcmpVerdict::PathMtuUnchanged => &mut self.stats.icmp.path_mtu_unchanged,
            IcmpVerdict::Aborted => &mut self.stats.icmp.aborted,
            IcmpVerdict::Noted => &mut self.stats.icmp.noted,
        };
        *counter += 1;
        self.touch(handle);
        self.sync_touched();
    }

    /// RFC 1122 §4.2.3.10: no segment from a broadcast, multicast, unspecified or our own
    /// address.
    fn is_acceptable_source(&self, src: Ipv4Addr) -> bool {
        !(src.is_broadcast()
            || src.is_multicast()
            || src.is_unspecified()
            || src == self.local_addr)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.sync_touched();
        while self.timers.peek().is_some_and(|t| t.deadline <= now) {
            let Some(entry) = self.timers.pop() else {
                break;
            };
            let handle = entry.handle;
            let Some(slot) = self.connections.get_mut(&handle) else {
                continue;
            };
            if slot.timer.map(|(_, g)| g) != Some(entry.generation) {
                continue;
            }
            slot.timer = None;
            slot.conn.handle_timeout(now);
            self.touch(handle);
        }
        self.time_wait.expire(now);
        self.sync_touched();
    }

    /// Writes the next IPv4 packet to send into `out` (cleared first); false when there is none.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        self.poll_transmit_after(now, out, 0)
    }

    /// [`Self::poll_transmit`] that keeps the first `headroom` bytes of `out` and writes the
    /// packet after them, so that a driver's link-layer header needs no second copy of the frame.
    pub fn poll_transmit_after(
        &mut self,
        now: Instant,
        out: &mut Vec<u8>,
        headroom: usize,
    ) -> bool {
        self.advance(now);
        self.sync_touched();
        out.truncate(headroom);
        if let Some(reply) = self.replies.pop_front() {
            self.emit(reply.src, reply.dst, &reply.header, &reply.payload, out);
            return true;
        }
        while let Some(&handle) = self.sending.front() {
            let Some(slot) = self.connections.get_mut(&handle) else {
                self.sending.pop_front();
                continue;
            };
            if let Some(segment) = slot.conn.poll_transmit(now) {
                let tuple = slot.conn.tuple();
                self.emit(
                    *tuple.local.ip(),
                    *tuple.remote.ip(),
                    &segment.header,
                    &segment.payload,
                    out,
                );
                return true;
            }
            self.sending.pop_front();
            slot.sending = false;
            // Sending armed or moved timers (RTO, delayed ACK, persist).
            self.mark_for_sync(handle);
            self.sync_touched();
        }
        false
    }

    /// When the endpoint last sent a segment that occupies sequence space (RFC 9293 §3.4: data,
    /// SYN or FIN), which the peer will acknowledge or answer; pure ACKs and RSTs do not count.
    /// The runtime busy-polls for a while after it.
    pub fn last_sequenced_sent(&self) -> Option<Instant> {
        self.last_sequenced_sent
    }

    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.sync_touched();
        self.events.pop_front()
    }

    /// The earliest deadline of any connection or TIME-WAIT entry. Call it after `poll_transmit`
    /// returned false: a connection learns some deadlines (the RTO) only when it transmits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heap = self.timers.peek().map(|t| t.deadline);
        let heap = match (heap, self.time_wait.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Touched connections may have moved their deadlines since the heap saw them.
        let touched = self
            .touched
            .iter()
            .filter_map(|h| self.connections.get(h))
            .filter_map(|slot| slot.conn.poll_timeout())
            .min();
        match (heap, touched) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The old connection's SND.NXT when `tuple`'s TIME-WAIT entry may be reused by an active
    /// open now (see [`Self::connect`]).
    fn reusable_time_wait(&self, tuple: &FourTuple, now: Instant) -> Option<SeqNum> {
        let record = self.time_wait.get(tuple)?;
        record.timestamps?;
        let quiet_since = record.deadline.checked_sub(record.duration)?;
        let reusable = now.saturating_duration_since(quiet_since) >= TIME_WAIT_REUSE_AFTER
            && !self.by_tuple.contains_key(tuple)
            && self.listener_for(tuple.local).is_none();
        reusable.then_some(record.snd_nxt)
    }

    fn tuple_is_free(&self, tuple: &FourTuple) -> bool {
        !self.by_tuple.contains_key(tuple)
            && !self.time_wait.contains(tuple)
            && self.listener_for(tuple.local).is_none()
    }

    fn insert(&mut self, conn: Connection, role: Role, isn: SeqNum) -> ConnectionHandle {
        let handle = ConnectionHandle(self.next_handle);
        self.next_handle += 1;
        self.by_tuple.insert(conn.tuple(), handle);
        let trace = ConnectionTrace::new(&conn, isn, role != Role::Active, self.now);
        self.connections.insert(
            handle,
            Box::new(Slot {
                conn,
                role,
                timer: None,
                touched: false,
                sending: false,
                trace,
            }),
        );
        self.touch(handle);
        handle
    }

    /// Marks a connection to be looked at again and polled for segments.
    fn touch(&mut self, handle: ConnectionHandle) {
        self.mark_for_sync(handle);
        if let Some(slot) = self.connections.get_mut(&handle) {
            if !slot.sending {
                slot.sending = true;
                self.sending.push_back(handle);
            }
        }
    }

    /// Marks a connection to be looked at again (events, state, timer).
    fn mark_for_sync(&mut self, handle: ConnectionHandle) {
        if let Some(slot) = self.connections.get_mut(&handle) {
            if !slot.touched {
                slot.touched = true;
                self.touched.push_back(handle);
            }
        }
    }

    fn sync_touched(&mut self) {
        while let Some(handle) = self.touched.pop_front() {
            self.sync(handle);
        }
        self.discard_stale_timers();
    }

    /// Collects a connection's events, follows its state (established → accept queue, TIME-WAIT
    /// → compact entry, CLOSED → freed) and re-arms its timer.
    fn sync(&mut self, handle: ConnectionHandle) {
        let Some(slot) = self.connections.get_mut(&handle) else {
            return;
        };
        slot.touched = false;
        let mut closed = false;
        while let Some(event) = slot.conn.poll_event() {
            match event {
                Event::Connected => {
                    self.stats.connections_established += 1;
                    slot.trace
                        .established(&slot.conn, self.now, &mut self.handshakes);
                    if let Role::HalfOpen(listener) = slot.role {
                        Self::promote(
                            &mut self.listeners,
                            &mut self.events,
                            &mut self.stats,
                            handle,
                            slot,
                            listener,
                            self.config.accept_backlog,
                        );
                    }
                }
                Event::Readable => slot.trace.readable(self.now),
                Event::Closed => closed = true,
                _ => {}
            }
            if slot.role.is_user_visible() && event != Event::Closed {
                self.events
                    .push_back(EndpointEvent::Connection(handle, event));
            }
        }
        slot.trace.follow(&slot.conn);
        let state = slot.conn.state();
        // A connection that closed gracefully keeps its unread data for the user; one that
        // failed (RST, timeout) has nothing left to give.
        let drained = slot.conn.recv_available() == 0 || slot.conn.error().is_some();
        if (closed || state == State::Closed) && drained {
            self.free(handle, None);
        } else if state == State::TimeWait && drained {
            let record = slot.conn.time_wait();
            self.free(handle, record);
        } else {
            let deadline = slot.conn.poll_timeout();
            if deadline != slot.timer.map(|(d, _)| d) {
                slot.timer = deadline.map(|deadline| {
                    let generation = self.next_timer_generation;
                    self.next_timer_generation += 1;
                    self.timers.push(TimerEntry {
                        deadline,
                        generation,
                        handle,
                    });
                    (deadline, generation)
                });
            }
        }
    }

    /// Removes a connection from every table, keeping what it still has to send; with a
    /// TIME-WAIT record, the record takes its place.
    fn free(&mut self, handle: ConnectionHandle, time_wait: Option<TimeWait>) {
        let Some(mut slot) = self.connections.remove(&handle) else {
            return;
        };
        let tuple = slot.conn.tuple();
        while let Some(segment) = slot.conn.poll_transmit(self.now) {
            let Segment { header, payload } = segment;
            self.push_reply(Reply {
                src: *tuple.local.ip(),
                dst: *tuple.remote.ip(),
                header,
                payload,
            });
        }
        while let Some(event) = slot.conn.poll_event() {
            if slot.role.is_user_visible() && event != Event::Closed {
                self.events
                    .push_back(EndpointEvent::Connection(handle, event));
            }
        }
        self.by_tuple.remove(&tuple);
        shrink_if_sparse(&mut self.connections);
        shrink_if_sparse(&mut self.by_tuple);
        match slot.role {
            Role::HalfOpen(addr) => {
                if let Some(listener) = self.listeners.get_mut(&addr) {
                    listener.half_open = listener.half_open.saturating_sub(1);
                }
            }
            Role::Queued(addr) => {
                if let Some(listener) = self.listeners.get_mut(&addr) {
                    listener.accept_queue.retain(|&h| h != handle);
                }
            }
            Role::Active | Role::Accepted => {
                self.events
                    .push_back(EndpointEvent::Connection(handle, Event::Closed));
            }
            Role::Orphan => {}
        }
        self.retransmits_of_freed += slot.conn.stats().retransmits;
        self.paws_rejected_elsewhere += slot.conn.stats().paws_rejected;
        self.receive_drops_of_freed
            .add(slot.conn.stats().receive_drops);
        self.stats.connections_closed += 1;
        if let Some(record) = time_wait {
            self.stats.time_wait_entries += 1;
            self.time_wait.insert(&record, self.now);
        }
    }

    /// Pops dead entries off the top of the heap, so that `poll_timeout` sees a live one.
    fn discard_stale_timers(&mut self) {
        while let Some(top) = self.timers.peek() {
            let live = self
                .connections
                .get(&top.handle)
                .is_some_and(|slot| slot.timer.map(|(_, g)| g) == Some(top.generation));
            if live {
                break;
            }
            self.timers.pop();
        }
    }

    /// The TIME-WAIT rules for a segment whose tuple has an entry; false when there is none, or
    /// when a new SYN took it over and the segment must go to the listener.
    fn handle_time_wait(
        &mut self,
        tuple: &FourTuple,
        header: &TcpHeader,
        payload_len: usize,
        now: Instant,
    ) -> bool {
        let Some(mut record) = self.time_wait.get(tuple) else {
            return false;
        };
        match record.handle_segment(header, payload_len, now) {
            TimeWaitOutcome::Drop => {
                self.stats.drops.time_wait += 1;
            }
            TimeWaitOutcome::Reply(reply) => {
                // A retransmitted FIN restarts 2·MSL and refreshes TS.Recent.
                self.time_wait.insert(&record, now);
                self.queue_reply(tuple, reply);
            }
            TimeWaitOutcome::PawsRejected(reply) => {
                self.paws_rejected_elsewhere += 1;
                self.queue_reply(tuple, reply);
            }
            TimeWaitOutcome::Reopen => {
                self.time_wait.remove(tuple);
                self.stats.time_wait_reopened += 1;
                return false;
            }
        }
        self.discard_stale_timers();
        true
    }

    /// Queues a segment the endpoint sends on its own behalf on `tuple`.
    fn queue_reply(&mut self, tuple: &FourTuple, header: TcpHeader) {
        self.push_reply(Reply {
            src: *tuple.local.ip(),
            dst: *tuple.remote.ip(),
            header,
            payload: Bytes::new(),
        });
    }

    fn push_reply(&mut self, reply: Reply) {
        if self.replies.len() >= self.config.max_queued_replies {
            self.stats.drops.reply_queue_full += 1;
            return;
        }
        self.replies.push_back(reply);
    }

    fn emit(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        header: &TcpHeader,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let headroom = out.len();
        let identification = self.ip_identification;
        self.ip_identification = self.ip_identification.wrapping_add(1);
        wire::emit_ipv4_tcp(src, dst, header, payload, identification, out);
        if crate::tcp::segment_len(header, payload.len()) > 0 {
            self.last_sequenced_sent = Some(self.now);
        }
        let packet = &out[headroom..];
        trace::segment_out(packet);
        self.stats.packets_out += 1;
        self.stats.bytes_out += packet.len() as u64;
        if header.flags.rst() {
            self.stats.resets_sent += 1;
        }
    }
}

/// Gives a table's memory back once it is three-quarters empty (a hash table never shrinks on its
/// own), keeping room for twice what it holds so that a table near one size does not flap.
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(table: &mut FastHashMap<K, V>) {
    const SMALLEST: usize = 64;
    if table.capacity() > SMALLEST && table.len() * 4 < table.capacity() {
        table.shrink_to((table.len() * 2).max(SMALLEST));
    }
}
