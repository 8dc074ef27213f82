//! A deterministic network simulator: two endpoints joined by a lossy link with a virtual clock.
//!
//! Sans-IO like the rest of the core: time is an `Instant` base plus virtual offsets, and every
//! random choice comes from RNGs seeded from one `u64`, so a run replays exactly from its seed.
//! [`Link`] is one direction of a wire, [`Network`] runs two endpoints event by event (the next
//! packet arrival or the next timer, whichever comes first), and [`run_transfer`] drives a
//! bidirectional transfer to the end and checks it.

pub mod link;
pub mod network;
pub mod transfer;

pub use link::{DelaySpike, DropPattern, Link, LinkConfig, LinkStats};
pub use network::{Network, CLIENT_ADDR, SERVER_ADDR};
pub use transfer::{
    run_transfer, ReadRate, TransferConfig, TransferError, TransferReport, SERVER_PORT,
};
