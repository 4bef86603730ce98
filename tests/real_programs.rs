//! pooltrace on real Go programs, all on loopback and all stopped afterwards: nats-server
//! (Go 1.27, .symtab), Caddy (Go 1.26, stripped) and Debian's Prometheus (Go 1.19, cgo,
//! externally linked, stripped). Each is put under load first, then attached by name
//! (preset) and detached while the load runs, several times: its Gets and Puts are counted,
//! frames are symbolized to functions it is known to have, with file:line, no attach finds a
//! leak in these healthy programs, and each still answers afterwards. One more attach traces
//! each through at least 20 tracing windows, which must not invent a leak either. Debian's
//! hugo (Go 1.19, stripped) is traced through a buffer-pool wrapper that exists only inlined.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use pooltrace_harness::caddy_serving_gzip;
use pooltrace_tests::{
    functions, pool, pooltrace_json, real_program, run_pooltrace, suspected_leaks, u64_of, Tracer,
    Value,
};

/// Kills and reaps a started program when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(command: &mut Command) -> Running {
    Running(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start program"),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The status code and body of `GET path` over HTTP/1.0.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    (status, text)
}

/// wrk for `seconds` against a loopback URL, with keep-alive connections.
fn wrk(url: &str, seconds: u32, header: &str) -> Running {
    start(Command::new("wrk").args(["-t2", "-c8", &format!("-d{seconds}s"), "-H", header, url]))
}

/// Attaches while the program is under load, detaches while it still is: `attaches` times,
/// each traced for `each`. The reports, in order.
fn attach_repeatedly(pid: u32, pools: &[&str], attaches: usize, each: Duration) -> Vec<Value> {
    let duration = format!("{}ms", each.as_millis());
    let mut args = pools.to_vec();
    args.extend(["--duration", &duration, "--top", "1000"]);
    (0..attaches)
        .map(|_| Tracer::attach(pid as i32, &args).finish().json())
        .collect()
}

/// One attach under fast tracing windows while the load runs: 12 s of 500 ms cycles, at
/// least 20 windows.
fn attach_in_windows(pid: u32, pools: &[&str]) -> Value {
    let mut args = pools.to_vec();
    args.extend(["--window", "200ms", "--grace", "200ms", "--period", "500ms"]);
    args.extend(["--duration", "12s", "--top", "1000"]);
    let report = Tracer::attach(pid as i32, &args).finish().json();
    let opened = u64_of(&report["windows"]["opened"]);
    assert!(opened >= 20, "only {opened} windows: {}", report["windows"]);
    report
}

/// The version `cargo xtask test` installed a real program at (its pin lives in xtask).
fn pinned_version(variable: &str) -> String {
    std::env::var(variable)
        .unwrap_or_else(|_| panic!("{variable} is not set: run `cargo xtask test`"))
}

/// No attach to a healthy program may score a call path as a likely leak, or book an object
/// of a counting pool as dropped without a Put. These programs use `sync.Pool` as its contract
/// allows: an object they drop there and Go collects is lost reuse, not a leak (seen once in
/// Prometheus).
fn assert_no_leak_found(reports: &[Value]) {
    let found: Vec<String> = (reports.iter().enumerate())
        .flat_map(|(attach, report)| {
            suspected_leaks(report, true)
                .into_iter()
                .map(move |s| format!("attach {attach}: {s}"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "leaks found in a healthy program:\n{}",
        found.join("\n")
    );
}

/// In all the reports, every stack's frames are named and placed; at least one frame is a
/// function of the program itself (`prefix`) with its file and line.
fn assert_frames_symbolized(reports: &[Value], prefix: &str) {
    let stacks: Vec<&Value> = reports
        .iter()
        .flat_map(|report| report["pools"].as_array().expect("pools"))
        .filter_map(|p| p["stacks"].as_array())
        .flatten()
        .collect();
    assert!(
        !stacks.is_empty(),
        "no call path held an object in any report: {reports:#?}"
    );
    let frames: Vec<&Value> = stacks
        .iter()
        .flat_map(|s| s["frames"].as_array().expect("frames"))
        .collect();
    for frame in &frames {
        let name = frame["function"].as_str().unwrap_or("");
        assert!(
            !name.is_empty() && !name.starts_with("0x"),
            "unsymbolized frame {frame}"
        );
    }
    assert!(
        frames.iter().any(|f| {
            f["function"].as_str().unwrap_or("").starts_with(prefix)
                && f["file"].as_str().is_some_and(|file| file.ends_with(".go"))
                && f["line"].as_u64().is_some_and(|line| line > 0)
        }),
        "no frame of {prefix} with file:line in {reports:#?}"
    );
}

#[test]
fn nats_server_under_publish_subscribe_load() {
    let port = free_port();
    let server = start(Command::new(real_program("POOLTRACE_NATS_SERVER")).args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]));
    wait_for_port(port);
    let connect = || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats");
        let mut info = [0u8; 4096];
        let _ = stream.read(&mut info);
        stream
            .write_all(b"CONNECT {\"verbose\":false}\r\n")
            .expect("CONNECT");
        stream
    };
    // One subscriber keeps up; another reads nothing, so the server holds its pending
    // messages in pooled buffers (they come back when it goes). Attaches shorter than the
    // 1 s floor of the age evidence keep those held buffers from looking stuck.
    let mut subscriber = connect();
    subscriber.write_all(b"SUB load 1\r\n").expect("SUB");
    let draining = thread::spawn(move || {
        let mut sink = [0u8; 65536];
        let _ = subscriber.set_read_timeout(Some(Duration::from_secs(2)));
        while matches!(subscriber.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut slow = connect();
    slow.write_all(b"SUB load 2\r\n").expect("SUB");
    let mut publisher = connect();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let publishing = thread::spawn(move || {
        let message = [b"PUB load 256\r\n".as_slice(), &[b'x'; 256], b"\r\n"].concat();
        while !stopped.load(Ordering::Relaxed) {
            if publisher.write_all(&message.repeat(20)).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    thread::sleep(Duration::from_millis(300));

    let pools = ["--pool", "nats", "--pool", "sync"];
    let mut reports = attach_repeatedly(server.0.id(), &pools, 5, Duration::from_millis(900));
    reports.push(attach_in_windows(server.0.id(), &pools));
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.join();
    let _ = draining.join();
    assert_no_leak_found(&reports);
    let report = &reports[reports.len() - 1];
    let nats = pool(report, "github.com/nats-io/nats-server/v2/server.nbPoolGet");
    assert!(
        u64_of(&nats["gets"]) > 100 && u64_of(&nats["puts"]) > 0,
        "{nats:#}"
    );
    assert!(u64_of(&pool(report, "sync.(*Pool).Get")["gets"]) > 100);
    assert!(report["module"].as_str().is_some_and(|m| m
        == format!(
            "github.com/nats-io/nats-server/v2 v{}",
            pinned_version("POOLTRACE_NATS_SERVER_VERSION")
        )));
    assert_frames_symbolized(&reports, "github.com/nats-io/nats-server/v2/server.");

    let mut client = connect();
    client.write_all(b"PING\r\n").expect("PING");
    let mut reply = [0u8; 6];
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client.read_exact(&mut reply).expect("PONG");
    assert_eq!(&reply, b"PONG\r\n");
    drop(slow);
}

#[test]
fn caddy_serving_gzip_files_under_load() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pooltrace-caddy-{port}"));
    let mut command =
        caddy_serving_gzip(&real_program("POOLTRACE_CADDY"), &dir, port).expect("write the site");
    let caddy = start(&mut command);
    wait_for_port(port);
    // Runs past the attaches; stopped when dropped.
    let load = wrk(
        &format!("http://127.0.0.1:{port}/"),
        60,
        "Accept-Encoding: gzip",
    );
    thread::sleep(Duration::from_millis(300));

    let mut reports = attach_repeatedly(
        caddy.0.id(),
        &["--pool", "sync"],
        5,
        Duration::from_millis(1500),
    );
    reports.push(attach_in_windows(caddy.0.id(), &["--pool", "sync"]));
    drop(load);
    assert_no_leak_found(&reports);
    let report = &reports[reports.len() - 1];
    let sync = pool(report, "sync.(*Pool).Get");
    assert!(
        u64_of(&sync["gets"]) > 1000 && u64_of(&sync["puts"]) > 1000,
        "{sync:#}"
    );
    assert!(report["go_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("go1.26")));
    // Stripped: these names and lines come from gopclntab alone.
    assert_frames_symbolized(&reports, "net/http.");
    assert_eq!(http_get(port, "/").0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_scraping_itself_with_its_own_pool_sized_on_request_and_sync_pool() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pooltrace-prometheus-{port}"));
    std::fs::create_dir_all(&dir).expect("data dir");
    let config = dir.join("prometheus.yml");
    let scrape = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
    );
    std::fs::write(&config, scrape).expect("write config");
    let prometheus = start(
        Command::new(real_program("POOLTRACE_PROMETHEUS"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            )),
    );
    wait_for_port(port);
    // The scrape manager starts scraping on its first reload tick, seconds after start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(port, "/api/v1/query?query=up")
        .1
        .contains("\"value\"")
    {
        assert!(Instant::now() < deadline, "Prometheus never scraped itself");
        thread::sleep(Duration::from_millis(200));
    }
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=rate(prometheus_http_requests_total%5B1m%5D)"
    );
    // Runs past the attaches; stopped when dropped.
    let load = wrk(&query, 60, "Accept: application/json");
    thread::sleep(Duration::from_millis(300));

    let pools = ["--pool", "prometheus", "--pool", "sync"];
    let mut reports = attach_repeatedly(prometheus.0.id(), &pools, 5, Duration::from_millis(2000));
    reports.push(attach_in_windows(prometheus.0.id(), &pools));
    drop(load);
    assert_no_leak_found(&reports);
    // Each scrape (one a second) takes a buffer from util/pool and gives it back.
    let own_gets: u64 = reports
        .iter()
        .map(|r| u64_of(&pool(r, "github.com/prometheus/prometheus/util/pool.(*Pool).Get")["gets"]))
        .sum();
    assert!(own_gets >= 3, "util/pool Gets in all attaches: {own_gets}");
    let report = &reports[reports.len() - 1];
    let own = pool(
        report,
        "github.com/prometheus/prometheus/util/pool.(*Pool).Get",
    );
    assert_eq!(own["kind"], "counting");
    let sync = pool(report, "sync.(*Pool).Get");
    assert!(u64_of(&sync["gets"]) > 1000, "{sync:#}");
    assert!(report["go_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("go1.19")));
    assert_frames_symbolized(&reports, "github.com/prometheus/prometheus/");
    // The preset alone adds no probe at Get's entry, so it reads no size asked for...
    assert!(own["sizes"].is_null(), "{own:#}");
    // ...and with --sizes it does: each scrape asks for its last size, in buckets of x3.
    let sized = attach_repeatedly(
        prometheus.0.id(),
        &["--pool", "prometheus", "--sizes"],
        1,
        Duration::from_millis(3500),
    );
    let own = pool(
        &sized[0],
        "github.com/prometheus/prometheus/util/pool.(*Pool).Get",
    );
    let sizes = &own["sizes"];
    let (gets, requested, capacity) = (
        u64_of(&sizes["gets"]),
        u64_of(&sizes["requested_bytes"]),
        u64_of(&sizes["capacity_bytes"]),
    );
    assert!(gets >= 2 && gets <= u64_of(&own["gets"]), "{own:#}");
    assert!(0 < requested && requested <= capacity, "{own:#}");
    let callers: Vec<String> = (own["sized_paths"].as_array().expect("sized paths").iter())
        .flat_map(functions)
        .collect();
    assert!(
        callers
            .iter()
            .any(|f| f.ends_with("(*scrapeLoop).scrapeAndReport")),
        "{own:#}"
    );
    assert_eq!(http_get(port, "/-/healthy").0, 200);
    drop(prometheus);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// Debian's hugo (Go 1.19, stripped) pools its buffers through `bufferpool.GetBuffer`, which
/// exists only inlined, and `PutBuffer`. `list` shows the pair among few, with the S3
/// client's hundred Get*/Put*Request methods left out; named as frames print them, the pair
/// is traced at the pool calls in the inlined copies, and a site build gives back every
/// buffer it took.
#[test]
fn hugo_building_a_site_through_a_get_that_exists_only_inlined() {
    const GET: &str = "github.com/gohugoio/hugo/bufferpool.GetBuffer";
    const PUT: &str = "github.com/gohugoio/hugo/bufferpool.PutBuffer";
    let hugo = real_program("POOLTRACE_HUGO");
    let hugo = hugo.to_str().expect("a UTF-8 path");
    let listing = pooltrace_json(&["list", "--binary", hugo, "--format", "json"]);
    let pairs = listing["pairs"].as_array().expect("pairs");
    let buffers = (pairs.iter().find(|p| p["get"] == GET))
        .unwrap_or_else(|| panic!("{GET} not listed: {listing:#}"));
    assert_eq!(buffers["put"], PUT);
    assert_eq!(buffers["get_inlined_only"], true, "{buffers:#}");
    assert_eq!(buffers["pool_sign"], "Put calls sync.(*Pool).Put");
    assert!(
        pairs.len() < 30 && u64_of(&listing["not_pool_like"]) > 100,
        "{listing:#}"
    );
    assert!(
        !(pairs.iter()).any(|p| p["get"].as_str().unwrap_or("").contains("s3.(*S3)")),
        "{listing:#}"
    );

    let site = std::env::temp_dir().join(format!("pooltrace-hugo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&site);
    let content = site.join("content");
    let layouts = site.join("layouts/_default");
    std::fs::create_dir_all(&content).expect("content dir");
    std::fs::create_dir_all(&layouts).expect("layouts dir");
    std::fs::write(site.join("config.toml"), "baseURL = 'http://localhost/'\n").expect("config");
    std::fs::write(
        layouts.join("single.html"),
        "<html><body><h1>{{ .Title }}</h1>{{ .Content }}</body></html>\n",
    )
    .expect("layout");
    const PAGES: u64 = 20;
    for page in 1..=PAGES {
        let text = format!("---\ntitle: page {page}\n---\n# Page {page}\n\nSome *text*.\n");
        std::fs::write(content.join(format!("p{page}.md")), text).expect("page");
    }
    let report = site.join("report.json");
    let output = run_pooltrace(&[
        "run",
        "--get",
        GET,
        "--put",
        PUT,
        "--format",
        "json",
        "--output",
        report.to_str().expect("a UTF-8 path"),
        "--",
        hugo,
        "-s",
        site.to_str().expect("a UTF-8 path"),
        "-d",
        site.join("public").to_str().expect("a UTF-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{GET} (Get) is inlined at ")),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("the report"))
        .expect("a JSON report");
    let _ = std::fs::remove_dir_all(&site);
    let pool = pool(&report, GET);
    // Each page is rendered into a pooled buffer, and every buffer comes back.
    assert!(u64_of(&pool["gets"]) >= PAGES, "{pool:#}");
    assert_eq!(u64_of(&pool["gets"]), u64_of(&pool["puts"]), "{pool:#}");
    for none in [
        "outstanding",
        "unmatched_puts",
        "collected",
        "unseen_get_sites",
    ] {
        assert_eq!(u64_of(&pool[none]), 0, "{none} in {pool:#}");
    }
}
