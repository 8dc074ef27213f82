//! Everything a stack counts, in one value: `serve --stats-json` writes it, `--stats-interval`
//! prints its handshake line.

use serde::Serialize;

use super::{Stack, StackStats};
use crate::endpoint::{EndpointStats, HandshakeReport};
use crate::io::xdp::RingStats;
use crate::io::BackendStats;

#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub runtime: StackStats,
    pub endpoint: EndpointStats,
    /// Handshake latency: passive opens (SYN received → ESTABLISHED) and active opens (SYN sent
    /// → ESTABLISHED).
    pub handshake: HandshakeReport,
    pub link: BackendStats,
    /// The xdp backend's AF_XDP sockets, one per queue (empty for the raw backend).
    pub xdp_queues: Vec<RingStats>,
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
            xdp_queues: state.backend.ring_stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::io::memory::{link, LinkConfig};
    use crate::net_traits::StreamInfo;
    use crate::runtime::{TcpListener, TcpStream};
    use crate::test_support::memory_stacks;

    /// What iperf3 reports as our retransmits is the connection's own count, the same the
    /// endpoint sums up.
    #[tokio::test]
    async fn a_stream_reports_its_retransmits() {
        let (a, b) = link(LinkConfig {
            loss: 0.05,
            delay: Duration::from_millis(1),
            seed: 7,
        });
        let (server, client) = memory_stacks((a, b), |server| server);
        let addr = "198.18.0.1:9".parse().expect("address");
        let listener = TcpListener::bind(&server, addr).expect("binds");
        let sink = tokio::spawn(async move {
            let (mut accepted, _) = listener.accept().await.expect("accepts");
            let mut all = Vec::new();
            accepted.read_to_end(&mut all).await.expect("reads");
            all.len()
        });
        let mut stream = TcpStream::connect(&client, addr).await.expect("connects");
        let data = vec![7u8; 256 << 10];
        stream.write_all(&data).await.expect("writes");
        stream.shutdown().await.expect("closes");
        assert_eq!(sink.await.expect("sink task"), data.len());

        let retransmits = StreamInfo::retransmits(&stream).expect("a live connection has stats");
        assert!(retransmits > 0, "5% loss and no retransmission");
        assert_eq!(client.report().endpoint.retransmits, retransmits);
    }
}
