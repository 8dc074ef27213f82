//! The endpoint's counters.

use serde::Serialize;

use crate::tcp::ReceiveDrops;
use crate::wire::WireError;

/// Packets the parser rejected, one counter per [`WireError`] variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WireErrorCounts {
    pub truncated: u64,
    pub not_ipv4: u64,
    pub not_ipv6: u64,
    pub bad_extension_header: u64,
    pub not_tcp: u64,
    pub bad_ihl: u64,
    pub bad_total_length: u64,
    pub bad_ip_checksum: u64,
    pub fragment: u64,
    pub bad_data_offset: u64,
    pub bad_option: u64,
    pub bad_tcp_checksum: u64,
    pub vlan_tagged: u64,
    pub bad_icmp_checksum: u64,
    pub unsupported_icmp: u64,
    pub bad_quote: u64,
}

impl WireErrorCounts {
    pub fn count(&mut self, error: WireError) {
        let counter = match error {
            WireError::Truncated => &mut self.truncated,
            WireError::NotIpv4 => &mut self.not_ipv4,
            WireError::NotIpv6 => &mut self.not_ipv6,
            WireError::BadExtensionHeader => &mut self.bad_extension_header,
            WireError::NotTcp => &mut self.not_tcp,
            WireError::BadIhl => &mut self.bad_ihl,
            WireError::BadTotalLength => &mut self.bad_total_length,
            WireError::BadIpChecksum => &mut self.bad_ip_checksum,
            WireError::Fragment => &mut self.fragment,
            WireError::BadDataOffset => &mut self.bad_data_offset,
            WireError::BadOption => &mut self.bad_option,
            WireError::BadTcpChecksum => &mut self.bad_tcp_checksum,
            WireError::VlanTagged => &mut self.vlan_tagged,
            WireError::BadIcmpChecksum => &mut self.bad_icmp_checksum,
            WireError::UnsupportedIcmp => &mut self.unsupported_icmp,
            WireError::BadQuote => &mut self.bad_quote,
        };
        *counter += 1;
    }

    pub fn total(&self) -> u64 {
        self.truncated
            + self.not_ipv4
            + self.not_ipv6
            + self.bad_extension_header
            + self.not_tcp
            + self.bad_ihl
            + self.bad_total_length
            + self.bad_ip_checksum
            + self.fragment
            + self.bad_data_offset
            + self.bad_option
            + self.bad_tcp_checksum
            + self.vlan_tagged
            + self.bad_icmp_checksum
            + self.unsupported_icmp
            + self.bad_quote
    }
}

/// Received packets the endpoint did not hand to a connection, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// Malformed or failed a checksum.
    pub wire: WireErrorCounts,
    /// Addressed to an IPv4 address that is not ours.
    pub wrong_destination: u64,
    /// From a broadcast, multicast, unspecified or our own address (RFC 1122 §4.2.3.10).
    pub bad_source: u64,
    /// Reached no connection, TIME-WAIT entry or listener; answered with RST.
    pub no_connection: u64,
    /// A RST that reached no connection or listener: never answered.
    pub stray_reset: u64,
    /// An ACK that reached a listener (RFC 9293 §3.10.7.2): answered with RST.
    pub bad_ack: u64,
    /// Neither SYN, ACK nor RST, sent to a listener.
    pub listener_ignored: u64,
    /// SYN with FIN or RST (see [`TcpFlags::is_impossible`](crate::wire::TcpFlags::is_impossible))
    /// sent to a listener or a TIME-WAIT entry: never answered, never opens or reopens anything.
    pub impossible_flags: u64,
    /// A SYN that found the listener's SYN-RECEIVED queue full (with SYN cookies off).
    pub half_open_full: u64,
    /// A SYN, or a completed handshake, that found the accept queue full.
    pub accept_queue_full: u64,
    /// Ignored by the TIME-WAIT rules (duplicate ACKs, unacceptable RSTs).
    pub time_wait: u64,
    /// Endpoint-generated replies (RSTs, TIME-WAIT ACKs) dropped because nobody polled them.
    pub reply_queue_full: u64,
}

impl DropCounts {
    pub fn total(&self) -> u64 {
        self.wire.total()
            + self.wrong_destination
            + self.bad_source
            + self.no_connection
            + self.stray_reset
            + self.bad_ack
            + self.listener_ignored
            + self.impossible_flags
            + self.half_open_full
            + self.accept_queue_full
            + self.time_wait
    }
}

/// ICMP destination-unreachable messages about our segments (RFC 792, RFC 1191, RFC 5927), by
/// what became of them. Malformed ones are in [`WireErrorCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IcmpCounts {
    pub received: u64,
    /// "Fragmentation needed" that lowered a connection's path MTU.
    pub path_mtu_lowered: u64,
    /// "Fragmentation needed" reporting an MTU no smaller than the connection's segments.
    pub path_mtu_unchanged: u64,
    /// Hard errors that ended a handshake.
    pub aborted: u64,
    /// Soft errors, and hard ones about established connections: counted only (RFC 5461).
    pub noted: u64,
    /// Quoting a sequence number outside SND.UNA..=SND.NXT: forged or stale (RFC 5927 §4.1).
    pub out_of_window: u64,
    /// Quoting a segment that is not ours, or of no connection we have.
    pub no_connection: u64,
}

/// Everything an [`Endpoint`](super::Endpoint) counts. Totals since it was created, except the
/// `*_now` gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub drops: DropCounts,
    /// RSTs we sent: to strays and from connections (aborts, refusals).
    pub resets_sent: u64,
    /// Well-formed segments with RST that reached us.
    pub resets_received: u64,
    /// `connect` calls that opened a connection.
    pub active_opens: u64,
    /// SYNs a listener accepted into SYN-RECEIVED.
    pub passive_opens: u64,
    /// Handshakes that completed, both directions.
    pub connections_established: u64,
    /// Connections freed (CLOSED, or replaced by a TIME-WAIT entry).
    pub connections_closed: u64,
    /// Connections that entered the compact TIME-WAIT table.
    pub time_wait_entries: u64,
    /// TIME-WAIT entries a new SYN took over (RFC 9293 §3.6.1, RFC 6191).
    pub time_wait_reopened: u64,
    /// TIME-WAIT entries an active open took over when no port was free (Linux's tcp_tw_reuse).
    pub time_wait_reused: u64,
    /// SYN-ACKs sent with a SYN cookie because a half-open queue was full.
    pub syn_cookies_sent: u64,
    /// Handshakes completed from a valid cookie.
    pub syn_cookies_accepted: u64,
    /// Retransmitted segments, summed over all connections, live and freed.
    pub retransmits: u64,
    /// Segments PAWS dropped as old duplicates (RFC 7323 §5), summed over all connections,
    /// live and freed, and the TIME-WAIT entries.
    pub paws_rejected: u64,
    /// Data the connections' receive windows turned away, summed like `retransmits`.
    pub receive_drops: ReceiveDrops,
    pub icmp: IcmpCounts,
    pub connections_now: u64,
    pub time_wait_now: u64,
}
