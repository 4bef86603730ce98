//! What sizes cost (`POOLTRACE_BENCH_ONLY=sizes`): the target's ns per Get/Put pair under
//! `report` with and without `--get-request`, alternated in one run, for a generic pool
//! (Thanos' shape: its Get's entry is probed for the receiver anyway) and for a plain method
//! (Prometheus' shape: reading the size asked for adds an entry probe).

use std::path::Path;

use crate::{
    launch::{compare_reports, Traced, Workload, WORKLOADS},
    Result,
};

/// Prometheus' shape; the generic pool is the overhead section's `bucketed`.
const BYTE_POOL: Workload = Workload {
    mode: "bytes",
    pool_args: &[
        "--get",
        "main.(*BytePool).Get",
        "--put",
        "main.(*BytePool).Put",
        "--object",
        "slice",
    ],
    get_key: "ax",
    put_key: "bx",
};

pub fn run(pooltrace: &Path, target_bin: &Path) -> Result {
    for pool in [&WORKLOADS[1], &BYTE_POOL] {
        with_and_without(pooltrace, target_bin, pool)?;
    }
    Ok(())
}

fn with_and_without(pooltrace: &Path, target_bin: &Path, pool: &'static Workload) -> Result {
    let config = |name, args| Traced {
        name,
        pooltrace: pooltrace.to_owned(),
        workload: pool,
        args,
    };
    compare_reports(
        &format!("{} pool (Get(sz int)) under report", pool.mode),
        target_bin,
        &[
            config("without --get-request", Vec::new()),
            config("with --get-request a1", vec!["--get-request", "a1"]),
        ],
    )
}
