//! A leaking call path is reported with Get's immediate caller and its file:line; a path
//! whose objects all come back is not reported.

use std::{
    thread,
    time::{Duration, Instant},
};

use pooltrace_tests::{
    fixture, functions, pool, source_line, u64_of, Target, Tracer, Value, POOLFIX_BUFS,
};

/// Line of the fixture source holding `needle` (1-based).
fn fixture_line(needle: &str) -> u64 {
    source_line(include_str!("fixtures/poolfix/main.go"), needle)
}

fn trace_two_rounds(args: &[&str]) -> (pooltrace_tests::Counts, Value) {
    trace_build_two_rounds("poolfix-go1.27", args)
}

fn trace_build_two_rounds(build: &str, args: &[&str]) -> (pooltrace_tests::Counts, Value) {
    let mut target = Target::start(&fixture(build));
    let tracer = Tracer::attach(target.pid, args);
    target.round();
    let counts = target.round();
    let finished = tracer.interrupt();
    target.exit();
    (counts, finished.json())
}

fn frame_at(stack: &Value, i: usize) -> &Value {
    &stack["frames"][i]
}

#[test]
fn leaking_path_is_reported_with_the_immediate_caller_of_get() {
    let (counts, report) = trace_two_rounds(&[
        "--get",
        "main.(*BufPool).Get",
        "--put",
        "main.(*BufPool).Put",
    ]);
    let pool = pool(&report, "main.(*BufPool).Get");
    let stacks = pool["stacks"].as_array().expect("stacks");
    // balancedHandler's objects all came back: only the leaking paths are left, 7 objects a
    // round from leakyHandler (first) and 1 from inlinedLeak.
    assert_eq!(stacks.len(), 2, "{pool:#}");
    let leak = &stacks[0];
    assert_eq!(u64_of(&leak["outstanding"]), 14);
    assert_eq!(
        u64_of(&leak["outstanding"]) + u64_of(&stacks[1]["outstanding"]),
        counts.get("buf_gets") - counts.get("buf_puts")
    );
    let names = functions(leak);
    assert_eq!(
        &names[..3],
        ["main.(*BufPool).Get", "main.leakyHandler", "main.round"],
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "main.balancedHandler"));
    let caller = frame_at(leak, 1);
    assert!(
        caller["file"]
            .as_str()
            .unwrap_or("")
            .ends_with("fixtures/poolfix/main.go"),
        "{caller}"
    );
    assert_eq!(
        u64_of(&caller["line"]),
        fixture_line("leakedBufs = append(leakedBufs, bufs.Get(1024))")
    );
    assert_eq!(
        u64_of(&frame_at(leak, 0)["line"]),
        fixture_line("func (p *BufPool) Get(size int) *Buf")
    );
    assert!(u64_of(&leak["oldest_age_ms"]) > 0);
}

#[test]
fn sync_pool_preset_finds_leaked_objects_and_follows_boxed_slices() {
    let (counts, report) = trace_two_rounds(&["--pool", "sync"]);
    let pool = pool(&report, "sync.(*Pool).Get");
    assert!(u64_of(&pool["gets"]) >= counts.get("sync_gets") + counts.get("byte_gets"));
    let stacks = pool["stacks"].as_array().expect("stacks");
    let by_caller = |caller: &str| {
        stacks
            .iter()
            .filter(|s| functions(s).get(1).map(String::as_str) == Some(caller))
            .map(|s| u64_of(&s["outstanding"]))
            .sum::<u64>()
    };
    // Two scratch objects and one []byte leak per round.
    assert_eq!(by_caller("main.syncLeaky"), 4);
    assert_eq!(by_caller("main.bytesLeaky"), 2);
    // Round trips of boxed slices match through the slice's data pointer, not the fresh
    // interface box, so none of them looks outstanding.
    assert_eq!(by_caller("main.bytesRoundTrip"), 0);
    assert_eq!(by_caller("main.syncRoundTrip"), 0);
}

#[test]
fn min_age_hides_objects_younger_than_it_but_keeps_them_in_totals() {
    let (counts, report) = trace_two_rounds(&[
        "--get",
        "main.(*BufPool).Get",
        "--put",
        "main.(*BufPool).Put",
        "--min-age",
        "1h",
    ]);
    let pool = pool(&report, "main.(*BufPool).Get");
    assert_eq!(
        u64_of(&pool["outstanding"]),
        counts.get("buf_gets") - counts.get("buf_puts")
    );
    assert_eq!(pool["stacks"].as_array().map(Vec::len), Some(0), "{pool:#}");
    assert_eq!(u64_of(&report["min_age_ms"]), 3_600_000);
}

#[test]
fn objects_dropped_without_put_are_counted_as_collected_under_their_path() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::attach(
        target.pid,
        &[
            "--get",
            "main.(*BufPool).Get",
            "--put",
            "main.(*BufPool).Put",
        ],
    );
    target.send("churn");
    let counts = pooltrace_tests::Counts::parse_line(&target.expect_line("counts"));
    let report = tracer.interrupt().json();
    target.exit();
    let pool = pool(&report, "main.(*BufPool).Get");
    assert_eq!(u64_of(&pool["gets"]), counts.get("buf_gets"));
    assert_eq!(u64_of(&pool["puts"]), counts.get("buf_puts"));
    // Every object taken is given back, still out, or was collected: none is lost.
    assert_eq!(
        u64_of(&pool["outstanding"]) + u64_of(&pool["collected"]),
        counts.get("buf_gets") - counts.get("buf_puts")
    );
    // Exactly the dropped Bufs whose address a later Get handed out again.
    assert!(
        counts.get("reused") > 0,
        "the fixture never saw an address recycled"
    );
    assert_eq!(u64_of(&pool["collected"]), counts.get("reused"), "{pool:#}");
    for stack in pool["stacks"].as_array().expect("stacks") {
        let caller = &functions(stack)[1];
        assert_eq!(
            caller, "main.dropHandler",
            "only dropped objects are held or collected: {stack:#}"
        );
    }
    let collected_under_path: u64 = pool["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| u64_of(&s["collected"]))
        .sum();
    assert_eq!(collected_under_path, u64_of(&pool["collected"]));
}

/// The frames of a stack without their runtime addresses (which differ between builds).
fn frames_without_addresses(stack: &Value) -> Vec<(String, String, u64, bool)> {
    stack["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap_or("").to_owned(),
                f["file"].as_str().unwrap_or("").to_owned(),
                f["line"].as_u64().unwrap_or(0),
                f["inlined"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn assert_inlined_call_is_expanded(build: &str) {
    let (_, report) = trace_build_two_rounds(build, &POOLFIX_BUFS);
    let pool = pool(&report, "main.(*BufPool).Get");
    let stack = pool["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .find(|s| functions(s).contains(&"main.inlinedLeak".to_owned()))
        .unwrap_or_else(|| panic!("no inlinedLeak path in {pool:#}"));
    assert_eq!(u64_of(&stack["outstanding"]), 2);
    let frames = frames_without_addresses(stack);
    assert_eq!(frames[1].0, "main.takeBuf");
    assert_eq!(
        (frames[1].2, frames[1].3),
        (fixture_line("return bufs.Get(2048)"), true)
    );
    assert_eq!(frames[2].0, "main.inlinedLeak");
    assert_eq!(
        (frames[2].2, frames[2].3),
        (
            fixture_line("leakedBufs = append(leakedBufs, takeBuf())"),
            false
        )
    );
}

#[test]
fn an_inlined_caller_of_get_is_expanded_in_the_leak_path() {
    assert_inlined_call_is_expanded("poolfix-go1.27");
    assert_inlined_call_is_expanded("poolfix-go1.19");
}

#[test]
fn an_inlined_caller_of_get_is_expanded_in_stripped_builds() {
    assert_inlined_call_is_expanded("poolfix-go1.27-stripped");
    assert_inlined_call_is_expanded("poolfix-go1.19-stripped");
    assert_inlined_call_is_expanded("poolfix-go1.27-pie-stripped");
}

#[test]
fn stripped_builds_report_the_same_counts_and_frames_as_unstripped() {
    for (full, stripped) in [
        ("poolfix-go1.27", "poolfix-go1.27-stripped"),
        ("poolfix-go1.19", "poolfix-go1.19-stripped"),
        ("poolfix-go1.27-pie", "poolfix-go1.27-pie-stripped"),
    ] {
        let summary = |build: &str| {
            let (_, report) = trace_build_two_rounds(build, &POOLFIX_BUFS);
            let pool = pool(&report, "main.(*BufPool).Get").clone();
            let stacks: Vec<_> = pool["stacks"]
                .as_array()
                .expect("stacks")
                .iter()
                .map(|s| (u64_of(&s["outstanding"]), frames_without_addresses(s)))
                .collect();
            (u64_of(&pool["gets"]), u64_of(&pool["puts"]), stacks)
        };
        assert_eq!(summary(full), summary(stripped), "{full} vs {stripped}");
    }
}

#[test]
fn sampling_gets_finds_no_false_leaks_and_still_sees_every_put() {
    sampling_gets(&[]);
}

/// The same switching of Get's probes, where each site has a link of its own.
#[test]
fn sampling_gets_with_a_link_per_site_finds_no_false_leaks_and_sees_every_put() {
    sampling_gets(&["env", "POOLTRACE_UPROBE_LINKS=per-site"]);
}

/// Get probed half the time (pooltrace started through `launcher`), Put always.
fn sampling_gets(launcher: &[&str]) {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let mut args = POOLFIX_BUFS.to_vec();
    args.extend(["--sample-gets", "0.5"]);
    let tracer = Tracer::attach_via(launcher, target.pid, &args);
    let mut counts = target.round();
    // Rounds spread over 1.4 s span probed and unprobed halves of the 500 ms cycles.
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(140));
        counts = target.round();
    }
    let report = tracer.interrupt().json();
    target.exit();
    assert_eq!(report["sample_gets"], 0.5);
    let pool = pool(&report, "main.(*BufPool).Get");
    // Put is always probed: every one is seen, matched or not.
    assert_eq!(u64_of(&pool["puts"]), counts.get("buf_puts"));
    assert!(
        u64_of(&pool["gets"]) > 0 && u64_of(&pool["gets"]) < counts.get("buf_gets"),
        "{pool:#}"
    );
    assert_eq!(
        u64_of(&pool["puts"]) - u64_of(&pool["unmatched_puts"]) + u64_of(&pool["outstanding"]),
        u64_of(&pool["gets"]),
        "every tracked Get is either back or outstanding: {pool:#}"
    );
    // Only the leaking paths hold objects; the balanced one never looks leaked.
    for stack in pool["stacks"].as_array().expect("stacks") {
        let names = functions(stack);
        assert!(
            names.contains(&"main.leakyHandler".to_owned())
                || names.contains(&"main.inlinedLeak".to_owned()),
            "{names:?}"
        );
    }
}

/// The final report, taken when `--duration` ends less than an interval after the last
/// periodic table, says what that table said: its trend has one point per interval, not a
/// repeat of the last one.
#[test]
fn the_final_report_ends_the_trend_the_interval_tables_drew() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let args = [
        "--get",
        "main.(*BufPool).Get",
        "--put",
        "main.(*BufPool).Put",
        "--interval",
        "1s",
        "--duration",
        "4500ms",
    ];
    let tracer = Tracer::attach(target.pid, &args);
    // A round 200 ms into each interval, so each table sees exactly one more.
    let attached = Instant::now();
    for round in 0..4 {
        let at = attached + Duration::from_millis(200 + 1000 * round);
        thread::sleep(at.saturating_duration_since(Instant::now()));
        target.round();
    }
    let finished = tracer.finish();
    target.exit();
    let tables = (finished.stderr.iter())
        .filter(|line| line.starts_with('[') && line.contains("] main.(*BufPool).Get:"))
        .count();
    assert_eq!(tables, 4, "{:#?}", finished.stderr);
    let report = finished.json();
    let leak = &pool(&report, "main.(*BufPool).Get")["stacks"][0];
    assert_eq!(
        leak["trend"],
        serde_json::json!([7, 14, 21, 28]),
        "{leak:#}"
    );
    let grew = (leak["reasons"].as_array().expect("reasons").iter())
        .filter_map(Value::as_str)
        .find(|reason| reason.contains(" grew in "))
        .unwrap_or_default();
    assert!(
        grew.starts_with("what it holds grew in 3 of the last 3 intervals"),
        "{leak:#}"
    );
    assert!(
        finished.stderr.iter().any(|line| line.contains(grew)),
        "the last table said otherwise: {:#?}",
        finished.stderr
    );
}
