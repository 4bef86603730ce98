//! `pooltrace stream` prints every Get and Put of the fixture's known sequence, with the
//! callers, and its filters (by frame text, by age at Put) keep exactly what they promise.

use pooltrace_tests::{fixture, Counts, Target, Tracer};

/// Streams two rounds of the fixture with `args`; the event lines and the fixture's counts.
fn stream(args: &[&str]) -> (Vec<String>, Counts) {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let pool = [
        "--get",
        "main.(*BufPool).Get",
        "--put",
        "main.(*BufPool).Put",
    ];
    let tracer = Tracer::stream(target.pid, &[&pool[..], args].concat());
    target.round();
    let counts = target.round();
    target.exit();
    let finished = tracer.finish();
    assert!(finished.status.success(), "{:?}", finished.stderr);
    assert!(
        finished.stderr[0].starts_with("pooltrace: streaming"),
        "{:?}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l.ends_with(" lost") && l.contains(" 0 lost")),
        "{:?}",
        finished.stderr
    );
    (finished.stdout.lines().map(str::to_owned).collect(), counts)
}

#[test]
fn every_get_and_put_of_the_fixture_is_streamed_with_its_callers() {
    let (lines, counts) = stream(&[]);
    let gets = lines.iter().filter(|l| l.contains(" get ")).count() as u64;
    let puts = lines.iter().filter(|l| l.contains(" put ")).count() as u64;
    assert_eq!(
        (gets, puts),
        (counts.get("buf_gets"), counts.get("buf_puts"))
    );
    // leakyHandler takes 7 objects a round, each shown with its callers.
    let leaky: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" get ") && l.contains("main.leakyHandler main.go:"))
        .collect();
    assert_eq!(leaky.len(), 14);
    assert!(leaky.iter().all(|l| l.contains("< main.round main.go:")
        && l.contains("obj=0x")
        && l.contains("g=0x")));
    // balancedHandler gives back what it takes, and the age is shown at Put.
    assert!(lines
        .iter()
        .any(|l| l.contains(" put ") && l.contains("age=") && l.contains("main.balancedHandler")));
}

#[test]
fn filters_keep_only_matching_frames_and_old_objects() {
    let (lines, _) = stream(&["--grep", "main.leakyHandler"]);
    assert_eq!(lines.len(), 14, "{lines:?}");
    let (lines, _) = stream(&["--min-age", "1h"]);
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn a_double_put_is_streamed_as_its_own_event() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let tracer = Tracer::stream(
        target.pid,
        &[
            "--get",
            "main.(*BufPool).Get",
            "--put",
            "main.(*BufPool).Put",
            "--double-puts",
        ],
    );
    target.send("double");
    target.expect_line("counts");
    target.exit();
    let stdout = tracer.finish().stdout;
    let kinds: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(kinds, ["get", "put", "double-put"], "{stdout}");
    let double = stdout.lines().nth(2).unwrap_or("");
    assert!(double.contains("already back in the pool"), "{double}");
    assert!(double.contains("main.retryRelease"), "{double}");
}
