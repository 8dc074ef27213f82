//! `TcpListener`.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::stream::endpoint_error;
use super::{Shared, Stack, TcpStream};

/// A listening socket on a [`Stack`], like `tokio::net::TcpListener`.
pub struct TcpListener {
    shared: Arc<Shared>,
    addr: SocketAddrV4,
}

impl TcpListener {
    /// Passive open (RFC 9293 §3.10.1) on `addr`; SYNs to it are answered from now on.
    pub fn bind(stack: &Stack, addr: SocketAddrV4) -> io::Result<TcpListener> {
        let shared = stack.shared();
        {
            let mut state = shared.lock();
            state.check_alive()?;
            state.endpoint.listen(addr).map_err(endpoint_error)?;
            // From here on the link steers the port's segments to us, not to the kernel. If it
            // cannot, the bind fails as a whole: an endpoint left listening would answer a later
            // bind with "address in use". No segment was handled in between (the lock is held),
            // so no connection is reset by the undo.
            if let Err(error) = state.backend.reserve(addr) {
                let _ = state.endpoint.unlisten(addr);
                return Err(error);
            }
            // A listener of this address that went before no longer has its port given back.
            state.ports_to_release.retain(|port| *port != addr);
            state.listeners.entry(addr).or_default();
        }
        Ok(TcpListener {
            shared: shared.clone(),
            addr,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.addr)
    }

    /// The next connection that completed its handshake, and its peer's address.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddrV4)>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        if let Err(error) = state.check_alive() {
            return Poll::Ready(Err(error));
        }
        while let Some(handle) = state.endpoint.accept(self.addr) {
            // A connection reset while queued is skipped, as Linux's accept does.
            if let Ok(stream) = TcpStream::accepted(&self.shared, state, handle) {
                state.stats.accepted += 1;
                let peer = stream.peer_addr()?;
                return Poll::Ready(Ok((stream, peer)));
            }
        }
        let wakers = &mut state.listeners.entry(self.addr).or_default().wakers;
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.listeners.remove(&self.addr);
        // Connections not yet accepted are reset; accepted ones live on, and the link keeps
        // steering the port to us until the last of them is gone.
        let _ = state.endpoint.unlisten(self.addr);
        state.unreserve_when_unused(self.addr, super::now());
    }
}
