//! The receiver side of issue 5: SACK blocks in our ACKs (RFC 2018 §4) and D-SACK (RFC 2883 §4).

use super::*;
use crate::wire::SackBlock;

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

/// Sends `data[start..end]` and returns the SACK blocks of the ACK that must follow at once.
#[track_caller]
fn deliver(h: &mut Harness, data: &[u8], start: usize, end: usize, ack: u32) -> Vec<SackBlock> {
    h.send_data(&seg(A, IRS + 1 + start as u32, ISS + 1), &data[start..end]);
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
