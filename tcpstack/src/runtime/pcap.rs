//! `--pcap`: every frame the driver receives from the backend and hands to it, written with
//! [`PcapWriter`] through a buffer. The buffer is flushed when the driver stops (and whenever it
//! fills); a write error stops the capture with one warning rather than the stack.

use std::io::{self, BufWriter, Write};
use std::time::SystemTime;

use crate::wire::PcapWriter;

/// Bytes buffered before the capture is written out.
const BUFFER: usize = 1 << 20;

pub(crate) struct Capture {
    writer: Option<PcapWriter<BufWriter<Box<dyn Write + Send>>>>,
}

impl Capture {
    /// Writes the pcap header to `sink` at once, so a sink that cannot be written fails here.
    pub(crate) fn new(sink: Box<dyn Write + Send>) -> io::Result<Self> {
        let mut writer = PcapWriter::new(BufWriter::with_capacity(BUFFER, sink))?;
        writer.flush()?;
        Ok(Capture {
            writer: Some(writer),
        })
    }

    /// Records one Ethernet frame as seen now.
    pub(crate) fn record(&mut self, frame: &[u8]) {
        let Some(writer) = &mut self.writer else {
            return;
        };
        if let Err(error) = writer.write_frame(SystemTime::now(), frame) {
            tracing::warn!(%error, "cannot write the pcap capture; capture stopped");
            self.writer = None;
        }
    }

    pub(crate) fn flush(&mut self) {
        let Some(writer) = &mut self.writer else {
            return;
        };
        if let Err(error) = writer.flush() {
            tracing::warn!(%error, "cannot write the pcap capture; capture stopped");
            self.writer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::runtime::{Stack, TcpListener, TcpStream};

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
        let server = Stack::builder()
            .backend(a)
            .address([198, 18, 0, 1].into())
            .capture(std::fs::File::create(&file.0).expect("creates the capture file"))
            .build()
            .expect("server stack");
        let client = Stack::builder()
            .backend(b)
            .address([198, 18, 0, 2].into())
            .build()
            .expect("client stack");
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
