//! The committed eBPF object: rebuild it from source, or check it matches the sources.

use std::{fs, process::Command};

use tracer_common::source_hash::{recorded_hash, sources_hash, HASH_PATH, OBJECT_PATH};

use crate::{exec, tools, workspace, Result};

/// Whether the committed object was built from the sources in the tree.
pub fn is_fresh() -> Result<bool> {
    let root = workspace();
    Ok(root.join(OBJECT_PATH).is_file() && recorded_hash(&root) == Some(sources_hash(&root)?))
}

/// `cargo xtask build-ebpf`: builds with nightly + bpf-linker, commits nothing, but writes
/// the object and its source hash where the build embeds them from.
pub fn build() -> Result<()> {
    let bin = tools::ebpf_toolchain()?;
    let root = workspace();
    let target_dir = root.join("target/ebpf");
    tools::say("building tracer-ebpf for bpfel-unknown-none");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    exec(
        Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "build",
                "--package",
                "tracer-ebpf",
                "--release",
            ])
            .args([
                "-Z",
                "build-std=core",
                "--target",
                "bpfel-unknown-none",
                "--target-dir",
            ])
            .arg(&target_dir)
            .current_dir(&root)
            .env("PATH", path)
            // The outer cargo (stable) must not leak into the nightly build.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO"),
    )?;
    let built = target_dir.join("bpfel-unknown-none/release/pooltrace-ebpf");
    fs::create_dir_all(root.join(OBJECT_PATH).parent().ok_or("bad object path")?)?;
    fs::copy(&built, root.join(OBJECT_PATH))?;
    fs::write(root.join(HASH_PATH), sources_hash(&root)? + "\n")?;
    tools::say(&format!("wrote {OBJECT_PATH} and {HASH_PATH}"));
    Ok(())
}

/// Rebuilds a stale object when this machine can; in CI a stale object is an error, since
/// the commit under test must carry the object its sources produce.
pub fn ensure_fresh() -> Result<()> {
    if is_fresh()? {
        return Ok(());
    }
    if std::env::var_os("CI").is_some() {
        return Err(format!(
            "{OBJECT_PATH} is stale: the eBPF sources changed since it was built. Run \
             `cargo xtask build-ebpf` and commit the object and {HASH_PATH}."
        )
        .into());
    }
    tools::say("the eBPF sources changed since the committed object was built; rebuilding it");
    build()
}
