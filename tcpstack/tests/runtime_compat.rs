//! Existing tokio code runs unchanged on tcpstack's streams: tokio-util codecs and hyper.

mod runtime_support;

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use runtime_support::*;
use tcpstack::runtime::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LinesCodec};

#[tokio::test]
async fn lines_codec_over_framed() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(4000)).unwrap();
    within(20, async {
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut lines = Framed::new(stream, LinesCodec::new());
            while let Some(Ok(line)) = lines.next().await {
                lines.send(line.to_uppercase()).await.unwrap();
            }
        });
        let stream = TcpStream::connect(&client, server_addr(4000))
            .await
            .unwrap();
        let mut lines = Framed::new(stream, LinesCodec::new());
        for word in ["hello", "tcp", "stack"] {
            lines.send(word).await.unwrap();
        }
        for word in ["HELLO", "TCP", "STACK"] {
            assert_eq!(lines.next().await.unwrap().unwrap(), word);
        }
    })
    .await;
}

async fn handle(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let size: usize = request
        .uri()
        .path()
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(Response::new(Full::new(Bytes::from(pattern(size, 9)))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_server_and_client_keep_alive() {
    let (server, client) = stacks();
    let listener = TcpListener::bind(&server, server_addr(8080)).unwrap();
    within(60, async {
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                        .await;
                });
            }
        });
        let stream = TcpStream::connect(&client, server_addr(8080))
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        // Several requests on one connection: HTTP/1.1 keep-alive.
        for size in [0usize, 10, 100_000, 1_000_000] {
            let request = Request::get(format!("http://198.18.0.1:8080/bytes/{size}"))
                .header("host", "198.18.0.1")
                .body(Full::new(Bytes::new()))
                .unwrap();
            // The connection task must see the previous exchange finished before the next one.
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                digest(&body),
                digest(&pattern(size, 9)),
                "GET /bytes/{size}"
            );
        }
    })
    .await;
    assert_eq!(server.stats().accepted, 1);
}
