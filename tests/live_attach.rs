//! Attaching to a process that is already busy: the way users attach. The `busy` fixture
//! takes and returns objects from a counting pool and `sync.Pool` on 32 goroutines from its
//! start (some at the bottom of deep stacks that grow while they hold an object), and Puts
//! everything it Gets. pooltrace is attached while that load runs and detached while it still
//! runs, again and again: no attach may invent a leak, and a real leak made under the same
//! load must still be found with its exact count.

use std::{thread, time::Duration};

use pooltrace_tests::{fixture, functions, u64_of, Target, Tracer, Value, SUSPECT_SCORE};

const GET: &str = "main.(*Pool).Get";
const PUT: &str = "main.(*Pool).Put";
/// Both pools of the target: the counting one and `sync.Pool`.
const POOLS: [&str; 7] = ["--get", GET, "--put", PUT, "--pool", "sync", "--top=1000"];

/// The target's own longest hold so far (finished or still going), in nanoseconds.
fn longest_hold_ns(target: &mut Target) -> u64 {
    target.send("stats");
    let line = target.expect_line("stats");
    pooltrace_tests::Counts::parse_line(&line).get("max_hold_ns")
}

/// What one attach saw that a healthy program must never show.
fn false_leak_evidence(report: &Value, longest_hold_ms: u64) -> Vec<String> {
    let mut evidence = Vec::new();
    for pool in report["pools"].as_array().expect("pools") {
        let name = pool["get"].as_str().unwrap_or("?");
        assert!(u64_of(&pool["gets"]) > 0, "{name} saw no Get: {pool:#}");
        if u64_of(&pool["collected"]) != 0 {
            evidence.push(format!("{name}: {} collected", pool["collected"]));
        }
        for stack in pool["stacks"].as_array().expect("stacks") {
            let score = stack["leak_score"].as_f64().expect("leak_score");
            if score >= SUSPECT_SCORE {
                evidence.push(format!("{name}: score {score} on {:?}", functions(stack)));
            }
            // The target times each hold from before Get to after Put: a superset of the
            // time between the probes.
            let oldest = u64_of(&stack["oldest_age_ms"]);
            if oldest > longest_hold_ms {
                evidence.push(format!(
                    "{name}: an object {oldest} ms old, but the target never held one over \
                     {longest_hold_ms} ms"
                ));
            }
        }
    }
    evidence
}

fn attach_and_detach_under_load(build: &str, attaches: usize) {
    let mut target = Target::start(&fixture(build));
    let mut failures = Vec::new();
    for attach in 0..attaches {
        let tracer = Tracer::attach(target.pid, &POOLS);
        thread::sleep(Duration::from_millis(150 + 50 * (attach as u64 % 4)));
        let report = tracer.interrupt().json();
        let longest_hold_ms = longest_hold_ns(&mut target).div_ceil(1_000_000);
        for evidence in false_leak_evidence(&report, longest_hold_ms) {
            failures.push(format!("attach {attach}: {evidence}"));
        }
    }
    assert!(target.is_running(), "the target died under the attaches");
    target.exit();
    assert!(
        failures.is_empty(),
        "a healthy busy target showed leaks:\n{}",
        failures.join("\n")
    );
}

#[test]
fn thirty_attaches_to_a_busy_healthy_target_find_no_leak() {
    attach_and_detach_under_load("busy-go1.27", 30);
}

/// Go 1.19's prologue (`sub rsp`, no `push rbp`): another layout, another window.
#[test]
fn attaches_to_a_busy_go119_target_find_no_leak() {
    attach_and_detach_under_load("busy-go1.19", 10);
}

#[test]
fn a_leak_made_under_load_is_found_with_its_exact_count() {
    let mut target = Target::start(&fixture("busy-go1.27"));
    // Several attaches: reading OUTSTANDING while Puts delete from it restarts the kernel's key
    // walk, and an object counted twice shows up only now and then.
    for attach in 0..6 {
        let tracer = Tracer::attach(target.pid, &POOLS);
        let leaks = 17 + attach;
        target.send(&format!("leak {leaks}"));
        target.expect_line(&format!("leaked {leaks}"));
        // Old enough for the score's age evidence (1 s floor).
        thread::sleep(Duration::from_millis(1300));
        let report = tracer.interrupt().json();
        let pool = pooltrace_tests::pool(&report, GET);
        assert_eq!(u64_of(&pool["collected"]), 0, "{pool:#}");
        let stacks = pool["stacks"].as_array().expect("stacks");
        let leaking: Vec<&Value> = stacks
            .iter()
            .filter(|s| functions(s).iter().any(|f| f == "main.leakOnErrorPath"))
            .collect();
        assert_eq!(leaking.len(), 1, "one leaking path: {pool:#}");
        let leak = leaking[0];
        assert_eq!(u64_of(&leak["outstanding"]), leaks, "{leak:#}");
        assert_eq!(&functions(leak)[..2], [GET, "main.leakOnErrorPath"]);
        let score = leak["leak_score"].as_f64().expect("score");
        assert!(
            score >= SUSPECT_SCORE,
            "the leak scores only {score}: {leak:#}"
        );
        for other in stacks.iter().filter(|s| !std::ptr::eq(*s, leak)) {
            let score = other["leak_score"].as_f64().expect("score");
            assert!(
                score < SUSPECT_SCORE,
                "healthy path scores {score}: {other:#}"
            );
        }
    }
    target.exit();
}
