//! The bounded fuzzing run of `cargo xtask test`: each cargo-fuzz target of `fuzz/` (the wire
//! parsers; an endpoint fed arbitrary segment sequences) for a fixed time, starting from the
//! corpus kept in the repository. What a run finds is written to a scratch directory, so the
//! checkout stays as it was; a crash fails the test with libFuzzer's report and the input saved
//! under `fuzz/artifacts/`.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{run_command, step, workspace_root};

/// The targets, as `fuzz/Cargo.toml` names them.
const TARGETS: [&str; 2] = ["wire_parsers", "endpoint_segments"];

/// Seconds each target runs.
const SECONDS_PER_TARGET: u32 = 90;

pub fn run() -> Result<()> {
    crate::deps::fuzz_toolchain()?;
    let fuzz_dir = workspace_root().join("fuzz");
    let scratch = workspace_root().join("target/fuzz-corpus");
    for target in TARGETS {
        step(&format!(
            "fuzzing {target} for {SECONDS_PER_TARGET} s (cargo +nightly fuzz run)"
        ));
        let new_inputs = scratch.join(target);
        std::fs::create_dir_all(&new_inputs)
            .with_context(|| format!("creating {}", new_inputs.display()))?;
        let kept = fuzz_dir.join("corpus").join(target);
        run_command(
            Command::new("cargo")
                .current_dir(&fuzz_dir)
                .args(["+nightly", "fuzz", "run", target])
                .arg(&new_inputs)
                .arg(&kept)
                .arg("--")
                .arg(format!("-max_total_time={SECONDS_PER_TARGET}")),
        )
        .with_context(|| {
            format!("fuzz target {target} found a crash (see fuzz/artifacts/{target}/)")
        })?;
    }
    Ok(())
}
