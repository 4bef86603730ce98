//! What the kernel side's diagnostics cost (`POOLTRACE_BENCH_ONLY=debug`): the target's ns per
//! sync.Pool pair under `report` with logging compiled in and off, against the release before
//! it (`POOLTRACE_BENCH_BASELINE`, a pooltrace binary built without aya-log) when given; with
//! `--debug` on a healthy pool (nothing to say); and, on a Get key that faults every time,
//! without and with `--debug` (a message a Get, rate-limited in user space). Alternated, in
//! one run.

use std::path::{Path, PathBuf};

use crate::{
    launch::{pooltrace_tracer, stats, Target, Workload, WORKLOADS},
    Result,
};

const REPEATS: usize = 5;
const PAIRS: u64 = 100_000;

/// sync.Pool named by its functions, its object read 3.75 GiB past the interface's data
/// word, above the target's heap: every Get's read faults.
const FAULTING: Workload = Workload {
    mode: "sync",
    pool_args: &[
        "--get",
        "sync.(*Pool).Get",
        "--put",
        "sync.(*Pool).Put",
        "--object",
        "iface",
        "--kind",
        "sync",
        "--get-key",
        "*r1+0xf0000000",
    ],
    get_key: "bx",
    put_key: "cx",
};

struct Config {
    name: &'static str,
    pooltrace: PathBuf,
    workload: &'static Workload,
    args: Vec<&'static str>,
}

pub fn run(pooltrace: &Path, target_bin: &Path) -> Result {
    let mut configs = vec![
        Config {
            name: "report (logging off)",
            pooltrace: pooltrace.to_owned(),
            workload: &WORKLOADS[0],
            args: Vec::new(),
        },
        Config {
            name: "report --debug",
            pooltrace: pooltrace.to_owned(),
            workload: &WORKLOADS[0],
            args: vec!["--debug"],
        },
    ];
    if let Some(baseline) = std::env::var_os("POOLTRACE_BENCH_BASELINE") {
        configs.insert(
            1,
            Config {
                name: "baseline report (no aya-log)",
                pooltrace: PathBuf::from(baseline),
                workload: &WORKLOADS[0],
                args: Vec::new(),
            },
        );
    }
    compare("sync pool, healthy", target_bin, &configs)?;
    let faulting = |name, debug: bool| Config {
        name,
        pooltrace: pooltrace.to_owned(),
        workload: &FAULTING,
        args: if debug { vec!["--debug"] } else { Vec::new() },
    };
    compare(
        "sync pool, every Get's key read faults",
        target_bin,
        &[
            faulting("report, faulting key", false),
            faulting("report --debug, faulting key", true),
        ],
    )
}

/// ns per pair under each config, `REPEATS` times each, in rotating order.
fn compare(what: &str, target_bin: &Path, configs: &[Config]) -> Result {
    println!("\n== {what}: ns per pair ({PAIRS} pairs, {REPEATS} repeats, alternating)");
    let mut samples = vec![Vec::new(); configs.len()];
    for repeat in 0..REPEATS {
        for i in 0..configs.len() {
            let which = (i + repeat) % configs.len();
            let config = &configs[which];
            let mut target = Target::start(target_bin)?;
            let tracer = pooltrace_tracer(
                &config.pooltrace,
                "report",
                target.pid,
                config.workload,
                &config.args,
                "pooltrace: attached",
            )?;
            let ns = target.run_pairs(config.workload.mode, PAIRS)?;
            tracer.stop()?;
            target.exit()?;
            samples[which].push(ns);
        }
    }
    let first = stats(&samples[0]).1;
    for (config, values) in configs.iter().zip(&samples) {
        let (min, median, max) = stats(values);
        println!(
            "   {:<32} min {min:>8.1}  median {median:>8.1}  max {max:>8.1}  x{:.3}",
            config.name,
            median / first
        );
    }
    Ok(())
}
