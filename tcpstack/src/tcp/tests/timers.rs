//! Retransmission (RFC 6298, Karn, backoff, retry limits), fast retransmit and NewReno recovery
//! (RFC 5681, RFC 6582), keepalive and the user timeout.

use super::*;
use crate::tcp::{CongestionAlgorithm, ConnectionError, KeepaliveConfig};

const MSS: u32 = 1460;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// ESTABLISHED after a handshake whose RTT was `rtt`.
fn established_after(config: Config, rtt: Duration) -> Harness {
    let mut h = Harness::client(config, ISS);
    h.expect(S, ISS, 0);
    h.now += rtt;
    let mut synack = seg(S | A, IRS, ISS + 1);
    synack.options = syn_options(1460, Some(7));
    h.send(&synack);
    h.expect(A, ISS + 1, IRS + 1);
    // Scale the peer's window from now on: 65535 << 7.
    h.send(&seg(A, IRS + 1, ISS + 1));
    h.drain_events();
    h
}

#[test]
fn rto_follows_rfc6298_samples() {
    let mut h = established_after(Config::default(), ms(100));
    let stats = h.conn.stats();
    assert_eq!(
        (stats.srtt, stats.rttvar, stats.rto),
        (Some(ms(100)), ms(50), ms(300))
    );
    h.conn.send(b"x").expect("room");
    h.expect(P | A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + ms(300)));
    h.now += ms(200);
    h.send(&seg(A, IRS + 1, ISS + 2));
    let stats = h.conn.stats();
    assert_eq!(stats.srtt, Some(Duration::from_micros(112_500)));
    assert_eq!(stats.rttvar, Duration::from_micros(62_500));
    assert_eq!(stats.rto, Duration::from_micros(362_500));
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn rto_backs_off_and_karn_ignores_retransmitted_samples() {
    let mut h = established_after(Config::default(), ms(100));
    h.conn.send(b"data").expect("room");
    h.expect(P | A, ISS + 1, IRS + 1);
    for interval in [300, 600, 1200] {
        assert_eq!(h.fire_next_timer(), ms(interval));
        h.expect_exact(P | A, ISS + 1, IRS + 1, SCALED_WINDOW, b"data");
        h.expect_nothing();
    }
    h.now += ms(10);
    h.send(&seg(A, IRS + 1, ISS + 5));
    let stats = h.conn.stats();
    assert_eq!(
        stats.srtt,
        Some(ms(100)),
        "no sample from a retransmitted segment"
    );
    assert_eq!(
        stats.rto,
        ms(2400),
        "RTO stays backed off until a valid sample"
    );
    assert_eq!((stats.rtos, stats.retransmits), (3, 3));
    // The next segment is timed again and its sample restores the RTO.
    h.conn.send(b"more").expect("room");
    h.expect(P | A, ISS + 5, IRS + 1);
    h.now += ms(100);
    h.send(&seg(A, IRS + 1, ISS + 9));
    // RTTVAR = 3/4 · 50 ms, SRTT = 100 ms: RTO = 100 + 4 · 37.5 = 250 ms.
    assert_eq!(h.conn.stats().rto, ms(250));
}

#[test]
fn data_retries_exhausted_times_out_without_rst() {
    let config = Config {
        data_retries: 3,
        ..Config::default()
    };
    let mut h = established_after(config, ms(100));
    h.conn.send(b"data").expect("room");
    h.expect(P | A, ISS + 1, IRS + 1);
    for interval in [300, 600, 1200] {
        assert_eq!(h.fire_next_timer(), ms(interval));
        h.expect(P | A, ISS + 1, IRS + 1);
    }
    assert_eq!(h.fire_next_timer(), ms(2400));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::TimedOut, Event::Closed]);
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), None);
    assert_eq!(h.conn.send(b"x"), Err(ConnectionError::TimedOut));
}

#[test]
fn rto_goes_back_to_snd_una_with_a_one_segment_window() {
    let mut h = established_after(newreno(), ms(100));
    let data = payload(3 * MSS as usize);
    h.conn.send(&data).expect("room");
    for i in 0..3 {
        h.expect(
            A | if i == 2 { P } else { TcpFlags::empty() },
            ISS + 1 + i * MSS,
            IRS + 1,
        );
    }
    assert_eq!(h.fire_next_timer(), ms(300));
    assert_eq!(h.conn.stats().cwnd, MSS);
    assert_eq!(h.conn.stats().ssthresh, 2 * MSS);
    h.expect(A, ISS + 1, IRS + 1);
    h.expect_nothing();
    h.send(&seg(A, IRS + 1, ISS + 1 + MSS));
    // Slow start after an RTO: +1 SMSS, so two more segments (both retransmissions).
    h.expect(A, ISS + 1 + MSS, IRS + 1);
    h.expect(P | A, ISS + 1 + 2 * MSS, IRS + 1);
    h.expect_nothing();
    assert_eq!(h.conn.stats().retransmits, 3);
    // An ACK for everything, including what the first transmission already delivered.
    h.send(&seg(A, IRS + 1, ISS + 1 + 3 * MSS));
    assert_eq!(h.conn.poll_timeout(), None);
}

fn newreno() -> Config {
    Config {
        congestion: CongestionAlgorithm::NewReno,
        ..Config::default()
    }
}

/// Without SACK: limited transmit on duplicate ACKs 1 and 2 (RFC 3042), fast retransmit on the
/// third, PRR's sending amounts during recovery (RFC 6937 §3.1), a partial ACK's retransmission
/// (RFC 6582) and the exit at `recover`.
#[test]
fn fast_retransmit_and_newreno_partial_acks() {
    let config = Config {
        sack: false,
        ..newreno()
    };
    let mut h = established_after(config, ms(100));
    let data = payload(14 * MSS as usize);
    h.conn.send(&data).expect("room");
    for i in 0..10 {
        let s = h.expect(A, ISS + 1 + i * MSS, IRS + 1);
        assert_eq!(s.payload.len(), MSS as usize);
    }
    h.expect_nothing();
    // Segments 1 and 4 are lost; 2, 3 and 5–12 each produce a duplicate ACK.
    let dup = seg(A, IRS + 1, ISS + 1);
    // Limited transmit: one new segment on each of the first two duplicates.
    h.send(&dup);
    h.expect(A, ISS + 1 + 10 * MSS, IRS + 1);
    h.expect_nothing();
    h.send(&dup);
    h.expect(A, ISS + 1 + 11 * MSS, IRS + 1);
    h.expect_nothing();
    h.send(&dup);
    // Third duplicate: fast retransmit of the first unacknowledged segment. RecoverFS = 12
    // segments, ssthresh = 6.
    let s = h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(&s.payload[..], &data[..MSS as usize]);
    h.expect_nothing();
    assert_eq!(h.conn.stats().ssthresh, 6 * MSS);
    // PRR, each duplicate delivering one segment, pipe = 12 (then 13) − duplicates: the
    // proportional share CEIL(delivered · 6/12) while pipe > ssthresh, then ssthresh − pipe.
    let mut sent_per_ack = Vec::new();
    for _ in 0..5 {
        h.send(&dup);
        let mut n = 0;
        while h.recv().is_some() {
            n += 1;
        }
        sent_per_ack.push(n);
    }
    assert_eq!(sent_per_ack, [0, 1, 0, 0, 1]);
    // Partial ACK (segments 1–3): retransmit segment 4 at once (RFC 6582 §3.2 step 5).
    h.send(&seg(A, IRS + 1, ISS + 1 + 3 * MSS));
    let s = h.expect(A, ISS + 1 + 3 * MSS, IRS + 1);
    assert_eq!(&s.payload[..], &data[3 * MSS as usize..4 * MSS as usize]);
    h.expect_nothing();
    // Full ACK up to `recover` (the twelve first segments): leave recovery with
    // cwnd = ssthresh (RFC 6937 §3.1).
    h.send(&seg(A, IRS + 1, ISS + 1 + 12 * MSS));
    assert_eq!(h.conn.stats().cwnd, 6 * MSS);
    let stats = h.conn.stats();
    assert_eq!(
        (stats.fast_retransmits, stats.retransmits, stats.rtos),
        (1, 2, 0)
    );
    h.send(&seg(A, IRS + 1, ISS + 1 + 14 * MSS));
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn duplicate_acks_after_an_rto_do_not_trigger_fast_retransmit() {
    let mut h = established_after(Config::default(), ms(100));
    h.conn.send(&payload(4 * MSS as usize)).expect("room");
    for _ in 0..4 {
        h.recv().expect("segment");
    }
    h.fire_next_timer();
    h.expect(A, ISS + 1, IRS + 1);
    // Duplicates for data sent before the timeout (RFC 6582 §3.2 step 4 sets recover).
    for _ in 0..3 {
        h.send(&seg(A, IRS + 1, ISS + 1));
    }
    h.expect_nothing();
    assert_eq!(h.conn.stats().fast_retransmits, 0);
}

#[test]
fn keepalive_probes_then_gives_up_with_rst() {
    let config = Config {
        keepalive: Some(KeepaliveConfig::default()),
        ..Config::default()
    };
    let mut h = established_after(config, ms(100));
    assert_eq!(h.fire_next_timer(), Duration::from_secs(7200));
    // <SEQ=SND.NXT-1>, no data.
    h.expect_exact(A, ISS, IRS + 1, SCALED_WINDOW, b"");
    // An answer resets the idle timer.
    h.send(&seg(A, IRS + 1, ISS + 1));
    assert_eq!(
        h.conn.poll_timeout(),
        Some(h.now + Duration::from_secs(7200))
    );
    assert_eq!(h.fire_next_timer(), Duration::from_secs(7200));
    h.expect(A, ISS, IRS + 1);
    for _ in 1..9 {
        assert_eq!(h.fire_next_timer(), Duration::from_secs(75));
        h.expect(A, ISS, IRS + 1);
    }
    assert_eq!(h.fire_next_timer(), Duration::from_secs(75));
    h.expect_exact(R, ISS + 1, 0, 0, b"");
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn keepalive_is_off_by_default_and_can_be_enabled() {
    let mut h = established_after(Config::default(), ms(100));
    assert_eq!(h.conn.poll_timeout(), None);
    h.conn.set_keepalive(Some(KeepaliveConfig {
        idle: Duration::from_secs(10),
        interval: Duration::from_secs(1),
        probes: 1,
    }));
    assert_eq!(h.fire_next_timer(), Duration::from_secs(10));
    h.expect(A, ISS, IRS + 1);
    assert_eq!(h.fire_next_timer(), Duration::from_secs(1));
    h.expect(R, ISS + 1, 0);
}

#[test]
fn keepalive_rst_goes_out_even_behind_a_full_queue_of_acks() {
    let mut h = established_after(Config::default(), ms(100));
    h.conn.set_keepalive(Some(KeepaliveConfig {
        idle: Duration::from_secs(10),
        interval: Duration::from_secs(1),
        probes: 0,
    }));
    h.out_of_order_batch(IRS + 1, ISS + 1, 100);
    h.advance(Duration::from_secs(10));
    assert_eq!(h.conn.state(), State::Closed);
    h.expect_exact(R, ISS + 1, 0, 0, b"");
    h.expect_nothing();
    assert_eq!(h.drain_events(), vec![Event::TimedOut, Event::Closed]);
}

#[test]
fn user_timeout_aborts_unacknowledged_data() {
    let config = Config {
        user_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let mut h = established_after(config, ms(100));
    h.conn.send(b"data").expect("room");
    h.expect(P | A, ISS + 1, IRS + 1);
    let sent = h.now;
    // Retransmissions at 0.3, 0.9, 2.1 and 4.5 s; the user timeout wins at 5 s.
    while h.conn.state() != State::Closed {
        h.fire_next_timer();
        while h.recv().is_some() {}
    }
    assert_eq!(h.now - sent, Duration::from_secs(5));
    assert!(h.drain_events().contains(&Event::TimedOut));
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn user_timeout_also_bounds_a_zero_window() {
    let config = Config {
        user_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let mut h = established_after(config, ms(100));
    h.send(&with_window(seg(A, IRS + 1, ISS + 1), 0));
    h.conn.send(b"data").expect("room");
    h.expect_nothing();
    let stalled = h.now;
    while h.conn.state() != State::Closed {
        h.fire_next_timer();
        while h.recv().is_some() {}
    }
    assert_eq!(h.now - stalled, Duration::from_secs(5));
}

#[test]
fn cwnd_restarts_after_idle_longer_than_rto() {
    let mut h = established_after(Config::default(), ms(100));
    // Grow cwnd beyond the initial window with a few round trips of full segments.
    for round in 0..3u32 {
        h.conn.send(&payload(10 * MSS as usize)).expect("room");
        let mut last = 0;
        while let Some(s) = h.recv() {
            last = s.header.seq.0.wrapping_add(s.payload.len() as u32);
        }
        h.now += ms(100);
        h.send(&seg(A, IRS + 1, last));
        assert!(h.conn.stats().cwnd > 10 * MSS, "round {round}");
    }
    h.now += Duration::from_secs(5);
    h.conn.send(&payload(30 * MSS as usize)).expect("room");
    let mut sent = 0;
    while h.recv().is_some() {
        sent += 1;
    }
    assert_eq!(sent, 10, "restart window = IW after idle (RFC 5681 §4.1)");
}

#[test]
fn window_shrunk_to_zero_under_flight_is_probed_by_retransmissions_without_giving_up() {
    let config = Config {
        data_retries: 2,
        ..Config::default()
    };
    let mut h = established_after(config, ms(100));
    let data = payload(3 * MSS as usize);
    h.conn.send(&data).expect("room");
    while h.recv().is_some() {}
    // The peer takes the first segment and closes its window; the rest is in flight, dropped.
    h.send(&with_window(seg(A, IRS + 1, ISS + 1 + MSS), 0));
    h.expect_nothing();
    // The ACK's sample (0 ms) made RTO 87.5 + 4 · 62.5 = 337.5 ms; it doubles per probe.
    for doubling in 0..5 {
        assert_eq!(
            h.fire_next_timer(),
            Duration::from_micros(337_500 << doubling)
        );
        let s = h.expect(A, ISS + 1 + MSS, IRS + 1);
        assert_eq!(s.payload.len(), MSS as usize);
        h.expect_nothing();
        h.send(&with_window(seg(A, IRS + 1, ISS + 1 + MSS), 0));
    }
    assert_eq!(
        h.conn.state(),
        State::Established,
        "data_retries does not apply"
    );
    // The window opens and the last probe's data is taken: the rest goes.
    h.send(&with_window(seg(A, IRS + 1, ISS + 1 + 2 * MSS), 100));
    h.expect(P | A, ISS + 1 + 2 * MSS, IRS + 1);
    h.send(&seg(A, IRS + 1, ISS + 1 + 3 * MSS));
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn window_shrunk_to_zero_times_out_when_the_peer_falls_silent() {
    let mut h = established_after(Config::default(), ms(100));
    h.conn.send(&payload(2 * MSS as usize)).expect("room");
    while h.recv().is_some() {}
    h.send(&with_window(seg(A, IRS + 1, ISS + 1 + MSS), 0));
    let silent_since = h.now;
    while h.conn.state() != State::Closed {
        h.fire_next_timer();
        while h.recv().is_some() {}
    }
    assert!(h.now - silent_since > Duration::from_secs(120));
    assert!(h.drain_events().contains(&Event::TimedOut));
}
