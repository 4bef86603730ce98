//! Tracing windows on real processes: probes that come and go on a cycle must still invent no
//! leak, and still find a real one with its exact count. Each test fixes the windows' times
//! (`--window`, `--grace`, `--period`), so what happens in which window is known: the first
//! window opens at attach.

use std::{
    thread,
    time::{Duration, Instant},
};

use pooltrace_tests::{
    fixture, functions, pool, suspected_leaks, u64_of, Target, Tracer, Value, POOLFIX_BUFS,
    POOLFIX_CHUNKS,
};

const BUSY_GET: &str = "main.(*Pool).Get";
const BUSY_PUT: &str = "main.(*Pool).Put";
/// Both pools of the busy target: the counting one and `sync.Pool`.
const BUSY_POOLS: [&str; 7] = [
    "--get",
    BUSY_GET,
    "--put",
    BUSY_PUT,
    "--pool",
    "sync",
    "--top=1000",
];

/// Windows of 3 s, Put 1 s longer, every 8 s: window 1 is [0, 3) s from attach, its grace
/// [3, 4), the rest [4, 8), window 2 [8, 11).
const SLOW_CYCLE: [&str; 6] = ["--window", "3s", "--grace", "1s", "--period", "8s"];

/// Many short cycles: 20 windows in 12 s.
const FAST_CYCLE: [&str; 6] = ["--window", "200ms", "--grace", "200ms", "--period", "500ms"];

/// Sleeps until `at` after `start`.
fn sleep_until(start: Instant, at: Duration) {
    thread::sleep(at.saturating_sub(start.elapsed()));
}

/// The address a fixture printed after `word`.
fn address(target: &mut Target, word: &str) -> String {
    let line = target.expect_line(word);
    line[word.len()..].trim().to_owned()
}

/// The fixture commands that take an object, give it back and take it again (and give it
/// back at once), each with the word its reply starts with.
struct RoundTrip<'a> {
    take: (&'a str, &'a str),
    give_back: (&'a str, &'a str),
    regain: (&'a str, &'a str),
    /// Why the same object must come back, said if another does.
    same_because: &'a str,
}

/// Traces `pool` in `SLOW_CYCLE` while `target` takes an object in window 1, gives it back
/// in the rest that follows and takes it again in window 2; the report.
fn given_back_between_windows(target: &mut Target, pool: &[&str], steps: RoundTrip) -> Value {
    let mut args = pool.to_vec();
    args.extend(SLOW_CYCLE);
    let tracer = Tracer::attach(target.pid, &args);
    let attached = Instant::now();
    target.send(steps.take.0);
    let taken = address(target, steps.take.1);
    sleep_until(attached, Duration::from_millis(5500));
    target.send(steps.give_back.0);
    assert_eq!(address(target, steps.give_back.1), taken);
    sleep_until(attached, Duration::from_millis(9000));
    target.send(steps.regain.0);
    assert_eq!(
        address(target, steps.regain.1),
        taken,
        "{}",
        steps.same_because
    );
    thread::sleep(Duration::from_millis(500));
    tracer.interrupt().json()
}

/// Holds an object past its window, gives it back while nothing is probed, and takes it
/// again in the next window: it may have come back unseen, so it is neither collected nor
/// scored.
fn an_object_given_back_between_windows_came_back_unseen(build: &str) {
    let mut target = Target::start(&fixture(build));
    let steps = RoundTrip {
        take: ("hold", "held"),
        give_back: ("putback", "putback"),
        regain: ("regain", "regained"),
        same_because: "the free list is LIFO",
    };
    let report = given_back_between_windows(&mut target, &POOLFIX_BUFS, steps);
    target.exit();
    assert!(u64_of(&report["windows"]["opened"]) >= 2, "{report:#}");
    let bufs = pool(&report, "main.(*BufPool).Get");
    assert_eq!(u64_of(&bufs["came_back_unseen"]), 1, "{bufs:#}");
    assert_eq!(u64_of(&bufs["collected"]), 0, "{bufs:#}");
    // The one Put nothing saw left a Get unmatched by nothing; the regained one was matched.
    assert_eq!(u64_of(&bufs["gets"]), 2, "{bufs:#}");
    assert_eq!(u64_of(&bufs["puts"]), 1, "{bufs:#}");
    for stack in bufs["stacks"].as_array().expect("stacks") {
        assert_eq!(stack["leak_score"], 0.0, "{stack:#}");
    }
}

#[test]
fn an_object_given_back_between_windows_came_back_unseen_go127() {
    an_object_given_back_between_windows_came_back_unseen("poolfix-go1.27");
}

#[test]
fn an_object_given_back_between_windows_came_back_unseen_go119() {
    an_object_given_back_between_windows_came_back_unseen("poolfix-go1.19");
}

/// Two chunks taken in window 1 and given back in window 2: the one kept all along is a late
/// Put, timed across the gap; the other was dropped, and the Put is of a new header the
/// collector put at its address while nothing was probed, which only its data pointer tells
/// apart. That one came back unseen (and is not timed as a hold), the kept one is the one late
/// Put.
fn a_put_at_a_recycled_address_is_not_a_late_put(build: &str) {
    let mut target = Target::start(&fixture(build));
    let mut args = POOLFIX_CHUNKS.to_vec();
    args.extend(SLOW_CYCLE);
    let tracer = Tracer::attach(target.pid, &args);
    let attached = Instant::now();
    target.send("keepchunk");
    let kept = address(&mut target, "kept");
    target.send("dropchunk");
    let dropped = address(&mut target, "dropped");
    sleep_until(attached, Duration::from_millis(4500));
    target.send("recycle");
    assert_eq!(
        address(&mut target, "recycled"),
        dropped,
        "the allocator never reused the dropped header"
    );
    sleep_until(attached, Duration::from_millis(9000));
    target.send("putkept");
    assert_eq!(address(&mut target, "putkept"), kept);
    target.send("putrecycled");
    target.expect_line("putrecycled");
    thread::sleep(Duration::from_millis(500));
    let report = tracer.interrupt().json();
    target.exit();
    assert!(u64_of(&report["windows"]["opened"]) >= 2, "{report:#}");
    let chunks = pool(&report, "main.(*BucketedPool[uint8]).Get");
    for (counter, expected) in [
        ("gets", 2),
        ("puts", 2),
        ("late_puts", 1),
        ("came_back_unseen", 1),
        ("unmatched_puts", 1),
        ("collected", 0),
        ("outstanding", 0),
    ] {
        assert_eq!(u64_of(&chunks[counter]), expected, "{counter}: {chunks:#}");
    }
    // Both objects are accounted for: no path holds one or is scored.
    assert_eq!(chunks["stacks"], serde_json::json!([]), "{chunks:#}");
}

#[test]
fn a_put_at_a_recycled_address_is_not_a_late_put_go127() {
    a_put_at_a_recycled_address_is_not_a_late_put("poolfix-go1.27");
}

#[test]
fn a_put_at_a_recycled_address_is_not_a_late_put_go119() {
    a_put_at_a_recycled_address_is_not_a_late_put("poolfix-go1.19");
}

/// A chunk held past its window, given back while nothing is probed, and handed out again in
/// the next window with its data pointer unchanged: the very object came back, so it counts
/// as returned unseen (held long, not lost) as well as came back unseen.
fn the_very_object_handed_out_again_is_returned_unseen(build: &str) {
    let mut target = Target::start(&fixture(build));
    target.send("oneproc");
    target.expect_line("oneproc");
    let steps = RoundTrip {
        take: ("keepchunk", "kept"),
        give_back: ("putkept", "putkept"),
        regain: ("regainchunk", "regainedchunk"),
        same_because: "sync.Pool handed out another chunk",
    };
    let report = given_back_between_windows(&mut target, &POOLFIX_CHUNKS, steps);
    target.exit();
    let chunks = pool(&report, "main.(*BucketedPool[uint8]).Get");
    for (counter, expected) in [
        ("gets", 2),
        ("puts", 1),
        ("came_back_unseen", 1),
        ("returned_unseen", 1),
        ("late_puts", 0),
        ("unmatched_puts", 0),
        ("collected", 0),
        ("outstanding", 0),
    ] {
        assert_eq!(u64_of(&chunks[counter]), expected, "{counter}: {chunks:#}");
    }
}

#[test]
fn the_very_object_handed_out_again_is_returned_unseen_go127() {
    the_very_object_handed_out_again_is_returned_unseen("poolfix-go1.27");
}

#[test]
fn the_very_object_handed_out_again_is_returned_unseen_go119() {
    the_very_object_handed_out_again_is_returned_unseen("poolfix-go1.19");
}

/// Drops objects and lets the garbage collector hand their memory out again, all inside one
/// window: Put watched them throughout, so they are booked as collected.
fn objects_dropped_and_recycled_within_a_window_are_collected(build: &str) {
    let mut target = Target::start(&fixture(build));
    let mut args = POOLFIX_BUFS.to_vec();
    args.extend(["--window", "20s", "--grace", "1s", "--period", "30s"]);
    let tracer = Tracer::attach(target.pid, &args);
    target.send("churn");
    let counts = pooltrace_tests::Counts::parse_line(&target.expect_line("counts"));
    let report = tracer.interrupt().json();
    target.exit();
    assert!(
        counts.get("reused") > 0,
        "the GC never recycled a dropped buffer"
    );
    let bufs = pool(&report, "main.(*BufPool).Get");
    assert!(
        u64_of(&bufs["collected"]) >= counts.get("reused"),
        "{bufs:#}"
    );
    assert_eq!(u64_of(&bufs["came_back_unseen"]), 0, "{bufs:#}");
    assert_eq!(u64_of(&report["windows"]["opened"]), 1, "{report:#}");
}

#[test]
fn objects_dropped_and_recycled_within_a_window_are_collected_go127() {
    objects_dropped_and_recycled_within_a_window_are_collected("poolfix-go1.27");
}

#[test]
fn objects_dropped_and_recycled_within_a_window_are_collected_go119() {
    objects_dropped_and_recycled_within_a_window_are_collected("poolfix-go1.19");
}

/// The busy target through at least 20 windows, with a path that holds its objects for
/// seconds and always gives them back: nothing is scored.
fn twenty_windows_on_a_busy_target_find_no_leak(build: &str) {
    let mut target = Target::start(&fixture(build));
    target.send("longhold 40 1500");
    target.expect_line("holding 40");
    // Long holds already going, as on a service that has run for a while.
    thread::sleep(Duration::from_secs(2));
    let mut args = BUSY_POOLS.to_vec();
    args.extend(FAST_CYCLE);
    args.extend(["--duration", "12s"]);
    let report = Tracer::attach(target.pid, &args).finish().json();
    assert!(target.is_running(), "the target died under the windows");
    target.exit();
    assert!(u64_of(&report["windows"]["opened"]) >= 20, "{report:#}");
    let counting = pool(&report, BUSY_GET);
    let long: Vec<&Value> = counting["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .filter(|s| functions(s).iter().any(|f| f == "main.holdLong"))
        .collect();
    assert!(
        long.iter().any(|s| u64_of(&s["survivors"]) > 0),
        "the long holds outlived no grace: {counting:#}"
    );
    let found = suspected_leaks(&report, false);
    assert!(
        found.is_empty(),
        "leaks in a healthy program:\n{}",
        found.join("\n")
    );
}

#[test]
fn twenty_windows_on_a_busy_target_find_no_leak_go127() {
    twenty_windows_on_a_busy_target_find_no_leak("busy-go1.27");
}

#[test]
fn twenty_windows_on_a_busy_target_find_no_leak_go119() {
    twenty_windows_on_a_busy_target_find_no_leak("busy-go1.19");
}

/// A leak made inside the first window of a busy target: its path is named, scored, and its
/// survivors are exactly the objects leaked.
#[test]
fn a_leak_made_inside_a_window_is_found_with_its_exact_count() {
    let mut target = Target::start(&fixture("busy-go1.27"));
    let mut args = BUSY_POOLS.to_vec();
    args.extend(["--window", "2s", "--grace", "500ms", "--period", "3s"]);
    let tracer = Tracer::attach(target.pid, &args);
    let leaks = 23;
    target.send(&format!("leak {leaks}"));
    target.expect_line(&format!("leaked {leaks}"));
    // Ten graces out, and more than one window since: enough for a path none of whose
    // objects ever came back.
    thread::sleep(Duration::from_secs(9));
    let report = tracer.interrupt().json();
    target.exit();
    let counting = pool(&report, BUSY_GET);
    let stacks = counting["stacks"].as_array().expect("stacks");
    let leaking: Vec<&Value> = stacks
        .iter()
        .filter(|s| functions(s).iter().any(|f| f == "main.leakOnErrorPath"))
        .collect();
    assert_eq!(leaking.len(), 1, "one leaking path: {counting:#}");
    let leak = leaking[0];
    assert_eq!(u64_of(&leak["survivors"]), leaks, "{leak:#}");
    assert_eq!(u64_of(&leak["outstanding"]), leaks, "{leak:#}");
    let score = leak["leak_score"].as_f64().expect("score");
    assert!(score >= 50.0, "the leak scores only {score}: {leak:#}");
    let others: Vec<String> = suspected_leaks(&report, false)
        .into_iter()
        .filter(|s| !s.contains("main.leakOnErrorPath"))
        .collect();
    assert!(
        others.is_empty(),
        "healthy paths scored:\n{}",
        others.join("\n")
    );
}

/// Bad window times get one line and a failing exit, before anything is attached.
#[test]
fn window_times_that_cannot_fit_are_refused_in_one_line() {
    for (args, line) in [
        (
            &[
                "--budget", "1", "--window", "2s", "--grace", "2s", "--period", "3s",
            ][..],
            "pooltrace: error: --window 2.0s plus --grace 2.0s is longer than --period 3.0s: a \
             cycle holds its window and its grace",
        ),
        (
            &["--grace", "2s"][..],
            "pooltrace: error: --window, --grace and --period shape tracing windows, which are \
             off: give --budget (or, for report, run and stream, --period) and no --continuous",
        ),
        (
            &["--budget", "1", "--sample-gets", "0.5"][..],
            "pooltrace: error: --sample-gets cannot go with tracing windows: a window already \
             probes Get for part of the time; choose one",
        ),
    ] {
        let mut all = vec!["report", "--pid", "1", "--pool", "sync"];
        all.extend(args);
        pooltrace_tests::assert_one_line_error(&pooltrace_tests::run_pooltrace(&all), line);
    }
}
