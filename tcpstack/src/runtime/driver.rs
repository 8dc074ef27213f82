//! The driver task: backend ⇄ endpoint, timers, wakeups.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::{is_finished, now, Shared, State};
use crate::wire::{ETHERNET_HEADER_LEN, ETHERTYPE_IPV4};

/// Passes through the loop before the driver yields to other tasks even if work remains.
const BUDGET: usize = 32;

/// Frames handed to the backend between two flushes: a long burst starts leaving early.
const TX_BATCH: usize = 64;

pub(super) struct Driver {
    shared: Arc<Shared>,
    timer: Pin<Box<Sleep>>,
    timer_deadline: Option<Instant>,
    /// The next frame: an Ethernet header the endpoint writes its packet after.
    frame: Vec<u8>,
    wakers: Vec<Waker>,
    finished: bool,
    /// On a current-thread runtime the tasks the driver wakes can only run once it yields, so it
    /// yields after every pass that woke one instead of looping on while frames keep coming.
    yield_to_woken: bool,
    /// How long after sending a segment the peer will answer (the endpoint's
    /// `last_sequenced_sent`) the driver keeps polling instead of sleeping
    /// ([`StackBuilder::busy_poll`](super::StackBuilder::busy_poll)).
    busy_poll: Duration,
}

impl Driver {
    pub(super) fn new(
        shared: Arc<Shared>,
        flavor: tokio::runtime::RuntimeFlavor,
        busy_poll: Duration,
    ) -> Self {
        let mut frame = Vec::with_capacity(ETHERNET_HEADER_LEN + 65536);
        frame.resize(ETHERNET_HEADER_LEN, 0);
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        Driver {
            shared,
            timer: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            timer_deadline: None,
            frame,
            wakers: Vec::new(),
            finished: false,
            yield_to_woken: flavor == tokio::runtime::RuntimeFlavor::CurrentThread,
            busy_poll,
        }
    }

    /// Everything the endpoint wants to send, flushed once per [`TX_BATCH`] frames and at the
    /// end.
    fn transmit(&mut self, state: &mut State, now: Instant) {
        let mut unflushed = 0usize;
        while state
            .endpoint
            .poll_transmit_after(now, &mut self.frame, ETHERNET_HEADER_LEN)
        {
            match state.backend.send(&self.frame) {
                Ok(()) => {
                    if let Some(capture) = &mut state.capture {
                        capture.record(&self.frame, now);
                    }
                    state.stats.frames_sent += 1;
                    unflushed += 1;
                }
                Err(error) => {
                    state.stats.send_errors += 1;
                    tracing::debug!(%error, "backend refused a frame");
                }
            }
            if unflushed == TX_BATCH {
                flush(state);
                unflushed = 0;
            }
        }
        if unflushed > 0 {
            flush(state);
        }
    }

    /// Aborts what is still open, sends the RSTs and tells every waiting task.
    fn stop(&mut self, state: &mut State, failure: (io::ErrorKind, &'static str)) {
        let now = now();
        let handles: Vec<_> = state.conns.keys().copied().collect();
        for handle in handles {
            if let Some(conn) = state.endpoint.connection_mut(handle) {
                if !is_finished(conn.state()) {
                    conn.abort();
                }
            }
        }
        self.transmit(state, now);
        self.fail(state, failure);
    }

    fn fail(&mut self, state: &mut State, failure: (io::ErrorKind, &'static str)) {
        state.failed.get_or_insert(failure);
        if let Some(capture) = &mut state.capture {
            capture.flush(now());
        }
        for slot in state.conns.values_mut() {
            slot.wake_all(&mut self.wakers);
        }
        for listener in state.listeners.values_mut() {
            self.wakers.append(&mut listener.wakers);
        }
        state.stopped.set();
        self.finished = true;
    }

    /// Wakes the tasks collected in this pass; true when there were any.
    fn wake_collected(&mut self) -> bool {
        let woke = !self.wakers.is_empty();
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
        woke
    }
}

fn flush(state: &mut State) {
    if let Err(error) = state.backend.flush() {
        state.stats.send_errors += 1;
        tracing::warn!(%error, "backend flush failed");
    }
}

/// The IPv4 packet inside an Ethernet frame, if it is one.
fn ipv4_payload(frame: &[u8]) -> Option<&[u8]> {
    let ethertype = frame.get(12..14)?;
    (ethertype == ETHERTYPE_IPV4.to_be_bytes()).then(|| &frame[ETHERNET_HEADER_LEN..])
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..BUDGET {
            let shared = this.shared.clone();
            let mut guard = shared.lock();
            let state = &mut *guard;
            if state.stop {
                this.stop(
                    state,
                    (
                        io::ErrorKind::NotConnected,
                        "the tcpstack stack was shut down",
                    ),
                );
                drop(guard);
                this.wake_collected();
                return Poll::Ready(());
            }
            super::register(&mut state.driver_waker, cx.waker());
            state.kicked = false;
            let now = now();

            let mut received = 0usize;
            let mut ignored = 0u64;
            let State {
                endpoint,
                backend,
                capture,
                ..
            } = state;
            let polled = backend.poll_recv(cx, &mut |frame| {
                if let Some(capture) = capture {
                    capture.record(frame, now);
                }
                match ipv4_payload(frame) {
                    Some(packet) => endpoint.handle_packet(packet, now),
                    None => ignored += 1,
                }
            });
            match polled {
                Poll::Ready(Ok(count)) => received = count,
                Poll::Ready(Err(error)) => {
                    tracing::error!(%error, "backend receive failed; stopping the stack");
                    this.stop(
                        state,
                        (io::ErrorKind::BrokenPipe, "the tcpstack link failed"),
                    );
                    drop(guard);
                    this.wake_collected();
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            state.stats.frames_received += received as u64;
            state.stats.frames_ignored += ignored;

            if state.endpoint.poll_timeout().is_some_and(|at| at <= now) {
                state.endpoint.handle_timeout(now);
            }
            expire_lingering(state, now);
            state.sweep_released(now);

            this.transmit(state, now);
            while let Some(event) = state.endpoint.poll_event() {
                state.dispatch(event, &mut this.wakers);
            }

            // Nothing arrived: the driver is about to go idle, a moment to write the capture out.
            let capture_due = match &mut state.capture {
                Some(capture) if received == 0 => capture.idle(now),
                _ => None,
            };
            let next_deadline = [
                state.endpoint.poll_timeout(),
                state.lingering.iter().map(|(at, _)| *at).min(),
                state.next_sweep,
                capture_due,
            ]
            .into_iter()
            .flatten()
            .min();
            let last_sequenced_sent = state.endpoint.last_sequenced_sent();
            drop(guard);
            let woke = this.wake_collected();

            if received > 0 {
                if woke && this.yield_to_woken {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            if let Some(deadline) = next_deadline {
                if this.timer_deadline != Some(deadline) {
                    this.timer.as_mut().reset(deadline.into());
                    this.timer_deadline = Some(deadline);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.timer_deadline = None;
                    continue;
                }
            }
            // Busy polling: an answer is on its way, so rather than sleep until the backend's
            // readiness wakes the task (a wakeup that adds to the round trip), ask to be polled
            // again as soon as the runtime has run whatever else is ready. Pure ACKs expect
            // nothing back: a bulk receiver sleeps between bursts as before.
            if last_sequenced_sent
                .is_some_and(|sent| now.saturating_duration_since(sent) < this.busy_poll)
            {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The task was cancelled (its runtime shut down) or a panic unwound through it.
        let shared = self.shared.clone();
        let mut guard = shared.lock();
        self.fail(
            &mut guard,
            (
                io::ErrorKind::BrokenPipe,
                "the tcpstack driver task stopped",
            ),
        );
        drop(guard);
        self.wake_collected();
    }
}

/// Aborts connections dropped with a linger timeout that have not finished closing in time.
fn expire_lingering(state: &mut State, now: Instant) {
    if state.lingering.is_empty() {
        return;
    }
    let State {
        endpoint,
        conns,
        lingering,
        ..
    } = state;
    lingering.retain(|&(deadline, handle)| {
        let Some(conn) = conns
            .get(&handle)
            .filter(|slot| !slot.closed)
            .and_then(|_| endpoint.connection_mut(handle))
        else {
            return false;
        };
        if is_finished(conn.state()) {
            return false;
        }
        if deadline <= now {
            conn.abort();
            return false;
        }
        true
    });
}
