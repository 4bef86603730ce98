//! `cargo xtask bench`, section `agent`: what the agent itself costs a node.
//!
//! - On a large stripped program: Caddy (52 MB) serving gzip under wrk, the agent at its
//!   defaults with `--pool sync` for a minute, `/metrics` scraped every 5 s. Its resident
//!   memory (heap, and the pages of the traced binary it maps), its peak, its CPU, the
//!   slowest scrape and the series served.
//! - With processes that live too briefly to trace: a server that runs a 30 ms helper (a
//!   copy of itself, which the agent's `--exe` matches) on every request, about 30 a second,
//!   once at the default `--attach-after 1s` and once at 0. The agent's CPU and how many
//!   processes it attached to.
//!
//! Section `fleet`: what a node of many Go services asks of it. [`fleet`] runs 50 copies of
//! poolfix, each given one Get and Put a second, under one agent at its defaults: the kernel
//! memory of its maps against an agent that traces one process, its RSS, the time from the
//! last start to all 50 attached, and `/metrics`' scrape time and series.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pooltrace_harness::{caddy_serving_gzip, http_get, Lines};

use crate::{
    fixtures,
    launch::{cpu_ticks, Guard},
    tools, workspace, Result,
};

const AGENT_ADDR: &str = "127.0.0.1:19467";
const CADDY_PORT: u16 = 18998;
const CADDY_SECONDS: u64 = 60;
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
const HELPER_SECONDS: u64 = 30;

pub fn run(pooltrace: &Path) -> Result {
    on_caddy(pooltrace)?;
    let program = fixtures::dir().join("httppools-go1.27");
    let out = workspace().join("target/bench");
    std::fs::create_dir_all(&out)?;
    // The agent matches the copy by its own name, and nothing else on the machine.
    let copy = out.join("httppools-helpers");
    if !program.is_file() {
        return Err(format!(
            "{} is missing: run `cargo xtask test` first",
            program.display()
        )
        .into());
    }
    std::fs::copy(&program, &copy)?;
    println!(
        "\n== agent with short-lived matches: a 30 ms helper on every request, {HELPER_SECONDS} s"
    );
    for attach_after in ["1s", "0"] {
        with_helpers(pooltrace, &copy, attach_after)?;
    }
    Ok(())
}

/// The agent at its defaults on Caddy under load.
fn on_caddy(pooltrace: &Path) -> Result {
    let caddy = tools::real_programs()?.caddy;
    let dir = std::env::temp_dir().join("pooltrace-bench-agent-caddy");
    let server = Guard(
        caddy_serving_gzip(&caddy, &dir, CADDY_PORT)?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    thread::sleep(Duration::from_secs(1));
    let _load = Guard(
        Command::new("wrk")
            .args(["-t2", "-c16", &format!("-d{}s", CADDY_SECONDS + 30)])
            .args(["-H", "Accept-Encoding: gzip"])
            .arg(format!("http://127.0.0.1:{CADDY_PORT}/"))
            .stdout(Stdio::null())
            .spawn()?,
    );
    thread::sleep(Duration::from_secs(2));
    let (agent, mut said) = start_agent(
        pooltrace,
        &["--pid", &server.0.id().to_string(), "--pool", "sync"],
    )?;
    said.0
        .starting("pooltrace agent: attached", Duration::from_secs(60))?;
    println!(
        "\n== agent at its defaults on caddy {} (52 MB, stripped) serving gzip under wrk, {CADDY_SECONDS} s",
        tools::CADDY_VERSION
    );
    let pid = agent.0.id();
    let (started, ticks) = (Instant::now(), cpu_ticks(pid)?);
    let (mut slowest, mut series) = (Duration::ZERO, 0);
    while started.elapsed() < Duration::from_secs(CADDY_SECONDS) {
        thread::sleep(SCRAPE_EVERY);
        let asked = Instant::now();
        let (status, body) = http_get(AGENT_ADDR, "/metrics", Duration::from_secs(10))?;
        slowest = slowest.max(asked.elapsed());
        if status != 200 {
            return Err(format!("/metrics answered {status}").into());
        }
        series = (String::from_utf8_lossy(&body).lines())
            .filter(|l| !l.starts_with('#'))
            .count();
    }
    let cpu = cpu_percent(pid, ticks, started)?;
    let memory = Memory::of(pid)?;
    println!(
        "   agent RSS {:.1} MiB ({:.1} MiB heap and other private memory, {:.1} MiB pages of mapped files), peak {:.1} MiB",
        memory.rss, memory.anon, memory.file, memory.peak
    );
    println!(
        "   agent CPU {cpu:.2}% of a core from its attach on; slowest scrape {:.1} ms; {series} series",
        slowest.as_secs_f64() * 1000.0
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// The agent following `program` while it runs a helper of itself on every request.
fn with_helpers(pooltrace: &Path, program: &Path, attach_after: &str) -> Result {
    let name = program
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("a named program")?;
    let (agent, said) = start_agent(
        pooltrace,
        &[
            "--exe",
            name,
            "--pool",
            "sync",
            "--attach-after",
            attach_after,
        ],
    )?;
    let mut server = Guard(
        Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut stdin = server.0.stdin.take().ok_or("stdin")?;
    let mut stdout = BufReader::new(server.0.stdout.take().ok_or("stdout")?).lines();
    let mut expect = |prefix: &str| -> Result {
        for line in stdout.by_ref() {
            if line?.starts_with(prefix) {
                return Ok(());
            }
        }
        Err(format!("the server ended before {prefix:?}").into())
    };
    expect("ready")?;
    thread::sleep(Duration::from_secs(3));
    let pid = agent.0.id();
    let (started, ticks) = (Instant::now(), cpu_ticks(pid)?);
    let mut helpers = 0;
    while started.elapsed() < Duration::from_secs(HELPER_SECONDS) {
        writeln!(stdin, "runs 20")?;
        expect("done runs")?;
        helpers += 20;
    }
    let cpu = cpu_percent(pid, ticks, started)?;
    let memory = Memory::of(pid)?;
    writeln!(stdin, "exit")?;
    let _ = server.0.wait();
    drop(agent);
    let said = said.all();
    let count = |what: &str| said.iter().filter(|l| l.contains(what)).count();
    println!(
        "   --attach-after {attach_after}: {:.0} helpers/s; agent CPU {cpu:.1}% of a core, RSS {:.1} MiB (peak {:.1}); attached to {} process(es), {} more exited while being attached",
        helpers as f64 / started.elapsed().as_secs_f64(),
        memory.rss,
        memory.peak,
        count("pooltrace agent: attached "),
        count("while being attached"),
    );
    Ok(())
}

/// Processes in the fleet.
const FLEET: usize = 50;

/// 50 processes under one agent, against one under another.
pub fn fleet(pooltrace: &Path) -> Result {
    let program = fixtures::dir().join("poolfix-go1.27");
    if !program.is_file() {
        return Err(format!(
            "{} is missing: run `cargo xtask test` first",
            program.display()
        )
        .into());
    }
    let out = workspace().join("target/bench");
    std::fs::create_dir_all(&out)?;
    // The agent matches the copy by its own name, and nothing else on the machine.
    let copy = out.join("poolfix-fleet");
    std::fs::copy(&program, &copy)?;
    let pools = [
        "--exe",
        "poolfix-fleet",
        "--get",
        "main.(*BufPool).Get",
        "--put",
        "main.(*BufPool).Put",
    ];
    println!(
        "
== agent tracing {FLEET} processes (poolfix, one Get and Put a second each)"
    );
    // One process as the agent traced each before they shared one object: maps of their own.
    let one = under_agent(
        pooltrace,
        &copy,
        &[&pools[..], &["--max-targets", "1"]].concat(),
        1,
    )?;
    let many = under_agent(pooltrace, &copy, &pools, FLEET)?;
    println!(
        "   kernel maps: {:.1} MiB for 1 process (--max-targets 1), {:.1} MiB for {FLEET} (--max-targets 64, the default) ({:.2}x)",
        mib(one.kernel_bytes),
        mib(many.kernel_bytes),
        many.kernel_bytes / one.kernel_bytes,
    );
    for (count, run) in [(1, &one), (FLEET, &many)] {
        println!(
            "   agent RSS for {count}: {:.1} MiB ({:.1} MiB heap and other private memory, {:.1} MiB pages of mapped files), peak {:.1} MiB",
            run.memory.rss, run.memory.anon, run.memory.file, run.memory.peak
        );
    }
    println!(
        "   all {FLEET} attached {:.2} s after the last one started (--scan-interval 1s, --attach-after 1s); /metrics in {:.1} ms median, {:.1} ms slowest of 20, {} series",
        many.all_attached.as_secs_f64(),
        many.scrape_median.as_secs_f64() * 1000.0,
        many.scrape_slowest.as_secs_f64() * 1000.0,
        many.series,
    );
    Ok(())
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// What one agent run over `count` processes measured.
struct FleetRun {
    kernel_bytes: f64,
    memory: Memory,
    all_attached: Duration,
    scrape_median: Duration,
    scrape_slowest: Duration,
    series: usize,
}

/// `count` copies of `program` under one agent at its defaults, each given a Get and a Put a
/// second once attached.
fn under_agent(pooltrace: &Path, program: &Path, args: &[&str], count: usize) -> Result<FleetRun> {
    let (agent, mut said) = start_agent(pooltrace, args)?;
    let mut targets = Vec::with_capacity(count);
    for _ in 0..count {
        targets.push(Guard(
            Command::new(program)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()?,
        ));
    }
    let last_started = Instant::now();
    for _ in 0..count {
        said.0
            .starting("pooltrace agent: attached", Duration::from_secs(60))?;
    }
    let all_attached = last_started.elapsed();
    let mut scrapes = Vec::with_capacity(20);
    let mut series = 0;
    for _ in 0..20 {
        for target in &mut targets {
            writeln!(target.0.stdin.as_mut().ok_or("stdin")?, "regain")?;
        }
        thread::sleep(Duration::from_secs(1));
        let asked = Instant::now();
        let (status, body) = http_get(AGENT_ADDR, "/metrics", Duration::from_secs(10))?;
        scrapes.push(asked.elapsed());
        if status != 200 {
            return Err(format!("/metrics answered {status}").into());
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        series = text.lines().filter(|l| !l.starts_with('#')).count();
    }
    let (_, body) = http_get(AGENT_ADDR, "/metrics", Duration::from_secs(10))?;
    let kernel_bytes = pooltrace_harness::metric_sample(
        &String::from_utf8_lossy(&body),
        "pooltrace_kernel_map_bytes",
        &[],
    )
    .ok_or("no pooltrace_kernel_map_bytes")?;
    scrapes.sort();
    let run = FleetRun {
        kernel_bytes,
        memory: Memory::of(agent.0.id())?,
        all_attached,
        scrape_median: scrapes[scrapes.len() / 2],
        scrape_slowest: scrapes[scrapes.len() - 1],
        series,
    };
    drop(targets);
    drop(agent);
    Ok(run)
}

/// `pooltrace agent ARGS` serving on `AGENT_ADDR`, once it serves; and what it says.
fn start_agent(pooltrace: &Path, args: &[&str]) -> Result<(Guard, Said)> {
    let mut agent = Guard(
        Command::new(pooltrace)
            .args(["agent", "--listen", AGENT_ADDR])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let mut lines = Lines::of(agent.0.stderr.take().ok_or("stderr")?);
    lines.starting("pooltrace agent: serving", Duration::from_secs(30))?;
    Ok((agent, Said(lines)))
}

/// The agent's stderr, read as it comes.
struct Said(Lines);

impl Said {
    /// Every line, once the agent has ended.
    fn all(mut self) -> Vec<String> {
        self.0.until_end(Duration::from_secs(10));
        self.0.seen
    }
}

fn cpu_percent(pid: u32, since_ticks: u64, since: Instant) -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let seconds = (cpu_ticks(pid)? - since_ticks) as f64 / hz;
    Ok(100.0 * seconds / since.elapsed().as_secs_f64())
}

/// A process's memory, MiB, from `/proc/PID/status`.
struct Memory {
    rss: f64,
    anon: f64,
    file: f64,
    peak: f64,
}

impl Memory {
    fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Result<f64> {
            let line = (status.lines())
                .find(|l| l.starts_with(name))
                .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
            let kib: f64 = line.split_whitespace().nth(1).ok_or("no value")?.parse()?;
            Ok(kib / 1024.0)
        };
        Ok(Self {
            rss: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
            peak: field("VmHWM:")?,
        })
    }
}
