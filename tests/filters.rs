//! The filters users of memleak expect, in report, run and stream: `--min-size`/`--max-size`
//! track only objects of those sizes (counting the others), and `--stack-depth` records
//! shorter stacks without losing an object.

use pooltrace_tests::{
    assert_fails_with_line, fixture, pool, u64_of, Target, Tracer, POOLFIX_CHUNKS,
};

/// The chunk pool's report after `instances`, traced with `args`.
fn instances_traced_with(args: &[&str]) -> pooltrace_tests::Value {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::attach(target.pid, &[&POOLFIX_CHUNKS[..], args].concat());
    target.send("instances");
    let counts = target.expect_line("counts");
    assert!(counts.contains(" chunk_gets=3000 "), "{counts}");
    let report = tracer.interrupt().json();
    pool(&report, POOLFIX_CHUNKS[1]).clone()
}

#[test]
fn size_filters_track_only_objects_of_those_sizes_and_count_the_rest() {
    let inside = instances_traced_with(&["--min-size", "64", "--max-size", "64"]);
    assert_eq!(u64_of(&inside["outstanding"]), 3000);
    assert_eq!(u64_of(&inside["size_filtered"]), 0);
    let above = instances_traced_with(&["--min-size", "65"]);
    assert_eq!(u64_of(&above["outstanding"]), 0);
    assert_eq!(u64_of(&above["size_filtered"]), 3000);
    assert_eq!(u64_of(&above["gets"]), 3000);
    let below = instances_traced_with(&["--max-size", "63"]);
    assert_eq!(u64_of(&below["size_filtered"]), 3000);
}

#[test]
fn a_shorter_stack_depth_keeps_every_object_on_shorter_paths() {
    let whole = instances_traced_with(&[]);
    let short = instances_traced_with(&["--stack-depth", "2"]);
    assert_eq!(u64_of(&short["outstanding"]), u64_of(&whole["outstanding"]));
    let longest = |pool: &pooltrace_tests::Value| {
        pool["stacks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["frames"].as_array().map_or(0, Vec::len))
            .max()
            .unwrap_or(0)
    };
    // Two addresses walked (the probed RET and one return address), plus the immediate
    // caller the report adds, plus Get's own frame: at most 3 non-inlined frames.
    assert!(longest(&whole) > 4, "{}", longest(&whole));
    assert!(longest(&short) <= 3, "{}", longest(&short));
}

#[test]
fn stream_shows_only_the_objects_the_size_filter_keeps() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::stream(
        target.pid,
        &[&POOLFIX_CHUNKS[..], &["--max-size", "64"]].concat(),
    );
    target.send("instances");
    target.expect_line("counts");
    target.exit();
    let kept = tracer.finish().stdout;
    assert_eq!(kept.lines().filter(|l| l.contains(" get ")).count(), 3000);
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::stream(
        target.pid,
        &[&POOLFIX_CHUNKS[..], &["--min-size", "65"]].concat(),
    );
    target.send("instances");
    target.expect_line("counts");
    target.exit();
    assert_eq!(tracer.finish().stdout.lines().count(), 0);
}

#[test]
fn a_min_size_above_the_max_size_is_one_line() {
    assert_fails_with_line(
        &[
            "run",
            "--pool",
            "sync",
            "--min-size",
            "100",
            "--max-size",
            "10",
            "--",
            "/bin/true",
        ],
        "pooltrace: error: --min-size 100 is larger than --max-size 10: no object would be tracked",
    );
}
