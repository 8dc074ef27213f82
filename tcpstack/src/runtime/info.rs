//! What a running stack can tell about its connections: [`Stack::connections`] and
//! [`TcpStream::info`](super::TcpStream::info), and the `ss -tin`-style text `tcpstack ss` prints.

use std::fmt;
use std::time::Duration;

use super::Stack;
use crate::tcp::{Connection, ConnectionStats, FourTuple, State};

/// One connection as `ss -ti` would show it: addresses, state, queues, negotiated options and
/// the TCB's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub tuple: FourTuple,
    pub state: State,
    /// Bytes received and not yet read by the user (ss's Recv-Q).
    pub recv_queue: usize,
    /// Bytes written by the user and not yet acknowledged (ss's Send-Q).
    pub send_queue: usize,
    /// Window-scale shifts, ours then the peer's, when both SYNs carried the option.
    pub window_scale: Option<(u8, u8)>,
    /// Effective send MSS.
    pub mss: u32,
    pub stats: ConnectionStats,
}

impl ConnectionInfo {
    pub fn of(conn: &Connection) -> ConnectionInfo {
        ConnectionInfo {
            tuple: conn.tuple(),
            state: conn.state(),
            recv_queue: conn.recv_available(),
            send_queue: conn.send_queued(),
            window_scale: conn.window_scale(),
            mss: conn.mss(),
            stats: conn.stats(),
        }
    }
}

impl Stack {
    /// Every connection of the stack (half-open and not yet accepted ones included; TIME-WAIT
    /// entries, which keep no TCB, not), ordered by local then remote address.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let state = self.shared().lock();
        let mut all: Vec<ConnectionInfo> = state
            .endpoint
            .connections()
            .map(|(_, conn)| ConnectionInfo::of(conn))
            .collect();
        all.sort_by_key(|info| (info.tuple.local, info.tuple.remote));
        all
    }
}

/// The state as `ss` names it.
pub fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "CLOSED",
        State::Listen => "LISTEN",
        State::SynSent => "SYN-SENT",
        State::SynReceived => "SYN-RECV",
        State::Established => "ESTAB",
        State::FinWait1 => "FIN-WAIT-1",
        State::FinWait2 => "FIN-WAIT-2",
        State::CloseWait => "CLOSE-WAIT",
        State::Closing => "CLOSING",
        State::LastAck => "LAST-ACK",
        State::TimeWait => "TIME-WAIT",
    }
}

/// Linux reports an ssthresh at or above this as "infinite" and leaves it out.
const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;

/// Milliseconds with at most three decimals and no trailing zeros, like ss's `rtt:0.052/0.026`.
fn millis(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64() * 1e3);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Two lines, like one socket of `ss -tin`:
///
/// ```text
/// ESTAB 0 0 198.18.0.1:5201 198.18.0.2:41234
///      ts sack cubic wscale:7,7 rto:204 rtt:0.5/0.25 mss:1448 cwnd:10 ssthresh:7 bytes_sent:…
/// ```
///
/// `cwnd` and `ssthresh` are in segments of `mss` bytes, as ss shows them. `retrans` counts the
/// segments sent again; `fast_retrans` the fast recoveries entered, `sack_recoveries` those the
/// SACK scoreboard drove, `rtos` the retransmission timeouts; `spurious` the retransmissions a
/// D-SACK showed needless, `dsacks` the ACKs carrying one, `undos` the window cuts undone,
/// `paws_rejected` the segments PAWS dropped (RFC 7323 §5); `tlps` the tail loss probes sent,
/// `rack_lost` the segments RACK found lost by time (RFC 8985), `spurious_rtos` the timeouts
/// F-RTO undid (RFC 5682).
impl fmt::Display for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "{} {} {} {} {}",
            state_name(self.state),
            self.recv_queue,
            self.send_queue,
            self.tuple.local,
            self.tuple.remote
        )?;
        let mss = self.mss.max(1);
        write!(f, "\t")?;
        // ss lists the negotiated options first: ts, sack, then the congestion control.
        if s.timestamps {
            write!(f, " ts")?;
        }
        if s.sack {
            write!(f, " sack")?;
        }
        write!(f, " {}", s.congestion.name())?;
        if let Some((ours, theirs)) = self.window_scale {
            // ss prints the peer's shift (what we apply to its windows) first.
            write!(f, " wscale:{theirs},{ours}")?;
        }
        write!(f, " rto:{}", s.rto.as_millis())?;
        if let Some(srtt) = s.srtt {
            write!(f, " rtt:{}/{}", millis(srtt), millis(s.rttvar))?;
        }
        write!(f, " mss:{} cwnd:{}", self.mss, s.cwnd / mss)?;
        if s.ssthresh < INFINITE_SSTHRESH {
            write!(f, " ssthresh:{}", s.ssthresh / mss)?;
        }
        if let Some(path) = &s.path {
            // As ss's bbr:(bw:…bps,mrtt:…): the model's bandwidth (bits/s) and min RTT (ms).
            write!(f, " bbr:(bw:{}bps", path.bandwidth.saturating_mul(8))?;
            if let Some(min_rtt) = path.min_rtt {
                write!(f, ",mrtt:{}", millis(min_rtt))?;
            }
            write!(f, ",mode:{})", path.mode)?;
        }
        write!(
            f,
            " bytes_sent:{} bytes_received:{} segs_out:{} segs_in:{} retrans:{} fast_retrans:{} \
             rtos:{} sack_recoveries:{} spurious:{} dsacks:{} undos:{} paws_rejected:{} tlps:{} \
             rack_lost:{} spurious_rtos:{}",
            s.bytes_out,
            s.bytes_in,
            s.segments_out,
            s.segments_in,
            s.retransmits,
            s.fast_retransmits,
            s.rtos,
            s.sack_recoveries,
            s.spurious_retransmits,
            s.dsacks_received,
            s.cwnd_undos,
            s.paws_rejected,
            s.tlps,
            s.rack_losses,
            s.spurious_rtos
        )?;
        writeln!(f)
    }
}

/// Every connection, one [`ConnectionInfo`] block each, under ss's header line.
pub fn render(connections: &[ConnectionInfo]) -> String {
    let mut out = String::from("State Recv-Q Send-Q Local-Address:Port Peer-Address:Port\n");
    for info in connections {
        out.push_str(&info.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::CongestionAlgorithm;

    // The stats literal keeps `..Default::default()` for the counters later issues add.
    #[allow(clippy::needless_update)]
    fn sample() -> ConnectionInfo {
        ConnectionInfo {
            tuple: FourTuple {
                local: "198.18.0.1:5201".parse().expect("address"),
                remote: "198.18.0.2:41234".parse().expect("address"),
            },
            state: State::Established,
            recv_queue: 0,
            send_queue: 2896,
            window_scale: Some((7, 9)),
            mss: 1448,
            stats: ConnectionStats {
                segments_in: 10,
                segments_out: 20,
                bytes_in: 100,
                bytes_out: 28960,
                retransmits: 5,
                fast_retransmits: 3,
                rtos: 1,
                sack_recoveries: 2,
                dsacks_received: 1,
                spurious_retransmits: 1,
                cwnd_undos: 0,
                tlps: 2,
                rack_losses: 6,
                spurious_rtos: 1,
                congestion: CongestionAlgorithm::Cubic,
                sack: true,
                timestamps: true,
                paws_rejected: 4,
                srtt: Some(Duration::from_micros(500)),
                rttvar: Duration::from_micros(250),
                rto: Duration::from_millis(204),
                cwnd: 14480,
                ssthresh: 7240,
                ..ConnectionStats::default()
            },
        }
    }

    #[test]
    fn a_connection_reads_like_ss() {
        let text = sample().to_string();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("ESTAB 0 2896 198.18.0.1:5201 198.18.0.2:41234")
        );
        assert_eq!(
            lines.next(),
            Some(
                "\t ts sack cubic wscale:9,7 rto:204 rtt:0.5/0.25 mss:1448 cwnd:10 ssthresh:5 \
                 bytes_sent:28960 bytes_received:100 segs_out:20 segs_in:10 retrans:5 \
                 fast_retrans:3 rtos:1 sack_recoveries:2 spurious:1 dsacks:1 undos:0 paws_rejected:4 \
                 tlps:2 rack_lost:6 spurious_rtos:1"
            )
        );
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn unknown_rtt_infinite_ssthresh_and_no_options_are_left_out() {
        let mut info = sample();
        info.state = State::SynReceived;
        info.stats.srtt = None;
        info.stats.ssthresh = u32::MAX;
        info.window_scale = None;
        info.stats.sack = false;
        info.stats.timestamps = false;
        info.stats.congestion = CongestionAlgorithm::NewReno;
        let text = info.to_string();
        assert!(text.starts_with("SYN-RECV "), "{text}");
        let details = text.lines().nth(1).expect("a second line");
        assert!(
            details.starts_with("\t reno rto:204 mss:1448 cwnd:10 bytes_sent:"),
            "{details}"
        );
        for absent in ["rtt:", "ssthresh:", "wscale:", " sack ", " ts "] {
            assert!(!details.contains(absent), "{absent} in {details}");
        }
    }

    #[test]
    fn millis_keep_three_decimals_at_most() {
        assert_eq!(millis(Duration::from_micros(52)), "0.052");
        assert_eq!(millis(Duration::from_millis(12)), "12");
        assert_eq!(millis(Duration::from_nanos(1_234_567)), "1.235");
    }
}
