//! Bad input gets one clear line on stderr and a non-zero exit, never a panic. A key spec
//! that reads the wrong word cannot be refused up front: while tracing goes on, one line says
//! which spec to look at, once.

use std::{os::unix::process::CommandExt, process::Command, thread, time::Duration};

use pooltrace_tests::{fixture, pooltrace_bin, run_pooltrace, Target, Tracer, POOLFIX_BUFS};

/// Asserts the run failed with exit status 1 and exactly `expected` as its only stderr line.
fn assert_fails_with(output: std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().collect::<Vec<_>>(), [expected]);
    assert!(output.stdout.is_empty());
}

#[test]
fn a_pid_that_does_not_exist_is_named() {
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let pid = gone.id();
    gone.wait().expect("reap true");
    let output = run_pooltrace(&["report", "--pid", &pid.to_string(), "--pool", "sync"]);
    assert_fails_with(
        output,
        &format!("pooltrace: error: no process with PID {pid}"),
    );
}

#[test]
fn a_process_that_exited_but_was_not_reaped_is_called_exited() {
    let mut zombie = Command::new("true").spawn().expect("spawn true");
    let pid = zombie.id();
    // Not waited for yet: it stays a zombie, with a PID but no executable.
    while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let output = run_pooltrace(&["report", "--pid", &pid.to_string(), "--pool", "sync"]);
    zombie.wait().expect("reap true");
    assert_fails_with(
        output,
        &format!("pooltrace: error: process {pid} has exited"),
    );
}

#[test]
fn a_missing_symbol_gets_close_names_suggested() {
    let binary = fixture("poolfix-go1.27");
    let target = Target::start(&binary);
    let output = run_pooltrace(&[
        "report",
        "--pid",
        &target.pid.to_string(),
        "--get",
        "main.(*BufPool).Gett",
        "--put",
        "main.(*BufPool).Put",
    ]);
    assert_fails_with(
        output,
        &format!(
            "pooltrace: error: no function main.(*BufPool).Gett in {}; did you mean main.(*BufPool).Get?",
            binary.display()
        ),
    );
}

/// A wrapper that exists only inlined is traced at the pool calls in its copies; one whose
/// copies call no pool pooltrace can read cannot be traced at all, and that is said.
#[test]
fn an_inlined_only_wrapper_with_nothing_to_probe_is_refused_with_why() {
    let target = Target::start(&fixture("inlined-go1.27"));
    let output = run_pooltrace(&[
        "report",
        "--pid",
        &target.pid.to_string(),
        "--get",
        "runtime.getExtraM",
        "--put",
        "runtime.putExtraM",
    ]);
    assert_fails_with(
        output,
        "pooltrace: error: runtime.putExtraM has no machine code to probe (it exists only \
         inlined, and its one copy cannot be probed: no call to a pool pooltrace knows under \
         it)",
    );
}

#[test]
fn a_non_go_binary_is_refused() {
    let mut sleep = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let exe = std::fs::read_link(format!("/proc/{}/exe", sleep.id())).expect("readlink");
    let output = run_pooltrace(&["report", "--pid", &sleep.id().to_string(), "--pool", "sync"]);
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_fails_with(
        output,
        &format!(
            "pooltrace: error: {} is not a Go program (it has no gopclntab, .go.buildinfo or runtime.main)",
            exe.display()
        ),
    );
}

#[test]
fn missing_privileges_name_the_capability() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let output = Command::new(pooltrace_bin())
        .args(["report", "--pid", &target.pid.to_string(), "--pool", "sync"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run pooltrace as nobody");
    assert_fails_with(
        output,
        "pooltrace: error: pooltrace needs CAP_BPF for bpf(BPF_MAP_CREATE) and \
         bpf(BPF_PROG_LOAD), which load its eBPF maps and programs; run it as root, or grant it \
         the capability",
    );
}

#[test]
fn a_malformed_key_spec_is_explained() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let output = run_pooltrace(&[
        "report",
        "--pid",
        &target.pid.to_string(),
        "--get",
        "main.(*BufPool).Get",
        "--put",
        "main.(*BufPool).Put",
        "--get-key",
        "a1",
    ]);
    assert_fails_with(
        output,
        "pooltrace: error: invalid --get-key \"a1\": expected a result word rN (e.g. r0)",
    );
}

#[test]
fn a_kernel_thread_is_named_as_one() {
    // PID 2 is kthreadd on Linux: a PID with no executable, like a zombie, but alive.
    let output = run_pooltrace(&["report", "--pid", "2", "--pool", "sync"]);
    assert_fails_with(
        output,
        "pooltrace: error: PID 2 is the kernel thread kthreadd, not a program; trace a Go process",
    );
}

#[test]
fn zero_map_sizes_are_refused_naming_the_option() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    for option in ["--max-objects", "--max-stacks"] {
        let output = run_pooltrace(&[
            "report",
            "--pid",
            &target.pid.to_string(),
            "--pool",
            "sync",
            option,
            "0",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(
            stderr.lines().next(),
            Some(
                format!("error: invalid value '0' for '{option} <N>': 0 is not in 1..=4294967295")
                    .as_str()
            )
        );
    }
}

/// `run` starts its program and attaches; a dry run is `report`'s alone, so `run` neither
/// offers nor accepts it.
#[test]
fn help_offers_no_option_the_command_refuses() {
    let help = run_pooltrace(&["run", "--help"]);
    assert!(help.status.success());
    assert!(!String::from_utf8_lossy(&help.stdout).contains("--dry-run"));
    let output = run_pooltrace(&["run", "--pool", "sync", "--dry-run", "--", "true"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .starts_with("error: unexpected argument '--dry-run'"));
    let report_help = run_pooltrace(&["report", "--help"]);
    assert!(String::from_utf8_lossy(&report_help.stdout).contains("--dry-run"));
}

/// Traces poolfix's BufPool with `extra` for two rounds of its workload; pooltrace's stderr
/// lines that contain `doubt`.
fn doubts_said(extra: &[&str], doubt: &str) -> Vec<String> {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let mut args = POOLFIX_BUFS.to_vec();
    args.extend(extra);
    args.extend(["--interval", "300ms"]);
    let tracer = Tracer::attach(target.pid, &args);
    for _ in 0..2 {
        target.send("round");
        target.expect_line("counts");
        thread::sleep(Duration::from_millis(700));
    }
    let done = tracer.interrupt();
    target.exit();
    assert!(done.status.success(), "{:#?}", done.stderr);
    done.stderr
        .into_iter()
        .filter(|l| l.contains(doubt))
        .collect()
}

/// A Get read with the wrong `--object` finds nil every time: tracing goes on, and one line,
/// once, says which spec to look at.
#[test]
fn gets_that_read_nil_every_time_name_the_spec_once() {
    let said = doubts_said(&["--object", "iface"], "Gets read their object as nil");
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].starts_with("pooltrace: main.(*BufPool).Get: ")
            && said[0].contains("--object or --get-key probably reads the wrong word"),
        "{}",
        said[0]
    );
}

/// A Put key on the wrong word (the receiver) never matches: one line, once.
#[test]
fn puts_that_never_match_name_the_spec_once() {
    let said = doubts_said(&["--put-key", "a0"], "Puts gave back an object");
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].starts_with("pooltrace: main.(*BufPool).Put: none of ")
            && said[0].contains("--object or --put-key probably reads the wrong word at Put"),
        "{}",
        said[0]
    );
}

/// A spec that reads the right words raises no doubt.
#[test]
fn right_specs_raise_no_doubt() {
    assert_eq!(
        doubts_said(&[], "probably reads the wrong word"),
        Vec::<String>::new()
    );
}
