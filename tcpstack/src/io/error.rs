use std::io;

/// Why a backend could not start. Each message is one sentence that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error(
        "tcpstack needs root (it attaches XDP programs, opens raw sockets and changes iptables \
         rules): run it as root, e.g. with sudo"
    )]
    NotRoot,
    /// Refused although [`require_root`] passed: root without the capabilities it usually has.
    #[error(
        "permission denied ({0}) even as root: run tcpstack as root with CAP_NET_ADMIN, \
         CAP_NET_RAW and CAP_BPF, which a container or a capability bounding set may withhold"
    )]
    NotPermitted(&'static str),
    #[error("no such interface `{0}`: check the name with `ip link`")]
    NoSuchInterface(String),
    #[error("interface `{0}` has no IPv4 address: add one with `ip addr add` or pass --addr")]
    NoIpv4Address(String),
    #[error(
        "this tcpstack was built without its XDP program (eBPF object missing): build it with \
         `cargo xtask build`, or use --backend raw"
    )]
    EbpfObjectMissing,
    #[error("the kernel rejected the XDP program ({0}): rebuild it with `cargo xtask build`")]
    EbpfLoad(String),
    #[error(
        "the driver of `{iface}` refused the XDP program in {mode} mode ({reason}): try --xdp-mode skb"
    )]
    XdpRefused {
        iface: String,
        mode: &'static str,
        reason: String,
    },
    #[error(
        "the driver of `{0}` does not support native XDP: use --xdp-mode skb (generic XDP works \
         on every interface) or leave --xdp-mode out"
    )]
    NativeXdpUnsupported(String),
    #[error(
        "another XDP program is attached to `{0}` (another tcpstack?): stop it, or detach it with \
         `ip link set dev {0} xdp off`"
    )]
    XdpBusy(String),
    #[error(
        "AF_XDP socket creation failed on `{iface}` queue {queue} ({reason}): the kernel needs \
         CONFIG_XDP_SOCKETS, a queue that exists (--queues), and no other AF_XDP user; \
         or use --backend raw"
    )]
    XskCreate {
        iface: String,
        queue: u32,
        reason: String,
    },
    #[error(
        "TCP port(s) {ports} of {addr} are already taken by another tcpstack (its iptables rule \
         exists): stop it, or remove a crashed one's rules with `iptables -S OUTPUT | grep tcpstack`"
    )]
    PortInUse {
        addr: std::net::Ipv4Addr,
        ports: String,
    },
    #[error("iptables not found: install it (`apt-get install iptables`) or use --backend xdp")]
    IptablesMissing,
    #[error("`{command}` failed: {stderr}")]
    Iptables { command: String, stderr: String },
    #[error("{context}: {source}")]
    Os {
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Fails with [`IoError::NotRoot`] unless the process runs as root. Every backend needs root:
/// the XDP program and its maps, AF_XDP and AF_PACKET sockets, and the iptables rules (run as a
/// child process, which would not inherit capabilities without root).
pub fn require_root() -> Result<(), IoError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(IoError::NotRoot);
    }
    Ok(())
}

impl IoError {
    /// An OS error, reported as [`IoError::NotPermitted`] when that is what it is.
    pub(crate) fn os(context: &'static str, source: io::Error) -> IoError {
        if is_permission_error(&source) {
            IoError::NotPermitted(context)
        } else {
            IoError::Os { context, source }
        }
    }
}

pub(crate) fn is_permission_error(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

impl From<IoError> for io::Error {
    fn from(error: IoError) -> io::Error {
        let kind = match &error {
            IoError::Os { source, .. } => source.kind(),
            IoError::NotRoot | IoError::NotPermitted(_) => io::ErrorKind::PermissionDenied,
            IoError::NoSuchInterface(_) | IoError::EbpfObjectMissing => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}
