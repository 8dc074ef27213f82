//! `cargo xtask bench`: tcpstack against the kernel's TCP on the lab's link (issue 4, item 6).
//!
//! The plan, in alternation over several rounds with medians reported: iperf3 bulk (both
//! directions, 1 and 4 streams), 1-byte request/response rate and latency, connection rate and
//! handshake latency, server CPU per GB and per 10k connections, server memory with 10 000 idle
//! connections; each row as tcpstack (xdp, raw) / kernel, written to `target/bench/report.json`.

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A short run (under three minutes): fewer rounds and shorter tests.
    #[arg(long)]
    pub quick: bool,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let run = if args.quick { "quick run" } else { "full run" };
    bail!("cargo xtask bench ({run}): not yet: the benchmark comes with issue 4")
}
