//! The demo does what the README promises: under load, pooltrace's top call path is the
//! leaking streaming path, with Get's immediate caller, and the healthy Series path holds
//! no old objects.

use pooltrace_tests::{fixture, functions, pool, u64_of, Demo, Tracer};

const GET: &str = "storegw/pool.(*BucketedPool[uint8]).Get";
const PUT: &str = "storegw/pool.(*BucketedPool[uint8]).Put";
/// The demo's pool, as pooltrace names it.
const POOL: [&str; 6] = ["--get", GET, "--put", PUT, "--object", "slice-ptr"];

/// `POOL` followed by `extra`.
fn pool_and(extra: &[&'static str]) -> Vec<&'static str> {
    POOL.iter().chain(extra).copied().collect()
}

fn stack_through<'a>(
    stacks: &'a [pooltrace_tests::Value],
    function: &str,
) -> Option<&'a pooltrace_tests::Value> {
    stacks
        .iter()
        .find(|s| functions(s).iter().any(|f| f == function))
}

#[test]
fn demo_reports_the_leaking_stream_path_first_and_not_the_healthy_one() {
    let demo = Demo::start(&fixture("storegw"), 20);
    let tracer = Tracer::attach(
        demo.pid(),
        &pool_and(&["--min-age", "2s", "--duration", "12s"]),
    );
    let finished = tracer.finish();
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l.contains("--duration reached")),
        "{:?}",
        finished.stderr
    );
    let report = finished.json();
    let pool = pool(&report, GET);
    let stacks = pool["stacks"].as_array().expect("stacks");
    let top = functions(&stacks[0]);
    assert_eq!(
        top[0], "storegw/pool.(*BucketedPool[go.shape.uint8]).Get",
        "{top:?}"
    );
    assert_eq!(top[1], "storegw/store.(*bucketChunkReader).save", "{top:?}");
    assert!(
        top.iter()
            .any(|f| f == "storegw/store.(*BucketStore).SeriesStream"),
        "{top:?}"
    );
    assert!(u64_of(&stacks[0]["collected"]) + u64_of(&stacks[0]["outstanding"]) > 0);
    assert!(
        stack_through(stacks, "storegw/store.(*BucketStore).Series").is_none(),
        "the healthy path has objects older than 2 s: {stacks:#?}"
    );
}

#[test]
fn the_leak_outscores_a_busy_healthy_path_whose_release_path_names_its_close() {
    let demo = Demo::start(&fixture("storegw"), 20);
    let tracer = Tracer::attach(
        demo.pid(),
        // Four interval reports (3, 6, 9 and 12 s) before the final one amends the last.
        &pool_and(&["--interval", "3s", "--duration", "13s"]),
    );
    let report = tracer.finish().json();
    let pool = pool(&report, GET);
    let stacks = pool["stacks"].as_array().expect("stacks");
    let leak = &stacks[0];
    assert!(
        functions(leak)
            .iter()
            .any(|f| f == "storegw/store.(*BucketStore).SeriesStream"),
        "{leak:#}"
    );
    assert!(
        leak["leak_score"].as_f64().unwrap_or(0.0) >= 50.0,
        "{leak:#}"
    );
    assert!(
        leak["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("dropped without a Put"),
        "{leak:#}"
    );
    // Series holds its chunks ~50 ms while it sends, so it always has young objects out
    // (about 9 requests in flight at the load generator's rate).
    let healthy = stack_through(stacks, "storegw/store.(*BucketStore).Series")
        .expect("the busy healthy path");
    assert!(u64_of(&healthy["outstanding"]) > 0);
    assert!(
        healthy["leak_score"].as_f64().unwrap_or(100.0) < 20.0,
        "{healthy:#}"
    );
    assert!(
        healthy["age_ms"]["p99"].as_f64().unwrap_or(f64::MAX) < 1000.0,
        "{healthy:#}"
    );
    assert!(
        healthy["hold_ms"]["p50"].as_f64().unwrap_or(0.0) >= 15.0,
        "{healthy:#}"
    );
    // Its objects come back through the merge's Close, every one of them.
    let release = &healthy["release_paths"][0];
    assert!(
        release["share"].as_f64().unwrap_or(0.0) > 0.999,
        "{healthy:#}"
    );
    let via = functions(release);
    assert_eq!(
        via[0], "storegw/pool.(*BucketedPool[go.shape.uint8]).Put",
        "{via:?}"
    );
    assert_eq!(
        via[1], "storegw/store.(*bucketChunkReader).Close",
        "{via:?}"
    );
    assert!(
        via.iter()
            .any(|f| f == "storegw/store.(*mergedSeries).Close"),
        "{via:?}"
    );
    // Reports every 3 s fed the trend, one point each.
    assert!(
        leak["trend"].as_array().map_or(0, Vec::len) == 4,
        "{leak:#}"
    );
}
