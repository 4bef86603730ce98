//! The whole life of the traced process: an exec stops tracing at once, with a report of what
//! the old program did; an exit is reported with its status or signal; SIGINT, SIGTERM and
//! SIGHUP detach cleanly, and `run` passes them on to its program and exits as it does.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use pooltrace_tests::{fixture, pool, u64_of, Run, Target, Tracer, Value, POOLFIX_BUFS};

/// Where a `run` writes its JSON report, unique to this test process and `name`.
fn report_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pooltrace-life-{}-{name}.json", std::process::id()))
}

fn read_report(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).expect("JSON report")
}

/// Whether `pid` is still running: not gone, not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, s)| s.starts_with(" Z"))
    })
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a PID the test started (directly or through pooltrace run).
    unsafe { libc::kill(pid, signal) };
}

#[test]
fn exec_stops_tracing_within_an_interval_with_what_the_old_program_did() {
    let sleep = std::fs::canonicalize("/bin/sleep").expect("/bin/sleep");
    // With --interval 0 only the exec watch's own timer can see it.
    for (build, interval) in [("poolfix-go1.27", "1s"), ("poolfix-go1.19", "0")] {
        let mut target = Target::start(&fixture(build));
        let mut args = POOLFIX_BUFS.to_vec();
        args.extend(["--interval", interval]);
        let mut tracer = Tracer::attach(target.pid, &args);
        target.send("exec");
        let counts = pooltrace_tests::Counts::parse_line(&target.expect_line("counts"));
        let execed = Instant::now();
        let said = tracer.expect_stderr(&format!("pooltrace: PID {} called", target.pid));
        let seen_after = execed.elapsed();
        assert_eq!(
            said,
            format!(
                "pooltrace: PID {} called exec: tracing stopped (now running {})",
                target.pid,
                sleep.display()
            )
        );
        assert!(
            seen_after < Duration::from_secs(1),
            "{build}: {seen_after:?}"
        );
        let report = tracer.finish().json();
        let bufs = pool(&report, POOLFIX_BUFS[1]);
        assert_eq!(
            (u64_of(&bufs["gets"]), u64_of(&bufs["puts"])),
            (counts.get("buf_gets"), counts.get("buf_puts")),
            "{build}"
        );
        assert_eq!(u64_of(&bufs["outstanding"]), 5, "{build}");
        // Taken at exec: the five objects still out are young, and nothing looks leaked.
        for stack in bufs["stacks"].as_array().expect("stacks") {
            let score = stack["leak_score"].as_f64().expect("leak_score");
            assert!(score < 20.0, "{build}: {stack:#}");
            assert!(u64_of(&stack["oldest_age_ms"]) < 1000, "{build}: {stack:#}");
        }
        assert!(target.is_running(), "{build}: sleep runs on untraced");
    }
}

#[test]
fn report_says_how_a_process_it_did_not_start_ended() {
    let mut exits = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::attach(exits.pid, &POOLFIX_BUFS);
    exits.send("exit");
    exits.expect_line("bye");
    // Not reaped until pooltrace is done: its status is still there to read.
    let finished = tracer.finish();
    finished.assert_said(&format!(
        "pooltrace: PID {} exited with status 3",
        exits.pid
    ));

    let killed = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::attach(killed.pid, &POOLFIX_BUFS);
    kill(killed.pid, libc::SIGKILL);
    let finished = tracer.finish();
    finished.assert_said(&format!(
        "pooltrace: PID {} was killed by SIGKILL",
        killed.pid
    ));
    finished.json();
}

#[test]
fn sighup_and_sigterm_detach_and_report_like_ctrl_c() {
    for (signal, said) in [
        (libc::SIGHUP, "pooltrace: got SIGHUP, detaching"),
        (libc::SIGTERM, "pooltrace: got SIGTERM, detaching"),
    ] {
        let mut target = Target::start(&fixture("poolfix-go1.27"));
        let tracer = Tracer::attach(target.pid, &POOLFIX_BUFS);
        let counts = target.round();
        let finished = tracer.signal(signal);
        finished.assert_said(said);
        let report = finished.json();
        assert_eq!(
            u64_of(&pool(&report, POOLFIX_BUFS[1])["gets"]),
            counts.get("buf_gets")
        );
        assert!(target.is_running());
    }
}

/// `nohup` means it: a hangup pooltrace was started ignoring goes on being ignored.
#[test]
fn a_hangup_ignored_under_nohup_does_not_stop_tracing() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::attach_via(&["nohup"], target.pid, &POOLFIX_BUFS);
    // SAFETY: kill(2) on the pooltrace the test started (nohup execs it, same PID).
    unsafe { libc::kill(tracer.pid(), libc::SIGHUP) };
    let counts = target.round();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        running(tracer.pid()),
        "pooltrace stopped on an ignored SIGHUP"
    );
    let finished = tracer.interrupt();
    assert!(
        !finished.stderr.iter().any(|l| l.contains("SIGHUP")),
        "{:?}",
        finished.stderr
    );
    let report = finished.json();
    assert_eq!(
        u64_of(&pool(&report, POOLFIX_BUFS[1])["gets"]),
        counts.get("buf_gets")
    );
}

#[test]
fn run_passes_each_signal_to_its_program_and_exits_with_its_status() {
    for (signal, name, got) in [
        (libc::SIGINT, "SIGINT", "got interrupt"),
        (libc::SIGTERM, "SIGTERM", "got terminated"),
        (libc::SIGHUP, "SIGHUP", "got hangup"),
    ] {
        let report = report_path(name);
        let mut args = POOLFIX_BUFS.to_vec();
        args.extend(["--interval", "0", "--format", "json", "--output"]);
        args.push(report.to_str().expect("UTF-8 temp path"));
        let mut run = Run::start(&args, &fixture("poolfix-go1.27"));
        run.send("round");
        run.send("trap");
        run.expect_program("trapping");
        run.signal(signal);
        assert_eq!(run.expect_program("got "), got);
        let pid = run.pid;
        let (status, stderr) = run.finish();
        assert_eq!(status.code(), Some(7), "{name}: {stderr:?}");
        let passed = format!(
            "pooltrace: passed {name} to PID {pid}; waiting for it to exit (Ctrl-C again stops waiting)"
        );
        let exited = format!("pooltrace: PID {pid} exited with status 7");
        let at = |line: &str| stderr.iter().position(|l| l == line);
        assert!(
            at(&passed) < at(&exited) && at(&passed).is_some(),
            "{name}: {stderr:?}"
        );
        let report = read_report(&report);
        assert!(
            u64_of(&pool(&report, POOLFIX_BUFS[1])["gets"]) > 0,
            "{name}"
        );
    }
}

#[test]
fn a_second_ctrl_c_ends_the_wait_for_a_program_that_stays() {
    let report = report_path("stubborn");
    let mut args = POOLFIX_BUFS.to_vec();
    args.extend(["--interval", "0", "--format", "json", "--output"]);
    args.push(report.to_str().expect("UTF-8 temp path"));
    let mut run = Run::start(&args, &fixture("poolfix-go1.27"));
    run.send("stubborn");
    run.expect_program("stubborn");
    run.signal(libc::SIGINT);
    run.expect_program("got interrupt; staying");
    run.expect_stderr("pooltrace: passed SIGINT");
    run.signal(libc::SIGINT);
    let status = run.wait();
    let pid = run.pid;
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
    assert!(running(pid), "pooltrace left its program running");
    kill(pid, libc::SIGKILL);
    let (_, stderr) = run.finish();
    let gave_up = format!("pooltrace: interrupted again: detaching without waiting for PID {pid}");
    let still = format!("pooltrace: PID {pid} is still running");
    assert!(
        stderr.contains(&gave_up) && stderr.contains(&still),
        "{stderr:?}"
    );
    assert!(read_report(&report)["pools"].is_array());
}

#[test]
fn run_says_which_signal_killed_its_program() {
    let mut run = Run::start(&POOLFIX_BUFS, &fixture("poolfix-go1.27"));
    run.send("round");
    run.expect_program("counts");
    let pid = run.pid;
    kill(pid, libc::SIGKILL);
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    assert!(
        stderr.contains(&format!("pooltrace: PID {pid} was killed by SIGKILL")),
        "{stderr:?}"
    );
}

#[test]
fn stream_says_why_it_stopped() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let mut args = POOLFIX_BUFS.to_vec();
    args.extend(["--duration", "1s"]);
    let finished = Tracer::stream(target.pid, &args).finish();
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l == "pooltrace: --duration reached, detaching"),
        "{:?}",
        finished.stderr
    );

    let finished = Tracer::stream(target.pid, &POOLFIX_BUFS).signal(libc::SIGHUP);
    assert!(finished.status.success());
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l == "pooltrace: got SIGHUP, detaching"),
        "{:?}",
        finished.stderr
    );

    let tracer = Tracer::stream(target.pid, &POOLFIX_BUFS);
    target.send("exec");
    target.expect_line("counts");
    let finished = tracer.finish();
    let sleep = std::fs::canonicalize("/bin/sleep").expect("/bin/sleep");
    let said = format!(
        "pooltrace: PID {} called exec: tracing stopped (now running {})",
        target.pid,
        sleep.display()
    );
    finished.assert_said(&said);
    // Every Get and Put before the exec was streamed: 10 balanced pairs and 5 held Gets.
    let lines: Vec<&str> = finished.stdout.lines().collect();
    let gets = lines.iter().filter(|l| l.contains(" get ")).count();
    let puts = lines.iter().filter(|l| l.contains(" put ")).count();
    assert_eq!((gets, puts), (15, 10), "{lines:?}");

    let mut exits = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::stream(exits.pid, &POOLFIX_BUFS);
    exits.send("exit");
    exits.expect_line("bye");
    let finished = tracer.finish();
    let said = format!("pooltrace: PID {} exited with status 3", exits.pid);
    finished.assert_said(&said);
}
