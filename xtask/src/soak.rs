//! `cargo xtask bench`, section `soak`: `pooltrace agent` at its defaults (tracing windows
//! under `--budget 1`) on the demo service under a saturating load for ten minutes
//! (`POOLTRACE_SOAK_SECONDS` changes it), `/metrics` scraped every second, as a fleet would
//! run it. Prints the agent's resident memory, its CPU and the kernel maps' memory over time,
//! the windows in force and the probes' estimated cost, when the leaking SeriesStream path
//! first scored 50 and the highest score of any other path, and the service's throughput
//! with the agent against runs without it just before and just after.

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pooltrace_harness::{http_get, metric_sample, Lines};

use crate::{
    fixtures,
    launch::{self, cpu_ticks, Guard},
    workspace, Result,
};

/// Requests a second the load generator asks for: more than the service can answer on this
/// machine, so that what it answers is its throughput.
const RATE: &str = "20000";
/// Each run without the agent (or the soak's length, if shorter).
const BASELINE: Duration = Duration::from_secs(60);
/// How often a row of figures is printed.
const ROW_EVERY: Duration = Duration::from_secs(60);

pub fn run(pooltrace: &Path) -> Result {
    let seconds: u64 = match std::env::var("POOLTRACE_SOAK_SECONDS") {
        Ok(text) => text.parse()?,
        Err(_) => 600,
    };
    let out = workspace().join("target/bench");
    let storegw = fixtures::storegw(&out)?;
    println!("\n== agent soak: storegw under load for {seconds} s, /metrics scraped every second");
    let baseline = BASELINE.min(Duration::from_secs(seconds));
    let before = throughput(&storegw, baseline, |_| Ok(()))?;
    println!(
        "   without the agent: {before:.0} requests/s ({} s)",
        baseline.as_secs()
    );
    let mut seen = Scores::default();
    let with = throughput(&storegw, Duration::from_secs(seconds), |server| {
        seen = watch_agent(pooltrace, server, Duration::from_secs(seconds))?;
        Ok(())
    })?;
    let after = throughput(&storegw, baseline, |_| Ok(()))?;
    println!(
        "   without the agent: {after:.0} requests/s ({} s)",
        baseline.as_secs()
    );
    let ratio = with / ((before + after) / 2.0);
    println!("   with the agent: {with:.0} requests/s, {ratio:.3} of the runs without it (target: at least 0.95)");
    match seen.leak_at {
        Some(at) => println!(
            "   the leaking SeriesStream path scored 50 or more after {at} s (target: within 300 s), \
             and in {} of the {} scrapes that showed it since; {:.0} at the end",
            seen.scored_after, seen.scrapes_after, seen.leak_last
        ),
        None => println!("   the leaking SeriesStream path never scored 50 (target: within 300 s)"),
    }
    println!(
        "   the highest score of any other path: {:.0} (target: below 20)",
        seen.other_max
    );
    Ok(())
}

/// What the soak saw of the paths' scores in `/metrics`.
#[derive(Default)]
struct Scores {
    /// Seconds into the soak when the SeriesStream path first scored 50 or more.
    leak_at: Option<u64>,
    /// Scrapes since then, and those in which it still scored 50 or more.
    scrapes_after: u64,
    scored_after: u64,
    /// Its score at the last scrape.
    leak_last: f64,
    /// The highest score of any other path.
    other_max: f64,
}

impl Scores {
    /// Takes in one scrape, `seconds` into the soak.
    fn scrape(&mut self, metrics: &str, seconds: u64) {
        for (frames, score) in path_scores(metrics) {
            if frames.contains("SeriesStream") {
                if score >= 50.0 && self.leak_at.is_none() {
                    self.leak_at = Some(seconds);
                }
                if self.leak_at.is_some() {
                    self.scrapes_after += 1;
                    self.scored_after += u64::from(score >= 50.0);
                }
                self.leak_last = score;
            } else {
                self.other_max = self.other_max.max(score);
            }
        }
    }
}

/// Each path's frames and score, from `pooltrace_path_leak_score` joined with the
/// `pooltrace_path` info series on their other labels.
fn path_scores(metrics: &str) -> Vec<(String, f64)> {
    let mut frames = std::collections::HashMap::new();
    let mut scores = Vec::new();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let labels = labels.trim_end_matches('}');
        let mut key = Vec::new();
        let mut frame_list = None;
        for pair in labels.split("\",") {
            match pair.split_once("=\"") {
                Some(("frames", v)) => frame_list = Some(v.trim_end_matches('"').to_owned()),
                Some(("caller", _)) => {}
                Some(_) => key.push(pair.trim_end_matches('"').to_owned()),
                None => {}
            }
        }
        match name {
            "pooltrace_path_info" => {
                frames.insert(key, frame_list.unwrap_or_default());
            }
            "pooltrace_path_leak_score" => {
                if let Ok(score) = value.parse::<f64>() {
                    scores.push((key, score));
                }
            }
            _ => {}
        }
    }
    scores
        .into_iter()
        .map(|(key, score)| (frames.get(&key).cloned().unwrap_or_default(), score))
        .collect()
}

/// The windows in force, from `/report.json`: "W/G/P" in seconds and the duty.
fn windows_in_force(addr: &str) -> String {
    let Ok((200, body)) = http_get(addr, "/report.json", Duration::from_secs(10)) else {
        return "?".to_owned();
    };
    let reports: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let windows = &reports[0]["windows"];
    match windows["continuous"].as_bool() {
        Some(true) => "continuous".to_owned(),
        Some(false) => format!(
            "{:.3}/{:.1}/{:.1}",
            windows["window_s"].as_f64().unwrap_or(f64::NAN),
            windows["grace_s"].as_f64().unwrap_or(f64::NAN),
            windows["period_s"].as_f64().unwrap_or(f64::NAN),
        ),
        None => "none".to_owned(),
    }
}

/// Serves storegw under load for `length` while `during` runs (given the server's PID);
/// requests answered a second.
fn throughput(storegw: &Path, length: Duration, during: impl FnOnce(u32) -> Result) -> Result<f64> {
    let mut server = Guard(
        Command::new(storegw)
            // No refusals: the leak must not change the work a request does over the run.
            .args(["serve", "-pool-max-mib", "1000000"])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let addr = launch::listen_address(&mut server.0, false)?;
    let mut load = Command::new(storegw)
        .args(["load", "-addr", &addr, "-rate", RATE])
        .arg(format!("-duration={}s", length.as_secs()))
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = Lines::of(load.stdout.take().ok_or("stdout")?);
    during(server.0.id())?;
    let done = lines.starting("load:", length + Duration::from_secs(60))?;
    load.wait()?;
    // "load: N requests, M failed": both are answers.
    let requests: f64 = done
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or("no request count")?;
    Ok(requests / length.as_secs_f64())
}

/// Runs the agent on `server` for `length`, scraping it every second, and prints a row of
/// figures every `ROW_EVERY`: the agent's RSS and CPU (user + system) since the last row,
/// the kernel maps' memory, the windows' W/G/P and duty, the probes' estimated cost (percent
/// of a core, against the budget of 1%), the slowest scrape since the last row, the objects
/// outstanding, and the paths' scores.
fn watch_agent(pooltrace: &Path, server: u32, length: Duration) -> Result<Scores> {
    let addr = "127.0.0.1:19464";
    let mut agent = Guard(
        Command::new(pooltrace)
            .args(["agent", "--listen", addr, "--pid", &server.to_string()])
            .args(["--get", "storegw/pool.(*BucketedPool[uint8]).Get"])
            .args(["--put", "storegw/pool.(*BucketedPool[uint8]).Put"])
            .args(["--object", "slice-ptr"])
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let mut said = Lines::of(agent.0.stderr.take().ok_or("stderr")?);
    said.starting("pooltrace agent: attached", Duration::from_secs(60))?;
    println!(
        "   {:>6}  {:>10}  {:>9}  {:>11}  {:>14}  {:>6}  {:>10}  {:>9}  {:>11}",
        "t (s)",
        "agent RSS",
        "agent CPU",
        "kernel maps",
        "W/G/P (s)",
        "duty",
        "est. cost",
        "scrape ms",
        "outstanding"
    );
    let mut scores = Scores::default();
    let started = Instant::now();
    let (mut last_ticks, mut last_row) = (cpu_ticks(agent.0.id())?, started);
    let mut slowest_scrape = Duration::ZERO;
    while started.elapsed() < length {
        let asked = Instant::now();
        let (status, body) = http_get(addr, "/metrics", Duration::from_secs(10))?;
        slowest_scrape = slowest_scrape.max(asked.elapsed());
        if status != 200 {
            return Err(format!("/metrics answered {status}").into());
        }
        scores.scrape(&String::from_utf8_lossy(&body), started.elapsed().as_secs());
        if last_row.elapsed() >= ROW_EVERY || started.elapsed() + Duration::from_secs(1) >= length {
            let metrics = String::from_utf8_lossy(&body);
            let value = |name| metric_sample(&metrics, name, &[]).unwrap_or(f64::NAN);
            let ticks = cpu_ticks(agent.0.id())?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            let cpu = 100.0 * (ticks - last_ticks) as f64 / hz / last_row.elapsed().as_secs_f64();
            println!(
                "   {:>6}  {:>7.1} MiB  {:>8.2}%  {:>7.1} MiB  {:>14}  {:>6.3}  {:>9.2}%  {:>9.1}  {:>11}",
                started.elapsed().as_secs(),
                resident_kib(agent.0.id())? as f64 / 1024.0,
                cpu,
                value("pooltrace_kernel_map_bytes") / 1048576.0,
                windows_in_force(addr),
                value("pooltrace_window_duty"),
                value("pooltrace_probe_cost_cores") * 100.0,
                slowest_scrape.as_secs_f64() * 1000.0,
                value("pooltrace_outstanding_objects"),
            );
            (last_ticks, last_row, slowest_scrape) = (ticks, Instant::now(), Duration::ZERO);
        }
        thread::sleep(Duration::from_secs(1).saturating_sub(asked.elapsed()));
    }
    // SIGTERM: the agent detaches as a fleet's would on a rollout.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    agent.0.wait()?;
    Ok(scores)
}

fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("no VmRSS value")?
        .parse()?)
}
