//! `cargo xtask image`: the container image the top-level `Containerfile` describes, made
//! without a container engine, and with no network once cargo has the crates and umoci is
//! installed: pooltrace built statically for x86_64-unknown-linux-musl (the eBPF object
//! embedded by tracer/build.rs, as in every build), checked to be static, then packed alone
//! into an OCI image layout under `target/image/` with Debian's umoci. Dates come from
//! `SOURCE_DATE_EPOCH`, or else the commit, so one commit and one binary give one digest.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use object::{
    elf,
    read::elf::{ElfFile64, FileHeader, ProgramHeader},
    Endianness, Object,
};

use crate::{ebpf, exec, tools, workspace, Result};

/// The Rust target of the image's binary: static, with musl's libc linked in.
const TARGET: &str = "x86_64-unknown-linux-musl";
/// Where the binary sits in the image (the Containerfile's COPY and ENTRYPOINT).
const BINARY_IN_IMAGE: &str = "/usr/local/bin/pooltrace";
/// The image's environment: its one directory of programs.
const IMAGE_PATH: &str = "PATH=/usr/local/bin";
/// The image layout, under the workspace.
const LAYOUT: &str = "target/image/pooltrace-oci";

/// A built image: `oci:LAYOUT:TAG` names it to skopeo and podman.
pub struct Image {
    pub layout: PathBuf,
    pub tag: String,
}

/// `cargo xtask image`.
pub fn run() -> Result {
    let started = std::time::Instant::now();
    let image = build()?;
    let relative = image
        .layout
        .strip_prefix(workspace())
        .unwrap_or(&image.layout)
        .display()
        .to_string();
    let tag = &image.tag;
    tools::say(&format!(
        "built the image oci:{relative}:{tag} in {:.0?} ({} bytes to push)",
        started.elapsed(),
        blobs_size(&image.layout)?
    ));
    println!(
        "image: oci:{relative}:{tag}\n\
         push it (skopeo: `apt-get install skopeo`), then name it in deploy/daemonset.yaml:\n  \
         skopeo copy oci:{relative}:{tag} docker://REGISTRY/pooltrace:{tag}"
    );
    Ok(())
}

/// Builds the static binary and packs it into `target/image/pooltrace-oci`, tagged with
/// pooltrace's version.
pub fn build() -> Result<Image> {
    ebpf::ensure_fresh()?;
    let binary = static_binary()?;
    let root = workspace();
    let layout = root.join(LAYOUT);
    let tag = pooltrace_version()?;
    let epoch = source_date_epoch()?;
    let created = rfc3339(epoch);
    let umoci = tools::umoci()?;
    tools::say(&format!("packing {} with umoci", layout.display()));
    // From nothing each time: the layout holds this build alone.
    let bundle = layout.with_file_name("bundle");
    for dir in [&layout, &bundle] {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
    }
    let image = format!("{}:{tag}", layout.display());
    let umoci_run = |args: &[&str]| exec(Command::new(&umoci).args(args));
    umoci_run(&["init", "--layout", &layout.to_string_lossy()])?;
    umoci_run(&["new", "--image", &image])?;
    // Unpack the empty image, add the binary to its root filesystem, repack it as one layer.
    // (Debian's umoci 0.4.7 `insert` writes a tar stream without its end: umoci#436.)
    let rootless: &[&str] = if is_root() { &[] } else { &["--rootless"] };
    let bundle_arg = bundle.to_string_lossy().into_owned();
    umoci_run(&[&["unpack"], rootless, &["--image", &image, &bundle_arg]].concat())?;
    let rootfs = bundle.join("rootfs");
    let in_rootfs = rootfs.join(BINARY_IN_IMAGE.trim_start_matches('/'));
    fs::create_dir_all(
        in_rootfs
            .parent()
            .ok_or("the binary's path has a directory")?,
    )?;
    fs::copy(&binary, &in_rootfs)?;
    fix_modes_and_times(&rootfs, SystemTime::UNIX_EPOCH + Duration::from_secs(epoch))?;
    umoci_run(
        &[
            &["repack"],
            rootless,
            &[
                "--image",
                &image,
                "--history.created",
                &created,
                "--history.created_by",
                "cargo xtask image",
                &bundle_arg,
            ],
        ]
        .concat(),
    )?;
    fs::remove_dir_all(&bundle)?;
    let mut config: Vec<String> = [
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        BINARY_IN_IMAGE,
        // For a `command: [pooltrace]` (the DaemonSet's), which the runtime looks up.
        "--config.env",
        IMAGE_PATH,
        // Root, as the DaemonSet runs it (with four capabilities, not all of root's).
        "--config.user",
        "0:0",
        "--created",
        &created,
        "--architecture",
        "amd64",
        "--os",
        "linux",
        // The layer's history entry says what made the image; this adds no layer.
        "--no-history",
    ]
    .map(str::to_owned)
    .to_vec();
    for (key, value) in labels(&tag, &created)? {
        config.extend(["--config.label".to_owned(), format!("{key}={value}")]);
    }
    exec(Command::new(&umoci).args(&config))?;
    umoci_run(&["gc", "--layout", &layout.to_string_lossy()])?;
    Ok(Image { layout, tag })
}

/// The image's `org.opencontainers.image.*` labels (the Containerfile's LABEL lines).
fn labels(version: &str, created: &str) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("org.opencontainers.image.title", "pooltrace".to_owned()),
        (
            "org.opencontainers.image.description",
            "Finds object-pool leaks in running Go programs with eBPF uprobes".to_owned(),
        ),
        ("org.opencontainers.image.version", version.to_owned()),
        ("org.opencontainers.image.revision", revision()?),
        ("org.opencontainers.image.created", created.to_owned()),
        (
            "org.opencontainers.image.licenses",
            "MIT OR Apache-2.0".to_owned(),
        ),
    ])
}

/// `cargo build --release` of pooltrace for musl, checked to need no loader or library.
fn static_binary() -> Result<PathBuf> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        tools::say(&format!("adding the Rust target {TARGET}"));
        exec(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    let gcc = tools::musl_gcc()?;
    tools::say(&format!("building pooltrace (release) for {TARGET}"));
    let root = workspace();
    exec(
        Command::new("cargo")
            .args(["build", "--locked", "--release", "--package", "pooltrace"])
            .args(["--target", TARGET])
            .env("CC_x86_64_unknown_linux_musl", gcc)
            .current_dir(&root),
    )?;
    let binary = root.join(format!("target/{TARGET}/release/pooltrace"));
    check_static(&binary)?;
    Ok(binary)
}

/// Fails unless `binary` is an x86-64 ELF executable with no program interpreter
/// (PT_INTERP) and no shared library it needs (DT_NEEDED): in an image with nothing else,
/// the kernel runs it by itself.
fn check_static(binary: &Path) -> Result {
    let data = fs::read(binary)?;
    let file = ElfFile64::<Endianness>::parse(&*data)?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(format!("{} is not x86-64", binary.display()).into());
    }
    let endian = file.endian();
    for segment in file.elf_header().program_headers(endian, &*data)? {
        if segment.p_type(endian) == elf::PT_INTERP {
            return Err(format!("{} needs a dynamic loader (PT_INTERP)", binary.display()).into());
        }
        for entry in segment.dynamic(endian, &*data)?.unwrap_or(&[]) {
            if entry.d_tag.get(endian) == u64::from(elf::DT_NEEDED) {
                return Err(
                    format!("{} needs a shared library (DT_NEEDED)", binary.display()).into(),
                );
            }
        }
    }
    tools::say(&format!(
        "{} is static: no PT_INTERP, no DT_NEEDED",
        binary.display()
    ));
    Ok(())
}

/// Every file and directory of the root filesystem dated `time`, directories 0755 and the
/// binary 0755 whatever the umask: the layer's bytes depend on the binary alone.
fn fix_modes_and_times(dir: &Path, time: SystemTime) -> Result {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            fix_modes_and_times(&path, time)?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        set_times(&path, time)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    set_times(dir, time)
}

fn set_times(path: &Path, time: SystemTime) -> Result {
    let times = fs::FileTimes::new().set_accessed(time).set_modified(time);
    Ok(fs::File::open(path)?.set_times(times)?)
}

/// pooltrace's version, from its manifest: the image's tag.
fn pooltrace_version() -> Result<String> {
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(workspace())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    metadata["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|p| p["name"] == "pooltrace"))
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| "cargo metadata lists no pooltrace".into())
}

/// `SOURCE_DATE_EPOCH` if set, else the time of the commit checked out.
fn source_date_epoch() -> Result<u64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return Ok(value
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={value} is not a number of seconds"))?);
    }
    Ok(git(&["log", "-1", "--format=%ct"])?.parse()?)
}

/// The commit checked out, `-dirty` if tracked files differ from it.
fn revision() -> Result<String> {
    let commit = git(&["rev-parse", "HEAD"])?;
    let changes = git(&["status", "--porcelain", "--untracked-files=no"])?;
    Ok(if changes.is_empty() {
        commit
    } else {
        commit + "-dirty"
    })
}

fn git(args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(workspace())
        .output()?;
    if !output.status.success() {
        return Err(format!("git {} failed", args.join(" ")).into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The bytes a push uploads: every blob of the layout.
fn blobs_size(layout: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(layout.join("blobs/sha256"))? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Seconds since the epoch as an RFC 3339 UTC time, `1970-01-01T00:00:00Z`.
fn rfc3339(epoch: u64) -> String {
    let (days, seconds) = (epoch / 86_400, epoch % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn epoch_seconds_are_written_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
