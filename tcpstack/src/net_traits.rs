//! The stream traits the apps are written against: [`Listener`] (passive opens), [`Connector`]
//! (active opens) and [`StreamInfo`]. They sit below both `runtime`, which implements them for
//! tcpstack's own streams, and `apps`, which implements them for `tokio::net` and consumes them,
//! so that the runtime does not depend on the programs built on it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// What an app may ask of a connected stream beyond reading and writing.
pub trait StreamInfo {
    /// Segments retransmitted on this connection so far, when the stack can tell.
    fn retransmits(&self) -> Option<u64> {
        None
    }

    /// Waits until a read would not block (data, the peer's FIN or an error), as
    /// `tokio::net::TcpStream::readable` does, so that a server can leave a connection without
    /// a buffer until it has something to say. Streams that cannot tell are always ready.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// A stream the apps can run on.
pub trait AppStream: AsyncRead + AsyncWrite + StreamInfo + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + StreamInfo + Unpin + Send + 'static> AppStream for T {}

/// A passive opener: the servers accept their connections from it.
pub trait Listener: Send + Sync + 'static {
    type Stream: AppStream;

    /// Waits for the next established connection and its peer's address.
    ///
    /// Errors of kind [`io::ErrorKind::NotConnected`] (its stack shut down) or
    /// [`io::ErrorKind::BrokenPipe`] (its link failed) mean the listener is gone for good and
    /// end the serving loops; every other error concerns one connection and is skipped.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// An active opener: the clients connect through it.
pub trait Connector: Send + Sync + 'static {
    type Stream: AppStream;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}
