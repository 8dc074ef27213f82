//! Closing: active (FIN-WAIT-1/2, TIME-WAIT), passive (CLOSE-WAIT, LAST-ACK), simultaneous
//! (CLOSING), each loss of the close, abort and RST.

use super::*;
use crate::tcp::{ConnectionError, TimeWaitOutcome};

const MSL2: Duration = Duration::from_secs(60);

/// ESTABLISHED, then close(): FIN-WAIT-1 with our FIN (seq ISS+1) sent.
fn fin_wait_1() -> Harness {
    let mut h = Harness::established();
    h.conn.close();
    assert_eq!(h.conn.state(), State::FinWait1);
    h.expect_exact(F | A, ISS + 1, IRS + 1, SCALED_WINDOW, b"");
    h.expect_nothing();
    h
}

fn time_wait() -> Harness {
    let mut h = fin_wait_1();
    h.send(&seg(A, IRS + 1, ISS + 2));
    assert_eq!(h.conn.state(), State::FinWait2);
    h.send(&seg(F | A, IRS + 1, ISS + 2));
    assert_eq!(h.conn.state(), State::TimeWait);
    h.expect_exact(A, ISS + 2, IRS + 2, SCALED_WINDOW, b"");
    h.expect_nothing();
    h
}

#[test]
fn active_close_through_fin_wait_and_time_wait() {
    let mut h = time_wait();
    assert_eq!(h.drain_events(), vec![Event::Readable, Event::PeerClosed]);
    assert_eq!(h.conn.recv(&mut [0; 8]), Ok(0));
    let tw = h.conn.time_wait().expect("compact TIME-WAIT record");
    assert_eq!((tw.snd_nxt.0, tw.rcv_nxt.0), (ISS + 2, IRS + 2));
    assert_eq!(h.fire_next_timer(), MSL2);
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
    h.expect_nothing();
}

#[test]
fn fin_and_ack_together_in_fin_wait_1_go_straight_to_time_wait() {
    let mut h = fin_wait_1();
    h.send(&seg(F | A, IRS + 1, ISS + 2));
    assert_eq!(h.conn.state(), State::TimeWait);
    h.expect(A, ISS + 2, IRS + 2);
}

#[test]
fn lost_last_ack_in_time_wait_fin_is_reacked_and_2msl_restarts() {
    let mut h = time_wait();
    h.advance(Duration::from_secs(50));
    // Our ACK was lost: the peer retransmits its FIN.
    h.send(&seg(F | A, IRS + 1, ISS + 2));
    h.expect_exact(A, ISS + 2, IRS + 2, SCALED_WINDOW, b"");
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), Some(h.now + MSL2));
    assert_eq!(h.fire_next_timer(), MSL2);
    assert_eq!(h.conn.state(), State::Closed);
}

#[test]
fn time_wait_rules_for_rst_syn_and_old_segments() {
    let mut h = time_wait();
    let mut tw = h.conn.time_wait().expect("in TIME-WAIT");
    let now = h.now;
    assert_eq!(
        tw.handle_segment(&seg(A, IRS + 2, ISS + 2), 0, now),
        TimeWaitOutcome::Drop
    );
    let TimeWaitOutcome::Reply(ack) = tw.handle_segment(&seg(P | A, IRS + 1, ISS + 2), 3, now)
    else {
        panic!("old data is acknowledged");
    };
    assert_eq!((ack.flags, ack.seq.0, ack.ack.0), (A, ISS + 2, IRS + 2));
    // RFC 1337: no RST ends TIME-WAIT or is answered, exact or not.
    assert_eq!(
        tw.handle_segment(&seg(R, IRS + 50, 0), 0, now),
        TimeWaitOutcome::Drop
    );
    assert_eq!(
        tw.handle_segment(&seg(S, IRS + 100_000, 0), 0, now),
        TimeWaitOutcome::Reopen
    );
    assert!(matches!(
        tw.handle_segment(&seg(S, IRS, 0), 0, now),
        TimeWaitOutcome::Reply(_)
    ));
    assert_eq!(
        tw.handle_segment(&seg(R, IRS + 2, 0), 0, now),
        TimeWaitOutcome::Drop
    );
    // The connection applies the same rules.
    h.send(&seg(R, IRS + 2, 0));
    assert_eq!(h.conn.state(), State::TimeWait);
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), Some(tw.deadline));
}

#[test]
fn lost_fin_is_retransmitted_like_data() {
    // The handshake measured an RTT of 0, so RTO is at its 200 ms floor, then doubles.
    let mut h = fin_wait_1();
    assert_eq!(h.fire_next_timer(), ms(200));
    h.expect(F | A, ISS + 1, IRS + 1);
    assert_eq!(h.fire_next_timer(), ms(400));
    h.expect(F | A, ISS + 1, IRS + 1);
    h.send(&seg(A, IRS + 1, ISS + 2));
    assert_eq!(h.conn.state(), State::FinWait2);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn lost_ack_of_fin_peer_retransmits_and_we_reack() {
    // Passive side: the peer's FIN arrives, our ACK is lost, the FIN comes again.
    let mut h = Harness::established();
    h.send(&seg(F | A, IRS + 1, ISS + 1));
    assert_eq!(h.conn.state(), State::CloseWait);
    h.expect(A, ISS + 1, IRS + 2);
    h.send(&seg(F | A, IRS + 1, ISS + 1));
    h.expect_exact(A, ISS + 1, IRS + 2, SCALED_WINDOW, b"");
    h.expect_nothing();
    assert_eq!(h.conn.state(), State::CloseWait);
}

#[test]
fn passive_close_through_close_wait_and_last_ack() {
    let mut h = Harness::established();
    h.send(&seg(F | A, IRS + 1, ISS + 1));
    h.expect(A, ISS + 1, IRS + 2);
    assert_eq!(h.drain_events(), vec![Event::Readable, Event::PeerClosed]);
    // Half-close: we can still send.
    assert_eq!(h.conn.send(b"bye"), Ok(3));
    h.expect_exact(P | A, ISS + 1, IRS + 2, SCALED_WINDOW, b"bye");
    h.conn.close();
    assert_eq!(h.conn.state(), State::LastAck);
    h.expect(F | A, ISS + 4, IRS + 2);
    // The last ACK is lost: the FIN is retransmitted.
    h.send(&seg(A, IRS + 2, ISS + 4));
    assert_eq!(h.fire_next_timer(), ms(200));
    h.expect(F | A, ISS + 4, IRS + 2);
    h.send(&seg(A, IRS + 2, ISS + 5));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut h = fin_wait_1();
    h.send(&seg(F | A, IRS + 1, ISS + 1));
    assert_eq!(h.conn.state(), State::Closing);
    h.expect(A, ISS + 2, IRS + 2);
    h.send(&seg(A, IRS + 2, ISS + 2));
    assert_eq!(h.conn.state(), State::TimeWait);
    h.expect_nothing();
    assert_eq!(h.fire_next_timer(), MSL2);
    assert_eq!(h.conn.state(), State::Closed);
}

#[test]
fn fin_lost_in_closing_is_retransmitted() {
    let mut h = fin_wait_1();
    h.send(&seg(F | A, IRS + 1, ISS + 1));
    h.expect(A, ISS + 2, IRS + 2);
    assert_eq!(h.fire_next_timer(), ms(200));
    h.expect(F | A, ISS + 1, IRS + 2);
}

#[test]
fn fin_carrying_data_and_half_close_delivery() {
    let mut h = Harness::established();
    assert_eq!(h.conn.send(b"abc"), Ok(3));
    h.conn.close();
    // Data and FIN in one segment.
    h.expect_exact(F | P | A, ISS + 1, IRS + 1, SCALED_WINDOW, b"abc");
    h.send(&seg(A, IRS + 1, ISS + 5));
    assert_eq!(h.conn.state(), State::FinWait2);
    assert_eq!(h.conn.send(b"x"), Err(ConnectionError::Closing));
    // After our close, the peer's data still arrives, and its FIN with data.
    h.send_data(&seg(P | A, IRS + 1, ISS + 5), b"more");
    h.send_data(&seg(F | P | A, IRS + 5, ISS + 5), b"end");
    assert_eq!(h.conn.state(), State::TimeWait);
    h.expect(A, ISS + 5, IRS + 9);
    assert_eq!(h.read_all(), b"moreend");
    assert_eq!(h.conn.recv(&mut [0; 4]), Ok(0));
}

#[test]
fn release_with_unread_data_resets() {
    let mut h = Harness::established();
    h.send_data(&seg(P | A, IRS + 1, ISS + 1), b"unread");
    h.expect(A, ISS + 1, IRS + 7);
    h.conn.release();
    assert_eq!(h.conn.state(), State::Closed);
    h.expect_exact(R, ISS + 1, 0, 0, b"");
    h.expect_nothing();
}

#[test]
fn data_after_release_resets_and_fin_wait_2_times_out() {
    // Data for a user that is gone: a RST (RFC 1122 §4.2.2.13), no ACK.
    let mut h = fin_wait_1();
    h.conn.release();
    h.send(&seg(A, IRS + 1, ISS + 2));
    assert_eq!(h.conn.state(), State::FinWait2);
    h.send_data(&seg(P | A, IRS + 1, ISS + 2), b"late");
    assert_eq!(h.conn.state(), State::Closed);
    h.expect_exact(R, ISS + 2, 0, 0, b"");
    h.expect_nothing();

    // A peer that never sends its FIN: FIN-WAIT-2 ends after fin_wait2_timeout, silently.
    let mut h = fin_wait_1();
    h.send(&seg(A, IRS + 1, ISS + 2));
    h.conn.release();
    assert_eq!(h.fire_next_timer(), Duration::from_secs(60));
    assert_eq!(h.conn.state(), State::Closed);
    h.expect_nothing();

    // Without release, the user may still read: FIN-WAIT-2 lasts and data is delivered.
    let mut h = fin_wait_1();
    h.send(&seg(A, IRS + 1, ISS + 2));
    assert_eq!(h.conn.poll_timeout(), None);
    h.send_data(&seg(P | A, IRS + 1, ISS + 2), b"late");
    assert_eq!(h.read_all(), b"late");
}

#[test]
fn abort_sends_rst_and_discards_buffers() {
    let mut h = Harness::established();
    h.send_data(&seg(P | A, IRS + 1, ISS + 1), b"unread");
    h.conn.send(b"unsent").expect("room");
    h.conn.abort();
    assert_eq!(h.conn.state(), State::Closed);
    h.expect_exact(R, ISS + 1, 0, 0, b"");
    h.expect_nothing();
    assert_eq!(h.conn.recv(&mut [0; 8]), Err(ConnectionError::NotConnected));
    assert_eq!(h.conn.poll_timeout(), None);
    assert!(h.drain_events().ends_with(&[Event::Closed]));
    // A TCB that is gone answers like no connection.
    h.send(&seg(A, IRS + 7, ISS + 1));
    h.expect(R, ISS + 1, 0);
}

#[test]
fn abort_rst_goes_out_even_behind_a_full_queue_of_acks() {
    let mut h = Harness::established();
    h.out_of_order_batch(IRS + 1, ISS + 1, 100);
    h.conn.abort();
    // The duplicate ACKs are moot once the peer's TCB is gone: the RST alone leaves.
    h.expect_exact(R, ISS + 1, 0, 0, b"");
    h.expect_nothing();
    assert_eq!(h.conn.state(), State::Closed);
}

#[test]
fn a_reset_answering_a_stray_displaces_a_queued_ack() {
    let mut h = Harness::established();
    h.out_of_order_batch(IRS + 1, ISS + 1, 100);
    h.send(&seg(R, IRS + 1, 0));
    assert_eq!(h.conn.state(), State::Closed);
    // A TCB that is gone answers like no connection (RFC 9293 §3.10.7.1), full queue or not.
    h.send(&seg(A, IRS + 1, ISS + 7));
    let out = h.drain();
    assert_eq!(out.len(), 64, "the queue stays bounded");
    let last = &out[63].header;
    assert_eq!((last.flags, last.seq.0), (R, ISS + 7));
    assert!(out[..63].iter().all(|s| s.header.flags == A));
}

#[test]
fn exact_rst_resets_in_window_rst_gets_challenge_ack() {
    let mut h = Harness::established();
    // Outside the window: silently dropped.
    h.send(&seg(R, IRS.wrapping_sub(10), 0));
    h.expect_nothing();
    // In the window but not RCV.NXT: challenge ACK (RFC 5961 §3.2).
    h.send(&seg(R, IRS + 1000, 0));
    h.expect_exact(A, ISS + 1, IRS + 1, SCALED_WINDOW, b"");
    h.expect_nothing();
    assert_eq!(h.conn.state(), State::Established);
    h.send(&seg(R, IRS + 1, 0));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::Reset, Event::Closed]);
    assert_eq!(h.conn.recv(&mut [0; 8]), Err(ConnectionError::Reset));
    assert_eq!(h.conn.send(b"x"), Err(ConnectionError::Reset));
    h.expect_nothing();
}

#[test]
fn syn_in_established_gets_challenge_ack() {
    let mut h = Harness::established();
    h.send(&seg(S, IRS + 500, 0));
    h.expect(A, ISS + 1, IRS + 1);
    h.send(&seg(S, IRS.wrapping_sub(500), 0));
    h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.state(), State::Established);
}

#[test]
fn rst_in_closing_states_just_closes() {
    let mut h = fin_wait_1();
    h.send(&seg(F | A, IRS + 1, ISS + 1));
    assert_eq!(h.conn.state(), State::Closing);
    h.expect(A, ISS + 2, IRS + 2);
    h.send(&seg(R, IRS + 2, 0));
    assert_eq!(h.conn.state(), State::Closed);
    assert!(!h.drain_events().contains(&Event::Reset));
}
