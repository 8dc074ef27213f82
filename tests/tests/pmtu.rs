//! Path MTU discovery through a router (issue 11): A (tcpstack) and B (the kernel's TCP) are
//! routed through a third namespace whose link to B has an MTU of 1280, while B offers MSS 1460.
//! tcpstack's full-sized segments do not fit that hop; the router answers with ICMP
//! "fragmentation needed" (RFC 1191), and the echo must still come back whole, with tcpstack's
//! MSS lowered to what the hop carries. Before that, a forged "fragmentation needed" quoting a
//! sequence number outside the connection's flight, sent from the router's namespace, must
//! change nothing (RFC 5927 §4.1) and be counted.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tcpstack_integration::*;

const HOP_MTU: u32 = 1280;
/// 1280 less the IPv4 and TCP headers and the timestamps option the kernel negotiates.
const MSS_THROUGH_THE_HOP: f64 = 1228.0;
const BYTES: usize = 4 << 20;

backend_tests!(echo_crosses_a_1280_byte_hop_after_icmp);

fn echo_crosses_a_1280_byte_hop_after_icmp(backend: Backend) -> Result<()> {
    let lab = Lab::create(LabSpec::unique().routed(HOP_MTU))?;
    let router = lab
        .spec
        .ns_link
        .clone()
        .context("a routed lab has a router")?;
    let json = lab.dir.join("stats.json");
    let control = lab.control_socket();
    let mut server = lab.serve(
        backend,
        ECHO_PORT,
        &[
            "--app",
            "echo",
            "--control",
            &control.to_string_lossy(),
            "--stats-json",
            &json.to_string_lossy(),
            "--stats-interval",
            "1",
        ],
    )?;
    let stream = lab.peer_connect(lab.addr_a(), ECHO_PORT)?;
    let client = match stream.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        other => bail!("not IPv4: {other}"),
    };
    // Small exchanges fit the hop: no ICMP yet.
    ensure!(exchange(&stream, b"hello", false, 5)? == b"hello");
    let before = ss_entry(&lab, client)?;
    let mss_before = before.number("mss")?;
    ensure!(mss_before > MSS_THROUGH_THE_HOP, "{before:?}");

    // The forgery: the right addresses and ports, a sequence number nowhere near the flight,
    // and a tiny MTU that would cripple the connection if believed.
    forge_fragmentation_needed(&lab, &router, client, 0x1234_5678, 576)?;
    ensure!(exchange(&stream, b"still here", false, 10)? == b"still here");
    let after_forgery = ss_entry(&lab, client)?;
    ensure!(
        after_forgery.number("mss")? == mss_before,
        "a forged ICMP changed the MSS: {after_forgery:?}"
    );
    let stats = icmp_stats_once_received(&json)?;
    ensure!(
        number(&stats, "/out_of_window")? == 1 && number(&stats, "/path_mtu_lowered")? == 0,
        "the forgery should be counted out of window and nothing else: {stats}"
    );

    // The real thing: full-sized segments meet the 1280-byte hop.
    let data = pattern(BYTES, 7);
    let echoed = exchange(&stream, &data, false, BYTES)?;
    ensure!(echoed == data, "the echo through the hop differs");
    let through = ss_entry(&lab, client)?;
    ensure!(
        through.number("mss")? == MSS_THROUGH_THE_HOP,
        "the MSS did not come down to the hop's: {through:?}"
    );

    server.assert_running()?;
    drop(stream);
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    let stats = read_json(&json)?;
    let lowered = number(&stats, "/endpoint/icmp/path_mtu_lowered")?;
    ensure!(lowered >= 1, "no path MTU reduction counted: {stats}");
    println!(
        "{backend}: {BYTES} bytes echoed across a {HOP_MTU}-byte hop; ICMP counters {}",
        stats["endpoint"]["icmp"]
    );
    Ok(())
}

/// The endpoint's ICMP counters from `--stats-json`, once they count a received message
/// (the file is rewritten every second).
fn icmp_stats_once_received(json: &std::path::Path) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(stats) = read_json(json) {
            let icmp = stats["endpoint"]["icmp"].clone();
            if number(&icmp, "/received").is_ok_and(|n| n > 0) {
                return Ok(icmp);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no ICMP counted in {} within 10 s",
            json.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ss_entry(lab: &Lab, client: SocketAddrV4) -> Result<SsEntry> {
    let entries = lab.ss()?;
    entries
        .into_iter()
        .find(|e| e.peer == client)
        .with_context(|| format!("no connection from {client} in tcpstack ss"))
}

/// Sends, from the router's namespace to tcpstack, an ICMP "fragmentation needed" with
/// next-hop MTU `mtu` quoting a segment from tcpstack's echo port to `client` with sequence
/// number `seq`.
fn forge_fragmentation_needed(
    lab: &Lab,
    router: &str,
    client: SocketAddrV4,
    seq: u32,
    mtu: u16,
) -> Result<()> {
    let script = format!(
        r#"
import socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0x4000, 64, 6, 0,
                 socket.inet_aton("{us}"), socket.inet_aton("{peer}"))
tcp = struct.pack("!HHI", {us_port}, {peer_port}, {seq})
body = struct.pack("!BBHHH", 3, 4, 0, 0, {mtu}) + ip + tcp
body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(body, ("{us}", 0))
"#,
        us = lab.addr_a(),
        peer = client.ip(),
        us_port = ECHO_PORT,
        peer_port = client.port(),
    );
    lab.exec_in(router, &["python3", "-c", &script])?;
    Ok(())
}
