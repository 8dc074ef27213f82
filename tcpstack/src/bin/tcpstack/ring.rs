//! `tcpstack ring`: what the backend's rings carry on a link with no TCP at all, the ceiling
//! each bulk benchmark row is a fraction of. A generator (`--mode tx-only`) on one end sends
//! full-sized TCP-shaped frames to a reserved port on the other, where `--mode rx-drop` counts
//! and drops them, or `--mode reflect` sends each one back (addresses and ports swapped, like an
//! l2fwd that also turns the IPv4 header around) to the generator's own reserved port, where it
//! is counted. Every mode busy-polls: the ceiling, not the cost of waiting.

use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tcpstack::io::{self, Backend, BackendConfig};
use tcpstack::wire::{self, SeqNum, TcpFlags, TcpHeader, ETHERNET_HEADER_LEN};

use crate::XdpModeArg;

/// Frames queued between two flushes of the generator.
const TX_BATCH: usize = 64;
/// How long the generator waits for the peer's MAC before it gives up.
const NEIGHBOUR_WAIT: Duration = Duration::from_secs(3);
/// A receiver that saw frames and then none for this long is done.
const IDLE_END: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub struct RingArgs {
    /// The network interface to use.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// tx-only: send frames to --to as fast as the rings take them; rx-drop: count and drop the
    /// frames that arrive for --port; reflect: send each one back.
    #[arg(long, value_enum)]
    pub mode: RingMode,
    /// tx-only: where the frames go (a port that rx-drop or reflect serves on the peer).
    #[arg(long, value_name = "ADDR:PORT")]
    pub to: Option<SocketAddrV4>,
    /// The local port reserved for the frames that arrive (tx-only: the reflected ones).
    #[arg(long, default_value_t = 5299)]
    pub port: u16,
    /// Seconds to send (tx-only), or to receive after the first frame (rx-drop, reflect).
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub duration: f64,
    /// Bytes per frame, Ethernet header included (1514: a full 1500-byte MTU).
    #[arg(long, value_name = "B", default_value_t = 1514)]
    pub frame_size: usize,
    /// How the XDP program is attached.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// Prints the report as one JSON object on stdout instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RingMode {
    TxOnly,
    RxDrop,
    Reflect,
}

/// What one run moved, over the seconds it measured.
#[derive(Debug, Default, Serialize)]
struct RingReport {
    mode: Option<RingMode>,
    frame_size: usize,
    seconds: f64,
    tx_frames: u64,
    rx_frames: u64,
    tx_frames_per_second: f64,
    rx_frames_per_second: f64,
    /// Of frame bytes (Ethernet header included, no preamble or gap).
    tx_gbit_per_second: f64,
    rx_gbit_per_second: f64,
    /// Frames the backend could not queue (tx ring or buffers full) or the kernel dropped.
    tx_dropped: u64,
    kernel_dropped: u64,
}

pub async fn run(args: RingArgs) -> anyhow::Result<ExitCode> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    let min_frame = ETHERNET_HEADER_LEN + 40;
    if args.frame_size < min_frame || args.frame_size > ETHERNET_HEADER_LEN + 1500 {
        bail!("--frame-size must be between {min_frame} and 1514 bytes");
    }
    if args.mode == RingMode::TxOnly && args.to.is_none() {
        bail!("--mode tx-only needs --to ADDR:PORT");
    }
    io::require_root()?;
    let config = BackendConfig {
        xdp_mode: crate::link::xdp_mode(args.xdp_mode),
        ..BackendConfig::new(io::BackendKind::Xdp, args.iface.clone())
    };
    let (mut backend, addr) = io::open(&config).map_err(anyhow::Error::new)?;
    let local = SocketAddrV4::new(addr, args.port);
    backend
        .reserve(local)
        .with_context(|| format!("reserving {local} for the ring benchmark"))?;
    eprintln!("tcpstack ring: {local} reserved, ready");
    let duration = Duration::from_secs_f64(args.duration);
    let mut report = match (args.mode, args.to) {
        (RingMode::TxOnly, Some(to)) => generate(backend.as_mut(), local, to, &args, duration)?,
        _ => receive(backend.as_mut(), args.mode == RingMode::Reflect, duration)?,
    };
    let stats = backend.stats();
    report.mode = Some(args.mode);
    report.frame_size = args.frame_size;
    report.tx_dropped = stats.tx_dropped;
    report.kernel_dropped = stats.kernel_dropped;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "tcpstack ring {:?}: {} frames out ({:.0}/s, {:.2} Gbit/s), {} in ({:.0}/s, {:.2} \
             Gbit/s) in {:.2} s of {}-byte frames; {} not queued, {} dropped by the kernel",
            args.mode,
            report.tx_frames,
            report.tx_frames_per_second,
            report.tx_gbit_per_second,
            report.rx_frames,
            report.rx_frames_per_second,
            report.rx_gbit_per_second,
            report.seconds,
            args.frame_size,
            report.tx_dropped,
            report.kernel_dropped,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Busy-polls the backend once: every frame that arrived goes to `sink`.
fn poll_once(backend: &mut dyn Backend, sink: &mut dyn FnMut(&[u8])) -> anyhow::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    match backend.poll_recv(&mut cx, sink) {
        Poll::Ready(result) => Ok(result.context("receiving frames")?),
        Poll::Pending => Ok(0),
    }
}

fn generate(
    backend: &mut dyn Backend,
    local: SocketAddrV4,
    to: SocketAddrV4,
    args: &RingArgs,
    duration: Duration,
) -> anyhow::Result<RingReport> {
    let payload = vec![0x5a; args.frame_size - ETHERNET_HEADER_LEN - 40];
    let mut frame = Vec::with_capacity(args.frame_size);
    let mut header = TcpHeader {
        src_port: local.port(),
        dst_port: to.port(),
        flags: TcpFlags::ACK,
        window: u16::MAX,
        ..TcpHeader::default()
    };
    let mut build = |seq: u32, frame: &mut Vec<u8>| {
        header.seq = SeqNum(seq);
        frame.clear();
        wire::emit_ethernet_ipv4_tcp(
            [0; 6],
            [0; 6],
            *local.ip(),
            *to.ip(),
            &header,
            &payload,
            seq as u16,
            frame,
        );
    };
    let mut received = 0u64;
    let mut count = |_: &[u8]| received += 1;
    // The first frame waits for the peer's MAC; time starts once it went out.
    build(0, &mut frame);
    backend.send(&frame)?;
    let asked = Instant::now();
    while backend.stats().tx_frames == 0 {
        if asked.elapsed() > NEIGHBOUR_WAIT {
            bail!(
                "no frame left for {to} within {NEIGHBOUR_WAIT:?}: is {} reachable from {}?",
                to.ip(),
                args.iface
            );
        }
        backend.flush()?;
        poll_once(backend, &mut count)?;
    }
    let start_frames = backend.stats().tx_frames;
    let start = Instant::now();
    let mut seq = 1u32;
    while start.elapsed() < duration {
        for _ in 0..TX_BATCH {
            build(seq.wrapping_mul(1460), &mut frame);
            backend.send(&frame)?;
            seq = seq.wrapping_add(1);
        }
        backend.flush()?;
        poll_once(backend, &mut count)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    // Reflections still on their way back.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(100) {
        backend.flush()?;
        poll_once(backend, &mut count)?;
    }
    let sent = backend.stats().tx_frames - start_frames;
    Ok(rates(sent, received, seconds, args.frame_size))
}

fn receive(
    backend: &mut dyn Backend,
    reflect: bool,
    duration: Duration,
) -> anyhow::Result<RingReport> {
    let mut received = 0u64;
    let mut bytes = 0usize;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut reflected: Vec<Vec<u8>> = Vec::new();
    loop {
        let got = poll_once(backend, &mut |frame| {
            received += 1;
            bytes = frame.len();
            if reflect {
                let mut copy = frame.to_vec();
                if turn_around(&mut copy) {
                    reflected.push(copy);
                }
            }
        })?;
        let now = Instant::now();
        if got > 0 {
            first.get_or_insert(now);
            last = now;
        }
        for frame in reflected.drain(..) {
            backend.send(&frame)?;
        }
        backend.flush()?;
        match first {
            Some(first) if now - first >= duration || now - last >= IDLE_END => break,
            _ => {}
        }
    }
    let seconds = first.map_or(0.0, |first| (last - first).as_secs_f64());
    let tx = if reflect {
        backend.stats().tx_frames
    } else {
        0
    };
    Ok(rates(tx, received, seconds, bytes))
}

/// Swaps the IPv4 addresses and TCP ports of `frame` in place and zeroes its MACs, so the
/// backend sends it back where it came from. Both checksums stay right: each sums the swapped
/// fields in the same way. False for a frame that is not IPv4/TCP.
fn turn_around(frame: &mut [u8]) -> bool {
    let ip = ETHERNET_HEADER_LEN;
    if frame.len() < ip + 40 || frame[ip] >> 4 != 4 || frame[ip + 9] != 6 {
        return false;
    }
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    let tcp = ip + ihl;
    if frame.len() < tcp + 20 {
        return false;
    }
    frame[..12].fill(0);
    let (src, dst) = frame[ip + 12..ip + 20].split_at_mut(4);
    src.swap_with_slice(dst);
    let (src_port, dst_port) = frame[tcp..tcp + 4].split_at_mut(2);
    src_port.swap_with_slice(dst_port);
    true
}

fn rates(tx: u64, rx: u64, seconds: f64, frame_size: usize) -> RingReport {
    let per_second = |frames: u64| {
        if seconds > 0.0 {
            frames as f64 / seconds
        } else {
            0.0
        }
    };
    let gbit = |frames: u64| per_second(frames) * frame_size as f64 * 8.0 / 1e9;
    RingReport {
        seconds,
        tx_frames: tx,
        rx_frames: rx,
        tx_frames_per_second: per_second(tx),
        rx_frames_per_second: per_second(rx),
        tx_gbit_per_second: gbit(tx),
        rx_gbit_per_second: gbit(rx),
        ..RingReport::default()
    }
}
