//! `tcpstack connect` (our stack opening the connection) against the kernel's TCP in B.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tcpstack_integration::*;

backend_tests!(
    connect_transfers_and_closes,
    connect_to_a_closed_port_is_refused,
    connect_reset_by_the_peer_fails,
);

const PORT: u16 = 9000;

/// Runs `tcpstack connect` in namespace A with stdin from `input`, stdout into `output`.
fn connect(lab: &Lab, backend: Backend, port: u16, input: &str, output: &str) -> Result<Process> {
    let script = format!(
        "exec {} connect {}:{port} --iface {} --backend {backend} < {input} > {output}",
        require_tcpstack_bin()?.display(),
        lab.addr_b(),
        lab.spec.if_a
    );
    lab.spawn_in(lab.ns_a(), &["sh", "-c", &script])
}

/// Accepts `client`'s connection on a kernel listener, giving up after `timeout` or when the
/// client exits first.
fn accept_one(
    listener: &TcpListener,
    client: &mut Process,
    timeout: Duration,
) -> Result<std::net::TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = client.try_wait()? {
            bail!("tcpstack connect exited ({status}) before the kernel accepted its connection");
        }
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e).context("accepting tcpstack's connection"),
        }
    }
}

/// 1 MB up, our FIN (stdin's end), 1 MB down, the kernel's FIN: exit 0, both digests intact.
fn connect_transfers_and_closes(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let listener = lab.peer_listen(PORT)?;
    let request = pattern(1 << 20, 21);
    let response = pattern(1 << 20, 22);
    let input = lab.dir.join("request");
    let output = lab.dir.join("response");
    std::fs::write(&input, &request)?;
    let mut client = connect(
        &lab,
        backend,
        PORT,
        &input.to_string_lossy(),
        &output.to_string_lossy(),
    )?;
    let mut stream = accept_one(&listener, &mut client, Duration::from_secs(20))
        .with_context(|| client.transcript())?;
    let mut received = Vec::new();
    // Until tcpstack's FIN: it closes first; then the response and the kernel's FIN.
    stream
        .read_to_end(&mut received)
        .with_context(|| client.transcript())?;
    stream.write_all(&response)?;
    drop(stream);
    let status = client.wait_timeout(Duration::from_secs(60))?;
    ensure!(
        status.success(),
        "tcpstack connect exited with {status}\n{}",
        client.transcript()
    );
    ensure!(
        sha256_hex(&received) == sha256_hex(&request),
        "the kernel received {} bytes, sha256 {}; sent {} bytes",
        received.len(),
        sha256_hex(&received),
        request.len()
    );
    let got = std::fs::read(&output)?;
    ensure!(
        sha256_hex(&got) == sha256_hex(&response),
        "tcpstack printed {} bytes, sha256 {}; the kernel sent {}",
        got.len(),
        sha256_hex(&got),
        response.len()
    );
    Ok(())
}

/// Nothing listens on the port: the kernel answers the SYN with RST, and `connect` says
/// "connection refused" and exits 1.
fn connect_to_a_closed_port_is_refused(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let mut client = connect(&lab, backend, PORT + 1, "/dev/null", "/dev/null")?;
    let status = client.wait_timeout(Duration::from_secs(20))?;
    let stderr = client.stderr().join("\n");
    ensure!(
        status.code() == Some(1) && stderr.contains("connection refused"),
        "expected exit 1 with \"connection refused\", got {status}\n{}",
        client.transcript()
    );
    Ok(())
}

/// The kernel accepts and aborts (RST): `connect` fails instead of reporting a clean close.
fn connect_reset_by_the_peer_fails(backend: Backend) -> Result<()> {
    let lab = Lab::new()?;
    let listener = lab.peer_listen(PORT)?;
    let mut client = connect(&lab, backend, PORT, "/dev/null", "/dev/null")?;
    let stream = accept_one(&listener, &mut client, Duration::from_secs(20))
        .with_context(|| client.transcript())?;
    set_linger_zero(&stream)?;
    drop(stream);
    let status = client.wait_timeout(Duration::from_secs(20))?;
    if status.success() {
        bail!(
            "tcpstack connect exited 0 after a reset\n{}",
            client.transcript()
        );
    }
    Ok(())
}
