//! Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation): the sample the
//! connection hands its congestion control on each ACK. Placeholder holding only the contract's
//! struct until the rate estimator itself is merged.

/// One delivery-rate sample, produced by the connection on every ACK that newly acknowledges or
/// SACKs data or marks data lost (draft-cheng-iccrg-delivery-rate-estimation §3.3; Linux's
/// `struct rate_sample`). All byte counts are bytes, not segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSample {
    /// Bytes delivered (C.delivered − P.delivered) over `interval`.
    pub delivered: u64,
    /// max(send_elapsed, ack_elapsed); `None` when this ACK gives no valid sample (no newly
    /// delivered packet, or the interval is below the min RTT, as the draft discards).
    pub interval: Option<std::time::Duration>,
    /// P.delivered: C.delivered when the sampled packet was sent.
    pub prior_delivered: u64,
    /// C.delivered after this ACK (total bytes delivered over the connection's life).
    pub total_delivered: u64,
    /// The sampled packet was sent while the connection was application-limited.
    pub is_app_limited: bool,
    /// RTT of the most recently sent packet this ACK newly delivered, if it was never
    /// retransmitted (Karn).
    pub rtt: Option<std::time::Duration>,
    /// Bytes this ACK newly acknowledged cumulatively or SACKed.
    pub newly_acked: u32,
    /// Bytes this ACK newly marked lost (RACK or RFC 6675).
    pub newly_lost: u32,
    /// Bytes lost (C.lost − P.lost) since the sampled packet was sent (BBRv3's loss rate).
    pub lost: u64,
    /// Bytes in flight before this ACK was processed.
    pub prior_in_flight: u32,
    /// Bytes in flight when the sampled packet was sent (P.tx_in_flight).
    pub tx_in_flight: u32,
}
