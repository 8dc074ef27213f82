//! The loss rows (issue 9): one iperf3 stream each way at 1 %, 2 % and 3 % random loss in both
//! directions of the link, and a 32 MB echo through 2 % loss each way, served by the kernel with
//! the machine's default congestion control and with CUBIC, and by tcpstack (xdp) with each
//! congestion control its binary offers (`tcpstack serve --help`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tcpstack_integration::{in_netns, Lab};

use super::load::{self, Load, Service};
use super::procs::{self, check_interrupt, pause};
use super::report::{aligned, format_value, ratio, Better, Cell, RowSpec, Target};
use crate::step;

/// Who serves a loss row: the kernel or tcpstack's xdp backend, with one congestion control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub target: Target,
    pub congestion: String,
    /// The kernel's: this is the machine's net.ipv4.tcp_congestion_control.
    pub default: bool,
}

impl Sender {
    pub fn label(&self) -> String {
        let default = if self.default { " (default)" } else { "" };
        format!("{} {}{default}", self.target.name(), self.congestion)
    }
}

/// The kernel's default and CUBIC (once when they are the same), then tcpstack with each
/// algorithm of `serve --congestion`.
pub fn senders(tcpstack: &Path) -> Result<Vec<Sender>> {
    let default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .context("reading /proc/sys/net/ipv4/tcp_congestion_control")?
        .trim()
        .to_owned();
    let mut senders = vec![Sender {
        target: Target::Kernel,
        congestion: default.clone(),
        default: true,
    }];
    if default != "cubic" {
        senders.push(Sender {
            target: Target::Kernel,
            congestion: "cubic".into(),
            default: false,
        });
    }
    let help = tcpstack_integration::run(Command::new(tcpstack).args(["serve", "--help"]))
        .context("asking `tcpstack serve --help` for its congestion controls")?;
    let algorithms = congestion_values(&help);
    if algorithms.is_empty() {
        bail!("`tcpstack serve --help` lists no --congestion values");
    }
    senders.extend(algorithms.into_iter().map(|congestion| Sender {
        target: Target::Xdp,
        congestion,
        default: false,
    }));
    Ok(senders)
}

/// The values of `--congestion` in a clap help text: `- cubic: ...` lines of `--help`, or
/// `[possible values: cubic, newreno]` of `-h`.
fn congestion_values(help: &str) -> Vec<String> {
    let Some(option) = load::option_help(help, "--congestion") else {
        return Vec::new();
    };
    if let Some((_, list)) = option.split_once("[possible values:") {
        let list = list.split(']').next().unwrap_or("");
        return list.split(',').map(|v| v.trim().to_owned()).collect();
    }
    option
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .filter_map(|l| l.split(':').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

const fn row(id: &'static str, name: &'static str, unit: &'static str, better: Better) -> RowSpec {
    RowSpec {
        id,
        name,
        unit,
        better,
    }
}

/// The loss rates, each with its client->server and -R row.
pub const LOSS_LEVELS: [(f64, RowSpec, RowSpec); 3] = [
    (
        0.01,
        row(
            "loss1_up",
            "iperf3 client->server, 1 % loss each way",
            "Gbit/s",
            Better::Higher,
        ),
        row(
            "loss1_down",
            "iperf3 -R server->client, 1 % loss each way",
            "Gbit/s",
            Better::Higher,
        ),
    ),
    (
        0.02,
        row(
            "loss2_up",
            "iperf3 client->server, 2 % loss each way",
            "Gbit/s",
            Better::Higher,
        ),
        row(
            "loss2_down",
            "iperf3 -R server->client, 2 % loss each way",
            "Gbit/s",
            Better::Higher,
        ),
    ),
    (
        0.03,
        row(
            "loss3_up",
            "iperf3 client->server, 3 % loss each way",
            "Gbit/s",
            Better::Higher,
        ),
        row(
            "loss3_down",
            "iperf3 -R server->client, 3 % loss each way",
            "Gbit/s",
            Better::Higher,
        ),
    ),
];

pub const ECHO_ROW: RowSpec = row(
    "echo32_loss2",
    "32 MB echo through 2 % loss each way",
    "s",
    Better::Lower,
);
const ECHO_BYTES: usize = 32 << 20;
const ECHO_LOSS: f64 = 0.02;
const ECHO_TIMEOUT: Duration = Duration::from_secs(60);

/// The rows in table order.
pub fn rows() -> Vec<RowSpec> {
    LOSS_LEVELS
        .iter()
        .flat_map(|(_, up, down)| [*up, *down])
        .chain([ECHO_ROW])
        .collect()
}

/// What the loss rounds measured, by row id and index into `senders`.
#[derive(Debug, Default)]
pub struct LossResults {
    pub senders: Vec<Sender>,
    cells: BTreeMap<(&'static str, usize), Cell>,
}

impl LossResults {
    fn record(&mut self, row: &'static str, sender: usize, value: f64) {
        self.cells
            .entry((row, sender))
            .or_default()
            .samples
            .push(value);
    }

    fn fail(&mut self, row: &'static str, sender: usize, why: &str) {
        self.cells
            .entry((row, sender))
            .or_default()
            .failures
            .push(why.to_owned());
    }

    pub fn cell(&self, row: &str, sender: usize) -> Cell {
        let mut cell = self
            .cells
            .iter()
            .find(|((r, s), _)| *r == row && *s == sender)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        cell.median = super::report::median(&cell.samples);
        cell
    }

    /// Every (tcpstack sender, kernel sender) pair, for the ratio columns.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let kernels: Vec<usize> = (0..self.senders.len())
            .filter(|&i| self.senders[i].target == Target::Kernel)
            .collect();
        (0..self.senders.len())
            .filter(|&i| self.senders[i].target != Target::Kernel)
            .flat_map(|t| kernels.iter().map(move |&k| (t, k)))
            .collect()
    }

    pub fn ratio(&self, row: &str, (tcpstack, kernel): (usize, usize)) -> Option<f64> {
        ratio(
            self.cell(row, tcpstack).median,
            self.cell(row, kernel).median,
        )
    }
}

/// One round of every loss row for every sender; `levels` picks which loss rates run.
pub fn round(
    lab: &Lab,
    tcpstack: &Path,
    base: &Load,
    levels: &[(f64, RowSpec, RowSpec)],
    label: &str,
    results: &mut LossResults,
) -> Result<()> {
    for sender in 0..results.senders.len() {
        let who = results.senders[sender].clone();
        let flags = match who.target {
            Target::Kernel => Vec::new(),
            _ => vec!["--congestion".to_owned(), who.congestion.clone()],
        };
        // The kernel server runs the sender's algorithm through iperf3 -C (set on both ends);
        // against tcpstack the kernel client keeps the machine's default.
        let load = Load {
            congestion: match who.target {
                Target::Kernel if !who.default => Some("cubic"),
                _ => None,
            },
            ..base.clone()
        };
        let label = format!("{label} {:<20}", who.label());
        iperf3_rows(
            lab, tcpstack, &load, &who, &flags, levels, &label, sender, results,
        )?;
        if who.target == Target::Kernel && !who.default {
            // The kernel's echo server and client run the default: one kernel echo column.
            continue;
        }
        echo_row(lab, tcpstack, &who, &flags, &label, sender, results)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn iperf3_rows(
    lab: &Lab,
    tcpstack: &Path,
    load: &Load,
    who: &Sender,
    flags: &[String],
    levels: &[(f64, RowSpec, RowSpec)],
    label: &str,
    sender: usize,
    results: &mut LossResults,
) -> Result<()> {
    let mut server =
        match load::start_server_with(lab, tcpstack, who.target, Service::Iperf3, flags) {
            Ok(server) => server,
            Err(error) => {
                check_interrupt()?;
                let why = format!("{error:#}");
                step(&format!("{label} iperf3 server failed: {why}"));
                for (_, up, down) in levels {
                    results.fail(up.id, sender, &why);
                    results.fail(down.id, sender, &why);
                }
                return Ok(());
            }
        };
    let mut wedged: Option<String> = None;
    for (probability, up, down) in levels {
        let rules = lab
            .add_tcp_port_loss(load::IPERF3_PORT, *probability)
            .context("adding the loss rules")?;
        for (row, reverse) in [(up, false), (down, true)] {
            if let Some(why) = &wedged {
                results.fail(row.id, sender, why);
                continue;
            }
            pause(Duration::from_millis(300))?;
            let measured = server
                .check_alive()
                .and_then(|()| load::iperf3(lab, load, 1, reverse));
            check_interrupt()?;
            let direction = if reverse { "-R" } else { "  " };
            let percent = probability * 100.0;
            match measured {
                Ok(bulk) => {
                    step(&format!(
                        "{label} iperf3 {direction} {percent} % loss: {:.3} Gbit/s",
                        bulk.bits_per_second / 1e9
                    ));
                    results.record(row.id, sender, bulk.bits_per_second / 1e9);
                }
                Err(error) => {
                    let why = format!("{error:#}");
                    step(&format!(
                        "{label} iperf3 {direction} {percent} % loss: failed: {why}"
                    ));
                    results.fail(row.id, sender, &why);
                    if procs::hung(&error) {
                        wedged = Some(format!("skipped: an earlier iperf3 run hung: {why}"));
                    }
                }
            }
        }
        drop(rules);
    }
    server.stop();
    Ok(())
}

fn echo_row(
    lab: &Lab,
    tcpstack: &Path,
    who: &Sender,
    flags: &[String],
    label: &str,
    sender: usize,
    results: &mut LossResults,
) -> Result<()> {
    let measured = load::start_server_with(lab, tcpstack, who.target, Service::Echo, flags)
        .and_then(|mut server| {
            let rules = lab.add_tcp_port_loss(load::ECHO_PORT, ECHO_LOSS)?;
            pause(Duration::from_millis(200))?;
            let echo = SocketAddrV4::new(lab.addr_a(), load::ECHO_PORT);
            let took = server
                .check_alive()
                .and_then(|()| in_netns(&lab.spec.ns_b, move || echo_through(echo, ECHO_BYTES))?);
            drop(rules);
            server.stop();
            took
        });
    check_interrupt()?;
    match measured {
        Ok(took) => {
            step(&format!("{label} 32 MB echo, 2 % loss: {took:.2} s"));
            results.record(ECHO_ROW.id, sender, took);
        }
        Err(error) => {
            let why = format!("{error:#}");
            step(&format!("{label} 32 MB echo, 2 % loss: failed: {why}"));
            results.fail(ECHO_ROW.id, sender, &why);
        }
    }
    Ok(())
}

/// Sends `bytes` to the echo server at `target` while reading them back; the seconds from
/// connect to the last byte back, which must be what was sent.
fn echo_through(target: SocketAddrV4, bytes: usize) -> Result<f64> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_read_timeout(Some(ECHO_TIMEOUT))?;
    stream.set_write_timeout(Some(ECHO_TIMEOUT))?;
    let pattern = |i: usize| (i % 251) as u8;
    let mut writer = stream.try_clone()?;
    let sent = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk: Vec<u8> = (0..64 * 1024).map(pattern).collect();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n])?;
            left -= n;
        }
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut reader = stream;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = 0usize;
    while received < bytes {
        if started.elapsed() > ECHO_TIMEOUT {
            bail!("only {received} of {bytes} bytes came back within {ECHO_TIMEOUT:?}");
        }
        let n = reader
            .read(&mut buffer)
            .with_context(|| format!("reading the echo after {received} of {bytes} bytes"))?;
        if n == 0 {
            bail!("the server closed after echoing {received} of {bytes} bytes");
        }
        if let Some(i) = (0..n).find(|&i| buffer[i] != pattern((received + i) % (64 * 1024))) {
            bail!("byte {} came back changed", received + i);
        }
        received += n;
    }
    let took = started.elapsed().as_secs_f64();
    sent.join()
        .map_err(|_| anyhow::anyhow!("the echo writer panicked"))?
        .context("sending the echo")?;
    Ok(took)
}

/// The loss rows as a text table: medians per sender, then tcpstack / kernel for every pair.
pub fn table(results: &LossResults) -> String {
    let pairs = results.pairs();
    let mut header = vec!["row".to_owned(), "unit".to_owned()];
    header.extend(results.senders.iter().map(Sender::label));
    header.extend(pairs.iter().map(|&(t, k)| pair_label(results, (t, k))));
    let mut lines = vec![header];
    for row in rows() {
        let mut line = vec![row.name.to_owned(), row.unit.to_owned()];
        for sender in 0..results.senders.len() {
            let cell = results.cell(row.id, sender);
            line.push(match (cell.median, cell.failures.first()) {
                (Some(m), _) => format_value(row.unit, m),
                (None, Some(why)) => format!("failed: {}", cut(&super::report::summary(why))),
                (None, None) => "-".into(),
            });
        }
        for &pair in &pairs {
            line.push(
                results
                    .ratio(row.id, pair)
                    .map_or("-".into(), |r| format!("{r:.2}")),
            );
        }
        lines.push(line);
    }
    let mut out = aligned(&lines);
    out.push_str(
        "Gbit/s higher is better, s lower is better; ratios are tcpstack / kernel of the medians;\n\
         in the client->server rows the sender is the kernel client (the host's default against \
         tcpstack)\n",
    );
    out
}

fn pair_label(results: &LossResults, (tcpstack, kernel): (usize, usize)) -> String {
    let t = &results.senders[tcpstack];
    let k = &results.senders[kernel];
    format!("{} {}/kern {}", t.target.name(), t.congestion, k.congestion)
}

fn cut(text: &str) -> String {
    text.chars().take(30).collect()
}

/// The loss rows for `report.json`.
pub fn to_json(results: &LossResults) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows()
        .iter()
        .map(|row| {
            let cells: serde_json::Map<String, serde_json::Value> = (0..results.senders.len())
                .map(|s| {
                    (
                        results.senders[s].label(),
                        serde_json::to_value(results.cell(row.id, s)).unwrap_or_default(),
                    )
                })
                .collect();
            let ratios: serde_json::Map<String, serde_json::Value> = results
                .pairs()
                .into_iter()
                .map(|pair| {
                    (
                        pair_label(results, pair),
                        serde_json::json!(results.ratio(row.id, pair)),
                    )
                })
                .collect();
            serde_json::json!({
                "id": row.id, "name": row.name, "unit": row.unit, "better": row.better,
                "cells": cells, "ratio": ratios,
            })
        })
        .collect();
    let senders: Vec<String> = results.senders.iter().map(Sender::label).collect();
    serde_json::json!({ "senders": senders, "rows": rows })
}

/// The loss rows' ratios (every tcpstack algorithm against both kernels) as `loss.svg`.
pub fn svg(results: &LossResults) -> String {
    let pairs = results.pairs();
    let series: Vec<String> = pairs.iter().map(|&p| pair_label(results, p)).collect();
    let rows: Vec<(RowSpec, Vec<Option<f64>>)> = rows()
        .into_iter()
        .map(|row| {
            let ratios = pairs.iter().map(|&p| results.ratio(row.id, p)).collect();
            (row, ratios)
        })
        .collect();
    super::report::ratio_chart(
        "loss rows: tcpstack / kernel (medians; log scale, 1 = same as the kernel)",
        &series,
        &rows,
    )
}

/// The loss rows as a README table.
pub fn markdown(results: &LossResults) -> String {
    let pairs = results.pairs();
    let mut md = String::from("| | unit |");
    for s in &results.senders {
        let _ = write!(md, " {} |", s.label());
    }
    for &pair in &pairs {
        let _ = write!(md, " {} |", pair_label(results, pair));
    }
    md.push_str("\n|---|---|");
    md.push_str(&"--:|".repeat(results.senders.len() + pairs.len()));
    md.push('\n');
    for row in rows() {
        let _ = write!(md, "| {} | {} |", row.name, row.unit);
        for s in 0..results.senders.len() {
            let cell = results.cell(row.id, s);
            let shown = match (cell.median, cell.failures.is_empty()) {
                (Some(m), _) => format_value(row.unit, m),
                (None, false) => "failed".into(),
                (None, true) => "-".into(),
            };
            let _ = write!(md, " {shown} |");
        }
        for &pair in &pairs {
            let r = results
                .ratio(row.id, pair)
                .map_or("-".into(), |r| format!("{r:.2}"));
            let _ = write!(md, " {r} |");
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_values_from_long_and_short_help() {
        let long = "Options:
      --congestion <ALGORITHM>
          Congestion control of every connection [default: cubic]

          Possible values:
          - cubic:   RFC 9438 with HyStart++, Linux's default
          - newreno: RFC 5681 with RFC 6582's fast recovery (Linux's reno)

      --no-sack
          Neither offer nor accept selective acknowledgements (RFC 2018)
";
        assert_eq!(congestion_values(long), ["cubic", "newreno"]);
        let short = "      --congestion <ALGORITHM>  Congestion control [possible values: cubic, newreno, bbr]\n      --no-sack  x\n";
        assert_eq!(congestion_values(short), ["cubic", "newreno", "bbr"]);
        assert!(congestion_values("      --no-sack\n").is_empty());
    }

    #[test]
    fn ratios_pair_every_tcpstack_sender_with_every_kernel() {
        let sender = |target, congestion: &str, default| Sender {
            target,
            congestion: congestion.into(),
            default,
        };
        let mut results = LossResults {
            senders: vec![
                sender(Target::Kernel, "bbr", true),
                sender(Target::Kernel, "cubic", false),
                sender(Target::Xdp, "cubic", false),
            ],
            ..LossResults::default()
        };
        results.record("loss2_down", 0, 2.0);
        results.record("loss2_down", 1, 0.05);
        results.record("loss2_down", 2, 0.1);
        assert_eq!(results.pairs(), [(2, 0), (2, 1)]);
        assert_eq!(results.ratio("loss2_down", (2, 0)), Some(0.05));
        assert_eq!(results.ratio("loss2_down", (2, 1)), Some(2.0));
        let table = table(&results);
        assert!(table.contains("kernel bbr (default)"), "{table}");
        assert!(table.contains("xdp cubic/kern bbr"), "{table}");
        let json = to_json(&results);
        let row = &json["rows"][2];
        assert_eq!(row["id"], "loss2_up");
        assert_eq!(json["rows"][3]["ratio"]["xdp cubic/kern cubic"], 2.0);
    }
}
