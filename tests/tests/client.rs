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
    connect_abort_resets_the_kernel_peer,
);

const PORT: u16 = 9000;

/// Runs `tcpstack connect` in namespace A with stdin from `input`, stdout into `output`.
fn connect(lab: &Lab, backend: Backend, port: u16, input: &str, output: &str) -> Result<Process> {
    connect_with(lab, backend, port, input, output, "")
}

/// [`connect`] with more options (`extra`, as the shell reads them).
fn connect_with(
    lab: &Lab,
    backend: Backend,
    port: u16,
    input: &str,
    output: &str,
    extra: &str,
) -> Result<Process> {
    let script = format!(
        "exec {} connect {}:{port} --iface {} --backend {backend} {extra} < {input} > {output}",
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

/// Our side aborts an established connection: `connect --abort-at-eof` reads stdin from a
/// FIFO, so the kernel has read what came through it before the test closes it; at that EOF
/// tcpstack sends RST, and the kernel's next read fails with ECONNRESET (a FIN would read as
/// a clean end of stream). `connect` itself exits 0: the abort was asked for.
fn connect_abort_resets_the_kernel_peer(backend: Backend) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let lab = Lab::new()?;
    let listener = lab.peer_listen(PORT)?;
    let fifo = lab.dir.join("stdin");
    run(std::process::Command::new("mkfifo").arg(&fifo))?;
    let mut client = connect_with(
        &lab,
        backend,
        PORT,
        &fifo.to_string_lossy(),
        "/dev/null",
        "--abort-at-eof",
    )?;
    // Non-blocking, so that a client that never opens its end fails the test, not hangs it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stdin = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(file) => break file,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                if let Some(status) = client.try_wait()? {
                    bail!(
                        "tcpstack connect exited ({status})\n{}",
                        client.transcript()
                    );
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("opening the FIFO for writing"),
        }
    };
    stdin.write_all(b"hello")?;
    let mut stream = accept_one(&listener, &mut client, Duration::from_secs(20))
        .with_context(|| client.transcript())?;
    let mut hello = [0u8; 5];
    stream
        .read_exact(&mut hello)
        .with_context(|| client.transcript())?;
    ensure!(&hello == b"hello", "the kernel read {hello:?}");
    drop(stdin);
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => bail!("expected ECONNRESET, got {e}\n{}", client.transcript()),
        Ok(0) => bail!("a clean end of stream (FIN), not a reset"),
        Ok(n) => bail!("{n} unexpected bytes"),
    }
    let status = client.wait_timeout(Duration::from_secs(20))?;
    ensure!(
        status.success(),
        "tcpstack connect exited with {status} after the abort it was asked for\n{}",
        client.transcript()
    );
    Ok(())
}
