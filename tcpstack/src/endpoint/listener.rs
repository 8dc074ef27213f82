//! Listeners (RFC 9293 §3.10.7.2, LISTEN): listen/unlisten, the half-open (SYN-RECEIVED) and
//! accept queues with their backlogs, promotion of an established connection to the accept
//! queue, and SYN cookies (RFC 4987) when the half-open queue is full.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use super::cookie::{self, CookieOptions};
use super::{
    ConnectionHandle, Endpoint, EndpointError, EndpointEvent, EndpointStats, Listener, Role, Slot,
};
use crate::tcp::{self, Connection, Event, FourTuple, ListenAction, TimestampClock};
use crate::wire::{self, SeqNum, TcpFlags, TcpHeader, TcpOptions};

impl Endpoint {
    /// Listens on `addr`; an unspecified IP (0.0.0.0) listens on the endpoint's address.
    pub fn listen(&mut self, addr: SocketAddrV4) -> Result<(), EndpointError> {
        match self.listeners.entry(addr) {
            Entry::Occupied(_) => Err(EndpointError::AddrInUse),
            Entry::Vacant(entry) => {
                entry.insert(Listener {
                    half_open: 0,
                    accept_queue: VecDeque::new(),
                });
                Ok(())
            }
        }
    }

    /// Stops listening on `addr`. Connections already opened through it live on; those not yet
    /// accepted are reset.
    pub fn unlisten(&mut self, addr: SocketAddrV4) -> Result<(), EndpointError> {
        if self.listeners.remove(&addr).is_none() {
            return Err(EndpointError::UnknownConnection);
        }
        let mut orphans: Vec<ConnectionHandle> = self
            .connections
            .iter()
            .filter(
                |(_, slot)| matches!(slot.role, Role::HalfOpen(a) | Role::Queued(a) if a == addr),
            )
            .map(|(&handle, _)| handle)
            .collect();
        // In handle order, so that runs replay exactly (HashMap order is random).
        orphans.sort_unstable();
        for handle in orphans {
            if let Some(slot) = self.connections.get_mut(&handle) {
                slot.role = Role::Orphan;
                slot.conn.abort();
                self.touch(handle);
            }
        }
        Ok(())
    }

    /// Takes the next established connection queued on a listener.
    pub fn accept(&mut self, listener: SocketAddrV4) -> Option<ConnectionHandle> {
        self.sync_touched();
        let handle = self
            .listeners
            .get_mut(&listener)?
            .accept_queue
            .pop_front()?;
        let slot = self.connections.get_mut(&handle)?;
        slot.role = Role::Accepted;
        self.events
            .push_back(EndpointEvent::Connection(handle, Event::Connected));
        self.touch(handle);
        Some(handle)
    }

    pub(super) fn listener_for(&self, local: SocketAddrV4) -> Option<SocketAddrV4> {
        let wildcard = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local.port());
        [local, wildcard]
            .into_iter()
            .find(|addr| self.listeners.contains_key(addr))
    }

    /// A passive connection completed its handshake: from the half-open to the accept queue.
    pub(super) fn promote(
        listeners: &mut HashMap<SocketAddrV4, Listener>,
        events: &mut VecDeque<EndpointEvent>,
        stats: &mut EndpointStats,
        handle: ConnectionHandle,
        slot: &mut Slot,
        listener_addr: SocketAddrV4,
        backlog: usize,
    ) {
        let Some(listener) = listeners.get_mut(&listener_addr) else {
            slot.role = Role::Orphan;
            slot.conn.abort();
            return;
        };
        listener.half_open = listener.half_open.saturating_sub(1);
        if listener.accept_queue.len() >= backlog {
            // Linux's tcp_abort_on_overflow: the handshake cannot be undone, so refuse loudly.
            stats.drops.accept_queue_full += 1;
            slot.role = Role::Orphan;
            slot.conn.abort();
            return;
        }
        listener.accept_queue.push_back(handle);
        slot.role = Role::Queued(listener_addr);
        events.push_back(EndpointEvent::Incoming(listener_addr));
    }

    /// RFC 9293 §3.10.7.2, LISTEN.
    pub(super) fn handle_listen(
        &mut self,
        listener_addr: SocketAddrV4,
        tuple: FourTuple,
        header: &TcpHeader,
        payload: &[u8],
        now: Instant,
    ) {
        match tcp::listen_action(header, payload.len()) {
            ListenAction::Drop => {
                if header.flags.rst() {
                    self.stats.drops.stray_reset += 1;
                } else {
                    self.stats.drops.listener_ignored += 1;
                }
            }
            ListenAction::Reset(reset) => {
                if !self.accept_cookie(listener_addr, tuple, header, payload, now) {
                    self.stats.drops.bad_ack += 1;
                    self.queue_reply(&tuple, reset);
                }
            }
            ListenAction::Accept => {
                let Some(listener) = self.listeners.get_mut(&listener_addr) else {
                    return;
                };
                if listener.accept_queue.len() >= self.config.accept_backlog {
                    self.stats.drops.accept_queue_full += 1;
                    return;
                }
                if listener.half_open >= self.config.max_half_open {
                    if self.config.syn_cookies {
                        self.send_cookie(tuple, header, now);
                    } else {
                        self.stats.drops.half_open_full += 1;
                    }
                    return;
                }
                listener.half_open += 1;
                let isn = self.isn.isn(&tuple, now);
                let mut conn =
                    Connection::accept(self.config.connection.clone(), tuple, header, isn, now);
                conn.set_timestamp_clock(self.isn.timestamp_clock(&tuple));
                self.stats.passive_opens += 1;
                self.insert(conn, Role::HalfOpen(listener_addr), isn);
                self.sync_touched();
            }
        }
    }

    /// The connection settings for a connection opened by a SYN cookie. Without timestamps to
    /// carry them (see cookie.rs), its SYN-ACK offers no window scale, SACK-permitted or
    /// timestamps, so the connection completed from the cookie uses none either.
    pub(super) fn cookie_connection_config(&self, with_timestamps: bool) -> tcp::Config {
        let config = self.config.connection.clone();
        if with_timestamps {
            return config;
        }
        tcp::Config {
            window_scaling: false,
            sack: false,
            timestamps: false,
            ..config
        }
    }

    /// The SYN as a cookie remembers it: sequence number and MSS, and with timestamps the
    /// options their TSval carries (`peer_tsval` becomes TS.Recent).
    pub(super) fn remembered_syn(
        header: &TcpHeader,
        peer_isn: SeqNum,
        mss: u16,
        timestamps: Option<(CookieOptions, u32)>,
    ) -> TcpHeader {
        let mut options = TcpOptions {
            mss: Some(mss),
            ..TcpOptions::default()
        };
        if let Some((remembered, peer_tsval)) = timestamps {
            options.window_scale = remembered.window_scale;
            options.sack_permitted = remembered.sack_permitted;
            options.timestamps = Some(wire::Timestamps {
                tsval: peer_tsval,
                tsecr: 0,
            });
        }
        TcpHeader {
            src_port: header.src_port,
            dst_port: header.dst_port,
            seq: peer_isn,
            flags: TcpFlags::SYN,
            window: header.window,
            options,
            ..TcpHeader::default()
        }
    }

    /// Answers a SYN with a SYN-ACK whose ISN is a cookie, keeping no state.
    pub(super) fn send_cookie(&mut self, tuple: FourTuple, syn: &TcpHeader, now: Instant) {
        let peer_mss = syn.options.mss.unwrap_or(536);
        let (isn, mss) = self.cookies.make(&tuple, syn.seq, peer_mss, now);
        let config = &self.config.connection;
        let timestamps = syn
            .options
            .timestamps
            .filter(|_| config.timestamps)
            .map(|ts| {
                let options = CookieOptions {
                    window_scale: syn.options.window_scale.filter(|_| config.window_scaling),
                    sack_permitted: syn.options.sack_permitted && config.sack,
                };
                (options, ts.tsval)
            });
        let remembered = Self::remembered_syn(syn, syn.seq, mss, timestamps);
        // The SYN-ACK a connection would send, without keeping the connection.
        let mut conn = Connection::accept(
            self.cookie_connection_config(timestamps.is_some()),
            tuple,
            &remembered,
            isn,
            now,
        );
        if let Some((options, _)) = timestamps {
            let tsval = options.encode(self.isn.timestamp_clock(&tuple).tsval(now));
            conn.set_timestamp_clock(TimestampClock::new(now, tsval));
        }
        if let Some(segment) = conn.poll_transmit(now) {
            self.stats.syn_cookies_sent += 1;
            self.last_cookie = Some(now);
            self.queue_reply(&tuple, segment.header);
        }
    }

    /// An ACK to a listener may complete a SYN-cookie handshake; true when it did.
    pub(super) fn accept_cookie(
        &mut self,
        listener_addr: SocketAddrV4,
        tuple: FourTuple,
        header: &TcpHeader,
        payload: &[u8],
        now: Instant,
    ) -> bool {
        let cookies_recently_sent = self
            .last_cookie
            .is_some_and(|t| now.saturating_duration_since(t) < cookie::MAX_LIFETIME);
        if !self.config.syn_cookies || header.flags.syn() || !cookies_recently_sent {
            return false;
        }
        let peer_isn = header.seq - 1u32;
        let isn = header.ack - 1u32;
        let Some(mss) = self.cookies.check(&tuple, peer_isn, isn, now) else {
            return false;
        };
        let Some(listener) = self.listeners.get_mut(&listener_addr) else {
            return false;
        };
        if listener.accept_queue.len() >= self.config.accept_backlog {
            self.stats.drops.accept_queue_full += 1;
            return true;
        }
        listener.half_open += 1;
        // The options the SYN-ACK's TSval remembered come back in the TSecr.
        let timestamps = header
            .options
            .timestamps
            .filter(|_| self.config.connection.timestamps)
            .map(|ts| (CookieOptions::decode(ts.tsecr), ts.tsval));
        let remembered = Self::remembered_syn(header, peer_isn, mss, timestamps);
        let mut conn = Connection::accept(
            self.cookie_connection_config(timestamps.is_some()),
            tuple,
            &remembered,
            isn,
            now,
        );
        conn.set_timestamp_clock(self.isn.timestamp_clock(&tuple));
        // Its SYN-ACK went out as the cookie.
        while conn.poll_transmit(now).is_some() {}
        conn.handle_segment(header, payload, now);
        self.stats.syn_cookies_accepted += 1;
        self.stats.passive_opens += 1;
        let handle = self.insert(conn, Role::HalfOpen(listener_addr), isn);
        if let Some(slot) = self.connections.get_mut(&handle) {
            // Its SYN arrived before the endpoint kept any record of it.
            slot.trace.start_unknown();
        }
        self.sync_touched();
        true
    }
}
