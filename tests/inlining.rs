//! A Get or Put that the compiler inlined into some callers cannot be probed there:
//! pooltrace says at how many call sites, matching the compiler's own account
//! (`go build -gcflags=-m`, saved by `cargo xtask test` beside the fixture).

use pooltrace_tests::{fixture, pool, u64_of, Target, Tracer};

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
        for (function, method) in [
            ("main.(*TinyPool).Get", "(*TinyPool).Get"),
            ("main.(*TinyPool).Put", "(*TinyPool).Put"),
        ] {
            let sites = compiler_inlined(method);
            assert!(sites > 0, "the fixture no longer inlines {method}");
            let plural = if sites == 1 { "" } else { "s" };
            let warning = format!("pooltrace: warning: {function} is inlined at {sites} call site{plural}; calls there are not seen");
            assert!(
                finished.stderr.contains(&warning),
                "{build}: no {warning:?} in {:?}",
                finished.stderr
            );
        }
        // Each round makes one inlined round trip (unseen) and one through an interface.
        let report = finished.json();
        let pool = pool(&report, "main.(*TinyPool).Get");
        assert_eq!(
            (u64_of(&pool["gets"]), u64_of(&pool["puts"])),
            (2, 2),
            "{build}"
        );
    }
}
