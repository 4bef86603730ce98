//! A Get or Put that the compiler inlined into some callers, and that calls no pool there,
//! cannot be probed there: pooltrace names each such call site, matching the compiler's own
//! account (`go build -gcflags=-m`, saved by `cargo xtask test` beside the fixture).

use pooltrace_tests::{fixture, pool, source_line, u64_of, Target, Tracer};

/// Line of the fixture source holding `needle` (1-based).
fn fixture_line(needle: &str) -> u64 {
    source_line(include_str!("fixtures/poolfix/main.go"), needle)
}

/// How many times `go build -gcflags=-m` reported inlining a call to `method`.
fn compiler_inlined(method: &str) -> usize {
    let decisions = std::fs::read_to_string(fixture("poolfix-go1.27.inlining.txt"))
        .expect("inlining decisions");
    decisions
        .lines()
        .filter(|l| l.ends_with(&format!("inlining call to {method}")))
        .count()
}

#[test]
fn inlined_call_sites_are_counted_and_only_real_calls_are_traced() {
    for build in ["poolfix-go1.27", "poolfix-go1.27-stripped"] {
        let mut target = Target::start(&fixture(build));
        let tracer = Tracer::attach(
            target.pid,
            &[
                "--get",
                "main.(*TinyPool).Get",
                "--put",
                "main.(*TinyPool).Put",
            ],
        );
        target.round();
        target.round();
        let finished = tracer.interrupt();
        target.exit();
        for (function, method, consequence) in [
            (
                "main.(*TinyPool).Get",
                "(*TinyPool).Get",
                "Gets there are not seen, and Puts of their objects count as unmatched",
            ),
            (
                "main.(*TinyPool).Put",
                "(*TinyPool).Put",
                "Puts there are not seen, so this pool's objects dropped without a Put are not \
                 scored as leaks",
            ),
        ] {
            let sites = compiler_inlined(method);
            assert!(sites > 0, "the fixture no longer inlines {method}");
            // TinyPool calls no pool underneath: each inlined copy is unseen, and named.
            let start =
                format!("pooltrace: warning: {function} is inlined into main.tinyRound at /");
            let end = format!(
                "fixtures/poolfix/main.go:{} with no call to a pool pooltrace knows under it: \
                 {consequence}",
                fixture_line("tiny.Put(tiny.Get())")
            );
            let warned = finished
                .stderr
                .iter()
                .filter(|l| l.starts_with(&start) && l.ends_with(&end))
                .count();
            assert_eq!(warned, sites, "{build}: {:#?}", finished.stderr);
        }
        // Each round makes one inlined round trip (unseen) and one through an interface.
        let report = finished.json();
        let pool = pool(&report, "main.(*TinyPool).Get");
        assert_eq!(
            (u64_of(&pool["gets"]), u64_of(&pool["puts"])),
            (2, 2),
            "{build}"
        );
        assert_eq!(
            (
                u64_of(&pool["unseen_get_sites"]),
                u64_of(&pool["unseen_put_sites"])
            ),
            (1, 1),
            "{build}"
        );
    }
}
