//! User-facing programs built on the public stream API: echo, discard, http, iperf3 servers and
//! the fetch and bench clients.
//!
//! Every app is generic over [`Listener`] (servers) or [`Connector`] (clients), so the same code
//! runs on the kernel's TCP (`tokio::net`, implemented here) and on tcpstack's own
//! `runtime::TcpListener` / `runtime::TcpStream`. The traits live in `net_traits`, below both
//! this module and the runtime, so that the runtime implements them without depending on apps.

pub mod bench;
pub mod echo;
pub mod fetch;
pub mod http;
pub mod iperf3;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;

pub use crate::latency::{self, LatencyReport};
pub use crate::net_traits::{AppStream, Connector, Listener, StreamInfo};

impl StreamInfo for tokio::net::TcpStream {
    fn retransmits(&self) -> Option<u64> {
        kernel_tcp_info(self).map(|info| u64::from(info.tcpi_total_retrans))
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        tokio::net::TcpStream::readable(self)
    }
}

/// Reads the kernel's `TCP_INFO` for a socket (tcp(7)).
fn kernel_tcp_info(stream: &tokio::net::TcpStream) -> Option<libc::tcp_info> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the fd is a live TCP socket owned by `stream`; `info` and `len` describe a
    // writable buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        tokio::net::TcpListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// Connects with the kernel's TCP, Nagle off (request/response latency is what the bench measures).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioConnector;

impl Connector for TokioConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// The server apps, as `tcpstack serve --app` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum App {
    Echo,
    Discard,
    Http,
    Iperf3,
}

impl App {
    /// Serves `listener` until it fails for good; dropping the future closes every connection.
    pub async fn serve<L: Listener>(self, listener: L) -> io::Result<()> {
        match self {
            App::Echo => echo::serve_echo(listener).await,
            App::Discard => echo::serve_discard(listener).await,
            App::Http => http::serve(listener).await,
            App::Iperf3 => iperf3::serve(listener, iperf3::Iperf3Config::default()).await,
        }
    }
}

/// Accepts connections forever and runs `handler` on each in its own task. The tasks live in a
/// `JoinSet`, so dropping the returned future aborts them and closes their connections.
pub async fn serve_each<L, H, Fut>(listener: L, handler: H) -> io::Result<()>
where
    L: Listener,
    H: Fn(L::Stream, SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "accepted");
                    let connection = handler(stream, peer);
                    connections.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => accept_failed(error).await?,
            },
            Some(finished) = connections.join_next() => {
                if let Err(error) = finished {
                    if error.is_panic() {
                        tracing::error!(%error, "connection task panicked");
                    }
                }
            }
        }
    }
}

/// Decides what an accept error means for a serving loop: `Err` ends it, `Ok` goes on (after a
/// short pause, so that running out of file descriptors does not turn into a busy loop).
pub(crate) async fn accept_failed(error: io::Error) -> io::Result<()> {
    if matches!(
        error.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe
    ) {
        return Err(error);
    }
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}
