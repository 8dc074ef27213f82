//! The lab harness tested on its own, kernel to kernel: if these fail, the tcpstack tests
//! cannot be trusted either way.

use std::net::SocketAddrV4;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tcpstack_integration::*;

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn lab_links_the_namespaces_with_offload_off_and_removes_them() -> Result<()> {
    let lab = Lab::new()?;
    let (ns_a, ns_b) = (lab.ns_a().to_owned(), lab.ns_b().to_owned());
    let a = lab.addr_a().to_string();
    let b = lab.addr_b().to_string();
    lab.exec_in(&ns_b, &["ping", "-c", "1", "-W", "2", &a])?;
    lab.exec_in(&ns_a, &["ping", "-c", "1", "-W", "2", &b])?;
    for (ns, iface) in [(&ns_a, &lab.spec.if_a), (&ns_b, &lab.spec.if_b)] {
        let features = lab.exec_in(ns, &["ethtool", "-k", iface])?;
        ensure!(
            features.contains("tx-checksumming: off"),
            "tx checksum offload still on for {iface} in {ns}:\n{features}"
        );
    }

    let sleeper = lab.spawn_in(&ns_a, &["sleep", "600"])?;
    let pid = sleeper.pid();
    std::mem::forget(sleeper); // only the lab's teardown may stop it
    lab.destroy()?;
    let left = namespaces()?;
    ensure!(
        !left.contains(&ns_a) && !left.contains(&ns_b),
        "namespaces left: {left:?}"
    );
    ensure!(
        wait_until(Duration::from_secs(3), || Ok(!process_alive(pid)))?,
        "process {pid} in the lab survived its teardown"
    );
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    // A zombie child (exited, not reaped) is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn a_panicking_test_still_removes_its_lab() -> Result<()> {
    let names = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new().expect("lab");
        *names.lock().expect("lock") = Some((lab.ns_a().to_owned(), lab.ns_b().to_owned()));
        panic!("a test failing with its lab up");
    });
    ensure!(result.is_err());
    let (ns_a, ns_b) = names.into_inner()?.context("lab was created")?;
    let left = namespaces()?;
    ensure!(
        !left.contains(&ns_a) && !left.contains(&ns_b),
        "namespaces left: {left:?}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn sweep_removes_labs_of_dead_processes_only() -> Result<()> {
    let lab = Lab::new()?;
    let mut gone = Command::new("true").spawn()?;
    gone.wait()?;
    let stale = format!("{NAMESPACE_PREFIX}{}-0-a", gone.id());
    run(Command::new("ip").args(["netns", "add", &stale]))?;
    let removed = sweep()?;
    let left = namespaces()?;
    ensure!(
        removed.contains(&stale) && !left.contains(&stale),
        "stale lab not swept: {left:?}"
    );
    ensure!(
        left.iter().any(|n| n == lab.ns_a()),
        "sweep removed a live lab"
    );
    Ok(())
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn kernel_echo_through_nc_keeps_the_digest() -> Result<()> {
    let lab = Lab::new()?;
    let echo = EchoServer::start(lab.kernel_listen_a(7007)?)?;
    let data = pattern(1 << 20, 1);
    let input = lab.dir.join("input");
    let output = lab.dir.join("output");
    std::fs::write(&input, &data)?;
    let script = format!(
        "nc -N -w 30 {} {} < {} > {}",
        echo.addr.ip(),
        echo.addr.port(),
        input.display(),
        output.display()
    );
    lab.exec_in(lab.ns_b(), &["sh", "-c", &script])?;
    let echoed = std::fs::read(&output)?;
    ensure!(
        echoed.len() == data.len(),
        "{} of {} bytes came back",
        echoed.len(),
        data.len()
    );
    ensure!(sha256_hex(&echoed) == sha256_hex(&data), "digest differs");
    Ok(())
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn capture_of_a_kernel_echo_passes_the_conversation_check() -> Result<()> {
    let lab = Lab::new()?;
    let _echo = EchoServer::start(lab.kernel_listen_a(7008)?)?;
    let capture = lab.capture(lab.ns_b(), &lab.spec.if_b, "tcp port 7008")?;
    let data = pattern(100_000, 2);
    let stream = lab.peer_connect(lab.addr_a(), 7008)?;
    let client = match stream.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        other => anyhow::bail!("{other}"),
    };
    let echoed = exchange(&stream, &data, true, data.len() + 1)?;
    ensure!(echoed == data, "echo differs");
    drop(stream);
    std::thread::sleep(Duration::from_millis(200));
    let segments = capture.finish()?;
    let summary = check_conversation(
        &segments,
        client,
        SocketAddrV4::new(lab.addr_a(), 7008),
        data.len() as u32,
    )?;
    println!("kernel to kernel: {summary}");
    Ok(())
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test"]
fn loss_rule_drops_packets_and_kernel_tcp_still_delivers() -> Result<()> {
    let lab = Lab::lossy()?;
    let echo = EchoServer::start(lab.kernel_listen_a(7009)?)?;
    lab.add_loss(0.02)?;
    let data = pattern(4 << 20, 3);
    let stream = lab.peer_connect(lab.addr_a(), 7009)?;
    let echoed = exchange(&stream, &data, true, data.len() + 1)?;
    ensure!(
        sha256_hex(&echoed) == sha256_hex(&data),
        "digest differs under loss"
    );
    let dropped = dropped_packets(lab.loss_ns()?)?;
    ensure!(dropped > 0, "the loss rule dropped nothing");
    println!(
        "loss rule dropped {dropped} packets; {} bytes intact",
        data.len()
    );
    drop(echo);
    Ok(())
}
