//! The rows of the benchmark, their medians and ratios, and the three ways they are shown: the
//! terminal table, `target/bench/report.json`, `target/bench/report.svg` and a README snippet.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Where a row's load was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The kernel's TCP in namespace A (stock `iperf3 -s`, the xtask epoll echo server).
    Kernel,
    /// `tcpstack serve --backend xdp`.
    Xdp,
    /// `tcpstack serve --backend raw`.
    Raw,
}

impl Target {
    /// Kernel first: its rows run before tcpstack's in every round.
    pub const ALL: [Target; 3] = [Target::Kernel, Target::Xdp, Target::Raw];
    pub const TCPSTACK: [Target; 2] = [Target::Xdp, Target::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Target::Kernel => "kernel",
            Target::Xdp => "xdp",
            Target::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// One line of the table.
#[derive(Debug, Clone, Copy)]
pub struct RowSpec {
    pub id: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
}

const fn row(id: &'static str, name: &'static str, unit: &'static str, better: Better) -> RowSpec {
    RowSpec {
        id,
        name,
        unit,
        better,
    }
}

pub const BULK_UP_1: &str = "bulk_up_1";
pub const BULK_UP_4: &str = "bulk_up_4";
pub const BULK_DOWN_1: &str = "bulk_down_1";
pub const BULK_DOWN_4: &str = "bulk_down_4";
pub const RR_RATE: &str = "rr_rate";
pub const RR_P50: &str = "rr_p50";
pub const RR_P99: &str = "rr_p99";
pub const RR_CPU: &str = "rr_server_cores";
pub const CRR_RATE: &str = "crr_rate";
pub const CONNECT_P50: &str = "connect_p50";
pub const CONNECT_P99: &str = "connect_p99";
pub const CPU_PER_GB: &str = "cpu_per_gb";
pub const CPU_PER_10K: &str = "cpu_per_10k_conns";
pub const IDLE_RSS: &str = "idle_rss";
pub const RETRANSMITS_UP_4: &str = "retransmits_up_4";
pub const SERVER_DROPS_4: &str = "server_drops_4";

pub const ROWS: &[RowSpec] = &[
    row(
        BULK_UP_1,
        "iperf3 client->server, 1 stream",
        "Gbit/s",
        Better::Higher,
    ),
    row(
        BULK_UP_4,
        "iperf3 client->server, 4 streams",
        "Gbit/s",
        Better::Higher,
    ),
    row(
        BULK_DOWN_1,
        "iperf3 -R server->client, 1 stream",
        "Gbit/s",
        Better::Higher,
    ),
    row(
        BULK_DOWN_4,
        "iperf3 -R server->client, 4 streams",
        "Gbit/s",
        Better::Higher,
    ),
    row(
        RETRANSMITS_UP_4,
        "kernel client's retransmissions, iperf3 -P 4",
        "segments",
        Better::Lower,
    ),
    row(
        SERVER_DROPS_4,
        "frames tcpstack lost on receive, iperf3 -P 4 both ways",
        "frames",
        Better::Lower,
    ),
    row(
        RR_RATE,
        "1-byte request/response rate",
        "trans/s",
        Better::Higher,
    ),
    row(RR_P50, "request/response latency p50", "us", Better::Lower),
    row(RR_P99, "request/response latency p99", "us", Better::Lower),
    row(
        RR_CPU,
        "server CPU during request/response (1 connection)",
        "cores",
        Better::Lower,
    ),
    row(
        CRR_RATE,
        "connection rate (connect, 1-byte rr, close)",
        "conn/s",
        Better::Higher,
    ),
    row(
        CONNECT_P50,
        "handshake latency p50 (client)",
        "us",
        Better::Lower,
    ),
    row(
        CONNECT_P99,
        "handshake latency p99 (client)",
        "us",
        Better::Lower,
    ),
    row(
        CPU_PER_GB,
        "server CPU per GB (iperf3, both directions)",
        "s/GB",
        Better::Lower,
    ),
    row(
        CPU_PER_10K,
        "server CPU per 10k connections (crr)",
        "s/10k",
        Better::Lower,
    ),
    row(
        IDLE_RSS,
        "server RSS, 10 000 idle connections",
        "MB",
        Better::Lower,
    ),
];

/// The median of the values (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// What the rounds measured for one row and one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    pub median: Option<f64>,
    pub samples: Vec<f64>,
    /// One line per failed measurement: the command and what went wrong.
    pub failures: Vec<String>,
}

/// Everything measured so far, by row id and target.
#[derive(Debug, Default)]
pub struct Results {
    cells: BTreeMap<(&'static str, Target), Cell>,
    /// The server's receive-loss counters over each -P 4 run of tcpstack.
    pub receive_loss: Vec<(&'static str, Target, crate::bench::load::ReceiveLoss)>,
}

/// The receive-loss counters of every -P 4 run, for `report.json`.
pub fn receive_loss_json(results: &Results) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = results
        .receive_loss
        .iter()
        .map(|(row, target, lost)| {
            serde_json::json!({ "row": row, "target": target, "counters": lost })
        })
        .collect();
    serde_json::Value::Array(runs)
}

impl Results {
    pub fn record(&mut self, row: &'static str, target: Target, value: f64) {
        self.cells
            .entry((row, target))
            .or_default()
            .samples
            .push(value);
    }

    pub fn fail(&mut self, row: &'static str, target: Target, why: &str) {
        self.cells
            .entry((row, target))
            .or_default()
            .failures
            .push(why.to_owned());
    }

    pub fn cell(&self, row: &str, target: Target) -> Cell {
        let mut cell = self
            .cells
            .iter()
            .find(|((r, t), _)| *r == row && *t == target)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        cell.median = median(&cell.samples);
        cell
    }
}

/// tcpstack / kernel, when both medians exist and the kernel's is not zero.
pub fn ratio(tcpstack: Option<f64>, kernel: Option<f64>) -> Option<f64> {
    match (tcpstack, kernel) {
        (Some(t), Some(k)) if k != 0.0 => Some(t / k),
        _ => None,
    }
}

/// A value in its row's unit, with the precision that unit deserves.
pub fn format_value(unit: &str, value: f64) -> String {
    match unit {
        "Gbit/s" => format!("{value:.2}"),
        "s/GB" | "s/10k" => format!("{value:.3}"),
        "MB" => format!("{value:.1}"),
        "s" | "cores" => format!("{value:.2}"),
        _ => format!("{value:.0}"),
    }
}

/// What the table shows in a cell: the median, or why there is none (with the number of its
/// note below the table).
fn shown(row: &RowSpec, cell: &Cell, notes: &[Note]) -> String {
    match (cell.median, cell.failures.first()) {
        (Some(m), None) => format_value(row.unit, m),
        (Some(m), Some(_)) => format!(
            "{} ({}/{} failed)",
            format_value(row.unit, m),
            cell.failures.len(),
            cell.failures.len() + cell.samples.len()
        ),
        (None, Some(why)) => {
            let summary = summary(why);
            let number = notes
                .iter()
                .position(|n| n.summary == summary)
                .map_or(String::new(), |i| format!(" [{}]", i + 1));
            format!("failed: {}{number}", cut(&summary, 36))
        }
        (None, None) => "-".into(),
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(max - 3).collect();
        format!("{kept}...")
    }
}

/// A failure in one line (the full text is in the JSON): what a server said when it printed
/// something (its panic message, or its first line), command lines shortened to their program.
pub fn summary(why: &str) -> String {
    let server_said = why.split_once("--- stderr ---").and_then(|(_, stderr)| {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
            let place = lines[i]
                .split_once("panicked at ")
                .map_or("", |(_, p)| p.trim_end_matches(':'));
            let message = lines.get(i + 1).copied().unwrap_or("");
            return Some(format!("server panicked: {message} ({place})"));
        }
        lines
            .iter()
            .find(|l| !l.starts_with("Stack backtrace"))
            .map(|l| format!("server: {l}"))
    });
    let text = server_said.unwrap_or_else(|| why.to_owned());
    without_command_lines(text.lines().next().unwrap_or("").trim())
}

/// A distinct failure: its summary, the first line of one occurrence (with its command), and
/// how many measurements failed this way.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub summary: String,
    pub detail: String,
    pub count: usize,
}

/// The distinct failures, in table order.
pub fn notes(results: &Results) -> Vec<Note> {
    let mut notes: Vec<Note> = Vec::new();
    for row in ROWS {
        for target in Target::ALL {
            for why in results.cell(row.id, target).failures {
                let summary = summary(&why);
                match notes.iter_mut().find(|n| n.summary == summary) {
                    Some(note) => note.count += 1,
                    None => notes.push(Note {
                        summary,
                        detail: why.lines().next().unwrap_or("").trim().to_owned(),
                        count: 1,
                    }),
                }
            }
        }
    }
    notes
}

/// The notes as lines for the terminal.
pub fn notes_text(notes: &[Note]) -> String {
    let mut out = String::new();
    for (i, note) in notes.iter().enumerate() {
        let _ = writeln!(
            out,
            "[{}] {} ({} measurement{})\n    {}",
            i + 1,
            note.summary,
            note.count,
            if note.count == 1 { "" } else { "s" },
            note.detail
        );
    }
    out
}

/// Replaces each backquoted command line with its program's name (and a tcpstack subcommand).
fn without_command_lines(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&program_of(&rest[start + 1..start + 1 + len]));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

fn program_of(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let words = match words.as_slice() {
        ["ip", "netns", "exec", _, rest @ ..] => rest,
        all => all,
    };
    let Some(first) = words.first() else {
        return String::new();
    };
    let program = first.rsplit('/').next().unwrap_or(first);
    match words.get(1) {
        Some(sub) if program == "tcpstack" && !sub.starts_with('-') => format!("{program} {sub}"),
        _ => program.to_owned(),
    }
}

fn shown_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

/// The machine and the run, as the report states them.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub quick: bool,
    pub rounds: usize,
    pub bulk_secs: u64,
    pub rr_secs: u64,
    pub crr_workers: usize,
    pub idle_connections: usize,
    pub started_utc: String,
    pub elapsed_secs: f64,
    pub machine: Machine,
    /// The exact client command lines, with placeholders for the server address.
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub link: String,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    id: &'a str,
    name: &'a str,
    unit: &'a str,
    better: Better,
    kernel: Cell,
    xdp: Cell,
    raw: Cell,
    /// tcpstack / kernel of the medians.
    ratio: BTreeMap<&'static str, Option<f64>>,
}

/// The whole report as `target/bench/report.json` holds it.
pub fn to_json(results: &Results, run: &RunInfo) -> serde_json::Value {
    let rows: Vec<JsonRow> = ROWS
        .iter()
        .map(|row| {
            let kernel = results.cell(row.id, Target::Kernel);
            let xdp = results.cell(row.id, Target::Xdp);
            let raw = results.cell(row.id, Target::Raw);
            let ratio = BTreeMap::from([
                ("xdp", ratio(xdp.median, kernel.median)),
                ("raw", ratio(raw.median, kernel.median)),
            ]);
            JsonRow {
                id: row.id,
                name: row.name,
                unit: row.unit,
                better: row.better,
                kernel,
                xdp,
                raw,
                ratio,
            }
        })
        .collect();
    serde_json::json!({ "run": run, "rows": rows })
}

/// The rows as a text table: medians per target and the ratios.
pub fn table(results: &Results) -> String {
    let notes = notes(results);
    let header = [
        "row", "unit", "kernel", "xdp", "raw", "xdp/kern", "raw/kern",
    ]
    .map(String::from);
    let mut lines = vec![header.to_vec()];
    for row in ROWS {
        let cells = Target::ALL.map(|t| results.cell(row.id, t));
        let better = match row.better {
            Better::Higher => "^",
            Better::Lower => "v",
        };
        lines.push(vec![
            format!("{} {better}", row.name),
            row.unit.to_owned(),
            shown(row, &cells[0], &notes),
            shown(row, &cells[1], &notes),
            shown(row, &cells[2], &notes),
            shown_ratio(ratio(cells[1].median, cells[0].median)),
            shown_ratio(ratio(cells[2].median, cells[0].median)),
        ]);
    }
    let mut out = aligned(&lines);
    out.push_str(
        "^ higher is better, v lower is better; ratios are tcpstack / kernel of the medians\n",
    );
    out
}

/// `lines` as a terminal table: the first line a header underlined with dashes, the first two
/// columns (name, unit) left-aligned, the figures right-aligned.
pub fn aligned(lines: &[Vec<String>]) -> String {
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (text, width))| {
                if c < 2 {
                    format!("{text:<width$}")
                } else {
                    format!("{text:>width$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    out
}

/// The README section: how to run it, on what it was measured, and the table.
pub fn markdown(results: &Results, run: &RunInfo) -> String {
    let mut md = String::new();
    let m = &run.machine;
    let _ = writeln!(md, "## Benchmark: tcpstack against the kernel's TCP\n");
    let _ = writeln!(
        md,
        "`cargo xtask bench` (as root) builds the release binary, creates two namespaces joined by \
         a veth pair, and runs the same load against the kernel's TCP and against `tcpstack serve` \
         (xdp and raw backends) in namespace A, in alternation over several rounds, from stock \
         clients in namespace B: `iperf3 -c -J` for bulk throughput, `tcpstack bench --backend \
         kernel --mode rr|crr` (the kernel's TCP as the client) for request/response and \
         connection rates (a small epoll echo server on the kernel's TCP is the kernel side), \
         /proc for the server's CPU time and memory (the -P 4 rows add the kernel client's \
         retransmissions and the frames tcpstack lost on receive). The loss rows (their own \
         table below) drop 1 %, 2 % or 3 % of the segments either way on a bridge between the \
         namespaces, with the kernel at the machine's default congestion control and at CUBIC, \
         and tcpstack with each of its algorithms, plus a 32 MB echo through 2 % loss. \
         It prints the medians and writes `target/bench/report.json` and `target/bench/report.svg`. \
         The full run (5 rounds of 10 s tests, 2 of the 8 s loss rows) takes about 30 minutes, \
         `cargo xtask bench --quick` (2 rounds of 2 s tests, the 2 % loss rows once) about three; \
         `--rounds N` and `--no-build` adjust it.\n"
    );
    let _ = writeln!(
        md,
        "Measured {} ({} round{}, {} s per bulk test, {} s per rr/crr test) on {} cores ({}), \
         Linux {}, {}:\n",
        run.started_utc,
        run.rounds,
        if run.rounds == 1 { "" } else { "s" },
        run.bulk_secs,
        run.rr_secs,
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.link
    );
    let _ = writeln!(
        md,
        "| | unit | kernel | tcpstack xdp | tcpstack raw | xdp / kernel | raw / kernel |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|--:|--:|--:|");
    let notes = notes(results);
    for row in ROWS {
        let cells = Target::ALL.map(|t| results.cell(row.id, t));
        let better = match row.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        let _ = writeln!(
            md,
            "| {} ({better}) | {} | {} | {} | {} | {} | {} |",
            row.name,
            row.unit,
            shown(row, &cells[0], &notes),
            shown(row, &cells[1], &notes),
            shown(row, &cells[2], &notes),
            shown_ratio(ratio(cells[1].median, cells[0].median)),
            shown_ratio(ratio(cells[2].median, cells[0].median)),
        );
    }
    for (i, note) in notes.iter().enumerate() {
        let _ = writeln!(md, "\n[{}] {}", i + 1, note.summary.replace('|', "\\|"));
    }
    let _ = writeln!(
        md,
        "\nCaveats: both sides share the same {} cores with the clients; CPU time is the server \
         process's utime+stime, which for the kernel leaves out the softirq work done in other \
         contexts (so the kernel's CPU rows flatter it); the kernel's memory row leaves out socket \
         buffers, which live in kernel memory, while tcpstack's RSS includes its UMEM and buffers; \
         the kernel's echo server is xtask's own (a debug build), which if anything handicaps the \
         kernel.",
        m.cpus
    );
    md
}

/// A grouped horizontal bar chart of the ratios (xdp and raw per row) on a log scale centred
/// on 1, written by hand.
pub fn svg(results: &Results) -> String {
    let rows: Vec<(RowSpec, Vec<Option<f64>>)> = ROWS
        .iter()
        .map(|row| {
            let kernel = results.cell(row.id, Target::Kernel).median;
            let ratios = Target::TCPSTACK
                .iter()
                .map(|t| ratio(results.cell(row.id, *t).median, kernel))
                .collect();
            (*row, ratios)
        })
        .collect();
    let series = ["xdp backend".to_owned(), "raw backend".to_owned()];
    ratio_chart(
        "tcpstack / kernel (medians; log scale, 1 = same as the kernel)",
        &series,
        &rows,
    )
}

/// A grouped horizontal bar chart of ratios on a log scale centred on 1: per row, one bar per
/// series (a missing ratio is said in words).
pub fn ratio_chart(title: &str, series: &[String], rows: &[(RowSpec, Vec<Option<f64>>)]) -> String {
    const COLORS: [&str; 8] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    const LEFT: f64 = 330.0;
    const PLOT: f64 = 520.0;
    const ROW_H: f64 = 34.0;
    const TOP: f64 = 60.0;
    const MAX_LOG2: f64 = 4.0; // the axis spans 1/16 .. 16
    let bar_h = 13.0;
    let row_h = ROW_H.max(8.0 + bar_h * series.len() as f64);
    let height = TOP + row_h * rows.len() as f64 + 50.0;
    let width = LEFT + PLOT + 90.0;
    let x_of = |r: f64| {
        let l = r.log2().clamp(-MAX_LOG2, MAX_LOG2);
        LEFT + PLOT / 2.0 + l / MAX_LOG2 * PLOT / 2.0
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        xml_escape(title)
    );
    for (i, (color, label)) in COLORS.iter().zip(series).enumerate() {
        let x = 10.0 + i as f64 * 180.0;
        let label = xml_escape(label);
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="32" width="12" height="12" fill="{color}"/><text x="{}" y="42">{label}</text>"#,
            x + 16.0
        );
    }
    for k in -4i32..=4 {
        let r = 2f64.powi(k);
        let x = x_of(r);
        let label = if k >= 0 {
            format!("{}", 1u32 << k)
        } else {
            format!("1/{}", 1u32 << -k)
        };
        let stroke = if k == 0 { "#000" } else { "#ddd" };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="{stroke}"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            height - 40.0,
            height - 25.0
        );
    }
    for (i, (row, ratios)) in rows.iter().enumerate() {
        let y = TOP + row_h * i as f64;
        let better = match row.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text><text x="{}" y="{}" text-anchor="end" fill="#777" font-size="10">{} ({better})</text>"##,
            LEFT - 8.0,
            y + 14.0,
            xml_escape(row.name),
            LEFT - 8.0,
            y + 27.0,
            xml_escape(row.unit)
        );
        for (j, ((color, name), r)) in COLORS.iter().zip(series).zip(ratios).enumerate() {
            let bar_y = y + 4.0 + j as f64 * bar_h;
            let center = x_of(1.0);
            match *r {
                Some(r) if r > 0.0 => {
                    let x = x_of(r);
                    let (x0, w) = if x >= center {
                        (center, x - center)
                    } else {
                        (x, center - x)
                    };
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x0:.1}" y="{bar_y}" width="{:.1}" height="11" fill="{color}"/><text x="{:.1}" y="{}" font-size="10">{r:.2}</text>"#,
                        w.max(1.0),
                        LEFT + PLOT + 6.0,
                        bar_y + 9.0
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{}" font-size="10" fill="#a00">{}: no ratio</text>"##,
                        center + 4.0,
                        bar_y + 9.0,
                        xml_escape(name)
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn ratios_need_both_medians_and_a_nonzero_kernel() {
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(None, Some(4.0)), None);
        assert_eq!(ratio(Some(2.0), Some(0.0)), None);
    }

    fn sample() -> Results {
        let mut results = Results::default();
        results.record(RR_RATE, Target::Kernel, 20_000.0);
        results.record(RR_RATE, Target::Kernel, 30_000.0);
        results.record(RR_RATE, Target::Kernel, 25_000.0);
        results.record(RR_RATE, Target::Xdp, 10_000.0);
        results.fail(
            RR_RATE,
            Target::Raw,
            "`ip netns exec tcps-bench-b tcpstack bench ...` failed (exit status: 1): connection refused",
        );
        results
    }

    #[test]
    fn table_shows_medians_ratios_and_failures() {
        let table = table(&sample());
        let line = table
            .lines()
            .find(|l| l.starts_with("1-byte request/response rate"))
            .expect("the rr row");
        assert!(line.contains("25000"), "{line}");
        assert!(line.contains("10000"), "{line}");
        assert!(line.contains("0.40"), "{line}");
        assert!(
            line.contains("failed: tcpstack bench failed (exit statu... [1]"),
            "{line}"
        );
        let notes = notes(&sample());
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].count, 1);
        assert!(notes[0].detail.starts_with("`ip netns exec tcps-bench-b"));
        let rows = table.lines().count();
        assert_eq!(rows, ROWS.len() + 3, "header, rule, rows, legend");
    }

    #[test]
    fn json_has_every_row_with_cells_and_ratios() {
        let run = RunInfo {
            quick: true,
            rounds: 3,
            bulk_secs: 2,
            rr_secs: 2,
            crr_workers: 4,
            idle_connections: 10_000,
            started_utc: "2026-11-22 00:00:00 UTC".into(),
            elapsed_secs: 100.0,
            machine: Machine {
                cpus: 2,
                cpu_model: "test".into(),
                kernel: "6.18".into(),
                link: "veth".into(),
            },
            commands: vec![],
        };
        let json = to_json(&sample(), &run);
        let rows = json["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), ROWS.len());
        let rr = rows
            .iter()
            .find(|r| r["id"] == RR_RATE)
            .expect("the rr row");
        assert_eq!(rr["kernel"]["median"], 25_000.0);
        assert_eq!(rr["kernel"]["samples"].as_array().map(Vec::len), Some(3));
        assert_eq!(rr["ratio"]["xdp"], 0.4);
        assert!(rr["ratio"]["raw"].is_null());
        assert_eq!(rr["raw"]["failures"].as_array().map(Vec::len), Some(1));
        assert_eq!(json["run"]["machine"]["cpus"], 2);
        let md = markdown(&sample(), &run);
        assert!(md.contains(
            "| 1-byte request/response rate (higher is better) | trans/s | 25000 | 10000 | failed:"
        ));
    }

    #[test]
    fn svg_is_one_document_with_a_bar_per_ratio() {
        let svg = svg(&sample());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        // One bar (xdp for the rr row) plus the two legend swatches and the background.
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(">0.40</text>"));
        assert!(svg.contains("raw backend: no ratio"));
    }

    #[test]
    fn reasons_name_programs_and_quote_the_server() {
        let start =
            "starting `ip netns exec tcps-bench-a /w/target/release/tcpstack serve --port 7`: \
                     `ip netns exec tcps-bench-a /w/target/release/tcpstack serve --port 7` exited \
                     (exit status: 1) without printing \"listening on\"\n--- stdout ---\n\n\
                     --- stderr ---\nError: no eBPF object\n\nStack backtrace:\n 0: x";
        assert_eq!(summary(start), "server: Error: no eBPF object");
        let panic = start.replace(
            "Error: no eBPF object",
            "thread 'main' (13129) panicked at tcpstack/src/endpoint/mod.rs:65:9:\nnot yet implemented",
        );
        assert_eq!(
            summary(&panic),
            "server panicked: not yet implemented (tcpstack/src/endpoint/mod.rs:65:9)"
        );
        let client = "`ip netns exec tcps-bench-b iperf3 -c 198.18.1.1 -J` (exit status: 1): iperf3 reported: busy";
        assert_eq!(
            summary(client),
            "iperf3 (exit status: 1): iperf3 reported: busy"
        );
        assert_eq!(summary("no `bench` here"), "no bench here");
        assert_eq!(summary("odd ` quote"), "odd ` quote");
    }
}
