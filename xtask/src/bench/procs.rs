//! Processes of the benchmark: clients run to completion with a deadline, the servers' CPU time
//! and memory read from /proc, and the kernel-side echo server.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Set by SIGINT/SIGTERM: every wait of the benchmark gives up, and cleanup runs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C and SIGTERM make [`check_interrupt`] fail instead of killing xtask, so the
/// servers and namespaces are always removed. Children run in their own process groups and
/// never see the terminal's Ctrl-C.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
    }
}

pub fn check_interrupt() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) on Ctrl-C.
pub fn pause(duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        check_interrupt()?;
        thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
    }
    check_interrupt()
}

/// A command as the report shows it.
pub fn describe(cmd: &Command) -> String {
    tcpstack_integration::describe(cmd)
}

/// Kills the child's process group if it is still running when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill has no memory-safety preconditions; the group is the child's own.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// What a client printed and how it ended.
pub struct ClientOutput {
    pub command: String,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ClientOutput {
    /// Its stdout when it succeeded; otherwise an error naming the command, with the end of
    /// what it printed.
    pub fn success(self) -> Result<String> {
        if !self.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.command,
                self.status,
                tail(&format!("{}\n{}", self.stderr.trim(), self.stdout.trim()))
            );
        }
        Ok(self.stdout)
    }
}

/// A client that did not finish in time: the server it talks to is likely wedged, and the
/// other loads against it in this round are skipped.
#[derive(Debug)]
pub struct Hung {
    pub command: String,
    pub timeout: Duration,
}

impl std::fmt::Display for Hung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` did not finish within {:?} (killed)",
            self.command, self.timeout
        )
    }
}

impl std::error::Error for Hung {}

/// Whether a client in `error`'s chain hung.
pub fn hung(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<Hung>())
}

/// Runs a client to completion within `timeout` (killed after that, or on Ctrl-C).
pub fn run_client(mut cmd: Command, timeout: Duration, scratch: &Path) -> Result<ClientOutput> {
    let command = describe(&cmd);
    let out_path = scratch.join("client.stdout");
    let err_path = scratch.join("client.stderr");
    let stdout = File::create(&out_path).context("creating the client's stdout file")?;
    let stderr = File::create(&err_path).context("creating the client's stderr file")?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start `{command}`: is it installed?"))?;
    let mut child = ChildGuard(child);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted while `{command}` ran");
        }
        if Instant::now() >= deadline {
            return Err(Hung { command, timeout }.into());
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(ClientOutput {
        command,
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    })
}

/// The last few hundred characters of a text, on one line.
pub fn tail(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = flat.chars().collect();
    if chars.len() <= 400 {
        flat
    } else {
        format!(
            "...{}",
            chars[chars.len() - 400..].iter().collect::<String>()
        )
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let (utime, stime) =
        parse_stat_times(&stat).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat}"))?;
    Ok((utime + stime) as f64 / ticks)
}

/// utime and stime (fields 14 and 15) of a /proc/PID/stat line; the command name may contain
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state).
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// Resident memory of a process in bytes, from /proc/PID/status.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises this process's open-file limit to its hard limit (the idle-connections row holds
/// 10 000 sockets); the new soft limit.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(limit.rlim_cur)
}

/// One connection of the echo server: what is still to be written back, and whether the peer
/// has finished sending.
struct EchoConn {
    stream: TcpStream,
    pending: Vec<u8>,
    peer_done: bool,
    /// Registered for EPOLLOUT (something is pending) rather than EPOLLIN.
    waiting_to_write: bool,
}

/// The kernel side of the rr, crr and idle-connection rows: a single-threaded epoll echo server
/// on the kernel's TCP (Nagle off, as tcpstack's echo), the fair counterpart of
/// `tcpstack serve --app echo`. Runs until killed; `cargo xtask bench` starts it in namespace A
/// as `xtask bench --kernel-echo-server ADDR:PORT`.
pub fn kernel_echo_server(addr: SocketAddrV4) -> Result<()> {
    raise_nofile_limit()?;
    let listener = listen(addr, LISTEN_BACKLOG).with_context(|| format!("listening on {addr}"))?;
    let epoll = Epoll::new()?;
    let listener_fd = listener.as_raw_fd();
    epoll.add(listener_fd, libc::EPOLLIN as u32)?;
    println!("kernel echo server listening on {addr}");
    io::stdout().flush()?;
    let mut conns: HashMap<RawFd, EchoConn> = HashMap::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let ready = epoll.wait(&mut events)?;
        for event in &events[..ready] {
            let fd = event.u64 as RawFd;
            if fd == listener_fd {
                accept_all(&listener, &epoll, &mut conns);
                continue;
            }
            let Some(conn) = conns.get_mut(&fd) else {
                continue;
            };
            if serve_echo(conn, &mut buffer).is_err() || (conn.peer_done && conn.pending.is_empty())
            {
                // Dropping the stream closes it: our FIN after the peer's.
                if let Some(conn) = conns.remove(&fd) {
                    let _ = epoll.delete(fd);
                    let _ = conn.stream.shutdown(Shutdown::Write);
                }
                continue;
            }
            let waiting_to_write = !conn.pending.is_empty();
            if waiting_to_write != conn.waiting_to_write {
                conn.waiting_to_write = waiting_to_write;
                let wanted = if waiting_to_write {
                    libc::EPOLLOUT
                } else {
                    libc::EPOLLIN
                };
                let _ = epoll.modify(fd, wanted as u32);
            }
        }
    }
}

/// The echo server's accept queue: std's 128 overflows when the server is descheduled for a few
/// milliseconds while the idle-connections row connects (each overflow costs that client a
/// one-second SYN retransmission).
const LISTEN_BACKLOG: libc::c_int = 4096;

/// A non-blocking listener with the given backlog (std offers no choice of backlog).
fn listen(addr: SocketAddrV4, backlog: libc::c_int) -> io::Result<TcpListener> {
    // SAFETY: socket has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the listener closes it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the option value is a c_int and the address a sockaddr_in, with their sizes.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
            && libc::bind(
                fd,
                (&sockaddr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) == 0
            && libc::listen(fd, backlog) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

fn accept_all(listener: &TcpListener, epoll: &Epoll, conns: &mut HashMap<RawFd, EchoConn>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
                    continue;
                }
                let fd = stream.as_raw_fd();
                if epoll.add(fd, libc::EPOLLIN as u32).is_ok() {
                    conns.insert(
                        fd,
                        EchoConn {
                            stream,
                            pending: Vec::new(),
                            peer_done: false,
                            waiting_to_write: false,
                        },
                    );
                }
            }
            // WouldBlock: all accepted; anything else (EMFILE, a reset in the queue): try
            // again on the next readiness.
            Err(_) => return,
        }
    }
}

/// Flushes what is pending, then reads and echoes until the socket would block.
fn serve_echo(conn: &mut EchoConn, buffer: &mut [u8]) -> io::Result<()> {
    if !flush(conn)? {
        return Ok(());
    }
    while !conn.peer_done {
        match conn.stream.read(buffer) {
            Ok(0) => conn.peer_done = true,
            Ok(n) => {
                conn.pending.extend_from_slice(&buffer[..n]);
                if !flush(conn)? {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes pending bytes; whether everything went out.
fn flush(conn: &mut EchoConn) -> io::Result<bool> {
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A minimal epoll(7) wrapper, level-triggered.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `event` is a valid epoll_event; the kernel checks the fds.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut event) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn add(&self, fd: RawFd, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events)
    }

    fn modify(&self, fd: RawFd, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events)
    }

    fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        loop {
            // SAFETY: `events` is a writable buffer of `events.len()` epoll_events.
            let n = unsafe {
                libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as libc::c_int, -1)
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_counted_after_the_command_name() {
        let stat = "4242 (tcp (stack) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 100 12345 678";
        assert_eq!(parse_stat_times(stat), Some((250, 75)));
        assert_eq!(parse_stat_times("garbage"), None);
    }

    #[test]
    fn vm_rss_in_bytes() {
        let status = "Name:\ttcpstack\nVmPeak:\t  9999 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("our own stat") >= 0.0);
        assert!(rss_bytes(pid).expect("our own status") > 0);
    }

    #[test]
    fn echo_server_echoes_and_closes_after_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = match listener.local_addr().expect("addr") {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not IPv4: {other}"),
        };
        drop(listener);
        thread::spawn(move || kernel_echo_server(addr));
        let mut stream = (0..100)
            .find_map(|_| {
                TcpStream::connect(addr).ok().or_else(|| {
                    thread::sleep(Duration::from_millis(20));
                    None
                })
            })
            .expect("the echo server accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = stream.try_clone().expect("clone");
        let sent = data.clone();
        let sender = thread::spawn(move || {
            writer.write_all(&sent)?;
            writer.shutdown(Shutdown::Write)
        });
        let mut back = Vec::new();
        stream
            .read_to_end(&mut back)
            .expect("read until the server's FIN");
        sender.join().expect("sender").expect("send");
        assert_eq!(back.len(), data.len());
        assert!(back == data);
    }
}
