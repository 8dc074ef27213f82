//! Loss recovery on the sender: the SACK scoreboard fed from ACKs, RFC 6675's NextSeg order
//! (holes, then new data), PRR's sending amounts (RFC 6937), limited transmit (RFC 3042), RTO
//! during SACK recovery (RFC 5681 §3.1, RFC 6675 §5.1), D-SACK undo (RFC 2883, RFC 3708) and
//! CUBIC's reduction (RFC 9438 §4.6) inside a connection.
//!
//! Segments are named by index: segment `i` holds bytes [i·MSS, (i+1)·MSS) of the stream.

use super::*;
use crate::tcp::CongestionAlgorithm;
use crate::wire::SackBlock;

const MSS: u32 = 1460;

/// The sequence number where segment `i` starts.
fn at(i: u32) -> u32 {
    ISS + 1 + i * MSS
}

fn payload(segments: u32) -> Vec<u8> {
    (0..segments * MSS).map(|i| (i % 251) as u8).collect()
}

/// An ACK up to segment `ack` carrying SACK blocks of segment ranges [start, end), in order.
fn sack_ack(ack: u32, blocks: &[(u32, u32)]) -> TcpHeader {
    let mut header = seg(A, IRS + 1, at(ack));
    for &(start, end) in blocks {
        header.options.push_sack_block(SackBlock {
            start: SeqNum(at(start)),
            end: SeqNum(at(end)),
        });
    }
    header
}

/// A client past a handshake in which both sides offered SACK, window scale and MSS 1460.
/// RACK is off: these tests pin RFC 6675's duplicate-ACK rules, which RACK (RFC 8985, see
/// tests/rack.rs) replaces by default.
fn established(congestion: CongestionAlgorithm) -> Harness {
    established_with_config(Config {
        congestion,
        rack: false,
        ..Config::default()
    })
}

fn established_with_config(config: Config) -> Harness {
    let mut h = Harness::client(config, ISS);
    h.expect(S, ISS, 0);
    let mut synack = seg(S | A, IRS, ISS + 1);
    synack.options = TcpOptions {
        sack_permitted: true,
        ..syn_options(1460, Some(7))
    };
    h.send(&synack);
    h.expect(A, ISS + 1, IRS + 1);
    h.drain_events();
    assert!(h.conn.stats().sack);
    // The first window update scales the window, so that later ACKs count as duplicates.
    h.send(&seg(A, IRS + 1, ISS + 1));
    h
}

/// The segment indices sent now (a retransmission shows as its index again).
fn sent(h: &mut Harness) -> Vec<u32> {
    std::iter::from_fn(|| h.recv())
        .map(|s| {
            assert_eq!(s.payload.len() as u32, MSS, "full segments only");
            s.header.seq.0.wrapping_sub(ISS + 1) / MSS
        })
        .collect()
}

/// Ten segments out (the initial window), then the first three duplicate ACKs for a lost
/// segment 0 with SACKs of 1, 1–2, 1–3: limited transmit sends 10 and 11, the third enters
/// SACK recovery and retransmits 0. Returns the harness with 12 segments outstanding.
fn lose_first_segment(congestion: CongestionAlgorithm, segments: u32) -> Harness {
    let mut h = established(congestion);
    h.conn.send(&payload(segments)).expect("room");
    assert_eq!(sent(&mut h), (0..10).collect::<Vec<_>>());
    h.send(&sack_ack(0, &[(1, 2)]));
    assert_eq!(sent(&mut h), [10], "limited transmit, first duplicate");
    h.send(&sack_ack(0, &[(1, 3)]));
    assert_eq!(sent(&mut h), [11], "limited transmit, second duplicate");
    assert_eq!(h.conn.stats().fast_retransmits, 0);
    h.send(&sack_ack(0, &[(1, 4)]));
    assert_eq!(sent(&mut h), [0], "fast retransmit of the hole");
    let stats = h.conn.stats();
    assert_eq!((stats.fast_retransmits, stats.sack_recoveries), (1, 1));
    h
}

#[test]
fn scoreboard_follows_the_sack_blocks_of_each_ack() {
    let mut h = established(CongestionAlgorithm::NewReno);
    h.conn.send(&payload(10)).expect("room");
    assert_eq!(sent(&mut h).len(), 10);
    let block = |start, end| SackBlock {
        start: SeqNum(at(start)),
        end: SeqNum(at(end)),
    };
    h.send(&sack_ack(0, &[(2, 3)]));
    assert_eq!(h.conn.sacked(), [block(2, 3)]);
    // Most recent block first, the older one repeated: merged and kept in order.
    h.send(&sack_ack(0, &[(5, 7), (2, 4)]));
    assert_eq!(h.conn.sacked(), [block(2, 4), block(5, 7)]);
    h.send(&sack_ack(0, &[(4, 5), (2, 7)]));
    assert_eq!(h.conn.sacked(), [block(2, 7)]);
    // The cumulative ACK passes part of it; a block beyond SND.NXT is ignored (RFC 6675 §5).
    h.send(&sack_ack(3, &[(2, 7), (11, 12)]));
    assert_eq!(h.conn.sacked(), [block(3, 7)]);
    h.send(&sack_ack(10, &[]));
    assert_eq!(h.conn.sacked(), []);
}

/// RFC 6675 §5 with PRR: two losses (0 and 4). New data goes while segment 4 is not yet
/// considered lost (fewer than DupThresh segments SACKed above it); once it is, the hole is
/// retransmitted before new data. PRR sets the amounts: the proportional share CEIL(delivered ·
/// ssthresh / RecoverFS) while pipe > ssthresh, then ssthresh − pipe.
#[test]
fn holes_first_then_new_data_under_prr() {
    let mut h = lose_first_segment(CongestionAlgorithm::NewReno, 30);
    // RecoverFS = 12 segments, ssthresh = 6.
    assert_eq!(h.conn.stats().ssthresh, 6 * MSS);
    let mut per_ack = Vec::new();
    for last in 5..=9 {
        h.send(&sack_ack(0, &[(5, last + 1), (1, 4)]));
        per_ack.push(sent(&mut h));
    }
    assert_eq!(
        per_ack,
        [vec![], vec![12], vec![], vec![4], vec![13]],
        "delivered 2..6, pipe 8 → 6 → 5 → 5"
    );
    // Segment 10 and 11 arrive: two segments delivered, pipe 4: up to ssthresh again.
    h.send(&sack_ack(0, &[(5, 12), (1, 4)]));
    assert_eq!(sent(&mut h), [14, 15]);
    // The retransmission of 0 arrives: a partial ACK up to the second hole.
    h.send(&sack_ack(4, &[(5, 12)]));
    assert_eq!(sent(&mut h), [16]);
    // The retransmission of 4: the cumulative ACK passes `recover` (12), recovery ends.
    h.send(&sack_ack(12, &[]));
    let stats = h.conn.stats();
    assert_eq!(stats.cwnd, 6 * MSS, "cwnd = ssthresh (RFC 6937 §3.1)");
    assert_eq!(
        (stats.retransmits, stats.rtos, stats.fast_retransmits),
        (2, 0, 1)
    );
    assert_eq!(h.conn.sacked(), []);
}

/// RFC 5681 §3.1 and RFC 6675 §5.1: an RTO in the middle of SACK recovery sets cwnd to one
/// segment and ssthresh to max(FlightSize/2, 2·SMSS), and the go-back-N that follows
/// retransmits only what the peer has not SACKed.
#[test]
fn rto_during_sack_recovery_resets_cwnd_and_skips_sacked_data() {
    let mut h = lose_first_segment(CongestionAlgorithm::NewReno, 12);
    // Segments 5–7 arrive too; 4 and 8–11 are lost as well. Three segments SACKed above 4
    // make it lost: retransmitted, and lost again.
    h.send(&sack_ack(0, &[(5, 8), (1, 4)]));
    assert_eq!(sent(&mut h), [4]);
    h.fire_next_timer();
    let stats = h.conn.stats();
    assert_eq!(stats.rtos, 1);
    assert_eq!((stats.cwnd, stats.ssthresh), (MSS, 6 * MSS));
    assert_eq!(sent(&mut h), [0], "one segment: the oldest unacknowledged");
    // It arrives: 0–3 acknowledged, 5–7 still SACKed. Slow start after an RTO: cwnd 2.
    h.send(&sack_ack(4, &[(5, 8)]));
    assert_eq!(h.conn.stats().cwnd, 2 * MSS);
    assert_eq!(sent(&mut h), [4, 8], "5–7 skipped");
    h.send(&sack_ack(9, &[]));
    assert_eq!(sent(&mut h), [9, 10, 11]);
    h.send(&sack_ack(12, &[]));
    assert_eq!(h.conn.poll_timeout(), None);
    let stats = h.conn.stats();
    assert_eq!((stats.rtos, stats.retransmits), (1, 8));
    assert_eq!(stats.fast_retransmits, 1);
}

/// RFC 2883 / RFC 3708: segment 0 was only delayed. Its fast retransmission is reported back as
/// a D-SACK once the original arrived; CUBIC restores the window it cut (RFC 9438 §4.9).
#[test]
fn dsack_of_a_spurious_retransmission_undoes_the_reduction() {
    let mut h = lose_first_segment(CongestionAlgorithm::Cubic, 12);
    assert_eq!(
        h.conn.stats().ssthresh,
        12_264,
        "0.7 · 12 segments in flight"
    );
    // The original segment 0 arrives late, then everything else: recovery ends.
    h.send(&sack_ack(4, &[]));
    h.send(&sack_ack(12, &[]));
    assert_eq!(h.conn.stats().cwnd_undos, 0);
    // The retransmitted copy of 0 arrives: a D-SACK below the cumulative ACK (RFC 2883 §4).
    h.send(&sack_ack(12, &[(0, 1)]));
    let stats = h.conn.stats();
    assert_eq!(
        (
            stats.dsacks_received,
            stats.spurious_retransmits,
            stats.cwnd_undos
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.ssthresh, u32::MAX, "back in the slow start it was in");
    assert!(stats.cwnd >= 10 * MSS, "cwnd {} restored", stats.cwnd);
    // A repeated D-SACK changes nothing more.
    h.send(&sack_ack(12, &[(0, 1)]));
    let again = h.conn.stats();
    assert_eq!((again.dsacks_received, again.cwnd_undos), (2, 1));
}

/// A retransmission that was needed is never undone: no D-SACK, no undo.
#[test]
fn a_real_loss_is_not_undone() {
    let mut h = lose_first_segment(CongestionAlgorithm::Cubic, 12);
    h.send(&sack_ack(12, &[]));
    // A D-SACK for data never retransmitted (a duplicate the network made) is counted only.
    h.send(&sack_ack(12, &[(5, 6)]));
    let stats = h.conn.stats();
    assert_eq!(
        (
            stats.dsacks_received,
            stats.spurious_retransmits,
            stats.cwnd_undos
        ),
        (1, 0, 0)
    );
    assert_eq!(stats.ssthresh, 12_264);
}

/// RFC 9438 §4.6 inside a connection: after a loss CUBIC leaves recovery with
/// cwnd = ssthresh = β_cubic · FlightSize = 0.7 · W.
#[test]
fn cubic_window_after_a_loss_is_beta_times_the_flight() {
    let mut h = lose_first_segment(CongestionAlgorithm::Cubic, 40);
    let w = 12 * MSS;
    let expected = (f64::from(w) * 0.7).round() as u32;
    assert_eq!(h.conn.stats().ssthresh, expected);
    // Everything but the lost segment arrives, one ACK per segment; PRR brings the flight
    // down to ssthresh.
    for last in 4..12 {
        h.send(&sack_ack(0, &[(1, last + 1)]));
        sent(&mut h);
    }
    h.send(&sack_ack(12, &[]));
    let stats = h.conn.stats();
    assert_eq!((stats.cwnd, stats.ssthresh), (expected, expected));
    assert_eq!(stats.congestion, CongestionAlgorithm::Cubic);
}

#[test]
fn congestion_control_is_chosen_per_stack_and_per_connection() {
    assert_eq!(
        Config::default().congestion,
        CongestionAlgorithm::Cubic,
        "CUBIC by default, as Linux"
    );
    let h = established(CongestionAlgorithm::NewReno);
    assert_eq!(h.conn.stats().congestion, CongestionAlgorithm::NewReno);
    // Per connection, before data flows: the same loss halves the window under NewReno and
    // takes 30 % off under CUBIC.
    for (algorithm, ssthresh) in [
        (CongestionAlgorithm::NewReno, 6 * MSS),
        (CongestionAlgorithm::Cubic, 12_264),
    ] {
        let mut h = established(CongestionAlgorithm::default());
        h.conn.set_congestion(algorithm);
        assert_eq!(h.conn.stats().congestion, algorithm);
        h.conn.send(&payload(12)).expect("room");
        sent(&mut h);
        for last in 2..=4 {
            h.send(&sack_ack(0, &[(1, last)]));
            sent(&mut h);
        }
        assert_eq!(h.conn.stats().ssthresh, ssthresh, "{algorithm:?}");
    }
}

/// RFC 3042 without SACK: the first two duplicate ACKs each send one new segment even though
/// cwnd is full; the third does not (it starts recovery instead).
#[test]
fn limited_transmit_without_sack() {
    let config = Config {
        sack: false,
        congestion: CongestionAlgorithm::NewReno,
        ..Config::default()
    };
    let mut h = Harness::established_with(config, ISS, IRS);
    h.send(&seg(A, IRS + 1, ISS + 1));
    h.conn.send(&payload(20)).expect("room");
    assert_eq!(sent(&mut h).len(), 10);
    let dup = seg(A, IRS + 1, at(0));
    h.send(&dup);
    assert_eq!(sent(&mut h), [10]);
    h.send(&dup);
    assert_eq!(sent(&mut h), [11]);
    h.send(&dup);
    assert_eq!(sent(&mut h), [0]);
    let stats = h.conn.stats();
    assert_eq!((stats.fast_retransmits, stats.sack_recoveries), (1, 0));
}

/// The retransmission of segment 0 is lost too. Once data first sent after it is SACKed (more
/// than DupThresh − 1 segments of it), it is known lost and sent again at once, without waiting
/// for the RTO (Linux's lost-retransmission detection; RFC 6675 alone has none).
#[test]
fn a_lost_retransmission_is_sent_again_without_an_rto() {
    let mut h = lose_first_segment(CongestionAlgorithm::NewReno, 40);
    let mut highest = 11;
    for last in 4..12 {
        h.send(&sack_ack(0, &[(1, last + 1)]));
        for i in sent(&mut h) {
            assert_ne!(i, 0, "not yet known lost");
            highest = highest.max(i);
        }
    }
    assert!(highest >= 14, "PRR sent new data up to {highest}");
    assert_eq!(h.conn.stats().lost_retransmits, 0);
    // Everything sent after the retransmission arrives, the retransmission does not.
    h.send(&sack_ack(0, &[(1, highest + 1)]));
    assert_eq!(h.conn.stats().lost_retransmits, 1);
    let resent = sent(&mut h);
    assert_eq!(resent.first(), Some(&0), "sent again first: {resent:?}");
    h.send(&sack_ack(highest + 1, &[]));
    let stats = h.conn.stats();
    assert_eq!((stats.rtos, stats.fast_retransmits), (0, 1));
}

/// RFC 6675 §2: with SACK, an ACK that SACKs new data is a duplicate even when its window
/// moved (a receiver auto-tuning its buffer): limited transmit and fast retransmit still come.
#[test]
fn an_ack_with_new_sack_information_is_a_duplicate_whatever_its_window() {
    let mut h = established(CongestionAlgorithm::NewReno);
    h.conn.send(&payload(20)).expect("room");
    assert_eq!(sent(&mut h).len(), 10);
    for (i, expected) in [(2, 10), (3, 11)] {
        h.send(&with_window(sack_ack(0, &[(1, i)]), 65535 - i as u16));
        assert_eq!(sent(&mut h), [expected], "limited transmit");
    }
    // The same SACK again with yet another window: no new information, no duplicate.
    h.send(&with_window(sack_ack(0, &[(1, 3)]), 60000));
    h.expect_nothing();
    h.send(&with_window(sack_ack(0, &[(1, 4)]), 60001));
    assert_eq!(sent(&mut h), [0], "fast retransmit");
    assert_eq!(h.conn.stats().sack_recoveries, 1);
}

/// Switching algorithms in the middle of a recovery leaves a sane window behind.
#[test]
fn switching_algorithm_during_recovery_starts_the_new_one_fresh() {
    let mut h = lose_first_segment(CongestionAlgorithm::Cubic, 20);
    h.conn.set_congestion(CongestionAlgorithm::NewReno);
    assert_eq!(h.conn.stats().cwnd, 10 * MSS);
    h.send(&sack_ack(12, &[]));
    let stats = h.conn.stats();
    assert_eq!(
        (stats.cwnd, stats.congestion),
        (12 * MSS, CongestionAlgorithm::NewReno)
    );
    assert_eq!(
        sent(&mut h).len(),
        8,
        "the rest of the data, within the window"
    );
}

/// RFC 5682 §3.1 step 2b: the timeout's retransmission is acknowledged, and F-RTO sends new
/// data, whatever the loss window says. Here the holes left below SND.NXT exceed that window:
/// the new segments used to be held back until the next timeout, which then did the same,
/// one segment per RTO (a 32 MB echo through 2 % loss took 10 s instead of 0.3).
#[test]
fn frto_sends_new_data_after_a_timeout_whatever_the_loss_window() {
    let mut h = established_with_config(Config {
        congestion: CongestionAlgorithm::NewReno,
        rack: true,
        ..Config::default()
    });
    h.conn.send(&payload(40)).expect("room");
    assert_eq!(sent(&mut h), (0..10).collect::<Vec<_>>());
    // The whole window is lost; the tail loss probe (new data, segment 10) arrives.
    h.fire_next_timer();
    assert_eq!(sent(&mut h), [10], "the tail loss probe");
    h.send(&sack_ack(0, &[(10, 11)]));
    // RACK marks 0-9 lost; what recovery sends is lost too, until the RTO.
    let mut highest = sent(&mut h).into_iter().fold(10, u32::max);
    let mut after_rto = Vec::new();
    for _ in 0..20 {
        h.fire_next_timer();
        let out = sent(&mut h);
        if h.conn.stats().rtos > 0 {
            after_rto = out;
            break;
        }
        highest = out.into_iter().fold(highest, u32::max);
    }
    assert_eq!(h.conn.stats().rtos, 1, "{:?}", h.conn.stats());
    assert_eq!(
        after_rto.first(),
        Some(&0),
        "the timeout retransmits segment 0: {after_rto:?}"
    );
    highest = after_rto.into_iter().fold(highest, u32::max);
    // Only the retransmission arrives: SND.UNA advances, nothing new is SACKed.
    h.send(&sack_ack(1, &[(10, 11)]));
    let next = sent(&mut h);
    assert!(
        next.iter().any(|&i| i > highest),
        "F-RTO's new data (above segment {highest}): sent {next:?}, {:?}",
        h.conn.stats()
    );
    assert_eq!(h.conn.stats().spurious_rtos, 0);
}
