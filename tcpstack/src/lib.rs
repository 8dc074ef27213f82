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
