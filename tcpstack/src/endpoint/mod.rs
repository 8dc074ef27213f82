//! The table of connections: demultiplexing by 4-tuple, listeners with accept and half-open
//! queues, TIME-WAIT entries, RSTs for strays, ISN secrets and counters. Sans-IO: takes IPv4
//! packets and a clock, returns IPv4 packets and events.
//!
//! STUB: the API below is the contract other layers build on; the implementation is in progress.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use crate::tcp::{self, Connection, Event};

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
    /// First and last ephemeral port for active opens.
    pub ephemeral_ports: (u16, u16),
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            connection: tcp::Config::default(),
            max_half_open: 1024,
            accept_backlog: 1024,
            ephemeral_ports: (32768, 60999),
        }
    }
}

/// What the endpoint tells its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A connection on this listening address finished its handshake and can be accepted.
    Incoming(SocketAddrV4),
    /// Something happened on one connection.
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

pub struct Endpoint {
    _private: (),
}

impl Endpoint {
    /// `seed` keys the ISN hash (RFC 6528) and everything else random, so tests replay exactly.
    pub fn new(_config: EndpointConfig, _local_addr: Ipv4Addr, _seed: u64, _now: Instant) -> Self {
        todo!()
    }

    pub fn listen(&mut self, _addr: SocketAddrV4) -> Result<(), EndpointError> {
        todo!()
    }

    pub fn connect(
        &mut self,
        _remote: SocketAddrV4,
        _now: Instant,
    ) -> Result<ConnectionHandle, EndpointError> {
        todo!()
    }

    /// Takes the next established connection queued on a listener.
    pub fn accept(&mut self, _listener: SocketAddrV4) -> Option<ConnectionHandle> {
        todo!()
    }

    pub fn connection_mut(&mut self, _handle: ConnectionHandle) -> Option<&mut Connection> {
        todo!()
    }

    /// Processes one received IPv4 packet (header included).
    pub fn handle_packet(&mut self, _packet: &[u8], _now: Instant) {
        todo!()
    }

    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }

    /// Writes the next IPv4 packet to send into `out` (cleared first); false when there is none.
    pub fn poll_transmit(&mut self, _now: Instant, _out: &mut Vec<u8>) -> bool {
        todo!()
    }

    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        todo!()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
}
