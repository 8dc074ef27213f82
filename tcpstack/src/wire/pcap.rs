//! Classic pcap capture files (the libpcap format `tcpdump -r` and `tshark -r` read):
//! LINKTYPE_ETHERNET, microsecond timestamps, snaplen 65535, little-endian headers.
//! The writer only formats; the caller owns the sink and supplies the time.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Magic number for microsecond-resolution files, written in the file's (little-endian) order.
pub const PCAP_MAGIC_MICROS: u32 = 0xa1b2_c3d4;
pub const PCAP_VERSION_MAJOR: u16 = 2;
pub const PCAP_VERSION_MINOR: u16 = 4;
pub const PCAP_SNAPLEN: u32 = 65535;
pub const LINKTYPE_ETHERNET: u32 = 1;

/// Writes a pcap global header on creation, then one record per frame.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the 24-byte global header to `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&PCAP_MAGIC_MICROS.to_le_bytes());
        header[4..6].copy_from_slice(&PCAP_VERSION_MAJOR.to_le_bytes());
        header[6..8].copy_from_slice(&PCAP_VERSION_MINOR.to_le_bytes());
        // thiszone (GMT offset) and sigfigs stay zero, as every modern writer leaves them.
        header[16..20].copy_from_slice(&PCAP_SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out })
    }

    /// Records `frame` (an Ethernet frame without FCS) as captured at `time`. Frames longer than
    /// the snaplen are cut to it, with their original length recorded.
    pub fn write_frame(&mut self, time: SystemTime, frame: &[u8]) -> io::Result<()> {
        // A clock before 1970 is recorded as the epoch; pcap's fields cannot express it.
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = u32::try_from(since_epoch.as_secs()).unwrap_or(u32::MAX);
        self.write_frame_at(secs, since_epoch.subsec_micros(), frame)
    }

    /// Like [`Self::write_frame`] with the time as seconds and microseconds since the epoch.
    pub fn write_frame_at(&mut self, secs: u32, usecs: u32, frame: &[u8]) -> io::Result<()> {
        let original_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let captured = &frame[..frame.len().min(PCAP_SNAPLEN as usize)];
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&secs.to_le_bytes());
        record[4..8].copy_from_slice(&usecs.min(999_999).to_le_bytes());
        record[8..12].copy_from_slice(&(captured.len() as u32).to_le_bytes());
        record[12..16].copy_from_slice(&original_len.to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(captured)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn global_and_record_headers_are_exact() {
        let mut writer = PcapWriter::new(Vec::new()).unwrap();
        let time = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        writer.write_frame(time, &[0xaa; 60]).unwrap();
        let bytes = writer.into_inner();
        #[rustfmt::skip]
        let expected_global = [
            0xd4, 0xc3, 0xb2, 0xa1, // magic, microseconds, little-endian
            0x02, 0x00, 0x04, 0x00, // version 2.4
            0, 0, 0, 0,             // thiszone
            0, 0, 0, 0,             // sigfigs
            0xff, 0xff, 0x00, 0x00, // snaplen 65535
            0x01, 0x00, 0x00, 0x00, // LINKTYPE_ETHERNET
        ];
        #[rustfmt::skip]
        let expected_record = [
            0x00, 0xf1, 0x53, 0x65, // 1700000000 s
            0x40, 0xe2, 0x01, 0x00, // 123456 us
            60, 0, 0, 0,            // captured length
            60, 0, 0, 0,            // original length
        ];
        assert_eq!(&bytes[..24], &expected_global);
        assert_eq!(&bytes[24..40], &expected_record);
        assert_eq!(&bytes[40..], &[0xaa; 60]);
    }

    #[test]
    fn frames_past_the_snaplen_are_cut() {
        let mut writer = PcapWriter::new(Vec::new()).unwrap();
        writer.write_frame_at(1, 2, &vec![0; 70_000]).unwrap();
        let bytes = writer.into_inner();
        assert_eq!(&bytes[32..36], &65535u32.to_le_bytes());
        assert_eq!(&bytes[36..40], &70_000u32.to_le_bytes());
        assert_eq!(bytes.len(), 24 + 16 + 65535);
    }
}
