//! Property tests: random segments, user calls and time steps fed to a connection in every state
//! must never panic, never grow a buffer past its bound, and leave the timers sane.

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Segment {
        flags: u8,
        seq: SeqChoice,
        ack: SeqChoice,
        window: u16,
        len: usize,
        options: bool,
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

fn seq_choice() -> impl Strategy<Value = SeqChoice> {
    prop_oneof![
        4 => (-3000i32..6000).prop_map(SeqChoice::Near),
        1 => (-200_000i32..200_000).prop_map(SeqChoice::Near),
        1 => any::<u32>().prop_map(SeqChoice::Anywhere),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), seq_choice(), seq_choice(), any::<u16>(), 0usize..3000, any::<bool>())
            .prop_map(|(flags, seq, ack, window, len, options)| Op::Segment {
                flags: flags & 0x3f,
                seq,
                ack,
                window,
                len,
                options,
            }),
        2 => (0u64..5000).prop_map(Op::Advance),
        1 => (0u64..200_000_000).prop_map(|ms| Op::Advance(ms / 1000)),
        2 => (0usize..20_000).prop_map(Op::Send),
        2 => (0usize..20_000).prop_map(Op::Recv),
        1 => Just(Op::Close),
        1 => (0..20).prop_map(|n| if n == 0 { Op::Abort } else { Op::Close }),
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

/// A connection driven into `state` by the packet-level harness.
fn harness_in(state: State) -> Harness {
    let config = small_config();
    let mut h = match state {
        State::SynSent => {
            let mut h = Harness::client(config, ISS);
            h.expect(S, ISS, 0);
            return h;
        }
        State::SynReceived => {
            let mut syn = seg(S, IRS, 0);
            syn.options = syn_options(1000, Some(2));
            let mut h = Harness::server(config, &syn, ISS);
            h.expect(S | A, ISS, IRS + 1);
            return h;
        }
        _ => Harness::established_with(config, ISS, IRS),
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

fn run(state: State, ops: &[Op]) {
    let mut h = harness_in(state);
    let data = vec![0x5a; 20_000];
    let mut buf = vec![0u8; 20_000];
    let mut got_closed = false;
    for op in ops {
        match *op {
            Op::Segment {
                flags,
                seq,
                ack,
                window,
                len,
                options,
            } => {
                let mut header = seg(TcpFlags(flags), seq.resolve(IRS + 1), ack.resolve(ISS + 1));
                header.ack = SeqNum(ack.resolve(ISS + 1));
                header.window = window;
                if options {
                    header.options = syn_options((window % 2000) + 1, Some((window % 20) as u8));
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
    fn random_segments_in_every_state(state in 0..STATES.len(), ops in prop::collection::vec(op(), 1..60)) {
        run(STATES[state], &ops);
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
            });
        }
        ops.push(Op::Advance(300));
    }
    for state in STATES {
        run(state, &ops);
    }
}
