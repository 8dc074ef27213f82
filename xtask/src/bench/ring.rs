//! The ring ceiling: what the AF_XDP rings on the lab's link carry with no TCP at all
//! (`tcpstack ring`), so every bulk row is also quoted as a fraction of what the path could
//! carry. A generator in B sends 1514-byte frames for a few seconds to `tcpstack ring` in A,
//! which drops them (rx-drop: A's receive ceiling, and B's transmit one) or sends each back
//! (reflect: the frames per second that make the round trip).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tcpstack_integration::{Lab, Process};

use super::procs::{check_interrupt, pause};
use super::report::{self, Results, Target, BULK_DOWN_1, BULK_DOWN_4, BULK_UP_1, BULK_UP_4};
use crate::step;

/// The port `tcpstack ring` serves in A, and the generator's own in B.
const SINK_PORT: &str = "5298";
const GENERATOR_PORT: &str = "5299";
/// Seconds the generator sends.
const SECONDS: &str = "3";

/// One `tcpstack ring --json` report, the fields used here.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct RingRun {
    pub tx_frames_per_second: f64,
    pub rx_frames_per_second: f64,
    pub tx_gbit_per_second: f64,
    pub rx_gbit_per_second: f64,
}

/// The three ceilings, in Gbit/s of frame bytes and frames/s; `None` where a run failed.
#[derive(Debug, Default, Serialize)]
pub struct RingCeiling {
    /// What A's rings took in and dropped.
    pub rx_drop: Option<RingRun>,
    /// What B's generator put on the wire meanwhile.
    pub tx_only: Option<RingRun>,
    /// What came back to B through A's reflector.
    pub reflect: Option<RingRun>,
    pub failures: Vec<String>,
}

pub fn measure(lab: &Lab, tcpstack: &Path) -> Result<RingCeiling> {
    let mut ceiling = RingCeiling::default();
    for reflect in [false, true] {
        check_interrupt()?;
        let mode = if reflect { "reflect" } else { "rx-drop" };
        match run_pair(lab, tcpstack, mode) {
            Ok((sink, generator)) => {
                step(&format!(
                    "ring {mode}: A received {:.2} Gbit/s, B sent {:.2} and got back {:.2}",
                    sink.rx_gbit_per_second,
                    generator.tx_gbit_per_second,
                    generator.rx_gbit_per_second
                ));
                if reflect {
                    ceiling.reflect = Some(generator);
                } else {
                    ceiling.rx_drop = Some(sink);
                    ceiling.tx_only = Some(generator);
                }
            }
            Err(error) => {
                let why = format!("ring {mode}: {error:#}");
                step(&why);
                ceiling.failures.push(why);
            }
        }
    }
    Ok(ceiling)
}

/// `tcpstack ring --mode MODE` in A, then the generator in B; both reports.
fn run_pair(lab: &Lab, tcpstack: &Path, mode: &str) -> Result<(RingRun, RingRun)> {
    let bin = tcpstack.to_string_lossy();
    let spec = &lab.spec;
    let to = format!("{}:{SINK_PORT}", spec.addr_a);
    let mut sink = Process::spawn(
        lab.command_in(
            lab.ns_a(),
            &[
                &bin,
                "ring",
                "--iface",
                &spec.if_a,
                "--mode",
                mode,
                "--port",
                SINK_PORT,
                "--duration",
                SECONDS,
                "--json",
            ],
        ),
        false,
    )?;
    sink.wait_for_stderr("ready", Duration::from_secs(10))?;
    let generator = lab
        .command_in(
            lab.ns_b(),
            &[
                &bin,
                "ring",
                "--iface",
                &spec.if_b,
                "--mode",
                "tx-only",
                "--to",
                &to,
                "--port",
                GENERATOR_PORT,
                "--duration",
                SECONDS,
                "--json",
            ],
        )
        .output()
        .context("running the generator in B")?;
    if !generator.status.success() {
        bail!(
            "the generator failed ({}): {}",
            generator.status,
            String::from_utf8_lossy(&generator.stderr).trim()
        );
    }
    let generated = parse(&String::from_utf8_lossy(&generator.stdout))?;
    let status = sink.wait_timeout(Duration::from_secs(15))?;
    if !status.success() {
        bail!("the {mode} side failed ({status}): {}", sink.transcript());
    }
    let sunk = parse(&sink.stdout().join("\n"))?;
    pause(Duration::from_millis(300))?;
    Ok((sunk, generated))
}

fn parse(stdout: &str) -> Result<RingRun> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON report on stdout")?;
    serde_json::from_str(line).with_context(|| format!("parsing {line}"))
}

/// The bulk rows and the ceiling each is a fraction of: what A's rings take in (client->server),
/// or what the rings of one end put on the wire (-R: A sends; measured at B's generator, the same
/// binary on the mirror-image veth).
fn fractions(results: &Results, ceiling: &RingCeiling) -> Vec<(&'static str, [Option<f64>; 2])> {
    let up = ceiling.rx_drop.map(|r| r.rx_gbit_per_second);
    let down = ceiling.tx_only.map(|r| r.tx_gbit_per_second);
    [
        (BULK_UP_1, up),
        (BULK_UP_4, up),
        (BULK_DOWN_1, down),
        (BULK_DOWN_4, down),
    ]
    .into_iter()
    .map(|(row, ceiling)| {
        let of = |target| report::ratio(results.cell(row, target).median, ceiling);
        (row, [of(Target::Kernel), of(Target::Xdp)])
    })
    .collect()
}

fn row_name(id: &str) -> &'static str {
    report::ROWS
        .iter()
        .find(|r| r.id == id)
        .map_or("?", |r| r.name)
}

fn shown_run(run: Option<RingRun>, rx: bool) -> String {
    match run {
        Some(r) if rx => format!(
            "{:.2} Gbit/s ({:.0} kframes/s)",
            r.rx_gbit_per_second,
            r.rx_frames_per_second / 1e3
        ),
        Some(r) => format!(
            "{:.2} Gbit/s ({:.0} kframes/s)",
            r.tx_gbit_per_second,
            r.tx_frames_per_second / 1e3
        ),
        None => "failed".to_owned(),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{:.0} %", v * 100.0))
}

/// The terminal's and the README's table (markdown reads fine in a terminal too).
pub fn markdown(results: &Results, ceiling: &RingCeiling) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Ring ceiling (`tcpstack ring`, no TCP: 1514-byte frames, busy-polled, {SECONDS} s): A's \
         rings took in and dropped {} while B's generator sent {}; reflected back to B: {}. A row's goodput counts the 1448 bytes of payload a full segment \
         carries in its 1514-byte frame, so 96 % of its ceiling is all a row can reach. The \
         rx-drop run is limited by B's generator (copy-mode transmission, which also pays for \
         the receiving side's XDP in the same context), so for the client->server rows it is a \
         lower bound on what A's rings take in: a row above 100 % shows it.\n",
        shown_run(ceiling.rx_drop, true),
        shown_run(ceiling.tx_only, false),
        shown_run(ceiling.reflect, true),
    );
    let _ = writeln!(
        md,
        "| bulk row | ceiling | kernel / ceiling | tcpstack xdp / ceiling |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|");
    for (row, [kernel, xdp]) in fractions(results, ceiling) {
        let which = if row.starts_with("bulk_up") {
            "rx-drop"
        } else {
            "tx-only"
        };
        let _ = writeln!(
            md,
            "| {} | {which} | {} | {} |",
            row_name(row),
            percent(kernel),
            percent(xdp)
        );
    }
    for failure in &ceiling.failures {
        let _ = writeln!(md, "\n{failure}");
    }
    md
}

pub fn to_json(results: &Results, ceiling: &RingCeiling) -> serde_json::Value {
    let fractions: serde_json::Map<String, serde_json::Value> = fractions(results, ceiling)
        .into_iter()
        .map(|(row, [kernel, xdp])| {
            (
                row.to_owned(),
                serde_json::json!({"kernel": kernel, "xdp": xdp}),
            )
        })
        .collect();
    serde_json::json!({ "ceiling": ceiling, "fraction_of_ceiling": fractions })
}
