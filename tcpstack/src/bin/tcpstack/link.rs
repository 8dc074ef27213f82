//! Opening the backend the command line asks for, with errors a user can act on.

use std::net::Ipv4Addr;

use anyhow::Context;
use tcpstack::endpoint::EndpointConfig;
use tcpstack::io::{self, BackendConfig};
use tcpstack::runtime::Stack;

use crate::{cleanup, BackendKind, LinkArgs, XdpModeArg};

/// Active opens use ports Linux never picks (its ip_local_port_range ends at 60999), so the
/// kernel's own connections are never steered to us.
const ACTIVE_PORTS: (u16, u16) = (61000, 65535);

/// A started stack and what the status line says about it.
pub struct Link {
    pub stack: Stack,
    pub addr: Ipv4Addr,
    pub backend: BackendKind,
    pub iface: String,
}

pub fn endpoint_config() -> EndpointConfig {
    EndpointConfig {
        ephemeral_ports: ACTIVE_PORTS,
        ..EndpointConfig::default()
    }
}

/// Checks the environment, opens the backend and starts a stack on it. `listening` is the
/// port `serve` will reserve, so that a panic removes its iptables rule too.
pub fn open(args: &LinkArgs, listening: Option<u16>) -> anyhow::Result<Link> {
    io::require_root()?;
    let config = BackendConfig {
        addr: args.addr,
        xdp_mode: match args.xdp_mode {
            XdpModeArg::Auto => io::xdp::XdpMode::Auto,
            XdpModeArg::Native => io::xdp::XdpMode::Native,
            XdpModeArg::Skb => io::xdp::XdpMode::Skb,
        },
        queues: args.queues,
        active_ports: ACTIVE_PORTS,
        ..BackendConfig::new(
            match args.backend {
                BackendKind::Xdp => io::BackendKind::Xdp,
                BackendKind::Raw => io::BackendKind::Raw,
            },
            args.iface.clone(),
        )
    };
    // IoError's messages are whole sentences that say what to do.
    let (backend, addr) = io::open(&config).map_err(anyhow::Error::new)?;
    if args.backend == BackendKind::Raw {
        remove_rules_on_panic(addr, listening);
    }
    let mut builder = Stack::builder()
        .boxed_backend(backend)
        .address(addr)
        .config(endpoint_config());
    if let Some(path) = &args.pcap {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create the capture file {}", path.display()))?;
        builder = builder.capture(file);
    }
    let stack = builder.build().context("cannot start the stack")?;
    Ok(Link {
        stack,
        addr,
        backend: args.backend,
        iface: args.iface.clone(),
    })
}

/// The raw backend's guard removes its rules when dropped, on every normal exit path; the
/// panic hook exits without dropping it, so it deletes the same rules itself (one copy each:
/// another tcpstack on the same address keeps its own).
fn remove_rules_on_panic(addr: Ipv4Addr, listening: Option<u16>) {
    use tcpstack::io::raw::iptables::{command_line, port_range, rule};
    let mut specs = vec![rule(addr, &port_range(ACTIVE_PORTS.0, ACTIVE_PORTS.1))];
    if let Some(port) = listening {
        specs.push(rule(addr, &port.to_string()));
    }
    cleanup::register("iptables rules", move || {
        for spec in specs {
            let _ = std::process::Command::new("iptables")
                .args(command_line("-D", &spec))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    });
}
