//! `--pcap`: every frame the driver receives from the backend and hands to it, written with
//! [`PcapWriter`] through a buffer, so that a capture costs no system call per frame. The buffer
//! goes to the sink when the driver goes idle (no sooner than [`IDLE_FLUSH_GAP`] after the last
//! write: the driver's timer writes it then), at least every [`FLUSH_INTERVAL`] while frames keep
//! coming, whenever it fills, and when the driver stops. A server killed outright so loses at
//! most the last moments of its capture. A write error stops the capture with one warning
//! rather than the stack.

use std::io::{self, BufWriter, Write};
use std::time::{Duration, Instant, SystemTime};

use crate::wire::PcapWriter;

/// Bytes buffered before the capture is written out.
const BUFFER: usize = 1 << 20;
/// While frames flow without the driver ever going idle, the buffer is written this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest time between two writes when the driver goes idle: a trickle of frames, each
/// followed by an idle driver, costs one write per gap rather than one per frame.
const IDLE_FLUSH_GAP: Duration = Duration::from_millis(100);

pub(crate) struct Capture {
    writer: Option<PcapWriter<BufWriter<Box<dyn Write + Send>>>>,
    /// When the buffer was last written to the sink.
    written_at: Instant,
    /// The buffer holds frames the sink has not seen.
    unwritten: bool,
}

impl Capture {
    /// Writes the pcap header to `sink` at once, so a sink that cannot be written fails here.
    pub(crate) fn new(sink: Box<dyn Write + Send>, now: Instant) -> io::Result<Self> {
        let mut writer = PcapWriter::new(BufWriter::with_capacity(BUFFER, sink))?;
        writer.flush()?;
        Ok(Capture {
            writer: Some(writer),
            written_at: now,
            unwritten: false,
        })
    }

    /// Records one Ethernet frame as seen now.
    pub(crate) fn record(&mut self, frame: &[u8], now: Instant) {
        let Some(writer) = &mut self.writer else {
            return;
        };
        if let Err(error) = writer.write_frame(SystemTime::now(), frame) {
            self.stop(error);
            return;
        }
        self.unwritten = true;
        if now.saturating_duration_since(self.written_at) >= FLUSH_INTERVAL {
            self.flush(now);
        }
    }

    /// The driver has nothing left to do: writes the buffer out, or returns when it may (the
    /// driver wakes then and calls this again).
    pub(crate) fn idle(&mut self, now: Instant) -> Option<Instant> {
        if !self.unwritten {
            return None;
        }
        let due = self.written_at + IDLE_FLUSH_GAP;
        if now < due {
            return Some(due);
        }
        self.flush(now);
        None
    }

    /// Hands the buffer to the sink, in one write for all of it.
    pub(crate) fn flush(&mut self, now: Instant) {
        let Some(writer) = &mut self.writer else {
            return;
        };
        self.unwritten = false;
        match writer.flush() {
            Ok(()) => self.written_at = now,
            Err(error) => self.stop(error),
        }
    }

    fn stop(&mut self, error: io::Error) {
        tracing::warn!(%error, "cannot write the pcap capture; capture stopped");
        self.writer = None;
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{Capture, FLUSH_INTERVAL, IDLE_FLUSH_GAP};
    use crate::runtime::{TcpListener, TcpStream};
    use crate::test_support::memory_stacks;
    use crate::wire::{self, TcpFlags};

    /// A sink whose bytes, and the writes that brought them, the test can look at.
    #[derive(Clone, Default)]
    struct SharedSink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl SharedSink {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().expect("sink lock").0.clone()
        }

        fn writes(&self) -> usize {
            self.0.lock().expect("sink lock").1
        }
    }

    impl std::io::Write for SharedSink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let mut sink = self.0.lock().expect("sink lock");
            sink.0.extend_from_slice(data);
            sink.1 += 1;
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The frames of a classic pcap file, after its 24-byte header; a torn last record is left
    /// out, as tcpdump reading a capture still being written would.
    fn frames_in(capture: &[u8]) -> Vec<&[u8]> {
        let mut frames = Vec::new();
        let mut rest = capture.get(24..).unwrap_or_default();
        while let Some(record) = rest.get(..16) {
            let len = u32::from_le_bytes(record[8..12].try_into().expect("4 bytes")) as usize;
            let Some(frame) = rest.get(16..16 + len) else {
                break;
            };
            frames.push(frame);
            rest = &rest[16 + len..];
        }
        frames
    }

    const FRAME: [u8; 60] = [0u8; 60];

    fn capture_at(start: Instant) -> (Capture, SharedSink) {
        let sink = SharedSink::default();
        let capture = Capture::new(Box::new(sink.clone()), start).expect("header written");
        assert_eq!(sink.bytes().len(), 24, "the header goes out at once");
        (capture, sink)
    }

    #[test]
    fn an_idle_driver_writes_the_frames_out() {
        let start = Instant::now();
        let (mut capture, sink) = capture_at(start);
        let later = start + IDLE_FLUSH_GAP;
        capture.record(&FRAME, later);
        capture.record(&FRAME, later);
        assert_eq!(frames_in(&sink.bytes()).len(), 0, "buffered while busy");
        assert_eq!(capture.idle(later), None);
        assert_eq!(frames_in(&sink.bytes()).len(), 2);
        assert_eq!(capture.idle(later + IDLE_FLUSH_GAP), None, "nothing new");
        assert_eq!(
            sink.writes(),
            2,
            "the header, then both frames in one write"
        );
    }

    #[test]
    fn a_trickle_of_frames_is_written_once_per_gap_not_once_per_frame() {
        let start = Instant::now();
        let (mut capture, sink) = capture_at(start);
        let ms = Duration::from_millis;
        capture.record(&FRAME, start + IDLE_FLUSH_GAP);
        assert_eq!(capture.idle(start + IDLE_FLUSH_GAP), None);
        let written = start + IDLE_FLUSH_GAP;
        for step in 1..10u32 {
            let now = written + ms(5) * step;
            capture.record(&FRAME, now);
            // Too soon after the last write: the driver is told when to come back.
            assert_eq!(capture.idle(now), Some(written + IDLE_FLUSH_GAP));
        }
        assert_eq!(frames_in(&sink.bytes()).len(), 1);
        assert_eq!(capture.idle(written + IDLE_FLUSH_GAP), None);
        assert_eq!(frames_in(&sink.bytes()).len(), 10);
        assert_eq!(sink.writes(), 3);
    }

    #[test]
    fn frames_that_never_let_the_driver_idle_are_written_every_interval() {
        let start = Instant::now();
        let (mut capture, sink) = capture_at(start);
        let tick = FLUSH_INTERVAL / 10;
        for step in 1..10u32 {
            capture.record(&FRAME, start + tick * step);
        }
        assert_eq!(frames_in(&sink.bytes()).len(), 0);
        capture.record(&FRAME, start + FLUSH_INTERVAL);
        assert_eq!(frames_in(&sink.bytes()).len(), 10);
        for step in 11..20u32 {
            capture.record(&FRAME, start + tick * step);
        }
        assert_eq!(frames_in(&sink.bytes()).len(), 10);
        capture.record(&FRAME, start + FLUSH_INTERVAL * 2);
        assert_eq!(frames_in(&sink.bytes()).len(), 20);
        assert_eq!(sink.writes(), 3);
    }

    /// A server killed now would leave a capture with its handshake in it: the frames reach the
    /// file while the stack runs, not only when it stops.
    #[tokio::test]
    async fn the_handshake_reaches_the_file_while_the_stack_runs() {
        let path = std::env::temp_dir().join(format!(
            "tcpstack-runtime-pcap-live-{}.pcap",
            std::process::id()
        ));
        let file = TempFile(path.clone());
        let (a, b) = crate::io::memory::pair();
        let (server, client) = memory_stacks((a, b), |server| {
            server.capture(std::fs::File::create(&file.0).expect("creates the capture file"))
        });
        let addr = "198.18.0.1:7".parse().expect("address");
        let listener = TcpListener::bind(&server, addr).expect("binds");
        let stream = TcpStream::connect(&client, addr).await.expect("connects");
        let (accepted, _) = listener.accept().await.expect("accepts");

        let flags_seen = || -> Vec<TcpFlags> {
            let written = std::fs::read(&file.0).expect("reads the capture file");
            frames_in(&written)
                .iter()
                .map(|frame| {
                    let (_, packet) = wire::parse_ethernet_ipv4_tcp(frame).expect("TCP frames");
                    packet.tcp.flags
                })
                .collect()
        };
        let handshake = [TcpFlags::SYN, TcpFlags::SYN | TcpFlags::ACK, TcpFlags::ACK];
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while flags_seen().len() < handshake.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "the capture still holds {:?}", flags_seen());
        assert_eq!(flags_seen(), handshake);
        // The stack is still up: the capture was not written by its shutdown.
        assert_eq!(server.open_connections(), 1);
        assert!(server.stats().frames_received >= 2);
        drop((stream, accepted));
    }

    /// Removes the capture file however the test ends.
    struct TempFile(PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Runs a capture reader on `path`; a missing tool fails the test, it never skips it.
    fn read_back(tool: &str, args: &[&str], path: &Path) -> String {
        let output = Command::new(tool)
            .args(args)
            .arg(path)
            .output()
            .unwrap_or_else(|error| panic!("{tool} is required to check the capture: {error}"));
        assert!(
            output.status.success(),
            "{tool} rejected the capture: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[tokio::test]
    async fn the_capture_reads_back_with_tcpdump_and_tshark_and_shows_the_handshake() {
        let path =
            std::env::temp_dir().join(format!("tcpstack-runtime-pcap-{}.pcap", std::process::id()));
        let file = TempFile(path.clone());
        let (a, b) = crate::io::memory::pair();
        let (server, client) = memory_stacks((a, b), |server| {
            server.capture(std::fs::File::create(&file.0).expect("creates the capture file"))
        });
        let addr = "198.18.0.1:7".parse().expect("address");
        let listener = TcpListener::bind(&server, addr).expect("binds");
        let mut stream = TcpStream::connect(&client, addr).await.expect("connects");
        stream.write_all(b"hello").await.expect("writes");
        stream.shutdown().await.expect("closes");
        let (mut accepted, _) = listener.accept().await.expect("accepts");
        let mut received = Vec::new();
        accepted.read_to_end(&mut received).await.expect("reads");
        assert_eq!(received, b"hello");
        drop(accepted);

        let report = server.report();
        assert_eq!(report.handshake.passive.count, 1);
        assert_eq!(report.handshake.active.count, 0);
        let json = serde_json::to_value(report).expect("serialises");
        assert_eq!(json["handshake"]["passive"]["count"], 1);
        assert_eq!(json["runtime"]["accepted"], 1);
        assert_eq!(client.report().handshake.active.count, 1);

        server.shutdown(Duration::from_secs(1)).await;
        client.shutdown(Duration::from_secs(1)).await;

        let text = read_back("tcpdump", &["-n", "-S", "-r"], &file.0);
        let lines: Vec<&str> = text.lines().collect();
        let handshake = [
            "IP 198.18.0.2.",
            "> 198.18.0.1.7: Flags [S],",
            "IP 198.18.0.1.7 > 198.18.0.2.",
        ];
        assert!(
            lines.len() >= 5,
            "handshake, data and FINs expected:\n{text}"
        );
        assert!(
            lines[0].contains(handshake[0]) && lines[0].contains(handshake[1]),
            "{text}"
        );
        assert!(
            lines[1].contains(handshake[2]) && lines[1].contains("Flags [S.]"),
            "{text}"
        );
        assert!(lines[2].contains("Flags [.]"), "{text}");
        assert!(text.contains("length 5"), "the data segment: {text}");

        let tshark = read_back("tshark", &["-n", "-r"], &file.0);
        assert!(
            tshark.lines().count() == lines.len(),
            "tcpdump:\n{text}\ntshark:\n{tshark}"
        );
        assert!(
            tshark.contains("[SYN]") && tshark.contains("[SYN, ACK]"),
            "{tshark}"
        );
    }
}
