//! The user-facing tools (issue 4): `serve --pcap --stats-json --stats-interval` under stock
//! iperf3, curl and wrk clients, `tcpstack fetch` against a kernel `python3 -m http.server`, and
//! `tcpstack bench` (our stack as the client) against a kernel echo server.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tcpstack_integration::*;

backend_tests!(
    echo_capture_reads_back_and_stats_count_every_handshake,
    iperf3_with_stats_json,
    stock_iperf3_modes,
    curl_with_stats_json,
    curl_fetches_ten_megabytes_intact,
    fetch_from_a_kernel_http_server,
    bench_rr_against_a_kernel_echo_server,
    ss_lists_a_kernel_peers_connection,
    wrk_against_the_http_app,
    iperf3_reverse_reports_our_retransmits,
);

const HTTP_PORT: u16 = 8080;
const IPERF3_PORT: u16 = 5201;

/// `tcpdump -n -S -r FILE`; a missing tcpdump fails the test.
fn tcpdump_read(file: &Path) -> Result<String> {
    let mut cmd = std::process::Command::new("tcpdump");
    cmd.args(["-n", "-S", "-r"]).arg(file);
    run(&mut cmd).context("tcpdump is required to read the capture back")
}

/// `tshark -n -r FILE`; a missing tshark fails the test.
fn tshark_read(file: &Path) -> Result<String> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(file);
    run(&mut cmd).context("tshark is required to read the capture back")
}

/// Ensures the capture shows a client SYN to `server`, its SYN-ACK and the final ACK.
fn ensure_handshake_in(capture: &str, client: &str, server: &str) -> Result<()> {
    let syn = format!("> {server}: Flags [S],");
    let syn_ack = format!("IP {server} > ");
    ensure!(
        capture
            .lines()
            .any(|l| l.contains(&format!("IP {client}.")) && l.contains(&syn)),
        "no SYN from {client} to {server}:\n{capture}"
    );
    ensure!(
        capture
            .lines()
            .any(|l| l.contains(&syn_ack) && l.contains("Flags [S.]")),
        "no SYN-ACK from {server}:\n{capture}"
    );
    ensure!(
        capture
            .lines()
            .any(|l| l.contains(&format!("> {server}: Flags [.]"))),
        "no ACK to {server}:\n{capture}"
    );
    Ok(())
}

fn echo_capture_reads_back_and_stats_count_every_handshake(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let pcap = lab.dir.join("serve.pcap");
    let json = lab.dir.join("stats.json");
    let server = lab.serve(
        backend,
        ECHO_PORT,
        &[
            "--app",
            "echo",
            "--pcap",
            &pcap.to_string_lossy(),
            "--stats-json",
            &json.to_string_lossy(),
            "--stats-interval",
            "1",
        ],
    )?;
    const CONNECTIONS: u64 = 3;
    for i in 0..CONNECTIONS {
        let stream = lab.peer_connect(lab.addr_a(), ECHO_PORT)?;
        let data = pattern(1000, i);
        let echoed = exchange(&stream, &data, true, usize::MAX)?;
        ensure!(echoed == data, "echo {i} differs");
    }
    // The interval writes the file while serving, too.
    ensure!(
        wait_until(Duration::from_secs(5), || Ok(read_json(&json)
            .and_then(|j| number(&j, "/handshake/passive/count"))
            .is_ok_and(|n| n == CONNECTIONS)))?,
        "no interval statistics with {CONNECTIONS} handshakes in {}",
        json.display()
    );
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains(&format!(
            "handshakes (SYN received → ESTABLISHED): count {CONNECTIONS} "
        )),
        "no handshake line in serve's stderr:\n{stderr}"
    );

    let stats = read_json(&json)?;
    ensure!(number(&stats, "/handshake/passive/count")? == CONNECTIONS);
    ensure!(number(&stats, "/runtime/accepted")? == CONNECTIONS);
    ensure!(number(&stats, "/endpoint/connections_established")? == CONNECTIONS);
    ensure!(number(&stats, "/handshake/passive/max_us")? > 0);

    let capture = tcpdump_read(&pcap)?;
    let server_addr = format!("{}.{ECHO_PORT}", lab.addr_a());
    ensure_handshake_in(&capture, &lab.addr_b().to_string(), &server_addr)?;
    let syns = capture
        .lines()
        .filter(|l| l.contains(&format!("> {server_addr}: Flags [S],")))
        .count();
    ensure!(syns == CONNECTIONS as usize, "{syns} SYNs:\n{capture}");
    let tshark = tshark_read(&pcap)?;
    ensure!(
        tshark.lines().count() == capture.lines().count(),
        "tshark and tcpdump disagree:\n{tshark}\n{capture}"
    );
    Ok(())
}

fn iperf3_with_stats_json(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let json = lab.dir.join("stats.json");
    let server = lab.serve(
        backend,
        IPERF3_PORT,
        &["--app", "iperf3", "--stats-json", &json.to_string_lossy()],
    )?;
    let addr = lab.addr_a().to_string();
    let port = IPERF3_PORT.to_string();
    let report = lab.exec_in(
        lab.ns_b(),
        &["iperf3", "-c", &addr, "-p", &port, "-t", "2", "-J"],
    )?;
    let report: Value = serde_json::from_str(&report).context("iperf3 -J output")?;
    let bytes = report
        .pointer("/end/sum_received/bytes")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    ensure!(bytes > 0, "iperf3 moved no bytes: {report}");
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    let stats = read_json(&json)?;
    // The control connection and one data stream.
    ensure!(number(&stats, "/handshake/passive/count")? == 2, "{stats}");
    ensure!(number(&stats, "/runtime/accepted")? == 2, "{stats}");
    Ok(())
}

/// Issue 4's modes of an unmodified `iperf3 -c`, one after the other against one server (which
/// must go back to accepting after each test): exit status 0 and bytes in the `-J` report.
fn stock_iperf3_modes(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let server = lab.serve(backend, IPERF3_PORT, &["--app", "iperf3"])?;
    let addr = lab.addr_a().to_string();
    let port = IPERF3_PORT.to_string();
    for mode in [&[][..], &["-P", "4"], &["-R"], &["--bidir"]] {
        let mut args = vec!["iperf3", "-c", &addr, "-p", &port, "-t", "3", "-J"];
        args.extend_from_slice(mode);
        let report = lab
            .exec_in(lab.ns_b(), &args)
            .with_context(|| format!("iperf3 {mode:?}"))?;
        let report: Value =
            serde_json::from_str(&report).with_context(|| format!("iperf3 {mode:?} -J output"))?;
        let received = number(&report, "/end/sum_received/bytes")?;
        let sent = number(&report, "/end/sum_sent/bytes")?;
        ensure!(
            received > 0 && sent > 0,
            "iperf3 {mode:?} moved no bytes: {report}"
        );
        if mode == ["--bidir"] {
            let reverse = number(&report, "/end/sum_received_bidir_reverse/bytes")?;
            ensure!(reverse > 0, "iperf3 --bidir moved nothing back: {report}");
        }
    }
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    Ok(())
}

/// Through 2 % loss, stock `iperf3 -R` (tcpstack sends) shows tcpstack's retransmissions: the
/// server's results carry each stream's count, which the client sums into `sum_sent`.
fn iperf3_reverse_reports_our_retransmits(backend: Backend) -> Result<()> {
    let lab = Lab::lossy()?;
    let server = lab.serve(backend, IPERF3_PORT, &["--app", "iperf3"])?;
    let _loss = lab.add_tcp_port_loss(IPERF3_PORT, 0.02)?;
    let addr = lab.addr_a().to_string();
    let port = IPERF3_PORT.to_string();
    let args = ["iperf3", "-c", &addr, "-p", &port, "-t", "3", "-R", "-J"];
    let report = lab.exec_in(lab.ns_b(), &args).context("iperf3 -R")?;
    let report: Value = serde_json::from_str(&report).context("iperf3 -R -J output")?;
    let sent = number(&report, "/end/sum_sent/bytes")?;
    let retransmits = number(&report, "/end/sum_sent/retransmits")?;
    let stream_retransmits = number(&report, "/end/streams/0/sender/retransmits")?;
    ensure!(sent > 0, "iperf3 -R moved no bytes: {report}");
    ensure!(
        retransmits > 0 && retransmits == stream_retransmits,
        "2 % loss, yet iperf3 shows {retransmits} retransmits in sum_sent and \
         {stream_retransmits} for the stream: {report}"
    );
    let dropped = dropped_packets(lab.loss_ns()?)?;
    ensure!(dropped > 0, "the loss rule dropped nothing");
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    Ok(())
}

/// curl downloads `/bytes/10000000` and its SHA-256 is the pattern's.
fn curl_fetches_ten_megabytes_intact(backend: Backend) -> Result<()> {
    const LEN: u64 = 10_000_000;
    let lab = Lab::new()?;
    let server = lab.serve(backend, HTTP_PORT, &["--app", "http"])?;
    let url = format!("http://{}:{HTTP_PORT}/bytes/{LEN}", lab.addr_a());
    let script = format!("curl -sS --fail '{url}' | sha256sum");
    let digest = lab.exec_in(lab.ns_b(), &["sh", "-c", &script])?;
    let expected = tcpstack::apps::http::pattern_sha256(LEN)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    ensure!(
        digest.split_whitespace().next() == Some(expected.as_str()),
        "curl's body has digest {digest}, the pattern {expected}"
    );
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    Ok(())
}

fn curl_with_stats_json(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let json = lab.dir.join("stats.json");
    let server = lab.serve(
        backend,
        HTTP_PORT,
        &["--app", "http", "--stats-json", &json.to_string_lossy()],
    )?;
    let url = format!("http://{}:{HTTP_PORT}/bytes/100000", lab.addr_a());
    let size = lab.exec_in(
        lab.ns_b(),
        &[
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ],
    )?;
    ensure!(size.trim() == "100000", "curl got {size} bytes");
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    let stats = read_json(&json)?;
    ensure!(number(&stats, "/handshake/passive/count")? == 1, "{stats}");
    Ok(())
}

fn fetch_from_a_kernel_http_server(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www)?;
    let page: String = (0..5000)
        .map(|i| format!("line {i} of the page\n"))
        .collect();
    std::fs::write(www.join("page.txt"), &page)?;
    let addr_b = lab.addr_b().to_string();
    let port = HTTP_PORT.to_string();
    let mut http = lab.spawn_in(
        lab.ns_b(),
        &[
            "python3",
            "-u",
            "-m",
            "http.server",
            &port,
            "--bind",
            &addr_b,
            "--directory",
            &www.to_string_lossy(),
        ],
    )?;
    http.wait_for_stdout("Serving HTTP", Duration::from_secs(10))?;

    let pcap = lab.dir.join("fetch.pcap");
    let url = format!("http://{addr_b}:{HTTP_PORT}/page.txt");
    let mut cmd = lab.tcpstack(&[
        "fetch",
        &url,
        "--iface",
        &lab.spec.if_a,
        "--backend",
        backend.as_str(),
        "--pcap",
        &pcap.to_string_lossy(),
    ]);
    let body = run(&mut cmd)?;
    ensure!(
        body == page,
        "fetched {} bytes, the page has {}",
        body.len(),
        page.len()
    );
    let capture = tcpdump_read(&pcap)?;
    ensure_handshake_in(
        &capture,
        &lab.addr_a().to_string(),
        &format!("{addr_b}.{HTTP_PORT}"),
    )
}

fn bench_rr_against_a_kernel_echo_server(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let _echo = EchoServer::start(lab.peer_listen(ECHO_PORT)?)?;
    let target = format!("{}:{ECHO_PORT}", lab.addr_b());
    let report_file = lab.dir.join("bench.json");
    for mode in ["rr", "crr"] {
        let mut cmd = lab.tcpstack(&[
            "bench",
            "--connect",
            &target,
            "--mode",
            mode,
            "--conns",
            "2",
            "--duration",
            "1",
            "--iface",
            &lab.spec.if_a,
            "--backend",
            backend.as_str(),
            "--json",
            &report_file.to_string_lossy(),
        ]);
        run(&mut cmd)?;
        let report = read_json(&report_file)?;
        ensure!(number(&report, "/transactions")? > 0, "{report}");
        ensure!(number(&report, "/errors")? == 0, "{report}");
        ensure!(number(&report, "/latency/count")? > 0, "{report}");
        if mode == "crr" {
            ensure!(number(&report, "/connect_latency/count")? > 0, "{report}");
        }
    }
    Ok(())
}

/// `tcpstack ss` asks a running echo server through its control socket: the kernel peer's
/// connection is listed as ESTAB with the bytes it echoed and plausible RTT, MSS and window
/// figures; once the server is stopped the socket is gone and ss says no server answers there.
fn ss_lists_a_kernel_peers_connection(backend: Backend) -> Result<()> {
    const BYTES: usize = 100_000;
    let lab = Lab::new()?;
    let mut server = lab.serve_echo_with_control(backend, ECHO_PORT)?;
    let stream = lab.peer_connect(lab.addr_a(), ECHO_PORT)?;
    let client = match stream.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        other => anyhow::bail!("not IPv4: {other}"),
    };
    let data = pattern(BYTES, 41);
    ensure!(
        exchange(&stream, &data, false, BYTES)? == data,
        "the echo differs"
    );

    let entries = lab.ss()?;
    let entry = entries
        .iter()
        .find(|e| e.peer == client)
        .with_context(|| format!("no connection from {client} in {entries:?}"))?;
    ensure!(
        entry.state == "ESTAB" && entry.local == server.listen,
        "{entry:?}"
    );
    ensure!(entry.number("bytes_received")? == BYTES as f64, "{entry:?}");
    ensure!(entry.number("bytes_sent")? >= BYTES as f64, "{entry:?}");
    let mss = entry.number("mss")?;
    ensure!((536.0..=1460.0).contains(&mss), "mss {mss}: {entry:?}");
    ensure!(entry.number("cwnd")? >= 2.0, "{entry:?}");
    let rtt_ms = entry.number("rtt")?;
    ensure!(rtt_ms > 0.0 && rtt_ms < 200.0, "rtt {rtt_ms} ms: {entry:?}");
    ensure!(entry.number("rto")? >= 200.0, "{entry:?}");
    ensure!(
        entry.number("segs_in")? >= (BYTES / 1460) as f64,
        "{entry:?}"
    );
    ensure!(
        ["ts", "sack"]
            .iter()
            .all(|o| entry.words.iter().any(|w| w == o))
            && entry.fields.contains_key("wscale"),
        "the kernel offers timestamps, SACK and window scaling: {entry:?}"
    );
    println!("{backend}: tcpstack ss lists {entry:?}");

    server.assert_running()?;
    drop(stream);
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    let control = lab.control_socket();
    ensure!(!control.exists(), "the control socket outlived the server");
    let gone = lab
        .tcpstack(&["ss", "--control", &control.to_string_lossy()])
        .output()?;
    let stderr = String::from_utf8_lossy(&gone.stderr);
    ensure!(
        !gone.status.success()
            && stderr.contains(&control.display().to_string())
            && stderr.contains("tcpstack serve"),
        "ss without a server: {} {stderr}",
        gone.status
    );
    Ok(())
}

/// The load `cargo xtask run` suggests: wrk with 32 connections on two threads (for two
/// seconds, not five) against `serve --app http`. It must complete requests with no socket
/// error (connect, read, write, timeout) and no response outside 2xx/3xx; the rate is the
/// benchmark's business.
fn wrk_against_the_http_app(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let server = lab.serve(backend, HTTP_PORT, &["--app", "http"])?;
    let url = format!("http://{}:{HTTP_PORT}/", lab.addr_a());
    // A generous timeout: a loaded CI machine may be slow, which is not an error here.
    let report = lab.exec_in(
        lab.ns_b(),
        &[
            "wrk",
            "-t",
            "2",
            "-c",
            "16",
            "-d",
            "2s",
            "--timeout",
            "10s",
            &url,
        ],
    )?;
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.parse()))
        .with_context(|| format!("no `requests in` line in wrk's report:\n{report}"))?
        .with_context(|| format!("wrk's request count:\n{report}"))?;
    ensure!(requests > 0, "wrk completed no request:\n{report}");
    ensure!(
        !report.contains("Socket errors"),
        "wrk saw socket errors:\n{report}"
    );
    ensure!(
        !report.contains("Non-2xx or 3xx responses"),
        "wrk got error responses:\n{report}"
    );
    println!("{backend}: wrk completed {requests} requests without errors");
    let out = server.stop()?;
    ensure!(out.status.success(), "serve exited with {}", out.status);
    Ok(())
}
