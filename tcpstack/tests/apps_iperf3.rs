//! The iperf3 server app against the stock Debian `iperf3` client, over the kernel's TCP on
//! 127.0.0.1 (the same app runs on tcpstack's own streams in the namespace tests).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tcpstack::apps::iperf3::{self, Iperf3Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Paces the client so that tests running side by side on a small machine stay quick.
const RATE: &str = "500M";

fn require_iperf3() {
    match Command::new("iperf3").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "the iperf3 client is missing: install the Debian package (`apt-get install iperf3`; \
             `cargo xtask test` installs it)"
        ),
    }
}

async fn start_server(config: Iperf3Config) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(iperf3::serve(listener, config));
    addr
}

/// Runs `iperf3 -c ADDR -p PORT -J ARGS`, checks its exit status and returns its JSON.
async fn iperf3_client(addr: SocketAddr, args: &[&str]) -> Value {
    require_iperf3();
    let mut command = tokio::process::Command::new("iperf3");
    command
        .args([
            "-c",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-J",
        ])
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(40), command.output())
        .await
        .expect("iperf3 finished within 40 s")
        .expect("iperf3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "iperf3 {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_str(&stdout).expect("iperf3 -J prints JSON");
    assert!(
        json.get("error").is_none(),
        "iperf3 {args:?} reported an error: {}",
        json["error"]
    );
    json
}

fn bytes(json: &Value, sum: &str) -> u64 {
    json["end"][sum]["bytes"]
        .as_f64()
        .unwrap_or_else(|| panic!("no end.{sum}.bytes in {}", json["end"])) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_two_seconds() {
    let addr = start_server(Iperf3Config::default()).await;
    let json = iperf3_client(addr, &["-t", "2", "-b", RATE]).await;
    assert!(bytes(&json, "sum_sent") > 0);
    assert!(bytes(&json, "sum_received") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omitted_seconds_are_not_counted() {
    let addr = start_server(Iperf3Config::default()).await;
    let json = iperf3_client(addr, &["-t", "1", "-O", "1", "-b", "100M"]).await;
    // Our receiver reset its count after the omitted second: about one second of data, not two.
    let received = bytes(&json, "sum_received") as f64;
    let sent = bytes(&json, "sum_sent") as f64;
    assert!(
        received > 0.0 && received < 1.5 * sent,
        "received {received}, sent {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_is_told_the_server_is_busy() {
    require_iperf3();
    let addr = start_server(Iperf3Config::default()).await;
    let first = tokio::spawn(iperf3_client(addr, &["-t", "3", "-b", "10M"]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let output = tokio::process::Command::new("iperf3")
        .args([
            "-c",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-J",
            "-t",
            "1",
        ])
        .output()
        .await
        .expect("iperf3 runs");
    let json: Value = serde_json::from_slice(&output.stdout).expect("iperf3 -J prints JSON");
    let error = json["error"].as_str().unwrap_or_default();
    assert!(error.contains("busy"), "expected a busy error, got {json}");
    let json = first.await.expect("first client");
    assert!(bytes(&json, "sum_received") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_parallel_streams() {
    let addr = start_server(Iperf3Config::default()).await;
    let json = iperf3_client(addr, &["-t", "2", "-P", "4", "-b", RATE]).await;
    assert!(bytes(&json, "sum_received") > 0);
    let streams = json["end"]["streams"].as_array().expect("end.streams");
    assert_eq!(streams.len(), 4);
    for stream in streams {
        assert!(
            stream["receiver"]["bytes"].as_f64().unwrap_or(0.0) > 0.0,
            "{stream}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_mode_server_sends() {
    let addr = start_server(Iperf3Config::default()).await;
    let json = iperf3_client(addr, &["-t", "2", "-R", "-l", "64K"]).await;
    // In -R the client receives: sum_sent is what our server reports it sent.
    assert!(bytes(&json, "sum_sent") > 0);
    assert!(bytes(&json, "sum_received") > 0);
    // Our kernel-TCP streams know their retransmit counts, and the client shows them.
    assert!(
        json["end"]["sum_sent"].get("retransmits").is_some(),
        "{}",
        json["end"]["sum_sent"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional() {
    let addr = start_server(Iperf3Config::default()).await;
    let json = iperf3_client(addr, &["-t", "2", "--bidir", "-b", RATE]).await;
    for sum in [
        "sum_sent",
        "sum_received",
        "sum_sent_bidir_reverse",
        "sum_received_bidir_reverse",
    ] {
        assert!(bytes(&json, sum) > 0, "{sum}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_limit_forward_and_reverse() {
    let addr = start_server(Iperf3Config::default()).await;
    let json = iperf3_client(addr, &["-n", "10M"]).await;
    assert!(bytes(&json, "sum_sent") >= 10 * 1024 * 1024);
    assert!(bytes(&json, "sum_received") > 0);
    let json = iperf3_client(addr, &["-n", "10M", "-R"]).await;
    assert!(bytes(&json, "sum_received") >= 10 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_limit_and_block_length() {
    let addr = start_server(Iperf3Config::default()).await;
    let json = iperf3_client(addr, &["-k", "100", "-l", "16K", "-R"]).await;
    assert!(bytes(&json, "sum_received") >= 100 * 16 * 1024);
}

const COOKIE: &[u8; 37] = b"abcdefghijklmnopqrstuvwxyz0123456789\0";

/// Opens a control connection and reads the first state byte the server sends.
async fn control_connection(addr: SocketAddr) -> (TcpStream, i8) {
    let mut ctrl = TcpStream::connect(addr).await.expect("connect");
    ctrl.write_all(COOKIE).await.expect("send cookie");
    let state = ctrl.read_i8().await.expect("state byte");
    (ctrl, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_after_its_cookie_does_not_wedge_the_server() {
    let addr = start_server(Iperf3Config::default()).await;
    let (ctrl, state) = control_connection(addr).await;
    assert_eq!(state, 9, "PARAM_EXCHANGE");
    drop(ctrl);
    let json = iperf3_client(addr, &["-n", "1M"]).await;
    assert!(bytes(&json, "sum_received") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_times_out_and_garbage_is_rejected() {
    let config = Iperf3Config {
        step_timeout: Duration::from_millis(500),
        ..Iperf3Config::default()
    };
    let addr = start_server(config).await;

    // Connected but silent after the cookie: the server gives up after its step timeout.
    let (_silent, state) = control_connection(addr).await;
    assert_eq!(state, 9);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Parameters that are not JSON end the test at once.
    let (mut garbage, state) = control_connection(addr).await;
    assert_eq!(state, 9);
    garbage
        .write_all(&[0, 0, 0, 5, b'{', b'{', b'{', 1, 2])
        .await
        .expect("send garbage");
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest).await;

    let json = iperf3_client(addr, &["-n", "1M"]).await;
    assert!(bytes(&json, "sum_received") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_test_does_not_wedge_the_server() {
    let addr = start_server(Iperf3Config::default()).await;
    let (mut ctrl, state) = control_connection(addr).await;
    assert_eq!(state, 9);
    let params = br#"{"tcp":true,"omit":0,"time":30,"parallel":1,"len":131072}"#;
    ctrl.write_all(&(params.len() as u32).to_be_bytes())
        .await
        .expect("length");
    ctrl.write_all(params).await.expect("parameters");
    assert_eq!(ctrl.read_i8().await.expect("state"), 10, "CREATE_STREAMS");

    // A data stream with the wrong cookie is turned away; the right one is taken.
    let mut stranger = TcpStream::connect(addr).await.expect("connect");
    stranger
        .write_all(b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\0")
        .await
        .expect("cookie");
    assert_eq!(
        stranger.read_i8().await.expect("answer"),
        -1,
        "ACCESS_DENIED"
    );

    let mut data = TcpStream::connect(addr).await.expect("connect");
    data.write_all(COOKIE).await.expect("cookie");
    assert_eq!(ctrl.read_i8().await.expect("state"), 1, "TEST_START");
    assert_eq!(ctrl.read_i8().await.expect("state"), 2, "TEST_RUNNING");
    data.write_all(&[0u8; 100_000]).await.expect("data");

    // While the test runs, another client is told the server is busy.
    let (_busy, state) = control_connection(addr).await;
    assert_eq!(state, -1, "ACCESS_DENIED");

    drop(ctrl);
    drop(data);
    let json = iperf3_client(addr, &["-n", "1M", "-R"]).await;
    assert!(bytes(&json, "sum_received") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_is_refused_with_a_server_error() {
    let addr = start_server(Iperf3Config::default()).await;
    let (mut ctrl, _) = control_connection(addr).await;
    let params = br#"{"udp":true,"time":1,"parallel":1}"#;
    ctrl.write_all(&(params.len() as u32).to_be_bytes())
        .await
        .expect("length");
    ctrl.write_all(params).await.expect("parameters");
    assert_eq!(ctrl.read_i8().await.expect("state"), -2, "SERVER_ERROR");
    assert_eq!(ctrl.read_i32().await.expect("i_errno"), 13, "IEUNIMP");
}
