//! `tcpstack ss`: the connections of running `tcpstack serve`s, like `ss -tin`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use tcpstack::runtime::control::{self, SS_REQUEST};

#[derive(Args, Debug)]
pub struct SsArgs {
    /// The control socket of one server [default: every socket in /run/tcpstack].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

pub async fn run(args: SsArgs) -> anyhow::Result<ExitCode> {
    let paths = match args.control {
        Some(path) => vec![path],
        None => running_servers(Path::new(control::DEFAULT_DIR))?,
    };
    let several = paths.len() > 1;
    for path in &paths {
        let text = control::query(path, SS_REQUEST).await?;
        if several {
            println!("# {}", path.display());
        }
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

fn running_servers(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let sockets = match control::sockets_in(dir) {
        Ok(sockets) => sockets,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot list {}", dir.display())),
    };
    if sockets.is_empty() {
        bail!(
            "no tcpstack server is running: {} holds no control socket; start one with \
             `tcpstack serve --iface IF --port PORT`, or point at its socket with --control PATH",
            dir.display()
        );
    }
    Ok(sockets)
}
