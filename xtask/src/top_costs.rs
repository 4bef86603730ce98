//! What `pooltrace top` costs (`POOLTRACE_BENCH_ONLY=top`): the target's throughput under
//! `top` and under `report` at the same 1 s interval, alternated in one run, and `top`'s own
//! CPU at 1 s redraws with 1,024 call paths on screen. `top` draws on a terminal, so it runs
//! in a tmux window of the bench's own.

use std::{
    ffi::OsStr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use pooltrace_harness::Tmux;

use crate::{
    launch::{cpu_ticks, pooltrace_tracer, stats, Target, WORKLOADS},
    tools, Result,
};

const REPEATS: usize = 5;
const PAIRS: u64 = 1_000_000;
/// `paths 10` in the target: one object held through each of 2^10 call paths.
const PATH_BITS: u32 = 10;
const CPU_SECONDS: u64 = 30;

pub fn run(pooltrace: &Path, target_bin: &Path) -> Result {
    let tmux = tools::tmux()?;
    throughput(pooltrace, target_bin, &tmux)?;
    own_cpu(pooltrace, target_bin, &tmux)
}

/// ns per sync.Pool pair with `report --interval 1s` and with `top --interval 1s` attached.
fn throughput(pooltrace: &Path, target_bin: &Path, tmux: &Path) -> Result {
    println!(
        "\n== sync pool loop under report and under top, both --interval 1s: ns per pair \
         ({PAIRS} pairs, {REPEATS} repeats, alternating)"
    );
    let workload = &WORKLOADS[0];
    let mut samples = [Vec::new(), Vec::new()];
    for repeat in 0..REPEATS * 2 {
        let with_top = (repeat % 2 == 1) ^ (repeat / 2 % 2 == 1);
        let mut target = Target::start(target_bin)?;
        let ns = if with_top {
            let window = Window::top(tmux, pooltrace, target.pid, workload.pool_args)?;
            let ns = timed_pairs(&mut target)?;
            window.quit()?;
            ns
        } else {
            let report = pooltrace_tracer(
                pooltrace,
                "report",
                target.pid,
                workload,
                &["--interval", "1s"],
                "pooltrace: attached",
            )?;
            let ns = timed_pairs(&mut target)?;
            report.stop()?;
            ns
        };
        target.exit()?;
        samples[usize::from(with_top)].push(ns);
    }
    let (report, top) = (stats(&samples[0]), stats(&samples[1]));
    for (name, (min, median, max)) in [("report", report), ("top", top)] {
        println!("   {name:<7} min {min:>8.1}  median {median:>8.1}  max {max:>8.1}");
    }
    println!("   ratio top/report (medians): {:.3}", top.1 / report.1);
    Ok(())
}

fn timed_pairs(target: &mut Target) -> Result<f64> {
    target.run_pairs("sync", PAIRS)
}

/// top's CPU, user and system, over `CPU_SECONDS` with 1,024 paths in its table.
fn own_cpu(pooltrace: &Path, target_bin: &Path, tmux: &Path) -> Result {
    let paths = 1u64 << PATH_BITS;
    println!("\n== pooltrace top's own CPU at --interval 1s with {paths} call paths, over {CPU_SECONDS} s");
    let mut target = Target::start(target_bin)?;
    let pool = [
        "--get",
        "main.(*objPool).Get",
        "--put",
        "main.(*objPool).Put",
    ];
    let window = Window::top(tmux, pooltrace, target.pid, &pool)?;
    target.send(&format!("paths {PATH_BITS}"))?;
    target.expect("paths=")?;
    // The view keeps 1,000 paths of a pool, the likeliest leaks first.
    window.wait_for(&format!("call paths: 1000 (and {} more", paths - 1000))?;
    let before = cpu_ticks(window.pid)?;
    let started = Instant::now();
    thread::sleep(Duration::from_secs(CPU_SECONDS));
    let ticks = cpu_ticks(window.pid)? - before;
    let seconds = started.elapsed().as_secs_f64();
    window.quit()?;
    target.exit()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "   top used {:.2}% of one core ({ticks} ticks in {seconds:.1} s)",
        100.0 * ticks as f64 / hz / seconds
    );
    Ok(())
}

/// `pooltrace top` alone in a tmux window of a server of the bench's own.
struct Window {
    tmux: Tmux,
    /// pooltrace's: tmux runs a command given as several arguments without a shell.
    pid: u32,
}

impl Window {
    /// Starts top on `pid` and waits until its screen shows the target (it is attached).
    fn top(tmux: &Path, pooltrace: &Path, pid: i32, pool: &[&str]) -> Result<Self> {
        let socket = format!("pooltrace-bench-{}", std::process::id());
        let pid_arg = pid.to_string();
        let mut command = vec![pooltrace.as_os_str()];
        let args = ["top", "--interval", "1s", "--pid", &pid_arg];
        command.extend(args.iter().chain(pool).map(OsStr::new));
        let tmux = Tmux::start(tmux, socket, (160, 50), Path::new("/"), &command)?;
        let window = Self {
            pid: tmux.pane_pid()?,
            tmux,
        };
        window.wait_for(&format!("PID {pid} "))?;
        Ok(window)
    }

    /// Waits until the screen holds `text`.
    fn wait_for(&self, text: &str) -> Result {
        let shows = |screen: &[String]| screen.iter().any(|l| l.contains(text));
        self.tmux.until(Duration::from_secs(60), shows)?;
        Ok(())
    }

    /// Presses q and waits for top to detach and exit.
    fn quit(self) -> Result {
        self.tmux.run(&["send-keys", "-t", "top", "q"])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{}", self.pid)).exists() {
            if Instant::now() > deadline {
                return Err("top did not exit on q".into());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}
