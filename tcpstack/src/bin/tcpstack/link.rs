//! Opening the backend the command line asks for, with errors a user can act on.

use std::ffi::CString;
use std::net::Ipv4Addr;

use anyhow::{bail, Context};
use tcpstack::endpoint::EndpointConfig;
use tcpstack::io::Backend;
use tcpstack::runtime::Stack;

use crate::{BackendKind, LinkArgs};

/// A started stack and what the status line says about it.
pub struct Link {
    pub stack: Stack,
    pub addr: Ipv4Addr,
    pub backend: BackendKind,
    pub iface: String,
}

/// Active opens use ports Linux never picks (its ip_local_port_range ends at 60999), so the
/// kernel's own connections are never steered to us.
pub fn endpoint_config() -> EndpointConfig {
    EndpointConfig {
        ephemeral_ports: (61000, 65535),
        ..EndpointConfig::default()
    }
}

/// Checks the environment, opens the backend and starts a stack on it.
pub fn open(args: &LinkArgs) -> anyhow::Result<Link> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tcpstack needs root to attach XDP programs and open raw sockets: run it with sudo");
    }
    ensure_interface_exists(&args.iface)?;
    let config = endpoint_config();
    let (backend, addr) = open_backend(args, &config)?;
    let stack = Stack::builder()
        .boxed_backend(backend)
        .address(addr)
        .config(config)
        .build()
        .context("cannot start the stack")?;
    Ok(Link {
        stack,
        addr,
        backend: args.backend,
        iface: args.iface.clone(),
    })
}

fn ensure_interface_exists(iface: &str) -> anyhow::Result<()> {
    let known = CString::new(iface)
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        .map(|name| unsafe { libc::if_nametoindex(name.as_ptr()) } != 0)
        .unwrap_or(false);
    if !known {
        bail!("no such interface `{iface}`: check the name with `ip link`");
    }
    Ok(())
}

fn open_backend(
    args: &LinkArgs,
    _config: &EndpointConfig,
) -> anyhow::Result<(Box<dyn Backend>, Ipv4Addr)> {
    match args.backend {
        BackendKind::Xdp | BackendKind::Raw => bail!(
            "the {} backend is not part of this build yet: it arrives with the io::xdp and \
             io::raw modules",
            args.backend.name()
        ),
    }
}
