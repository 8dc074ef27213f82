//! Installs what a command needs on a fresh Debian machine, saying what it does.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

use crate::{is_root, run_command, succeeds};

/// Every Debian package a command of this repository uses.
pub const ALL_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "ethtool",
    "iptables",
    "tcpdump",
    "tshark",
    "netcat-openbsd",
    "iperf3",
    "curl",
    "wrk",
    "hping3",
    "python3",
];

/// The Debian packages the benchmark runs (`cargo xtask bench`).
pub const BENCH_PACKAGES: &[&str] = &["iproute2", "ethtool", "iptables", "iperf3"];

/// What the lab itself needs (`cargo xtask lab`).
pub const LAB_PACKAGES: &[&str] = &["iproute2", "ethtool", "iptables"];

/// `cargo xtask run`: the lab, and the tools its printed commands use from the peer.
pub const RUN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "ethtool",
    "iptables",
    "netcat-openbsd",
    "iperf3",
    "curl",
    "wrk",
];

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Installs the packages among `packages` that are missing (`apt-get update` once first).
pub fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !apt_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; install them as root: apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("xtask: installing missing packages: {}", missing.join(" "));
    if !APT_UPDATED.swap(true, Ordering::Relaxed) {
        run_command(apt_get().arg("update"))?;
    }
    run_command(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn apt_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

/// cargo-fuzz for the bounded fuzzing run (its targets build with nightly, which
/// [`ebpf_toolchain`] installs).
pub fn fuzz_toolchain() -> Result<()> {
    ebpf_toolchain()?;
    if !succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        println!(
            "xtask: installing cargo-fuzz 0.13.2 (runs the fuzz targets; takes a minute or two)"
        );
        run_command(Command::new("cargo").args(["install", "cargo-fuzz@0.13.2", "--locked"]))?;
    }
    Ok(())
}

/// The eBPF build's toolchain: nightly with rust-src, and bpf-linker 0.10.2 (the version that
/// links with nightly's own LLVM; newer ones want a system LLVM this machine lacks).
pub fn ebpf_toolchain() -> Result<()> {
    let toolchains = crate::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        println!("xtask: installing the nightly toolchain (the eBPF program needs -Z build-std)");
        run_command(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let components = crate::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        println!("xtask: adding rust-src to nightly (to build core for bpfel-unknown-none)");
        run_command(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        println!(
            "xtask: installing bpf-linker 0.10.2 (links the eBPF object; takes a few minutes)"
        );
        run_command(Command::new("cargo").args(["install", "bpf-linker@0.10.2", "--locked"]))?;
    }
    Ok(())
}
