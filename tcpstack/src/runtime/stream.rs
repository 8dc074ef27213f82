//! `TcpStream` and its owned halves.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{close_for_writing, io_error, now, register, Shared, Slot, Stack, State};
use crate::endpoint::{ConnectionHandle, EndpointError};
use crate::tcp::{CongestionAlgorithm, ConnectionError, State as TcpState};

/// One user reference to a connection; the connection is closed when the last one drops.
struct ConnRef {
    shared: Arc<Shared>,
    handle: ConnectionHandle,
    local: SocketAddrV4,
    peer: SocketAddrV4,
}

impl ConnRef {
    /// Registers a new connection of the endpoint with the runtime.
    fn adopt(
        shared: &Arc<Shared>,
        state: &mut State,
        handle: ConnectionHandle,
        connected: bool,
    ) -> io::Result<Self> {
        let (tuple, congestion) = state
            .endpoint
            .connection_mut(handle)
            .map(|conn| (conn.tuple(), conn.congestion()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection vanished"))?;
        let nodelay = state.endpoint.config().connection.nodelay;
        let slot = state.conns.entry(handle).or_insert_with(|| Slot {
            nodelay,
            congestion,
            ..Slot::default()
        });
        slot.users += 1;
        slot.connected |= connected;
        Ok(ConnRef {
            shared: shared.clone(),
            handle,
            local: tuple.local,
            peer: tuple.remote,
        })
    }

    fn another(&self) -> ConnRef {
        if let Some(slot) = self.shared.lock().conns.get_mut(&self.handle) {
            slot.users += 1;
        }
        ConnRef {
            shared: self.shared.clone(),
            handle: self.handle,
            local: self.local,
            peer: self.peer,
        }
    }

    /// Runs `f` on the connection's TCB and runtime slot; errors if the stack or the
    /// connection failed.
    fn with<R>(
        &self,
        f: impl FnOnce(Option<&mut crate::tcp::Connection>, &mut Slot) -> R,
    ) -> io::Result<R> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        state.check_alive()?;
        let slot = state
            .conns
            .get_mut(&self.handle)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection is gone"))?;
        if let Some(kind) = slot.error {
            return Err(error_for(kind));
        }
        let conn = if slot.closed {
            None
        } else {
            state.endpoint.connection_mut(self.handle)
        };
        Ok(f(conn, slot))
    }

    fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.with(|conn, slot| {
            if slot.connected {
                return Poll::Ready(Ok(()));
            }
            match conn.map(|c| c.state()) {
                Some(TcpState::SynSent | TcpState::SynReceived) => {
                    register(&mut slot.write_waker, cx.waker());
                    Poll::Pending
                }
                Some(TcpState::Closed) | None => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))),
                Some(_) => {
                    slot.connected = true;
                    Poll::Ready(Ok(()))
                }
            }
        });
        match result {
            Ok(poll) => poll,
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let outcome = self.with(|conn, slot| {
            let Some(conn) = conn else {
                return Poll::Ready(Ok(0));
            };
            let dst = buf.initialize_unfilled();
            match conn.recv(dst) {
                Ok(n) if n > 0 => Poll::Ready(Ok(n)),
                Err(ConnectionError::WouldBlock) => {
                    register(&mut slot.read_waker, cx.waker());
                    Poll::Pending
                }
                Ok(_) | Err(ConnectionError::NotConnected) if receives_more(conn.state()) => {
                    register(&mut slot.read_waker, cx.waker());
                    Poll::Pending
                }
                Ok(_) => Poll::Ready(Ok(0)),
                Err(error) => Poll::Ready(Err(io_error(error))),
            }
        });
        match outcome {
            Ok(Poll::Ready(Ok(n))) => {
                if n > 0 {
                    buf.advance(n);
                    // Reading opened the receive window: the TCB may owe the peer an update.
                    self.shared.kick();
                }
                Poll::Ready(Ok(()))
            }
            Ok(Poll::Ready(Err(error))) | Err(error) => Poll::Ready(Err(error)),
            Ok(Poll::Pending) => Poll::Pending,
        }
    }

    /// Ready once a read would not block: data, the peer's FIN, or an error to report.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = self.with(|conn, slot| match conn {
            Some(conn) if conn.recv_available() == 0 && receives_more(conn.state()) => {
                register(&mut slot.read_waker, cx.waker());
                Poll::Pending
            }
            _ => Poll::Ready(Ok(())),
        });
        outcome.unwrap_or_else(|error| Poll::Ready(Err(error)))
    }

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let outcome = self.with(|conn, slot| {
            let Some(conn) = conn else {
                return Poll::Ready(Err(broken_pipe()));
            };
            match conn.send(data) {
                Ok(0) => {
                    register(&mut slot.write_waker, cx.waker());
                    Poll::Pending
                }
                Ok(n) => Poll::Ready(Ok(n)),
                Err(ConnectionError::NotConnected)
                    if matches!(conn.state(), TcpState::SynSent | TcpState::SynReceived) =>
                {
                    register(&mut slot.write_waker, cx.waker());
                    Poll::Pending
                }
                Err(error) => Poll::Ready(Err(io_error(error))),
            }
        });
        match outcome {
            Ok(Poll::Ready(Ok(n))) => {
                self.shared.kick();
                Poll::Ready(Ok(n))
            }
            Ok(Poll::Ready(Err(error))) | Err(error) => Poll::Ready(Err(error)),
            Ok(Poll::Pending) => Poll::Pending,
        }
    }

    /// Half-close: FIN after the buffered data.
    fn shutdown(&self) -> io::Result<()> {
        self.with(|conn, _| {
            if let Some(conn) = conn {
                close_for_writing(conn);
            }
        })?;
        self.shared.kick();
        Ok(())
    }

    fn abort(&self) {
        let aborted = self
            .with(|conn, _| conn.map(|c| c.abort()).is_some())
            .unwrap_or(false);
        if aborted {
            self.shared.kick();
        }
    }

    fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.with(|_, slot| slot.linger = linger)
    }

    fn linger(&self) -> io::Result<Option<Duration>> {
        self.with(|_, slot| slot.linger)
    }
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        let now = now();
        self.shared.lock().release(self.handle, now);
        self.shared.kick();
    }
}

/// States in which more data (or the FIN) may still arrive (RFC 9293 §3.3.2).
fn receives_more(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::SynSent
            | TcpState::SynReceived
            | TcpState::Established
            | TcpState::FinWait1
            | TcpState::FinWait2
    )
}

fn error_for(kind: io::ErrorKind) -> io::Error {
    let message = match kind {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset by peer",
        io::ErrorKind::TimedOut => "connection timed out",
        _ => "connection failed",
    };
    io::Error::new(kind, message)
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "connection is closed")
}

pub(crate) fn endpoint_error(error: EndpointError) -> io::Error {
    let kind = match error {
        EndpointError::AddrInUse => io::ErrorKind::AddrInUse,
        EndpointError::NoFreePort => io::ErrorKind::AddrNotAvailable,
        EndpointError::UnknownConnection => io::ErrorKind::NotConnected,
    };
    io::Error::new(kind, error)
}

/// A TCP connection on a [`Stack`], like `tokio::net::TcpStream`.
///
/// Dropping it closes the connection gracefully (FIN after the buffered data; the endpoint
/// finishes the close and TIME-WAIT on its own) unless a zero linger asks for an abort.
pub struct TcpStream {
    conn: ConnRef,
}

impl TcpStream {
    /// Active open (RFC 9293 §3.10.1): resolves when the handshake completes.
    pub async fn connect(stack: &Stack, remote: SocketAddrV4) -> io::Result<TcpStream> {
        let shared = stack.shared();
        let conn = {
            let mut guard = shared.lock();
            let state = &mut *guard;
            state.check_alive()?;
            let handle = state
                .endpoint
                .connect(remote, now())
                .map_err(endpoint_error)?;
            ConnRef::adopt(shared, state, handle, false)?
        };
        shared.kick();
        poll_fn(|cx| conn.poll_connected(cx)).await?;
        shared.lock().stats.connected += 1;
        Ok(TcpStream { conn })
    }

    pub(crate) fn accepted(
        shared: &Arc<Shared>,
        state: &mut State,
        handle: ConnectionHandle,
    ) -> io::Result<TcpStream> {
        Ok(TcpStream {
            conn: ConnRef::adopt(shared, state, handle, true)?,
        })
    }

    /// Waits until a read would not block: data, the peer's FIN or an error (as
    /// `tokio::net::TcpStream::readable`).
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.conn.poll_read_ready(cx)).await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.conn.local)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.conn.peer)
    }

    /// The connection's counters (segments, retransmissions, RTT, window); `None` once the
    /// endpoint has freed it.
    pub fn stats(&self) -> Option<crate::tcp::ConnectionStats> {
        self.conn
            .with(|conn, _| conn.map(|c| c.stats()))
            .ok()
            .flatten()
    }

    /// Everything `ss -ti` shows about the connection: state, queues, options and counters;
    /// `None` once the endpoint has freed it.
    pub fn info(&self) -> Option<super::ConnectionInfo> {
        self.conn
            .with(|conn, _| conn.map(|c| super::ConnectionInfo::of(c)))
            .ok()
            .flatten()
    }

    /// Turns Nagle's algorithm (RFC 9293 §3.7.4) off (`true`) or on.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.conn.with(|conn, slot| {
            slot.nodelay = nodelay;
            if let Some(conn) = conn {
                conn.set_nodelay(nodelay);
            }
        })?;
        // Nagle may have been holding back a small segment.
        self.conn.shared.kick();
        Ok(())
    }

    pub fn nodelay(&self) -> io::Result<bool> {
        self.conn.with(|_, slot| slot.nodelay)
    }

    /// Switches the connection's congestion control, like Linux's TCP_CONGESTION. Best before
    /// data flows: the new algorithm starts from its initial window (see
    /// [`Connection::set_congestion`](crate::tcp::Connection::set_congestion)).
    pub fn set_congestion(&self, algorithm: CongestionAlgorithm) -> io::Result<()> {
        self.conn.with(|conn, slot| {
            slot.congestion = algorithm;
            if let Some(conn) = conn {
                conn.set_congestion(algorithm);
            }
        })?;
        // The window changed: what it held back may go now.
        self.conn.shared.kick();
        Ok(())
    }

    /// The congestion control algorithm the connection runs (TCP_CONGESTION, read).
    pub fn congestion(&self) -> io::Result<CongestionAlgorithm> {
        self.conn.with(|_, slot| slot.congestion)
    }

    /// Keepalive probes (RFC 9293 §3.8.4); `None` turns them off.
    pub fn set_keepalive(&self, keepalive: Option<crate::tcp::KeepaliveConfig>) -> io::Result<()> {
        self.conn.with(|conn, _| {
            if let Some(conn) = conn {
                conn.set_keepalive(keepalive);
            }
        })?;
        self.conn.shared.kick();
        Ok(())
    }

    /// SO_LINGER on drop: `Some(Duration::ZERO)` resets the connection; `Some(t)` closes
    /// gracefully but resets it if the close has not finished after `t`; `None` (the default)
    /// closes gracefully however long it takes.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.conn.set_linger(linger)
    }

    pub fn linger(&self) -> io::Result<Option<Duration>> {
        self.conn.linger()
    }

    /// ABORT (RFC 9293 §3.10.5): sends RST and discards both buffers; the peer sees
    /// `ConnectionReset`.
    pub fn abort(self) {
        self.conn.abort();
    }

    /// Half-close now, like `poll_shutdown` but without a future.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.conn.shutdown()
    }

    /// Splits into halves that can move to different tasks. Dropping the write half
    /// half-closes the connection; it closes fully once both halves are gone.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let write = self.conn.another();
        (
            OwnedReadHalf { conn: self.conn },
            OwnedWriteHalf {
                conn: write,
                shutdown_on_drop: true,
            },
        )
    }
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.conn.local)
            .field("peer", &self.conn.peer)
            .finish()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.conn.poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.conn.poll_write(cx, data)
    }

    /// Written data is already in the connection's send buffer, which the driver drains.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-close: sends FIN after the buffered data; reading goes on.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.conn.shutdown())
    }
}

/// The read half of a [`TcpStream`], from [`TcpStream::into_split`].
pub struct OwnedReadHalf {
    conn: ConnRef,
}

impl OwnedReadHalf {
    /// Waits until a read would not block: data, the peer's FIN or an error (as
    /// `tokio::net::TcpStream::readable`).
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.conn.poll_read_ready(cx)).await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.conn.local)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.conn.peer)
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.conn.poll_read(cx, buf)
    }
}

/// The write half of a [`TcpStream`]; dropping it half-closes the connection.
pub struct OwnedWriteHalf {
    conn: ConnRef,
    shutdown_on_drop: bool,
}

impl OwnedWriteHalf {
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.conn.local)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.conn.peer)
    }

    /// Resets the whole connection; the read half then fails too.
    pub fn abort(mut self) {
        self.shutdown_on_drop = false;
        self.conn.abort();
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            let _ = self.conn.shutdown();
        }
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.conn.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.conn.shutdown())
    }
}
