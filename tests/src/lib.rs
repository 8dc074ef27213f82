//! The namespace lab: helpers for integration tests that run the kernel's TCP against tcpstack.
//!
//! A [`Lab`] is two network namespaces joined by a veth pair. Namespace A hosts tcpstack (started
//! with [`Lab::serve`] or [`Lab::tcpstack`]); namespace B hosts the peer, which is the kernel's own
//! TCP: either stock tools run with [`Lab::exec_in`]/[`Lab::spawn_in`], or std sockets created
//! inside B by [`in_netns`] (a socket stays in the namespace it was created in, whichever thread
//! uses it afterwards).
//!
//! Everything a lab creates lives inside its two namespaces: the veth pair, addresses, iptables
//! rules (tcpstack's own in A, the loss rules in B), XDP programs attached to A's veth. Dropping the
//! [`Lab`] kills every process in both namespaces and deletes them, which removes all of that; it
//! never panics, so a failing test still cleans up. [`sweep`] removes what a killed test run left.
//!
//! Names: `tcps-<pid>-<n>-a`/`-b` for test labs (unique per process and lab), addresses
//! `198.19.<k>.1/24` (tcpstack) and `198.19.<k>.2/24` (peer), with a distinct `k` per lab.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

/// The reason every root-only test carries in its `#[ignore]`.
pub const IGNORE_REASON: &str = "needs root and network namespaces: run cargo xtask test";

/// Every namespace this harness (and `cargo xtask lab`) creates starts with this.
pub const NAMESPACE_PREFIX: &str = "tcps-";

/// How long [`Lab::serve`] waits for tcpstack's `listening on` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Which tcpstack backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// XDP steering into AF_XDP sockets.
    Xdp,
    /// The AF_PACKET fallback, with an iptables rule dropping the kernel's own RSTs.
    Raw,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Xdp, Backend::Raw];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Xdp => "xdp",
            Backend::Raw => "raw",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names and addresses of a lab. [`LabSpec::unique`] for tests, [`LabSpec::demo`] for `cargo xtask`.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub addr_a: Ipv4Addr,
    pub addr_b: Ipv4Addr,
    pub prefix_len: u8,
    /// A third namespace the link runs through (a bridge joining A's and B's veths), where
    /// [`Lab::add_loss`] drops packets; `None` joins A and B directly.
    pub ns_link: Option<String>,
    /// The link namespace routes instead of bridging, and its link to B has this MTU: see
    /// [`LabSpec::routed`].
    pub routed_mtu: Option<u32>,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl LabSpec {
    /// The fixed lab of `cargo xtask run` and `cargo xtask lab up`.
    pub fn demo() -> LabSpec {
        LabSpec {
            ns_a: "tcps-lab-a".into(),
            ns_b: "tcps-lab-b".into(),
            if_a: "veth-a".into(),
            if_b: "veth-b".into(),
            addr_a: Ipv4Addr::new(198, 18, 0, 1),
            addr_b: Ipv4Addr::new(198, 18, 0, 2),
            prefix_len: 24,
            ns_link: None,
            routed_mtu: None,
        }
    }

    /// Names no other lab of this or any other live process uses, and a /24 of 198.19.0.0/16
    /// that differs from the labs around it (the namespaces isolate them anyway; distinct
    /// addresses keep captures and error messages unambiguous).
    pub fn unique() -> LabSpec {
        let pid = std::process::id();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let subnet = (pid.wrapping_mul(31).wrapping_add(n) % 256) as u8;
        LabSpec {
            ns_a: format!("{NAMESPACE_PREFIX}{pid}-{n}-a"),
            ns_b: format!("{NAMESPACE_PREFIX}{pid}-{n}-b"),
            if_a: "veth-a".into(),
            if_b: "veth-b".into(),
            addr_a: Ipv4Addr::new(198, 19, subnet, 1),
            addr_b: Ipv4Addr::new(198, 19, subnet, 2),
            prefix_len: 24,
            ns_link: None,
            routed_mtu: None,
        }
    }

    /// The same lab with the link running through a bridge in a third namespace (A's name
    /// ending in `-m` instead of `-a`), where loss can be added.
    ///
    /// Why not drop in B: iptables (or tc) dropping what B's own TCP sends reports the drop back
    /// to that TCP, which sends the segment again at once, as if nothing was lost; only packets
    /// dropped on the way, as a bridge in between drops them, are lost to both ends.
    pub fn lossy(mut self) -> LabSpec {
        let base = self.ns_a.strip_suffix("-a").unwrap_or(&self.ns_a);
        self.ns_link = Some(format!("{base}-m"));
        self
    }

    /// The same lab with a router in a third namespace (A's name ending in `-r`): A's /25 and
    /// B's /25 of the /24, and a `hop_mtu` link between the router and B, so that a segment
    /// of A's that does not fit earns A an ICMP "fragmentation needed" from the router
    /// (RFC 1191). B still offers MSS 1460 (`advmss` on its route), as a host behind a tunnel
    /// does, so that only path MTU discovery can find the smaller MTU.
    pub fn routed(mut self, hop_mtu: u32) -> LabSpec {
        let base = self.ns_a.strip_suffix("-a").unwrap_or(&self.ns_a);
        self.ns_link = Some(format!("{base}-r"));
        self.prefix_len = 25;
        let [a, b, c, _] = self.addr_a.octets();
        self.addr_b = Ipv4Addr::new(a, b, c, 129);
        self.routed_mtu = Some(hop_mtu);
        self
    }

    /// The router's address on A's side and on B's side of a [`LabSpec::routed`] lab.
    pub fn router_addrs(&self) -> (Ipv4Addr, Ipv4Addr) {
        let [a, b, c, _] = self.addr_a.octets();
        (Ipv4Addr::new(a, b, c, 126), Ipv4Addr::new(a, b, c, 254))
    }
}

/// Fails with a clear sentence unless the process runs as root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root (network namespaces, veth, XDP, iptables): run it as root, e.g. `sudo -E cargo xtask test`");
    }
    Ok(())
}

/// Two namespaces joined by a veth pair; see the module documentation.
pub struct Lab {
    pub spec: LabSpec,
    /// Scratch directory for captures and logs, removed with the lab.
    pub dir: PathBuf,
    teardown: bool,
}

impl Lab {
    /// A fresh lab with unique names, for one test.
    pub fn new() -> Result<Lab> {
        Lab::create(LabSpec::unique())
    }

    /// A fresh lab whose link runs through a namespace where [`Lab::add_loss`] works.
    pub fn lossy() -> Result<Lab> {
        Lab::create(LabSpec::unique().lossy())
    }

    /// Creates the namespaces, the veth pair (created directly inside them, so nothing ever
    /// appears in the host's namespace), addresses and links, and turns tx checksum offload off.
    pub fn create(spec: LabSpec) -> Result<Lab> {
        require_root()?;
        let dir = std::env::temp_dir().join(&spec.ns_a);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating scratch directory {}", dir.display()))?;
        // From here on, a failure drops `lab`, which removes whatever was created so far.
        let lab = Lab {
            spec,
            dir,
            teardown: true,
        };
        let s = &lab.spec;
        run(Command::new("ip").args(["netns", "add", &s.ns_a]))?;
        run(Command::new("ip").args(["netns", "add", &s.ns_b]))?;
        match &s.ns_link {
            None => run(Command::new("ip").args([
                "link", "add", &s.if_a, "netns", &s.ns_a, "type", "veth", "peer", "name", &s.if_b,
                "netns", &s.ns_b,
            ]))
            .map(drop)?,
            Some(m) => match s.routed_mtu {
                Some(_) => lab.route_through(m)?,
                None => lab.bridge_through(m)?,
            },
        }
        for (ns, iface, addr) in [(&s.ns_a, &s.if_a, s.addr_a), (&s.ns_b, &s.if_b, s.addr_b)] {
            let cidr = format!("{addr}/{}", s.prefix_len);
            run(Command::new("ip").args(["-n", ns, "addr", "add", &cidr, "dev", iface]))?;
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
            run(Command::new("ip").args(["-n", ns, "link", "set", iface, "up"]))?;
            // The peer's side: a veth sender with tx checksum offload on leaves only a partial
            // checksum in the TCP header, which tcpstack (reading raw frames) rightly rejects.
            // tcpstack's side too: A's kernel keeps sending on this veth while tcpstack runs
            // (ping replies, the kernel listener sharing the interface, RSTs in the tests that
            // look for them, the kernel server `cargo xtask bench` compares against), and the
            // captures and comparisons need those frames complete and on equal terms (no TSO)
            // with what tcpstack sends.
            lab.exec_in(ns, &["ethtool", "-K", iface, "tx", "off"])?;
        }
        if let Some(mtu) = s.routed_mtu {
            let (router_a, router_b) = s.router_addrs();
            let mtu = mtu.to_string();
            run(Command::new("ip").args(["-n", &s.ns_b, "link", "set", &s.if_b, "mtu", &mtu]))?;
            run(Command::new("ip").args([
                "-n",
                &s.ns_a,
                "route",
                "add",
                "default",
                "via",
                &router_a.to_string(),
            ]))?;
            run(Command::new("ip").args([
                "-n",
                &s.ns_b,
                "route",
                "add",
                "default",
                "via",
                &router_b.to_string(),
                "advmss",
                "1460",
            ]))?;
        }
        Ok(lab)
    }

    /// Namespace `m` forwarding IPv4 between a veth to A and a veth to B, the latter with the
    /// lab's small MTU at both ends; the router sends ICMP errors as any Linux router does.
    fn route_through(&self, m: &str) -> Result<()> {
        let s = &self.spec;
        let (router_a, router_b) = s.router_addrs();
        let mtu = s.routed_mtu.unwrap_or(1500).to_string();
        run(Command::new("ip").args(["netns", "add", m]))?;
        for (ns, iface, port, addr) in [
            (&s.ns_a, &s.if_a, "link-a", router_a),
            (&s.ns_b, &s.if_b, "link-b", router_b),
        ] {
            run(Command::new("ip").args([
                "link", "add", iface, "netns", ns, "type", "veth", "peer", "name", port, "netns", m,
            ]))?;
            let cidr = format!("{addr}/{}", s.prefix_len);
            run(Command::new("ip").args(["-n", m, "addr", "add", &cidr, "dev", port]))?;
            self.exec_in(m, &["ethtool", "-K", port, "tx", "off"])?;
        }
        run(Command::new("ip").args(["-n", m, "link", "set", "link-b", "mtu", &mtu]))?;
        for link in ["lo", "link-a", "link-b"] {
            run(Command::new("ip").args(["-n", m, "link", "set", link, "up"]))?;
        }
        self.exec_in(m, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        Ok(())
    }

    /// Namespace `m` with a bridge joining a veth to A's and one to B's, and iptables seeing
    /// what the bridge forwards (for the loss rules).
    fn bridge_through(&self, m: &str) -> Result<()> {
        let s = &self.spec;
        run(Command::new("ip").args(["netns", "add", m]))?;
        for (ns, iface, port) in [(&s.ns_a, &s.if_a, "link-a"), (&s.ns_b, &s.if_b, "link-b")] {
            run(Command::new("ip").args([
                "link", "add", iface, "netns", ns, "type", "veth", "peer", "name", port, "netns", m,
            ]))?;
        }
        run(Command::new("ip").args(["-n", m, "link", "add", "br0", "type", "bridge"]))?;
        for port in ["link-a", "link-b"] {
            run(Command::new("ip").args(["-n", m, "link", "set", port, "master", "br0"]))?;
        }
        for link in ["lo", "link-a", "link-b", "br0"] {
            run(Command::new("ip").args(["-n", m, "link", "set", link, "up"]))?;
        }
        self.exec_in(
            m,
            &["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"],
        )?;
        Ok(())
    }

    /// Keeps the namespaces when the value is dropped (`cargo xtask lab up`).
    pub fn persist(mut self) {
        self.teardown = false;
    }

    pub fn ns_a(&self) -> &str {
        &self.spec.ns_a
    }

    pub fn ns_b(&self) -> &str {
        &self.spec.ns_b
    }

    /// tcpstack's address (namespace A).
    pub fn addr_a(&self) -> Ipv4Addr {
        self.spec.addr_a
    }

    /// The peer's address (namespace B).
    pub fn addr_b(&self) -> Ipv4Addr {
        self.spec.addr_b
    }

    /// Runs `args` in namespace `ns` to completion; its stdout, or an error with its stderr.
    pub fn exec_in(&self, ns: &str, args: &[&str]) -> Result<String> {
        exec_in(ns, args)
    }

    /// Starts `args` in namespace `ns` with its output captured; killed when the handle drops.
    pub fn spawn_in(&self, ns: &str, args: &[&str]) -> Result<Process> {
        Process::spawn(ns_command(ns, args), false)
    }

    /// `tcpstack serve --iface <A's veth> --backend B ...extra` in namespace A, once it has
    /// printed `listening on`.
    pub fn serve(&self, backend: Backend, port: u16, extra: &[&str]) -> Result<Server> {
        let port = port.to_string();
        let mut args = vec![
            "serve",
            "--iface",
            &self.spec.if_a,
            "--port",
            &port,
            "--backend",
            backend.as_str(),
        ];
        args.extend_from_slice(extra);
        require_tcpstack_bin()?;
        Server::start(self.tcpstack(&args), false)
    }

    /// A `tcpstack` command line that runs in namespace A.
    pub fn tcpstack(&self, args: &[&str]) -> Command {
        let bin = tcpstack_bin();
        let bin = bin.to_string_lossy();
        let mut full = vec![bin.as_ref()];
        full.extend_from_slice(args);
        ns_command(&self.spec.ns_a, &full)
    }

    /// A TCP connection from namespace B (the kernel's TCP) to `addr:port`.
    pub fn peer_connect(&self, addr: Ipv4Addr, port: u16) -> Result<TcpStream> {
        let target = SocketAddrV4::new(addr, port);
        let stream = in_netns(&self.spec.ns_b, move || {
            TcpStream::connect_timeout(&target.into(), Duration::from_secs(10))
        })?
        .with_context(|| format!("connecting from {} to {target}", self.spec.ns_b))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }

    /// Like [`Lab::peer_connect`], with the socket's receive buffer set to `bytes` before the
    /// handshake (SO_RCVBUF, which the kernel doubles), so the window it offers stays small
    /// and a peer that does not read soon stops the other side's sending.
    pub fn peer_connect_with_receive_buffer(
        &self,
        addr: Ipv4Addr,
        port: u16,
        bytes: libc::c_int,
    ) -> Result<TcpStream> {
        use std::os::fd::FromRawFd;
        let target = SocketAddrV4::new(addr, port);
        let stream = in_netns(&self.spec.ns_b, move || -> io::Result<TcpStream> {
            // SAFETY: plain socket(2); the descriptor is owned by the TcpStream right away.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd was just returned by socket(2) and nothing else owns it.
            let stream = unsafe { TcpStream::from_raw_fd(fd) };
            // SAFETY: `bytes` outlives the call.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&bytes as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let sockaddr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr is a valid sockaddr_in of the given length.
            let rc = unsafe {
                libc::connect(
                    fd,
                    (&sockaddr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stream)
        })?
        .with_context(|| format!("connecting from {} to {target}", self.spec.ns_b))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }

    /// A kernel TCP listener in namespace B on the peer's address.
    pub fn peer_listen(&self, port: u16) -> Result<TcpListener> {
        let addr = SocketAddrV4::new(self.spec.addr_b, port);
        in_netns(&self.spec.ns_b, move || TcpListener::bind(addr))?
            .with_context(|| format!("listening on {addr} in {}", self.spec.ns_b))
    }

    /// A kernel TCP listener in namespace A (next to tcpstack, on the same interface).
    pub fn kernel_listen_a(&self, port: u16) -> Result<TcpListener> {
        let addr = SocketAddrV4::new(self.spec.addr_a, port);
        in_netns(&self.spec.ns_a, move || TcpListener::bind(addr))?
            .with_context(|| format!("listening on {addr} in {}", self.spec.ns_a))
    }

    /// Makes the link drop each packet, either way, with `probability` (iptables `statistic`
    /// in the link namespace of a [`Lab::lossy`] lab). The rules go with the namespace.
    pub fn add_loss(&self, probability: f64) -> Result<()> {
        self.add_loss_matching(probability, &[])?.keep();
        Ok(())
    }

    /// Like [`Lab::add_loss`], for the TCP segments to or from `port` only (either end), so
    /// that ARP and everything else on the link get through. The rule lasts until the returned
    /// guard drops (or the namespace goes).
    pub fn add_tcp_port_loss(&self, port: u16, probability: f64) -> Result<LossRules> {
        let port = port.to_string();
        self.add_loss_matching(
            probability,
            &["-p", "tcp", "-m", "multiport", "--ports", &port],
        )
    }

    /// The namespace where the loss rules live and count their drops.
    pub fn loss_ns(&self) -> Result<&str> {
        self.spec.ns_link.as_deref().context(
            "loss needs a lab whose link runs through a namespace of its own (Lab::lossy, \
             LabSpec::lossy): drops in B would be reported to B's TCP, which resends at once",
        )
    }

    /// One DROP rule on the bridge's FORWARD chain, for packets that also match `filter`.
    fn add_loss_matching(&self, probability: f64, filter: &[&str]) -> Result<LossRules> {
        let ns = self.loss_ns()?;
        let p = format!("{probability}");
        let statistic = ["-m", "statistic", "--mode", "random", "--probability", &p];
        let rule: Vec<&str> = ["FORWARD"]
            .into_iter()
            .chain(filter.iter().copied())
            .chain(statistic)
            .chain(["-j", "DROP"])
            .collect();
        let mut add = vec!["iptables", "-A"];
        add.extend(&rule);
        self.exec_in(ns, &add)?;
        Ok(LossRules {
            ns: ns.to_owned(),
            rules: vec![rule.into_iter().map(str::to_owned).collect()],
        })
    }

    /// Starts tcpdump on `iface` in `ns` (`filter` in pcap syntax) and waits until it captures.
    ///
    /// Capture on the peer's side: frames that XDP redirects to AF_XDP never reach the packet
    /// taps of namespace A, so tcpdump there would not see tcpstack's traffic.
    pub fn capture(&self, ns: &str, iface: &str, filter: &str) -> Result<Capture> {
        static CAPTURES: AtomicU32 = AtomicU32::new(0);
        let file = self.dir.join(format!(
            "capture-{}.pcap",
            CAPTURES.fetch_add(1, Ordering::Relaxed)
        ));
        let file_str = file.to_string_lossy().into_owned();
        // --immediate-mode: without it, frames wait in the capture ring's current block, and
        // whatever is still there when tcpdump is interrupted never reaches the file.
        let mut args = vec![
            "tcpdump",
            "--immediate-mode",
            "-i",
            iface,
            "-n",
            "-U",
            "-s",
            "256",
            "-w",
            &file_str,
        ];
        args.extend(filter.split_whitespace());
        let mut process = Process::spawn(ns_command(ns, &args), false)?;
        process
            .wait_for_stderr("listening on", Duration::from_secs(10))
            .context("tcpdump did not start")?;
        Ok(Capture { process, file })
    }

    /// Replaces the lab's veth pair with one of `queues` receive and transmit queues each way
    /// (addresses, links and offloads as [`Lab::create`] sets them). Not for a lossy lab,
    /// whose veths end at its bridge.
    pub fn multiqueue_veth(&self, queues: u32) -> Result<()> {
        let s = &self.spec;
        if s.ns_link.is_some() {
            bail!("multiqueue_veth replaces a direct veth pair; this lab's link runs through a bridge");
        }
        let q = queues.to_string();
        self.exec_in(&s.ns_a, &["ip", "link", "del", &s.if_a])?;
        self.exec_in(
            &s.ns_a,
            &[
                "ip",
                "link",
                "add",
                &s.if_a,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &s.if_b,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                &s.ns_b,
            ],
        )?;
        for (ns, iface, addr) in [(&s.ns_a, &s.if_a, s.addr_a), (&s.ns_b, &s.if_b, s.addr_b)] {
            let cidr = format!("{addr}/{}", s.prefix_len);
            self.exec_in(ns, &["ip", "addr", "add", &cidr, "dev", iface])?;
            self.exec_in(ns, &["ip", "link", "set", iface, "up"])?;
            self.exec_in(ns, &["ethtool", "-K", iface, "tx", "off"])?;
        }
        Ok(())
    }

    /// Whether an XDP program is attached to A's interface (`ip -d link` shows it).
    pub fn xdp_attached(&self) -> Result<bool> {
        let link = self.exec_in(
            &self.spec.ns_a,
            &["ip", "-d", "link", "show", &self.spec.if_a],
        )?;
        Ok(link.contains("xdp"))
    }

    /// What a tcpstack of namespace A installed and did not take away: its iptables rules
    /// dropping the kernel's RSTs, an XDP program on A's interface. Empty once it is gone.
    pub fn tcpstack_leftovers(&self) -> Result<Vec<String>> {
        let mut left: Vec<String> = rst_drop_rules(&self.spec.ns_a)?
            .into_iter()
            .map(|(table, rule)| format!("iptables -t {table} {rule}"))
            .collect();
        if self.xdp_attached()? {
            left.push(format!("an XDP program on {}", self.spec.if_a));
        }
        Ok(left)
    }

    /// A command line run in namespace `ns`, to be started by the caller (for its exit status
    /// and output whatever they are).
    pub fn command_in(&self, ns: &str, args: &[&str]) -> Command {
        ns_command(ns, args)
    }

    /// The processes running in both namespaces, then the namespaces themselves.
    fn remove(&self) -> Result<()> {
        let mut errors = Vec::new();
        for ns in [&self.spec.ns_a, &self.spec.ns_b]
            .into_iter()
            .chain(&self.spec.ns_link)
        {
            if let Err(e) = delete_namespace(ns) {
                errors.push(format!("{e:#}"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(errors.join("; ")))
        }
    }

    /// Tears the lab down now, reporting failures (Drop only prints them).
    pub fn destroy(mut self) -> Result<()> {
        self.teardown = false;
        self.remove()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.teardown {
            if let Err(e) = self.remove() {
                eprintln!("lab teardown: {e:#}");
            }
        }
    }
}

/// How long peer sockets wait on a read or write before the test fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The tcpstack binary the tests run: `$TCPSTACK_BIN`, else the workspace's release build.
pub fn tcpstack_bin() -> PathBuf {
    match std::env::var_os("TCPSTACK_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tcpstack"),
    }
}

/// [`tcpstack_bin`], or an error saying how to build it.
pub fn require_tcpstack_bin() -> Result<PathBuf> {
    let bin = tcpstack_bin();
    if !bin.exists() {
        bail!(
            "{} does not exist: run `cargo xtask build` (or set TCPSTACK_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A tcpstack binary built without its XDP program, as plain `cargo build` makes one in a
/// checkout where `cargo xtask build` never ran: `$TCPSTACK_BIN_WITHOUT_EBPF`, else a debug
/// build in `target/no-ebpf` made on first use with `TCPSTACK_EBPF_OBJECT=/dev/null` (an
/// empty object). The workspace's own debug binary will not do: `tcpstack/build.rs` embeds
/// the object that `cargo xtask build` leaves in `tcpstack-ebpf/target` whenever it exists.
pub fn tcpstack_bin_without_ebpf() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TCPSTACK_BIN_WITHOUT_EBPF") {
        return Ok(PathBuf::from(path));
    }
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = &*built {
        return Ok(path.clone());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = workspace.join("target/no-ebpf");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building tcpstack without its eBPF object in {} (once)",
        target.display()
    );
    run(Command::new(cargo)
        .current_dir(&workspace)
        .env("TCPSTACK_EBPF_OBJECT", "/dev/null")
        .args([
            "build", "--locked", "-q", "-p", "tcpstack", "--bin", "tcpstack",
        ])
        .arg("--target-dir")
        .arg(&target))
    .context("building tcpstack without its eBPF object")?;
    let path = target.join("debug/tcpstack");
    *built = Some(path.clone());
    Ok(path)
}

fn ns_command(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// Runs `args` in namespace `ns` to completion; its stdout, or an error with its stderr.
pub fn exec_in(ns: &str, args: &[&str]) -> Result<String> {
    run(&mut ns_command(ns, args))
}

/// Runs a command to completion; its stdout, or an error naming it with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A command as a shell would show it.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates stay there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = Path::new("/run/netns").join(ns);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a valid namespace fd only changes this thread's network
                // namespace, and the thread ends right after `f`.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error())
                        .with_context(|| format!("entering network namespace {ns}"));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("the thread running in namespace {ns} panicked"))?
    })
}

/// The names of all network namespaces.
pub fn namespaces() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Kills every process in `ns`, then deletes it (which removes its interfaces, their XDP
/// programs and its iptables rules). Missing namespaces are fine.
pub fn delete_namespace(ns: &str) -> Result<()> {
    if !namespaces()?.iter().any(|n| n == ns) {
        return Ok(());
    }
    kill_namespace_processes(ns, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !namespace_pids(ns).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    kill_namespace_processes(ns, libc::SIGKILL);
    run(Command::new("ip").args(["netns", "del", ns]))?;
    Ok(())
}

fn namespace_pids(ns: &str) -> Vec<i32> {
    run(Command::new("ip").args(["netns", "pids", ns]))
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_namespace_processes(ns: &str, signal: i32) {
    for pid in namespace_pids(ns) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Removes the test labs whose process is gone (`tcps-<pid>-...` with `<pid>` no longer
/// running): what a killed or crashed test run left behind. Labs of live processes, including
/// other test runs on the machine and `cargo xtask lab up`'s, are left alone. Returns what it
/// removed.
pub fn sweep() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let stale: HashSet<String> = namespaces()?
        .into_iter()
        .filter(|ns| owner_pid(ns).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect();
    for ns in stale {
        delete_namespace(&ns)?;
        removed.push(ns);
    }
    removed.sort();
    Ok(removed)
}

/// The pid in a test lab's namespace name, `tcps-<pid>-<n>-<a|b>`.
fn owner_pid(ns: &str) -> Option<u32> {
    ns.strip_prefix(NAMESPACE_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// A process started in a namespace, with its stdout and stderr collected line by line.
/// Dropping it kills its whole process group.
pub struct Process {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<(Stream, String)>,
    description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Process {
    /// Spawns `cmd` in its own process group (so a terminal's Ctrl-C reaches only whoever
    /// owns the handle). With `forward`, every output line is also printed as it arrives.
    pub fn spawn(mut cmd: Command, forward: bool) -> Result<Process> {
        let description = describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start `{description}`"))?;
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect_lines(
                out,
                Stream::Stdout,
                Arc::clone(&stdout),
                tx.clone(),
                forward,
            );
        }
        if let Some(err) = child.stderr.take() {
            collect_lines(err, Stream::Stderr, Arc::clone(&stderr), tx, forward);
        }
        Ok(Process {
            child,
            stdout,
            stderr,
            lines,
            description,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stdout line contains `needle`; that line.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line(Stream::Stdout, needle, timeout)
    }

    /// Waits until a stderr line contains `needle`; that line.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line(Stream::Stderr, needle, timeout)
    }

    fn wait_for_line(&mut self, stream: Stream, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((s, line)) if s == stream && line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "`{}` printed no line with {needle:?} within {timeout:?}\n{}",
                    self.description,
                    self.transcript()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the process has exited (or is about to).
                    let status = self.child.wait().ok();
                    bail!(
                        "`{}` exited ({}) without printing {needle:?}\n{}",
                        self.description,
                        status.map_or("unknown status".into(), |s| s.to_string()),
                        self.transcript()
                    )
                }
            }
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the group is the child's own.
        unsafe { libc::kill(-(self.child.id() as i32), signal) };
    }

    /// Waits up to `timeout` for the process to exit; SIGKILL and an error after that.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Let the reader threads drain the pipes.
                thread::sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.signal(libc::SIGKILL);
                let _ = self.child.wait();
                bail!(
                    "`{}` did not exit within {timeout:?}; killed\n{}",
                    self.description,
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT (what Ctrl-C sends), then waits up to `timeout`.
    pub fn interrupt(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGINT);
        self.wait_timeout(timeout)
    }

    /// Everything the process printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Everything the process printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Both outputs, for error messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn collect_lines(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    store: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<(Stream, String)>,
    forward: bool,
) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if forward {
                match stream {
                    Stream::Stdout => println!("{line}"),
                    Stream::Stderr => eprintln!("{line}"),
                }
            }
            if let Ok(mut lines) = store.lock() {
                lines.push(line.clone());
            }
            let _ = tx.send((stream, line));
        }
    });
}

/// A running `tcpstack serve`.
pub struct Server {
    pub process: Process,
    /// The `listening on ADDR:PORT backend=B iface=IF` line.
    pub ready_line: String,
    /// The address it listens on, from that line.
    pub listen: SocketAddrV4,
}

impl Server {
    /// Spawns `cmd` (a `tcpstack serve` command line) and waits for its `listening on` line.
    pub fn start(cmd: Command, forward: bool) -> Result<Server> {
        let mut process = Process::spawn(cmd, forward)?;
        let ready_line = process.wait_for_stdout("listening on", READY_TIMEOUT)?;
        let listen = parse_listening_line(&ready_line)
            .with_context(|| format!("unexpected ready line {ready_line:?}"))?;
        Ok(Server {
            process,
            ready_line,
            listen,
        })
    }

    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// Ctrl-C, as a user would; the exit status and everything it printed.
    pub fn stop(self) -> Result<Output> {
        self.interrupt();
        self.wait()
    }

    /// Sends SIGINT and returns at once (the server closes its connections and exits).
    pub fn interrupt(&self) {
        self.process.signal(libc::SIGINT);
    }

    /// Sends SIGTERM (what `kill` and service managers send) and returns at once.
    pub fn terminate(&self) {
        self.process.signal(libc::SIGTERM);
    }

    /// Waits for the server to exit (15 s at most); the exit status and everything it printed.
    pub fn wait(mut self) -> Result<Output> {
        let status = self.process.wait_timeout(Duration::from_secs(15))?;
        Ok(Output {
            status,
            stdout: self.process.stdout().join("\n").into_bytes(),
            stderr: self.process.stderr().join("\n").into_bytes(),
        })
    }

    /// SIGKILL, as a crash would: no FIN, no RST, no cleanup of what it installed.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.process.signal(libc::SIGKILL);
        self.process.wait_timeout(Duration::from_secs(10))
    }

    /// Fails unless the server is still running (it must survive whatever the test did).
    pub fn assert_running(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            bail!(
                "tcpstack serve exited ({status}, signal {:?})\n{}",
                status.signal(),
                self.process.transcript()
            );
        }
        Ok(())
    }
}

/// `listening on 198.19.3.1:7 backend=xdp iface=veth-a` → `198.19.3.1:7`.
pub fn parse_listening_line(line: &str) -> Option<SocketAddrV4> {
    line.trim()
        .strip_prefix("listening on ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A running tcpdump; [`Capture::finish`] stops it and decodes what it saw.
pub struct Capture {
    process: Process,
    pub file: PathBuf,
}

impl Capture {
    /// Stops tcpdump (after a moment for the last frames) and decodes the TCP segments captured.
    pub fn finish(mut self) -> Result<Vec<Segment>> {
        thread::sleep(Duration::from_millis(300));
        self.process.interrupt(Duration::from_secs(10))?;
        let file = self.file.to_string_lossy().into_owned();
        // -S: absolute sequence numbers; -tt: plain timestamps; -nn: no name or port lookups.
        let text = run(Command::new("tcpdump").args(["-r", &file, "-nn", "-S", "-tt", "tcp"]))?;
        Ok(text.lines().filter_map(Segment::parse).collect())
    }
}

/// One TCP segment as tcpdump prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// tcpdump's flag letters: `S`, `S.`, `.`, `P.`, `F.`, `R`, `R.`, ...
    pub flags: String,
    pub seq: Option<u32>,
    /// The end of the sequence range tcpdump prints for segments with data (`seq A:B`).
    pub seq_end: Option<u32>,
    pub ack: Option<u32>,
    pub len: u32,
}

impl Segment {
    /// Parses `TS IP A.B.C.D.P > E.F.G.H.Q: Flags [P.], seq 1:101, ack 1, win 502, ..., length 100`.
    pub fn parse(line: &str) -> Option<Segment> {
        let rest = line.split_once(" IP ")?.1;
        let (src, rest) = rest.split_once(" > ")?;
        let (dst, rest) = rest.split_once(": ")?;
        let flags = rest.strip_prefix("Flags [")?.split_once(']')?.0.to_owned();
        let mut seg = Segment {
            src: parse_endpoint(src)?,
            dst: parse_endpoint(dst)?,
            flags,
            seq: None,
            seq_end: None,
            ack: None,
            len: 0,
        };
        for field in rest.split(", ") {
            if let Some(v) = field.strip_prefix("seq ") {
                match v.split_once(':') {
                    Some((a, b)) => {
                        seg.seq = a.parse().ok();
                        seg.seq_end = b.parse().ok();
                    }
                    None => seg.seq = v.parse().ok(),
                }
            } else if let Some(v) = field.strip_prefix("ack ") {
                seg.ack = v.parse().ok();
            } else if let Some(v) = field.strip_prefix("length ") {
                seg.len = v.split_whitespace().next()?.parse().ok()?;
            }
        }
        Some(seg)
    }

    pub fn is_rst(&self) -> bool {
        self.flags.contains('R')
    }
}

/// `198.19.3.1.7` → `198.19.3.1:7`.
fn parse_endpoint(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.rsplit_once('.')?;
    Some(SocketAddrV4::new(ip.parse().ok()?, port.parse().ok()?))
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes that differ from one `seed` to another and do not repeat with a short period,
/// so a dropped, duplicated or reordered segment changes the digest (xorshift64*).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` on a second handle of `stream` (shutting down writing afterwards when
/// `half_close`) while reading until `expect` bytes have arrived or the peer closes. What was read.
pub fn exchange(
    stream: &TcpStream,
    data: &[u8],
    half_close: bool,
    expect: usize,
) -> Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let mut reader = stream;
    thread::scope(|scope| {
        let sender = scope.spawn(move || -> io::Result<()> {
            writer.write_all(data)?;
            if half_close {
                writer.shutdown(Shutdown::Write)?;
            }
            Ok(())
        });
        let mut received = Vec::with_capacity(expect.min(64 << 20));
        let mut buf = vec![0u8; 64 * 1024];
        let read_result = loop {
            if received.len() >= expect {
                break Ok(());
            }
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        let sent = sender
            .join()
            .map_err(|_| anyhow!("the sending thread panicked"))?;
        sent.context("sending")?;
        read_result.with_context(|| format!("receiving (got {} bytes so far)", received.len()))?;
        Ok(received)
    })
}

/// Reads until the peer closes; errors (a reset, a timeout) are returned as such.
pub fn read_to_end(mut stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(out)
}

/// Sets SO_LINGER to zero so that dropping the socket sends RST instead of FIN (an abort).
pub fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is valid for the stream's lifetime; the option value is a `linger`.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The states of the kernel's TCP sockets in `ns` involving `port` (`ss -tan`): lines like
/// `TIME-WAIT 0 0 198.19.3.2:41234 198.19.3.1:7`.
pub fn socket_states(ns: &str, port: u16) -> Result<Vec<String>> {
    let out = exec_in(ns, &["ss", "-tanH"])?;
    let needle = format!(":{port}");
    Ok(out
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w.ends_with(&needle)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect())
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Checks one captured connection, `client` to `server`, in which each side sent `bytes` and
/// then closed (an echo): the three-way handshake with the right numbers (RFC 9293 3.5), each
/// side's data covering exactly its sequence space, each FIN at the end of that data and
/// acknowledged with FIN+1, a final pure ACK of the last FIN, no RST, and acknowledgments that
/// never go backwards or beyond what was sent. Returns the flags in order, e.g.
/// `S, S., ., P., ., ..., F., ., F., .`.
pub fn check_conversation(
    segments: &[Segment],
    client: SocketAddrV4,
    server: SocketAddrV4,
    bytes: u32,
) -> Result<String> {
    let conn: Vec<&Segment> = segments
        .iter()
        .filter(|s| (s.src == client && s.dst == server) || (s.src == server && s.dst == client))
        .collect();
    let flags: Vec<&str> = conn.iter().map(|s| s.flags.as_str()).collect();
    let summary = if flags.len() <= 14 {
        flags.join(", ")
    } else {
        format!(
            "{}, ... ({} more), {}",
            flags[..5].join(", "),
            flags.len() - 10,
            flags[flags.len() - 5..].join(", ")
        )
    };
    let fail = |why: String| -> Result<String> { bail!("{why}; segments: {summary}") };
    if let Some(rst) = conn.iter().find(|s| s.is_rst()) {
        return fail(format!("unexpected RST {rst:?}"));
    }
    let [syn, syn_ack, ack, ..] = conn.as_slice() else {
        return fail(format!("only {} segments", conn.len()));
    };
    let (Some(c_isn), Some(s_isn)) = (syn.seq, syn_ack.seq) else {
        return fail("SYN or SYN-ACK without a sequence number".into());
    };
    if syn.src != client || syn.flags != "S" || syn.ack.is_some() {
        return fail(format!("first segment is not the client's SYN: {syn:?}"));
    }
    if syn_ack.src != server || syn_ack.flags != "S." || syn_ack.ack != Some(c_isn.wrapping_add(1))
    {
        return fail(format!(
            "second segment is not a SYN-ACK of ISN+1: {syn_ack:?}"
        ));
    }
    if ack.src != client || !ack.flags.contains('.') || ack.ack != Some(s_isn.wrapping_add(1)) {
        return fail(format!(
            "third segment does not acknowledge the SYN-ACK: {ack:?}"
        ));
    }
    let mut fins = Vec::new();
    for (from, isn) in [(client, c_isn), (server, s_isn)] {
        let first = isn.wrapping_add(1);
        let end = first.wrapping_add(bytes);
        let sent: Vec<&&Segment> = conn.iter().filter(|s| s.src == from).collect();
        // Data ranges, relative to the first data byte, sorted: they must tile [0, bytes).
        let mut ranges: Vec<(u32, u32)> = sent
            .iter()
            .filter(|s| s.len > 0)
            .filter_map(|s| Some((s.seq?.wrapping_sub(first), s.seq_end?.wrapping_sub(first))))
            .collect();
        ranges.sort_unstable();
        let mut covered = 0u32;
        for (start, stop) in ranges {
            if start > covered || stop > bytes {
                return fail(format!(
                    "{from} sent [{start}, {stop}) with {covered} of {bytes} bytes covered"
                ));
            }
            covered = covered.max(stop);
        }
        if covered != bytes {
            return fail(format!("{from} sent {covered} of {bytes} bytes"));
        }
        let Some(fin) = sent.iter().find(|s| s.flags.contains('F')) else {
            return fail(format!("{from} sent no FIN"));
        };
        let fin_seq = fin.seq_end.or(fin.seq);
        if fin_seq != Some(end) {
            return fail(format!(
                "{from}'s FIN is at {fin_seq:?}, expected {end}: {fin:?}"
            ));
        }
        let mut last_ack = None;
        for s in &sent {
            if let Some(a) = s.ack {
                if last_ack.is_some_and(|l: u32| (a.wrapping_sub(l) as i32) < 0) {
                    return fail(format!("{from}'s acknowledgment went backwards: {s:?}"));
                }
                last_ack = Some(a);
            }
        }
        fins.push((from, end.wrapping_add(1)));
    }
    for &(from, fin_plus_one) in &fins {
        let acked = conn
            .iter()
            .any(|s| s.src != from && s.ack == Some(fin_plus_one));
        if !acked {
            return fail(format!("the FIN of {from} was never acknowledged"));
        }
        // Nobody acknowledges more than the other side sent (its FIN included).
        if let Some(s) = conn.iter().find(|s| {
            s.src != from
                && s.ack
                    .is_some_and(|a| (a.wrapping_sub(fin_plus_one) as i32) > 0)
        }) {
            return fail(format!("acknowledgment beyond {from}'s FIN: {s:?}"));
        }
    }
    let last = conn[conn.len() - 1];
    if last.flags != "."
        || !fins
            .iter()
            .any(|&(from, f)| last.src != from && last.ack == Some(f))
    {
        return fail(format!(
            "the last segment is not the ACK of a FIN: {last:?}"
        ));
    }
    Ok(summary)
}

/// A kernel TCP echo server on a listener (created in some namespace): each connection gets
/// back what it sends, and a FIN after the peer's. Stops when dropped, so no socket keeps its
/// namespace alive after the test.
pub struct EchoServer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    pub addr: SocketAddrV4,
}

impl EchoServer {
    pub fn start(listener: TcpListener) -> Result<EchoServer> {
        let addr = match listener.local_addr()? {
            std::net::SocketAddr::V4(a) => a,
            other => bail!("IPv6 listener {other}"),
        };
        listener.set_nonblocking(true)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut connections = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => connections.push(thread::spawn(move || {
                        let _ = echo_one(stream);
                    })),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
            for c in connections {
                let _ = c.join();
            }
        });
        Ok(EchoServer {
            stop,
            thread: Some(thread),
            addr,
        })
    }
}

fn echo_one(stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = &stream;
    let mut writer = &stream;
    io::copy(&mut reader, &mut writer)?;
    stream.shutdown(Shutdown::Write)
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The packet counters of namespace `ns`'s iptables rules that jump to DROP.
pub fn dropped_packets(ns: &str) -> Result<u64> {
    let out = exec_in(ns, &["iptables", "-L", "-v", "-n", "-x"])?;
    Ok(out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(2) == Some(&"DROP"))
        .filter_map(|f| f.first()?.parse::<u64>().ok())
        .sum())
}

/// The kernel's TCP counters in namespace `ns` (`/proc/net/snmp`, `Tcp:` lines): `InSegs`,
/// `OutRsts`, ...
pub fn kernel_tcp_counters(ns: &str) -> Result<std::collections::HashMap<String, u64>> {
    let snmp = exec_in(ns, &["cat", "/proc/net/snmp"])?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        bail!("no Tcp lines in /proc/net/snmp of {ns}");
    };
    Ok(names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect())
}

/// The iptables rules of namespace `ns` (all tables) whose text contains each of `needles`,
/// as `(table, rule)` the way `iptables-save` prints them (`-A CHAIN ...`).
pub fn iptables_rules(ns: &str, needles: &[&str]) -> Result<Vec<(String, String)>> {
    let saved = exec_in(ns, &["iptables-save"])?;
    let mut table = String::new();
    let mut rules = Vec::new();
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_owned();
        } else if line.starts_with("-A ") && needles.iter().all(|n| line.contains(n)) {
            rules.push((table.clone(), line.to_owned()));
        }
    }
    Ok(rules)
}

/// Applies `rule` (`-A ...` or `-D ...`, as [`iptables_rules`] gives them) to `table` in `ns`.
pub fn iptables_apply(ns: &str, table: &str, rule: &str) -> Result<()> {
    // Through sh: iptables-save quotes comments the way a shell reads them.
    exec_in(ns, &["sh", "-c", &format!("iptables -t {table} {rule}")])?;
    Ok(())
}

/// The raw backend's rules in `ns` that drop the kernel's RSTs.
pub fn rst_drop_rules(ns: &str) -> Result<Vec<(String, String)>> {
    iptables_rules(ns, &["RST", "DROP"])
}

/// One connection in `tcpstack ss`'s output: the `ESTAB 0 0 LOCAL PEER` line and the
/// `key:value` fields (and bare words such as `cubic`, `sack`) of the line under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsEntry {
    pub state: String,
    pub recv_q: u64,
    pub send_q: u64,
    pub local: SocketAddrV4,
    pub peer: SocketAddrV4,
    pub words: Vec<String>,
    pub fields: std::collections::HashMap<String, String>,
}

impl SsEntry {
    /// A numeric field (`cwnd`, `bytes_sent`, ...), or an error naming it.
    pub fn number(&self, key: &str) -> Result<f64> {
        self.fields
            .get(key)
            .and_then(|v| v.split('/').next()?.parse().ok())
            .with_context(|| format!("no numeric {key} in {self:?}"))
    }
}

/// Parses `tcpstack ss`: a header line, then two lines per connection.
pub fn parse_ss(text: &str) -> Result<Vec<SsEntry>> {
    let mut entries = Vec::new();
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let header = lines.next().unwrap_or_default();
    if !header.starts_with("State ") {
        bail!("tcpstack ss printed no header line:\n{text}");
    }
    while let Some(line) = lines.next() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [state, recv_q, send_q, local, peer] = f[..] else {
            bail!("unexpected connection line {line:?} in:\n{text}");
        };
        let details = lines
            .next()
            .with_context(|| format!("no details under {line:?}"))?;
        let mut words = Vec::new();
        let mut fields = std::collections::HashMap::new();
        for item in details.split_whitespace() {
            match item.split_once(':') {
                Some((k, v)) => {
                    fields.insert(k.to_owned(), v.to_owned());
                }
                None => words.push(item.to_owned()),
            }
        }
        entries.push(SsEntry {
            state: state.to_owned(),
            recv_q: recv_q.parse()?,
            send_q: send_q.parse()?,
            local: local.parse()?,
            peer: peer.parse()?,
            words,
            fields,
        });
    }
    Ok(entries)
}

impl Lab {
    /// Where [`Lab::serve_echo_with_control`]'s server answers `tcpstack ss`.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `tcpstack serve --app echo` on `port`, its control socket at [`Lab::control_socket`].
    pub fn serve_echo_with_control(&self, backend: Backend, port: u16) -> Result<Server> {
        let control = self.control_socket();
        self.serve(
            backend,
            port,
            &["--app", "echo", "--control", &control.to_string_lossy()],
        )
    }

    /// `tcpstack ss` in namespace A, asking the server of [`Lab::serve_echo_with_control`],
    /// parsed.
    pub fn ss(&self) -> Result<Vec<SsEntry>> {
        let control = self.control_socket();
        let out = run(&mut self.tcpstack(&["ss", "--control", &control.to_string_lossy()]))?;
        parse_ss(&out)
    }
}

/// Loss rules added by [`Lab::add_tcp_port_loss`]; dropping this deletes them (best effort:
/// deleting the namespace removes them anyway).
#[must_use = "the loss rules are deleted when this guard drops"]
pub struct LossRules {
    ns: String,
    /// Each rule's arguments after `iptables -A`.
    rules: Vec<Vec<String>>,
}

impl LossRules {
    /// Leaves the rules in place for the rest of the namespace's life.
    pub fn keep(mut self) {
        self.rules.clear();
    }
}

impl Drop for LossRules {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let mut args = vec!["iptables", "-D"];
            args.extend(rule.iter().map(String::as_str));
            if let Err(e) = exec_in(&self.ns, &args) {
                eprintln!("removing a loss rule in {}: {e:#}", self.ns);
            }
        }
    }
}

/// The port tcpstack's echo app serves on in the tests.
pub const ECHO_PORT: u16 = 7;

/// Generates, for each named function `fn name(backend: Backend) -> anyhow::Result<()>`, one
/// root-only test per backend: `xdp::name` and `raw::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod xdp {
            $(
                #[test]
                #[ignore = "needs root and network namespaces: run cargo xtask test"]
                fn $name() -> anyhow::Result<()> {
                    super::$name($crate::Backend::Xdp)
                }
            )*
        }
        mod raw {
            $(
                #[test]
                #[ignore = "needs root and network namespaces: run cargo xtask test"]
                fn $name() -> anyhow::Result<()> {
                    super::$name($crate::Backend::Raw)
                }
            )*
        }
    };
}

/// A JSON file (`serve --stats-json`, say), parsed; errors name the file.
pub fn read_json(file: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}: {text}", file.display()))
}

/// The unsigned number at a JSON pointer (`/end/sum_sent/bytes`); an error names what is missing.
pub fn number(json: &serde_json::Value, pointer: &str) -> Result<u64> {
    json.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no {pointer} in {json}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcpdump_lines() {
        let syn = "1732233600.000001 IP 198.19.3.2.41234 > 198.19.3.1.7: Flags [S], seq 1000, win 64240, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0";
        let seg = Segment::parse(syn).expect("SYN parses");
        assert_eq!(seg.src, "198.19.3.2:41234".parse().unwrap());
        assert_eq!(seg.dst, "198.19.3.1:7".parse().unwrap());
        assert_eq!(
            (seg.flags.as_str(), seg.seq, seg.ack, seg.len),
            ("S", Some(1000), None, 0)
        );

        let data = "1732233600.000002 IP 198.19.3.2.41234 > 198.19.3.1.7: Flags [P.], seq 1001:1101, ack 5001, win 502, options [nop,nop,TS val 2 ecr 3], length 100";
        let seg = Segment::parse(data).expect("data parses");
        assert_eq!(seg.flags, "P.");
        assert_eq!(
            (seg.seq, seg.seq_end, seg.ack, seg.len),
            (Some(1001), Some(1101), Some(5001), 100)
        );

        let rst = "1732233600.000003 IP 198.19.3.1.7 > 198.19.3.2.41234: Flags [R.], seq 0, ack 1001, win 0, length 0";
        assert!(Segment::parse(rst).expect("RST parses").is_rst());
        assert_eq!(
            Segment::parse("1732233600.1 ARP, Request who-has 198.19.3.1"),
            None
        );
    }

    #[test]
    fn parses_tcpstack_ss() {
        let text = "State Recv-Q Send-Q Local-Address:Port Peer-Address:Port\n\
                    ESTAB 0 2896 198.19.3.1:7 198.19.3.2:41234\n\
                    \t cubic sack wscale:7,7 rto:204 rtt:0.5/0.25 mss:1448 cwnd:10 retrans:3\n";
        let entries = parse_ss(text).expect("parses");
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!((e.state.as_str(), e.recv_q, e.send_q), ("ESTAB", 0, 2896));
        assert_eq!(e.peer, "198.19.3.2:41234".parse().unwrap());
        assert_eq!(e.words, ["cubic", "sack"]);
        assert_eq!(e.number("rtt").unwrap(), 0.5);
        assert_eq!(e.number("cwnd").unwrap(), 10.0);
        assert!(e.number("ssthresh").is_err());
        assert!(parse_ss("garbage").is_err());
    }

    #[test]
    fn listening_line_gives_the_address() {
        assert_eq!(
            parse_listening_line("listening on 198.19.3.1:7 backend=xdp iface=veth-a\n"),
            Some("198.19.3.1:7".parse().unwrap())
        );
        assert_eq!(parse_listening_line("starting"), None);
    }

    #[test]
    fn namespace_owner_pid() {
        assert_eq!(owner_pid("tcps-4242-0-a"), Some(4242));
        assert_eq!(owner_pid("tcps-lab-a"), None);
        assert_eq!(owner_pid("other-4242-0-a"), None);
    }

    #[test]
    fn pattern_is_deterministic_and_seeded() {
        assert_eq!(pattern(1000, 1), pattern(1000, 1));
        assert_ne!(pattern(1000, 1), pattern(1000, 2));
        assert_eq!(pattern(13, 1).len(), 13);
        let p = pattern(1 << 16, 7);
        assert_ne!(p[..4096], p[4096..8192], "no short period");
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn unique_specs_differ() {
        let (a, b) = (LabSpec::unique(), LabSpec::unique());
        assert_ne!(a.ns_a, b.ns_a);
        assert_ne!(a.addr_a, b.addr_a);
        assert!(a.ns_a.starts_with(NAMESPACE_PREFIX) && a.ns_b.ends_with("-b"));
        for spec in [&a, &b] {
            assert_eq!(spec.addr_a.octets()[..2], [198, 19]);
        }
    }
}
