//! Get and Put wrappers that the compiler inlined into their callers are traced there, on
//! the call each inlined copy makes to the pool underneath: counts stay exact whichever way
//! an object was taken and given back, and a leak through an inlined Get names the wrapper
//! and its caller. A copy with nothing to probe is named in a warning, and its pool's
//! objects dropped without a Put are not scored as leaks.

use pooltrace_tests::{
    fixture, functions, pool, pooltrace_json, source_line, u64_of, Counts, Target, Tracer, Value,
};

const BUILDS: [&str; 2] = ["inlined-go1.27", "inlined-go1.19"];
const X_POOL: [&str; 4] = ["--get", "main.GetX", "--put", "main.PutX"];
const Y_POOL: [&str; 4] = ["--get", "main.GetY", "--put", "main.PutY"];

/// Line of the fixture source holding `needle` (1-based).
fn fixture_line(needle: &str) -> u64 {
    source_line(include_str!("fixtures/inlined/main.go"), needle)
}

/// Two rounds under the tracer; then the target exits and pooltrace reports by itself.
fn traced_rounds(build: &str, args: &[&str]) -> (Counts, Value, Vec<String>) {
    let mut target = Target::start(&fixture(build));
    let tracer = Tracer::attach(target.pid, args);
    target.round();
    let counts = target.round();
    let (status, _) = target.exit();
    assert_eq!(status.code(), Some(3));
    let finished = tracer.finish();
    (counts, finished.json(), finished.stderr)
}

#[test]
fn inlined_and_out_of_line_gets_and_puts_are_counted_exactly() {
    for build in BUILDS {
        let (counts, report, stderr) = traced_rounds(build, &X_POOL);
        for traced in [
            "pooltrace: main.GetX (Get) is inlined at 3 call sites: traced there after its call to sync.(*Pool).Get",
            "pooltrace: main.PutX (Put) is inlined at 2 call sites: traced there at its call to sync.(*Pool).Put",
        ] {
            assert!(stderr.iter().any(|l| l == traced), "{build}: no {traced:?} in {stderr:#?}");
        }
        assert!(
            !stderr.iter().any(|l| l.contains("warning")),
            "{build}: {stderr:#?}"
        );
        let pool = pool(&report, "main.GetX");
        assert_eq!(
            u64_of(&pool["gets"]),
            counts.get("x_gets"),
            "{build}: {pool:#}"
        );
        assert_eq!(
            u64_of(&pool["puts"]),
            counts.get("x_puts"),
            "{build}: {pool:#}"
        );
        assert_eq!(u64_of(&pool["outstanding"]), counts.get("kept"), "{build}");
        for none in [
            "collected",
            "unmatched_puts",
            "dropped",
            "read_faults",
            "stack_failures",
            "unseen_get_sites",
            "unseen_put_sites",
        ] {
            assert_eq!(u64_of(&pool[none]), 0, "{build}: {none} in {pool:#}");
        }
    }
}

#[test]
fn a_leak_through_an_inlined_get_names_the_wrapper_and_its_caller() {
    for build in BUILDS {
        let (_, report, _) = traced_rounds(build, &X_POOL);
        let pool = pool(&report, "main.GetX");
        let stacks = pool["stacks"].as_array().expect("stacks");
        let by_caller = |caller: &str| {
            stacks
                .iter()
                .find(|s| functions(s).get(1).map(String::as_str) == Some(caller))
                .unwrap_or_else(|| panic!("{build}: no {caller} path in {pool:#}"))
        };
        // Three objects a round kept through the inlined GetX, one through the func value.
        let inlined = by_caller("main.inlinedKeep");
        assert_eq!(u64_of(&inlined["outstanding"]), 6, "{build}");
        assert_eq!(
            &functions(inlined)[..3],
            ["main.GetX", "main.inlinedKeep", "main.round"]
        );
        let (wrapper, caller) = (&inlined["frames"][0], &inlined["frames"][1]);
        assert_eq!(wrapper["inlined"], true, "{build}: {wrapper}");
        assert_eq!(
            u64_of(&wrapper["line"]),
            fixture_line("func GetX() *X { return xPool.Get().(*X) }"),
            "{build}"
        );
        assert_eq!(caller["inlined"], false, "{build}: {caller}");
        assert_eq!(
            u64_of(&caller["line"]),
            fixture_line("kept = append(kept, GetX())"),
            "{build}"
        );
        assert!(
            caller["file"]
                .as_str()
                .unwrap_or("")
                .ends_with("fixtures/inlined/main.go"),
            "{caller}"
        );
        let out_of_line = by_caller("main.valueKeep");
        assert_eq!(u64_of(&out_of_line["outstanding"]), 2, "{build}");
        assert_eq!(out_of_line["frames"][0]["inlined"], false, "{build}");
        assert_eq!(
            u64_of(&out_of_line["frames"][1]["line"]),
            fixture_line("kept = append(kept, getX())"),
            "{build}"
        );
        assert_eq!(stacks.len(), 2, "{build}: {pool:#}");
    }
}

#[test]
fn an_inlined_put_with_no_call_to_probe_is_warned_of_and_not_scored() {
    for build in BUILDS {
        let (counts, report, stderr) = traced_rounds(build, &Y_POOL);
        // Go records the source path the fixture was built from.
        let (start, end) = (
            "pooltrace: warning: main.PutY is inlined into main.yRound at /".to_owned(),
            format!(
                "/fixtures/inlined/main.go:{} with no call to a pool pooltrace knows under it: \
                 Puts there are not seen, so this pool's objects dropped without a Put are not \
                 scored as leaks",
                fixture_line("\t\tPutY(y)")
            ),
        );
        let warnings: Vec<&String> = stderr.iter().filter(|l| l.contains("warning")).collect();
        assert_eq!(warnings.len(), 1, "{build}: {stderr:#?}");
        assert!(
            warnings[0].starts_with(&start) && warnings[0].ends_with(&end),
            "{build}: {warnings:?} is not {start}...{end}"
        );
        let pool = pool(&report, "main.GetY");
        assert_eq!(u64_of(&pool["unseen_put_sites"]), 1, "{build}");
        assert_eq!(u64_of(&pool["unseen_get_sites"]), 0, "{build}");
        assert_eq!(u64_of(&pool["gets"]), counts.get("y_gets"), "{build}");
        assert_eq!(u64_of(&pool["puts"]), counts.get("y_puts"), "{build}");
        // Each Get after an unseen Put hands out the same Y again while it is still out.
        assert_eq!(
            u64_of(&pool["collected"]),
            counts.get("y_unseen_puts"),
            "{build}"
        );
        assert_eq!(u64_of(&pool["outstanding"]), 0, "{build}");
        assert_eq!(u64_of(&pool["unmatched_puts"]), 0, "{build}");
        let stacks = pool["stacks"].as_array().expect("stacks");
        assert_eq!(stacks.len(), 1, "{build}: {pool:#}");
        let stack = &stacks[0];
        assert_eq!(u64_of(&stack["collected"]), counts.get("y_unseen_puts"));
        assert_eq!(
            stack["leak_score"].as_f64(),
            Some(0.0),
            "{build}: {stack:#}"
        );
        assert_eq!(
            stack["reasons"],
            serde_json::json!([format!(
                "{} objects were handed out again while still out, but this is not scored: Put \
                 is inlined at 1 call site where pooltrace cannot see it, so they may have come \
                 back there",
                counts.get("y_unseen_puts")
            )]),
            "{build}"
        );
    }
}

#[test]
fn dry_run_lists_the_calls_probed_in_inlined_copies() {
    for build in BUILDS {
        let target = Target::start(&fixture(build));
        let pid = target.pid.to_string();
        let mut args = vec!["report", "--pid", &pid, "--dry-run"];
        args.extend(X_POOL);
        let sites = pooltrace_json(&args);
        target.exit();
        let sites = sites.as_array().expect("sites");
        let of_role =
            |role: &str| -> Vec<&Value> { sites.iter().filter(|s| s["role"] == role).collect() };
        let hosts = |role: &str| -> Vec<&str> {
            of_role(role)
                .iter()
                .map(|s| s["function"].as_str().unwrap_or(""))
                .collect()
        };
        assert_eq!(
            hosts("get-inlined-call"),
            [
                "main.inlinedRoundTrip",
                "main.inlinedKeep",
                "main.mixedRoundTrips"
            ],
            "{build}"
        );
        assert_eq!(
            hosts("put-inlined-call"),
            ["main.inlinedRoundTrip", "main.mixedRoundTrips"],
            "{build}"
        );
        for site in of_role("get-inlined-call") {
            // The instruction after the call: not a call, and single-stepped.
            assert_eq!(site["calls"], "sync.(*Pool).Get", "{site}");
            assert_eq!(site["emulated"], false, "{site}");
        }
        for site in of_role("put-inlined-call") {
            assert_eq!(site["calls"], "sync.(*Pool).Put", "{site}");
            assert_eq!(site["emulated"], true, "{site}");
            assert!(
                site["instruction"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("call "),
                "{site}"
            );
        }
        let keep = of_role("get-inlined-call")[1];
        assert!(
            keep["inlined_call"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!(
                    "inlined/main.go:{}",
                    fixture_line("kept = append(kept, GetX())")
                )),
            "{keep}"
        );
    }
}

#[test]
fn stream_shows_inlined_gets_and_puts_in_their_callers() {
    let mut target = Target::start(&fixture("inlined-go1.27"));
    let args = [&X_POOL[..], &["--grep", "main.inlinedRoundTrip"]].concat();
    let tracer = Tracer::stream(target.pid, &args);
    target.round();
    target.round();
    target.exit();
    let finished = tracer.finish();
    assert!(finished.status.success(), "{:?}", finished.stderr);
    let stdout = finished.stdout;
    let line = fixture_line;
    let count = |kind: &str, frames: String| {
        stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(kind) && l.contains(&frames))
            .count()
    };
    // Twenty inlined round trips a round, each Get and Put shown in inlinedRoundTrip.
    let get_frames = format!(
        "main.GetX main.go:{} < main.inlinedRoundTrip main.go:{}",
        line("func GetX() *X"),
        line("x := GetX()")
    );
    let put_frames = format!(
        "main.PutX main.go:{} < main.inlinedRoundTrip main.go:{}",
        line("xPool.Put(x)"),
        line("\tPutX(x)")
    );
    assert_eq!(count("get", get_frames), 40, "{stdout}");
    assert_eq!(count("put", put_frames), 40, "{stdout}");
}

/// A wrapper whose every call was inlined has no body left, only entries in pclntab's inline
/// tree (hugo's `bufferpool.GetBuffer` is one). `--get`/`--put` take its name, as its frames
/// print it, and trace it at its inlined copies with exact counts; `list` lists it.
#[test]
fn wrappers_that_exist_only_inlined_are_traced_by_name() {
    for build in BUILDS {
        let listing = pooltrace_json(&[
            "list",
            "--binary",
            fixture(build).to_str().unwrap_or(""),
            "--format",
            "json",
        ]);
        let listed = (listing["pairs"].as_array().expect("pairs").iter())
            .find(|p| p["get"] == "main.GetZ")
            .unwrap_or_else(|| panic!("{build}: main.GetZ not listed: {listing:#}"));
        assert_eq!(listed["put"], "main.PutZ", "{build}");
        // No body is left to probe: the name is only in the inline tree.
        assert_eq!(listed["get_inlined_only"], true, "{build}: {listed:#}");
        assert_eq!(listed["put_inlined_only"], true, "{build}: {listed:#}");
        assert_eq!(listed["get_calls"], 0, "{build}: {listed:#}");

        let (counts, report, stderr) =
            traced_rounds(build, &["--get", "main.GetZ", "--put", "main.PutZ"]);
        for traced in [
            "pooltrace: main.GetZ (Get) is inlined at 2 call sites: traced there after its call to sync.(*Pool).Get",
            "pooltrace: main.PutZ (Put) is inlined at 1 call site: traced there at its call to sync.(*Pool).Put",
        ] {
            assert!(stderr.iter().any(|l| l == traced), "{build}: no {traced:?} in {stderr:#?}");
        }
        let pool = pool(&report, "main.GetZ");
        assert_eq!(u64_of(&pool["gets"]), counts.get("z_gets"), "{build}");
        assert_eq!(u64_of(&pool["puts"]), counts.get("z_puts"), "{build}");
        assert_eq!(
            u64_of(&pool["outstanding"]),
            counts.get("z_kept"),
            "{build}"
        );
        assert_eq!(u64_of(&pool["unmatched_puts"]), 0, "{build}: {pool:#}");
        let kept = &pool["stacks"][0];
        assert_eq!(
            &functions(kept)[..2],
            ["main.GetZ", "main.zRound"],
            "{build}: {kept:#}"
        );
    }
}
