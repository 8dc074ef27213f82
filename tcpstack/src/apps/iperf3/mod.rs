//! An iperf3 server: the control protocol of esnet/iperf (`iperf_api.c`, `iperf_server_api.c`)
//! over any [`Listener`], so that a stock `iperf3 -c` runs its TCP tests against us.
//!
//! One test at a time, as iperf3 does:
//! 1. the client opens the control connection and sends its 37-byte cookie;
//! 2. PARAM_EXCHANGE: it sends its parameters as 4-byte big-endian length + JSON;
//! 3. CREATE_STREAMS: it opens the data streams, each starting with the same cookie;
//! 4. TEST_START, TEST_RUNNING: data flows until the client sends TEST_END;
//! 5. EXCHANGE_RESULTS: the client's results JSON, then ours; DISPLAY_RESULTS; IPERF_DONE.
//!
//! Every step has a timeout and every connection a deadline, so a client that vanishes or sends
//! garbage costs at most a few seconds: the server then goes back to accepting.
//!
//! The control protocol's messages and JSON (states, error numbers, parameters, results) are in
//! protocol.rs; the server's tasks and the data streams here.

mod protocol;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use super::{accept_failed, AppStream, Listener};
use protocol::{
    read_json, send_server_error, send_state, server_results, state, stream_id, within, write_json,
};

/// iperf3's well-known port.
pub const DEFAULT_PORT: u16 = 5201;

/// 36 printable characters and a NUL (`COOKIE_SIZE`).
const COOKIE_LEN: usize = 37;
type Cookie = [u8; COOKIE_LEN];

/// Bytes a receiving stream reads per call.
const RECEIVE_BUFFER_LEN: usize = 256 * 1024;
/// After TEST_END a receiving stream reads on until it has been quiet this long...
const DRAIN_QUIET: Duration = Duration::from_millis(50);
/// ...or for this long at most.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// Connections (the test's and those still owing their cookie) beyond which new ones are
/// dropped unread, so that a flood of silent connections costs bounded memory.
const MAX_CONNECTIONS: usize = 1024;

/// How long the server waits for a client before giving up on it.
#[derive(Debug, Clone)]
pub struct Iperf3Config {
    /// Each step outside the running test: cookie, parameters, streams, results, IPERF_DONE.
    pub step_timeout: Duration,
    /// A running test in which no byte moves and no control message arrives for this long ends.
    pub idle_timeout: Duration,
    /// A timed test (`-t`) ends at most this long after `-t` + `--omit` (iperf3 waits 5 s).
    pub end_grace: Duration,
}

impl Default for Iperf3Config {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            end_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("control connection: {0}")]
    Io(#[from] io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the client closed the control connection")]
    ControlClosed,
    #[error("the client terminated the test")]
    ClientTerminated,
    #[error("unexpected control message {0}")]
    UnexpectedState(i8),
    #[error("JSON message of {0} bytes is too long")]
    JsonTooLong(u32),
    #[error("malformed JSON message: {0}")]
    BadJson(#[from] serde_json::Error),
    #[error("unsupported parameters: {0}")]
    Unsupported(String),
}

/// Serves iperf3 tests on `listener` until it fails for good.
pub async fn serve<L: Listener>(listener: L, config: Iperf3Config) -> io::Result<()> {
    let config = Arc::new(config);
    let slot: Slot<L::Stream> = Arc::new(Mutex::new(None));
    let mut connections = JoinSet::new();
    let mut accepted_count = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= MAX_CONNECTIONS => {
                    tracing::warn!(%peer, "iperf3: too many connections without a cookie, dropped");
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let order = accepted_count;
                    accepted_count += 1;
                    connections.spawn(on_connection(stream, peer, order, slot.clone(), config.clone()));
                }
                Err(error) => accept_failed(error).await?,
            },
            Some(finished) = connections.join_next() => {
                if let Err(error) = finished {
                    if error.is_panic() {
                        tracing::error!(%error, "iperf3 connection task panicked");
                    }
                }
            }
        }
    }
}

/// The test in progress, if any: its cookie, and while it waits for its data streams, where to
/// hand them (with their accept order, which is the order the client opened them in).
struct Busy<S> {
    cookie: Cookie,
    /// The accept order of its control connection: which test this is, even when a client
    /// reuses a cookie.
    test: u64,
    streams: Option<mpsc::UnboundedSender<(u64, S)>>,
}

type Slot<S> = Arc<Mutex<Option<Busy<S>>>>;

fn lock<S>(slot: &Slot<S>) -> MutexGuard<'_, Option<Busy<S>>> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The slot as the test holding it sees it: frees it when the test ends, however it ends.
struct TestSlot<S> {
    slot: Slot<S>,
    test: u64,
}

impl<S> TestSlot<S> {
    /// Where the data streams carrying this test's cookie go, or `None` once they are in.
    fn hand_streams_to(&self, streams: Option<mpsc::UnboundedSender<(u64, S)>>) {
        if let Some(busy) = lock(&self.slot).as_mut().filter(|b| b.test == self.test) {
            busy.streams = streams;
        }
    }

    /// Lets the next test in. Only this test's entry is cleared: once released, the slot may
    /// already belong to the next client.
    fn release(&self) {
        let mut busy = lock(&self.slot);
        if busy.as_ref().is_some_and(|b| b.test == self.test) {
            *busy = None;
        }
    }
}

impl<S> Drop for TestSlot<S> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Classifies a new connection by its cookie: the control connection of a new test, a data
/// stream of the current one, or a client to turn away with ACCESS_DENIED.
async fn on_connection<S: AppStream>(
    mut stream: S,
    peer: SocketAddr,
    order: u64,
    slot: Slot<S>,
    config: Arc<Iperf3Config>,
) {
    let mut cookie = [0u8; COOKIE_LEN];
    match timeout(config.step_timeout, stream.read_exact(&mut cookie)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "iperf3: no cookie");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "iperf3: no cookie in time");
            return;
        }
    }

    enum Role<S> {
        Control(S),
        Handed,
        Denied(S),
    }
    let role = {
        let mut busy = lock(&slot);
        match busy.as_mut() {
            None => {
                *busy = Some(Busy {
                    cookie,
                    test: order,
                    streams: None,
                });
                Role::Control(stream)
            }
            Some(Busy {
                cookie: current,
                streams: Some(streams),
                ..
            }) if *current == cookie => match streams.send((order, stream)) {
                Ok(()) => Role::Handed,
                Err(mpsc::error::SendError((_, stream))) => Role::Denied(stream),
            },
            Some(_) => Role::Denied(stream),
        }
    };
    let stream = match role {
        Role::Control(stream) => stream,
        Role::Handed => return,
        Role::Denied(mut stream) => {
            tracing::info!(%peer, "iperf3: busy or unknown cookie, access denied");
            let _ = timeout(config.step_timeout, async {
                stream.write_all(&[state::ACCESS_DENIED as u8]).await?;
                stream.shutdown().await
            })
            .await;
            return;
        }
    };

    let slot = TestSlot { slot, test: order };
    tracing::info!(%peer, "iperf3: test starting");
    match run_test(stream, &slot, &config).await {
        Ok(summary) => tracing::info!(%peer, "iperf3: test done: {summary}"),
        Err(error) => tracing::warn!(%peer, %error, "iperf3: test abandoned"),
    }
}

/// What the client asked for (`get_parameters` in iperf_api.c).
#[derive(Debug, Clone, PartialEq)]
struct TestParams {
    parallel: u32,
    reverse: bool,
    bidirectional: bool,
    duration: Duration,
    omit: Duration,
    byte_limit: Option<u64>,
    block_limit: Option<u64>,
    block_len: usize,
    get_server_output: bool,
    /// `-b`: the rate of each stream we send on, bits per second.
    stream_rate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The client sends, we count.
    Receive,
    /// We send (`-R`, and the second half of `--bidir`).
    Send,
}

/// One stream's figures at the end of a test.
#[derive(Debug, Clone)]
struct StreamResult {
    id: u64,
    direction: Direction,
    bytes: u64,
    retransmits: Option<u64>,
}

/// A finished test, for the log line.
struct TestSummary {
    streams: Vec<StreamResult>,
    seconds: f64,
}

impl std::fmt::Display for TestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = |direction| -> u64 {
            self.streams
                .iter()
                .filter(|s| s.direction == direction)
                .map(|s| s.bytes)
                .sum()
        };
        let rate = |bytes: u64| bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e6;
        let (received, sent) = (total(Direction::Receive), total(Direction::Send));
        let retransmits: u64 = self.streams.iter().filter_map(|s| s.retransmits).sum();
        write!(
            f,
            "{} streams, {:.2} s, received {received} B ({:.1} Mbit/s), sent {sent} B ({:.1} Mbit/s), {retransmits} retransmits",
            self.streams.len(),
            self.seconds,
            rate(received),
            rate(sent),
        )
    }
}

async fn run_test<S: AppStream>(
    mut ctrl: S,
    slot: &TestSlot<S>,
    config: &Iperf3Config,
) -> Result<TestSummary, TestError> {
    let cpu_start = CpuClock::now();
    send_state(&mut ctrl, state::PARAM_EXCHANGE, config.step_timeout).await?;
    let params = within(config.step_timeout, "parameters", read_json(&mut ctrl)).await?;
    let params = match TestParams::from_json(&params) {
        Ok(params) => params,
        Err((i_errno, reason)) => {
            let _ = send_server_error(&mut ctrl, i_errno, config.step_timeout).await;
            return Err(TestError::Unsupported(reason));
        }
    };
    tracing::debug!(?params, "iperf3 parameters");
    let directions = params.directions();

    let (streams_tx, mut streams_rx) = mpsc::unbounded_channel();
    slot.hand_streams_to(Some(streams_tx));
    send_state(&mut ctrl, state::CREATE_STREAMS, config.step_timeout).await?;
    let streams = collect_streams(&mut ctrl, &mut streams_rx, directions.len(), config).await;
    slot.hand_streams_to(None);
    let streams = streams?;

    send_state(&mut ctrl, state::TEST_START, config.step_timeout).await?;
    send_state(&mut ctrl, state::TEST_RUNNING, config.step_timeout).await?;
    let summary = run_streams(&mut ctrl, streams, &directions, &params, config).await?;

    send_state(&mut ctrl, state::EXCHANGE_RESULTS, config.step_timeout).await?;
    let client_results = within(
        config.step_timeout,
        "the client's results",
        read_json(&mut ctrl),
    )
    .await?;
    tracing::debug!(%client_results, "iperf3 client results");
    let results = server_results(&summary, &params, cpu_start.utilisation());
    write_json(&mut ctrl, &results, config.step_timeout).await?;
    // The test is over. A client that starts its next test as soon as it has read
    // DISPLAY_RESULTS (a script running iperf3 in a loop) must find the server free, so the
    // slot is released before that byte leaves rather than after IPERF_DONE arrives.
    slot.release();
    send_state(&mut ctrl, state::DISPLAY_RESULTS, config.step_timeout).await?;

    // The client answers DISPLAY_RESULTS with IPERF_DONE and closes; either ends the test.
    let mut done = [0u8; 1];
    match timeout(config.step_timeout, ctrl.read(&mut done)).await {
        Ok(Ok(1)) if done[0] as i8 == state::IPERF_DONE => {}
        Ok(Ok(0)) => {}
        _ => tracing::debug!("iperf3: no IPERF_DONE after DISPLAY_RESULTS"),
    }
    let _ = timeout(config.step_timeout, ctrl.shutdown()).await;
    Ok(summary)
}

/// Waits for the test's data streams, watching the control connection meanwhile: the client
/// sends nothing there until the test runs, so anything it does send (or its EOF) ends the test.
async fn collect_streams<S: AppStream>(
    ctrl: &mut S,
    arrivals: &mut mpsc::UnboundedReceiver<(u64, S)>,
    count: usize,
    config: &Iperf3Config,
) -> Result<Vec<S>, TestError> {
    let deadline = Instant::now() + config.step_timeout;
    let mut streams = Vec::with_capacity(count);
    let mut message = [0u8; 1];
    while streams.len() < count {
        tokio::select! {
            Some(stream) = arrivals.recv() => streams.push(stream),
            read = ctrl.read(&mut message) => return Err(control_interrupted(read, message[0])),
            _ = sleep_until(deadline) => return Err(TestError::Timeout("data streams")),
        }
    }
    // Cookies are read concurrently; the accept order is the client's connect order.
    streams.sort_by_key(|(order, _)| *order);
    Ok(streams.into_iter().map(|(_, stream)| stream).collect())
}

fn control_interrupted(read: io::Result<usize>, byte: u8) -> TestError {
    match read {
        Ok(0) => TestError::ControlClosed,
        Ok(_) if byte as i8 == state::CLIENT_TERMINATE => TestError::ClientTerminated,
        Ok(_) => TestError::UnexpectedState(byte as i8),
        Err(error) => TestError::Io(error),
    }
}

/// Runs the data streams until the client's TEST_END.
async fn run_streams<S: AppStream>(
    ctrl: &mut S,
    streams: Vec<S>,
    directions: &[Direction],
    params: &TestParams,
    config: &Iperf3Config,
) -> Result<TestSummary, TestError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let counters: Vec<Arc<AtomicU64>> = directions.iter().map(|_| Arc::default()).collect();
    let limits = Arc::new(SendLimits::new(params));
    let block: Arc<[u8]> = (0..params.block_len as u64)
        .map(super::http::pattern_byte)
        .collect();
    let mut workers = JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let moved = counters[index].clone();
        let stop = stop_rx.clone();
        match directions[index] {
            Direction::Receive => {
                workers.spawn(async move { (index, receive(stream, moved, stop).await) })
            }
            Direction::Send => {
                let (limits, block) = (limits.clone(), block.clone());
                workers
                    .spawn(async move { (index, send(stream, moved, limits, block, stop).await) })
            }
        };
    }

    let total_moved = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let started = Instant::now();
    let mut measuring_since = started;
    let mut baselines = vec![0u64; counters.len()];
    let mut omit_end = (!params.omit.is_zero()).then(|| started + params.omit);
    let hard_end = (!params.duration.is_zero())
        .then(|| started + params.duration + params.omit + config.end_grace);
    let mut last_progress = (total_moved(), started);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut message = [0u8; 1];
    loop {
        tokio::select! {
            read = ctrl.read(&mut message) => match read {
                Ok(1) if message[0] as i8 == state::TEST_END => break,
                // iperf3 servers ignore these mid-test.
                Ok(1) if matches!(message[0] as i8, state::TEST_START | state::TEST_RUNNING) => {
                    last_progress.1 = Instant::now();
                }
                other => return Err(control_interrupted(other, message[0])),
            },
            _ = sleep_until(omit_end.unwrap_or(started)), if omit_end.is_some() => {
                // --omit: what moved during the first seconds does not count (iperf_reset_stats).
                baselines = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                measuring_since = Instant::now();
                omit_end = None;
            }
            _ = sleep_until(hard_end.unwrap_or(started)), if hard_end.is_some() => {
                return Err(TestError::Timeout("TEST_END"));
            }
            now = ticker.tick() => {
                let moved = total_moved();
                if moved != last_progress.0 {
                    last_progress = (moved, now);
                } else if now.duration_since(last_progress.1) >= config.idle_timeout {
                    return Err(TestError::Timeout("progress on the data streams"));
                }
            }
        }
    }
    let seconds = measuring_since.elapsed().as_secs_f64();

    let _ = stop_tx.send(true);
    let mut retransmits = vec![None; counters.len()];
    let collect = async {
        while let Some(finished) = workers.join_next().await {
            if let Ok((index, stream)) = finished {
                retransmits[index] = stream.retransmits();
            }
        }
    };
    let _ = timeout(config.step_timeout, collect).await;

    let streams = directions
        .iter()
        .enumerate()
        .map(|(index, &direction)| StreamResult {
            id: stream_id(index),
            direction,
            bytes: counters[index]
                .load(Ordering::Relaxed)
                .saturating_sub(baselines[index]),
            retransmits: if direction == Direction::Send {
                retransmits[index]
            } else {
                None
            },
        })
        .collect();
    Ok(TestSummary { streams, seconds })
}

/// What bounds the streams we send on: `-n` / `-k`, shared by all of them as iperf3 counts
/// test-wide, and `-b`, per stream.
struct SendLimits {
    bytes: AtomicU64,
    blocks: AtomicU64,
    byte_limit: Option<u64>,
    block_limit: Option<u64>,
    stream_rate: Option<u64>,
}

impl SendLimits {
    fn new(params: &TestParams) -> Self {
        Self {
            bytes: AtomicU64::new(0),
            blocks: AtomicU64::new(0),
            byte_limit: params.byte_limit,
            block_limit: params.block_limit,
            stream_rate: params.stream_rate,
        }
    }

    fn exhausted(&self) -> bool {
        self.byte_limit
            .is_some_and(|limit| self.bytes.load(Ordering::Relaxed) >= limit)
            || self
                .block_limit
                .is_some_and(|limit| self.blocks.load(Ordering::Relaxed) >= limit)
    }
}

/// Counts what the client sends on one stream until told to stop.
async fn receive<S: AppStream>(
    mut stream: S,
    moved: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> S {
    let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            read = stream.read(&mut buffer) => match read {
                Ok(n) if n > 0 => { moved.fetch_add(n as u64, Ordering::Relaxed); }
                // The stream is finished; the test goes on until TEST_END.
                _ => { let _ = stop.changed().await; return stream; }
            },
        }
    }
    // TEST_END travels on another connection and may overtake the last data the client sent
    // before it (a short `-n` test can end before we read anything): count what still arrives.
    let give_up = Instant::now() + DRAIN_LIMIT;
    loop {
        let quiet_until = (Instant::now() + DRAIN_QUIET).min(give_up);
        match timeout_at(quiet_until, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => {
                moved.fetch_add(n as u64, Ordering::Relaxed);
            }
            _ => return stream,
        }
    }
}

/// Sends blocks on one stream until told to stop or until the test's byte or block limit is
/// reached, at the `-b` rate if there is one.
async fn send<S: AppStream>(
    mut stream: S,
    moved: Arc<AtomicU64>,
    limits: Arc<SendLimits>,
    block: Arc<[u8]>,
    mut stop: watch::Receiver<bool>,
) -> S {
    let mut position = 0;
    let (started, mut sent) = (Instant::now(), 0u64);
    loop {
        if let Some(rate) = limits.stream_rate {
            // -b: wait until the bytes sent so far are due at this rate.
            let due = started + Duration::from_secs_f64(sent as f64 * 8.0 / rate as f64);
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = sleep_until(due) => {}
            }
        }
        if position == 0 && limits.exhausted() {
            let _ = stop.changed().await;
            break;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            written = stream.write(&block[position..]) => match written {
                Ok(n) if n > 0 => {
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                    limits.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    sent += n as u64;
                    position += n;
                    if position == block.len() {
                        position = 0;
                        limits.blocks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => { let _ = stop.changed().await; break; }
            },
        }
    }
    stream
}

/// Process CPU time against wall time, for the `cpu_util_*` figures iperf3 reports.
struct CpuClock {
    wall: Instant,
    user: Duration,
    system: Duration,
}

impl CpuClock {
    fn now() -> Self {
        let (user, system) = process_cpu_times();
        Self {
            wall: Instant::now(),
            user,
            system,
        }
    }

    /// Total, user and system CPU as percentages of the wall time since `self`.
    fn utilisation(&self) -> [f64; 3] {
        let (user, system) = process_cpu_times();
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let user = user.saturating_sub(self.user).as_secs_f64() / wall * 100.0;
        let system = system.saturating_sub(self.system).as_secs_f64() / wall * 100.0;
        [user + system, user, system]
    }
}

fn process_cpu_times() -> (Duration, Duration) {
    // SAFETY: rusage is plain old data; getrusage fills it or fails without touching memory.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let duration = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (duration(usage.ru_utime), duration(usage.ru_stime))
}
