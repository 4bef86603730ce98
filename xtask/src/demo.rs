//! `cargo xtask demo`: the leaking store-gateway under load, with pooltrace attached.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
};

use crate::{ebpf, exec, fixtures, tools, workspace, Result};

const TRACE_SECONDS: u32 = 30;
const GET: &str = "storegw/pool.(*BucketedPool[uint8]).Get";
const PUT: &str = "storegw/pool.(*BucketedPool[uint8]).Put";

/// Builds the demo service into `out/storegw`.
pub fn build(out: &Path) -> Result<PathBuf> {
    let binary = out.join("storegw");
    fixtures::go_build(
        &tools::go()?,
        &workspace().join("demo/storegw"),
        &[],
        &binary,
    )?;
    Ok(binary)
}

pub fn run() -> Result {
    ebpf::ensure_fresh()?;
    let out = fixtures::dir();
    std::fs::create_dir_all(&out)?;
    let storegw = build(&out)?;
    tools::say("building pooltrace");
    let root = workspace();
    exec(
        Command::new("cargo")
            .args(["build", "--quiet", "--package", "pooltrace"])
            .current_dir(&root),
    )?;

    tools::say("starting storegw: its streaming Series path forgets to Close on errors");
    let mut server = Guard(
        Command::new(&storegw)
            .arg("serve")
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let addr = listen_address(&mut server.0, true)?;
    tools::say(&format!("starting the load generator against {addr}"));
    let _load = Guard(
        Command::new(&storegw)
            .args([
                "load",
                "-addr",
                &addr,
                "-duration",
                &format!("{}s", TRACE_SECONDS + 10),
            ])
            .spawn()?,
    );
    tools::say(&format!("attaching pooltrace for {TRACE_SECONDS} s"));
    let pid = server.0.id().to_string();
    let duration = format!("{TRACE_SECONDS}s");
    exec(Command::new(root.join("target/debug/pooltrace")).args([
        "report",
        "--pid",
        &pid,
        "--get",
        GET,
        "--put",
        PUT,
        "--object",
        "slice-ptr",
        "--interval",
        "10s",
        "--min-age",
        "2s",
        "--duration",
        &duration,
        "--top",
        "3",
    ]))?;
    tools::say("stopping storegw and the load generator");
    Ok(())
}

/// Reads storegw's "listening on ADDR" line, then reads the rest of its output (echoing it
/// with `echo`), so that storegw never dies of SIGPIPE.
pub fn listen_address(server: &mut Child, echo: bool) -> Result<String> {
    let stdout = server.stdout.take().ok_or("storegw stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().ok_or("storegw exited before listening")??;
    if echo {
        println!("{first}");
    }
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .ok_or_else(|| format!("unexpected first line from storegw: {first}"))?
        .to_owned();
    thread::spawn(move || {
        lines
            .map_while(std::result::Result::ok)
            .filter(|_| echo)
            .for_each(|l| println!("{l}"))
    });
    Ok(addr)
}

/// Kills the child when the demo (or the bench's soak) ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
