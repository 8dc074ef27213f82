//! tcpstack: a user-space TCP endpoint. See the README for the design.

pub mod apps;
pub mod endpoint;
pub mod io;
pub mod latency;
pub mod net_traits;
pub mod runtime;
pub mod sim;
pub mod tcp;
pub mod wire;

#[cfg(test)]
mod test_support;

pub use wire::SeqNum;

/// The hash map of the tables looked up for every packet (connections by handle and by 4-tuple,
/// TIME-WAIT entries, the runtime's slots): foldhash, several times cheaper than the standard
/// library's SipHash on these small keys (SipHash was a tenth of the receive path's CPU time).
/// Its seed is random per map, so a peer that picks 4-tuples cannot aim at one bucket without
/// knowing it.
pub(crate) type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
