//! What the benchmark sections share: the Go micro-target and the demo service started and
//! stopped, tracers started and read line by line, and the figures they time summed up.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::Duration,
};

use pooltrace_harness::Lines;

use crate::Result;

/// A Go micro-target and how pooltrace and bpftrace name its pool.
pub(crate) struct Workload {
    pub(crate) mode: &'static str,
    pub(crate) pool_args: &'static [&'static str],
    /// Registers holding the object at Get's RET and at Put's entry, for bpftrace.
    pub(crate) get_key: &'static str,
    pub(crate) put_key: &'static str,
}

pub(crate) const WORKLOADS: [Workload; 3] = [
    Workload {
        mode: "sync",
        pool_args: &["--pool", "sync"],
        get_key: "bx",
        put_key: "cx",
    },
    Workload {
        mode: "bucketed",
        pool_args: &[
            "--get",
            "main.(*BucketedPool[uint8]).Get",
            "--put",
            "main.(*BucketedPool[uint8]).Put",
            "--object",
            "slice-ptr",
        ],
        get_key: "ax",
        put_key: "cx",
    },
    Workload {
        mode: "parallel",
        pool_args: &["--pool", "sync"],
        get_key: "bx",
        put_key: "cx",
    },
];

/// A tracer process, stopped with SIGINT.
pub(crate) struct Tracer {
    pub(crate) child: Child,
    /// Its diagnostics (stderr for pooltrace, stdout for bpftrace).
    pub(crate) lines: Lines,
}

impl Tracer {
    /// Stops it; an error, with what it said, if it did not end cleanly.
    pub(crate) fn stop(mut self) -> Result {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        if status.success() {
            Ok(())
        } else {
            let said = self.lines.drain();
            Err(format!("tracer failed ({status}): {}", said.join(" | ")).into())
        }
    }
}

pub(crate) fn pooltrace_tracer(
    pooltrace: &Path,
    command: &str,
    pid: i32,
    workload: &Workload,
    extra: &[&str],
    ready: &str,
) -> Result<Tracer> {
    let args = [workload.pool_args, extra].concat();
    let mut tracer = start_pooltrace(Command::new(pooltrace), command, pid, &args)?;
    wait_for(&mut tracer.lines, ready)?;
    Ok(tracer)
}

/// Starts `pooltrace COMMAND --pid PID ARGS` (with whatever else `pooltrace` is set up with)
/// and reads its stderr.
pub(crate) fn start_pooltrace(
    mut pooltrace: Command,
    command: &str,
    pid: i32,
    args: &[&str],
) -> Result<Tracer> {
    let mut child = pooltrace
        .args([command, "--pid", &pid.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let lines = Lines::of(child.stderr.take().ok_or("pooltrace stderr")?);
    Ok(Tracer { child, lines })
}

/// The micro-target, speaking its stdin protocol.
pub(crate) struct Target {
    child: Child,
    stdin: ChildStdin,
    lines: Lines,
    pub(crate) pid: i32,
}

impl Target {
    pub(crate) fn start(binary: &Path) -> Result<Self> {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("stdin")?;
        let lines = Lines::of(child.stdout.take().ok_or("stdout")?);
        let pid = child.id() as i32;
        let mut target = Self {
            child,
            stdin,
            lines,
            pid,
        };
        target.expect("ready")?;
        Ok(target)
    }

    pub(crate) fn send(&mut self, command: &str) -> Result {
        writeln!(self.stdin, "{command}")?;
        Ok(self.stdin.flush()?)
    }

    pub(crate) fn expect(&mut self, prefix: &str) -> Result<String> {
        wait_for(&mut self.lines, prefix)
    }

    /// Runs `pairs` Get+Put pairs of `mode` and returns the target's own ns per pair.
    pub(crate) fn run_pairs(&mut self, mode: &str, pairs: u64) -> Result<f64> {
        self.send(&format!("run {mode} {pairs}"))?;
        let line = self.expect("ns_per_pair=")?;
        let ns = (line.split_whitespace().next())
            .and_then(|w| w.strip_prefix("ns_per_pair="))
            .and_then(|v| v.parse().ok());
        Ok(ns.ok_or_else(|| format!("bad target output: {line}"))?)
    }

    pub(crate) fn exit(mut self) -> Result {
        self.send("exit")?;
        self.child.wait()?;
        Ok(())
    }
}

/// How long the bench waits for a line before it gives up.
const PATIENCE: Duration = Duration::from_secs(120);

/// The next line starting with `prefix` (or holding it, for one that starts with a space).
pub(crate) fn wait_for(lines: &mut Lines, prefix: &str) -> Result<String> {
    let matches =
        |line: &str| line.starts_with(prefix) || (prefix.starts_with(' ') && line.contains(prefix));
    Ok(lines.matching(&format!("with {prefix:?}"), matches, PATIENCE)?)
}

pub(crate) fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    (
        sorted.first().copied().unwrap_or(f64::NAN),
        median,
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("bad stat")?
        .1
        .split_whitespace()
        .collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Reads storegw's "listening on ADDR" line, then reads the rest of its output (echoing it
/// with `echo`), so that storegw never dies of SIGPIPE.
pub fn listen_address(server: &mut Child, echo: bool) -> Result<String> {
    let stdout = server.stdout.take().ok_or("storegw stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().ok_or("storegw exited before listening")??;
    if echo {
        println!("{first}");
    }
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .ok_or_else(|| format!("unexpected first line from storegw: {first}"))?
        .to_owned();
    thread::spawn(move || {
        lines
            .map_while(std::result::Result::ok)
            .filter(|_| echo)
            .for_each(|l| println!("{l}"))
    });
    Ok(addr)
}

/// Kills the child when the demo (or the bench's soak) ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One way to run `pooltrace report` on the bench target, for [`compare_reports`].
pub(crate) struct Traced {
    pub(crate) name: &'static str,
    pub(crate) pooltrace: PathBuf,
    pub(crate) workload: &'static Workload,
    pub(crate) args: Vec<&'static str>,
}

/// Pairs timed by the target under each report in [`compare_reports`].
const COMPARED_PAIRS: u64 = 100_000;
const COMPARED_REPEATS: usize = 5;

/// The target's ns per pair under each of `configs`, each run `COMPARED_REPEATS` times on a
/// fresh target in rotating order, printed with its ratio to the first.
pub(crate) fn compare_reports(what: &str, target_bin: &Path, configs: &[Traced]) -> Result {
    println!(
        "\n== {what}: ns per pair ({COMPARED_PAIRS} pairs, {COMPARED_REPEATS} repeats, alternating)"
    );
    let mut samples = vec![Vec::new(); configs.len()];
    for repeat in 0..COMPARED_REPEATS {
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
            let ns = target.run_pairs(config.workload.mode, COMPARED_PAIRS)?;
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
