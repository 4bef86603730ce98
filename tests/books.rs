//! The pool's own books (`used` and `limit` in the pools file), read from the traced
//! process's memory: what was out before the attach is told from what pooltrace saw, a
//! wrong offset is never shown as a number, and the fill rate forecasts when a leaking pool
//! refuses.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pooltrace_tests::{fixture, pool, Agent, Scratch, Target, Tracer, Value};

const THANOS_GET: &str = "github.com/thanos-io/thanos/pkg/pool.(*BucketedPool[uint8]).Get";
const THANOS_PUT: &str = "github.com/thanos-io/thanos/pkg/pool.(*BucketedPool[uint8]).Put";

/// A pools file for the thanospool fixture's byte pools, whose struct is Thanos':
/// `buckets`, `sizes`, then `maxTotal` (offset 48) and `usedTotal` (56), with `used` as
/// given; Get's `sz` is its first argument after the receiver.
fn thanospool_file(scratch: &Scratch, used: &str) -> String {
    let text = format!(
        "[[pool]]\nget = \"{THANOS_GET}\"\nput = \"{THANOS_PUT}\"\nobject = \"slice-ptr\"\n\
         used = \"{used}\"\nlimit = \"*recv+48\"\nget_request = \"a1\"\n"
    );
    scratch.write("pools.toml", &text);
    scratch.path("pools.toml")
}

/// The instances of every pool in `report`.
fn instances(report: &Value) -> Vec<Value> {
    let pools = report["pools"].as_array().cloned().unwrap_or_default();
    (pools.iter())
        .flat_map(|p| p["instances"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// (used, seen since attach, out before attach) of each instance, smallest first.
fn books(instances: &[Value]) -> Vec<(u64, u64, u64)> {
    let mut books: Vec<(u64, u64, u64)> = instances
        .iter()
        .map(|i| {
            let n = |field: &str| {
                i[field]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{field}: {i:#}"))
            };
            (
                n("used_bytes"),
                n("seen_outstanding_bytes"),
                n("before_attach_bytes"),
            )
        })
        .collect();
    books.sort_unstable();
    books
}

/// The thanospool fixture built by Go 1.27 and Go 1.19, with and without symbols.
const THANOSPOOL_BUILDS: [&str; 4] = [
    "thanospool",
    "thanospool-stripped",
    "thanospool-go1.19",
    "thanospool-go1.19-stripped",
];

#[test]
fn what_was_out_before_the_attach_is_told_from_what_was_seen_after_to_the_byte() {
    let scratch = Scratch::new("books-before");
    let file = thanospool_file(&scratch, "*recv+56");
    // The pools file's offsets, then the thanos preset's: from DWARF, or in a build
    // without it, Thanos' layout confirmed by Get's code.
    let named = ["--pools-file", file.as_str()];
    let preset = ["--pool", "thanos"];
    // Not the preset on stripped Go 1.19, whose pclntab elides the type arguments: its two
    // shapes of `BucketedPool[...]` share one name, the preset probes one of them, and the
    // receiver it reads there is the dictionary (the books then say so, with no number).
    let runs = THANOSPOOL_BUILDS
        .iter()
        .flat_map(|b| [(b, &named), (b, &preset)]);
    for (build, pools) in
        runs.filter(|&(b, p)| !(*b == "thanospool-go1.19-stripped" && p == &preset))
    {
        let mut target = Target::start(&fixture(build));
        // A round keeps every fourth object: 5 of 20 from `chunks` and 2 of 8 from the pool
        // inside `bytes`, each 100 bytes asked in a 128-byte bucket.
        target.round();
        let tracer = Tracer::attach(target.pid, pools);
        target.round();
        let report = tracer.interrupt().json();
        let instances = instances(&report);
        // The preset traces `samples` too: 3 of 12 kept, in 128-element buckets, which
        // usedTotal counts by capacity as pooltrace sizes them.
        let mut expected = vec![(2 * 256, 256, 256), (2 * 640, 640, 640)];
        if pools == &preset {
            expected.insert(1, (2 * 384, 384, 384));
        }
        assert_eq!(
            books(&instances),
            expected,
            "{build} {pools:?}: {instances:#?}"
        );
        // max is 0, Thanos' "no limit": none is shown, and no exhaustion.
        for instance in &instances {
            assert!(
                instance["limit_bytes"].is_null() && instance["exhausts_in_s"].is_null(),
                "{build}: {instance:#}"
            );
        }
        target.exit();
    }
}

#[test]
fn a_wrong_offset_is_said_once_and_never_shown_as_a_number() {
    let scratch = Scratch::new("books-wrong");
    // Offset 8 is the length of `buckets`: 7 size classes, not bytes lent out.
    let file = thanospool_file(&scratch, "*recv+8");
    let mut target = Target::start(&fixture("thanospool"));
    let tracer = Tracer::attach(target.pid, &["--pools-file", &file, "--interval", "1s"]);
    for _ in 0..3 {
        target.round();
        thread::sleep(Duration::from_millis(1100));
    }
    let finished = tracer.interrupt();
    let said: Vec<&String> = (finished.stderr.iter())
        .filter(|l| l.contains("are not shown: used reads 7, under the"))
        .collect();
    // Once per instance, whatever the number of reports.
    assert_eq!(said.len(), 2, "{:#?}", finished.stderr);
    let report = finished.json();
    for instance in instances(&report) {
        assert!(instance["used_bytes"].is_null(), "{instance:#}");
        assert!(instance["before_attach_bytes"].is_null(), "{instance:#}");
        let why = instance["unreadable"].as_str().expect("unreadable");
        assert!(why.contains("do not match this binary's pool"), "{why}");
    }
    target.exit();
}

#[test]
fn the_agent_exports_each_instances_used_bytes_no_limit_where_there_is_none_and_the_sizes() {
    let scratch = Scratch::new("books-agent");
    let file = thanospool_file(&scratch, "*recv+56");
    let mut target = Target::start(&fixture("thanospool"));
    target.round();
    let pid = target.pid.to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--pools-file", &file, "--budget", "0"]);
    agent.expect_attached(target.pid, Duration::from_secs(10));
    target.round();
    let deadline = Instant::now() + Duration::from_secs(15);
    let used = loop {
        let metrics = agent.metrics();
        let mut used: Vec<u64> = (metrics.lines())
            .filter(|l| {
                l.starts_with("pooltrace_pool_used_bytes{") && l.contains("pool_instance=\"0x")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        used.sort_unstable();
        if used == [2 * 256, 2 * 640] || Instant::now() > deadline {
            assert!(
                !metrics.contains("pooltrace_pool_limit_bytes{"),
                "{metrics}"
            );
            assert!(
                !metrics.contains("pooltrace_pool_exhaustion_seconds{"),
                "{metrics}"
            );
            break used;
        }
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(used, [2 * 256, 2 * 640]);
    // The round since attach asked 28 times for 100 bytes, each from a 128-byte bucket.
    let metrics = agent.metrics();
    let value = |family: &str| {
        (metrics.lines())
            .find(|l| l.starts_with(family))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {family} in {metrics}"))
    };
    assert_eq!(value("pooltrace_requested_bytes_total{"), 28 * 100);
    assert_eq!(value("pooltrace_capacity_bytes_total{"), 28 * 128);
    agent.stop();
    target.exit();
}

/// storegw serving with a chunk pool of `max_mib`, and the times at which it printed each
/// status line ("chunk pool X of N MiB in use, R queries refused").
struct Storegw {
    server: std::process::Child,
    load: std::process::Child,
    refused_since: std::sync::mpsc::Receiver<Instant>,
}

impl Storegw {
    fn start(max_mib: u32, seconds: u32) -> Self {
        let storegw = fixture("storegw");
        let mut server = Command::new(&storegw)
            .args(["serve", "-pool-max-mib", &max_mib.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve");
        let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a line").expect("listening");
        let addr = (first.split_whitespace())
            .find(|w| w.starts_with("127.0.0.1:"))
            .expect("address")
            .to_owned();
        // The first status line that counts a refused query: when the pool ran dry.
        let (tell, refused_since) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut told = false;
            for line in lines.map_while(Result::ok) {
                if !told && line.contains("queries refused") && !line.contains(", 0 queries") {
                    told = tell.send(Instant::now()).is_ok();
                }
            }
        });
        let load = Command::new(&storegw)
            .args(["load", "-addr", &addr, "-duration", &format!("{seconds}s")])
            .stdout(Stdio::null())
            .spawn()
            .expect("load");
        Self {
            server,
            load,
            refused_since,
        }
    }
}

impl Drop for Storegw {
    fn drop(&mut self) {
        for child in [&mut self.load, &mut self.server] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn sixty_seconds_after_attach_the_forecast_is_within_a_quarter_of_when_the_pool_refuses() {
    let scratch = Scratch::new("books-forecast");
    // storegw's chunk pool: maxTotal at offset 48, usedTotal at 56.
    let text = "[[pool]]\nget = \"storegw/pool.(*BucketedPool[uint8]).Get\"\n\
                put = \"storegw/pool.(*BucketedPool[uint8]).Put\"\nobject = \"slice-ptr\"\n\
                used = \"*recv+56\"\nlimit = \"*recv+48\"\n";
    scratch.write("pools.toml", text);
    let file = scratch.path("pools.toml");
    let storegw = Storegw::start(400, 240);
    let tracer = Tracer::attach(
        storegw.server.id() as i32,
        &[
            "--pools-file",
            &file,
            "--interval",
            "5s",
            "--duration",
            "60s",
        ],
    );
    thread::sleep(Duration::from_secs(45));
    let finished = tracer.finish();
    let forecast_at = Instant::now();
    let report = finished.json();
    let instance = pool(&report, "storegw/pool.(*BucketedPool[uint8]).Get")["instances"][0].clone();
    let forecast = instance["exhausts_in_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("{instance:#}"));
    let refused = storegw
        .refused_since
        .recv_timeout(Duration::from_secs(400))
        .expect("the pool ran dry");
    // Status lines come every 5 s: the pool ran dry within the 5 s before this one.
    let actual = refused.duration_since(forecast_at).as_secs_f64() - 2.5;
    println!("forecast {forecast:.0} s; the pool refused after {actual:.0} s (± 2.5 s)");
    assert!(
        (forecast - actual).abs() <= 0.25 * actual,
        "forecast {forecast:.0} s, refused after {actual:.0} s: {instance:#}"
    );
}
