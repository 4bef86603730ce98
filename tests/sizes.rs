//! Sizes: in a pool whose Get is asked for a size, what each call path asked for set against
//! the capacity the pool handed it, counted exactly while other Gets keep the pool busy.

use std::{thread, time::Duration};

use pooltrace_tests::{fixture, functions, Scratch, Target, Tracer, Value};

/// Gets of `askNearly` and of `askLess` in one `sizes` command.
const ASKED: u64 = 10;

/// (gets, requested, capacity) of a report's `sizes` object.
fn sizes(value: &Value) -> (u64, u64, u64) {
    let n = |field: &str| {
        value[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {value:#}"))
    };
    (n("gets"), n("requested_bytes"), n("capacity_bytes"))
}

/// The pool whose sized paths include `function`, and that path.
fn sized_path<'a>(report: &'a Value, function: &str) -> (&'a Value, &'a Value) {
    let pools = report["pools"].as_array().expect("pools");
    pools
        .iter()
        .find_map(|pool| {
            let paths = pool["sized_paths"].as_array()?;
            let path = paths
                .iter()
                .find(|p| functions(p).iter().any(|f| f == function))?;
            Some((pool, path))
        })
        .unwrap_or_else(|| panic!("no sized path through {function} in {report:#}"))
}

#[test]
fn each_path_shows_the_bytes_it_asked_for_and_the_capacity_it_was_handed_exactly() {
    let scratch = Scratch::new("sizes");
    let pools_file = "[[pool]]\n\
        get = \"github.com/thanos-io/thanos/pkg/pool.(*BucketedPool[uint8]).Get\"\n\
        put = \"github.com/thanos-io/thanos/pkg/pool.(*BucketedPool[uint8]).Put\"\n\
        object = \"slice-ptr\"\nget_request = \"a1\"\n";
    scratch.write("pools.toml", pools_file);
    let file = scratch.path("pools.toml");
    let preset: &[&str] = &["--pool", "thanos"];
    let named: &[&str] = &["--pools-file", &file];
    // The preset where its names resolve (not stripped Go 1.19, whose pclntab elides the
    // type arguments), and the pools file, on both toolchains, with and without symbols.
    let runs = [
        ("thanospool", preset),
        ("thanospool-stripped", preset),
        ("thanospool-go1.19", preset),
        ("thanospool-go1.19-stripped", named),
        ("thanospool", named),
    ];
    for (build, args) in runs {
        let mut target = Target::start(&fixture(build));
        // Busy first: a goroutine asks for 100 bytes (a 128-byte bucket) all along.
        target.send("busy");
        target.expect_line("busy");
        let tracer = Tracer::attach(target.pid, args);
        target.send(&format!("sizes {ASKED}"));
        target.expect_line("sized");
        // The churn sleeps a millisecond between batches: let it run some while traced
        // (a report taken within that millisecond saw none of its Gets).
        thread::sleep(Duration::from_millis(200));
        let report = tracer.interrupt().json();
        let context = format!("{build} {args:?}");

        // 1,000 bytes and 600 bytes, each from the 1,024-byte bucket.
        let (pool, nearly) = sized_path(&report, "main.askNearly");
        assert_eq!(
            sizes(nearly),
            (ASKED, ASKED * 1000, ASKED * 1024),
            "{context}"
        );
        let (_, less) = sized_path(&report, "main.askLess");
        assert_eq!(sizes(less), (ASKED, ASKED * 600, ASKED * 1024), "{context}");
        // The busy path, counted as long as it ran: 100 of every 128 bytes asked for.
        let (_, churn) = sized_path(&report, "main.churn");
        let (gets, requested, capacity) = sizes(churn);
        assert!(gets > 0, "{context}: {churn:#}");
        assert_eq!((requested, capacity), (gets * 100, gets * 128), "{context}");
        // The pool's sizes are its paths' sum.
        let paths = pool["sized_paths"].as_array().expect("sized paths");
        let summed = paths
            .iter()
            .map(sizes)
            .fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
        assert_eq!(sizes(&pool["sizes"]), summed, "{context}");
        // askLess keeps every fourth slice: its leak line carries the same sizes.
        let stacks = pool["stacks"].as_array().expect("stacks");
        let leaking = stacks
            .iter()
            .find(|s| functions(s).iter().any(|f| f == "main.askLess"))
            .unwrap_or_else(|| panic!("{context}: no askLess stack in {pool:#}"));
        assert_eq!(leaking["outstanding"], 3, "{context}");
        assert_eq!(sizes(&leaking["sizes"]), sizes(less), "{context}");
        target.exit();
    }
}

#[test]
fn the_text_report_says_how_much_capacity_each_path_left_unused() {
    let mut target = Target::start(&fixture("thanospool"));
    target.send("sizes 4");
    target.expect_line("sized");
    let tracer = Tracer::attach(target.pid, &["--pool", "thanos", "--format", "text"]);
    target.send(&format!("sizes {ASKED}"));
    target.expect_line("sized");
    let finished = tracer.interrupt();
    let text = &finished.stdout;
    // 10 x 1,000 and 10 x 600 bytes asked, 20 x 1,024 handed out: 16,000 of 20,480 bytes.
    assert!(
        text.contains("  sizes: requested 15.6 KiB, capacity 20.0 KiB (22% unused) in 20 Gets"),
        "{text}"
    );
    assert!(
        text.contains(
            "    requested 5.9 KiB, capacity 10.0 KiB (41% unused) in 10 Gets, from main.askLess"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "    requested 9.8 KiB, capacity 10.0 KiB (2% unused) in 10 Gets, from main.askNearly"
        ),
        "{text}"
    );
    target.exit();
}
