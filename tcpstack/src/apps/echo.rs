//! Echo (RFC 862) and discard (RFC 863) over TCP: one task per connection, large buffers,
//! allocated once the peer first sends (an idle connection holds none).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{serve_each, AppStream, Listener};

/// Bytes moved per read: large, so that bulk transfers cost few calls.
const BUFFER_LEN: usize = 256 * 1024;

/// Echoes every byte back; after the peer's FIN it shuts down its own sending side.
pub async fn serve_echo<L: Listener>(listener: L) -> io::Result<()> {
    serve_each(listener, |stream, _| echo(stream)).await
}

/// Reads and drops everything; after the peer's FIN it closes its sending side too.
pub async fn serve_discard<L: Listener>(listener: L) -> io::Result<()> {
    serve_each(listener, |stream, _| discard(stream)).await
}

/// One echo connection. Half-close aware: the peer may keep reading after its FIN, and gets
/// everything it sent before ours.
pub async fn echo<S: AppStream>(mut stream: S) -> io::Result<()> {
    stream.readable().await?;
    let mut buffer = vec![0u8; BUFFER_LEN];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buffer[..n]).await?;
    }
    stream.shutdown().await
}

/// One discard connection.
pub async fn discard<S: AppStream>(mut stream: S) -> io::Result<()> {
    stream.readable().await?;
    let mut buffer = vec![0u8; BUFFER_LEN];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    tracing::debug!(bytes = total, "discarded");
    stream.shutdown().await
}
