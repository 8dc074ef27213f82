//! Embeds the XDP object built by `cargo xtask build` (nightly, bpfel-unknown-none) when it
//! exists, so a release binary carries its own program. Without it the crate still builds with
//! stable alone, and the xdp backend reports "eBPF object missing" at run time.

use std::env;
use std::fs;
use std::path::PathBuf;

const OVERRIDE: &str = "TCPSTACK_EBPF_OBJECT";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let ebpf_crate = manifest_dir.join("../tcpstack-ebpf");
    let default_object = ebpf_crate.join("target/bpfel-unknown-none/release/tcpstack-ebpf");

    println!("cargo:rerun-if-env-changed={OVERRIDE}");
    let object = match env::var_os(OVERRIDE) {
        Some(path) => PathBuf::from(path),
        None => default_object,
    };
    // Watching a missing file would rerun this script on every build; watch the directory the
    // object will appear in (or the crate) instead.
    if object.exists() {
        println!("cargo:rerun-if-changed={}", object.display());
    } else if ebpf_crate.exists() {
        println!("cargo:rerun-if-changed={}", ebpf_crate.display());
    }

    // An empty file stands for "no object": io::xdp checks the length at run time.
    let bytes = fs::read(&object).unwrap_or_default();
    fs::write(out_dir.join("tcpstack-ebpf.o"), bytes).expect("OUT_DIR is writable");
}
