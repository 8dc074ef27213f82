//! `tcpstack`: serve an app on tcpstack's own TCP over XDP/AF_XDP (or a raw socket), or talk to
//! a server like `nc` does.

mod bench;
mod cleanup;
mod connect;
mod fetch;
mod link;
mod ring;
mod serve;
mod ss;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tcpstack::apps::App;

#[derive(Parser, Debug)]
#[command(
    name = "tcpstack",
    version,
    about = "A user-space TCP endpoint on XDP/AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads of the tokio runtime. With 1 (the default) the stack's driver and the apps'
    /// tasks share one thread and wake each other without a futex or a contended lock, which
    /// measured faster on every benchmark row; more threads spread apps that compute.
    #[arg(long, global = true, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serves an app on PORT of the interface's address, until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Connects to ADDR:PORT like `nc`: stdin to the connection, the connection to stdout.
    Connect(ConnectArgs),
    /// GETs an http:// URL over tcpstack: the body to stdout, a summary to stderr.
    Fetch(fetch::FetchArgs),
    /// Loads a TCP server (any: the kernel's too) with tcpstack, or the kernel's TCP, as the client.
    Bench(bench::BenchArgs),
    /// Lists the connections of running servers like `ss -tin`, through their control sockets.
    Ss(ss::SsArgs),
    /// Measures what the AF_XDP rings carry with no TCP at all: tx-only, rx-drop, reflect.
    Ring(ring::RingArgs),
}

/// How tcpstack reaches the wire; shared by every command.
#[derive(Args, Debug, Clone)]
pub struct LinkArgs {
    /// The network interface to use.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// The local IPv4 address [default: the interface's first IPv4 address].
    #[arg(long, value_name = "IPV4")]
    pub addr: Option<Ipv4Addr>,
    /// AF_XDP with an XDP program steering our segments, or an AF_PACKET raw socket.
    #[arg(long, value_enum, default_value_t = BackendKind::Xdp)]
    pub backend: BackendKind,
    /// How the XDP program is attached (xdp backend only).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// AF_XDP sockets to open, on queues 0..N [default: every receive queue].
    #[arg(long, value_name = "N")]
    pub queues: Option<u32>,
    /// Writes every frame received and sent to this pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Microseconds to keep polling the link after the last packet before sleeping, as Linux's
    /// SO_BUSY_POLL: a request/response round trip saves a wakeup each way, for up to this
    /// much of a core's time after each burst; 0 sleeps at once.
    #[arg(long, value_name = "US", default_value_t = link::DEFAULT_BUSY_POLL_US,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub busy_poll: u64,
    #[command(flatten)]
    pub tcp: link::TcpArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Xdp,
    Raw,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Xdp => "xdp",
            BackendKind::Raw => "raw",
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpModeArg {
    /// Generic on veth (its native mode drops bursts in a ring of its own), else native where
    /// the driver has it
    Auto,
    /// In the driver; fails when the driver has no XDP support
    Native,
    /// Generic XDP in the kernel's receive path; works on every interface
    Skb,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// The TCP port to listen on.
    #[arg(long)]
    pub port: u16,
    /// What to serve.
    #[arg(long, value_enum, default_value_t = App::Echo)]
    pub app: App,
    /// Prints the counters and the handshake latency every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<u64>,
    /// Writes the statistics (handshake latency included) as JSON to FILE every interval and at exit.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// The unix socket `tcpstack ss` asks [default: /run/tcpstack/IFACE-PORT.sock].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The server to connect to.
    #[arg(value_name = "ADDR:PORT")]
    pub remote: SocketAddrV4,
    #[command(flatten)]
    pub link: LinkArgs,
    /// At the end of stdin, abort the connection with RST (as a close with SO_LINGER 0 does)
    /// instead of half-closing it with FIN; data the peer has not yet received may be lost.
    #[arg(long)]
    pub abort_at_eof: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    cleanup::install_panic_hook();
    let mut builder = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(cli.threads));
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tcpstack: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Fetch(args) => fetch::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Ss(args) => ss::run(args).await,
            Command::Ring(args) => ring::run(args).await,
        }
    });
    // A blocking read of stdin may still be parked in tokio's blocking pool: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tcpstack: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` as tracing's EnvFilter reads it; nothing is logged when it is unset.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
