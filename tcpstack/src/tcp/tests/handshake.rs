//! Opening: CLOSED → SYN-SENT → ESTABLISHED, LISTEN → SYN-RECEIVED → ESTABLISHED, simultaneous
//! open, and each loss of the three-way handshake.

use super::*;
use crate::tcp::{listen_action, reset_for, ConnectionError, ListenAction};

fn client_syn() -> TcpHeader {
    let mut syn = seg(S, IRS, 0);
    syn.options = syn_options(1460, Some(7));
    syn
}

#[test]
fn active_open_sends_syn_with_options_and_acks_the_syn_ack() {
    let mut h = Harness::client(Config::default(), ISS);
    assert_eq!(h.conn.state(), State::SynSent);
    let syn = h.expect_exact(S, ISS, 0, SYN_WINDOW, b"");
    let offered = TcpOptions {
        sack_permitted: true,
        timestamps: syn.header.options.timestamps,
        ..syn_options(1460, Some(7))
    };
    assert_eq!(syn.header.options, offered);
    assert_eq!(offered.timestamps.map(|ts| ts.tsecr), Some(0));
    h.expect_nothing();
    let mut synack = seg(S | A, IRS, ISS + 1);
    synack.options = syn_options(1400, Some(7));
    h.send(&synack);
    assert_eq!(h.conn.state(), State::Established);
    let ack = h.expect_exact(A, ISS + 1, IRS + 1, SCALED_WINDOW, b"");
    assert_eq!(ack.header.options.timestamps, None, "the SYN-ACK had none");
    h.expect_nothing();
    assert_eq!(h.conn.mss(), 1400);
    assert_eq!(h.drain_events(), vec![Event::Connected, Event::Writable]);
    assert_eq!(h.conn.poll_timeout(), None, "nothing in flight, no timer");
}

#[test]
fn sack_permitted_is_echoed_only_when_the_syn_offered_it() {
    let mut offering = client_syn();
    offering.options.sack_permitted = true;
    let mut h = Harness::server(Config::default(), &offering, ISS);
    let synack = h.expect_exact(S | A, ISS, IRS + 1, SYN_WINDOW, b"");
    assert!(synack.header.options.sack_permitted);

    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    let synack = h.expect_exact(S | A, ISS, IRS + 1, SYN_WINDOW, b"");
    assert!(
        !synack.header.options.sack_permitted,
        "RFC 2018 §2: only if the SYN had it"
    );

    let no_sack = Config {
        sack: false,
        ..Config::default()
    };
    let mut h = Harness::server(no_sack, &offering, ISS);
    let synack = h.expect_exact(S | A, ISS, IRS + 1, SYN_WINDOW, b"");
    assert!(
        !synack.header.options.sack_permitted,
        "switched off by configuration"
    );
}

#[test]
fn passive_open_answers_syn_ack_and_establishes_on_ack() {
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    assert_eq!(h.conn.state(), State::SynReceived);
    let synack = h.expect_exact(S | A, ISS, IRS + 1, SYN_WINDOW, b"");
    assert_eq!(synack.header.options, syn_options(1460, Some(7)));
    h.expect_nothing();
    h.send(&seg(A, IRS + 1, ISS + 1));
    assert_eq!(h.conn.state(), State::Established);
    assert_eq!(h.drain_events(), vec![Event::Connected, Event::Writable]);
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn peer_without_options_gets_default_mss_and_no_window_scaling() {
    let mut h = Harness::server(Config::default(), &seg(S, IRS, 0), ISS);
    let synack = h.expect(S | A, ISS, IRS + 1);
    assert_eq!(
        synack.header.options,
        TcpOptions {
            mss: Some(1460),
            ..TcpOptions::default()
        }
    );
    h.send(&seg(A, IRS + 1, ISS + 1));
    assert_eq!(h.conn.mss(), 536);
    h.send_data(&seg(P | A, IRS + 1, ISS + 1), b"x");
    h.advance(ms(40));
    // Unscaled: the 256 KiB buffer is announced as 65535; one byte later the right edge stays
    // put (receiver SWS avoidance), so 65534.
    h.expect_exact(A, ISS + 1, IRS + 2, 65534, b"");
}

/// RFC 9293 §3.5 figure 7, segment by segment, with its sequence numbers (we are TCP Peer A).
#[test]
fn simultaneous_open_goes_through_syn_received() {
    let mut h = Harness::client(Config::default(), 100);
    // 2. SYN-SENT --> <SEQ=100><CTL=SYN>
    h.expect(S, 100, 0);
    // 3. SYN-RECEIVED <-- <SEQ=300><CTL=SYN>
    let mut syn = with_window(seg(S, 300, 0), 1000);
    syn.options = syn_options(1460, Some(7));
    h.send(&syn);
    assert_eq!(h.conn.state(), State::SynReceived);
    // 5. SYN-RECEIVED --> <SEQ=100><ACK=301><CTL=SYN,ACK>
    h.expect_exact(S | A, 100, 301, SYN_WINDOW, b"");
    h.expect_nothing();
    assert!(h.drain_events().is_empty());
    // 6. ESTABLISHED <-- <SEQ=300><ACK=101><CTL=SYN,ACK>, and nothing more to say.
    let mut synack = seg(S | A, 300, 101);
    synack.options = syn_options(1460, Some(7));
    h.send(&with_window(synack, 1000));
    assert_eq!(h.conn.state(), State::Established);
    assert_eq!(h.drain_events(), vec![Event::Connected, Event::Writable]);
    h.expect_nothing();
    assert_eq!(h.conn.poll_timeout(), None, "the SYN is acknowledged");
    // The SYN-ACK's window is not scaled (RFC 7323 §2.2): 1000 bytes, not 1000 << 7.
    h.conn.send(&[7; 3000]).expect("room");
    let first = h.expect(A, 101, 301);
    assert_eq!(first.payload.len(), 1000);
    h.expect_nothing();
    // Data in both directions from here.
    h.send_data(&seg(P | A, 301, 1101), b"hi");
    assert_eq!(h.read_all(), b"hi");
    // That ACK's window field is scaled: the rest goes out, cwnd allowing.
    assert_eq!(h.expect(A, 1101, 303).payload.len(), 1460);
    assert_eq!(h.expect(P | A, 2561, 303).payload.len(), 540);
}

#[test]
fn simultaneous_open_also_establishes_on_a_plain_ack() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    h.send(&client_syn());
    h.expect_exact(S | A, ISS, IRS + 1, SYN_WINDOW, b"");
    // A SYN-ACK that does not acknowledge our SYN is no simultaneous open's: only ACKed.
    h.send(&seg(S | A, IRS, ISS));
    h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.state(), State::SynReceived);
    // The peer's ACK of our SYN-ACK (RFC 9293 §3.10.7.4) completes it as well.
    h.send(&seg(A, IRS + 1, ISS + 1));
    assert_eq!(h.conn.state(), State::Established);
    assert_eq!(h.drain_events(), vec![Event::Connected, Event::Writable]);
    h.expect_nothing();
}

#[test]
fn a_syn_ack_to_a_passive_open_is_only_acknowledged() {
    // Only a connection that sent a SYN of its own can be in a simultaneous open (Linux checks
    // for a full socket, not a request).
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    h.expect(S | A, ISS, IRS + 1);
    h.send(&seg(S | A, IRS, ISS + 1));
    h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.state(), State::SynReceived);
}

#[test]
fn lost_syn_is_retransmitted_with_exponential_backoff_then_times_out() {
    assert_eq!(Config::default().syn_retries, 6);
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    for expected in [1, 2, 4, 8, 16, 32] {
        assert_eq!(h.fire_next_timer(), Duration::from_secs(expected));
        h.expect_exact(S, ISS, 0, SYN_WINDOW, b"");
        h.expect_nothing();
    }
    // syn_retries = 6: after the sixth retransmission, 64 s more and Linux gives up (127 s).
    assert_eq!(h.fire_next_timer(), Duration::from_secs(64));
    assert_eq!(h.now - h.start, Duration::from_secs(127));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
    h.expect_nothing();
    assert_eq!(h.conn.send(b"x"), Err(ConnectionError::TimedOut));
}

#[test]
fn lost_syn_ack_both_sides_retransmit() {
    // Server side: the SYN-ACK is lost. The client's SYN retransmission (at 1 s) is answered with
    // the SYN-ACK again; the server's own timer also fires at 1 s.
    let mut server = Harness::server(Config::default(), &client_syn(), ISS);
    server.expect(S | A, ISS, IRS + 1);
    server.now += ms(999);
    server.send(&client_syn());
    server.expect_exact(S | A, ISS, IRS + 1, SYN_WINDOW, b"");
    server.expect_nothing();
    assert_eq!(server.fire_next_timer(), ms(1));
    server.expect(S | A, ISS, IRS + 1);
    assert_eq!(server.fire_next_timer(), Duration::from_secs(2));
    server.expect(S | A, ISS, IRS + 1);
    server.send(&seg(A, IRS + 1, ISS + 1));
    assert_eq!(server.conn.state(), State::Established);
    // Karn: no sample from the retransmitted SYN-ACK; RFC 6298 §5.7 sets RTO to 3 s.
    assert_eq!(server.conn.stats().srtt, None);
    assert_eq!(server.conn.stats().rto, Duration::from_secs(3));

    // Client side: no SYN-ACK, so the SYN goes again after 1 s; a late SYN-ACK completes it.
    let mut client = Harness::client(Config::default(), ISS);
    client.expect(S, ISS, 0);
    assert_eq!(client.fire_next_timer(), Duration::from_secs(1));
    client.expect(S, ISS, 0);
    client.send(&seg(S | A, IRS, ISS + 1));
    client.expect(A, ISS + 1, IRS + 1);
    assert_eq!(client.conn.state(), State::Established);
}

#[test]
fn synack_retries_exhausted_times_out() {
    let mut h = Harness::server(
        Config {
            synack_retries: 2,
            ..Config::default()
        },
        &client_syn(),
        ISS,
    );
    h.expect(S | A, ISS, IRS + 1);
    for expected in [1, 2] {
        assert_eq!(h.fire_next_timer(), Duration::from_secs(expected));
        h.expect(S | A, ISS, IRS + 1);
    }
    assert_eq!(h.fire_next_timer(), Duration::from_secs(4));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn default_synack_retries_back_off_and_give_up_after_63_seconds() {
    assert_eq!(Config::default().synack_retries, 5);
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    h.expect(S | A, ISS, IRS + 1);
    // synack_retries = 5, Linux's tcp_synack_retries: five retransmissions 1, 2, 4, 8 and 16 s
    // apart (RFC 6298 §5.5), each identical to the first SYN-ACK.
    for expected in [1, 2, 4, 8, 16] {
        assert_eq!(h.fire_next_timer(), Duration::from_secs(expected));
        h.expect_exact(S | A, ISS, IRS + 1, SYN_WINDOW, b"");
        h.expect_nothing();
        assert_eq!(h.conn.state(), State::SynReceived);
    }
    assert!(h.drain_events().is_empty());
    // Then 32 s more without an ACK, and it gives up without a RST, 63 s after the SYN.
    assert_eq!(h.fire_next_timer(), Duration::from_secs(32));
    assert_eq!(h.now - h.start, Duration::from_secs(63));
    assert_eq!(h.conn.state(), State::Closed);
    h.expect_nothing();
    assert_eq!(h.drain_events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
    assert_eq!(h.conn.stats().retransmits, 5);
}

#[test]
fn lost_final_ack_server_retransmits_syn_ack_client_reacks() {
    let mut server = Harness::server(Config::default(), &client_syn(), ISS);
    server.expect(S | A, ISS, IRS + 1);
    let mut client = Harness::client(Config::default(), IRS);
    client.expect(S, IRS, 0);
    let mut synack = seg(S | A, ISS, IRS + 1);
    synack.options = syn_options(1460, Some(7));
    client.send(&synack);
    client.expect(A, IRS + 1, ISS + 1); // lost
    assert_eq!(server.fire_next_timer(), Duration::from_secs(1));
    let again = server.expect(S | A, ISS, IRS + 1);
    client.send(&again.header);
    // The client is ESTABLISHED: the old SYN-ACK fails the acceptability test and is re-ACKed.
    client.expect_exact(A, IRS + 1, ISS + 1, SCALED_WINDOW, b"");
    client.expect_nothing();
    assert_eq!(client.conn.state(), State::Established);
    server.send(&seg(A, IRS + 1, ISS + 1));
    assert_eq!(server.conn.state(), State::Established);
}

#[test]
fn data_from_the_client_completes_a_handshake_whose_ack_was_lost() {
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    h.expect(S | A, ISS, IRS + 1);
    h.send_data(&seg(P | A, IRS + 1, ISS + 1), b"hello");
    assert_eq!(h.conn.state(), State::Established);
    assert_eq!(h.read_all(), b"hello");
}

#[test]
fn rst_in_syn_sent_counts_only_when_it_acknowledges_our_syn() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    // No ACK bit: dropped (RFC 9293 §3.10.7.3).
    h.send(&seg(R, 0, 0));
    // ACK of something else: dropped, never answered.
    h.send(&seg(R | A, 0, ISS + 7));
    assert_eq!(h.conn.state(), State::SynSent);
    h.expect_nothing();
    h.send(&seg(R | A, 0, ISS + 1));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::Reset, Event::Closed]);
    assert_eq!(h.conn.recv(&mut [0; 4]), Err(ConnectionError::Refused));
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn unacceptable_ack_in_syn_sent_is_answered_with_rst() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    h.send(&seg(A, 77, ISS + 50));
    h.expect_exact(R, ISS + 50, 0, 0, b"");
    h.send(&seg(S | A, 77, ISS));
    h.expect(R, ISS, 0);
    assert_eq!(h.conn.state(), State::SynSent);
}

#[test]
fn rst_in_syn_received_from_passive_open_ends_it_quietly() {
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    h.expect(S | A, ISS, IRS + 1);
    // In the window but not exact: challenge ACK (RFC 5961 §3.2).
    h.send(&seg(R, IRS + 100, 0));
    h.expect(A, ISS + 1, IRS + 1);
    assert_eq!(h.conn.state(), State::SynReceived);
    h.send(&seg(R, IRS + 1, 0));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn rst_in_syn_received_from_active_open_is_refusal() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    h.send(&client_syn());
    h.expect(S | A, ISS, IRS + 1);
    h.send(&seg(R, IRS + 1, 0));
    assert_eq!(h.drain_events(), vec![Event::Reset, Event::Closed]);
}

#[test]
fn bad_ack_in_syn_received_is_answered_with_rst() {
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    h.expect(S | A, ISS, IRS + 1);
    h.send(&seg(A, IRS + 1, ISS + 9));
    h.expect_exact(R, ISS + 9, 0, 0, b"");
    assert_eq!(h.conn.state(), State::SynReceived);
}

#[test]
fn new_syn_in_syn_received_from_passive_open_returns_to_listen() {
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    h.expect(S | A, ISS, IRS + 1);
    h.send(&seg(S, IRS + 1, 0));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::Closed]);
}

#[test]
fn data_written_before_the_handshake_goes_after_it() {
    let mut h = Harness::client(Config::default(), ISS);
    assert_eq!(h.conn.send(b"early"), Ok(5));
    h.expect(S, ISS, 0);
    h.expect_nothing();
    h.send(&seg(S | A, IRS, ISS + 1));
    h.expect_exact(P | A, ISS + 1, IRS + 1, 65535, b"early");
    h.expect_nothing();
}

#[test]
fn close_in_syn_sent_deletes_the_tcb() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    h.conn.close();
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.drain_events(), vec![Event::Closed]);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn listen_rules_and_reset_for() {
    assert_eq!(listen_action(&seg(S, 1, 0), 0), ListenAction::Accept);
    assert_eq!(listen_action(&seg(R, 1, 0), 0), ListenAction::Drop);
    assert_eq!(listen_action(&seg(F, 1, 0), 0), ListenAction::Drop);
    let ListenAction::Reset(rst) = listen_action(&seg(A, 1, 42), 0) else {
        panic!("an ACK to a listener is reset");
    };
    assert_eq!(
        (rst.flags, rst.seq.0, rst.src_port, rst.dst_port),
        (R, 42, LOCAL_PORT, REMOTE_PORT)
    );
    // Without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SYN and FIN counted.
    let rst = reset_for(&seg(S | F, 10, 0), 5).expect("answered");
    assert_eq!((rst.flags, rst.seq.0, rst.ack.0), (R | A, 0, 17));
    assert_eq!(
        reset_for(&seg(R | A, 10, 3), 0),
        None,
        "a RST is never answered"
    );
}

#[test]
fn close_in_syn_received_sends_fin_once_established() {
    let mut h = Harness::server(Config::default(), &client_syn(), ISS);
    h.expect(S | A, ISS, IRS + 1);
    h.conn.close();
    assert_eq!(h.conn.state(), State::SynReceived);
    h.expect_nothing();
    h.send(&seg(A, IRS + 1, ISS + 1));
    assert_eq!(h.conn.state(), State::FinWait1);
    h.expect_exact(F | A, ISS + 1, IRS + 1, SCALED_WINDOW, b"");
    h.send(&seg(A, IRS + 1, ISS + 2));
    assert_eq!(h.conn.state(), State::FinWait2);
}

#[test]
fn close_in_syn_sent_with_queued_data_sends_it_then_fin() {
    let mut h = Harness::client(Config::default(), ISS);
    h.expect(S, ISS, 0);
    h.conn.send(b"req").expect("room");
    h.conn.close();
    assert_eq!(h.conn.state(), State::SynSent);
    h.send(&seg(S | A, IRS, ISS + 1));
    assert_eq!(h.conn.state(), State::FinWait1);
    h.expect_exact(F | P | A, ISS + 1, IRS + 1, 65535, b"req");
    h.expect_nothing();
}
