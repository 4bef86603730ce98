//! What a budget promises, measured: the agent under `--budget` costs the traced process
//! and itself no more than 1.5 times the budget, at call rates 10 and 100 times apart. The
//! target makes pool pairs at a fixed rate, so the probes' cost shows as its CPU time (a
//! uprobe's trap and the eBPF program run on the traced thread) rather than as lost
//! throughput; the runs without pooltrace before and after are the baseline.

use std::{
    fs,
    net::TcpListener,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use pooltrace_harness::Lines;
use pooltrace_tests::{fixture, pooltrace_bin, Target};

/// The budget, percent of one core: large enough to measure on a shared machine.
const BUDGET_PCT: f64 = 10.0;
/// Each measurement: several cycles of windows at the highest rate.
const MEASURE: Duration = Duration::from_secs(16);

/// CPU seconds `pid` has used, user and system (a probe's trap is system time).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a name")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU cores `pid` used over `MEASURE`.
fn cores_over_measure(pid: u32) -> f64 {
    let before = cpu_seconds(pid);
    thread::sleep(MEASURE);
    (cpu_seconds(pid) - before) / MEASURE.as_secs_f64()
}

/// `pooltrace agent` on `pid` at the budget, attached; stopped with SIGTERM when dropped.
struct Agent {
    child: Child,
    _stderr: Lines,
}

impl Agent {
    fn start(pid: i32) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(pooltrace_bin())
            .args(["agent", "--pid", &pid.to_string(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--get", "main.(*Pool).Get", "--put", "main.(*Pool).Put"])
            .args(["--budget", &BUDGET_PCT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let mut stderr = Lines::of(child.stderr.take().expect("piped stderr"));
        stderr
            .starting("pooltrace agent: attached", Duration::from_secs(30))
            .expect("the agent attached");
        Self {
            child,
            _stderr: stderr,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The cores the agent's probes cost the target at `rate` pairs a second, plus its own.
fn cost_at(rate: u32) -> f64 {
    let mut command = Command::new(fixture("paced-go1.27"));
    command.arg(rate.to_string());
    let target = Target::start_command(command);
    let pid = target.pid as u32;
    thread::sleep(Duration::from_secs(1));
    let before = cores_over_measure(pid);
    let agent = Agent::start(target.pid);
    let agent_before = cpu_seconds(agent.child.id());
    let traced = cores_over_measure(pid);
    let agent_cores = (cpu_seconds(agent.child.id()) - agent_before) / MEASURE.as_secs_f64();
    drop(agent);
    let after = cores_over_measure(pid);
    target.exit();
    let probes = traced - (before + after) / 2.0;
    eprintln!(
        "{rate} pairs/s: target {before:.3} cores before, {traced:.3} traced, {after:.3} after; \
         agent {agent_cores:.3}; cost {:.3} cores (budget {:.3})",
        probes + agent_cores,
        BUDGET_PCT / 100.0
    );
    probes + agent_cores
}

#[test]
fn the_budget_holds_at_rates_ten_and_a_hundred_times_apart() {
    let limit = 1.5 * BUDGET_PCT / 100.0;
    let costs: Vec<(u32, f64)> = [2_000, 20_000, 200_000]
        .into_iter()
        .map(|rate| (rate, cost_at(rate)))
        .collect();
    for (rate, cost) in &costs {
        assert!(
            *cost <= limit,
            "at {rate} pairs/s the probes and the agent cost {cost:.3} cores, over 1.5 x the \
             budget ({limit:.3}): {costs:?}"
        );
    }
}
