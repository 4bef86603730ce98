//! Which sources the committed eBPF object was built from.
//!
//! The object is committed so that a machine with only stable Rust can build pooltrace; this
//! hash is how the build notices that the kernel sources moved on without it.

use std::{
    fs, io,
    path::{Path, PathBuf},
    string::String,
    vec::Vec,
};

use sha2::{Digest, Sha256};

/// Directories (relative to the workspace root) whose files decide the object's bytes.
pub const SOURCE_DIRS: [&str; 2] = ["tracer-ebpf", "tracer-common"];
/// The committed object, relative to the workspace root.
pub const OBJECT_PATH: &str = "tracer-ebpf/prebuilt/pooltrace-ebpf.o";
/// The hash of the sources it was built from, relative to the workspace root.
pub const HASH_PATH: &str = "tracer-ebpf/prebuilt/pooltrace-ebpf.sources.sha256";

/// SHA-256 over every source file's workspace-relative path and contents, in path order.
/// `prebuilt/` is left out: it is the output, not an input.
pub fn sources_hash(workspace: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        collect(workspace, &workspace.join(dir), &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for relative in &files {
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(fs::read(workspace.join(relative))?);
        hasher.update([0]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| std::format!("{b:02x}"))
        .collect())
}

/// The hash recorded beside the committed object, if any.
pub fn recorded_hash(workspace: &Path) -> Option<String> {
    let text = fs::read_to_string(workspace.join(HASH_PATH)).ok()?;
    Some(String::from(text.trim()))
}

fn collect(workspace: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "prebuilt" || name == "target" || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(workspace, &path, files)?;
        } else if let Ok(relative) = path.strip_prefix(workspace) {
            files.push(relative.to_path_buf());
        }
    }
    Ok(())
}
