//! `fetch`: one HTTP/1.1 GET through any [`Connector`], the body streamed to a writer.

use std::io;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::http::{requested_pattern_len, PatternChecker};
use super::Connector;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {0:?}: expected http://HOST[:PORT]/PATH")]
    InvalidUrl(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("writing the body: {0}")]
    Write(io::Error),
}

/// What came back.
#[derive(Debug, Clone, Serialize)]
pub struct FetchSummary {
    pub status: u16,
    pub body_bytes: u64,
    /// SHA-256 of the body, lowercase hex.
    pub sha256: String,
    /// For `/bytes/N`: whether exactly N bytes of the server's pattern arrived.
    pub pattern_matches: Option<bool>,
}

/// Splits `http://host[:port]/path` into the host, port and request target.
fn parse_url(url: &str) -> Result<(String, u16, String), FetchError> {
    let invalid = || FetchError::InvalidUrl(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| invalid())?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid());
    }
    let host = uri.host().ok_or_else(invalid)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok((host, uri.port_u16().unwrap_or(80), target))
}

/// GETs `url` through `connector`, writing the body to `out` as it arrives.
pub async fn fetch<C, W>(connector: &C, url: &str, out: &mut W) -> Result<FetchSummary, FetchError>
where
    C: Connector,
    W: AsyncWrite + Unpin,
{
    let (host, port, target) = parse_url(url)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| FetchError::Resolve {
            host: host.clone(),
            source,
        })?
        // tcpstack speaks IPv4; prefer it when a name has both.
        .min_by_key(|addr| addr.is_ipv6())
        .ok_or_else(|| FetchError::Resolve {
            host: host.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        })?;
    let stream = connector
        .connect(addr)
        .await
        .map_err(|source| FetchError::Connect { addr, source })?;

    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "fetch connection ended with an error");
        }
    });
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let request = Request::get(target.as_str())
        .header(HOST, host_header)
        .header(
            USER_AGENT,
            concat!("tcpstack-fetch/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::InvalidUrl(url.to_owned()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();

    let mut body = response.into_body();
    let mut hasher = Sha256::new();
    let mut pattern = PatternChecker::default();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            hasher.update(&data);
            pattern.update(&data);
            out.write_all(&data).await.map_err(FetchError::Write)?;
        }
    }
    out.flush().await.map_err(FetchError::Write)?;
    drop(sender);
    driver.abort();

    let expected = requested_pattern_len(target.split('?').next().unwrap_or(&target));
    Ok(FetchSummary {
        status,
        body_bytes: pattern.len(),
        sha256: hex(&hasher.finalize()),
        pattern_matches: expected
            .filter(|_| status == 200)
            .map(|len| pattern.matches(len)),
    })
}

/// Lowercase hexadecimal, as `sha256sum` prints digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parsed = parse_url("http://198.18.0.1:8080/bytes/10?x=1").expect("valid");
        assert_eq!(parsed, ("198.18.0.1".into(), 8080, "/bytes/10?x=1".into()));
        assert_eq!(parse_url("http://example.org").expect("valid").2, "/");
        assert!(parse_url("https://example.org/").is_err());
        assert!(parse_url("not a url").is_err());
    }
}
