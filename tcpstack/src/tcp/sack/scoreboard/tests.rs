//! The scoreboard's rules and its bounds under arbitrary ACKs (proptest).

use super::super::test_support::{rel, BASES};
use super::*;
use proptest::prelude::*;

const MSS: u32 = 1000;

/// Ten segments sent from `base`; the 1st and 5th lost, the others SACKed.
fn two_holes(base: u32) -> (SackScoreboard, SeqNum) {
    let una = SeqNum(base);
    let mut sb = SackScoreboard::new(una, MSS);
    let high_data = una + 12_000u32;
    sb.on_ack(una, &[rel(base, 1000, 4000)], high_data);
    let update = sb.on_ack(
        una,
        &[rel(base, 5000, 10_000), rel(base, 1000, 4000)],
        high_data,
    );
    assert_eq!(update.newly_sacked, 5000);
    assert_eq!(update.delivered, 5000);
    (sb, high_data)
}

#[test]
fn records_merges_and_validates_blocks() {
    for base in BASES {
        let una = SeqNum(base);
        let mut sb = SackScoreboard::new(una, MSS);
        let high_data = una + 10_000u32;
        let blocks = [
            rel(base, 3000, 4000),
            rel(base, 1000, 2000),
            // Touches the first: merged.
            rel(base, 4000, 5000),
            // Beyond what was sent: ignored.
            rel(base, 9000, 11_000),
            // Empty and inverted: ignored.
            rel(base, 6000, 6000),
            rel(base, 8000, 7000),
        ];
        let update = sb.on_ack(una, &blocks, high_data);
        assert_eq!(sb.sacked(), [rel(base, 1000, 2000), rel(base, 3000, 5000)]);
        assert_eq!(
            (update.newly_sacked, update.acked, update.dsack),
            (3000, 0, None)
        );
        // Overlapping everything: one range.
        sb.on_ack(una, &[rel(base, 500, 6000)], high_data);
        assert_eq!(sb.sacked(), [rel(base, 500, 6000)]);
        assert_eq!(sb.sacked_bytes(), 5500);
        // A later block partly below SND.UNA is cut to it.
        let update = sb.on_ack(
            una + 700u32,
            &[rel(base, 6500, 7000), rel(base, 0, 6200)],
            high_data,
        );
        assert_eq!(sb.sacked(), [rel(base, 700, 6200), rel(base, 6500, 7000)]);
        assert_eq!(update.acked, 700);
        // DeliveredData: 700 acked (200 of them SACKed before) + 700 newly SACKed.
        assert_eq!(update.delivered, 500 + 700);
        // The cumulative ACK passes the first range.
        let update = sb.on_ack(una + 6200u32, &[], high_data);
        assert_eq!(sb.sacked(), [rel(base, 6500, 7000)]);
        assert_eq!(
            update.delivered, 0,
            "those bytes were delivered when SACKed"
        );
        // An ACK outside [SND.UNA, HighData] changes nothing.
        assert_eq!(
            sb.on_ack(una, &[rel(base, 8000, 9000)], high_data),
            SackUpdate::default()
        );
        assert_eq!(sb.sacked(), [rel(base, 6500, 7000)]);
    }
}

#[test]
fn is_lost_counts_segments_and_bytes_above() {
    for base in BASES {
        let (sb, _) = two_holes(base);
        let at = |off: u32| SeqNum(base) + off;
        assert!(sb.is_lost(at(0)));
        assert!(sb.is_lost(at(4000)) && sb.is_lost(at(4999)));
        assert!(!sb.is_lost(at(1500)), "SACKed");
        assert!(!sb.is_lost(at(10_000)), "nothing SACKed above");

        let una = SeqNum(base);
        let high_data = una + 20_000u32;
        // One range of exactly (DupThresh − 1)·SMSS bytes: not lost; one byte more: lost.
        let mut sb = SackScoreboard::new(una, MSS);
        sb.on_ack(una, &[rel(base, 1000, 3000)], high_data);
        assert!(!sb.is_lost(una));
        sb.on_ack(una, &[rel(base, 3000, 3001)], high_data);
        assert!(sb.is_lost(una));
        // Three discontiguous small segments: lost; two: not.
        let mut sb = SackScoreboard::new(una, MSS);
        sb.on_ack(
            una,
            &[rel(base, 1000, 1100), rel(base, 2000, 2100)],
            high_data,
        );
        assert!(!sb.is_lost(una));
        sb.on_ack(una, &[rel(base, 3000, 3100)], high_data);
        assert!(sb.is_lost(una));
        assert!(sb.is_lost(una + 999u32), "three segments above 999 too");
        assert!(!sb.is_lost(una + 1100u32), "only two above 1100");
    }
}

#[test]
fn pipe_counts_unsacked_not_lost_and_retransmitted_bytes() {
    for base in BASES {
        let (mut sb, high_data) = two_holes(base);
        let at = |off: u32| SeqNum(base) + off;
        // Holes 0–1000 and 4000–5000 are lost; 10 000–12 000 is in flight.
        assert_eq!(sb.pipe(high_data), 2000);
        assert_eq!(sb.pipe(at(10_000)), 0);
        sb.enter_recovery(high_data);
        sb.on_retransmit(at(0), MSS, false, high_data);
        assert_eq!(
            sb.pipe(high_data),
            3000,
            "a retransmitted lost segment is in flight"
        );
        sb.on_retransmit(at(4000), MSS, false, high_data);
        assert_eq!(sb.pipe(high_data), 4000);
        // The first retransmission arrives: SND.UNA moves to the next SACKed range's end.
        sb.on_ack(at(4000), &[rel(base, 5000, 10_000)], high_data);
        assert_eq!(sb.pipe(high_data), 3000);
    }
}

#[test]
fn next_seg_follows_rules_one_to_four() {
    for base in BASES {
        let (mut sb, high_data) = two_holes(base);
        let at = |off: u32| SeqNum(base) + off;
        sb.enter_recovery(high_data);
        // Rule (1): the first lost hole, even if new data could be sent.
        let first = sb.next_seg(high_data, true);
        assert_eq!(
            first,
            Some(NextSeg::Retransmit {
                start: at(0),
                len: MSS
            })
        );
        sb.on_retransmit(at(0), MSS, false, high_data);
        assert_eq!(
            sb.next_seg(high_data, true),
            Some(NextSeg::Retransmit {
                start: at(4000),
                len: MSS
            })
        );
        sb.on_retransmit(at(4000), MSS, false, high_data);
        // Rule (2): nothing lost above HighRxt, new data allowed.
        assert_eq!(sb.next_seg(high_data, true), Some(NextSeg::NewData));
        // Rule (4): no new data, nothing unSACKed between HighRxt and the highest SACK: the
        // rescue retransmission ends at the highest outstanding byte (12 000).
        let rescue = sb.next_seg(high_data, false);
        assert_eq!(
            rescue,
            Some(NextSeg::Rescue {
                start: at(11_000),
                len: MSS
            })
        );
        sb.on_retransmit(at(11_000), MSS, true, high_data);
        assert_eq!(
            sb.next_seg(high_data, false),
            None,
            "one rescue per recovery"
        );
        assert_eq!(sb.pipe(high_data), 4000, "HighRxt did not move");

        // Rule (3): an unSACKed hole below the highest SACK that is not (yet) lost.
        let una = SeqNum(base);
        let mut sb = SackScoreboard::new(una, MSS);
        sb.on_ack(una, &[rel(base, 2500, 3500)], high_data);
        sb.enter_recovery(high_data);
        assert!(!sb.is_lost(una));
        assert_eq!(sb.next_seg(high_data, true), Some(NextSeg::NewData));
        assert_eq!(
            sb.next_seg(high_data, false),
            Some(NextSeg::Retransmit {
                start: una,
                len: MSS
            })
        );
        sb.on_retransmit(una, MSS, false, high_data);
        assert_eq!(
            sb.next_seg(high_data, false),
            Some(NextSeg::Retransmit {
                start: at(1000),
                len: MSS
            })
        );
        sb.on_retransmit(at(1000), MSS, false, high_data);
        assert_eq!(
            sb.next_seg(high_data, false),
            Some(NextSeg::Retransmit {
                start: at(2000),
                len: 500
            }),
            "a short hole is one short segment"
        );
    }
}

#[test]
fn recovery_ends_at_the_recovery_point_and_rescue_rearms() {
    let base = BASES[1];
    let (mut sb, high_data) = two_holes(base);
    let at = |off: u32| SeqNum(base) + off;
    sb.enter_recovery(high_data);
    assert!(sb.in_recovery());
    sb.on_ack(at(11_000), &[], high_data);
    assert!(sb.in_recovery());
    assert!(sb.sacked().is_empty());
    sb.on_ack(high_data, &[], high_data);
    assert!(!sb.in_recovery());
    // An RTO ends recovery but keeps the SACKs.
    let (mut sb, high_data) = two_holes(base);
    sb.enter_recovery(high_data);
    sb.on_rto();
    assert!(!sb.in_recovery());
    assert_eq!(sb.sacked_bytes(), 8000);
    sb.clear();
    assert_eq!(sb.sacked_bytes(), 0);
}

#[test]
fn d_sack_reveals_spurious_retransmissions() {
    for base in BASES {
        let (mut sb, high_data) = two_holes(base);
        let at = |off: u32| SeqNum(base) + off;
        sb.enter_recovery(high_data);
        sb.on_retransmit(at(0), MSS, false, high_data);
        assert!(!sb.recovery_was_spurious());
        // The original arrives, then the retransmission: D-SACK below the ACK.
        let update = sb.on_ack(
            at(4000),
            &[rel(base, 0, 1000), rel(base, 5000, 10_000)],
            high_data,
        );
        assert_eq!(update.dsack, Some(rel(base, 0, 1000)));
        assert!(update.spurious_retransmission);
        assert!(sb.recovery_was_spurious());
        assert_eq!(sb.sacked(), [rel(base, 5000, 10_000)]);
        // A D-SACK inside the second block, for data never retransmitted.
        let update = sb.on_ack(
            at(4000),
            &[rel(base, 6000, 7000), rel(base, 5000, 10_000)],
            high_data,
        );
        assert_eq!(update.dsack, Some(rel(base, 6000, 7000)));
        assert!(!update.spurious_retransmission);
        assert_eq!(update.newly_sacked, 0);
        // A second retransmission not D-SACKed: the recovery was not all spurious.
        sb.on_retransmit(at(4000), MSS, false, high_data);
        assert!(!sb.recovery_was_spurious());
    }
}

#[test]
fn a_first_block_starting_below_the_ack_is_a_d_sack_wherever_it_ends() {
    for base in BASES {
        let (mut sb, high_data) = two_holes(base);
        let at = |off: u32| SeqNum(base) + off;
        // A duplicate reported whole across the cumulative ACK: no new data SACKed.
        let dsack = rel(base, 3500, 4500);
        let update = sb.on_ack(at(4000), &[dsack, rel(base, 5000, 10_000)], high_data);
        assert_eq!(update.dsack, Some(dsack));
        // Delivered: only the hole 0–1000 the ACK covers.
        assert_eq!((update.newly_sacked, update.delivered), (0, 1000));
        assert_eq!(sb.sacked(), [rel(base, 5000, 10_000)]);
        // Starting at the ACK, it is an ordinary SACK block.
        let update = sb.on_ack(at(4000), &[rel(base, 4000, 4500)], high_data);
        assert_eq!(update.dsack, None);
        assert_eq!(update.newly_sacked, 500);
        // Past HighData it is neither.
        let beyond = block(at(3000), high_data + 1u32);
        let update = sb.on_ack(at(4000), &[beyond], high_data);
        assert_eq!((update.dsack, update.newly_sacked), (None, 0));
        assert_eq!(sb.sacked_bytes(), 5500);
    }
}

#[test]
fn memory_is_bounded_whatever_the_peer_sends() {
    let una = SeqNum(u32::MAX - 100_000);
    let mut sb = SackScoreboard::new(una, MSS);
    let high_data = una + 1_000_000u32;
    for i in 0..1000u32 {
        let start = una + (i * 2 + 1) * 500;
        sb.on_ack(una, &[block(start, start + 500u32)], high_data);
        assert!(sb.sacked().len() <= MAX_SACKED_RANGES);
    }
    assert_eq!(sb.sacked().len(), MAX_SACKED_RANGES);
    for i in 0..2 * MAX_RETRANSMITTED as u32 {
        sb.on_retransmit(una + i * 10, 10, false, high_data);
    }
    assert_eq!(sb.retransmitted.len(), MAX_RETRANSMITTED);
}

fn assert_invariants(sb: &SackScoreboard, high_data: SeqNum) -> Result<(), TestCaseError> {
    sb.check_invariants(high_data);
    prop_assert!(sb.pipe(high_data) <= 2 * (high_data - sb.snd_una));
    match sb.next_seg(high_data, false) {
        Some(NextSeg::Retransmit { start, len }) | Some(NextSeg::Rescue { start, len }) => {
            prop_assert!(len > 0 && len <= MSS);
            prop_assert!(start >= sb.snd_una && start + len <= high_data);
            prop_assert!(!sb.is_sacked(start));
        }
        Some(NextSeg::NewData) => prop_assert!(false, "no new data was offered"),
        None => {}
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Ack(u32, Vec<(u32, u32)>),
    Garbage(Vec<(u32, u32)>),
    Retransmit(u32, u32, bool),
    EnterRecovery,
    Rto,
}

fn op() -> impl Strategy<Value = Op> {
    let offsets = prop::collection::vec((0u32..70_000, 0u32..70_000), 0..5);
    prop_oneof![
        (0u32..5000, offsets.clone()).prop_map(|(a, b)| Op::Ack(a, b)),
        prop::collection::vec((any::<u32>(), any::<u32>()), 0..5).prop_map(Op::Garbage),
        (0u32..70_000, 1u32..3000, any::<bool>()).prop_map(|(s, l, r)| Op::Retransmit(s, l, r)),
        Just(Op::EnterRecovery),
        Just(Op::Rto),
    ]
}

proptest! {
    #![proptest_config(crate::test_support::proptest_config())]

    #[test]
    fn scoreboard_stays_consistent(base in any::<u32>(), ops in prop::collection::vec(op(), 1..100)) {
        let start = SeqNum(base);
        let high_data = start + 64_000u32;
        let mut sb = SackScoreboard::new(start, MSS);
        for op in ops {
            match op {
                Op::Ack(advance, blocks) => {
                    let ack = (sb.snd_una + advance).min(high_data);
                    let blocks: Vec<SackBlock> = blocks
                        .into_iter()
                        .map(|(s, e)| block(start + s, start + e))
                        .collect();
                    let before = sb.sacked_bytes;
                    let update = sb.on_ack(ack, &blocks, high_data);
                    prop_assert!(update.delivered <= update.acked + update.newly_sacked);
                    prop_assert!(update.newly_sacked <= sb.sacked_bytes || before > 0);
                }
                Op::Garbage(blocks) => {
                    let blocks: Vec<SackBlock> =
                        blocks.into_iter().map(|(s, e)| block(SeqNum(s), SeqNum(e))).collect();
                    sb.on_ack(sb.snd_una, &blocks, high_data);
                }
                Op::Retransmit(s, l, rescue) => sb.on_retransmit(start + s, l, rescue, high_data),
                Op::EnterRecovery => sb.enter_recovery(high_data),
                Op::Rto => sb.on_rto(),
            }
            assert_invariants(&sb, high_data)?;
        }
    }

}
