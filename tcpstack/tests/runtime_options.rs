//! TCP switches through the public API over an in-memory link: congestion control per stream
//! (Linux's TCP_CONGESTION) and per stack, and stacks that offer no SACK or no timestamps.

mod runtime_support;

use runtime_support::*;
use tcpstack::endpoint::EndpointConfig;
use tcpstack::io::memory;
use tcpstack::runtime::{
    render_connections, ConnectionInfo, Stack, StackBuilder, TcpListener, TcpStream,
};
use tcpstack::tcp::CongestionAlgorithm;

/// (client stream, accepted stream) between two fresh stacks on port 7.
async fn connected(server: &Stack, client: &Stack) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(server, server_addr(7)).expect("binds");
    let (stream, accepted) = within(10, async {
        tokio::join!(
            async {
                TcpStream::connect(client, server_addr(7))
                    .await
                    .expect("connects")
            },
            async { listener.accept().await.expect("accepts").0 }
        )
    })
    .await;
    (stream, accepted)
}

/// The second line `tcpstack ss` prints for the stack's one connection.
fn ss_details(stack: &Stack) -> String {
    let connections = stack.connections();
    assert_eq!(connections.len(), 1, "{connections:?}");
    let text = render_connections(&connections);
    text.lines()
        .nth(2)
        .expect("header, addresses, details")
        .to_owned()
}

fn info(stream: &TcpStream) -> ConnectionInfo {
    stream.info().expect("the connection is open")
}

fn builder(backend: memory::MemoryBackend, address: std::net::Ipv4Addr, seed: u64) -> StackBuilder {
    Stack::builder()
        .backend(backend)
        .address(address)
        .seed(seed)
}

#[tokio::test]
async fn a_stream_switched_to_newreno_reports_it_in_info_and_ss() {
    let (server, client) = stacks();
    let (stream, accepted) = connected(&server, &client).await;
    assert_eq!(stream.congestion().unwrap(), CongestionAlgorithm::Cubic);
    assert!(ss_details(&client).starts_with("\t ts sack cubic "));

    stream.set_congestion(CongestionAlgorithm::NewReno).unwrap();
    assert_eq!(stream.congestion().unwrap(), CongestionAlgorithm::NewReno);
    assert_eq!(info(&stream).stats.congestion, CongestionAlgorithm::NewReno);
    // ss names it as Linux does.
    let details = ss_details(&client);
    assert!(details.starts_with("\t ts sack reno "), "{details}");
    // The other end keeps the stack's default.
    assert_eq!(accepted.congestion().unwrap(), CongestionAlgorithm::Cubic);
    assert!(ss_details(&server).starts_with("\t ts sack cubic "));

    stream.set_congestion(CongestionAlgorithm::Cubic).unwrap();
    assert_eq!(info(&stream).stats.congestion, CongestionAlgorithm::Cubic);
}

#[tokio::test]
async fn a_stack_built_with_newreno_runs_it_on_every_connection() {
    let (a, b) = memory::pair();
    let server = builder(a, SERVER_IP, 1)
        .congestion(CongestionAlgorithm::NewReno)
        .build()
        .unwrap();
    let client = builder(b, CLIENT_IP, 2).build().unwrap();
    let (stream, accepted) = connected(&server, &client).await;
    assert_eq!(accepted.congestion().unwrap(), CongestionAlgorithm::NewReno);
    assert_eq!(
        info(&accepted).stats.congestion,
        CongestionAlgorithm::NewReno
    );
    assert_eq!(stream.congestion().unwrap(), CongestionAlgorithm::Cubic);
}

#[tokio::test]
async fn a_stack_built_without_sack_negotiates_none() {
    let (a, b) = memory::pair();
    // The switch holds whether it comes before or after a whole config.
    let server = builder(a, SERVER_IP, 1)
        .sack(false)
        .config(EndpointConfig::default())
        .build()
        .unwrap();
    let client = builder(b, CLIENT_IP, 2).build().unwrap();
    let (stream, accepted) = connected(&server, &client).await;
    // The client offered SACK-permitted; the server's SYN-ACK did not carry it (RFC 2018 §2).
    for (end, stack) in [(&stream, &client), (&accepted, &server)] {
        let stats = info(end).stats;
        assert!(!stats.sack, "{stats:?}");
        assert!(stats.timestamps, "{stats:?}");
        let details = ss_details(stack);
        assert!(details.starts_with("\t ts cubic "), "{details}");
    }
}

#[tokio::test]
async fn a_stack_built_without_timestamps_negotiates_none() {
    let (a, b) = memory::pair();
    let server = builder(a, SERVER_IP, 1).build().unwrap();
    let client = builder(b, CLIENT_IP, 2).timestamps(false).build().unwrap();
    let (stream, accepted) = connected(&server, &client).await;
    for (end, stack) in [(&stream, &client), (&accepted, &server)] {
        let info = info(end);
        assert!(!info.stats.timestamps, "{info:?}");
        assert!(info.stats.sack, "{info:?}");
        // No 12 bytes of timestamps per segment: the whole MSS is data.
        assert_eq!(info.mss, 1460, "{info:?}");
        let details = ss_details(stack);
        assert!(details.starts_with("\t sack cubic "), "{details}");
    }
}
