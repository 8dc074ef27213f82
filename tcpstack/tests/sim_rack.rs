//! RACK-TLP (RFC 8985) and F-RTO (RFC 5682) end to end over the simulator: a tail loss is
//! repaired by a probe instead of the RTO, a delay spike's spurious RTO is undone, reordering
//! within RACK's window costs no retransmissions (these three against the same run with RACK
//! off, RFC 6675's duplicate-ACK rules), and lost retransmissions are found without the RTO. Every run checks every byte (SHA-256 of the
//! stream).

use std::time::Duration;

use tcpstack::sim::{
    run_transfer, DelaySpike, DropPattern, LinkConfig, TransferConfig, TransferReport,
};
use tcpstack::tcp::CongestionAlgorithm;

/// 100 Mbit/s, 20 ms round trip, and a queue that never overflows.
fn lossless_link() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(10),
        bandwidth_bps: Some(100_000_000),
        queue_packets: 10_000,
        ..LinkConfig::default()
    }
}

fn transfer(to_server: LinkConfig, bytes: usize, rack: bool) -> TransferReport {
    let mut config = TransferConfig::new(7, lossless_link(), bytes, 0);
    config.to_server = to_server;
    let connection = &mut config.endpoint.connection;
    connection.congestion = CongestionAlgorithm::Cubic;
    connection.rack = rack;
    run_transfer(&config).unwrap_or_else(|error| panic!("transfer failed: {error}"))
}

/// The last three data segments of a transfer are dropped (the server, sending nothing,
/// closes first, so the client's last three packets are data, the FIN on the last): no
/// duplicate ACK can follow them, so RFC 6675 waits for the
/// RTO, while RACK-TLP probes 2·SRTT after the last ACK and repairs the rest from the probe's
/// SACK.
#[test]
fn a_tail_loss_is_repaired_by_a_probe_without_rto() {
    let bytes = 300 * 1448;
    let clean = transfer(lossless_link(), bytes, true);
    let packets = clean.to_server.sent;
    assert_eq!(clean.client_connection.rtos, 0);
    // Packets numbered from 0: the last three are `packets - 3 ..`, and nothing numbered
    // `2 · (packets - 3)` or more is ever sent, so nothing else is dropped.
    let tail = LinkConfig {
        drop_pattern: Some(DropPattern {
            period: packets - 3,
            offsets: vec![0, 1, 2],
        }),
        ..lossless_link()
    };
    let srtt = clean.client_connection.srtt.expect("an RTT was measured");
    let with_rack = transfer(tail.clone(), bytes, true);
    let stats = with_rack.client_connection;
    assert_eq!(with_rack.to_server.lost, 3, "{:?}", with_rack.to_server);
    assert_eq!(stats.rtos, 0, "{stats:?}");
    assert!(stats.tlps >= 1, "{stats:?}");
    assert_eq!(
        stats.rack_losses, 2,
        "the probe repairs one, RACK finds the others: {stats:?}"
    );
    // The last ACK before the tail waits for the receiver's delayed-ACK timer (40 ms); the
    // probe goes out 2·SRTT (+ 2 ms) after it; its SACK arrives a round trip later and the two
    // other segments a round trip after that.
    let delay = with_rack.transfer_time - clean.transfer_time;
    let bound = Duration::from_millis(40)
        + srtt * 2
        + Duration::from_millis(2)
        + srtt * 2
        + Duration::from_millis(5);
    assert!(delay <= bound, "repaired after {delay:?}, bound {bound:?}");
    let without = transfer(tail, bytes, false);
    assert!(
        without.client_connection.rtos >= 1,
        "{:?}",
        without.client_connection
    );
    assert!(without.transfer_time > with_rack.transfer_time + Duration::from_millis(100));
}

/// A delay spike of 600 ms on the data path, longer than the RTO, with nothing lost: the RTO
/// fires, F-RTO sees data never retransmitted acknowledged after it and undoes the reduction,
/// so the window is what it was before, as in the run without the spike.
#[test]
fn a_spurious_rto_after_a_delay_spike_is_undone() {
    let bytes = 4 << 20;
    let clean = transfer(lossless_link(), bytes, true);
    let spike = LinkConfig {
        delay_spike: Some(DelaySpike {
            first: 1500,
            count: 20,
            extra: Duration::from_millis(600),
        }),
        ..lossless_link()
    };
    let report = transfer(spike, bytes, true);
    let stats = report.client_connection;
    assert_eq!(report.to_server.lost, 0);
    assert!(stats.rtos >= 1, "{stats:?}");
    assert_eq!(
        stats.spurious_rtos, stats.rtos,
        "every timeout undone: {stats:?}"
    );
    assert_eq!(stats.fast_retransmits, 0, "{stats:?}");
    // Restored: still in slow start as without the spike, not from the loss window of one
    // segment an RTO leaves.
    let clean_stats = clean.client_connection;
    assert_eq!(
        stats.ssthresh, clean_stats.ssthresh,
        "{stats:?}, clean {clean_stats:?}"
    );
    assert!(
        stats.cwnd * 2 >= clean_stats.cwnd,
        "{stats:?}, clean {clean_stats:?}"
    );
    // What went out twice: the probe, the timeout's retransmission and the go-back-N of the
    // round trip before data never retransmitted was acknowledged; the peer's D-SACKs show
    // them to be duplicates.
    assert!(stats.retransmits <= 4, "{stats:?}");
    assert!(stats.spurious_retransmits >= 1, "{stats:?}");
}

/// Segments held back 2 ms at random (1 %) on a 20 ms path: once the first reordering has been
/// seen (one spurious retransmission, D-SACKed), RACK's window of min_RTT/4 = 5 ms covers it
/// and nothing else is retransmitted, where RFC 6675's three-SACK rule retransmits again and
/// again.
#[test]
fn reordering_within_the_window_is_not_retransmitted() {
    let link = LinkConfig {
        reorder: 0.01,
        reorder_delay: Duration::from_millis(2),
        ..lossless_link()
    };
    let with_rack = transfer(link.clone(), 4 << 20, true);
    let stats = with_rack.client_connection;
    assert_eq!(with_rack.to_server.lost, 0);
    assert!(
        with_rack.to_server.reordered > 20,
        "{:?}",
        with_rack.to_server
    );
    assert!(stats.retransmits <= 2, "{stats:?}");
    assert_eq!(stats.rtos, 0, "{stats:?}");
    let without = transfer(link, 4 << 20, false);
    assert!(
        without.client_connection.retransmits > 10 * stats.retransmits.max(1),
        "RFC 6675: {:?}",
        without.client_connection
    );
}

/// 3 % random loss on the data path, so that some retransmissions are lost too: RACK finds
/// each lost retransmission by time from the SACKs of data sent after it (RFC 8985 §6.2: the
/// retransmission carries its own, newer transmit time) and sends it again before the
/// retransmission timer fires. (This stack's RFC 6675 path has Linux's lost-retransmission
/// rule too, so this is no comparison with RACK off.)
#[test]
fn a_lost_retransmission_is_found_by_rack_without_rto() {
    let link = LinkConfig {
        loss: 0.03,
        ..lossless_link()
    };
    let report = transfer(link, 4 << 20, true);
    let stats = report.client_connection;
    assert!(report.to_server.lost > 50, "{:?}", report.to_server);
    // With RACK on, lost retransmissions are counted only as RACK marks them lost.
    assert!(stats.lost_retransmits >= 1, "{stats:?}");
    assert!(stats.rack_losses >= stats.lost_retransmits, "{stats:?}");
    assert_eq!(stats.rtos, 0, "{stats:?}");
}
