//! A SYN flood (issue 11): hping3 in B floods tcpstack's echo port as fast as it can, from one
//! spoofed address inside the lab's own range (nobody's, so the SYN-ACKs go unanswered; never
//! --rand-source), while the kernel's TCP in B opens 200 real connections and echoes through
//! each. SYN cookies (RFC 4987) keep the half-open queue from locking them out: at least 99 %
//! complete, and the server's memory stays bounded. The flood and success rates are printed.

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tcpstack_integration::*;

const CONNECTIONS: usize = 200;
/// Connections opened at once.
const WORKERS: usize = 20;
/// How much the server's RSS may grow while flooded: the half-open queue and the accept
/// queue are bounded and SYN cookies keep no state.
const MAX_RSS_GROWTH_KB: u64 = 32 * 1024;
/// The flood lasts at least this long.
const FLOOD: Duration = Duration::from_secs(5);

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn syn_flood_with_200_real_connections() -> Result<()> {
    let lab = Lab::new()?;
    let json = lab.dir.join("stats.json");
    let json_arg = json.to_string_lossy().into_owned();
    let server = lab.serve(
        Backend::Xdp,
        ECHO_PORT,
        &[
            "--app",
            "echo",
            "--stats-json",
            &json_arg,
            "--stats-interval",
            "1",
        ],
    )?;
    let pid = server.process.pid();
    let rss_before = rss_kb(pid)?;
    // Inside the lab's /24 and assigned to nobody.
    let spoofed = Ipv4Addr::from(u32::from(lab.addr_a()) + 100);
    let target = lab.addr_a().to_string();
    let flood_started = Instant::now();
    let mut flood = lab.spawn_in(
        lab.ns_b(),
        &[
            "hping3",
            "-S",
            "--flood",
            "-p",
            &ECHO_PORT.to_string(),
            "-a",
            &spoofed.to_string(),
            &target,
        ],
    )?;
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();

    let next = std::sync::atomic::AtomicUsize::new(0);
    let completed: usize = thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut ok = 0;
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < CONNECTIONS {
                        let echoed = lab
                            .peer_connect(lab.addr_a(), ECHO_PORT)
                            .and_then(|stream| {
                                exchange(&stream, b"through the flood", true, usize::MAX)
                            });
                        if echoed.is_ok_and(|data| data == b"through the flood") {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    let connecting = started.elapsed().as_secs_f64();
    // A flood of FLOOD_SECONDS at least, so its rate is measured over a while; the statistics
    // file (rewritten every second) catches up meanwhile.
    let left = FLOOD.saturating_sub(flood_started.elapsed());
    thread::sleep(left.max(Duration::from_millis(1500)));
    let rss_after = rss_kb(pid)?;
    flood.interrupt(Duration::from_secs(5))?;
    let flood_secs = flood_started.elapsed().as_secs_f64();
    // hping3's own count, printed when interrupted: "N packets transmitted, ...".
    let transcript = flood.transcript();
    let sent: u64 = transcript
        .lines()
        .find_map(|l| {
            l.split(" packets transmitted")
                .next()
                .filter(|_| l.contains("packets transmitted"))
        })
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no count in hping3's output: {transcript}"))?;
    let report = read_json(&json)?;
    let cookies = report["endpoint"]["syn_cookies_sent"].as_u64().unwrap_or(0);
    let kernel_dropped = report["link"]["kernel_dropped"].as_u64().unwrap_or(0);
    println!(
        "SYN flood: hping3 sent {sent} SYNs in {flood_secs:.1} s ({:.0}/s) from {spoofed}; \
         tcpstack sent {cookies} SYN cookies, {kernel_dropped} frames were dropped at its rings; \
         {completed} of {CONNECTIONS} real connections completed ({:.1} %) in {connecting:.1} s; \
         RSS {rss_before} kB -> {rss_after} kB",
        sent as f64 / flood_secs,
        completed as f64 * 100.0 / CONNECTIONS as f64
    );
    ensure!(
        completed * 100 >= CONNECTIONS * 99,
        "only {completed} of {CONNECTIONS} connections completed under the flood"
    );
    ensure!(
        cookies > 0,
        "no SYN cookies sent: the flood did not fill the half-open queue"
    );
    ensure!(
        rss_after.saturating_sub(rss_before) <= MAX_RSS_GROWTH_KB,
        "RSS grew from {rss_before} kB to {rss_after} kB under the flood"
    );
    let mut server = server;
    server.assert_running()
}

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn read_json(path: &std::path::Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
