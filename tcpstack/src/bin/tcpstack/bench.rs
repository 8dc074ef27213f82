//! `tcpstack bench --connect ADDR:PORT`: load against any TCP server with tcpstack as the client,
//! or with the kernel's TCP (`--backend kernel`, `--kernel`) to compare the clients as well.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tcpstack::apps::bench::{self, BenchConfig, BenchMode, BenchReport};
use tcpstack::apps::TokioConnector;

use crate::{link, BackendKind, LinkArgs, XdpModeArg};

/// Time for the last connections to finish closing after the run.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The server to load.
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: SocketAddrV4,
    /// bulk: throughput; rr: request/response transactions on open connections; crr: connect,
    /// request, response, close.
    #[arg(long, value_enum)]
    pub mode: BenchMode,
    /// Concurrent connections (crr: concurrent workers).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub conns: usize,
    /// Length of the run in seconds.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes per write (bulk, default 131072) or per request and response (rr, crr; default 1).
    #[arg(long, value_name = "B")]
    pub size: Option<usize>,
    /// Writes the report as JSON to FILE, or to stdout without FILE (the table then goes to stderr).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<PathBuf>,
    /// The network interface to use (not with the kernel backend).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// The local IPv4 address [default: the interface's first IPv4 address].
    #[arg(long, value_name = "IPV4")]
    pub addr: Option<std::net::Ipv4Addr>,
    /// Which TCP the client uses.
    #[arg(long, value_enum, default_value_t = ClientBackend::Xdp)]
    pub backend: ClientBackend,
    /// Same as `--backend kernel`.
    #[arg(long)]
    pub kernel: bool,
    /// How the XDP program is attached (xdp backend only).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// AF_XDP sockets to open, on queues 0..N [default: every receive queue].
    #[arg(long, value_name = "N")]
    pub queues: Option<u32>,
    /// Writes every frame received and sent to this pcap file (not with the kernel backend).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Microseconds tcpstack keeps polling its link after the last packet (xdp and raw
    /// backends; see `serve --busy-poll`).
    #[arg(long, value_name = "US", default_value_t = link::DEFAULT_BUSY_POLL_US,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub busy_poll: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBackend {
    /// tcpstack over AF_XDP.
    Xdp,
    /// tcpstack over an AF_PACKET raw socket.
    Raw,
    /// the kernel's own TCP (tokio::net), for comparison.
    Kernel,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        anyhow::bail!("--duration must be a positive number of seconds");
    }
    let config = BenchConfig {
        target: SocketAddr::V4(args.connect),
        mode: args.mode,
        conns: args.conns.max(1),
        duration: Duration::from_secs_f64(args.duration),
        size: args.size,
    };
    let backend = if args.kernel {
        ClientBackend::Kernel
    } else {
        args.backend
    };
    let report = match backend {
        ClientBackend::Kernel => {
            if args.pcap.is_some() {
                anyhow::bail!("--pcap captures tcpstack's frames: not with the kernel's TCP");
            }
            bench::run(Arc::new(TokioConnector), &config).await?
        }
        ClientBackend::Xdp | ClientBackend::Raw => {
            let link_args = LinkArgs {
                iface: args
                    .iface
                    .clone()
                    .context("--iface is required with the xdp and raw backends")?,
                addr: args.addr,
                backend: if backend == ClientBackend::Xdp {
                    BackendKind::Xdp
                } else {
                    BackendKind::Raw
                },
                xdp_mode: args.xdp_mode,
                queues: args.queues,
                pcap: args.pcap.clone(),
                busy_poll: args.busy_poll,
                tcp: link::TcpArgs::default(),
            };
            let link = link::open(&link_args, None)?;
            let stack = Arc::new(link.stack.clone());
            let outcome = bench::run(stack.clone(), &config).await;
            let handshake = link.stack.report().handshake.active;
            drop(stack);
            link.stack.shutdown(CLOSE_GRACE).await;
            let report = outcome?;
            tracing::debug!(%handshake, "client handshakes as the endpoint timed them");
            report
        }
    };
    print(&report, args.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

fn print(report: &BenchReport, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    match json {
        Some(path) if path.as_os_str() == "-" => {
            eprint!("{report}");
            println!("{}", serde_json::to_string(report)?);
        }
        Some(path) => {
            print!("{report}");
            std::fs::write(path, serde_json::to_vec_pretty(report)?)
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
        }
        None => print!("{report}"),
    }
    Ok(())
}
