//! Loss recovery end to end over the simulator: with SACK, scripted losses of one or two
//! segments per window are repaired by fast recovery alone (no retransmission timeout, RFC 6675
//! §5), and at 1 % random loss SACK clearly beats RFC 6582 on the same seed. Every run checks
//! every byte (SHA-256 of the stream).

use std::time::Duration;

use tcpstack::sim::{run_transfer, DropPattern, LinkConfig, TransferConfig, TransferReport};
use tcpstack::tcp::CongestionAlgorithm;

/// 100 Mbit/s, 20 ms round trip, and a queue that never overflows: the only losses are the
/// scripted ones.
fn lossless_link() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(10),
        bandwidth_bps: Some(100_000_000),
        queue_packets: 10_000,
        ..LinkConfig::default()
    }
}

fn transfer(
    seed: u64,
    to_server: LinkConfig,
    bytes: usize,
    sack: bool,
    congestion: CongestionAlgorithm,
) -> TransferReport {
    let mut config = TransferConfig::new(seed, lossless_link(), bytes, 0);
    config.to_server = to_server;
    config.endpoint.connection.sack = sack;
    config.endpoint.connection.congestion = congestion;
    match run_transfer(&config) {
        Ok(report) => report,
        Err(error) => panic!("transfer failed: {error}"),
    }
}

/// Drops `offsets` of every `period` data packets; `period` exceeds the largest window (the
/// 256 KiB receive buffer is 180 segments), so each loss event falls in a window of its own.
fn scripted(offsets: &[u64]) -> LinkConfig {
    LinkConfig {
        drop_pattern: Some(DropPattern {
            period: 400,
            offsets: offsets.to_vec(),
        }),
        ..lossless_link()
    }
}

fn assert_recovered_without_rto(report: &TransferReport, losses_per_event: u64) {
    let stats = report.client_connection;
    let lost = report.to_server.lost;
    assert!(
        lost >= 10 * losses_per_event,
        "{lost} losses: too few to show anything"
    );
    assert_eq!(stats.rtos, 0, "{stats:?}");
    assert!(stats.sack, "SACK negotiated");
    assert_eq!(stats.fast_retransmits, lost / losses_per_event, "{stats:?}");
    assert_eq!(stats.sack_recoveries, stats.fast_retransmits, "{stats:?}");
    // Every lost segment is sent again. At most one rescue retransmission (RFC 6675 §4 rule
    // 4) per recovery adds to that, and the receiver's D-SACK shows each of those to be
    // spurious: the counters add up exactly.
    assert!(
        stats.retransmits <= lost + stats.fast_retransmits,
        "{stats:?}"
    );
    assert_eq!(
        stats.retransmits - stats.spurious_retransmits,
        lost,
        "{stats:?}"
    );
    assert_eq!(stats.cwnd_undos, 0, "real losses are never undone");
}

#[test]
fn one_loss_per_window_never_times_out_with_sack() {
    for congestion in [CongestionAlgorithm::Cubic, CongestionAlgorithm::NewReno] {
        let report = transfer(1, scripted(&[200]), 6 << 20, true, congestion);
        assert_recovered_without_rto(&report, 1);
    }
}

#[test]
fn two_losses_in_one_window_never_time_out_with_sack() {
    for congestion in [CongestionAlgorithm::Cubic, CongestionAlgorithm::NewReno] {
        let report = transfer(2, scripted(&[200, 203]), 6 << 20, true, congestion);
        assert_recovered_without_rto(&report, 2);
    }
}

/// The same seed, the same 1 % loss both ways, a 1 ms path with a 100-packet bottleneck queue
/// that slow start overflows: SACK repairs the burst of queue drops in one round trip, RFC 6582
/// needs a round trip per lost segment or a timeout. (The full table: `cargo bench -p tcpstack
/// --bench sim`.)
#[test]
fn sack_beats_newreno_at_one_percent_loss() {
    let link = LinkConfig {
        delay: Duration::from_micros(500),
        bandwidth_bps: Some(100_000_000),
        queue_packets: 100,
        loss: 0.01,
        ..LinkConfig::default()
    };
    let bytes = 4 << 20;
    let goodput = |sack| {
        let mut config = TransferConfig::new(1, link.clone(), bytes, 0);
        let connection = &mut config.endpoint.connection;
        connection.sack = sack;
        connection.congestion = CongestionAlgorithm::NewReno;
        connection.send_buffer = 4 << 20;
        connection.recv_buffer = 4 << 20;
        let report = run_transfer(&config).unwrap_or_else(|error| panic!("sack {sack}: {error}"));
        let mbit = bytes as f64 * 8.0 / report.transfer_time.as_secs_f64() / 1e6;
        (mbit, report.client_connection)
    };
    let (with_sack, sack_stats) = goodput(true);
    let (without, plain_stats) = goodput(false);
    println!(
        "1 % loss, 4 MB: SACK {with_sack:.1} Mbit/s ({sack_stats:?}), \
         no SACK {without:.1} Mbit/s ({plain_stats:?})"
    );
    assert!(sack_stats.sack_recoveries > 0);
    assert_eq!(plain_stats.sack_recoveries, 0);
    assert!(
        with_sack > 1.1 * without,
        "SACK {with_sack:.1} Mbit/s vs no SACK {without:.1} Mbit/s"
    );
}

/// Reordering without loss: segments overtaken by three others look lost and are fast
/// retransmitted, the receiver D-SACKs the second copies, and the sender counts them as
/// spurious and undoes the reductions (RFC 2883, RFC 3708, RFC 9438 §4.9).
#[test]
fn reordering_is_recognised_by_dsack_and_undone() {
    let link = LinkConfig {
        reorder: 0.01,
        reorder_delay: Duration::from_millis(5),
        ..lossless_link()
    };
    let report = transfer(3, link, 4 << 20, true, CongestionAlgorithm::Cubic);
    let stats = report.client_connection;
    assert_eq!(report.to_server.lost, 0);
    assert!(stats.fast_retransmits > 0, "{stats:?}");
    assert!(stats.dsacks_received > 0, "{stats:?}");
    // Nothing was lost: (almost) every retransmission is reported back as a duplicate (a
    // D-SACK block covering two retransmissions counts once).
    assert!(
        stats.spurious_retransmits * 10 >= stats.retransmits * 9,
        "{stats:?}"
    );
    assert!(stats.cwnd_undos > 0, "{stats:?}");
    assert_eq!(stats.rtos, 0);
}
