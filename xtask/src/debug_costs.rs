//! What the kernel side's diagnostics cost (`POOLTRACE_BENCH_ONLY=debug`): the target's ns per
//! sync.Pool pair under `report` with logging compiled in and off, against the release before
//! it (`POOLTRACE_BENCH_BASELINE`, a pooltrace binary built without aya-log) when given; with
//! `--debug` on a healthy pool (nothing to say); and, on a Get key that faults every time,
//! without and with `--debug` (a message a Get, rate-limited in user space). Alternated, in
//! one run.

use std::path::{Path, PathBuf};

use crate::{
    launch::{compare_reports, Traced, Workload, WORKLOADS},
    Result,
};

/// sync.Pool named by its functions, its object read 3.75 GiB past the interface's data
/// word, above the target's heap: every Get's read faults.
const FAULTING: Workload = Workload {
    mode: "sync",
    pool_args: &[
        "--get",
        "sync.(*Pool).Get",
        "--put",
        "sync.(*Pool).Put",
        "--object",
        "iface",
        "--kind",
        "sync",
        "--get-key",
        "*r1+0xf0000000",
    ],
    get_key: "bx",
    put_key: "cx",
};

pub fn run(pooltrace: &Path, target_bin: &Path) -> Result {
    let mut configs = vec![
        Traced {
            name: "report (logging off)",
            pooltrace: pooltrace.to_owned(),
            workload: &WORKLOADS[0],
            args: Vec::new(),
        },
        Traced {
            name: "report --debug",
            pooltrace: pooltrace.to_owned(),
            workload: &WORKLOADS[0],
            args: vec!["--debug"],
        },
    ];
    if let Some(baseline) = std::env::var_os("POOLTRACE_BENCH_BASELINE") {
        configs.insert(
            1,
            Traced {
                name: "baseline report (no aya-log)",
                pooltrace: PathBuf::from(baseline),
                workload: &WORKLOADS[0],
                args: Vec::new(),
            },
        );
    }
    compare_reports("sync pool, healthy", target_bin, &configs)?;
    let faulting = |name, debug: bool| Traced {
        name,
        pooltrace: pooltrace.to_owned(),
        workload: &FAULTING,
        args: if debug { vec!["--debug"] } else { Vec::new() },
    };
    compare_reports(
        "sync pool, every Get's key read faults",
        target_bin,
        &[
            faulting("report, faulting key", false),
            faulting("report --debug, faulting key", true),
        ],
    )
}
