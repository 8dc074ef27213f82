//! The same apps on tcpstack's own runtime over the in-memory link: nothing in them knows which
//! TCP carries them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tcpstack::apps::bench::{self, BenchConfig, BenchMode};
use tcpstack::apps::fetch::{fetch, hex};
use tcpstack::apps::http::pattern_sha256;
use tcpstack::apps::{echo, http};
use tcpstack::runtime::{Stack, TcpListener};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Two stacks on one in-memory link; the server side listens on `port`.
fn stacks(port: u16) -> (TcpListener, Stack, Stack) {
    let (a, b) = tcpstack::io::memory::pair();
    let server = Stack::builder()
        .backend(a)
        .address(SERVER)
        .build()
        .expect("server stack");
    let client = Stack::builder()
        .backend(b)
        .address(CLIENT)
        .build()
        .expect("client stack");
    let listener = TcpListener::bind(&server, SocketAddrV4::new(SERVER, port)).expect("bind");
    (listener, client, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bytes_over_tcpstack() {
    let (listener, connector, _server) = stacks(80);
    tokio::spawn(http::serve(listener));
    let url = format!("http://{SERVER}/bytes/1000000");
    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        fetch(&connector, &url, &mut tokio::io::sink()),
    )
    .await
    .expect("fetch within 30 s")
    .expect("fetch");
    assert_eq!(summary.status, 200);
    assert_eq!(summary.sha256, hex(&pattern_sha256(1_000_000)));
    assert_eq!(summary.pattern_matches, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_rr_and_crr_against_echo_over_tcpstack() {
    let (listener, connector, _server) = stacks(7);
    tokio::spawn(echo::serve_echo(listener));
    let connector = Arc::new(connector);
    for mode in [BenchMode::Rr, BenchMode::Crr, BenchMode::Bulk] {
        let config = BenchConfig {
            target: SocketAddr::V4(SocketAddrV4::new(SERVER, 7)),
            mode,
            conns: 2,
            duration: Duration::from_millis(300),
            size: None,
        };
        let report = bench::run(connector.clone(), &config)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(report.transactions > 0, "{mode}: {report}");
        assert_eq!(report.errors, 0, "{mode}: {report}");
    }
}

/// A minimal iperf3 client (the control protocol of esnet/iperf, as the stock client speaks
/// it) moving `bytes` on one stream, forward or reversed; returns the server's results.
async fn iperf3_exchange<C: tcpstack::apps::Connector>(
    connector: &C,
    server: SocketAddr,
    bytes: usize,
    reverse: bool,
) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const COOKIE: &[u8; 37] = b"tcpstackapps0123456789abcdefghijklmn\0";

    let mut ctrl = connector.connect(server).await.expect("control connection");
    ctrl.write_all(COOKIE).await.expect("cookie");
    assert_eq!(ctrl.read_i8().await.expect("state"), 9, "PARAM_EXCHANGE");
    let params = serde_json::json!({"tcp": true, "omit": 0, "time": 0, "num": bytes, "parallel": 1,
                                    "reverse": reverse, "len": 65536, "client_version": "3.12"});
    let params = serde_json::to_vec(&params).expect("JSON");
    ctrl.write_u32(params.len() as u32).await.expect("length");
    ctrl.write_all(&params).await.expect("parameters");
    assert_eq!(ctrl.read_i8().await.expect("state"), 10, "CREATE_STREAMS");
    let mut data = connector.connect(server).await.expect("data connection");
    data.write_all(COOKIE).await.expect("cookie");
    assert_eq!(ctrl.read_i8().await.expect("state"), 1, "TEST_START");
    assert_eq!(ctrl.read_i8().await.expect("state"), 2, "TEST_RUNNING");
    if reverse {
        let mut received = vec![0u8; bytes];
        data.read_exact(&mut received)
            .await
            .expect("the server's data");
    } else {
        data.write_all(&vec![7u8; bytes]).await.expect("data");
    }
    ctrl.write_i8(4).await.expect("TEST_END");
    assert_eq!(ctrl.read_i8().await.expect("state"), 13, "EXCHANGE_RESULTS");
    let ours = serde_json::to_vec(&serde_json::json!({"cpu_util_total": 0, "cpu_util_user": 0,
        "cpu_util_system": 0, "sender_has_retransmits": 0, "streams": []}))
    .expect("JSON");
    ctrl.write_u32(ours.len() as u32).await.expect("length");
    ctrl.write_all(&ours).await.expect("results");
    let len = ctrl.read_u32().await.expect("results length");
    let mut theirs = vec![0u8; len as usize];
    ctrl.read_exact(&mut theirs).await.expect("results");
    assert_eq!(ctrl.read_i8().await.expect("state"), 14, "DISPLAY_RESULTS");
    ctrl.write_i8(16).await.expect("IPERF_DONE");
    serde_json::from_slice(&theirs).expect("results JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iperf3_over_tcpstack() {
    let (listener, client, _server) = stacks(5201);
    tokio::spawn(tcpstack::apps::iperf3::serve(listener, Default::default()));
    let server = SocketAddr::V4(SocketAddrV4::new(SERVER, 5201));
    let exchange = async {
        let forward = iperf3_exchange(&client, server, 2_000_000, false).await;
        let reverse = iperf3_exchange(&client, server, 2_000_000, true).await;
        (forward, reverse)
    };
    let (forward, reverse) = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("within 60 s");
    assert!(
        forward["streams"][0]["bytes"].as_u64().unwrap_or(0) > 0,
        "{forward}"
    );
    assert_eq!(forward["sender_has_retransmits"], -1);
    assert!(
        reverse["streams"][0]["bytes"].as_u64().unwrap_or(0) >= 2_000_000,
        "{reverse}"
    );
}
