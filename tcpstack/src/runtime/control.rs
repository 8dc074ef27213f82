//! The control socket of a running stack: `tcpstack serve` answers on a unix socket and
//! `tcpstack ss` asks it what its connections are doing.
//!
//! The protocol is one request line from the client (`ss`), then the server's answer as text
//! and the end of the stream. The server renders the answer itself, so the client prints
//! whatever counters the server's version has. An answer starting with `error: ` is a refusal.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::{info, Stack};

/// Where servers put their control sockets unless told otherwise.
pub const DEFAULT_DIR: &str = "/run/tcpstack";

/// The one request: every connection, like `ss -tin`.
pub const SS_REQUEST: &str = "ss";

/// A client gets this long to send its request, and a query this long for the whole answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line read.
const MAX_REQUEST: u64 = 256;

/// The control socket of a server on `iface` and `port`: `/run/tcpstack/<iface>-<port>.sock`.
pub fn default_path(iface: &str, port: u16) -> PathBuf {
    Path::new(DEFAULT_DIR).join(format!("{iface}-{port}.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another tcpstack server already answers on {}", .0.display())]
    InUse(PathBuf),
    #[error("cannot create the control socket {}: {source}", .path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error(
        "no tcpstack server answers on {}: start one with `tcpstack serve --iface IF --port PORT` \
         (it listens on /run/tcpstack/IF-PORT.sock, or on the path given with --control)",
        .0.display()
    )]
    NotRunning(PathBuf),
    #[error("the tcpstack server on {} did not answer: {source}", .path.display())]
    Query { path: PathBuf, source: io::Error },
    #[error("the tcpstack server on {} refused: {message}", .path.display())]
    Refused { path: PathBuf, message: String },
}

/// Answers control requests for one stack until dropped; dropping it removes the socket.
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Listens on `path` (its directory is created). A socket file left by a server that died
    /// is replaced; one a live server answers on is not.
    pub fn bind(stack: &Stack, path: &Path) -> Result<ControlServer, ControlError> {
        let bind_error = |source| ControlError::Bind {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(bind_error)?;
        }
        if path.exists() {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ControlError::InUse(path.to_owned())),
                Err(_) => std::fs::remove_file(path).map_err(bind_error)?,
            }
        }
        let listener = UnixListener::bind(path).map_err(bind_error)?;
        let task = tokio::spawn(accept_loop(listener, stack.clone()));
        Ok(ControlServer {
            path: path.to_owned(),
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, stack: Stack) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(answer(client, stack.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request line and writes its answer.
async fn answer(client: UnixStream, stack: Stack) {
    let (read, mut write) = client.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let request = tokio::time::timeout(TIMEOUT, reader.read_line(&mut line)).await;
    let reply = match request {
        Ok(Ok(_)) => respond(&stack, line.trim()),
        Ok(Err(error)) => format!("error: cannot read the request: {error}\n"),
        Err(_) => "error: no request within 5 s\n".to_owned(),
    };
    let _ = write.write_all(reply.as_bytes()).await;
    let _ = write.shutdown().await;
}

fn respond(stack: &Stack, request: &str) -> String {
    match request {
        SS_REQUEST => info::render(&stack.connections()),
        other => format!("error: unknown request {other:?} (known: {SS_REQUEST})\n"),
    }
}

/// Sends `request` to the server on `path`; its answer.
pub async fn query(path: &Path, request: &str) -> Result<String, ControlError> {
    let query_error = |source| ControlError::Query {
        path: path.to_owned(),
        source,
    };
    let mut stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(path.to_owned()))
        }
        Err(error) => return Err(query_error(error)),
    };
    let exchange = async {
        stream.write_all(format!("{request}\n").as_bytes()).await?;
        stream.shutdown().await?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await?;
        Ok(reply)
    };
    let reply = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| {
            query_error(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer within 5 s",
            ))
        })?
        .map_err(query_error)?;
    match reply.strip_prefix("error: ") {
        Some(message) => Err(ControlError::Refused {
            path: path.to_owned(),
            message: message.trim().to_owned(),
        }),
        None => Ok(reply),
    }
}

/// The control sockets in `dir` (servers started with the default path), sorted.
pub fn sockets_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_socket() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::io::memory::pair;
    use crate::runtime::{TcpListener, TcpStream};
    use crate::test_support::memory_stacks;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tcpstack-control-{}-{name}", std::process::id()))
    }

    /// A connection with some traffic on an in-memory link, listed through the socket the way
    /// `tcpstack ss` asks for it, on both sides of the conversation.
    #[tokio::test]
    async fn ss_lists_live_connections_over_the_socket() {
        let (a, b) = pair();
        let (server, client) = memory_stacks((a, b), |server| server);
        let addr = "198.18.0.1:5201".parse().expect("address");
        let listener = TcpListener::bind(&server, addr).expect("binds");
        let mut stream = TcpStream::connect(&client, addr).await.expect("connects");
        let (mut accepted, peer) = listener.accept().await.expect("accepts");
        stream.write_all(&[1u8; 5000]).await.expect("writes");
        let mut buf = vec![0u8; 5000];
        accepted.read_exact(&mut buf).await.expect("reads");

        let dir = scratch("ss");
        let path = dir.join("veth-a-5201.sock");
        let control = ControlServer::bind(&server, &path).expect("control socket");
        let text = query(&path, SS_REQUEST).await.expect("answer");
        let mut lines = text.lines();
        assert!(
            lines.next().is_some_and(|l| l.starts_with("State ")),
            "{text}"
        );
        assert_eq!(
            lines.next(),
            Some(format!("ESTAB 0 0 {addr} {peer}").as_str()),
            "{text}"
        );
        let details = lines.next().expect("a details line");
        for field in [
            "rto:",
            "rtt:",
            // 1460 less the 12 bytes of timestamps, as Linux shows it.
            "mss:1448",
            "cwnd:",
            "bytes_received:5000",
            "segs_in:",
        ] {
            assert!(details.contains(field), "no {field} in {details}");
        }
        assert_eq!(lines.next(), None, "one connection only: {text}");

        let info = stream.info().expect("the client's connection is live");
        assert_eq!(info.stats.bytes_out, 5000);
        assert_eq!(info.tuple.remote, addr);

        // The same socket refuses a second server, and goes away with the first.
        assert!(matches!(
            ControlServer::bind(&server, &path),
            Err(ControlError::InUse(_))
        ));
        drop(control);
        assert!(!path.exists(), "the socket outlived its server");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unknown_requests_and_absent_servers_are_clear_errors() {
        let (a, _b) = pair();
        let stack = Stack::builder()
            .backend(a)
            .address([198, 18, 0, 1].into())
            .build()
            .expect("stack");
        let dir = scratch("errors");
        let path = dir.join("control.sock");
        let control = ControlServer::bind(&stack, &path).expect("control socket");
        match query(&path, "dance").await {
            Err(ControlError::Refused { message, .. }) => {
                assert!(message.contains("unknown request \"dance\""), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(control);
        let error = query(&path, SS_REQUEST).await.expect_err("nobody answers");
        assert!(matches!(error, ControlError::NotRunning(_)));
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("tcpstack serve"),
            "{message}"
        );

        // A socket file left by a server that died is replaced, not an obstacle.
        let stale = std::os::unix::net::UnixListener::bind(&path).expect("stale socket");
        drop(stale);
        let control = ControlServer::bind(&stack, &path).expect("replaces the stale socket");
        assert!(query(&path, SS_REQUEST).await.is_ok());
        assert_eq!(sockets_in(&dir).expect("lists"), vec![path.clone()]);
        drop(control);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
