//! The stream traits of `net_traits` for tcpstack's own types, so every app runs unchanged on them.

use std::io;
use std::net::SocketAddr;

use super::{Stack, TcpListener, TcpStream};
use crate::net_traits::{Connector, Listener, StreamInfo};

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        Ok((stream, SocketAddr::V4(peer)))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self).map(SocketAddr::V4)
    }
}

impl StreamInfo for TcpStream {
    fn retransmits(&self) -> Option<u64> {
        self.stats().map(|stats| stats.retransmits)
    }

    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }
}

/// Active opens on this stack, Nagle off (as the apps' `TokioConnector` does for the kernel).
impl Connector for Stack {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let SocketAddr::V4(remote) = addr else {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "tcpstack speaks IPv4 only",
            ));
        };
        let stream = TcpStream::connect(self, remote).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
