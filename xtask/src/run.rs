//! `cargo xtask run`: the newcomer's demo.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Result};
use tcpstack_integration::{Lab, LabSpec, Server};

use crate::{build, deps, lab_down, require_root, step, tcpstack_bin};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The application tcpstack serves.
    #[arg(long, value_enum, default_value_t = App::Iperf3)]
    app: App,
    /// The port to serve on (default: the application's usual port).
    #[arg(long)]
    port: Option<u16>,
    /// How segments reach tcpstack.
    #[arg(long, value_enum, default_value_t = BackendArg::Xdp)]
    backend: BackendArg,
    /// Use the binary already built instead of running `cargo xtask build` first.
    #[arg(long)]
    no_build: bool,
    /// More `tcpstack serve` arguments, after `--` (e.g. `-- --stats-interval 5`).
    #[arg(last = true)]
    serve_args: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum App {
    Echo,
    Discard,
    Http,
    Iperf3,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Echo => "echo",
            App::Discard => "discard",
            App::Http => "http",
            App::Iperf3 => "iperf3",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            App::Echo => 7,
            App::Discard => 9,
            App::Http => 80,
            App::Iperf3 => 5201,
        }
    }

    /// Commands to run from the peer namespace, with what each shows.
    fn try_these(self, ns_b: &str, addr: &str, port: u16) -> Vec<(String, &'static str)> {
        let peer = format!("ip netns exec {ns_b}");
        match self {
            App::Echo => vec![
                (
                    format!("{peer} nc {addr} {port}"),
                    "type lines; they come back",
                ),
                (
                    format!("head -c 10M /dev/urandom | {peer} nc -N {addr} {port} | wc -c"),
                    "10 MB through tcpstack and back",
                ),
            ],
            App::Discard => vec![(
                format!("head -c 100M /dev/zero | {peer} nc -N {addr} {port}"),
                "100 MB swallowed by tcpstack",
            )],
            App::Http => vec![
                (format!("{peer} curl -v http://{addr}:{port}/"), "the page"),
                (
                    format!("{peer} curl -s http://{addr}:{port}/bytes/1000000 | wc -c"),
                    "1 MB of body",
                ),
                (
                    format!("{peer} wrk -t 2 -c 32 -d 5s http://{addr}:{port}/"),
                    "load",
                ),
            ],
            App::Iperf3 => vec![
                (
                    format!("{peer} iperf3 -c {addr} -p {port}"),
                    "client to tcpstack",
                ),
                (
                    format!("{peer} iperf3 -c {addr} -p {port} -R"),
                    "tcpstack to client",
                ),
                (
                    format!("{peer} iperf3 -c {addr} -p {port} -P 4"),
                    "4 streams",
                ),
            ],
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Xdp,
    Raw,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: RunArgs) -> Result<()> {
    require_root("cargo xtask run (it creates network namespaces and attaches XDP)")?;
    deps::apt(deps::RUN_PACKAGES)?;
    if !args.no_build {
        build()?;
    }
    let bin = tcpstack_bin();
    if !bin.exists() {
        bail!("{} is missing: run `cargo xtask build`", bin.display());
    }
    // From here on Ctrl-C (and SIGTERM) only ask the loop below to stop, so the server and the
    // lab are always cleaned up; the server runs in its own process group and gets its SIGINT
    // from us.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
    }

    let spec = LabSpec::demo();
    lab_down(&spec)?;
    step(&format!(
        "creating the lab: {} ({} on {}) <-> {} ({} on {})",
        spec.ns_a, spec.addr_a, spec.if_a, spec.ns_b, spec.addr_b, spec.if_b
    ));
    let lab = Lab::create(spec.clone())?;

    let port = args.port.unwrap_or(args.app.default_port()).to_string();
    let backend = match args.backend {
        BackendArg::Xdp => "xdp",
        BackendArg::Raw => "raw",
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &spec.ns_a])
        .arg(&bin)
        .args(["serve", "--iface", &spec.if_a, "--port", &port])
        .args(["--app", args.app.name(), "--backend", backend])
        .args(&args.serve_args);
    step(&format!(
        "starting {}",
        tcpstack_integration::describe(&cmd)
    ));
    let mut server = Server::start(cmd, true)?;

    let addr = server.listen.ip().to_string();
    println!();
    println!(
        "tcpstack serves {} on {} (backend {backend}) in namespace {}.",
        args.app.name(),
        server.listen,
        spec.ns_a
    );
    println!("Talk to it from the peer namespace {}:", spec.ns_b);
    for (command, what) in args.app.try_these(&spec.ns_b, &addr, server.port()) {
        println!("  {command}\n      # {what}");
    }
    println!(
        "  ip netns exec {} ping -c 3 {addr}\n      # everything else still reaches the kernel",
        spec.ns_b
    );
    println!("Press Ctrl-C to stop tcpstack and remove the lab.");
    println!();

    let exited = loop {
        if STOP.load(Ordering::SeqCst) {
            break None;
        }
        if let Some(status) = server.process.try_wait()? {
            break Some(status);
        }
        thread::sleep(Duration::from_millis(100));
    };
    let outcome = match exited {
        Some(status) => Err(anyhow::anyhow!(
            "tcpstack serve exited on its own ({status})"
        )),
        None => {
            step("stopping tcpstack (SIGINT)");
            let output = server.stop()?;
            if output.status.success() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "tcpstack serve exited with {}",
                    output.status
                ))
            }
        }
    };
    step("removing the lab");
    lab.destroy()?;
    outcome
}
