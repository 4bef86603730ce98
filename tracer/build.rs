//! Embeds the committed eBPF object, after checking it was built from the sources in this tree.

use std::path::Path;

use tracer_common::source_hash::{
    recorded_hash, sources_hash, HASH_PATH, OBJECT_PATH, SOURCE_DIRS,
};

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let workspace = Path::new(&manifest)
        .parent()
        .expect("tracer/ lives in the workspace");
    for dir in SOURCE_DIRS {
        println!("cargo::rerun-if-changed={}", workspace.join(dir).display());
    }
    println!(
        "cargo::rerun-if-changed={}",
        workspace.join(HASH_PATH).display()
    );

    let object = workspace.join(OBJECT_PATH);
    let actual = match sources_hash(workspace) {
        Ok(hash) => hash,
        Err(e) => fail(&format!("cannot hash the eBPF sources: {e}")),
    };
    match recorded_hash(workspace) {
        Some(recorded) if recorded == actual && object.is_file() => {}
        Some(_) if object.is_file() => fail(&format!(
            "the eBPF sources changed since {OBJECT_PATH} was built; rebuild it with \
             `cargo xtask build-ebpf` (needs nightly, rust-src and bpf-linker, which it installs)"
        )),
        _ => fail(&format!(
            "{OBJECT_PATH} or its source hash is missing; build it with `cargo xtask build-ebpf`"
        )),
    }
    println!(
        "cargo::rustc-env=POOLTRACE_EBPF_OBJECT={}",
        object.display()
    );
}

fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1);
}
