//! `pooltrace run -- PROGRAM`: the program's own output passes through, its exit status
//! becomes pooltrace's, and since the probes are in place before its first instruction, every
//! call counts, even those made the moment it starts.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use pooltrace_tests::{fixture, pooltrace_bin, Counts, Value};

/// Runs the fixture under `pooltrace run` with its commands already waiting on stdin, so its
/// rounds start at once; returns its printed lines, pooltrace's exit code and the report.
fn run_fixture(build: &str) -> (Vec<String>, Option<i32>, Value) {
    let report =
        std::env::temp_dir().join(format!("pooltrace-run-{}-{build}.json", std::process::id()));
    let mut child = Command::new(pooltrace_bin())
        .args([
            "run",
            "--get",
            "main.(*BufPool).Get",
            "--put",
            "main.(*BufPool).Put",
            "--interval",
            "0",
        ])
        .args(["--format", "json", "--output"])
        .arg(&report)
        .arg("--")
        .arg(fixture(build))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pooltrace run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"round\nround\nexit\n")
        .expect("commands");
    let output = child.wait_with_output().expect("pooltrace run finishes");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|_| {
        panic!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(&report);
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (
        lines,
        output.status.code(),
        serde_json::from_str(&text).expect("JSON report"),
    )
}

#[test]
fn spawn_mode_counts_every_call_from_the_first_instruction() {
    for build in [
        "poolfix-go1.27",
        "poolfix-go1.19",
        "poolfix-go1.27-pie-stripped",
    ] {
        let (lines, status, report) = run_fixture(build);
        // The program's output, untouched, and its exit status.
        assert!(lines[0].starts_with("ready "), "{build}: {lines:?}");
        assert_eq!(lines.last().map(String::as_str), Some("bye"), "{build}");
        assert_eq!(status, Some(3), "{build}");
        let counts = Counts::parse_line(
            lines
                .iter()
                .rev()
                .find(|l| l.starts_with("counts"))
                .expect("counts"),
        );
        let pool = &report["pools"][0];
        assert_eq!(
            pool["gets"].as_u64(),
            Some(counts.get("buf_gets")),
            "{build}: {pool:#}"
        );
        assert_eq!(
            pool["puts"].as_u64(),
            Some(counts.get("buf_puts")),
            "{build}"
        );
        assert_eq!(
            pool["outstanding"].as_u64(),
            Some(counts.get("buf_gets") - counts.get("buf_puts"))
        );
        let callers: Vec<&str> = pool["stacks"]
            .as_array()
            .expect("stacks")
            .iter()
            .filter_map(|s| s["frames"][1]["function"].as_str())
            .collect();
        assert!(
            callers.contains(&"main.leakyHandler"),
            "{build}: {callers:?}"
        );
    }
}

#[test]
fn a_program_that_does_not_exist_is_named() {
    let output = Command::new(pooltrace_bin())
        .args(["run", "--pool", "sync", "--", "no-such-program-here"])
        .stdin(Stdio::null())
        .output()
        .expect("pooltrace run");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "pooltrace: error: no program no-such-program-here (not a file, nor on PATH)"
    );
}
