//! `--pool thanos` finds every instantiation of the generic BucketedPool[T] and the older
//! BucketedBytes, in a model of Thanos' pkg/pool built under Thanos' module path (so with
//! the same symbol names), stripped or not, and counts each exactly.

use pooltrace_tests::{fixture, pool, u64_of, Target, Tracer};

const PKG: &str = "github.com/thanos-io/thanos/pkg/pool.";

#[test]
fn thanos_preset_traces_every_instantiation_and_bucketed_bytes() {
    for build in ["thanospool", "thanospool-stripped"] {
        let mut target = Target::start(&fixture(build));
        let tracer = Tracer::attach(target.pid, &["--pool", "thanos"]);
        target.round();
        let counts = target.round();
        let report = tracer.interrupt().json();
        target.exit();
        assert_eq!(
            report["pools"].as_array().map(Vec::len),
            Some(3),
            "{build}: {report:#}"
        );
        // BucketedBytes lends from a BucketedPool[byte], so the uint8 shape sees both.
        let bytes_shape = pool(
            &report,
            &format!("{PKG}(*BucketedPool[go.shape.uint8]).Get"),
        );
        let struct_shape = pool(
            &report,
            &format!("{PKG}(*BucketedPool[go.shape.struct {{ main.t int64; main.v int64 }}]).Get"),
        );
        let bucketed_bytes = pool(&report, &format!("{PKG}(*BucketedBytes).Get"));
        let pairs = [
            (
                bytes_shape,
                counts.get("chunks_gets") + counts.get("bytes_gets"),
                counts.get("chunks_puts") + counts.get("bytes_puts"),
            ),
            (
                struct_shape,
                counts.get("samples_gets"),
                counts.get("samples_puts"),
            ),
            (
                bucketed_bytes,
                counts.get("bytes_gets"),
                counts.get("bytes_puts"),
            ),
        ];
        for (pool, gets, puts) in pairs {
            assert_eq!(
                (u64_of(&pool["gets"]), u64_of(&pool["puts"])),
                (gets, puts),
                "{build}: {pool:#}"
            );
            assert_eq!(u64_of(&pool["outstanding"]), gets - puts);
        }
        // Sizes come from the slices' capacity: 100 bytes land in the 128 bucket.
        assert_eq!(
            u64_of(&bucketed_bytes["outstanding_bytes"]),
            128 * u64_of(&bucketed_bytes["outstanding"])
        );
    }
}

#[test]
fn a_preset_missing_from_the_binary_is_named() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let output = pooltrace_tests::run_pooltrace(&[
        "report",
        "--pid",
        &target.pid.to_string(),
        "--pool",
        "nats",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        format!(
            "pooltrace: error: --pool nats: none of its pools is in {} (see `pooltrace list`)",
            fixture("poolfix-go1.27").display()
        )
    );
}
