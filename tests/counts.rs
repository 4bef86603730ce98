//! pooltrace counts every Get and Put exactly, on every build of the fixture: Go 1.27
//! (push rbp prologue), Go 1.19 (sub rsp prologue, `go.shape.T_0` names), PIE, and each of
//! them stripped (functions found through pclntab alone).

use pooltrace_tests::{fixture, pool, u64_of, Target, Tracer, POOLFIX_CHUNKS};

const CHUNK_GET: &str = "main.(*BucketedPool[uint8]).Get";

/// Two rounds under the tracer, then the target exits and pooltrace reports by itself.
fn traced_rounds(build: &str, args: &[&str]) -> (pooltrace_tests::Counts, pooltrace_tests::Value) {
    pooltrace_tests::traced_rounds(build, args, Tracer::attach)
}

fn assert_pointer_pool_exact(build: &str) {
    pooltrace_tests::assert_pointer_pool_exact(build, Tracer::attach);
}

fn assert_generic_pool_exact(build: &str) {
    let (counts, report) = traced_rounds(build, &POOLFIX_CHUNKS);
    let pool = pool(&report, CHUNK_GET);
    // Go 1.19's pclntab elides type arguments: a stripped 1.19 build names it `P[...]`.
    let probed = pool["get_probed"].as_str().unwrap_or("");
    assert!(
        probed.contains("[go.shape.uint8") || probed.contains("[...]"),
        "{pool:#}"
    );
    // Per round 50 direct calls and 30 through the ChunkPool interface on `chunks`, and 12
    // on `otherChunks`: one shape function serves both instances, and every call counts.
    let gets = counts.get("chunk_gets") + counts.get("other_gets");
    let puts = counts.get("chunk_puts") + counts.get("other_puts");
    assert_eq!((u64_of(&pool["gets"]), u64_of(&pool["puts"])), (gets, puts));
    assert_eq!(u64_of(&pool["outstanding"]), gets - puts);
    assert_eq!(u64_of(&pool["unmatched_puts"]), 0);
    // Each instance's leaks are reported under it: chunks leaked through the interface
    // (cap 128, the bucket for 100), otherChunks' through otherRoundTrip (cap 256).
    let stacks = pool["stacks"].as_array().expect("stacks");
    assert_eq!(stacks.len(), 2, "{pool:#}");
    for (caller, instance, leaked, cap) in [
        (
            "main.chunksViaInterface",
            "chunks_addr",
            counts.get("chunk_gets") - counts.get("chunk_puts"),
            128,
        ),
        (
            "main.otherRoundTrip",
            "other_addr",
            counts.get("other_gets") - counts.get("other_puts"),
            256,
        ),
    ] {
        let stack = stacks
            .iter()
            .find(|s| pooltrace_tests::functions(s).contains(&caller.to_owned()))
            .unwrap_or_else(|| panic!("no {caller} path in {pool:#}"));
        assert_eq!(
            stack["receiver"],
            format!("{:#x}", counts.get(instance)),
            "{stack:#}"
        );
        assert_eq!(u64_of(&stack["outstanding"]), leaked);
        assert_eq!(u64_of(&stack["bytes"]), cap * leaked);
    }
}

#[test]
fn receiver_restricts_a_shared_shape_function_to_one_instance() {
    for build in ["poolfix-go1.27", "poolfix-go1.19"] {
        let mut target = Target::start(&fixture(build));
        // A first, untraced round tells where the second pool instance lives.
        let before = target.round();
        let receiver = format!("{:#x}", before.get("other_addr"));
        let mut args = POOLFIX_CHUNKS.to_vec();
        args.extend(["--receiver", &receiver]);
        let tracer = Tracer::attach(target.pid, &args);
        target.round();
        let after = target.round();
        let report = tracer.interrupt().json();
        target.exit();
        let pool = pool(&report, CHUNK_GET);
        let delta = |key: &str| after.get(key) - before.get(key);
        assert_eq!(
            (u64_of(&pool["gets"]), u64_of(&pool["puts"])),
            (delta("other_gets"), delta("other_puts")),
            "{build}"
        );
        let stacks = pool["stacks"].as_array().expect("stacks");
        assert!(!stacks.is_empty(), "{build}: {pool:#}");
        for stack in stacks {
            assert_eq!(stack["receiver"], receiver.as_str(), "{build}");
        }
    }
}

#[test]
fn pointer_pool_counts_are_exact_go1_27() {
    assert_pointer_pool_exact("poolfix-go1.27");
}

#[test]
fn pointer_pool_counts_are_exact_go1_19() {
    assert_pointer_pool_exact("poolfix-go1.19");
}

#[test]
fn pointer_pool_counts_are_exact_pie() {
    assert_pointer_pool_exact("poolfix-go1.27-pie");
}

#[test]
fn pointer_pool_counts_are_exact_go1_27_stripped() {
    assert_pointer_pool_exact("poolfix-go1.27-stripped");
}

#[test]
fn pointer_pool_counts_are_exact_go1_19_stripped() {
    assert_pointer_pool_exact("poolfix-go1.19-stripped");
}

#[test]
fn pointer_pool_counts_are_exact_pie_stripped() {
    assert_pointer_pool_exact("poolfix-go1.27-pie-stripped");
}

#[test]
fn generic_pool_counts_direct_and_interface_calls_stripped() {
    assert_generic_pool_exact("poolfix-go1.27-stripped");
    assert_generic_pool_exact("poolfix-go1.19-stripped");
}

#[test]
fn generic_pool_counts_direct_and_interface_calls_go1_27() {
    assert_generic_pool_exact("poolfix-go1.27");
}

#[test]
fn generic_pool_counts_direct_and_interface_calls_go1_19() {
    assert_generic_pool_exact("poolfix-go1.19");
}

#[test]
fn generic_pool_counts_direct_and_interface_calls_pie() {
    assert_generic_pool_exact("poolfix-go1.27-pie");
}

#[test]
fn generic_shape_function_is_probed_by_its_own_name_too() {
    let (counts, report) = traced_rounds(
        "poolfix-go1.27",
        &[
            "--get",
            "main.(*BucketedPool[go.shape.uint8]).Get",
            "--put",
            "main.(*BucketedPool[go.shape.uint8]).Put",
            "--object",
            "slice-ptr",
        ],
    );
    let pool = pool(&report, "main.(*BucketedPool[go.shape.uint8]).Get");
    // Both instances of the shape.
    assert_eq!(
        u64_of(&pool["gets"]),
        counts.get("chunk_gets") + counts.get("other_gets")
    );
    assert_eq!(
        u64_of(&pool["puts"]),
        counts.get("chunk_puts") + counts.get("other_puts")
    );
}
