//! The iperf3 control protocol (esnet/iperf `iperf_api.c`, `iperf_api.h`): the state bytes and
//! error numbers of the control channel, the length-prefixed JSON messages (`JSON_read`,
//! `JSON_write`), the client's parameters (`get_parameters`) and our results (`send_results`).

use std::io;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::{Direction, StreamResult, TestError, TestParams, TestSummary};
use crate::apps::AppStream;

/// Control-channel states, one signed byte each (`iperf_api.h`).
pub(super) mod state {
    pub const TEST_START: i8 = 1;
    pub const TEST_RUNNING: i8 = 2;
    pub const TEST_END: i8 = 4;
    pub const PARAM_EXCHANGE: i8 = 9;
    pub const CREATE_STREAMS: i8 = 10;
    pub const CLIENT_TERMINATE: i8 = 12;
    pub const EXCHANGE_RESULTS: i8 = 13;
    pub const DISPLAY_RESULTS: i8 = 14;
    pub const IPERF_DONE: i8 = 16;
    pub const ACCESS_DENIED: i8 = -1;
    pub const SERVER_ERROR: i8 = -2;
}

/// Error numbers sent after SERVER_ERROR (`iperf_api.h`, enum of `i_errno`).
mod ierror {
    pub const NUM_STREAMS: i32 = 6;
    pub const BLOCK_SIZE: i32 = 7;
    pub const UNIMPLEMENTED: i32 = 13;
}

/// iperf3's own limits (`MAX_STREAMS`, `MAX_BLOCKSIZE`).
const MAX_STREAMS: u32 = 128;
const MAX_BLOCK_LEN: usize = 1024 * 1024;
/// `DEFAULT_TCP_BLKSIZE`, used when the client sends no `len`.
const DEFAULT_BLOCK_LEN: usize = 128 * 1024;
/// The largest parameter or result JSON accepted from a client.
const MAX_JSON_LEN: u32 = 1024 * 1024;

impl TestParams {
    /// Parses the client's parameters; `Err` carries the `i_errno` to answer with.
    pub(super) fn from_json(json: &Value) -> Result<Self, (i32, String)> {
        let number = |key: &str| json.get(key).and_then(Value::as_f64).filter(|n| *n >= 0.0);
        let flag = |key: &str| {
            json.get(key)
                .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        };
        if flag("udp") || flag("sctp") {
            return Err((ierror::UNIMPLEMENTED, "only TCP tests are supported".into()));
        }
        let parallel = number("parallel").unwrap_or(1.0) as u32;
        if parallel == 0 || parallel > MAX_STREAMS {
            return Err((ierror::NUM_STREAMS, format!("{parallel} parallel streams")));
        }
        let block_len = number("len").map_or(DEFAULT_BLOCK_LEN, |n| n as usize);
        if block_len == 0 || block_len > MAX_BLOCK_LEN {
            return Err((ierror::BLOCK_SIZE, format!("block length {block_len}")));
        }
        let seconds = |key| Duration::from_secs_f64(number(key).unwrap_or(0.0).min(1e9));
        Ok(Self {
            parallel,
            reverse: flag("reverse"),
            bidirectional: flag("bidirectional"),
            duration: seconds("time"),
            omit: seconds("omit"),
            byte_limit: number("num").map(|n| n as u64).filter(|&n| n > 0),
            block_limit: number("blockcount").map(|n| n as u64).filter(|&n| n > 0),
            block_len,
            get_server_output: flag("get_server_output"),
            stream_rate: number("bandwidth").map(|n| n as u64).filter(|&n| n > 0),
        })
    }

    /// The direction of each stream in the order the client opens them: with `--bidir` the
    /// client's sending streams come first (`iperf_create_streams(test, 1)` then `(test, 0)`).
    pub(super) fn directions(&self) -> Vec<Direction> {
        let n = self.parallel as usize;
        let mut directions = Vec::with_capacity(2 * n);
        if self.bidirectional || !self.reverse {
            directions.extend(std::iter::repeat_n(Direction::Receive, n));
        }
        if self.bidirectional || self.reverse {
            directions.extend(std::iter::repeat_n(Direction::Send, n));
        }
        directions
    }
}

/// Stream ids as `iperf_add_stream` numbers them on both sides: 1, then 3, 4, 5, ...
pub(super) fn stream_id(index: usize) -> u64 {
    if index == 0 {
        1
    } else {
        index as u64 + 2
    }
}

/// Our results as `send_results` writes them; `get_results` on the client requires every key.
pub(super) fn server_results(summary: &TestSummary, params: &TestParams, cpu: [f64; 3]) -> Value {
    let sending: Vec<&StreamResult> = summary
        .streams
        .iter()
        .filter(|s| s.direction == Direction::Send)
        .collect();
    let sender_has_retransmits = if sending.is_empty() {
        -1
    } else if sending.iter().all(|s| s.retransmits.is_some()) {
        1
    } else {
        0
    };
    let streams: Vec<Value> = summary
        .streams
        .iter()
        .map(|s| {
            let retransmits = s
                .retransmits
                .map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX));
            json!({
                "id": s.id,
                "bytes": s.bytes,
                "retransmits": retransmits,
                "jitter": 0,
                "errors": 0,
                "packets": 0,
                "start_time": 0,
                "end_time": summary.seconds,
            })
        })
        .collect();
    let mut results = json!({
        "cpu_util_total": cpu[0],
        "cpu_util_user": cpu[1],
        "cpu_util_system": cpu[2],
        "sender_has_retransmits": sender_has_retransmits,
        "streams": streams,
    });
    if params.get_server_output {
        results["server_output_text"] =
            Value::String(format!("tcpstack iperf3 server: {summary}\n"));
    }
    results
}

pub(super) async fn within<T>(
    limit: Duration,
    what: &'static str,
    step: impl std::future::Future<Output = Result<T, TestError>>,
) -> Result<T, TestError> {
    timeout(limit, step)
        .await
        .map_err(|_| TestError::Timeout(what))?
}

pub(super) async fn send_state<S: AppStream>(
    ctrl: &mut S,
    state: i8,
    limit: Duration,
) -> Result<(), TestError> {
    send_message(ctrl, &[state as u8], limit).await
}

/// SERVER_ERROR followed by `i_errno` and `errno`, both 32-bit big-endian.
pub(super) async fn send_server_error<S: AppStream>(
    ctrl: &mut S,
    i_errno: i32,
    limit: Duration,
) -> Result<(), TestError> {
    let mut message = vec![state::SERVER_ERROR as u8];
    message.extend_from_slice(&i_errno.to_be_bytes());
    message.extend_from_slice(&0i32.to_be_bytes());
    send_message(ctrl, &message, limit).await
}

/// Writes one control message; a client that stops reading (a zero window) cannot hold the
/// server longer than `limit`.
async fn send_message<S: AppStream>(
    ctrl: &mut S,
    message: &[u8],
    limit: Duration,
) -> Result<(), TestError> {
    let write = async {
        ctrl.write_all(message).await?;
        ctrl.flush().await
    };
    within(limit, "the client to read", async { Ok(write.await?) }).await
}

/// `JSON_read`: a 32-bit big-endian length, then that many bytes of JSON.
pub(super) async fn read_json<S: AppStream>(ctrl: &mut S) -> Result<Value, TestError> {
    let len = ctrl.read_u32().await.map_err(eof_is_closed)?;
    if len > MAX_JSON_LEN {
        return Err(TestError::JsonTooLong(len));
    }
    let mut text = vec![0u8; len as usize];
    ctrl.read_exact(&mut text).await.map_err(eof_is_closed)?;
    Ok(serde_json::from_slice(&text)?)
}

fn eof_is_closed(error: io::Error) -> TestError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        TestError::ControlClosed
    } else {
        TestError::Io(error)
    }
}

/// `JSON_write`: the length and the JSON in one write.
pub(super) async fn write_json<S: AppStream>(
    ctrl: &mut S,
    value: &Value,
    limit: Duration,
) -> Result<(), TestError> {
    let text = serde_json::to_vec(value)?;
    let len = u32::try_from(text.len()).map_err(|_| TestError::JsonTooLong(u32::MAX))?;
    let mut message = Vec::with_capacity(4 + text.len());
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(&text);
    send_message(ctrl, &message, limit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_follow_iperf_add_stream() {
        let ids: Vec<u64> = (0..4).map(stream_id).collect();
        assert_eq!(ids, [1, 3, 4, 5]);
    }

    #[test]
    fn parameters_of_a_bidirectional_test() {
        let json = json!({"tcp": true, "omit": 0, "time": 2, "parallel": 2, "bidirectional": true,
                          "len": 131072, "client_version": "3.12"});
        let params = TestParams::from_json(&json).expect("valid parameters");
        assert_eq!(params.duration, Duration::from_secs(2));
        assert_eq!(
            params.directions(),
            [
                Direction::Receive,
                Direction::Receive,
                Direction::Send,
                Direction::Send
            ]
        );
    }

    #[test]
    fn parameters_of_a_reverse_byte_limited_test() {
        let json = json!({"tcp": true, "time": 0, "num": 10485760, "parallel": 1, "reverse": true, "bandwidth": 1000000});
        let params = TestParams::from_json(&json).expect("valid parameters");
        assert_eq!(params.byte_limit, Some(10_485_760));
        assert_eq!(params.stream_rate, Some(1_000_000));
        assert_eq!(params.block_len, DEFAULT_BLOCK_LEN);
        assert_eq!(params.directions(), [Direction::Send]);
    }

    #[test]
    fn unsupported_parameters_name_the_iperf_error() {
        let udp = TestParams::from_json(&json!({"udp": true}));
        assert_eq!(udp.map_err(|e| e.0), Err(ierror::UNIMPLEMENTED));
        let too_many = TestParams::from_json(&json!({"tcp": true, "parallel": 1000}));
        assert_eq!(too_many.map_err(|e| e.0), Err(ierror::NUM_STREAMS));
        let huge_block = TestParams::from_json(&json!({"tcp": true, "len": 100_000_000}));
        assert_eq!(huge_block.map_err(|e| e.0), Err(ierror::BLOCK_SIZE));
    }

    #[test]
    fn results_carry_every_key_get_results_requires() {
        let summary = TestSummary {
            streams: vec![StreamResult {
                id: 1,
                direction: Direction::Send,
                bytes: 10,
                retransmits: Some(3),
            }],
            seconds: 1.5,
        };
        let params = TestParams::from_json(&json!({"tcp": true})).expect("valid parameters");
        let results = server_results(&summary, &params, [1.0, 0.5, 0.5]);
        for key in [
            "cpu_util_total",
            "cpu_util_user",
            "cpu_util_system",
            "sender_has_retransmits",
            "streams",
        ] {
            assert!(results.get(key).is_some(), "{key}");
        }
        assert_eq!(results["sender_has_retransmits"], 1);
        let stream = &results["streams"][0];
        for key in [
            "id",
            "bytes",
            "retransmits",
            "jitter",
            "errors",
            "packets",
            "start_time",
            "end_time",
        ] {
            assert!(stream.get(key).is_some(), "{key}");
        }
        assert_eq!(stream["retransmits"], 3);
    }
}
