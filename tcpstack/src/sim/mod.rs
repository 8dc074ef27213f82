//! A deterministic network simulator: two endpoints joined by a lossy link with a virtual clock.
//!
//! Sans-IO like the rest of the core: time is an `Instant` base plus virtual offsets, and every
//! random choice comes from RNGs seeded from one `u64`, so a run replays exactly from its seed.

pub mod link;

pub use link::{Link, LinkConfig, LinkStats};
