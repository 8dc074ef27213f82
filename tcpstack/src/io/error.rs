use std::io;

/// Why a backend could not start. Each message is one sentence that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("permission denied ({0}): run as root or with CAP_NET_ADMIN+CAP_NET_RAW+CAP_BPF")]
    NotPermitted(&'static str),
    #[error("no such interface `{0}`: check the name with `ip link`")]
    NoSuchInterface(String),
    #[error("interface `{0}` has no IPv4 address: add one with `ip addr add` or pass --addr")]
    NoIpv4Address(String),
    #[error("eBPF object missing: run `cargo xtask build`")]
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
            IoError::NotPermitted(_) => io::ErrorKind::PermissionDenied,
            IoError::NoSuchInterface(_) | IoError::EbpfObjectMissing => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}
