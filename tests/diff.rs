//! `pooltrace diff` on the JSON reports of two builds of one service, where only the second
//! leaks: the leak is new, and what else changed between the releases is grown, shrunk or
//! gone, each matched across the rebuild by its functions and lines.

use pooltrace_tests::{
    fixture, pooltrace_bin, pooltrace_json, run_pooltrace, source_line, Target, Tracer, Value,
};

const POOL: [&str; 4] = ["--get", "main.(*Pool).Get", "--put", "main.(*Pool).Put"];

/// The final JSON report of two rounds of release `n`, written to `dir`.
fn report_of(release: u32, dir: &std::path::Path) -> std::path::PathBuf {
    let mut target = Target::start(&fixture(&format!("releases-v{release}")));
    let tracer = Tracer::attach(target.pid, &POOL);
    target.round();
    let counts = target.round();
    assert!(counts.get("gets") > counts.get("puts"), "{counts:?}");
    let (status, _) = target.exit();
    assert_eq!(status.code(), Some(3));
    let report = tracer.finish().json();
    let path = dir.join(format!("v{release}.json"));
    std::fs::write(&path, report.to_string()).expect("write report");
    path
}

#[test]
fn the_second_releases_leak_is_new_and_every_other_change_is_classed() {
    let dir = std::env::temp_dir().join(format!("pooltrace-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    let (old, new) = (report_of(1, &dir), report_of(2, &dir));
    let diff = pooltrace_json(&[
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/releases/main.go"),
    )
    .expect("source");
    let changes: Vec<(String, String, u64, Value, Value)> = diff["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| {
            let caller = &p["frames"][1];
            (
                p["status"].as_str().unwrap_or("").to_owned(),
                caller["function"].as_str().unwrap_or("").to_owned(),
                caller["line"].as_u64().unwrap_or(0),
                p["old"]["outstanding"].clone(),
                p["new"]["outstanding"].clone(),
            )
        })
        .collect();
    let at = |needle: &str| source_line(&source, needle);
    let none = Value::Null;
    assert_eq!(
        changes,
        [
            // 10 errors a round, two rounds: 20 buffers never given back.
            (
                "new".into(),
                "main.handle".into(),
                at("b := bufs.Get()"),
                none.clone(),
                20.into()
            ),
            (
                "grown".into(),
                "main.openSession".into(),
                at("sessions = append"),
                3.into(),
                8.into()
            ),
            (
                "shrunk".into(),
                "main.fillCache".into(),
                at("caches = append"),
                10.into(),
                4.into()
            ),
            (
                "gone".into(),
                "main.legacyPath".into(),
                at("legacy = append"),
                2.into(),
                none
            ),
        ]
    );
    // The text form says the same, a line each.
    let text = run_pooltrace(&["diff", old.to_str().unwrap(), new.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    let firsts: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(firsts, ["NEW", "GROWN", "SHRUNK", "GONE"], "{text}");
    // A report compared with itself: nothing changed.
    let same = run_pooltrace(&["diff", old.to_str().unwrap(), old.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&same.stdout),
        "no call path changed\n"
    );
    // Not a report: one line.
    let bad = run_pooltrace(&[
        "diff",
        old.to_str().unwrap(),
        pooltrace_bin().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
