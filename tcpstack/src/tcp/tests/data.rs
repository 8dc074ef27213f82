//! Data transfer: delayed ACK, reassembly, Nagle, windows and their scaling, SWS avoidance,
//! zero-window probing, and the acceptability test.

use super::*;
use crate::tcp::ConnectionError;

const MSS: usize = 1460;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

/// The window field we announce after `unread` bytes sit in a 256 KiB buffer (shift 7, edge held).
fn window_after(unread: u32) -> u16 {
    (262_144 - unread).div_ceil(128) as u16
}

/// Segments acknowledged at once at the start (quick-ACK mode, as Linux).
const QUICK_ACKS: u32 = 16;

/// A connection whose quick-ACK mode is behind it: its first 16 one-byte segments came, were
/// acknowledged at once and read, and RCV.NXT is IRS + 1, so delayed ACKs apply. (The window's
/// right edge stays where those bytes left it: they moved it by less than an MSS.)
pub(super) fn past_quick_acks() -> Harness {
    let irs = IRS - QUICK_ACKS;
    let mut h = Harness::established_with(Config::default(), ISS, irs);
    for i in 0..QUICK_ACKS {
        h.send_data(&seg(A, irs + 1 + i, ISS + 1), b"q");
        h.expect(A, ISS + 1, irs + 2 + i);
    }
    assert_eq!(h.read_all(), [b'q'; QUICK_ACKS as usize]);
    h.drain_events();
    h.expect_nothing();
    h
}

#[test]
fn in_order_data_is_acked_after_the_delayed_ack_timeout() {
    let mut h = past_quick_acks();
    h.send_data(&seg(P | A, IRS + 1, ISS + 1), b"hello");
    assert_eq!(h.drain_events(), vec![Event::Readable]);
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), Some(h.now + ms(40)));
    h.advance(ms(39));
    h.expect_nothing();
    h.advance(ms(1));
    h.expect(A, ISS + 1, IRS + 6);
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), None);
    assert_eq!(h.read_all(), b"hello");
    assert_eq!(h.conn.recv(&mut [0; 4]), Err(ConnectionError::WouldBlock));
}

#[test]
fn every_second_full_segment_is_acked_at_once() {
    let mut h = past_quick_acks();
    let data = payload(2 * MSS);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..MSS]);
    h.expect_nothing();
    h.send_data(&seg(A, IRS + 1 + MSS as u32, ISS + 1), &data[MSS..]);
    h.expect(A, ISS + 1, IRS + 1 + 2 * MSS as u32);
    assert_eq!(h.conn.poll_timeout(), None, "the delayed ACK was sent");
    assert_eq!(h.read_all(), data);
}

#[test]
fn out_of_order_data_is_acked_at_once_and_reassembled() {
    let mut h = Harness::established();
    let data = payload(300);
    h.send_data(&seg(A, IRS + 201, ISS + 1), &data[200..]);
    h.expect_exact(A, ISS + 1, IRS + 1, SCALED_WINDOW, b"");
    h.send_data(&seg(A, IRS + 101, ISS + 1), &data[100..200]);
    h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.recv(&mut [0; 10]), Err(ConnectionError::WouldBlock));
    // The hole fills: everything is acknowledged immediately (RFC 5681 §4.2).
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..100]);
    h.expect_exact(A, ISS + 1, IRS + 301, window_after(300), b"");
    assert_eq!(h.read_all(), data);
}

#[test]
fn duplicate_and_overlapping_segments_deliver_each_byte_once() {
    let mut h = Harness::established();
    let data = payload(50);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..30]);
    // Overlaps what we have and adds 20 more bytes.
    h.send_data(&seg(A, IRS + 11, ISS + 1), &data[10..50]);
    h.advance(ms(40));
    h.expect(A, ISS + 1, IRS + 51);
    // An old duplicate is acknowledged at once.
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..30]);
    h.expect(A, ISS + 1, IRS + 51);
    assert_eq!(h.read_all(), data);
}

#[test]
fn ack_of_unsent_data_is_answered_and_dropped() {
    let mut h = Harness::established();
    h.send_data(&seg(P | A, IRS + 1, ISS + 100), b"data");
    h.expect(A, ISS + 1, IRS + 1);
    h.expect_nothing();
    assert_eq!(h.conn.recv(&mut [0; 4]), Err(ConnectionError::WouldBlock));
}

#[test]
fn segment_without_ack_is_dropped() {
    let mut h = Harness::established();
    h.send_data(&seg(P, IRS + 1, 0), b"data");
    h.expect_nothing();
    assert_eq!(h.conn.recv(&mut [0; 4]), Err(ConnectionError::WouldBlock));
}

#[test]
fn sends_an_initial_window_of_ten_segments_then_waits_for_acks() {
    let mut h = Harness::established();
    let data = payload(20 * MSS);
    assert_eq!(h.conn.send(&data), Ok(data.len()));
    for i in 0..10u32 {
        let s = h.expect(A, ISS + 1 + i * MSS as u32, IRS + 1);
        assert_eq!(s.payload.len(), MSS);
    }
    h.expect_nothing();
    // An ACK of two segments opens room for four more (slow start adds 2·SMSS).
    h.send(&seg(A, IRS + 1, ISS + 1 + 2 * MSS as u32));
    for i in 10..14u32 {
        h.expect(A, ISS + 1 + i * MSS as u32, IRS + 1);
    }
    h.expect_nothing();
    assert_eq!(h.conn.stats().cwnd, 12 * MSS as u32);
}

#[test]
fn last_segment_of_a_write_carries_psh() {
    let mut h = Harness::established();
    let data = payload(MSS + 10);
    h.conn.send(&data).expect("room");
    h.expect_exact(A, ISS + 1, IRS + 1, SCALED_WINDOW, &data[..MSS]);
    h.expect_exact(
        P | A,
        ISS + 1 + MSS as u32,
        IRS + 1,
        SCALED_WINDOW,
        &data[MSS..],
    );
}

#[test]
fn nagle_holds_small_segments_while_a_small_one_is_in_flight() {
    let mut h = Harness::established();
    h.conn.send(b"a").expect("room");
    h.expect_exact(P | A, ISS + 1, IRS + 1, SCALED_WINDOW, b"a");
    h.conn.send(b"b").expect("room");
    h.conn.send(b"c").expect("room");
    h.expect_nothing();
    h.send(&seg(A, IRS + 1, ISS + 2));
    h.expect_exact(P | A, ISS + 2, IRS + 1, SCALED_WINDOW, b"bc");
}

#[test]
fn nodelay_sends_small_segments_at_once() {
    let mut h = Harness::established();
    h.conn.set_nodelay(true);
    h.conn.send(b"a").expect("room");
    h.expect(P | A, ISS + 1, IRS + 1);
    h.conn.send(b"b").expect("room");
    h.expect_exact(P | A, ISS + 2, IRS + 1, SCALED_WINDOW, b"b");
}

#[test]
fn peer_window_is_scaled_except_in_the_syn() {
    let mut h = Harness::established();
    // The SYN-ACK's 65535 was unscaled; now 20 << 7 = 2560 bytes.
    h.send(&with_window(seg(A, IRS + 1, ISS + 1), 20));
    let data = payload(3000);
    h.conn.send(&data).expect("room");
    h.expect_exact(A, ISS + 1, IRS + 1, SCALED_WINDOW, &data[..MSS]);
    // 1100 more would fit, but less than an MSS while data is in flight: SWS avoidance waits.
    h.expect_nothing();
    h.send(&with_window(seg(A, IRS + 1, ISS + 1461), 20));
    h.expect_exact(A, ISS + 1461, IRS + 1, SCALED_WINDOW, &data[MSS..2 * MSS]);
    h.expect_exact(P | A, ISS + 2921, IRS + 1, SCALED_WINDOW, &data[2 * MSS..]);
    h.expect_nothing();
}

#[test]
fn sender_sws_avoidance_waits_for_a_useful_window() {
    let mut h = Harness::established();
    // max(SND.WND) so far is 65535; 10 << 7 = 1280 < half of it and less than an MSS.
    h.send(&with_window(seg(A, IRS + 1, ISS + 1), 10));
    h.conn.send(&payload(5000)).expect("room");
    h.expect_nothing();
    // The persist timer doubles as the SWS override timer: after it, the small window is used.
    assert_eq!(h.fire_next_timer(), ms(200));
    let s = h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(s.payload.len(), 1280);
}

#[test]
fn zero_window_is_probed_with_backoff_until_it_opens() {
    let mut h = Harness::established();
    h.send(&with_window(seg(A, IRS + 1, ISS + 1), 0));
    h.conn.send(b"waiting").expect("room");
    h.expect_nothing();
    // RTO is 200 ms (the handshake's sample); probes at 200, 400, 800 ms intervals.
    for (i, interval) in [200, 400, 800, 1600].into_iter().enumerate() {
        assert_eq!(h.fire_next_timer(), ms(interval), "probe {i}");
        h.expect_exact(A, ISS, IRS + 1, SCALED_WINDOW, b"");
        h.expect_nothing();
        h.send(&with_window(seg(A, IRS + 1, ISS + 1), 0));
        h.expect_nothing();
    }
    h.send(&with_window(seg(A, IRS + 1, ISS + 1), 100));
    h.expect_exact(P | A, ISS + 1, IRS + 1, SCALED_WINDOW, b"waiting");
    h.send(&seg(A, IRS + 1, ISS + 8));
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn our_window_closes_as_the_application_lags_and_reopens_with_an_update() {
    let config = Config {
        recv_buffer: 4000,
        // A fixed buffer: no auto-tuning, window scale 0.
        recv_buffer_max: 0,
        ..Config::default()
    };
    let mut h = Harness::established_with(config, ISS, IRS);
    let data = payload(4000);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..1460]);
    h.send_data(&seg(A, IRS + 1461, ISS + 1), &data[1460..2920]);
    // No scaling needed for 4000 bytes: shift 0, window counts down.
    h.expect_exact(A, ISS + 1, IRS + 2921, 4000 - 2920, b"");
    h.send_data(&seg(A, IRS + 2921, ISS + 1), &data[2920..]);
    h.advance(ms(40));
    h.expect_exact(A, ISS + 1, IRS + 4001, 0, b"");
    // Beyond the window: not acceptable, just acknowledged.
    h.send_data(&seg(A, IRS + 4001, ISS + 1), b"more");
    h.expect_exact(A, ISS + 1, IRS + 4001, 0, b"");
    // A zero-window probe (old sequence number) gets the same answer.
    h.send(&seg(A, IRS + 4000, ISS + 1));
    h.expect_exact(A, ISS + 1, IRS + 4001, 0, b"");
    // Reading less than an MSS does not move the edge (receiver SWS avoidance)...
    let mut small = [0u8; 1000];
    assert_eq!(h.conn.recv(&mut small), Ok(1000));
    h.expect_nothing();
    // ...reading an MSS or more sends a window update.
    let mut more = [0u8; 1000];
    assert_eq!(h.conn.recv(&mut more), Ok(1000));
    h.expect_exact(A, ISS + 1, IRS + 4001, 2000, b"");
    h.expect_nothing();
}

#[test]
fn fin_at_zero_window_is_accepted() {
    let config = Config {
        recv_buffer: 1000,
        // A fixed buffer: no auto-tuning, window scale 0.
        recv_buffer_max: 0,
        ..Config::default()
    };
    let mut h = Harness::established_with(config, ISS, IRS);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &payload(1000));
    h.advance(ms(40));
    h.expect_exact(A, ISS + 1, IRS + 1001, 0, b"");
    h.send(&seg(F | A, IRS + 1001, ISS + 1));
    h.expect(A, ISS + 1, IRS + 1002);
    assert_eq!(h.conn.state(), State::CloseWait);
}

#[test]
fn out_of_order_fin_is_processed_when_the_hole_fills() {
    let mut h = Harness::established();
    h.send_data(&seg(F | A, IRS + 6, ISS + 1), b"world");
    h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.state(), State::Established);
    h.send_data(&seg(A, IRS + 1, ISS + 1), b"hello");
    assert_eq!(h.conn.state(), State::CloseWait);
    h.expect(A, ISS + 1, IRS + 12);
    assert_eq!(h.read_all(), b"helloworld");
    assert_eq!(h.conn.recv(&mut [0; 4]), Ok(0));
}

#[test]
fn data_after_our_fin_is_still_acked_when_peer_wrote_everything() {
    let mut h = Harness::established();
    h.conn.close();
    h.expect(F | A, ISS + 1, IRS + 1);
    h.send_data(&seg(P | A, IRS + 1, ISS + 1), b"late");
    assert_eq!(h.conn.state(), State::FinWait1);
    h.advance(ms(40));
    h.expect(A, ISS + 2, IRS + 5);
    assert_eq!(h.read_all(), b"late");
}

#[test]
fn send_buffer_is_bounded_and_writable_follows_acks() {
    let config = Config {
        send_buffer: 3000,
        ..Config::default()
    };
    let mut h = Harness::established_with(config, ISS, IRS);
    assert_eq!(h.conn.send(&payload(5000)), Ok(3000));
    assert_eq!(h.conn.send(b"x"), Ok(0));
    h.expect(A, ISS + 1, IRS + 1);
    h.expect(A, ISS + 1461, IRS + 1);
    h.expect(P | A, ISS + 2921, IRS + 1);
    h.send(&seg(A, IRS + 1, ISS + 1461));
    assert_eq!(h.drain_events(), vec![Event::Writable]);
    assert_eq!(h.conn.send_capacity(), 1460);
}

#[test]
fn ack_older_than_the_largest_window_is_answered_and_dropped() {
    // RFC 5961 §5.2: SEG.ACK must lie in [SND.UNA - MAX.SND.WND, SND.NXT].
    let mut h = Harness::established();
    h.send_data(&seg(P | A, IRS + 1, ISS.wrapping_sub(70_000)), b"data");
    h.expect(A, ISS + 1, IRS + 1);
    h.expect_nothing();
    assert_eq!(h.conn.recv(&mut [0; 4]), Err(ConnectionError::WouldBlock));
    // An old ACK within that range is fine: the data is taken.
    h.send_data(&seg(P | A, IRS + 1, ISS), b"data");
    assert_eq!(h.read_all(), b"data");
}

#[test]
fn reassembly_is_bounded_whatever_the_peer_sends() {
    let config = Config {
        recv_buffer: 4000,
        // A fixed buffer: no auto-tuning, window scale 0.
        recv_buffer_max: 0,
        ..Config::default()
    };
    let mut h = Harness::established_with(config, ISS, IRS);
    // Hundreds of one-byte islands, most beyond the window: nothing grows, nothing breaks.
    for i in 0..500u32 {
        h.send_data(&seg(A, IRS + 2 + 3 * i, ISS + 1), b"x");
        while h.recv().is_some() {}
    }
    h.conn.check_invariants(h.now);
    assert_eq!(h.conn.recv_available(), 0);
    let data = payload(4000);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data);
    assert_eq!(h.read_all(), data);
}

#[test]
fn full_sized_means_the_peers_segment_size_for_delayed_ack() {
    // The peer's path allows 1200-byte segments only: every second one is still acked at once.
    let mut h = past_quick_acks();
    let data = payload(2400);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..1200]);
    h.expect_nothing();
    h.send_data(&seg(A, IRS + 1201, ISS + 1), &data[1200..]);
    h.expect(A, ISS + 1, IRS + 2401);
}

/// A Linux sender fills a scaled window to its exact right edge. When the free space is no
/// multiple of 2^shift the window field is rounded up (an offered window never shrinks, RFC 9293
/// §3.8.6.2.2), and the bytes up to that rounded edge must be kept, not cut off: a cut tail cost
/// every buffer-full a 200 ms retransmission timeout.
#[test]
fn data_up_to_a_rounded_up_scaled_window_edge_is_kept() {
    const SHIFT: u32 = 7;
    let mut h = Harness::established();
    let mut next_seq = IRS.wrapping_add(1);
    let mut right_edge = next_seq.wrapping_add(u32::from(SCALED_WINDOW) << SHIFT);
    let mut unread = 0u32;
    for round in 0..8u32 {
        let mut last_ack = None;
        while next_seq != right_edge {
            let len = right_edge.wrapping_sub(next_seq).min(1448);
            h.send_data(&seg(A, next_seq, ISS + 1), &payload(len as usize));
            next_seq = next_seq.wrapping_add(len);
            unread += len;
            while let Some(s) = h.recv() {
                last_ack = Some(s.header);
            }
        }
        h.advance(ms(40));
        while let Some(s) = h.recv() {
            last_ack = Some(s.header);
        }
        let ack = last_ack.expect("the data is acknowledged");
        assert_eq!(
            ack.ack.0, next_seq,
            "round {round}: bytes inside the window were dropped"
        );
        // The application reads so much that the free space becomes odd, no multiple of 2^SHIFT.
        let keep_unread = 131_067 - 2 * round;
        let mut buf = vec![0u8; (unread - keep_unread) as usize];
        assert_eq!(h.conn.recv(&mut buf), Ok(buf.len()));
        unread -= buf.len() as u32;
        let update = h.recv().expect("a window update");
        assert_eq!(update.header.ack.0, next_seq);
        right_edge = next_seq.wrapping_add(u32::from(update.header.window) << SHIFT);
        let free_space = (Config::default().recv_buffer as u32).saturating_sub(unread);
        assert!(
            right_edge.wrapping_sub(next_seq) > free_space,
            "round {round}: a window rounded up past the free space is what this test is about"
        );
    }
}

#[test]
fn an_ack_exactly_at_the_right_edge_of_our_window_is_processed() {
    // A Linux peer that filled our window sits with SND.NXT at its right edge; its ACKs carry
    // that sequence number and must still acknowledge our data (found against Linux: ignoring
    // them stalled an echo server for minutes).
    let config = Config {
        recv_buffer: 2000,
        // A fixed buffer: no auto-tuning, window scale 0.
        recv_buffer_max: 0,
        ..Config::default()
    };
    let mut h = Harness::established_with(config, ISS, IRS);
    h.conn.set_nodelay(true);
    h.conn.send(b"abc").expect("room");
    h.expect(P | A, ISS + 1, IRS + 1);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &payload(1500));
    h.advance(ms(40));
    h.expect_exact(A, ISS + 4, IRS + 1501, 500, b"");
    // The edge is IRS + 2001: a bare ACK there (its text was lost or not yet arrived).
    h.send(&seg(A, IRS + 2001, ISS + 4));
    assert_eq!(h.conn.poll_timeout(), None, "our data is acknowledged");
    h.expect_nothing();
}

/// Data the window turns away is counted: a whole segment beyond the right edge, and the tail
/// of one that runs past it (what `serve`'s stats report as receive-side loss).
#[test]
fn data_outside_the_window_is_counted() {
    let config = Config {
        recv_buffer: 8192,
        ..Config::default()
    };
    let mut h = Harness::established_with(config, ISS, IRS);
    h.send_data(&seg(A, IRS.wrapping_add(1_000_000), ISS + 1), &payload(100));
    h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.stats().receive_drops.beyond_window, 1);
    assert_eq!(h.conn.stats().receive_drops.trimmed_bytes, 0);
    let sent = 3 * 8192;
    h.send_data(&seg(A, IRS + 1, ISS + 1), &payload(sent));
    let kept = h.read_all().len() as u64;
    assert!(
        kept < sent as u64,
        "the window was smaller than the segment"
    );
    assert_eq!(
        h.conn.stats().receive_drops.trimmed_bytes,
        sent as u64 - kept
    );
    assert_eq!(h.conn.stats().receive_drops.beyond_window, 1);
}
