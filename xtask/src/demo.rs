//! `cargo xtask demo`: the leaking store-gateway under load, with pooltrace attached.

use std::process::{Command, Stdio};

use crate::{
    ebpf, exec, fixtures,
    launch::{listen_address, Guard},
    tools, workspace, Result,
};

const TRACE_SECONDS: u32 = 30;
const GET: &str = "storegw/pool.(*BucketedPool[uint8]).Get";
const PUT: &str = "storegw/pool.(*BucketedPool[uint8]).Put";

pub fn run() -> Result {
    ebpf::ensure_fresh()?;
    let out = fixtures::dir();
    std::fs::create_dir_all(&out)?;
    let storegw = fixtures::storegw(&out)?;
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
        // Get(sz int): what each path asked for, against the bucket it was handed.
        "--get-request",
        "a1",
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
