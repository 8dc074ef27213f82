//! `tcpstack connect ADDR:PORT`: like `nc`. Stdin goes to the connection and the connection to
//! stdout; stdin's EOF half-closes (or, with `--abort-at-eof`, aborts), and the command ends
//! when the peer closes.

use std::io::ErrorKind;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tcpstack::runtime::{Stack, TcpStream};
use tokio::io::AsyncWriteExt;

use crate::{link, ConnectArgs};

/// Time for our FIN to be acknowledged after the peer closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let link = link::open(&args.link, None)?;
    let outcome = talk(&link.stack, &args).await;
    // Whatever happened, the backend closes (iptables rules removed) before `run` returns.
    link.stack.shutdown(CLOSE_GRACE).await;
    outcome
}

async fn talk(stack: &Stack, args: &ConnectArgs) -> anyhow::Result<ExitCode> {
    let stream = match TcpStream::connect(stack, args.remote).await {
        Ok(stream) => stream,
        Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
            eprintln!("tcpstack: connection refused by {}", args.remote);
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot connect to {}", args.remote))
        }
    };
    let (mut from_peer, mut to_peer) = stream.into_split();
    let abort_at_eof = args.abort_at_eof;
    let upload = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let copied = tokio::io::copy(&mut stdin, &mut to_peer).await;
        if abort_at_eof {
            // RST; the read half then sees the connection end.
            to_peer.abort();
            return copied.map(drop);
        }
        // EOF on stdin: FIN, and keep reading.
        let closed = to_peer.shutdown().await;
        copied.and(closed)
    });
    let mut stdout = tokio::io::stdout();
    let download = tokio::io::copy(&mut from_peer, &mut stdout).await;
    stdout.flush().await.context("cannot write to stdout")?;
    // The peer closed: stdin no longer matters (tokio's stdin reader cannot be interrupted, so
    // the task is left behind rather than awaited).
    upload.abort();
    match download {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {
            eprintln!("tcpstack: connection reset by {}", args.remote);
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error).context("the connection failed"),
    }
}
