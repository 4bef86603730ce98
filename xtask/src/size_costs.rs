//! What sizes cost (`POOLTRACE_BENCH_ONLY=sizes`): the target's ns per Get/Put pair under
//! `report` with and without `--get-request`, alternated in one run, for a generic pool
//! (Thanos' shape: its Get's entry is probed for the receiver anyway) and for a plain method
//! (Prometheus' shape: reading the size asked for adds an entry probe).

use std::path::Path;

use crate::{
    launch::{pooltrace_tracer, stats, Target, Workload, WORKLOADS},
    Result,
};

const REPEATS: usize = 5;
const PAIRS: u64 = 100_000;

/// Prometheus' shape; the generic pool is the overhead section's `bucketed`.
const BYTE_POOL: Workload = Workload {
    mode: "bytes",
    pool_args: &[
        "--get",
        "main.(*BytePool).Get",
        "--put",
        "main.(*BytePool).Put",
        "--object",
        "slice",
    ],
    get_key: "ax",
    put_key: "bx",
};

pub fn run(pooltrace: &Path, target_bin: &Path) -> Result {
    for pool in [&WORKLOADS[1], &BYTE_POOL] {
        with_and_without(pooltrace, target_bin, pool)?;
    }
    Ok(())
}

fn with_and_without(pooltrace: &Path, target_bin: &Path, pool: &Workload) -> Result {
    println!(
        "\n== {} pool (Get(sz int)) under report, without and with --get-request a1: ns per \
         pair ({PAIRS} pairs, {REPEATS} repeats, alternating)",
        pool.mode
    );
    let mut samples = [Vec::new(), Vec::new()];
    for repeat in 0..REPEATS * 2 {
        let sized = (repeat % 2 == 1) ^ (repeat / 2 % 2 == 1);
        let extra: &[&str] = match sized {
            true => &["--get-request", "a1"],
            false => &[],
        };
        let mut target = Target::start(target_bin)?;
        let report = pooltrace_tracer(
            pooltrace,
            "report",
            target.pid,
            pool,
            extra,
            "pooltrace: attached",
        )?;
        let ns = target.run_pairs(pool.mode, PAIRS)?;
        report.stop()?;
        target.exit()?;
        samples[usize::from(sized)].push(ns);
    }
    let (without, with) = (stats(&samples[0]), stats(&samples[1]));
    for (name, (min, median, max)) in [("without", without), ("with", with)] {
        println!("   {name:<8} min {min:>8.1}  median {median:>8.1}  max {max:>8.1}");
    }
    println!("   ratio with/without (medians): {:.3}", with.1 / without.1);
    Ok(())
}
