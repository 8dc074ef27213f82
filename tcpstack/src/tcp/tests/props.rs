//! Property tests: random segments, user calls and time steps fed to a connection in every state
//! must never panic, never grow a buffer past its bound, and leave the timers sane. Connections
//! that negotiated SACK and timestamps get segments with SACK blocks about the data they sent
//! and TSvals around the peer's clock, so the scoreboard and PAWS are fuzzed as well.

use proptest::prelude::*;

use super::*;
use crate::wire::{SackBlock, Timestamps};

/// The peer's TSval on its SYN; its clock then runs at 1 ms per millisecond of the harness.
const PEER_TS: u32 = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    Segment {
        flags: u8,
        seq: SeqChoice,
        ack: SeqChoice,
        window: u16,
        len: usize,
        options: bool,
        /// SACK blocks: start (around SND.UNA, like the ACK) and length.
        sack: Vec<(SeqChoice, u32)>,
        /// TSval (around the peer's clock) and TSecr (around our last TSval).
        timestamps: Option<(TsChoice, TsChoice)>,
    },
    Advance(u64),
    Send(usize),
    Recv(usize),
    Close,
    Abort,
}

/// A sequence number near the interesting point or anywhere at all.
#[derive(Clone, Copy, Debug)]
enum SeqChoice {
    Near(i32),
    Anywhere(u32),
}

impl SeqChoice {
    fn resolve(self, base: u32) -> u32 {
        match self {
            SeqChoice::Near(offset) => base.wrapping_add(offset as u32),
            SeqChoice::Anywhere(value) => value,
        }
    }
}

/// A timestamp near a clock's current value (older ones fail PAWS), across the sign bit that
/// decides old from new (RFC 7323 §5.2), or anything.
#[derive(Clone, Copy, Debug)]
enum TsChoice {
    Near(i32),
    AcrossTheWrap(i32),
    Anywhere(u32),
}

impl TsChoice {
    fn resolve(self, clock: u32) -> u32 {
        match self {
            TsChoice::Near(offset) => clock.wrapping_add(offset as u32),
            TsChoice::AcrossTheWrap(offset) => {
                clock.wrapping_add(0x8000_0000).wrapping_add(offset as u32)
            }
            TsChoice::Anywhere(value) => value,
        }
    }
}

fn ts_choice() -> impl Strategy<Value = TsChoice> {
    prop_oneof![
        6 => (-100i32..400).prop_map(TsChoice::Near),
        1 => (-3i32..3).prop_map(TsChoice::AcrossTheWrap),
        1 => any::<u32>().prop_map(TsChoice::Anywhere),
    ]
}

/// A SACK block over the data we may have in flight (the send buffer holds 8192 bytes),
/// sometimes below SND.UNA (a D-SACK), empty, inverted or huge.
fn sack_block() -> impl Strategy<Value = (SeqChoice, u32)> {
    let start = prop_oneof![
        6 => (-1500i32..10_000).prop_map(SeqChoice::Near),
        1 => any::<u32>().prop_map(SeqChoice::Anywhere),
    ];
    let len = prop_oneof![6 => 0u32..6000, 1 => any::<u32>()];
    (start, len)
}

/// An acknowledgement number (around SND.UNA): like any sequence number, or as often one at or a
/// little above SND.UNA, as a live peer sends.
fn ack_choice() -> impl Strategy<Value = SeqChoice> {
    prop_oneof![seq_choice(), (0i32..3000).prop_map(SeqChoice::Near)]
}

fn seq_choice() -> impl Strategy<Value = SeqChoice> {
    prop_oneof![
        4 => (-3000i32..6000).prop_map(SeqChoice::Near),
        1 => (-200_000i32..200_000).prop_map(SeqChoice::Near),
        1 => any::<u32>().prop_map(SeqChoice::Anywhere),
    ]
}

/// Any combination of flags, or as often a plain ACK (with PSH, rarely FIN), which is what
/// reaches the ACK processing, the scoreboard and PAWS' updates.
fn flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>().prop_map(|flags| flags & 0x3f),
        (any::<bool>(), prop::bool::weighted(0.1)).prop_map(|(psh, fin)| {
            let mut flags = A;
            if psh {
                flags |= P;
            }
            if fin {
                flags |= F;
            }
            flags.0
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let header = (
        flags(),
        seq_choice(),
        ack_choice(),
        any::<u16>(),
        0usize..3000,
        any::<bool>(),
    );
    let sack = prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::collection::vec(sack_block(), 1..=4),
    ];
    let timestamps = prop_oneof![1 => Just(None), 4 => (ts_choice(), ts_choice()).prop_map(Some)];
    prop_oneof![
        8 => (header, sack, timestamps).prop_map(
            |((flags, seq, ack, window, len, options), sack, timestamps)| Op::Segment {
                flags,
                seq,
                ack,
                window,
                len,
                options,
                sack,
                timestamps,
            }
        ),
        2 => (0u64..5000).prop_map(Op::Advance),
        1 => (0u64..200_000_000).prop_map(|ms| Op::Advance(ms / 1000)),
        2 => (0usize..20_000).prop_map(Op::Send),
        2 => (0usize..20_000).prop_map(Op::Recv),
        1 => Just(Op::Close),
        1 => (0..20).prop_map(|n| if n == 0 { Op::Abort } else { Op::Close }),
    ]
}

/// What a live peer sends an ESTABLISHED connection with SACK and timestamps: ACKs (some with
/// data, in order or not) of what is in flight, with SACK blocks and TSvals mostly plausible,
/// between writes, reads and time steps that fire RTOs and delayed ACKs.
fn live_op() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![Just(A.0), Just((P | A).0)];
    let seq = prop_oneof![
        3 => Just(SeqChoice::Near(0)),
        1 => (-1500i32..4000).prop_map(SeqChoice::Near),
    ];
    let len = prop_oneof![3 => Just(0usize), 1 => 1usize..1500];
    let ack = prop_oneof![4 => (0i32..3000).prop_map(SeqChoice::Near), 1 => seq_choice()];
    let window = prop_oneof![3 => 1000u16..u16::MAX, 1 => any::<u16>()];
    let sack = prop::collection::vec(sack_block(), 0..=4);
    let timestamps = prop_oneof![1 => Just(None), 6 => (ts_choice(), ts_choice()).prop_map(Some)];
    prop_oneof![
        12 => (flags, seq, ack, window, len, sack, timestamps).prop_map(
            |(flags, seq, ack, window, len, sack, timestamps)| Op::Segment {
                flags,
                seq,
                ack,
                window,
                len,
                options: false,
                sack,
                timestamps,
            }
        ),
        2 => (0usize..20_000).prop_map(Op::Send),
        2 => (0u64..400).prop_map(Op::Advance),
        1 => (0usize..20_000).prop_map(Op::Recv),
    ]
}

const STATES: [State; 10] = [
    State::Closed,
    State::SynSent,
    State::SynReceived,
    State::Established,
    State::FinWait1,
    State::FinWait2,
    State::CloseWait,
    State::Closing,
    State::LastAck,
    State::TimeWait,
];

fn small_config() -> Config {
    Config {
        send_buffer: 8192,
        recv_buffer: 6000,
        ..Config::default()
    }
}

/// The options of the peer's SYN or SYN-ACK: SACK-permitted and timestamps when `negotiate`
/// (echoing `our_tsval`).
fn peer_syn_options(mss: u16, shift: u8, negotiate: bool, our_tsval: u32) -> TcpOptions {
    TcpOptions {
        sack_permitted: negotiate,
        timestamps: negotiate.then_some(Timestamps {
            tsval: PEER_TS,
            tsecr: our_tsval,
        }),
        ..syn_options(mss, Some(shift))
    }
}

/// A connection driven into `state` by the packet-level harness; with `negotiate`, both SYNs
/// carried SACK-permitted and timestamps.
fn harness_in(state: State, negotiate: bool) -> Harness {
    let config = small_config();
    let mut h = match state {
        State::SynSent => {
            let mut h = Harness::client(config, ISS);
            h.expect(S, ISS, 0);
            return h;
        }
        State::SynReceived => {
            let mut syn = seg(S, IRS, 0);
            syn.options = peer_syn_options(1000, 2, negotiate, 0);
            let mut h = Harness::server(config, &syn, ISS);
            h.expect(S | A, ISS, IRS + 1);
            return h;
        }
        _ => {
            let mut h = Harness::client(config, ISS);
            let syn = h.expect(S, ISS, 0);
            let ours = syn.header.options.timestamps.map_or(0, |ts| ts.tsval);
            let mut synack = seg(S | A, IRS, ISS + 1);
            synack.options = peer_syn_options(1460, 7, negotiate, ours);
            h.send(&synack);
            h.expect(A, ISS + 1, IRS + 1);
            assert_eq!(h.conn.stats().sack, negotiate);
            assert_eq!(h.conn.stats().timestamps, negotiate);
            h
        }
    };
    match state {
        State::Closed => {
            h.conn.abort();
            h.recv();
        }
        State::FinWait1 | State::FinWait2 | State::Closing | State::TimeWait => {
            h.conn.close();
            h.expect(F | A, ISS + 1, IRS + 1);
            match state {
                State::FinWait2 => h.send(&seg(A, IRS + 1, ISS + 2)),
                State::Closing => h.send(&seg(F | A, IRS + 1, ISS + 1)),
                State::TimeWait => h.send(&seg(F | A, IRS + 1, ISS + 2)),
                _ => {}
            }
        }
        State::CloseWait | State::LastAck => {
            h.send(&seg(F | A, IRS + 1, ISS + 1));
            if state == State::LastAck {
                h.conn.close();
            }
        }
        _ => {}
    }
    while h.recv().is_some() {}
    assert_eq!(h.conn.state(), state);
    h.drain_events();
    h
}

fn run(state: State, negotiate: bool, ops: &[Op]) {
    let mut h = harness_in(state, negotiate);
    let data = vec![0x5a; 20_000];
    let mut buf = vec![0u8; 20_000];
    let mut got_closed = false;
    // The TSval of the last segment the connection sent, for the TSecr of the peer's.
    let mut our_tsval = 0u32;
    if negotiate {
        // A window of data in flight for the SACK blocks to describe, where the state allows.
        let _ = h.conn.send(&data[..8192]);
        while let Some(s) = h.recv() {
            our_tsval = s.header.options.timestamps.map_or(our_tsval, |ts| ts.tsval);
        }
    }
    for op in ops {
        match *op {
            Op::Segment {
                flags,
                seq,
                ack,
                window,
                len,
                options,
                ref sack,
                timestamps,
            } => {
                // Sequence numbers around RCV.NXT, ACKs and SACK blocks around SND.UNA, so that
                // they meet the data in flight.
                let (snd_una, rcv_nxt) = h.conn.snd_una_and_rcv_nxt();
                let (snd_una, rcv_nxt) = (snd_una.0, rcv_nxt.0);
                let mut header = seg(TcpFlags(flags), seq.resolve(rcv_nxt), ack.resolve(snd_una));
                header.ack = SeqNum(ack.resolve(snd_una));
                header.window = window;
                if options {
                    header.options = syn_options((window % 2000) + 1, Some((window % 20) as u8));
                    header.options.sack_permitted = negotiate;
                }
                if let Some((tsval, tsecr)) = timestamps {
                    let peer_clock = PEER_TS.wrapping_add((h.now - h.start).as_millis() as u32);
                    header.options.timestamps = Some(Timestamps {
                        tsval: tsval.resolve(peer_clock),
                        tsecr: tsecr.resolve(our_tsval),
                    });
                }
                for &(start, len) in sack {
                    let start = SeqNum(start.resolve(snd_una));
                    header.options.push_sack_block(SackBlock {
                        start,
                        end: start + len,
                    });
                }
                h.send_data(&header, &data[..len]);
            }
            Op::Advance(ms_) => {
                h.now += ms(ms_);
            }
            Op::Send(len) => {
                let _ = h.conn.send(&data[..len]);
            }
            Op::Recv(len) => {
                let _ = h.conn.recv(&mut buf[..len]);
            }
            Op::Close => h.conn.close(),
            Op::Abort => h.conn.abort(),
        }
        h.conn.handle_timeout(h.now);
        let mut sent = 0;
        while let Some(s) = h.recv() {
            sent += 1;
            assert!(sent < 200, "poll_transmit does not stop");
            assert!(s.payload.len() <= 1460);
            assert!(!(s.header.flags.syn() && s.header.flags.fin()));
            if let Some(ts) = s.header.options.timestamps {
                our_tsval = ts.tsval;
            }
        }
        h.conn.check_invariants(h.now);
        for event in h.drain_events() {
            assert!(!got_closed, "no event after Closed: {event:?}");
            got_closed |= event == Event::Closed;
        }
        if h.conn.state() == State::Closed {
            assert_eq!(h.conn.poll_timeout(), None);
        }
    }
    // Left alone, every connection that is closing ends: timers eventually run out or repeat.
    for _ in 0..200 {
        let Some(at) = h.conn.poll_timeout() else {
            break;
        };
        h.now = at;
        h.conn.handle_timeout(h.now);
        while h.recv().is_some() {}
        h.conn.check_invariants(h.now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..crate::test_support::proptest_config()
    })]

    #[test]
    fn random_segments_in_every_state(
        state in 0..STATES.len(),
        negotiate in any::<bool>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(STATES[state], negotiate, &ops);
    }

    #[test]
    fn sack_blocks_and_timestamps_in_a_live_connection(ops in prop::collection::vec(live_op(), 1..120)) {
        run(State::Established, true, &ops);
    }
}

#[test]
fn every_state_survives_a_fixed_storm() {
    // A deterministic sweep in addition to proptest's random cases.
    let mut ops = Vec::new();
    for flags in 0u8..64 {
        for (seq, ack) in [(0, 0), (1, 1), (-1, 1), (3000, 2), (-70_000, 70_000)] {
            ops.push(Op::Segment {
                flags,
                seq: SeqChoice::Near(seq),
                ack: SeqChoice::Near(ack),
                window: 1000,
                len: (flags as usize * 37) % 1500,
                options: flags % 3 == 0,
                sack: if flags % 2 == 0 {
                    vec![(SeqChoice::Near(seq), 1000), (SeqChoice::Near(-500), 700)]
                } else {
                    Vec::new()
                },
                timestamps: (flags % 5 != 0)
                    .then_some((TsChoice::Near(seq % 300), TsChoice::Near(-ack % 100))),
            });
        }
        ops.push(Op::Advance(300));
    }
    for state in STATES {
        for negotiate in [false, true] {
            run(state, negotiate, &ops);
        }
    }
}
