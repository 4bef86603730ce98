//! `pooltrace list` finds the pool-like pairs of a binary, counts their call sites the way
//! objdump sees them and their inlined sites the way the compiler reports them, gives the
//! same answer for a stripped build, and needs no privileges.

use std::{os::unix::process::CommandExt, process::Command};

use pooltrace_tests::{fixture, pooltrace_bin, run_pooltrace, Value};

fn listing(build: &str) -> Value {
    let output = run_pooltrace(&[
        "list",
        "--binary",
        &fixture(build).to_string_lossy(),
        "--format",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON listing")
}

fn pair<'a>(listing: &'a Value, get: &str) -> &'a Value {
    listing["pairs"]
        .as_array()
        .and_then(|pairs| pairs.iter().find(|p| p["get"] == get))
        .unwrap_or_else(|| panic!("no pair {get} in {listing:#}"))
}

/// Direct calls to `function` in the disassembly of the unstripped fixture.
fn objdump_calls(function: &str) -> u64 {
    let output = Command::new("objdump")
        .arg("-d")
        .arg(fixture("poolfix-go1.27"))
        .output()
        .expect("objdump");
    let needle = format!("<{function}>");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains("call") && l.ends_with(&needle))
        .count() as u64
}

#[test]
fn pairs_are_found_with_call_sites_and_inlined_sites() {
    let listing = listing("poolfix-go1.27");
    let buf = pair(&listing, "main.(*BufPool).Get");
    assert_eq!(buf["put"], "main.(*BufPool).Put");
    assert_eq!(buf["get_calls"], objdump_calls("main.(*BufPool).Get"));
    assert_eq!(buf["put_calls"], objdump_calls("main.(*BufPool).Put"));
    let generic = pair(&listing, "main.(*BucketedPool[uint8]).Get");
    assert_eq!(
        generic["get_shape"],
        "main.(*BucketedPool[go.shape.uint8]).Get"
    );
    assert_eq!(
        generic["get_calls"],
        objdump_calls("main.(*BucketedPool[go.shape.uint8]).Get")
    );
    assert_eq!(pair(&listing, "sync.(*Pool).Get")["preset"], "sync");
    let tiny = pair(&listing, "main.(*TinyPool).Get");
    assert_eq!(
        (tiny["get_inlined"].as_u64(), tiny["put_inlined"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn a_stripped_build_lists_the_same_pairs() {
    let full = listing("poolfix-go1.27");
    let stripped = listing("poolfix-go1.27-stripped");
    assert_eq!(full["pairs"], stripped["pairs"]);
}

#[test]
fn listing_needs_no_privileges() {
    let output = Command::new(pooltrace_bin())
        .args([
            "list",
            "--binary",
            &fixture("poolfix-go1.27").to_string_lossy(),
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("main.(*BufPool).Get / main.(*BufPool).Put"));
}
