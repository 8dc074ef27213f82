//! Seeded bidirectional transfers over impaired simulated links. Every run must deliver every
//! byte exactly once and in order (SHA-256 of both streams), finish with both endpoints empty
//! (TIME-WAIT over, no timer armed, no connection left) and never panic.
//!
//! `SIM_SEEDS=<n>` runs more seeds. A failing seed prints itself; replay it with
//! `SIM_SEED=<seed> cargo test -p tcpstack --test sim_transfers replay -- --nocapture`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tcpstack::sim::{run_transfer, LinkConfig, ReadRate, TransferConfig, TransferReport};

const SEEDS: u64 = 512;
const SHARDS: u64 = 8;

/// Mostly small transfers so that the suite stays fast, with a tail up to 4 MB.
fn transfer_size(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..100) {
        0..=4 => 0,
        5..=54 => rng.gen_range(1..=4 * 1024),
        55..=84 => rng.gen_range(4 * 1024..=128 * 1024),
        85..=97 => rng.gen_range(128 * 1024..=1024 * 1024),
        _ => rng.gen_range(1024 * 1024..=4 * 1024 * 1024),
    }
}

/// 0 for a quarter of the links, otherwise up to 20 %.
fn impairment(rng: &mut SmallRng) -> f64 {
    if rng.gen_bool(0.25) {
        0.0
    } else {
        rng.gen_range(0.0..0.2)
    }
}

fn random_link(rng: &mut SmallRng) -> LinkConfig {
    let delay = Duration::from_micros(rng.gen_range(100..50_000));
    LinkConfig {
        delay,
        bandwidth_bps: [
            None,
            Some(10_000_000),
            Some(100_000_000),
            Some(1_000_000_000),
        ][rng.gen_range(0..4)],
        queue_packets: rng.gen_range(16..=256),
        loss: impairment(rng),
        duplicate: impairment(rng),
        reorder: impairment(rng),
        reorder_delay: delay * 2,
        corrupt: impairment(rng),
        drop_pattern: None,
        delay_spike: None,
    }
}

/// The scenario a seed stands for: sizes in both directions and both links.
fn scenario(seed: u64) -> TransferConfig {
    let mut rng = SmallRng::seed_from_u64(seed);
    let client_bytes = transfer_size(&mut rng);
    let server_bytes = transfer_size(&mut rng);
    let mut config = TransferConfig::new(seed, random_link(&mut rng), client_bytes, server_bytes);
    config.to_client = random_link(&mut rng);
    // Up to 40 % of packets die on some links (loss plus corruption): give handshakes the
    // retries that takes, so that a run fails only for a real bug.
    let connection = &mut config.endpoint.connection;
    connection.syn_retries = 12;
    connection.synack_retries = 12;
    // Some runs with small buffers (windows that close and reopen), old-style peers (no window
    // scaling, the 536-byte default MSS) or Nagle off.
    if rng.gen_bool(0.3) {
        connection.recv_buffer = rng.gen_range(2 * 1024..=64 * 1024);
        connection.send_buffer = rng.gen_range(2 * 1024..=64 * 1024);
    }
    connection.window_scaling = rng.gen_bool(0.8);
    if rng.gen_bool(0.2) {
        connection.mss = 536;
    }
    connection.nodelay = rng.gen_bool(0.2);
    // Some runs with applications that read slowly, so that windows fill and probes go out.
    if rng.gen_bool(0.15) {
        config.read_rate = Some(ReadRate {
            bytes: rng.gen_range(512..=32 * 1024),
            every: Duration::from_millis(rng.gen_range(10..=100)),
        });
    }
    config
}

fn run_seed(seed: u64) -> Result<TransferReport, String> {
    run_config(seed, &scenario(seed))
}

fn run_config(seed: u64, config: &TransferConfig) -> Result<TransferReport, String> {
    let replay = format!(
        "replay: SIM_SEED={seed} cargo test -p tcpstack --test sim_transfers replay -- --nocapture"
    );
    match catch_unwind(AssertUnwindSafe(|| run_transfer(config))) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(error)) => Err(format!("seed {seed} failed: {error}\n  {replay}")),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("seed {seed} panicked: {message}\n  {replay}"))
        }
    }
}

/// `SIM_SEEDS=<n>` runs seeds 0..n instead, for a longer soak.
fn seed_count() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS)
}

fn run_shard(shard: u64) {
    let seeds = seed_count();
    let failures: Vec<String> = (0..seeds)
        .filter(|seed| seed % SHARDS == shard)
        .filter_map(|seed| run_seed(seed).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds / SHARDS,
        failures.join("\n")
    );
}

#[test]
fn seeds_shard_0() {
    run_shard(0);
}
#[test]
fn seeds_shard_1() {
    run_shard(1);
}
#[test]
fn seeds_shard_2() {
    run_shard(2);
}
#[test]
fn seeds_shard_3() {
    run_shard(3);
}
#[test]
fn seeds_shard_4() {
    run_shard(4);
}
#[test]
fn seeds_shard_5() {
    run_shard(5);
}
#[test]
fn seeds_shard_6() {
    run_shard(6);
}
#[test]
fn seeds_shard_7() {
    run_shard(7);
}

/// Replays `SIM_SEED` (seed 0 without it) and prints what happened; `SIM_TRACE=1` also prints
/// every packet.
#[test]
fn replay() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut config = scenario(seed);
    config.trace = std::env::var_os("SIM_TRACE").is_some();
    println!("seed {seed}: {config:#?}");
    match run_config(seed, &config) {
        Ok(report) => println!("{report:#?}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let seed = (0..SEEDS)
        .find(|&s| {
            let c = scenario(s);
            c.to_server.loss > 0.0 && c.to_client.reorder > 0.0 && c.client_bytes > 10_000
        })
        .expect("a lossy seed");
    let first = run_seed(seed).unwrap();
    let second = run_seed(seed).unwrap();
    assert_eq!(first, second);
    assert!(first.to_server.lost > 0 || first.to_client.lost > 0);
}

#[test]
fn one_megabyte_each_way_over_a_clean_link() {
    let link = LinkConfig::ideal(Duration::from_millis(5));
    let report = run_transfer(&TransferConfig::new(1, link, 1 << 20, 1 << 20)).unwrap();
    assert_eq!(report.client.retransmits + report.server.retransmits, 0);
    assert_eq!(report.client.drops.total() + report.server.drops.total(), 0);
    assert_eq!(report.client.connections_established, 1);
    assert_eq!(report.server.connections_established, 1);
    assert_eq!(report.client.active_opens, 1);
    assert_eq!(report.server.passive_opens, 1);
    // Both sides closed at about the same time: at least one went through TIME-WAIT.
    assert!(report.client.time_wait_entries + report.server.time_wait_entries >= 1);
    assert_eq!(report.client.connections_closed, 1);
    assert_eq!(report.server.connections_closed, 1);
}

#[test]
fn nothing_either_way() {
    let report = run_transfer(&TransferConfig::new(2, LinkConfig::default(), 0, 0)).unwrap();
    assert_eq!(report.client.connections_closed, 1);
}

#[test]
fn four_megabytes_through_loss_and_corruption() {
    let link = LinkConfig {
        loss: 0.05,
        corrupt: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        ..LinkConfig::default()
    };
    let report = run_transfer(&TransferConfig::new(3, link, 4 << 20, 1000)).unwrap();
    assert!(report.client.retransmits > 0);
    // Every corrupted packet was caught by a checksum and counted.
    let caught = report.client.drops.wire.total() + report.server.drops.wire.total();
    let corrupted = report.to_server.corrupted + report.to_client.corrupted;
    assert_eq!(caught, corrupted);
}

#[test]
fn a_slow_reader_paces_the_sender_through_a_small_window() {
    let mut config = TransferConfig::new(4, LinkConfig::default(), 300_000, 0);
    config.endpoint.connection.recv_buffer = 8 * 1024;
    config.read_rate = Some(ReadRate {
        bytes: 1000,
        every: Duration::from_millis(20),
    });
    let report = run_transfer(&config).unwrap();
    // 300 kB at 1000 bytes per 20 ms takes six seconds of reading, less the first window.
    assert!(
        report.transfer_time >= Duration::from_millis(5800),
        "{report:?}"
    );
    assert!(
        report.server.packets_out > 100,
        "window updates as the reader drains"
    );
}

#[test]
fn a_transfer_through_a_syn_cookie() {
    let mut config = TransferConfig::new(5, LinkConfig::default(), 200_000, 300_000);
    config.endpoint.max_half_open = 0;
    let report = run_transfer(&config).unwrap();
    assert_eq!(report.server.syn_cookies_sent, 1);
    assert_eq!(report.server.syn_cookies_accepted, 1);
    assert_eq!(report.server.connections_established, 1);
}

/// Seeds beyond the default range that once failed, kept as regressions.
fn run_regressions(seeds: &[u64]) {
    let failures: Vec<String> = seeds.iter().filter_map(|&s| run_seed(s).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Our FIN queued behind data that a small window holds back, then the peer's FIN: CLOSING
/// must keep the persist timer, or a lost window update stalls the connection for good.
#[test]
fn regression_closing_with_data_held_back_by_the_window() {
    run_regressions(&[1869, 1961, 2751]);
}

/// A passive closer whose application had not read everything when the last ACK arrived:
/// the endpoint must not free the connection with data still unread.
#[test]
fn regression_closed_connections_keep_their_unread_data() {
    run_regressions(&[706, 869, 2147]);
}
