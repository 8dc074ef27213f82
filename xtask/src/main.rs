//! `cargo xtask`: build, demo, lab, test and bench for tcpstack. Run `cargo xtask --help`.

mod bench;
mod deps;
mod fuzz;
mod run;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tcpstack_integration::{Lab, LabSpec};

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark tcpstack", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the eBPF object (nightly), then the release binary that embeds it.
    Build,
    /// The demo: build, create the lab, start `tcpstack serve` in tcps-lab-a, print how to
    /// talk to it from tcps-lab-b; Ctrl-C stops it and removes the lab.
    Run(run::RunArgs),
    /// Create or remove the lab: namespaces tcps-lab-a (198.18.0.1) and tcps-lab-b
    /// (198.18.0.2) joined by a veth pair.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Everything: unit and simulation tests, the eBPF and release builds, then the root-only
    /// integration tests in network namespaces (needs root).
    Test(TestArgs),
    /// tcpstack (xdp and raw backends) against the kernel's TCP on the lab's link: medians and ratios.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum LabAction {
    /// Create the lab (recreated when it exists).
    Up,
    /// Remove the lab, and stale labs of test runs that were killed.
    Down,
}

#[derive(clap::Args)]
struct TestArgs {
    /// Only integration tests whose name contains this (unit tests still run in full).
    filter: Option<String>,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    STARTED.get_or_init(Instant::now);
    let cli = Cli::parse();
    std::env::set_current_dir(workspace_root()).context("entering the workspace root")?;
    match cli.command {
        Cmd::Build => build(),
        Cmd::Run(args) => run::run(args),
        Cmd::Lab { action } => lab(action),
        Cmd::Test(args) => test(args),
        Cmd::Bench(args) => bench::bench(args),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where `cargo xtask build` puts the release binary.
pub fn tcpstack_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release/tcpstack")
}

const EBPF_CRATE: &str = "tcpstack-ebpf";

fn ebpf_object() -> PathBuf {
    workspace_root().join("tcpstack-ebpf/target/bpfel-unknown-none/release/tcpstack-ebpf")
}

/// The eBPF object, then `cargo build --release -p tcpstack` embedding it.
fn build() -> Result<()> {
    deps::ebpf_toolchain()?;
    let ebpf_dir = workspace_root().join(EBPF_CRATE);
    if ebpf_dir.join("Cargo.toml").exists() {
        step("building the eBPF object (nightly, bpfel-unknown-none)");
        let mut cmd = Command::new("cargo");
        // This process runs under the stable toolchain; none of its settings may leak into
        // the nightly build of another target.
        for var in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTDOC",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(&ebpf_dir)
            .env(
                "RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\" -Cdebuginfo=2 -Clink-arg=--btf",
            )
            .args([
                "+nightly",
                "build",
                "-Z",
                "build-std=core",
                "--target",
                "bpfel-unknown-none",
                "--release",
            ]);
        run_command(&mut cmd)?;
    } else {
        println!(
            "xtask: warning: {EBPF_CRATE}/ is not in this checkout; the binary is built without \
             the eBPF object and only `--backend raw` will work"
        );
    }
    step("building the release binary (cargo build --release -p tcpstack)");
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "tcpstack"]);
    if ebpf_object().exists() {
        cmd.env("TCPSTACK_EBPF_OBJECT", ebpf_object());
    }
    run_command(&mut cmd)?;
    println!("xtask: built {}", tcpstack_bin().display());
    Ok(())
}

fn lab(action: LabAction) -> Result<()> {
    require_root("cargo xtask lab")?;
    deps::apt(deps::LAB_PACKAGES)?;
    let spec = LabSpec::demo();
    match action {
        LabAction::Up => {
            lab_down(&spec)?;
            step(&format!(
                "creating {} ({}/{} on {}) and {} ({}/{} on {}), joined by a veth pair",
                spec.ns_a,
                spec.addr_a,
                spec.prefix_len,
                spec.if_a,
                spec.ns_b,
                spec.addr_b,
                spec.prefix_len,
                spec.if_b
            ));
            Lab::create(spec.clone())?.persist();
            println!(
                "xtask: lab is up; try `ip netns exec {} ping -c 1 {}`; remove it with `cargo xtask lab down`",
                spec.ns_b, spec.addr_a
            );
        }
        LabAction::Down => {
            lab_down(&spec)?;
            sweep()?;
            println!("xtask: lab is down");
        }
    }
    Ok(())
}

/// Removes the demo lab's namespaces (and so everything in them) when they exist.
pub fn lab_down(spec: &LabSpec) -> Result<()> {
    for ns in [&spec.ns_a, &spec.ns_b] {
        if tcpstack_integration::namespaces()?.contains(ns) {
            step(&format!("removing namespace {ns} and everything in it"));
            tcpstack_integration::delete_namespace(ns)?;
        }
    }
    Ok(())
}

fn sweep() -> Result<Vec<String>> {
    let removed = tcpstack_integration::sweep()?;
    if !removed.is_empty() {
        println!(
            "xtask: removed namespaces left by killed test runs: {}",
            removed.join(" ")
        );
    }
    Ok(removed)
}

fn test(args: TestArgs) -> Result<()> {
    require_root(
        "cargo xtask test (the integration tests use network namespaces, veth, XDP and iptables)",
    )?;
    deps::apt(deps::ALL_PACKAGES)?;
    step("unit and simulation tests (cargo test --workspace)");
    run_command(cargo().args(["test", "--workspace"]))?;
    build()?;
    sweep()?;
    step("integration tests as root, one at a time (cargo test --workspace -- --ignored --test-threads=1)");
    let mut cmd = cargo();
    // --no-fail-fast: one failing test binary must not hide the results of the others.
    cmd.args([
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--ignored",
        "--test-threads=1",
    ])
    .env("TCPSTACK_BIN", tcpstack_bin());
    if let Some(filter) = &args.filter {
        cmd.arg(filter);
    }
    let result = run_command(&mut cmd);
    let leftovers = sweep()?;
    result?;
    if !leftovers.is_empty() {
        bail!(
            "the tests left namespaces behind ({}): a lab was not cleaned up",
            leftovers.join(" ")
        );
    }
    // A FILTER narrows the run to integration tests; the whole run fuzzes too.
    if args.filter.is_none() {
        fuzz::run()?;
    }
    step("all tests passed");
    Ok(())
}

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Prints what is about to happen, with the time since xtask started (CI logs show where the
/// minutes go).
pub fn step(what: &str) {
    let elapsed = STARTED.get_or_init(Instant::now).elapsed().as_secs();
    println!("xtask [{elapsed:>4}s]: {what}");
}

/// The cargo that runs xtask, for nested builds.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root: run it as root (e.g. `sudo -E cargo xtask ...`); \
             `cargo test --workspace` runs the unprivileged tests"
        );
    }
    Ok(())
}

/// Runs a command with inherited output; an error naming it and what to do when it fails.
pub fn run_command(cmd: &mut Command) -> Result<()> {
    let shown = tcpstack_integration::describe(cmd);
    println!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`: is it installed and on PATH?"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status}); fix the error above and run it again");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    tcpstack_integration::run(cmd)
}

/// Whether a command can be started and succeeds.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}
