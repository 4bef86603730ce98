//! `pooltrace run --fail-on` as a CI gate, the way Go projects would use it: through real
//! `go test -exec` on a fixture package (Go 1.27), where a balanced test passes and a test
//! that leaks a buffer on an error path fails with the function that took it named; and a
//! program that fails keeps its own status. Double Puts are caught with both Puts named,
//! counted exactly, and kept apart from the harmless Puts of objects taken before attach.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use pooltrace_tests::{fixture, pooltrace_bin, real_program, source_line};

/// The status `run --fail-on` exits with on a finding (documented in the README).
const FINDINGS: i32 = 70;

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gotest")
}

/// `go test -exec 'pooltrace run ... --fail-on FAIL_ON --' -run ^TEST$` on the fixture
/// package, with the build cache `cargo xtask test` keeps.
fn go_test(test: &str, fail_on: &str) -> (Output, String) {
    go_test_with(test, &format!("--fail-on {fail_on}"))
}

/// The same with any run options (no spaces inside one).
fn go_test_with(test: &str, options: &str) -> (Output, String) {
    let cache =
        PathBuf::from(std::env::var_os("POOLTRACE_GOCACHE").expect(
            "POOLTRACE_GOCACHE is not set: run the integration tests with `cargo xtask test`",
        ));
    let exec = format!(
        "{} run --get pooltest.(*Pool).Get --put pooltest.(*Pool).Put {options} --",
        pooltrace_bin().display()
    );
    let output = Command::new(real_program("POOLTRACE_GO"))
        .args(["test", "-count=1", "-exec", &exec, "-run"])
        .arg(format!("^{test}$"))
        .arg(".")
        .current_dir(package())
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", cache.join("build"))
        .env("GOPATH", cache.join("path"))
        .env("CGO_ENABLED", "0")
        .output()
        .expect("go test");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output, text)
}

fn pool_source() -> String {
    std::fs::read_to_string(package().join("pool.go")).expect("pool.go")
}

#[test]
fn go_test_exec_passes_a_balanced_test() {
    let (output, text) = go_test("TestBalanced", "outstanding,collected");
    assert!(output.status.success(), "{text}");
    assert!(text.starts_with("ok  \tpooltest\t"), "{text}");
}

#[test]
fn go_test_exec_fails_a_test_that_leaks_on_an_error_path_and_names_the_function() {
    let (output, text) = go_test("TestLeakOnError", "outstanding");
    assert!(!output.status.success(), "{text}");
    // The test itself passed; pooltrace failed it.
    assert!(text.lines().any(|l| l == "PASS"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("FAIL\tpooltest\t")),
        "{text}"
    );
    let line = source_line(&pool_source(), "b := p.Get()");
    let finding = format!(
        "pooltrace: --fail-on outstanding: 2 objects of pooltest.(*Pool).Get still out of the \
         pool at exit, taken by pooltest.Encode (pool.go:{line}) (2)"
    );
    assert!(
        text.lines().any(|l| l == finding),
        "no {finding:?} in\n{text}"
    );
}

/// `pooltrace run OPTIONS` on poolfix's BufPool, poolfix fed `commands`; the status and
/// stderr.
fn run_poolfix(options: &[&str], commands: &[u8]) -> (Option<i32>, String) {
    let mut run = Command::new(pooltrace_bin())
        .args([
            "run",
            "--get",
            "main.(*BufPool).Get",
            "--put",
            "main.(*BufPool).Put",
        ])
        .args(options)
        .arg("--")
        .arg(fixture("poolfix-go1.27"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pooltrace run");
    run.stdin
        .take()
        .expect("stdin")
        .write_all(commands)
        .expect("commands");
    let output = run.wait_with_output().expect("run exits");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_finding_exits_70_and_a_program_that_fails_keeps_its_own_status() {
    // Stdin ends after the round: poolfix exits 0, with objects still out.
    // It leaves objects out after a round.
    let fail_on = ["--fail-on", "outstanding", "--format", "json"];
    let (status, stderr) = run_poolfix(&fail_on, b"round\n");
    assert_eq!(status, Some(FINDINGS), "{stderr}");
    let finding = "pooltrace: --fail-on outstanding: ";
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with(finding)).count(),
        1,
        "{stderr}"
    );
    // "exit" makes poolfix exit 3: its status wins, and no finding is judged.
    let (status, stderr) = run_poolfix(&fail_on, b"round\nexit\n");
    assert_eq!(status, Some(3), "{stderr}");
    assert!(!stderr.contains("--fail-on"), "{stderr}");
}

#[test]
fn go_test_exec_fails_a_test_that_puts_a_buffer_back_twice_naming_both_puts() {
    let scratch = std::env::temp_dir().join(format!("pooltrace-gate-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let json = scratch.join("double.json");
    let options = format!(
        "--fail-on double-put --format json --force --output {}",
        json.display()
    );
    let _ = std::fs::write(&json, "");
    let (output, text) = go_test_with("TestDoublePut", &options);
    assert!(!output.status.success(), "{text}");
    let source = pool_source();
    let (first, second) = (
        source_line(&source, "// the first Put"),
        source_line(&source, "// the second Put"),
    );
    let finding = format!(
        "pooltrace: --fail-on double-put: 2 double Puts into the pool of pooltest.(*Pool).Get, \
         by pooltest.Release (pool.go:{second}) after pooltest.Release (pool.go:{first}) (2)"
    );
    assert!(
        text.lines().any(|l| l == finding),
        "no {finding:?} in\n{text}"
    );
    // The fixture's own count is the report's, and none of them is an unmatched Put.
    let own: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("double puts: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the fixture's count in\n{text}"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("JSON");
    let _ = std::fs::remove_dir_all(&scratch);
    let pool = &report["pools"][0];
    assert_eq!(pool["double_puts"].as_u64(), Some(own), "{pool:#}");
    assert_eq!(pool["unmatched_puts"].as_u64(), Some(0), "{pool:#}");
    let paths = pool["double_put_paths"].as_array().expect("paths");
    assert_eq!(paths.len(), 1, "{pool:#}");
    assert_eq!(paths[0]["count"].as_u64(), Some(own));
    let names = |frames: &serde_json::Value| -> Vec<String> {
        frames
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["function"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        names(&paths[0]["frames"])[..3],
        [
            "pooltest.(*Pool).Put",
            "pooltest.Release",
            "pooltest.TestDoublePut"
        ]
    );
    assert_eq!(
        names(&paths[0]["first_put_frames"])[..3],
        [
            "pooltest.(*Pool).Put",
            "pooltest.Release",
            "pooltest.TestDoublePut"
        ]
    );
    assert_eq!(
        paths[0]["first_put_frames"][1]["line"].as_u64(),
        Some(first)
    );
}

#[test]
fn puts_of_objects_taken_before_attach_stay_unmatched_not_double() {
    // busy is already serving, and holds five objects taken before attach: their Puts come
    // after it, with the rest of the load's, and none is a second Put.
    let mut target = pooltrace_tests::Target::start(&fixture("busy-go1.27"));
    target.send("leak 5");
    target.expect_line("leaked 5");
    let tracer = pooltrace_tests::Tracer::attach(
        target.pid,
        &[
            "--get",
            "main.(*Pool).Get",
            "--put",
            "main.(*Pool).Put",
            "--double-puts",
        ],
    );
    target.send("return");
    target.expect_line("returned 5");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let report = tracer.interrupt().json();
    let pool = pooltrace_tests::pool(&report, "main.(*Pool).Get");
    // At least the five; objects the load had in flight at attach add to them.
    assert!(pool["unmatched_puts"].as_u64() >= Some(5), "{pool:#}");
    assert_eq!(pool["double_puts"].as_u64(), Some(0), "{pool:#}");
    assert_eq!(pool["double_put_paths"].as_array().map(Vec::len), Some(0));
}

#[test]
fn double_puts_refuse_sampled_gets_and_are_off_where_unsound() {
    // Sampled Gets would leave objects handed out unseen: refused before anything starts.
    pooltrace_tests::assert_fails_with_line(
        &[
            "run",
            "--pool",
            "sync",
            "--double-puts",
            "--sample-gets",
            "0.5",
            "--",
            "/bin/true",
        ],
        "pooltrace: error: --double-puts needs every Get probed: it cannot go with --sample-gets",
    );
    // A sync pool drops objects whose memory comes back through plain allocations: off,
    // with the reason, while the counting pool beside it keeps it.
    let (_, stderr) = run_poolfix(&["--pool", "sync", "--double-puts"], b"double\n");
    let off: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pooltrace: --double-puts is off for "))
        .collect();
    assert_eq!(
        off,
        [
            "pooltrace: --double-puts is off for sync.(*Pool).Get: a sync pool drops objects, and \
          their memory comes back through allocations no Get sees"
        ],
        "{stderr}"
    );
}
