//! The demo does what the README promises: under load, pooltrace's top call path is the
//! leaking streaming path, with Get's immediate caller, and the healthy Series path holds
//! no old objects.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use pooltrace_tests::{fixture, functions, pool, u64_of, Tracer};

const GET: &str = "storegw/pool.(*BucketedPool[uint8]).Get";
const PUT: &str = "storegw/pool.(*BucketedPool[uint8]).Put";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_reports_the_leaking_stream_path_first_and_not_the_healthy_one() {
    let storegw = fixture("storegw");
    let mut server = Killed(
        Command::new(&storegw)
            .arg("serve")
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve"),
    );
    let mut stdout = BufReader::new(server.0.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("listening line");
    // Keep reading, or storegw's next status line dies of SIGPIPE.
    std::thread::spawn(move || stdout.lines().for_each(drop));
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .expect("address")
        .to_owned();
    let _load = Killed(
        Command::new(&storegw)
            .args(["load", "-addr", &addr, "-duration", "20s"])
            .stdout(Stdio::null())
            .spawn()
            .expect("load"),
    );

    let tracer = Tracer::attach(
        server.0.id() as i32,
        &[
            "--get",
            GET,
            "--put",
            PUT,
            "--object",
            "slice-ptr",
            "--min-age",
            "2s",
            "--duration",
            "12s",
        ],
    );
    let finished = tracer.finish();
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l.contains("--duration reached")),
        "{:?}",
        finished.stderr
    );
    let report = finished.json();
    let pool = pool(&report, GET);
    let stacks = pool["stacks"].as_array().expect("stacks");
    let top = functions(&stacks[0]);
    assert_eq!(
        top[0], "storegw/pool.(*BucketedPool[go.shape.uint8]).Get",
        "{top:?}"
    );
    assert_eq!(top[1], "storegw/store.(*bucketChunkReader).save", "{top:?}");
    assert!(
        top.iter()
            .any(|f| f == "storegw/store.(*BucketStore).SeriesStream"),
        "{top:?}"
    );
    assert!(u64_of(&stacks[0]["collected"]) + u64_of(&stacks[0]["outstanding"]) > 0);
    for stack in stacks {
        let frames = functions(stack);
        assert!(
            !frames
                .iter()
                .any(|f| f == "storegw/store.(*BucketStore).Series"),
            "the healthy path has objects older than 2 s: {stack:#}"
        );
    }
}
