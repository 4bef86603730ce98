//! `cargo xtask test`: everything the tests need, then unit and integration tests: the
//! fixtures, the real programs, pooltrace itself, its container image with podman to run
//! it, and tmux, the terminal `pooltrace top` is tested in.

use std::process::Command;

use crate::{ebpf, exec, fixtures, image, tools, workspace, Result};

pub fn run(cargo_test_args: &[String]) -> Result {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the integration tests attach real uprobes: run `cargo xtask test` as root".into(),
        );
    }
    ebpf::ensure_fresh()?;
    let fixtures = fixtures::build_all()?;
    let real = tools::real_programs()?;
    tools::say("building pooltrace");
    let root = workspace();
    exec(
        Command::new("cargo")
            .args(["build", "--package", "pooltrace"])
            .current_dir(&root),
    )?;
    let image = image::build()?;
    let podman = tools::podman()?;
    let tmux = tools::tmux()?;
    tools::say("running unit and integration tests");
    exec(
        Command::new("cargo")
            .args([
                "test",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--no-fail-fast",
            ])
            .args(cargo_test_args)
            .current_dir(&root)
            .env("POOLTRACE_BIN", root.join("target/debug/pooltrace"))
            .env("POOLTRACE_FIXTURES", fixtures)
            .env("POOLTRACE_NATS_SERVER", real.nats_server)
            .env("POOLTRACE_NATS_SERVER_VERSION", tools::NATS_SERVER_VERSION)
            .env("POOLTRACE_CADDY", real.caddy)
            .env("POOLTRACE_PROMETHEUS", real.prometheus)
            .env("POOLTRACE_HUGO", real.hugo)
            .env("POOLTRACE_BPFTOOL", real.bpftool)
            .env("POOLTRACE_IMAGE", image.layout)
            .env("POOLTRACE_IMAGE_TAG", image.tag)
            .env("POOLTRACE_PODMAN", podman.podman)
            .env("POOLTRACE_RUNC", podman.runc)
            .env("POOLTRACE_TMUX", tmux)
            .env("POOLTRACE_GO", tools::go()?)
            .env("POOLTRACE_GOCACHE", tools::tools_dir().join("go-cache")),
    )
}
