//! Project chores: `cargo xtask <command>`. Each command installs what it needs into
//! `.tools/` (idempotently) and says what it is doing.

mod agent_costs;
mod bench;
mod debug_costs;
mod demo;
mod ebpf;
mod fixtures;
mod image;
mod imports;
mod launch;
mod probe_costs;
mod size_costs;
mod soak;
mod test;
mod tools;
mod top_costs;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo         build the leaking store-gateway demo, run it under load, attach pooltrace
  test         install what the tests need, then run unit and integration tests (as root)
  image        a static pooltrace in an OCI image layout under target/image (umoci, installed)
  bench        overhead against the probe floor and bpftrace, CPU, memory, attach times
  build-ebpf   rebuild tracer-ebpf/prebuilt/pooltrace-ebpf.o (nightly + bpf-linker, installed)
  check-ebpf   fail if the committed eBPF object is stale
  check-imports  fail on a circle of imports between the files of tracer/src or xtask/src";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("bench") => bench::run(),
        Some("image") => image::run(),
        Some("test") => test::run(&args[1..]),
        Some("build-ebpf") => ebpf::build(),
        Some("check-ebpf") => check_ebpf(),
        Some("check-imports") => imports::check(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_ebpf() -> Result {
    if ebpf::is_fresh()? {
        tools::say("the committed eBPF object matches its sources");
        Ok(())
    } else {
        Err("the committed eBPF object is stale: run `cargo xtask build-ebpf` and commit it".into())
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn exec(command: &mut Command) -> Result {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})").into())
    }
}
