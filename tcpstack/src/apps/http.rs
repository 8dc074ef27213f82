//! A small HTTP/1.1 server (hyper 1, keep-alive): `GET /` serves a page, `GET /bytes/N` streams
//! N bytes of [`pattern_byte`], anything else is 404.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};

use super::{serve_each, AppStream, Listener};

/// The pattern repeats with this period; a prime, so a body shifted by any offset is caught.
pub const PATTERN_PERIOD: u64 = 251;

/// A client must send a request's headers within this long (slow-header clients are dropped).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest body chunk handed to hyper at once.
const CHUNK_LEN: usize = 64 * 1024;

const INDEX_HTML: &str = "<!DOCTYPE html>\n<html><head><title>tcpstack</title></head>\n<body><h1>tcpstack</h1>\n<p>Served by hyper on a user-space TCP stack. Try <a href=\"/bytes/1000000\">/bytes/1000000</a>.</p>\n</body></html>\n";

/// The byte at `offset` of every `/bytes/N` body. The one definition of the pattern: the
/// server, the fetch client and the tests all check against it.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % PATTERN_PERIOD) as u8
}

/// The pattern from `offset`, `len` bytes long (at most [`CHUNK_LEN`]), without copying: a
/// slice of one static buffer holding the pattern from 0.
fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    static CYCLE: OnceLock<Vec<u8>> = OnceLock::new();
    let cycle = CYCLE.get_or_init(|| {
        (0..CHUNK_LEN as u64 + PATTERN_PERIOD)
            .map(pattern_byte)
            .collect()
    });
    let start = (offset % PATTERN_PERIOD) as usize;
    let len = len.min(CHUNK_LEN);
    Bytes::from_static(&cycle.as_slice()[start..start + len])
}

/// SHA-256 of the first `len` bytes of the pattern, i.e. of the body of `GET /bytes/{len}`.
pub fn pattern_sha256(len: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < len {
        let chunk = pattern_chunk(offset, (len - offset).min(CHUNK_LEN as u64) as usize);
        hasher.update(&chunk);
        offset += chunk.len() as u64;
    }
    hasher.finalize().into()
}

/// Checks a body against the pattern as it arrives, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct PatternChecker {
    offset: u64,
    first_mismatch: Option<u64>,
}

impl PatternChecker {
    pub fn update(&mut self, data: &[u8]) {
        if self.first_mismatch.is_none() {
            if let Some(i) =
                (0..data.len()).find(|&i| data[i] != pattern_byte(self.offset + i as u64))
            {
                self.first_mismatch = Some(self.offset + i as u64);
            }
        }
        self.offset += data.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Offset of the first byte that differs from the pattern, if any.
    pub fn first_mismatch(&self) -> Option<u64> {
        self.first_mismatch
    }

    /// True when exactly `expected_len` bytes of the pattern arrived.
    pub fn matches(&self, expected_len: u64) -> bool {
        self.first_mismatch.is_none() && self.offset == expected_len
    }
}

/// The path `/bytes/N` asks for, if `path` is one.
pub fn requested_pattern_len(path: &str) -> Option<u64> {
    path.strip_prefix("/bytes/")?.parse().ok()
}

/// Response bodies: a fixed buffer, or the pattern streamed in chunks (never N bytes at once).
#[derive(Debug)]
pub enum AppBody {
    Full(Option<Bytes>),
    Pattern { offset: u64, remaining: u64 },
}

impl AppBody {
    fn full(text: &'static str) -> Self {
        AppBody::Full(Some(Bytes::from_static(text.as_bytes())))
    }

    fn len(&self) -> u64 {
        match self {
            AppBody::Full(bytes) => bytes.as_ref().map_or(0, |b| b.len() as u64),
            AppBody::Pattern { remaining, .. } => *remaining,
        }
    }
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            AppBody::Full(bytes) => bytes.take().map(Frame::data),
            AppBody::Pattern { remaining: 0, .. } => None,
            AppBody::Pattern { offset, remaining } => {
                let chunk = pattern_chunk(*offset, (*remaining).min(CHUNK_LEN as u64) as usize);
                *offset += chunk.len() as u64;
                *remaining -= chunk.len() as u64;
                Some(Frame::data(chunk))
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

/// Serves HTTP/1.1 with keep-alive on every connection `listener` accepts.
pub async fn serve<L: Listener>(listener: L) -> io::Result<()> {
    serve_each(listener, |stream, _| serve_connection(stream)).await
}

/// Serves one connection until the client closes it.
pub async fn serve_connection<S: AppStream>(stream: S) -> io::Result<()> {
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service_fn(respond))
        .await
        .map_err(io::Error::other)
}

async fn respond(request: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let path = request.uri().path();
    let is_get = matches!(*request.method(), Method::GET | Method::HEAD);
    let (status, content_type, body) = match path {
        "/" if is_get => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            AppBody::full(INDEX_HTML),
        ),
        _ => match requested_pattern_len(path) {
            Some(len) if is_get => (
                StatusCode::OK,
                "application/octet-stream",
                AppBody::Pattern {
                    offset: 0,
                    remaining: len,
                },
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                AppBody::full("not found\n"),
            ),
        },
    };
    let content_length = HeaderValue::from(body.len());
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, content_length);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_pattern_at_any_offset() {
        for offset in [0, 1, 250, 251, 252, 1_000_003] {
            let chunk = pattern_chunk(offset, CHUNK_LEN);
            assert_eq!(chunk.len(), CHUNK_LEN);
            let mut checker = PatternChecker {
                offset,
                first_mismatch: None,
            };
            checker.update(&chunk);
            assert_eq!(checker.first_mismatch(), None);
        }
    }

    #[test]
    fn checker_reports_the_first_wrong_byte() {
        let mut data = pattern_chunk(0, 1000).to_vec();
        data[700] ^= 1;
        let mut checker = PatternChecker::default();
        checker.update(&data[..500]);
        checker.update(&data[500..]);
        assert_eq!(checker.first_mismatch(), Some(700));
        assert!(!checker.matches(1000));
    }

    #[test]
    fn digest_is_computed_over_chunks() {
        let whole: Vec<u8> = (0..200_000).map(pattern_byte).collect();
        let expected: [u8; 32] = Sha256::digest(&whole).into();
        assert_eq!(pattern_sha256(200_000), expected);
    }

    #[test]
    fn bytes_paths() {
        assert_eq!(requested_pattern_len("/bytes/10"), Some(10));
        assert_eq!(requested_pattern_len("/bytes/"), None);
        assert_eq!(requested_pattern_len("/bytes/-1"), None);
        assert_eq!(requested_pattern_len("/other"), None);
    }
}
