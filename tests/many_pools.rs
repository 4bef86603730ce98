//! Several pools in one run: custom pools repeated on the command line (each `--get` with its
//! own `--put` and options) or written in a pools file, alongside presets, each counted
//! exactly; a pool's kind decides whether a dropped object is a leak or lost reuse.

use pooltrace_tests::{fixture, functions, pool, run_pooltrace, u64_of, Counts, Target, Tracer};

const BUF_GET: &str = "main.(*BufPool).Get";
const BUF_PUT: &str = "main.(*BufPool).Put";
const CHUNK_GET: &str = "main.(*BucketedPool[uint8]).Get";
const CHUNK_PUT: &str = "main.(*BucketedPool[uint8]).Put";

/// Two rounds of the fixture traced with `args`; its counts and the report.
fn two_rounds(args: &[&str]) -> (Counts, pooltrace_tests::Value) {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::attach(target.pid, args);
    target.round();
    let counts = target.round();
    let report = tracer.interrupt().json();
    target.exit();
    (counts, report)
}

/// BufPool and the generic BucketedPool counted exactly, and sync.Pool traced beside them.
fn assert_three_pools_exact(counts: &Counts, report: &pooltrace_tests::Value) {
    let pools = report["pools"].as_array().expect("pools");
    let order: Vec<&str> = pools.iter().filter_map(|p| p["get"].as_str()).collect();
    assert_eq!(order, [BUF_GET, CHUNK_GET, "sync.(*Pool).Get"]);
    let buf = pool(report, BUF_GET);
    assert_eq!(
        (u64_of(&buf["gets"]), u64_of(&buf["puts"])),
        (counts.get("buf_gets"), counts.get("buf_puts"))
    );
    assert_eq!(buf["kind"], "counting");
    let chunks = pool(report, CHUNK_GET);
    assert_eq!(
        (u64_of(&chunks["gets"]), u64_of(&chunks["puts"])),
        (
            counts.get("chunk_gets") + counts.get("other_gets"),
            counts.get("chunk_puts") + counts.get("other_puts")
        )
    );
    let sync = pool(report, "sync.(*Pool).Get");
    assert_eq!(sync["kind"], "sync");
    // The fixture's own sync.Pool calls; BucketedPool's buckets use sync.Pool too.
    assert!(u64_of(&sync["gets"]) >= counts.get("sync_gets") + counts.get("byte_gets"));
    for pool in [buf, chunks] {
        for lost in ["unmatched_puts", "dropped", "collected", "read_faults"] {
            assert_eq!(u64_of(&pool[lost]), 0, "{lost} in {pool:#}");
        }
    }
}

#[test]
fn custom_pools_repeat_on_the_command_line_each_with_its_own_options() {
    let (counts, report) = two_rounds(&[
        "--get",
        BUF_GET,
        "--put",
        BUF_PUT,
        "--get",
        CHUNK_GET,
        "--object",
        "slice-ptr",
        "--put",
        CHUNK_PUT,
        "--pool",
        "sync",
    ]);
    assert_three_pools_exact(&counts, &report);
    // --object slice-ptr belongs to the second pool only: its sizes come from the slices'
    // capacities, while BufPool's pointers have no size.
    assert!(u64_of(&pool(&report, CHUNK_GET)["outstanding_bytes"]) > 0);
    assert_eq!(u64_of(&pool(&report, BUF_GET)["outstanding_bytes"]), 0);
}

#[test]
fn a_pools_file_names_the_same_pools() {
    let file = std::env::temp_dir().join(format!("pooltrace-pools-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "[[pool]]\nget = '{BUF_GET}'\nput = '{BUF_PUT}'\n\n\
             [[pool]]\nget = '{CHUNK_GET}'\nput = '{CHUNK_PUT}'\nobject = 'slice-ptr'\n\n\
             [[pool]]\npreset = 'sync'\n"
        ),
    )
    .expect("write pools file");
    let (counts, report) = two_rounds(&["--pools-file", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    assert_three_pools_exact(&counts, &report);
}

#[test]
fn more_pools_than_the_kernel_counts_are_refused_before_attaching() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let mut args = vec!["report", "--pid"];
    let pid = target.pid.to_string();
    args.push(&pid);
    for _ in 0..17 {
        args.extend(["--get", BUF_GET, "--put", BUF_PUT]);
    }
    let output = run_pooltrace(&args);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .collect::<Vec<_>>(),
        ["pooltrace: error: 17 pools named; pooltrace traces at most 16 at once"]
    );
    let twice = run_pooltrace(&[
        "report", "--pid", &pid, "--get", BUF_GET, "--put", BUF_PUT, "--get", BUF_GET, "--put",
        BUF_PUT,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&twice.stderr)
            .lines()
            .collect::<Vec<_>>(),
        [format!(
            "pooltrace: error: {BUF_GET} is named twice (pool 1 and pool 2)"
        )]
    );
}

#[test]
fn options_of_a_pool_must_follow_its_get() {
    let output = run_pooltrace(&[
        "report", "--pid", "1", "--object", "slice", "--get", "a", "--put", "b",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().next(),
        Some("error: --object describes a pool: give it after that pool's --get")
    );
    let output = run_pooltrace(&["report", "--pid", "1", "--get", "a"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).lines().next(),
        Some("error: --get a needs its --put")
    );
    let output = run_pooltrace(&[
        "report", "--pid", "1", "--get", "a", "--kind", "sync", "--put", "b", "--kind", "counting",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).lines().next(),
        Some("error: --kind is given twice for the pool of --get a")
    );
}

/// The same dropped objects: a leak in a counting pool, lost reuse in a sync-like one.
#[test]
fn a_pool_kind_decides_whether_a_dropped_object_is_a_leak() {
    for (kind, leak) in [("counting", true), ("sync", false)] {
        let mut target = Target::start(&fixture("poolfix-go1.27"));
        let tracer = Tracer::attach(
            target.pid,
            &["--get", BUF_GET, "--put", BUF_PUT, "--kind", kind],
        );
        target.send("churn");
        let counts = Counts::parse_line(&target.expect_line("counts"));
        let report = tracer.interrupt().json();
        target.exit();
        let buf = pool(&report, BUF_GET);
        assert_eq!(buf["kind"], kind);
        assert_eq!(u64_of(&buf["collected"]), counts.get("reused"), "{buf:#}");
        let dropping = buf["stacks"]
            .as_array()
            .expect("stacks")
            .iter()
            .find(|s| u64_of(&s["collected"]) > 0 && functions(s)[1] == "main.dropHandler")
            .unwrap_or_else(|| panic!("no path with collected objects: {buf:#}"));
        let score = dropping["leak_score"].as_f64().expect("score");
        let reasons = dropping["reasons"].to_string();
        if leak {
            assert!(score >= 60.0, "{dropping:#}");
            assert!(reasons.contains("dropped without a Put and garbage-collected"));
        } else {
            assert!(score < 20.0, "{dropping:#}");
            assert!(
                reasons.contains("lost reuse, which a sync pool allows"),
                "{reasons}"
            );
        }
    }
}
