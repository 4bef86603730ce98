//! `cargo xtask bench`: what pooltrace costs a Go program, measured in one run against the
//! floor (count-only uprobes at exactly pooltrace's sites) and against bpftrace doing the same
//! job, with the configurations alternated over repeats because this machine is shared and
//! noisy. Also: user CPU at a fixed rate, memory with a million objects out, attach and
//! table-load times on real programs, the event rate stream mode sustains, the agent's own
//! cost on a large program and with short-lived matches (`agent`), and the agent left
//! running on a loaded service (`soak`), and what setting a Get's request against its
//! capacity costs (`sizes`), and what the kernel side's diagnostics cost off and on
//! (`debug`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pooltrace_harness::Lines;
use tracer_common::SiteRole;

use crate::{
    exec, fixtures,
    launch::{cpu_ticks, pooltrace_tracer, stats, wait_for, Target, Tracer, Workload, WORKLOADS},
    tools, workspace, Result,
};

const REPEATS: usize = 3;
/// Pairs per measurement with probes (~20 us a pair here) and without (~10 ns).
const PROBED_PAIRS: u64 = 100_000;
const UNPROBED_PAIRS: u64 = 20_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    NoProbe,
    Floor,
    Report,
    DoublePuts,
    Stream,
    Bpftrace,
}

const CONFIGS: [Config; 6] = [
    Config::NoProbe,
    Config::Floor,
    Config::Report,
    Config::DoublePuts,
    Config::Stream,
    Config::Bpftrace,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::NoProbe => "no probe",
            Self::Floor => "floor (count-only uprobes, same sites)",
            Self::Report => "pooltrace report",
            Self::DoublePuts => "pooltrace report --double-puts",
            Self::Stream => "pooltrace stream > file",
            Self::Bpftrace => "bpftrace (RETs + Put entry, ustack map)",
        }
    }
}

pub fn run() -> Result {
    let root = workspace();
    let targets = build(&root)?;
    let target = targets[0].1.clone();
    let pooltrace = root.join("target/release/pooltrace");
    if !Path::new("/usr/bin/bpftrace").is_file() {
        tools::say("installing Debian's bpftrace (the baseline)");
        tools::apt_install(&["bpftrace"])?;
    }
    println!("pooltrace benchmarks, {}", machine());
    // POOLTRACE_BENCH_ONLY=overhead|programs|probes|sampling|cpu|memory|stream|attach|agent|
    // fleet|top|sizes|debug|soak runs one section.
    let only = std::env::var("POOLTRACE_BENCH_ONLY").ok();
    let wanted = |section: &str| only.as_deref().is_none_or(|o| o == section);
    if wanted("overhead") {
        for (go, target) in &targets {
            for workload in &WORKLOADS {
                overhead(&pooltrace, go, target, workload)?;
            }
        }
    }
    if wanted("programs") {
        crate::probe_costs::per_program(&pooltrace, &targets)?;
    }
    if wanted("probes") {
        crate::probe_costs::attach_and_detach(&pooltrace, &target)?;
    }
    if wanted("sampling") {
        sampling(&pooltrace, &target)?;
    }
    if wanted("cpu") {
        cpu_at_rate(&pooltrace, &target)?;
    }
    if wanted("memory") {
        memory_with_a_million_objects(&pooltrace, &target)?;
    }
    if wanted("stream") {
        for mode in ["sync", "parallel"] {
            stream_rate(&pooltrace, &target, mode)?;
        }
    }
    if wanted("attach") {
        attach_times(&pooltrace)?;
    }
    if wanted("agent") {
        crate::agent_costs::run(&pooltrace)?;
    }
    if wanted("fleet") {
        crate::agent_costs::fleet(&pooltrace)?;
    }
    if wanted("top") {
        crate::top_costs::run(&pooltrace, &target)?;
    }
    if wanted("sizes") {
        crate::size_costs::run(&pooltrace, &target)?;
    }
    if wanted("debug") {
        crate::debug_costs::run(&pooltrace, &target)?;
    }
    if wanted("soak") {
        crate::soak::run(&pooltrace)?;
    }
    Ok(())
}

/// The Go target built by each toolchain the overhead is measured on: Go 1.27 first (the
/// other sections use it), then Go 1.19, whose prologue has no emulated instruction after the
/// stack check.
fn build(root: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    crate::ebpf::ensure_fresh()?;
    tools::say("building pooltrace (release) and the Go targets");
    exec(
        Command::new("cargo")
            .args(["build", "--quiet", "--release", "--package", "pooltrace"])
            .current_dir(root),
    )?;
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let source = root.join("bench/pooltarget");
    let mut targets = Vec::new();
    for (go, toolchain) in [("Go 1.27", tools::go()?), ("Go 1.19", tools::go_119()?)] {
        let target = out.join(format!("pooltarget-{}", go.replace(' ', "")));
        fixtures::go_build(&toolchain, &source, &[], &target)?;
        targets.push((go, target));
    }
    Ok(targets)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} cores, {cpu}, kernel {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}

/// ns per Get/Put pair under each configuration, alternated over repeats.
fn overhead(pooltrace: &Path, go: &str, target_bin: &Path, workload: &Workload) -> Result {
    println!(
        "\n== {} pool loop, built with {go}: ns per Get/Put pair ({REPEATS} repeats, alternating)",
        workload.mode
    );
    let sites = planned_sites(pooltrace, target_bin, workload)?;
    // A pair hits one of Get's RETs, the Put site, and Get's entry site if there is one.
    let ret_stepped = usize::from(
        sites
            .iter()
            .any(|s| s.role == SiteRole::GetRet && !s.emulated),
    );
    let single_stepped = ret_stepped
        + sites
            .iter()
            .filter(|s| s.role != SiteRole::GetRet && !s.emulated)
            .count();
    println!(
        "   sites: {}",
        sites
            .iter()
            .map(|s| format!(
                "{} {} ({})",
                s.role.as_str(),
                s.instruction,
                if s.emulated {
                    "emulated"
                } else {
                    "single-stepped"
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("   single-stepped probe hits per pair: {single_stepped}");
    // samples[i]: the measurements of CONFIGS[i].
    let mut samples = vec![Vec::new(); CONFIGS.len()];
    for repeat in 0..REPEATS {
        for shift in 0..CONFIGS.len() {
            let index = (repeat + shift) % CONFIGS.len();
            samples[index].push(measure(
                pooltrace,
                target_bin,
                workload,
                &sites,
                CONFIGS[index],
            )?);
        }
    }
    let median = |config: Config| {
        let index = CONFIGS.iter().position(|&c| c == config).unwrap_or(0);
        stats(&samples[index]).1
    };
    for (config, values) in CONFIGS.iter().zip(&samples) {
        let (min, med, max) = stats(values);
        println!(
            "   {:<42} min {:>9.1}  median {:>9.1}  max {:>9.1}",
            config.name(),
            min,
            med,
            max
        );
    }
    let report = median(Config::Report);
    println!(
        "   ratios (medians): report/floor {:.2}, report/bpftrace {:.2}, stream/floor {:.2}",
        report / median(Config::Floor),
        report / median(Config::Bpftrace),
        median(Config::Stream) / median(Config::Floor)
    );
    let double_puts = median(Config::DoublePuts);
    println!(
        "   --double-puts: {:+.0} ns per pair over report, {:.2} of the floor",
        double_puts - report,
        double_puts / median(Config::Floor)
    );
    Ok(())
}

/// One measurement: a fresh target, the tracer attached (if any), N pairs timed by the target.
fn measure(
    pooltrace: &Path,
    target_bin: &Path,
    workload: &Workload,
    sites: &[Site],
    config: Config,
) -> Result<f64> {
    let mut target = Target::start(target_bin)?;
    let tracer = match config {
        Config::NoProbe => None,
        Config::Floor => Some(bpftrace(&floor_script(target_bin, sites), target.pid)?),
        Config::Bpftrace => Some(bpftrace(
            &baseline_script(target_bin, sites, workload),
            target.pid,
        )?),
        Config::Report | Config::DoublePuts => Some(pooltrace_tracer(
            pooltrace,
            "report",
            target.pid,
            workload,
            match config {
                Config::DoublePuts => &["--interval", "0", "--double-puts"],
                _ => &["--interval", "0"],
            },
            "pooltrace: attached",
        )?),
        Config::Stream => {
            let file = std::env::temp_dir().join("pooltrace-bench-stream.log");
            // pooltrace refuses to write over a file, so the last run's must go.
            let _ = std::fs::remove_file(&file);
            let output = file.to_string_lossy().into_owned();
            Some(pooltrace_tracer(
                pooltrace,
                "stream",
                target.pid,
                workload,
                &["--output", &output],
                "pooltrace: streaming",
            )?)
        }
    };
    let pairs = if config == Config::NoProbe {
        UNPROBED_PAIRS
    } else {
        PROBED_PAIRS
    };
    let ns = target.run_pairs(workload.mode, pairs)?;
    if let Some(tracer) = tracer {
        tracer.stop()?;
    }
    target.exit()?;
    Ok(ns)
}

#[derive(Debug)]
struct Site {
    role: SiteRole,
    file_offset: String,
    function_offset: String,
    instruction: String,
    emulated: bool,
}

/// Where pooltrace would probe, from `report --dry-run` on a running target.
fn planned_sites(pooltrace: &Path, target_bin: &Path, workload: &Workload) -> Result<Vec<Site>> {
    let target = Target::start(target_bin)?;
    let output = Command::new(pooltrace)
        .args(["report", "--pid", &target.pid.to_string(), "--dry-run"])
        .args(workload.pool_args)
        .output()?;
    target.exit()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "pooltrace --dry-run: {e}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or("").to_owned();
    json.as_array()
        .ok_or("no sites")?
        .iter()
        .map(|s| {
            let role = text(s, "role");
            Ok(Site {
                role: SiteRole::parse(&role).ok_or(format!("--dry-run: unknown role {role:?}"))?,
                file_offset: text(s, "file_offset"),
                function_offset: text(s, "function_offset"),
                instruction: text(s, "instruction"),
                emulated: s["emulated"].as_bool().unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>>>()
}

/// Count-only uprobes at exactly pooltrace's sites: what any tracer there pays.
fn floor_script(target: &Path, sites: &[Site]) -> String {
    let probes: Vec<String> = sites
        .iter()
        .map(|s| format!("uprobe:{}:{}", target.display(), s.file_offset))
        .collect();
    format!("{} {{ @hits = count(); }}", probes.join(", "))
}

/// The same job the way bpftrace users write it (field notes §8): Get at each RET keyed by
/// the object with its user stack, Put at the function's entry deleting it.
fn baseline_script(target: &Path, sites: &[Site], workload: &Workload) -> String {
    let rets: Vec<String> = sites
        .iter()
        .filter(|s| s.role == SiteRole::GetRet)
        .map(|s| format!("uprobe:{}:{}", target.display(), s.file_offset))
        .collect();
    let put = sites
        .iter()
        .find(|s| s.role == SiteRole::Put)
        .map(|s| s.function_offset.clone())
        .unwrap_or_default();
    format!(
        "{} {{ @live[reg(\"{}\")] = ustack; }} uprobe:{}:{} {{ delete(@live[reg(\"{}\")]); }}",
        rets.join(", "),
        workload.get_key,
        target.display(),
        put,
        workload.put_key
    )
}

fn bpftrace(script: &str, pid: i32) -> Result<Tracer> {
    let mut child = Command::new("bpftrace")
        .args(["--unsafe", "-p", &pid.to_string(), "-e", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = Lines::of(child.stdout.take().ok_or("bpftrace stdout")?);
    wait_for(&mut lines, "Attaching")?;
    // bpftrace says "Attaching" before it attaches.
    thread::sleep(Duration::from_millis(500));
    Ok(Tracer { child, lines })
}

/// `--sample-gets`: the cost against the fraction of time Get is probed, and that no
/// false leak appears (the sync loop gives back everything it takes).
fn sampling(pooltrace: &Path, target_bin: &Path) -> Result {
    const PAIRS: u64 = 300_000;
    println!("\n== pooltrace report --sample-gets, sync.Pool loop ({PAIRS} pairs, balanced)");
    let report = std::env::temp_dir().join("pooltrace-bench-sample.json");
    for fraction in ["1", "0.5", "0.25", "0.1"] {
        let _ = std::fs::remove_file(&report);
        let mut target = Target::start(target_bin)?;
        let output = report.to_string_lossy().into_owned();
        let args = [
            "--interval",
            "0",
            "--sample-gets",
            fraction,
            "--format",
            "json",
            "--output",
            &output,
        ];
        let tracer = pooltrace_tracer(
            pooltrace,
            "report",
            target.pid,
            &WORKLOADS[0],
            &args,
            "pooltrace: attached",
        )?;
        target.send(&format!("run sync {PAIRS}"))?;
        let line = target.expect("ns_per_pair=")?;
        tracer.stop()?;
        target.exit()?;
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        let pool = &json["pools"][0];
        println!(
            "   probed {:>4}% of the time: {:<26} tracked gets {:>7}, outstanding {} (false leaks), unmatched puts {}",
            fraction.parse::<f64>().unwrap_or(0.0) * 100.0,
            line.split_whitespace().next().unwrap_or(""),
            pool["gets"],
            pool["outstanding"],
            pool["unmatched_puts"]
        );
    }
    let _ = std::fs::remove_file(report);
    Ok(())
}

/// The user CPU pooltrace report takes while the target makes 50,000 pairs a second.
fn cpu_at_rate(pooltrace: &Path, target_bin: &Path) -> Result {
    const RATE: u64 = 50_000;
    const SECONDS: u64 = 10;
    println!("\n== pooltrace report's own CPU while the target makes {RATE} sync.Pool pairs/s for {SECONDS} s");
    let mut target = Target::start(target_bin)?;
    let tracer = pooltrace_tracer(
        pooltrace,
        "report",
        target.pid,
        &WORKLOADS[0],
        &["--interval", "5s"],
        "pooltrace: attached",
    )?;
    let before = cpu_ticks(tracer.child.id())?;
    let started = Instant::now();
    target.send(&format!("paced {RATE} {SECONDS}"))?;
    let rate = target.expect("rate=")?;
    let ticks = cpu_ticks(tracer.child.id())? - before;
    let seconds = started.elapsed().as_secs_f64();
    tracer.stop()?;
    target.exit()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!("   target reached {rate}/s; pooltrace used {:.2}% of one core (user+system, {ticks} ticks in {seconds:.1} s)", 100.0 * ticks as f64 / hz / seconds);
    Ok(())
}

/// Peak resident memory of pooltrace with a million objects outstanding, including the
/// final report that reads all of them.
fn memory_with_a_million_objects(pooltrace: &Path, target_bin: &Path) -> Result {
    const OBJECTS: u64 = 1_000_000;
    println!("\n== pooltrace report with {OBJECTS} objects outstanding");
    let mut target = Target::start(target_bin)?;
    let workload = Workload {
        mode: "hold",
        pool_args: &[
            "--get",
            "main.(*objPool).Get",
            "--put",
            "main.(*objPool).Put",
        ],
        get_key: "ax",
        put_key: "bx",
    };
    let Tracer {
        mut child,
        mut lines,
    } = pooltrace_tracer(
        pooltrace,
        "report",
        target.pid,
        &workload,
        &[
            "--interval",
            "0",
            "--max-objects",
            "1100000",
            "--format",
            "json",
        ],
        "pooltrace: attached",
    )?;
    let maps = wait_for(&mut lines, "  kernel maps:")?;
    target.send(&format!("hold {OBJECTS}"))?;
    target.expect("held=")?;
    let started = Instant::now();
    // SAFETY: kill(2) and wait4(2) on our own child.
    let peak_kib = unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as i32, &mut status, 0, &mut usage);
        usage.ru_maxrss
    };
    let _ = child.wait();
    println!("   {}", maps.trim());
    println!(
        "   peak RSS {:.1} MiB (ru_maxrss); final report over {OBJECTS} objects took {:.1} s",
        peak_kib as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    target.exit()
}

/// Events per second stream mode writes to a file, and how many it lost.
fn stream_rate(pooltrace: &Path, target_bin: &Path, mode: &str) -> Result {
    const PAIRS: u64 = 200_000;
    println!(
        "\n== pooltrace stream to a file, {mode} sync.Pool loop at full speed ({PAIRS} pairs)"
    );
    let mut target = Target::start(target_bin)?;
    let file = std::env::temp_dir().join("pooltrace-bench-rate.log");
    // pooltrace refuses to write over a file, and an interrupted bench may have left one.
    let _ = std::fs::remove_file(&file);
    let output = file.to_string_lossy().into_owned();
    let Tracer {
        mut child,
        mut lines,
    } = pooltrace_tracer(
        pooltrace,
        "stream",
        target.pid,
        &WORKLOADS[0],
        &["--output", &output],
        "pooltrace: streaming",
    )?;
    let ns = target.run_pairs(mode, PAIRS)?;
    thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let summary = wait_for(&mut lines, " events shown, ")?;
    let _ = child.wait();
    let events_per_s = 2.0 * 1e9 / ns;
    println!(
        "   target made {:.0} events/s; pooltrace: {}",
        events_per_s,
        summary.trim_start_matches("pooltrace: ")
    );
    let _ = std::fs::remove_file(file);
    target.exit()
}

/// Start to "attached" on real programs, and the table load alone (--dry-run).
fn attach_times(pooltrace: &Path) -> Result {
    println!("\n== attach time (pooltrace start to \"attached\", --pool sync), median of 3");
    let programs = tools::real_programs()?;
    let dir = std::env::temp_dir().join("pooltrace-bench-caddy");
    std::fs::create_dir_all(&dir)?;
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        "{\n\tadmin off\n}\nhttp://127.0.0.1:18999 {\n\trespond ok\n}\n",
    )?;
    let runs: [(String, PathBuf, Vec<String>); 2] = [
        (
            format!(
                "nats-server {} (19 MB, .symtab)",
                tools::NATS_SERVER_VERSION
            ),
            programs.nats_server.clone(),
            vec!["-a".into(), "127.0.0.1".into(), "-p".into(), "14999".into()],
        ),
        (
            format!("caddy {} (52 MB, stripped)", tools::CADDY_VERSION),
            programs.caddy.clone(),
            vec![
                "run".into(),
                "--adapter".into(),
                "caddyfile".into(),
                "--config".into(),
                caddyfile.to_string_lossy().into_owned(),
            ],
        ),
    ];
    for (name, program, args) in runs {
        let mut server = Command::new(&program)
            .args(&args)
            .env("HOME", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        thread::sleep(Duration::from_secs(1));
        let pid = server.id().to_string();
        let mut attach = Vec::new();
        let mut load = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let mut child = Command::new(pooltrace)
                .args(["report", "--pid", &pid, "--pool", "sync", "--interval", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut lines = Lines::of(child.stderr.take().ok_or("stderr")?);
            wait_for(&mut lines, "pooltrace: attached")?;
            attach.push(started.elapsed().as_secs_f64() * 1000.0);
            Tracer { child, lines }.stop()?;
            let started = Instant::now();
            exec(
                Command::new(pooltrace)
                    .args(["report", "--pid", &pid, "--pool", "sync", "--dry-run"])
                    .stdout(Stdio::null()),
            )?;
            load.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = server.kill();
        let _ = server.wait();
        println!(
            "   {name}: attach {:.0} ms, tables + plan (--dry-run) {:.0} ms",
            stats(&attach).1,
            stats(&load).1
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
