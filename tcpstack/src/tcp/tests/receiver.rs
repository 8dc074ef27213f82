//! The receiver side of issue 5: SACK blocks in our ACKs (RFC 2018 §4) and D-SACK (RFC 2883 §4).

use super::*;
use crate::tcp::{TimeWait, TimeWaitOutcome, TimeWaitTimestamps, TimestampClock};
use crate::wire::{SackBlock, Timestamps};

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

/// A client past the handshake whose peer offered SACK-permitted (and timestamps if `ts`).
fn established_with_sack() -> Harness {
    let mut h = Harness::client(Config::default(), ISS);
    h.recv().expect("SYN");
    let mut synack = seg(S | A, IRS, ISS + 1);
    synack.options = syn_options(1460, Some(7));
    synack.options.sack_permitted = true;
    h.send(&synack);
    h.expect(A, ISS + 1, IRS + 1);
    h.drain_events();
    h
}

/// `[IRS + 1 + start, IRS + 1 + end)`: offsets from the first data byte.
fn block(start: u32, end: u32) -> SackBlock {
    SackBlock {
        start: SeqNum(IRS + 1 + start),
        end: SeqNum(IRS + 1 + end),
    }
}

/// Sends `data[start..end]` and returns the SACK blocks of the ACK that must follow: at once,
/// or, for a duplicate ACK that SACK compression holds back, within its 1 ms.
#[track_caller]
fn deliver(h: &mut Harness, data: &[u8], start: usize, end: usize, ack: u32) -> Vec<SackBlock> {
    h.send_data(&seg(A, IRS + 1 + start as u32, ISS + 1), &data[start..end]);
    if h.conn.poll_timeout().is_some_and(|t| t <= h.now + ms(1)) {
        h.fire_next_timer();
    }
    let reply = h.expect(A, ISS + 1, IRS + 1 + ack);
    h.expect_nothing();
    reply.header.options.sack_blocks().to_vec()
}

#[test]
fn sack_blocks_list_the_newest_range_first_then_the_most_recent() {
    let mut h = established_with_sack();
    let data = payload(1200);
    assert_eq!(deliver(&mut h, &data, 200, 300, 0), [block(200, 300)]);
    assert_eq!(
        deliver(&mut h, &data, 400, 500, 0),
        [block(400, 500), block(200, 300)]
    );
    assert_eq!(
        deliver(&mut h, &data, 600, 700, 0),
        [block(600, 700), block(400, 500), block(200, 300)]
    );
    // Without timestamps four blocks fit in the 40 bytes of options.
    assert_eq!(
        deliver(&mut h, &data, 800, 900, 0),
        [
            block(800, 900),
            block(600, 700),
            block(400, 500),
            block(200, 300)
        ]
    );
    // A fifth range pushes out the one reported longest ago.
    assert_eq!(
        deliver(&mut h, &data, 1000, 1100, 0),
        [
            block(1000, 1100),
            block(800, 900),
            block(600, 700),
            block(400, 500)
        ]
    );
    // A segment joining two ranges: the merged range goes first.
    assert_eq!(
        deliver(&mut h, &data, 300, 400, 0),
        [
            block(200, 500),
            block(1000, 1100),
            block(800, 900),
            block(600, 700)
        ]
    );
    // Filling the first hole moves the ACK; the remaining ranges are still reported.
    assert_eq!(
        deliver(&mut h, &data, 0, 200, 500),
        [block(1000, 1100), block(800, 900), block(600, 700)]
    );
    assert_eq!(
        deliver(&mut h, &data, 500, 600, 700),
        [block(1000, 1100), block(800, 900)]
    );
    assert_eq!(deliver(&mut h, &data, 700, 800, 900), [block(1000, 1100)]);
    assert_eq!(deliver(&mut h, &data, 900, 1000, 1100), []);
    h.send_data(&seg(A, IRS + 1101, ISS + 1), &data[1100..]);
    assert_eq!(h.read_all(), data);
}

#[test]
fn a_duplicate_is_reported_first_as_d_sack() {
    let mut h = established_with_sack();
    let data = payload(600);
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..100]);
    h.advance(ms(40));
    let reply = h.expect(A, ISS + 1, IRS + 101);
    assert!(reply.header.options.sack_blocks().is_empty());
    // A whole segment below RCV.NXT again: the D-SACK block lies below the ACK (RFC 2883 §4.1.1).
    assert_eq!(deliver(&mut h, &data, 0, 100, 100), [block(0, 100)]);
    // Reported once: the next ACK is plain again.
    assert_eq!(deliver(&mut h, &data, 300, 400, 100), [block(300, 400)]);
    assert_eq!(
        deliver(&mut h, &data, 500, 600, 100),
        [block(500, 600), block(300, 400)]
    );
    // A duplicate of out-of-order data: D-SACK, then the range that holds it (§4.1.3).
    assert_eq!(
        deliver(&mut h, &data, 320, 380, 100),
        [block(320, 380), block(300, 400), block(500, 600)]
    );
    // Partly old, partly new: the old part is the D-SACK, then the ranges as last reported.
    assert_eq!(
        deliver(&mut h, &data, 50, 150, 150),
        [block(50, 100), block(300, 400), block(500, 600)]
    );
    h.send_data(&seg(A, IRS + 151, ISS + 1), &data[150..300]);
    h.send_data(&seg(A, IRS + 401, ISS + 1), &data[400..500]);
    assert_eq!(h.read_all(), data);
}

#[test]
fn no_sack_blocks_unless_the_peer_offered_sack() {
    let mut h = Harness::established();
    let data = payload(300);
    h.send_data(&seg(A, IRS + 201, ISS + 1), &data[200..]);
    let reply = h.expect(A, ISS + 1, IRS + 1);
    assert!(reply.header.options.sack_blocks().is_empty());
    h.send_data(&seg(A, IRS + 201, ISS + 1), &data[200..]);
    let reply = h.expect(A, ISS + 1, IRS + 1);
    assert!(reply.header.options.sack_blocks().is_empty());
}

#[test]
fn data_segments_carry_the_sack_blocks_too() {
    let mut h = established_with_sack();
    let data = payload(300);
    h.send_data(&seg(A, IRS + 201, ISS + 1), &data[200..]);
    h.conn.send(b"reply").unwrap();
    let reply = h.expect(P | A, ISS + 1, IRS + 1);
    assert_eq!(reply.header.options.sack_blocks(), [block(200, 300)]);
    h.expect_nothing();
}

// ----- timestamps (RFC 7323) -----

/// The peer's TSval on its SYN-ACK.
const PEER_TS: u32 = 100;

fn with_ts(mut header: TcpHeader, tsval: u32, tsecr: u32) -> TcpHeader {
    header.options.timestamps = Some(Timestamps { tsval, tsecr });
    header
}

/// A client past the handshake whose peer's SYN-ACK echoed our timestamp (and offered SACK).
fn established_with_timestamps() -> Harness {
    let mut h = Harness::client(Config::default(), ISS);
    let syn = h.recv().expect("SYN");
    let ours = syn.header.options.timestamps.expect("timestamps offered");
    let mut synack = with_ts(seg(S | A, IRS, ISS + 1), PEER_TS, ours.tsval);
    synack.options.mss = Some(1460);
    synack.options.window_scale = Some(7);
    synack.options.sack_permitted = true;
    h.send(&synack);
    let ack = h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(
        ack.header.options.timestamps,
        Some(Timestamps {
            tsval: ours.tsval,
            tsecr: PEER_TS
        })
    );
    assert!(h.conn.stats().timestamps);
    h.drain_events();
    h
}

fn tsecr(segment: &Segment) -> u32 {
    segment.header.options.timestamps.expect("timestamps").tsecr
}

#[test]
fn every_segment_carries_timestamps_from_a_millisecond_clock() {
    let mut h = established_with_timestamps();
    let first = h.conn.stats();
    assert!(first.timestamps);
    h.conn.send(b"abc").unwrap();
    let data = h.expect(P | A, ISS + 1, IRS + 1);
    let t0 = data.header.options.timestamps.expect("timestamps").tsval;
    h.advance(ms(250));
    // The retransmission is stamped anew, 250 ms later by the clock.
    let again = h.recv().expect("retransmission");
    let t1 = again.header.options.timestamps.expect("timestamps").tsval;
    assert_eq!(t1.wrapping_sub(t0), 250);
    // An ACK from the peer without data still gets no reply; the challenge ACK has timestamps.
    h.send(&with_ts(seg(S, IRS + 1, 0), PEER_TS + 1, 0));
    let challenge = h.expect(A, ISS + 4, IRS + 1);
    assert_eq!(tsecr(&challenge), PEER_TS);
    // A RST carries none (RFC 7323 §3.2 allows it; Linux's don't).
    h.conn.abort();
    let rst = h.expect(R, ISS + 4, 0);
    assert_eq!(rst.header.options.timestamps, None);
}

#[test]
fn the_echo_follows_last_ack_sent_through_delayed_acks_and_holes() {
    let mut h = established_with_timestamps();
    let data = payload(5 * 1460);
    let mss = 1460u32;
    let send = |h: &mut Harness, index: u32, tsval: u32| {
        let range = (index * mss) as usize..((index + 1) * mss) as usize;
        h.send_data(
            &with_ts(seg(A, IRS + 1 + index * mss, ISS + 1), tsval, 1),
            &data[range],
        );
    };
    // Quick-ACK mode aside, two full segments make one ACK; it echoes the earlier one
    // (RFC 7323 §4.3 case 1), as the second started after Last.ACK.sent.
    send(&mut h, 0, 200);
    h.advance(ms(40));
    assert_eq!(tsecr(&h.expect(A, ISS + 1, IRS + 1 + mss)), 200);
    send(&mut h, 1, 210);
    send(&mut h, 2, 220);
    assert_eq!(tsecr(&h.expect(A, ISS + 1, IRS + 1 + 3 * mss)), 210);
    // Segment 3 is lost; 4 arrives out of order: the duplicate ACK still echoes TS.Recent,
    // not the segment beyond the hole (case 3).
    send(&mut h, 4, 240);
    assert_eq!(tsecr(&h.expect(A, ISS + 1, IRS + 1 + 3 * mss)), 210);
    // The retransmission fills the hole: its TSval is echoed.
    send(&mut h, 3, 250);
    assert_eq!(tsecr(&h.expect(A, ISS + 1, IRS + 1 + 5 * mss)), 250);
    assert_eq!(h.read_all(), data);
}

#[test]
fn paws_drops_old_duplicates_and_acks_them() {
    let mut h = established_with_timestamps();
    h.send_data(&with_ts(seg(P | A, IRS + 1, ISS + 1), 300, 1), b"new");
    h.advance(ms(40));
    assert_eq!(tsecr(&h.expect(A, ISS + 1, IRS + 4)), 300);
    // An old segment whose sequence numbers would be acceptable again (wrapped, say).
    h.send_data(&with_ts(seg(P | A, IRS + 4, ISS + 1), 299, 1), b"old");
    let ack = h.expect(A, ISS + 1, IRS + 4);
    assert_eq!(tsecr(&ack), 300);
    h.expect_nothing();
    assert_eq!(h.conn.stats().paws_rejected, 1);
    assert_eq!(h.read_all(), b"new", "the old data was not delivered");
    // Equal TSvals pass (a burst carries one clock tick).
    h.send_data(&with_ts(seg(P | A, IRS + 4, ISS + 1), 300, 1), b"abc");
    h.advance(ms(40));
    h.expect(A, ISS + 1, IRS + 7);
    // A RST is not subject to PAWS.
    h.send(&with_ts(seg(R, IRS + 7, 0), 5, 0));
    assert_eq!(h.conn.state(), State::Closed);
}

#[test]
fn paws_rejected_data_below_rcv_nxt_is_reported_in_a_d_sack() {
    let mut h = established_with_timestamps();
    let data = payload(300);
    // The retransmission of 0–200 arrived first; its original, stamped earlier, comes late.
    h.send_data(&with_ts(seg(A, IRS + 1, ISS + 1), 300, 1), &data[..200]);
    h.advance(ms(40));
    h.expect(A, ISS + 1, IRS + 201);
    h.send_data(&with_ts(seg(A, IRS + 1, ISS + 1), 250, 1), &data[..200]);
    let ack = h.expect(A, ISS + 1, IRS + 201);
    assert_eq!(tsecr(&ack), 300);
    assert_eq!(ack.header.options.sack_blocks(), [block(0, 200)]);
    h.expect_nothing();
    // Only the part below RCV.NXT is a duplicate of what we have.
    h.send_data(
        &with_ts(seg(A, IRS + 101, ISS + 1), 250, 1),
        &data[100..300],
    );
    let ack = h.expect(A, ISS + 1, IRS + 201);
    assert_eq!(ack.header.options.sack_blocks(), [block(100, 200)]);
    // Above RCV.NXT nothing was received: a plain ACK.
    h.send_data(
        &with_ts(seg(A, IRS + 201, ISS + 1), 250, 1),
        &data[200..300],
    );
    let ack = h.expect(A, ISS + 1, IRS + 201);
    assert!(ack.header.options.sack_blocks().is_empty());
    assert_eq!(h.conn.stats().paws_rejected, 3);
    assert_eq!(h.read_all(), &data[..200]);
}

#[test]
fn paws_forgets_ts_recent_after_24_days_idle() {
    let mut h = established_with_timestamps();
    h.now += Duration::from_secs(25 * 24 * 3600);
    // The peer's clock may have wrapped its sign bit meanwhile (RFC 7323 §5.5).
    let old = PEER_TS.wrapping_sub(0x8000_0000);
    h.send_data(&with_ts(seg(P | A, IRS + 1, ISS + 1), old, 1), b"late");
    h.advance(ms(40));
    assert_eq!(tsecr(&h.expect(A, ISS + 1, IRS + 5)), old);
    assert_eq!(h.conn.stats().paws_rejected, 0);
}

#[test]
fn an_echoed_timestamp_measures_the_rtt_of_a_retransmission() {
    for timestamps in [true, false] {
        let mut h = if timestamps {
            established_with_timestamps()
        } else {
            established_with_sack()
        };
        // The handshake measured 0: SRTT 0, RTO at its floor. The tail loss probe comes first
        // (RFC 8985 §7.2: 2·SRTT plus the delayed-ACK allowance for a lone segment) and
        // retransmits the segment.
        assert_eq!(h.conn.stats().srtt, Some(Duration::ZERO));
        h.conn.send(b"abc").unwrap();
        h.expect(P | A, ISS + 1, IRS + 1);
        assert_eq!(h.fire_next_timer(), ms(40));
        let retransmission = h.expect(P | A, ISS + 1, IRS + 1);
        assert_eq!(h.conn.stats().tlps, 1);
        h.advance(ms(30));
        let mut ack = seg(A, IRS + 1, ISS + 4);
        if let Some(ts) = retransmission.header.options.timestamps {
            ack = with_ts(ack, PEER_TS + 1, ts.tsval);
        }
        h.send(&ack);
        let srtt = h.conn.stats().srtt;
        if timestamps {
            // RFC 6298 §2.3 with R = 30 ms: SRTT = 7/8 · 0 + 1/8 · 30 ms.
            assert_eq!(srtt, Some(Duration::from_micros(3750)));
        } else {
            assert_eq!(
                srtt,
                Some(Duration::ZERO),
                "Karn: no sample without timestamps"
            );
        }
    }
}

#[test]
fn no_timestamps_unless_both_syns_carry_them() {
    // The peer's SYN without them: our SYN-ACK and everything after carry none.
    let mut syn = seg(S, IRS, 0);
    syn.options = syn_options(1460, Some(7));
    let mut h = Harness::server(Config::default(), &syn, ISS);
    let synack = h.expect(S | A, ISS, IRS + 1);
    assert_eq!(synack.header.options.timestamps, None);
    // With them, but switched off here.
    let syn = with_ts(syn, 7, 0);
    let config = Config {
        timestamps: false,
        ..Config::default()
    };
    let mut h = Harness::server(config, &syn, ISS);
    let synack = h.expect(S | A, ISS, IRS + 1);
    assert_eq!(synack.header.options.timestamps, None);
    // Both: the SYN-ACK echoes the SYN's TSval.
    let mut h = Harness::server(Config::default(), &syn, ISS);
    let synack = h.expect(S | A, ISS, IRS + 1);
    assert_eq!(tsecr(&synack), 7);
}

// ----- TIME-WAIT with timestamps -----

fn time_wait_record(now: Instant) -> TimeWait {
    TimeWait::new(
        tuple(),
        SeqNum(ISS + 2),
        SeqNum(IRS + 2),
        100,
        now,
        ms(60_000),
    )
    .with_timestamps(TimeWaitTimestamps {
        clock: TimestampClock::new(now, 1000),
        recent: 500,
    })
}

#[test]
fn time_wait_reopens_for_a_syn_with_a_newer_timestamp_only() {
    let now = Instant::now();
    let mut tw = time_wait_record(now);
    // RFC 6191: the timestamp decides, even when the sequence number is below the old one.
    assert_eq!(
        tw.handle_segment(
            &with_ts(seg(S, IRS.wrapping_sub(50_000), 0), 501, 0),
            0,
            now
        ),
        TimeWaitOutcome::Reopen
    );
    // An older (or equal) TSval is an old duplicate, even with a sequence number past RCV.NXT.
    for tsval in [499, 500] {
        let TimeWaitOutcome::Reply(ack) =
            tw.handle_segment(&with_ts(seg(S, IRS + 50_000, 0), tsval, 0), 0, now)
        else {
            panic!("an old SYN gets a challenge ACK");
        };
        assert_eq!((ack.flags, ack.seq.0, ack.ack.0), (A, ISS + 2, IRS + 2));
        assert_eq!(
            ack.options.timestamps,
            Some(Timestamps {
                tsval: 1000,
                tsecr: 500
            })
        );
    }
    // Without a timestamp on the SYN, the sequence number decides (RFC 9293 §3.6.1).
    assert_eq!(
        tw.handle_segment(&seg(S, IRS + 50_000, 0), 0, now),
        TimeWaitOutcome::Reopen
    );
}

#[test]
fn time_wait_ignores_rsts_and_paws_drops_old_segments() {
    let now = Instant::now();
    let mut tw = time_wait_record(now);
    let later = now + ms(1000);
    // RFC 1337: a RST, even an exact one, leaves TIME-WAIT alone.
    assert_eq!(
        tw.handle_segment(&seg(R, IRS + 2, 0), 0, later),
        TimeWaitOutcome::Drop
    );
    // An old retransmitted FIN does not restart 2·MSL...
    let old_fin = with_ts(seg(F | A, IRS + 1, ISS + 2), 400, 0);
    assert!(matches!(
        tw.handle_segment(&old_fin, 0, later),
        TimeWaitOutcome::PawsRejected(_)
    ));
    assert_eq!(tw.deadline, now + ms(60_000));
    // ...a current one does, and its TSval becomes TS.Recent.
    let fin = with_ts(seg(F | A, IRS + 1, ISS + 2), 600, 0);
    let TimeWaitOutcome::Reply(ack) = tw.handle_segment(&fin, 0, later) else {
        panic!("the FIN is acknowledged again");
    };
    assert_eq!(tw.deadline, later + ms(60_000));
    assert_eq!(
        ack.options.timestamps,
        Some(Timestamps {
            tsval: 2000,
            tsecr: 600
        })
    );
}

// ----- when to acknowledge (RFC 5681 §4.2, Linux's quick-ACK mode) -----

#[test]
fn quick_ack_mode_acks_the_first_sixteen_segments_at_once_and_again_after_silence() {
    let mut h = Harness::established();
    let mut next = IRS + 1;
    for _ in 0..16 {
        h.send_data(&seg(A, next, ISS + 1), b"x");
        next += 1;
        h.expect(A, ISS + 1, next);
    }
    // Then delayed ACKs: one small segment waits for the timer.
    h.send_data(&seg(A, next, ISS + 1), b"x");
    next += 1;
    h.expect_nothing();
    h.advance(ms(40));
    h.expect(A, ISS + 1, next);
    // The peer falls silent for longer than the RTO (200 ms here): quick-ACK mode again.
    h.advance(ms(300));
    for _ in 0..16 {
        h.send_data(&seg(A, next, ISS + 1), b"x");
        next += 1;
        h.expect(A, ISS + 1, next);
    }
    h.send_data(&seg(A, next, ISS + 1), b"x");
    h.expect_nothing();
}

#[test]
fn out_of_order_data_and_a_filled_hole_are_acked_at_once_outside_quick_ack_mode() {
    let mut h = super::data::past_quick_acks();
    let data = payload(300);
    // In order: delayed.
    h.send_data(&seg(A, IRS + 1, ISS + 1), &data[..100]);
    h.expect_nothing();
    // Out of order: a duplicate ACK at once (which also carries the pending ACK).
    h.send_data(&seg(A, IRS + 201, ISS + 1), &data[200..]);
    h.expect(A, ISS + 1, IRS + 101);
    h.expect_nothing();
    // The hole fills: at once.
    h.send_data(&seg(A, IRS + 101, ISS + 1), &data[100..200]);
    h.expect(A, ISS + 1, IRS + 301);
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), None);
    assert_eq!(h.read_all(), data);
}

// ----- receive-buffer auto-tuning -----

/// The peer fills whatever window we offer, the application reads it all at once, 1 ms apart
/// (the handshake measured an RTT of 0, so every millisecond is a measurement round). Returns
/// the window offered after each round, in bytes.
fn windows_offered(config: Config, scale: Option<u8>, rounds: usize) -> Vec<u32> {
    let mut h = Harness::client(config, ISS);
    h.recv().expect("SYN");
    let mut synack = seg(S | A, IRS, ISS + 1);
    synack.options = syn_options(1460, scale);
    h.send(&synack);
    let ack = h.expect(A, ISS + 1, IRS + 1);
    let shift = h.conn.window_scale().map_or(0, |(ours, _)| ours);
    let mut window = u32::from(ack.header.window) << shift;
    let mut next = IRS + 1;
    let mut offered = Vec::new();
    for _ in 0..rounds {
        let edge = next + window;
        while next != edge {
            let len = (edge - next).min(1460);
            h.send_data(&seg(A, next, ISS + 1), &payload(len as usize));
            next += len;
        }
        h.read_all();
        h.advance(ms(1));
        while let Some(segment) = h.recv() {
            assert_eq!(segment.header.ack.0, next, "everything is acknowledged");
            window = u32::from(segment.header.window) << shift;
        }
        offered.push(window);
    }
    offered
}

#[test]
fn auto_tuning_grows_the_window_with_what_the_application_reads_up_to_the_cap() {
    const MAX: u32 = 6 * 1024 * 1024;
    let offered = windows_offered(Config::default(), Some(7), 4);
    // The first round is no full RTT yet; the second shows 512 KiB read per RTT, and the
    // buffer grows at once to the cap (twice that, plus the growth of the rate).
    assert_eq!(offered[0], 262_144);
    assert_eq!(offered[1..], [MAX; 3]);
    // A smaller cap holds.
    let config = Config {
        recv_buffer_max: 1 << 20,
        ..Config::default()
    };
    assert_eq!(
        windows_offered(config, Some(7), 3),
        [262_144, 1 << 20, 1 << 20]
    );
    // No window scaling: the buffer grows to what the 16-bit field can offer, no further.
    let config = Config {
        recv_buffer: 16_384,
        ..Config::default()
    };
    assert_eq!(windows_offered(config, None, 3), [16_384, 65_535, 65_535]);
    // A cap at or below the starting buffer: no auto-tuning.
    let config = Config {
        recv_buffer_max: 0,
        ..Config::default()
    };
    assert_eq!(windows_offered(config, Some(7), 3), [262_144; 3]);
}

#[test]
fn options_come_out_of_the_mss_so_no_segment_outgrows_it() {
    let mut h = established_with_timestamps();
    // RFC 6691: 1460 bytes of MSS less 12 of timestamps in every segment.
    assert_eq!(h.conn.mss(), 1448);
    let data = payload(300);
    h.send_data(
        &with_ts(seg(A, IRS + 201, ISS + 1), PEER_TS, 1),
        &data[200..],
    );
    let dup_ack = h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(dup_ack.header.options.sack_blocks(), [block(200, 300)]);
    // Full-sized data has no room for SACK blocks; a shorter segment carries what fits.
    let out = payload(1448 + 1430);
    h.conn.send(&out).unwrap();
    let full = h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(full.payload.len(), 1448);
    assert!(full.header.options.sack_blocks().is_empty());
    let short = h.expect(P | A, ISS + 1449, IRS + 1);
    assert_eq!(short.payload.len(), 1430);
    assert_eq!(short.header.options.sack_blocks(), [block(200, 300)]);
    for segment in [&full, &short] {
        let options = segment.header.options.emitted_len();
        assert!(
            segment.payload.len() + options <= 1460,
            "{options} bytes of options"
        );
    }
}

#[test]
fn auto_tuning_measures_rounds_by_the_echoed_timestamps_when_receiving_only() {
    let mut h = established_with_timestamps();
    let tsval_at_start = {
        h.conn.send(b"x").unwrap();
        let s = h.expect(P | A, ISS + 1, IRS + 1);
        s.header.options.timestamps.expect("timestamps").tsval
    };
    let mut next = IRS + 1;
    // A path of 30 ms: the peer's data echoes what we sent 30 ms before it arrives.
    let mut deliver_and_read = |h: &mut Harness, segments: u32| {
        let elapsed = (h.now - h.start).as_millis() as u32;
        let echo = tsval_at_start + elapsed - 30;
        for _ in 0..segments {
            let data = with_ts(seg(A, next, ISS + 2), PEER_TS + elapsed, echo);
            h.send_data(&data, &payload(1460));
            next += 1460;
        }
        while h.recv().is_some() {}
        h.read_all();
        h.conn.recv_capacity()
    };
    h.advance(ms(30));
    // The first round (30 ms since the start) shows 29 KB read: not enough to grow 256 KiB.
    assert_eq!(deliver_and_read(&mut h, 20), 262_144);
    // 10 ms later is no new round for a receiver whose RTT is 30 ms, however much it read
    // (the sender's RTT estimate, 0 from the handshake, would have measured already)...
    h.advance(ms(10));
    assert_eq!(deliver_and_read(&mut h, 40), 262_144);
    // ...30 ms later is: 60 KB in the round, the buffer grows.
    h.advance(ms(20));
    assert!(deliver_and_read(&mut h, 1) > 262_144);
}

#[test]
fn out_of_order_segments_arriving_together_get_one_duplicate_ack_each() {
    let mut h = established_with_sack();
    let data = payload(700);
    // Three segments after a hole arrive before anything is sent (one receive batch).
    for start in [100, 300, 500] {
        h.send_data(
            &seg(A, IRS + 1 + start, ISS + 1),
            &data[start as usize..start as usize + 100],
        );
    }
    let blocks: Vec<Vec<SackBlock>> = (0..3)
        .map(|_| {
            let dup = h.expect(A, ISS + 1, IRS + 1);
            dup.header.options.sack_blocks().to_vec()
        })
        .collect();
    h.expect_nothing();
    assert_eq!(
        blocks,
        [
            vec![block(100, 200)],
            vec![block(300, 400), block(100, 200)],
            vec![block(500, 600), block(300, 400), block(100, 200)],
        ]
    );
}

#[test]
fn every_out_of_order_segment_of_a_receive_batch_gets_its_duplicate_ack() {
    // A sender without SACK counts the duplicates (RFC 5681 §4.2), so none may be merged away:
    // the backends hand over 64 frames at a time.
    let mut h = Harness::established();
    h.out_of_order_batch(IRS + 1, ISS + 1, 64);
    for _ in 0..64 {
        h.expect_exact(A, ISS + 1, IRS + 1, SCALED_WINDOW, b"");
    }
    h.expect_nothing();
    // The queue stays bounded whatever arrives: 64 queued and the one still pending.
    h.out_of_order_batch(IRS + 1, ISS + 1, 1000);
    let acks = h.drain();
    assert_eq!(acks.len(), 65);
    assert!(acks
        .iter()
        .all(|s| s.header.flags == A && s.header.ack.0 == IRS + 1));
}

#[test]
fn with_sack_duplicate_acks_beyond_the_third_are_compressed() {
    // Linux's tcp_comp_sack: three duplicate ACKs at once for fast retransmit, then one ACK for
    // the rest of the batch, after min(1 ms, RTT / 20), whose SACK blocks cover them all.
    let mut h = established_with_sack();
    h.out_of_order_batch(IRS + 1, ISS + 1, 20);
    for _ in 0..3 {
        h.expect(A, ISS + 1, IRS + 1);
    }
    h.expect_nothing();
    assert!(h.fire_next_timer() <= ms(1));
    let ack = h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(
        ack.header.options.sack_blocks()[0],
        SackBlock {
            start: SeqNum(IRS + 11),
            end: SeqNum(IRS + 211),
        }
    );
    h.expect_nothing();
    // At most 44 wait: a longer batch gets an ACK every 44 segments.
    h.out_of_order_batch(IRS + 1, ISS + 1, 100);
    assert_eq!(h.drain().len(), 2);
    // Filling the hole is acknowledged at once, and the next hole gets its three again.
    h.send_data(&seg(A, IRS + 1, ISS + 1), &[0; 10]);
    h.expect(A, ISS + 1, IRS + 1 + 10 * 101);
    h.out_of_order_batch(IRS + 1 + 10 * 101, ISS + 1, 4);
    assert_eq!(h.drain().len(), 3);
}

#[test]
fn challenge_acks_stay_rate_limited() {
    // RFC 5961 §7: a burst of in-window SYNs gets a few challenge ACKs, not one each.
    let mut h = Harness::established();
    for k in 0..50 {
        h.send(&seg(S, IRS + 100 + k, 0));
    }
    assert_eq!(h.drain().len(), 4);
    assert_eq!(h.conn.state(), State::Established);
}
