//! Everything a stack counts, in one value: `serve --stats-json` writes it, `--stats-interval`
//! prints its handshake line.

use serde::Serialize;

use super::{Stack, StackStats};
use crate::endpoint::{EndpointStats, HandshakeReport};
use crate::io::BackendStats;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct StatsReport {
    pub runtime: StackStats,
    pub endpoint: EndpointStats,
    /// Handshake latency: passive opens (SYN received → ESTABLISHED) and active opens (SYN sent
    /// → ESTABLISHED).
    pub handshake: HandshakeReport,
    pub link: BackendStats,
}

impl Stack {
    /// A snapshot of every counter and the handshake percentiles.
    pub fn report(&self) -> StatsReport {
        let state = self.shared().lock();
        StatsReport {
            runtime: state.stats,
            endpoint: state.endpoint.stats(),
            handshake: state.endpoint.handshake_latency().report(),
            link: state.backend.stats(),
        }
    }
}
