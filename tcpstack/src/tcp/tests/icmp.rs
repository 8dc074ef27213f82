//! ICMP errors (RFC 792, RFC 1191 path MTU discovery) and the RFC 5927 checks that keep forged
//! ones from changing anything.

use super::*;
use crate::tcp::{ConnectionError, IcmpVerdict};
use crate::wire::icmp::{QuotedSegment, CODE_PORT_UNREACHABLE};
use crate::wire::IcmpError;

const MSS: u32 = 1460;
const FLIGHT: u32 = 10 * MSS;

fn quoting(seq: u32, total_len: u16) -> QuotedSegment {
    let tuple = tuple();
    QuotedSegment {
        src: *tuple.local.ip(),
        dst: *tuple.remote.ip(),
        src_port: tuple.local.port(),
        dst_port: tuple.remote.port(),
        seq: SeqNum(seq),
        total_len,
    }
}

fn frag_needed(mtu: u16) -> IcmpError {
    IcmpError::FragmentationNeeded { next_hop_mtu: mtu }
}

/// An established connection with ten full segments in flight (the initial window).
fn with_a_flight() -> Harness {
    let mut h = Harness::established();
    assert_eq!(h.conn.send(&vec![7; FLIGHT as usize]), Ok(FLIGHT as usize));
    let sent = h.drain();
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|s| s.payload.len() == MSS as usize));
    h
}

fn handle(h: &mut Harness, error: IcmpError, quoted: QuotedSegment) -> IcmpVerdict {
    let now = h.now;
    h.conn.handle_icmp(error, &quoted, now)
}

#[test]
fn fragmentation_needed_shrinks_the_segments_and_resends_the_flight_at_once() {
    let mut h = with_a_flight();
    let retransmits = h.conn.stats().retransmits;
    let verdict = handle(&mut h, frag_needed(1280), quoting(ISS + 1, 1500));
    assert_eq!(verdict, IcmpVerdict::PathMtuLowered);
    assert_eq!(h.conn.mss(), 1240);
    assert_eq!(h.conn.path_mtu(), Some(1280));
    assert_eq!(h.conn.stats().path_mtu_reductions, 1);
    // RFC 1191 §6.5: the dropped flight goes again now, from SND.UNA, in segments that fit, as
    // many as the window held before (the initial window is ten segments, whatever their size,
    // as in Linux): no slow start from one segment, as a timeout would have.
    let resent = h.drain();
    assert_eq!(resent.first().map(|s| s.header.seq), Some(SeqNum(ISS + 1)));
    assert_eq!(resent.len(), 10);
    assert!(resent.iter().all(|s| s.payload.len() == 1240));
    assert_eq!(h.conn.stats().retransmits, retransmits + 10);
    // The peer acknowledges them; the rest of the old flight and what follows fit too.
    h.send(&seg(A, IRS + 1, ISS + 1 + 10 * 1240));
    h.conn.send(&[1; 3000]).unwrap();
    let next = h.drain();
    assert!(!next.is_empty());
    assert!(next.iter().all(|s| s.payload.len() <= 1240));
}

#[test]
fn an_out_of_window_sequence_number_changes_nothing() {
    let mut h = with_a_flight();
    // RFC 5927 §4.1: beyond SND.NXT, and below SND.UNA once data is acknowledged.
    for seq in [ISS + 2 + FLIGHT, ISS.wrapping_sub(40_000)] {
        let verdict = handle(&mut h, frag_needed(576), quoting(seq, 1500));
        assert_eq!(verdict, IcmpVerdict::OutOfWindow);
        let verdict = handle(
            &mut h,
            IcmpError::Unreachable {
                code: CODE_PORT_UNREACHABLE,
            },
            quoting(seq, 1500),
        );
        assert_eq!(verdict, IcmpVerdict::OutOfWindow);
    }
    assert_eq!(h.conn.mss(), MSS);
    assert_eq!(h.conn.path_mtu(), None);
    h.expect_nothing();
    h.send(&seg(A, IRS + 1, ISS + 1 + MSS));
    let verdict = handle(&mut h, frag_needed(576), quoting(ISS + 1, 1500));
    assert_eq!(verdict, IcmpVerdict::OutOfWindow, "below SND.UNA");
    assert_eq!(h.conn.mss(), MSS);
}

#[test]
fn the_path_mtu_only_goes_down_and_not_below_the_floor() {
    let mut h = with_a_flight();
    assert_eq!(
        handle(&mut h, frag_needed(1500), quoting(ISS + 1, 1500)),
        IcmpVerdict::PathMtuUnchanged
    );
    assert_eq!(
        handle(&mut h, frag_needed(9000), quoting(ISS + 1, 1500)),
        IcmpVerdict::PathMtuUnchanged
    );
    assert_eq!(h.conn.mss(), MSS);
    // A forged tiny MTU is held at Linux's min_pmtu.
    assert_eq!(
        handle(&mut h, frag_needed(68), quoting(ISS + 1, 1500)),
        IcmpVerdict::PathMtuLowered
    );
    assert_eq!(h.conn.path_mtu(), Some(crate::tcp::MIN_PATH_MTU));
    assert_eq!(h.conn.mss(), crate::tcp::MIN_PATH_MTU - 40);
}

#[test]
fn a_router_that_reports_no_mtu_gets_the_next_plateau() {
    let mut h = with_a_flight();
    // RFC 1191 §7: below a 1500-byte datagram, the plateau is 1492.
    assert_eq!(
        handle(&mut h, frag_needed(0), quoting(ISS + 1, 1500)),
        IcmpVerdict::PathMtuLowered
    );
    assert_eq!(h.conn.path_mtu(), Some(1492));
    assert_eq!(h.conn.mss(), 1452);
}

#[test]
fn timestamps_come_out_of_the_lowered_mss() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    let mut synack = seg(S | A, IRS, ISS + 1);
    synack.options = syn_options(1460, Some(7));
    synack.options.timestamps = Some(crate::wire::Timestamps { tsval: 1, tsecr: 0 });
    h.send(&synack);
    h.drain();
    assert_eq!(h.conn.mss(), 1448);
    h.conn.send(&[1; 2000]).unwrap();
    h.drain();
    handle(&mut h, frag_needed(1280), quoting(ISS + 1, 1500));
    assert_eq!(h.conn.mss(), 1228);
}

#[test]
fn a_hard_error_ends_a_handshake_but_not_an_established_connection() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    // Net unreachable is soft (RFC 1122 §4.2.3.9): the SYN is tried again.
    let soft = IcmpError::Unreachable { code: 0 };
    assert_eq!(handle(&mut h, soft, quoting(ISS, 60)), IcmpVerdict::Noted);
    assert_eq!(h.conn.state(), State::SynSent);
    let port = IcmpError::Unreachable {
        code: CODE_PORT_UNREACHABLE,
    };
    assert_eq!(handle(&mut h, port, quoting(ISS, 60)), IcmpVerdict::Aborted);
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.conn.error(), Some(ConnectionError::Refused));

    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    let prohibited = IcmpError::Unreachable { code: 13 };
    assert_eq!(
        handle(&mut h, prohibited, quoting(ISS, 60)),
        IcmpVerdict::Aborted
    );
    assert_eq!(h.conn.error(), Some(ConnectionError::Unreachable));

    // RFC 5461 §4: once synchronized, a hard error is only noted.
    let mut h = with_a_flight();
    assert_eq!(
        handle(&mut h, port, quoting(ISS + 1, 1500)),
        IcmpVerdict::Noted
    );
    assert_eq!(h.conn.state(), State::Established);
}
