//! Two connections back to back: whole-connection traces and transfers.

use super::*;

/// A segment on the wire between the two, as tcpdump would show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub from_client: bool,
    pub flags: String,
    pub seq: u32,
    pub ack: u32,
    pub len: usize,
}

pub(super) struct Pair {
    pub client: Connection,
    pub server: Connection,
    pub now: Instant,
    pub trace: Vec<Line>,
}

fn reversed() -> FourTuple {
    FourTuple {
        local: tuple().remote,
        remote: tuple().local,
    }
}

impl Pair {
    /// Client sends SYN; server is created from it (the SYN is in the trace).
    pub fn new(config: Config, client_iss: u32, server_iss: u32) -> Self {
        let now = Instant::now();
        let mut client = Connection::connect(config.clone(), reversed(), SeqNum(client_iss), now);
        let syn = client.poll_transmit(now).expect("SYN");
        let server = Connection::accept(config, tuple(), &syn.header, SeqNum(server_iss), now);
        let mut pair = Pair {
            client,
            server,
            now,
            trace: Vec::new(),
        };
        pair.record(true, &syn);
        pair
    }

    fn record(&mut self, from_client: bool, s: &Segment) {
        self.trace.push(Line {
            from_client,
            flags: s.header.flags.to_string(),
            seq: s.header.seq.0,
            ack: s.header.ack.0,
            len: s.payload.len(),
        });
    }

    /// Delivers everything either side wants to send, until both are quiet.
    pub fn flush(&mut self) {
        loop {
            let mut moved = false;
            while let Some(s) = self.client.poll_transmit(self.now) {
                self.record(true, &s);
                self.server.handle_segment(&s.header, &s.payload, self.now);
                moved = true;
            }
            while let Some(s) = self.server.poll_transmit(self.now) {
                self.record(false, &s);
                self.client.handle_segment(&s.header, &s.payload, self.now);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the clock to the earliest timer of either side, fires it and flushes.
    pub fn step_timer(&mut self) -> bool {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            return false;
        };
        self.now = self.now.max(at);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.flush();
        true
    }

    pub fn lines(&self) -> Vec<(bool, &str, u32, u32, usize)> {
        self.trace
            .iter()
            .map(|l| (l.from_client, l.flags.as_str(), l.seq, l.ack, l.len))
            .collect()
    }

    pub fn read(conn: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = conn.recv(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

/// The capture of a short Linux connection (client writes 5 bytes, both close):
/// `S`, `S.`, `.`, `P.`, `.`, `F.`, `.`, `F.`, `.` with the same seq/ack.
fn linux_shaped_trace(client_iss: u32, server_iss: u32) {
    let mut p = Pair::new(Config::default(), client_iss, server_iss);
    p.flush();
    assert_eq!(p.client.state(), State::Established);
    assert_eq!(p.server.state(), State::Established);
    assert_eq!(p.client.send(b"hello"), Ok(5));
    p.flush();
    // The server's delayed ACK fires after 40 ms.
    p.now += ms(40);
    p.server.handle_timeout(p.now);
    p.flush();
    assert_eq!(Pair::read(&mut p.server), b"hello");
    p.client.close();
    p.flush();
    assert_eq!(p.server.state(), State::CloseWait);
    assert_eq!(p.client.state(), State::FinWait2);
    p.server.close();
    p.flush();
    assert_eq!(p.server.state(), State::Closed);
    assert_eq!(p.client.state(), State::TimeWait);

    let (c, s) = (client_iss, server_iss);
    let expected = vec![
        (true, "S", c, 0, 0),
        (false, "S.", s, c.wrapping_add(1), 0),
        (true, ".", c.wrapping_add(1), s.wrapping_add(1), 0),
        (true, "P.", c.wrapping_add(1), s.wrapping_add(1), 5),
        (false, ".", s.wrapping_add(1), c.wrapping_add(6), 0),
        (true, "F.", c.wrapping_add(6), s.wrapping_add(1), 0),
        (false, ".", s.wrapping_add(1), c.wrapping_add(7), 0),
        (false, "F.", s.wrapping_add(1), c.wrapping_add(7), 0),
        (true, ".", c.wrapping_add(7), s.wrapping_add(2), 0),
    ];
    assert_eq!(p.lines(), expected);

    // TIME-WAIT lasts 2·MSL, then nothing is left armed.
    let tw_start = p.now;
    assert!(p.step_timer());
    assert_eq!(p.now - tw_start, Duration::from_secs(60));
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(p.server.poll_timeout(), None);
    assert_eq!(p.trace.len(), expected.len(), "nothing sent while waiting");
}

#[test]
fn whole_connection_matches_linux_capture_shape() {
    linux_shaped_trace(1_000_000, 3_000_000_000);
}

#[test]
fn every_stage_crosses_the_sequence_wrap() {
    // Each ISN sits so that SYN, data, FIN and the final ACK straddle 2^32.
    for (c, s) in [
        (u32::MAX, u32::MAX - 1),
        (u32::MAX - 3, u32::MAX),
        (u32::MAX - 6, u32::MAX - 5),
    ] {
        linux_shaped_trace(c, s);
    }
}

fn transfer(config: Config, client_iss: u32, server_iss: u32, size: usize) {
    let mut p = Pair::new(config, client_iss, server_iss);
    p.flush();
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
    let reply: Vec<u8> = data.iter().rev().copied().collect();
    let (mut sent_c, mut sent_s) = (0, 0);
    let (mut got_c, mut got_s) = (Vec::new(), Vec::new());
    let mut closed = (false, false);
    for _ in 0..1_000_000 {
        let progress_before = (sent_c, sent_s, got_c.len(), got_s.len());
        sent_c += p.client.send(&data[sent_c..]).unwrap_or(0);
        sent_s += p.server.send(&reply[sent_s..]).unwrap_or(0);
        if sent_c == data.len() && !closed.0 {
            p.client.close();
            closed.0 = true;
        }
        if sent_s == reply.len() && !closed.1 {
            p.server.close();
            closed.1 = true;
        }
        p.flush();
        got_s.extend(Pair::read(&mut p.server));
        got_c.extend(Pair::read(&mut p.client));
        p.flush();
        if p.client.state() == State::Closed && p.server.state() == State::Closed {
            break;
        }
        let progressed = progress_before != (sent_c, sent_s, got_c.len(), got_s.len());
        if !progressed && !p.step_timer() {
            break;
        }
    }
    assert_eq!(got_s.len(), data.len());
    assert!(got_s == data, "server received the client's bytes in order");
    assert!(
        got_c == reply,
        "client received the server's bytes in order"
    );
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(p.server.state(), State::Closed);
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn bulk_transfer_both_ways_across_the_wrap() {
    transfer(
        Config::default(),
        u32::MAX - 10_000,
        u32::MAX - 300,
        1_000_000,
    );
}

#[test]
fn bulk_transfer_with_small_buffers_and_no_window_scaling() {
    let config = Config {
        send_buffer: 3000,
        recv_buffer: 2000,
        window_scaling: false,
        mss: 536,
        ..Config::default()
    };
    transfer(config, 7, 9, 100_000);
}
