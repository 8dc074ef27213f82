//! The tokio driver and the user-facing API shaped like `tokio::net`.
//!
//! One [`Stack`] owns one [`Endpoint`] and one [`Backend`]. Its state sits behind a single
//! mutex that user calls hold only to copy bytes into or out of a connection's buffers; a driver
//! task does everything else: it feeds received frames to the endpoint, fires timers, transmits
//! whatever the endpoint produced in one batch with one flush, and wakes the tasks waiting on a
//! connection (read, write/connect) or a listener (accept). A user call that gave the endpoint
//! something to send kicks the driver through its waker; kicks coalesce until the driver runs.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tcpstack::runtime::{Stack, TcpListener, TcpStream};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let (a, b) = tcpstack::io::memory::pair();
//! let server = Stack::builder().backend(a).address([198, 18, 0, 1].into()).build()?;
//! let client = Stack::builder().backend(b).address([198, 18, 0, 2].into()).build()?;
//! let listener = TcpListener::bind(&server, "198.18.0.1:7".parse().unwrap())?;
//! let mut stream = TcpStream::connect(&client, "198.18.0.1:7".parse().unwrap()).await?;
//! stream.write_all(b"hello").await?;
//! let (mut accepted, _peer) = listener.accept().await?;
//! let mut buf = [0u8; 5];
//! accepted.read_exact(&mut buf).await?;
//! # Ok(()) }
//! ```

mod app_traits;
pub mod control;
mod driver;
mod info;
mod listener;
mod pcap;
mod report;
mod stream;

pub use info::{render as render_connections, state_name, ConnectionInfo};
pub use listener::TcpListener;
pub use report::StatsReport;
pub use stream::{OwnedReadHalf, OwnedWriteHalf, TcpStream};

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::endpoint::{ConnectionHandle, Endpoint, EndpointConfig, EndpointEvent};
use crate::io::{Backend, BackendStats};
use crate::tcp::{CongestionAlgorithm, ConnectionError, Event};
use crate::FastHashMap;

/// Counters kept by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StackStats {
    pub frames_received: u64,
    /// Received frames that were not IPv4 and never reached the endpoint.
    pub frames_ignored: u64,
    pub frames_sent: u64,
    pub send_errors: u64,
    /// Connections handed out by `accept`.
    pub accepted: u64,
    /// Active opens that reached ESTABLISHED.
    pub connected: u64,
    pub resets: u64,
    pub timeouts: u64,
}

/// Builds a [`Stack`]; `backend` and `address` are required.
pub struct StackBuilder {
    backend: Option<Box<dyn Backend>>,
    address: Option<Ipv4Addr>,
    config: EndpointConfig,
    seed: Option<u64>,
    capture: Option<Box<dyn std::io::Write + Send>>,
    /// Per-connection switches set on their own, applied over `config` when the stack is built.
    congestion: Option<CongestionAlgorithm>,
    sack: Option<bool>,
    timestamps: Option<bool>,
    rack: Option<bool>,
    rto_min: Option<Duration>,
    busy_poll: Duration,
}

impl StackBuilder {
    pub fn backend(self, backend: impl Backend) -> Self {
        self.boxed_backend(Box::new(backend))
    }

    /// For a backend chosen at run time.
    pub fn boxed_backend(mut self, backend: Box<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The IPv4 address the stack answers on.
    pub fn address(mut self, address: Ipv4Addr) -> Self {
        self.address = Some(address);
        self
    }

    /// Every endpoint setting; [`Self::congestion`], [`Self::sack`], [`Self::timestamps`],
    /// [`Self::rack`] and [`Self::rto_min`] override it whichever is called first.
    pub fn config(mut self, config: EndpointConfig) -> Self {
        self.config = config;
        self
    }

    /// The congestion control algorithm of every connection (Linux's
    /// net.ipv4.tcp_congestion_control); CUBIC unless set here or in `config`. A connection can
    /// switch later with [`TcpStream::set_congestion`].
    pub fn congestion(mut self, algorithm: CongestionAlgorithm) -> Self {
        self.congestion = Some(algorithm);
        self
    }

    /// Offer and accept selective acknowledgements (RFC 2018), like Linux's net.ipv4.tcp_sack;
    /// on unless turned off here or in `config`. Without it no SYN carries SACK-permitted, so no
    /// connection uses SACK whatever the peer offers (RFC 2018 §2).
    pub fn sack(mut self, enabled: bool) -> Self {
        self.sack = Some(enabled);
        self
    }

    /// Offer and accept timestamps (RFC 7323), like Linux's net.ipv4.tcp_timestamps; on unless
    /// turned off here or in `config`.
    pub fn timestamps(mut self, enabled: bool) -> Self {
        self.timestamps = Some(enabled);
        self
    }

    /// Detect losses by time with RACK-TLP (RFC 8985) and send tail loss probes, like Linux's
    /// net.ipv4.tcp_recovery = 1; on unless turned off here or in `config`. Off, losses are
    /// found by RFC 6675's duplicate-ACK threshold alone.
    pub fn rack(mut self, enabled: bool) -> Self {
        self.rack = Some(enabled);
        self
    }

    /// The lower bound of the retransmission timeout (RFC 6298 §2.4), like Linux's
    /// `ip route ... rto_min`; 200 ms unless set here or in `config`.
    pub fn rto_min(mut self, rto_min: Duration) -> Self {
        self.rto_min = Some(rto_min);
        self
    }

    /// Busy polling, in the spirit of Linux's `SO_BUSY_POLL` and Onload's `EF_POLL_USEC`: for
    /// `window` after sending a segment the peer will answer (data, SYN or FIN; not a pure ACK),
    /// the driver keeps polling the backend instead of sleeping until the kernel wakes it. A
    /// request/response exchange then skips the wakeup of the stack's thread (on the
    /// benchmark's veth lab the 1-byte round trip went from 48 to 28 µs at the median), at the
    /// price of up to `window` of one core's time per exchange; a bulk receiver, which sends
    /// only ACKs, still sleeps between bursts. Zero, the default, sleeps at once.
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = window;
        self
    }

    /// Seeds ISNs and everything random in the endpoint; random when not set.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Writes every frame received and sent to `sink` as a pcap capture (see `runtime::pcap`).
    pub fn capture(mut self, sink: impl std::io::Write + Send + 'static) -> Self {
        self.capture = Some(Box::new(sink));
        self
    }

    /// Starts the driver task on the current tokio runtime.
    pub fn build(self) -> io::Result<Stack> {
        let backend = self.backend.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a stack needs a backend")
        })?;
        let address = self.address.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a stack needs an IPv4 address")
        })?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("a stack must be built inside a tokio runtime"))?;
        let capture = self
            .capture
            .map(|sink| pcap::Capture::new(sink, now()))
            .transpose()?;
        let seed = self.seed.unwrap_or_else(rand::random);
        let mut config = self.config;
        let connection = &mut config.connection;
        connection.congestion = self.congestion.unwrap_or(connection.congestion);
        connection.sack = self.sack.unwrap_or(connection.sack);
        connection.timestamps = self.timestamps.unwrap_or(connection.timestamps);
        connection.rack = self.rack.unwrap_or(connection.rack);
        connection.rto_min = self.rto_min.unwrap_or(connection.rto_min);
        let endpoint = Endpoint::new(config, address, seed, now());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(endpoint, backend, capture)),
            address,
        });
        runtime.spawn(driver::Driver::new(
            shared.clone(),
            runtime.runtime_flavor(),
            self.busy_poll,
        ));
        Ok(Stack {
            inner: Arc::new(StackInner { shared }),
        })
    }
}

/// A running TCP/IP stack on one backend. Cheap to clone; the driver stops when the last clone
/// is dropped (connections still open are aborted with RST).
#[derive(Clone)]
pub struct Stack {
    inner: Arc<StackInner>,
}

struct StackInner {
    shared: Arc<Shared>,
}

impl Drop for StackInner {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.stop = true;
            state.driver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            backend: None,
            address: None,
            config: EndpointConfig::default(),
            seed: None,
            capture: None,
            congestion: None,
            sack: None,
            timestamps: None,
            rack: None,
            rto_min: None,
            busy_poll: Duration::ZERO,
        }
    }

    pub fn address(&self) -> Ipv4Addr {
        self.inner.shared.address
    }

    pub fn stats(&self) -> StackStats {
        self.inner.shared.lock().stats
    }

    /// The link's counters.
    pub fn backend_stats(&self) -> BackendStats {
        self.inner.shared.lock().backend.stats()
    }

    /// The link's AF_XDP rings, by queue (empty for other backends).
    pub fn ring_stats(&self) -> Vec<crate::io::xdp::RingStats> {
        self.inner.shared.lock().backend.ring_stats()
    }

    /// Runs `f` on the endpoint under the stack's lock (for its counters, say). Keep it short:
    /// every connection waits meanwhile.
    pub fn with_endpoint<R>(&self, f: impl FnOnce(&mut Endpoint) -> R) -> R {
        f(&mut self.inner.shared.lock().endpoint)
    }

    /// Connections that user code still holds or that are still closing.
    pub fn open_connections(&self) -> usize {
        self.inner.shared.lock().conns.len()
    }

    /// Graceful shutdown: starts closing every connection (FIN after the buffered data), waits
    /// up to `grace` for them to finish, aborts what is left with RST, stops the driver once
    /// those segments are sent, and then closes the backend (detaching its XDP program,
    /// removing its iptables rules) before returning, whoever still holds a clone of the stack
    /// or one of its streams: a task that the runtime drops only as it shuts down must not be
    /// what takes the link down. The backend's counters stay readable afterwards.
    pub async fn shutdown(self, grace: Duration) {
        let shared = self.inner.shared.clone();
        {
            let mut state = shared.lock();
            let State {
                endpoint, conns, ..
            } = &mut *state;
            for handle in conns.keys() {
                if let Some(conn) = endpoint.connection_mut(*handle) {
                    close_for_writing(conn);
                }
            }
        }
        shared.kick();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open = {
                let mut state = shared.lock();
                let State {
                    endpoint, conns, ..
                } = &mut *state;
                conns
                    .keys()
                    .filter(|h| {
                        endpoint
                            .connection(**h)
                            .is_some_and(|c| !is_finished(c.state()))
                    })
                    .count()
            };
            if open == 0
                || tokio::time::Instant::now() >= deadline
                || shared.lock().failed.is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let done = {
            let mut state = shared.lock();
            state.stop = true;
            state.stopped.clone()
        };
        shared.kick_always();
        drop(self);
        done.notified_or_done().await;
        shared.close_backend();
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("address", &self.address())
            .finish()
    }
}

/// CLOSE (RFC 9293 §3.10.4) unless this side already sent its FIN.
pub(crate) fn close_for_writing(conn: &mut crate::tcp::Connection) {
    use crate::tcp::State::*;
    if matches!(
        conn.state(),
        SynSent | SynReceived | Established | CloseWait
    ) {
        conn.close();
    }
}

/// True once everything we sent, FIN included, is acknowledged: what is left (waiting for the
/// peer's FIN, TIME-WAIT) needs nothing from the user and is safe to drop at shutdown.
fn is_finished(state: crate::tcp::State) -> bool {
    use crate::tcp::State::*;
    matches!(state, FinWait2 | TimeWait | Closed)
}

/// Signals that the driver has stopped; `notified_or_done` returns at once afterwards.
#[derive(Clone, Default)]
pub(crate) struct StopSignal {
    inner: Arc<(std::sync::atomic::AtomicBool, tokio::sync::Notify)>,
}

impl StopSignal {
    fn set(&self) {
        self.inner
            .0
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.1.notify_waiters();
    }

    async fn notified_or_done(&self) {
        let notified = self.inner.1.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.inner.0.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    address: Ipv4Addr,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Connection state is only changed through the endpoint's own methods, which leave it
        // consistent between calls; a panicking user task cannot tear it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the driver to run (to transmit what a user call queued), unless it already was.
    pub(crate) fn kick(&self) {
        let waker = self.lock().take_kick();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Replaces the backend with a [`ClosedBackend`] holding its last counters, and drops it
    /// here. Only for a stopped driver: nothing moves frames any more.
    fn close_backend(&self) {
        let backend = {
            let mut state = self.lock();
            let closed = ClosedBackend {
                stats: state.backend.stats(),
                rings: state.backend.ring_stats(),
            };
            std::mem::replace(&mut state.backend, Box::new(closed))
        };
        // Outside the lock: the raw backend's Drop runs iptables.
        drop(backend);
    }

    fn kick_always(&self) {
        let waker = {
            let mut state = self.lock();
            state.kicked = true;
            state.driver_waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What stands in for the backend once [`Stack::shutdown`] has closed it: it moves nothing,
/// refuses new reservations, and reports the counters the backend had at the end.
struct ClosedBackend {
    stats: BackendStats,
    rings: Vec<crate::io::xdp::RingStats>,
}

impl Backend for ClosedBackend {
    fn poll_recv(
        &mut self,
        _cx: &mut std::task::Context<'_>,
        _sink: &mut dyn FnMut(&[u8]),
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Pending
    }

    fn send(&mut self, _frame: &[u8]) -> io::Result<()> {
        Err(closed_link())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn reserve(&mut self, _endpoint: SocketAddrV4) -> io::Result<()> {
        Err(closed_link())
    }

    fn stats(&self) -> BackendStats {
        self.stats
    }

    fn ring_stats(&self) -> Vec<crate::io::xdp::RingStats> {
        self.rings.clone()
    }
}

fn closed_link() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the tcpstack stack was shut down and its link closed",
    )
}

/// What the runtime keeps per connection next to the endpoint's TCB.
#[derive(Default)]
pub(crate) struct Slot {
    read_waker: Option<Waker>,
    /// Writers, and the task awaiting `connect`.
    write_waker: Option<Waker>,
    /// How many user objects (a stream, or its two halves) refer to the connection.
    users: usize,
    connected: bool,
    /// Set once the endpoint reported a reset or a timeout.
    error: Option<io::ErrorKind>,
    /// The endpoint reported CLOSED: the TCB is gone.
    closed: bool,
    /// TCP_NODELAY as last set (the TCB does not report it back).
    nodelay: bool,
    /// TCP_CONGESTION, kept here too so that it still reads once the TCB is freed.
    congestion: CongestionAlgorithm,
    /// SO_LINGER: `Some(ZERO)` aborts on drop; `Some(d)` aborts if the close takes longer.
    linger: Option<Duration>,
}

impl Slot {
    fn wake_all(&mut self, wakers: &mut Vec<Waker>) {
        wakers.extend(self.read_waker.take());
        wakers.extend(self.write_waker.take());
    }
}

#[derive(Default)]
pub(crate) struct ListenerSlot {
    wakers: Vec<Waker>,
}

pub(crate) struct State {
    pub(crate) endpoint: Endpoint,
    /// Under the same lock as the endpoint so that `bind` can reserve its port on the link
    /// before it returns.
    pub(crate) backend: Box<dyn Backend>,
    /// `--pcap`: every frame in and out.
    pub(crate) capture: Option<pcap::Capture>,
    pub(crate) conns: FastHashMap<ConnectionHandle, Slot>,
    pub(crate) listeners: FastHashMap<SocketAddrV4, ListenerSlot>,
    /// Connections whose user dropped them with a linger timeout: abort when it passes.
    lingering: Vec<(Instant, ConnectionHandle)>,
    /// Connections no user holds any more that the endpoint is still closing; their slots go
    /// once the endpoint has freed them (it reports no event for that).
    released: Vec<ConnectionHandle>,
    /// Listening addresses whose listener is gone; the backend keeps them reserved while
    /// connections on them remain.
    pub(crate) ports_to_release: Vec<SocketAddrV4>,
    next_sweep: Option<Instant>,
    driver_waker: Option<Waker>,
    /// A kick is pending: the driver will run, no need to wake it again.
    kicked: bool,
    /// The last Stack handle is gone (or `shutdown` finished waiting): the driver exits.
    stop: bool,
    /// The driver is gone, with the reason every later call reports.
    failed: Option<(io::ErrorKind, &'static str)>,
    stopped: StopSignal,
    stats: StackStats,
}

impl State {
    fn new(endpoint: Endpoint, backend: Box<dyn Backend>, capture: Option<pcap::Capture>) -> Self {
        State {
            endpoint,
            backend,
            capture,
            conns: FastHashMap::default(),
            listeners: FastHashMap::default(),
            lingering: Vec::new(),
            released: Vec::new(),
            ports_to_release: Vec::new(),
            next_sweep: None,
            driver_waker: None,
            kicked: false,
            stop: false,
            failed: None,
            stopped: StopSignal::default(),
            stats: StackStats::default(),
        }
    }

    fn take_kick(&mut self) -> Option<Waker> {
        if self.kicked {
            return None;
        }
        self.kicked = true;
        self.driver_waker.clone()
    }

    pub(crate) fn check_alive(&self) -> io::Result<()> {
        match self.failed {
            Some((kind, why)) => Err(io::Error::new(kind, why)),
            None => Ok(()),
        }
    }

    /// Routes one endpoint event to the tasks waiting for it.
    fn dispatch(&mut self, event: EndpointEvent, wakers: &mut Vec<Waker>) {
        match event {
            EndpointEvent::Incoming(addr) => {
                if let Some(listener) = self.listeners.get_mut(&addr) {
                    wakers.append(&mut listener.wakers);
                }
            }
            EndpointEvent::Connection(handle, event) => {
                let Some(slot) = self.conns.get_mut(&handle) else {
                    return;
                };
                match event {
                    Event::Connected => {
                        slot.connected = true;
                        slot.wake_all(wakers);
                    }
                    Event::Readable | Event::PeerClosed => wakers.extend(slot.read_waker.take()),
                    Event::Writable => wakers.extend(slot.write_waker.take()),
                    Event::Reset => {
                        self.stats.resets += 1;
                        slot.error.get_or_insert(if slot.connected {
                            io::ErrorKind::ConnectionReset
                        } else {
                            io::ErrorKind::ConnectionRefused
                        });
                        slot.wake_all(wakers);
                    }
                    Event::TimedOut => {
                        self.stats.timeouts += 1;
                        slot.error.get_or_insert(io::ErrorKind::TimedOut);
                        slot.wake_all(wakers);
                    }
                    Event::Closed => {
                        slot.closed = true;
                        slot.wake_all(wakers);
                        if slot.users == 0 {
                            self.conns.remove(&handle);
                        }
                    }
                }
            }
        }
    }

    /// The last user object of `handle` is gone: close (or abort, per linger) and let the
    /// endpoint finish on its own.
    pub(crate) fn release(&mut self, handle: ConnectionHandle, now: Instant) {
        let Some(slot) = self.conns.get_mut(&handle) else {
            return;
        };
        slot.users = slot.users.saturating_sub(1);
        if slot.users > 0 {
            return;
        }
        let linger = slot.linger;
        let closed = slot.closed;
        match self.endpoint.connection_mut(handle) {
            Some(conn) if !closed => {
                match linger {
                    Some(timeout) if timeout.is_zero() => conn.abort(),
                    Some(timeout) => {
                        conn.release();
                        self.lingering.push((now + timeout, handle));
                    }
                    None => conn.release(),
                }
                self.released.push(handle);
                self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
            }
            _ => {
                self.conns.remove(&handle);
            }
        }
    }
}

/// How often slots of released connections are checked against the endpoint.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

impl State {
    /// Forgets released connections the endpoint has freed.
    fn sweep_released(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|at| at > now) {
            return;
        }
        let State {
            endpoint,
            conns,
            released,
            ..
        } = self;
        released.retain(|handle| {
            let alive = endpoint.connection(*handle).is_some()
                && conns.get(handle).is_some_and(|slot| !slot.closed);
            if !alive {
                conns.remove(handle);
            }
            alive
        });
        self.release_unused_ports();
        self.next_sweep = (!self.released.is_empty() || !self.ports_to_release.is_empty())
            .then(|| now + SWEEP_INTERVAL);
    }

    pub(crate) fn unreserve_when_unused(&mut self, addr: SocketAddrV4, now: Instant) {
        if !self.ports_to_release.contains(&addr) {
            self.ports_to_release.push(addr);
        }
        self.release_unused_ports();
        if !self.ports_to_release.is_empty() {
            self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        }
    }

    /// Hands back to the kernel the listening ports no connection uses any more.
    fn release_unused_ports(&mut self) {
        let State {
            endpoint,
            conns,
            backend,
            ports_to_release,
            ..
        } = self;
        ports_to_release.retain(|addr| {
            let in_use = conns.keys().any(|handle| {
                endpoint
                    .connection(*handle)
                    .is_some_and(|conn| conn.tuple().local == *addr)
            });
            if in_use {
                return true;
            }
            if let Err(error) = backend.release(*addr) {
                tracing::warn!(%error, %addr, "could not release a listening port");
            }
            false
        });
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The `std::io` error for a failed connection call.
pub(crate) fn io_error(error: ConnectionError) -> io::Error {
    let kind = match error {
        ConnectionError::Reset => io::ErrorKind::ConnectionReset,
        ConnectionError::Refused => io::ErrorKind::ConnectionRefused,
        ConnectionError::TimedOut => io::ErrorKind::TimedOut,
        ConnectionError::Unreachable => io::ErrorKind::HostUnreachable,
        ConnectionError::Closing => io::ErrorKind::BrokenPipe,
        ConnectionError::NotConnected => io::ErrorKind::NotConnected,
        ConnectionError::WouldBlock => io::ErrorKind::WouldBlock,
    };
    io::Error::new(kind, error)
}

/// Replaces the waker in `slot` unless it would wake the same task.
pub(crate) fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}
