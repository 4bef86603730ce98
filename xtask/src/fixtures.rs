//! Builds the Go test targets into `target/fixtures`, one file per toolchain and build mode,
//! and the demo service.

use std::path::{Path, PathBuf};

use crate::{exec, tools, workspace, Result};

/// `poolfix` builds: name suffix, which Go, extra `go build` flags.
const POOLFIX_BUILDS: [(&str, Toolchain, &[&str]); 6] = [
    ("go1.27", Toolchain::Current, &[]),
    ("go1.19", Toolchain::Go119, &[]),
    ("go1.27-pie", Toolchain::Current, &["-buildmode=pie"]),
    ("go1.27-stripped", Toolchain::Current, &["-ldflags=-s -w"]),
    ("go1.19-stripped", Toolchain::Go119, &["-ldflags=-s -w"]),
    (
        "go1.27-pie-stripped",
        Toolchain::Current,
        &["-buildmode=pie", "-ldflags=-s -w"],
    ),
];

/// `shapes` builds (a generic pool whose methods exist only as shape functions): what
/// `pooltrace list` must find from symbols, from stripped Go 1.27 names, and from stripped
/// Go 1.19 names with elided type arguments.
const SHAPES_BUILDS: [(&str, Toolchain, &[&str]); 4] = [
    ("go1.27", Toolchain::Current, &[]),
    ("go1.19", Toolchain::Go119, &[]),
    ("go1.27-stripped", Toolchain::Current, &["-ldflags=-s -w"]),
    ("go1.19-stripped", Toolchain::Go119, &["-ldflags=-s -w"]),
];

#[derive(Clone, Copy)]
enum Toolchain {
    Current,
    Go119,
}

impl Toolchain {
    fn pick<'a>(self, current: &'a Path, go119: &'a Path) -> &'a Path {
        match self {
            Self::Current => current,
            Self::Go119 => go119,
        }
    }
}

pub fn dir() -> PathBuf {
    workspace().join("target/fixtures")
}

/// Builds every fixture and the demo service; returns the directory holding them.
pub fn build_all() -> Result<PathBuf> {
    let out = dir();
    std::fs::create_dir_all(&out)?;
    let current = tools::go()?;
    let go119 = tools::go_119()?;
    let source = workspace().join("tests/fixtures/poolfix");
    // The compiler's own account of what it inlined: ground truth for the inlining warnings.
    let decisions = tools::go_command(&current)
        .args(["build", "-o", "/dev/null", "-gcflags=-m"])
        .current_dir(&source)
        .output()?;
    std::fs::write(out.join("poolfix-go1.27.inlining.txt"), decisions.stderr)?;
    for (suffix, toolchain, flags) in POOLFIX_BUILDS {
        let go = toolchain.pick(&current, &go119);
        go_build(go, &source, flags, &out.join(format!("poolfix-{suffix}")))?;
    }
    let shapes = workspace().join("tests/fixtures/shapes");
    for (suffix, toolchain, flags) in SHAPES_BUILDS {
        let go = toolchain.pick(&current, &go119);
        go_build(go, &shapes, flags, &out.join(format!("shapes-{suffix}")))?;
    }
    // Pool wrappers inlined at some call sites and called out of line at others.
    let inlined = workspace().join("tests/fixtures/inlined");
    go_build(&current, &inlined, &[], &out.join("inlined-go1.27"))?;
    go_build(&go119, &inlined, &[], &out.join("inlined-go1.19"))?;
    let busy = workspace().join("tests/fixtures/busy");
    go_build(&current, &busy, &[], &out.join("busy-go1.27"))?;
    go_build(&go119, &busy, &[], &out.join("busy-go1.19"))?;
    // A healthy HTTP server that leaves sync.Pool objects out in three ordinary ways.
    let httppools = workspace().join("tests/fixtures/httppools");
    go_build(&current, &httppools, &[], &out.join("httppools-go1.27"))?;
    go_build(&go119, &httppools, &[], &out.join("httppools-go1.19"))?;
    // Pool pairs at a rate set on its command line: what a budget costs, as CPU time.
    let paced = workspace().join("tests/fixtures/paced");
    go_build(&current, &paced, &[], &out.join("paced-go1.27"))?;
    let thanos = workspace().join("tests/fixtures/thanospool/cmd/thanospool");
    go_build(&current, &thanos, &[], &out.join("thanospool"))?;
    go_build(
        &current,
        &thanos,
        &["-ldflags=-s -w"],
        &out.join("thanospool-stripped"),
    )?;
    // The pool's own books are read by the same offsets whatever the toolchain or symbols.
    for (toolchain, flags, name) in [
        (&go119, &[][..], "thanospool-go1.19"),
        (
            &go119,
            &["-ldflags=-s -w"][..],
            "thanospool-go1.19-stripped",
        ),
    ] {
        go_build(toolchain, &thanos, flags, &out.join(name))?;
    }
    // One service as two releases, the second leaking: what `pooltrace diff` compares.
    let releases = workspace().join("tests/fixtures/releases");
    for release in ["1", "2"] {
        let flags = format!("-ldflags=-X main.release={release}");
        let output = out.join(format!("releases-v{release}"));
        go_build(&current, &releases, &[&flags], &output)?;
    }
    storegw(&out)?;
    Ok(out)
}

/// `go build -o OUT FLAGS .` in `package_dir`.
pub fn go_build(go: &Path, package_dir: &Path, flags: &[&str], output: &Path) -> Result {
    tools::say(&format!("building {}", output.display()));
    exec(
        tools::go_command(go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(output)
            .arg(".")
            .current_dir(package_dir),
    )
}

/// Builds the demo service into `out/storegw`.
pub fn storegw(out: &Path) -> Result<PathBuf> {
    let binary = out.join("storegw");
    go_build(
        &tools::go()?,
        &workspace().join("demo/storegw"),
        &[],
        &binary,
    )?;
    Ok(binary)
}
