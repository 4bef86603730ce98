//! A leaking call path is reported with Get's immediate caller and its file:line; a path
//! whose objects all come back is not reported.

use pooltrace_tests::{fixture, functions, pool, u64_of, Target, Tracer, Value};

/// Line of the fixture source holding `needle` (1-based), so expectations follow the source.
fn fixture_line(needle: &str) -> u64 {
    let source = include_str!("fixtures/poolfix/main.go");
    let index = source
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?}"));
    index as u64 + 1
}

fn trace_two_rounds(args: &[&str]) -> (pooltrace_tests::Counts, Value) {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
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
    // balancedHandler's objects all came back: only leakyHandler's path is left.
    assert_eq!(stacks.len(), 1, "{pool:#}");
    let leak = &stacks[0];
    assert_eq!(
        u64_of(&leak["outstanding"]),
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
    assert!(
        u64_of(&pool["collected"]) > 0,
        "no dropped Buf was recycled: {pool:#}"
    );
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
