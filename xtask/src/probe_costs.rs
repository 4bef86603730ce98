//! Two benchmark sections about the probes themselves rather than the target's pace: what
//! each eBPF program costs a run (`programs`), and how attach and detach time grow with the
//! number of probes (`probes`).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use aya::{programs::loaded_programs, sys::Stats};
use tracer_common::names;

use crate::{
    launch::{pooltrace_tracer, start_pooltrace, stats, wait_for, Target, Workload, WORKLOADS},
    Result,
};

/// Pairs made while the programs' run times are counted.
const PAIRS: u64 = 100_000;
const REPEATS: usize = 3;

/// Run time per run of each pooltrace program, from the kernel's own accounting
/// (`BPF_ENABLE_STATS`, on only while this section runs), on every target loop and build.
pub fn per_program(pooltrace: &Path, targets: &[(&str, std::path::PathBuf)]) -> Result {
    println!("\n== eBPF programs: ns per run (kernel run-time stats), {PAIRS} pairs, median of {REPEATS}");
    println!(
        "   {:<8} {:<10} {:>9} {:>9} {:>15} {:>13}",
        "build", "loop", "pool_get", "pool_put", "pool_get_entry", "all per pair"
    );
    // Counting costs a clock read per run: off again when the descriptor closes.
    let _stats = aya::sys::enable_stats(Stats::RunTime)
        .map_err(|e| format!("cannot enable BPF run-time stats: {e}"))?;
    for (go, target) in targets {
        for workload in &WORKLOADS {
            let mut rounds = Vec::new();
            for _ in 0..REPEATS {
                rounds.push(one_round(pooltrace, target, workload)?);
            }
            let median = |f: fn(&Round) -> Option<f64>| {
                let values: Vec<f64> = rounds.iter().filter_map(f).collect();
                match values.is_empty() {
                    true => "-".to_owned(),
                    false => format!("{:.0}", stats(&values).1),
                }
            };
            println!(
                "   {:<8} {:<10} {:>9} {:>9} {:>15} {:>13}",
                go,
                workload.mode,
                median(|r| r.per_run(names::PROGRAM_GET)),
                median(|r| r.per_run(names::PROGRAM_PUT)),
                median(|r| r.per_run(names::PROGRAM_GET_ENTRY)),
                median(|r| Some(r.per_pair())),
            );
        }
    }
    Ok(())
}

/// Total run time and runs of each program over one round.
struct Round(Vec<(&'static str, Duration, u64)>);

impl Round {
    fn per_run(&self, program: &str) -> Option<f64> {
        let (_, time, runs) = self.0.iter().find(|(name, _, _)| *name == program)?;
        (*runs > 0).then(|| time.as_nanos() as f64 / *runs as f64)
    }

    fn per_pair(&self) -> f64 {
        let total: Duration = self.0.iter().map(|(_, time, _)| *time).sum();
        total.as_nanos() as f64 / PAIRS as f64
    }
}

fn one_round(pooltrace: &Path, target_bin: &Path, workload: &Workload) -> Result<Round> {
    let mut target = Target::start(target_bin)?;
    let tracer = pooltrace_tracer(
        pooltrace,
        "report",
        target.pid,
        workload,
        &["--interval", "0"],
        "pooltrace: attached",
    )?;
    target.send(&format!("run {} {PAIRS}", workload.mode))?;
    target.expect("ns_per_pair=")?;
    // The only pooltrace running: its programs are the ones with these names.
    let mut round = Vec::new();
    for info in loaded_programs().flatten() {
        let name = info.name_as_str().unwrap_or("");
        if let Some(&program) = names::PROGRAMS.iter().find(|&&p| p == name) {
            round.push((program, info.run_time(), info.run_count()));
        }
    }
    tracer.stop()?;
    target.exit()?;
    Ok(Round(round))
}

/// How long pooltrace takes from start to "attached", and from SIGINT to its exit (detach,
/// then a report with nothing in it), as the number of probes grows: 2 (a plain pool), then
/// 1, 4 and 16 of the target's generic `ShapePool` instantiations at 4 probes each. Both
/// ways of linking: one uprobe-multi link per program, and a perf-event uprobe per site
/// (`POOLTRACE_UPROBE_LINKS=per-site`, what kernels before 6.6 get).
pub fn attach_and_detach(pooltrace: &Path, target_bin: &Path) -> Result {
    println!("\n== attach and detach time by number of probes, ms, median of {REPEATS}");
    println!(
        "   {:>6}  {:>13} {:>13}  {:>15} {:>15}",
        "probes", "attach multi", "detach multi", "attach per-site", "detach per-site"
    );
    let plain: Vec<String> = [
        "--get",
        "main.(*objPool).Get",
        "--put",
        "main.(*objPool).Put",
    ]
    .map(String::from)
    .to_vec();
    for pools in [0, 1, 4, 16] {
        let args = match pools {
            0 => plain.clone(),
            _ => shape_pools(pools),
        };
        let (probes, multi_attach, multi_detach) =
            timed_attaches(pooltrace, target_bin, &args, "multi")?;
        let (_, site_attach, site_detach) =
            timed_attaches(pooltrace, target_bin, &args, "per-site")?;
        println!(
            "   {probes:>6}  {multi_attach:>13.0} {multi_detach:>13.0}  {site_attach:>15.0} {site_detach:>15.0}"
        );
    }
    Ok(())
}

/// The number of probes, and the median attach and detach times in ms, with `links`.
fn timed_attaches(
    pooltrace: &Path,
    target_bin: &Path,
    args: &[String],
    links: &str,
) -> Result<(u64, f64, f64)> {
    let args: Vec<&str> = ["--interval", "0"]
        .into_iter()
        .chain(args.iter().map(String::as_str))
        .collect();
    let (mut attach, mut detach, mut probes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..REPEATS {
        let target = Target::start(target_bin)?;
        let started = Instant::now();
        let mut with_links = std::process::Command::new(pooltrace);
        with_links.env("POOLTRACE_UPROBE_LINKS", links);
        let mut tracer = start_pooltrace(with_links, "report", target.pid, &args)?;
        let attached = wait_for(&mut tracer.lines, "pooltrace: attached")?;
        attach.push(started.elapsed().as_secs_f64() * 1000.0);
        // A column is what it says only if pooltrace linked the way it was asked to.
        let linked = wait_for(&mut tracer.lines, "  links: ")?;
        let multi = linked.starts_with("  links: one uprobe-multi link");
        if multi != (links == "multi") {
            return Err(format!("asked for {links} links, pooltrace said {linked:?}").into());
        }
        probes = attached
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let stopping = Instant::now();
        tracer.stop()?;
        detach.push(stopping.elapsed().as_secs_f64() * 1000.0);
        target.exit()?;
    }
    Ok((probes, stats(&attach).1, stats(&detach).1))
}

/// `--get`/`--put` for the first `n` ShapePool instantiations (`[1]byte` to `[16]byte`).
fn shape_pools(n: usize) -> Vec<String> {
    (1..=n)
        .flat_map(|size| {
            let pool = format!("main.(*ShapePool[go.shape.[{size}]uint8])");
            [
                "--get".into(),
                format!("{pool}.Get"),
                "--put".into(),
                format!("{pool}.Put"),
            ]
        })
        .collect()
}
