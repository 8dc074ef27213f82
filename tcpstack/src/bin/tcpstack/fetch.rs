//! `tcpstack fetch URL`: one HTTP/1.1 GET over tcpstack's TCP (hyper on our `TcpStream`); the
//! body goes to stdout, a summary to stderr.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tcpstack::apps::fetch::fetch;
use tcpstack::apps::LatencyReport;

use crate::{link, LinkArgs};

/// Time for our FIN to be acknowledged once the body is in.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// What to get: http://IPV4[:PORT]/PATH.
    #[arg(value_name = "URL")]
    pub url: String,
    #[command(flatten)]
    pub link: LinkArgs,
}

pub async fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let link = link::open(&args.link, None)?;
    let started = Instant::now();
    let mut stdout = tokio::io::stdout();
    let fetched = fetch(&link.stack, &args.url, &mut stdout).await;
    let elapsed = started.elapsed();
    let handshake = link.stack.report().handshake.active;
    link.stack.shutdown(CLOSE_GRACE).await;
    let summary = fetched.with_context(|| format!("cannot fetch {}", args.url))?;
    eprintln!(
        "tcpstack fetch: HTTP {} {} bytes in {:.3} s, sha256 {}{}; handshake {}",
        summary.status,
        summary.body_bytes,
        elapsed.as_secs_f64(),
        summary.sha256,
        match summary.pattern_matches {
            Some(true) => ", the /bytes/N pattern matches",
            Some(false) => ", the /bytes/N pattern DOES NOT match",
            None => "",
        },
        handshake_micros(&handshake),
    );
    let ok = (200..300).contains(&summary.status) && summary.pattern_matches != Some(false);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The one handshake's duration, or `?` if it was not measured.
fn handshake_micros(report: &LatencyReport) -> String {
    if report.count == 0 {
        return "?".into();
    }
    tcpstack::apps::latency::Micros(report.max_us).to_string()
}
