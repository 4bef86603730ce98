//! Harness for the integration tests: start a Go fixture that waits for commands, attach the
//! real `pooltrace` binary to it, drive both, and read what each printed.
//!
//! `cargo xtask test` builds the fixtures and passes their directory in `POOLTRACE_FIXTURES`
//! and the tracer in `POOLTRACE_BIN`; the tests refuse to run without them rather than skip.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use pooltrace_harness::Lines;
pub use serde_json::Value;

/// How long any single step may take before the test fails instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// poolfix's pointer pool, `main.(*BufPool)`, as pooltrace is told to trace it.
pub const POOLFIX_BUFS: [&str; 4] = [
    "--get",
    "main.(*BufPool).Get",
    "--put",
    "main.(*BufPool).Put",
];

/// poolfix's generic pool of `*[]byte` chunks, `main.(*BucketedPool[uint8])`.
pub const POOLFIX_CHUNKS: [&str; 6] = [
    "--get",
    "main.(*BucketedPool[uint8]).Get",
    "--put",
    "main.(*BucketedPool[uint8]).Put",
    "--object",
    "slice-ptr",
];

pub fn pooltrace_bin() -> PathBuf {
    env_path("POOLTRACE_BIN")
}

/// A built fixture, e.g. `fixture("poolfix-go1.27")`.
pub fn fixture(name: &str) -> PathBuf {
    let path = env_path("POOLTRACE_FIXTURES").join(name);
    assert!(
        path.is_file(),
        "fixture {} is missing: run `cargo xtask test`",
        path.display()
    );
    path
}

/// A real program installed by `cargo xtask test`, by its environment variable.
pub fn real_program(variable: &str) -> PathBuf {
    let path = env_path(variable);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask test`",
        path.display()
    );
    path
}

/// The container image `cargo xtask image` built: an OCI image layout (`POOLTRACE_IMAGE`)
/// and the tag it holds the image under (`POOLTRACE_IMAGE_TAG`, pooltrace's version).
pub struct Image {
    pub layout: PathBuf,
    pub tag: String,
}

impl Image {
    pub fn built() -> Self {
        let layout = env_path("POOLTRACE_IMAGE");
        let tag = env_path("POOLTRACE_IMAGE_TAG")
            .to_string_lossy()
            .into_owned();
        Self { layout, tag }
    }

    /// `oci:LAYOUT:TAG`, as podman and skopeo name it.
    pub fn reference(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// The manifest the layout's index tags `tag`.
    pub fn manifest(&self) -> Value {
        let index = self.json(&self.layout.join("index.json"));
        let tagged = index["manifests"]
            .as_array()
            .and_then(|manifests| {
                manifests.iter().find(|m| {
                    m["annotations"]["org.opencontainers.image.ref.name"] == self.tag.as_str()
                })
            })
            .unwrap_or_else(|| panic!("no image tagged {} in {index}", self.tag));
        self.json(&self.blob(tagged))
    }

    /// The image's configuration: its `config` holds Entrypoint, User, Env and Labels.
    pub fn config(&self) -> Value {
        self.json(&self.blob(&self.manifest()["config"]))
    }

    /// The file of the blob a descriptor points to.
    pub fn blob(&self, descriptor: &Value) -> PathBuf {
        let digest = descriptor["digest"]
            .as_str()
            .expect("a descriptor's digest");
        let (algorithm, hex) = digest.split_once(':').expect("algorithm:hex");
        self.layout.join("blobs").join(algorithm).join(hex)
    }

    fn json(&self, path: &Path) -> Value {
        let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn env_path(name: &str) -> PathBuf {
    let value = std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} is not set: run the integration tests with `cargo xtask test`")
    });
    PathBuf::from(value)
}

/// A running fixture speaking the fixtures' protocol: it prints `ready PID`, then obeys
/// `round` (prints `counts k=v ...`) and `exit`.
pub struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What it printed, every line so far kept.
    lines: Lines,
    pub pid: i32,
    /// Its first line, `ready PID` with the PID it sees.
    pub ready: String,
}

impl Target {
    pub fn start(path: &Path) -> Self {
        let target = Self::start_command(Command::new(path));
        assert_eq!(target.ready, format!("ready {}", target.pid));
        target
    }

    /// A fixture started by `command`, which may go through a launcher (`unshare`): `pid`
    /// is then the launcher's, and the `ready` line the PID the fixture sees.
    pub fn start_command(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdin = child.stdin.take();
        let lines = Lines::of(child.stdout.take().expect("piped stdout"));
        let mut target = Self {
            pid: child.id() as i32,
            child,
            stdin,
            lines,
            ready: String::new(),
        };
        target.ready = target.expect_line("ready");
        target
    }

    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("target stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .expect("write to target");
    }

    /// Waits for the next line starting with `prefix`.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        expect_line(&mut self.lines, prefix, "target")
    }

    /// Runs one workload round and returns the fixture's own cumulative counts.
    pub fn round(&mut self) -> Counts {
        self.send("round");
        Counts::parse_line(&self.expect_line("counts"))
    }

    /// Asks the target to exit and returns its status.
    pub fn exit(mut self) -> (ExitStatus, Vec<String>) {
        self.send("exit");
        self.expect_line("bye");
        self.stdin.take();
        let status = wait_with_timeout(&mut self.child).expect("target exits");
        (status, std::mem::take(&mut self.lines.seen))
    }

    /// Reads `len` bytes of the target's memory at `addr` (to check code is left untouched).
    pub fn read_memory(&self, addr: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mem =
            std::fs::File::open(format!("/proc/{}/mem", self.pid)).expect("open /proc/PID/mem");
        let mut bytes = vec![0; len];
        mem.read_exact_at(&mut bytes, addr)
            .expect("read target memory");
        bytes
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's storegw serving on loopback under its load generator for `seconds`, both
/// killed when dropped.
pub struct Demo {
    server: Child,
    load: Child,
}

impl Demo {
    pub fn start(storegw: &Path, seconds: u32) -> Self {
        let mut server = Command::new(storegw)
            .arg("serve")
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve");
        let mut stdout = BufReader::new(server.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("listening line");
        // Keep reading, or storegw's next status line dies of SIGPIPE.
        thread::spawn(move || stdout.lines().for_each(drop));
        let addr = first
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .expect("address")
            .to_owned();
        let load = Command::new(storegw)
            .args(["load", "-addr", &addr, "-duration", &format!("{seconds}s")])
            .stdout(Stdio::null())
            .spawn()
            .expect("load");
        Self { server, load }
    }

    /// The server's PID.
    pub fn pid(&self) -> i32 {
        self.server.id() as i32
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for child in [&mut self.load, &mut self.server] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `counts k=v ...` line of a fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub HashMap<String, u64>);

impl Counts {
    /// Parses a `counts k=v ...` line.
    pub fn parse_line(line: &str) -> Self {
        let pairs = line.split_whitespace().skip(1).filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        });
        Self(pairs.collect())
    }

    pub fn get(&self, key: &str) -> u64 {
        *self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in counts {:?}", self.0))
    }
}

/// A running `pooltrace report` or `stream`, attached (its first line has been seen).
pub struct Tracer {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Lines,
}

/// What a finished pooltrace printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: Vec<String>,
}

impl Finished {
    /// Asserts pooltrace said exactly `line` on stderr.
    pub fn assert_said(&self, line: &str) {
        assert!(
            self.stderr.iter().any(|l| l == line),
            "pooltrace never said {line:?}; it said {:?}",
            self.stderr
        );
    }

    pub fn json(&self) -> Value {
        assert!(
            self.status.success(),
            "pooltrace failed: {:?}\n{}",
            self.status,
            self.stderr.join("\n")
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("pooltrace printed no JSON ({e}): {}", self.stdout))
    }
}

impl Tracer {
    /// Starts `pooltrace report --pid PID ARGS` (with `--format json` and `--interval 0`
    /// unless ARGS set them) and waits until it says it attached.
    pub fn attach(pid: i32, args: &[&str]) -> Self {
        Self::attach_via(&[], pid, args)
    }

    /// As [`Tracer::attach`], through a launcher such as `nohup` that execs pooltrace.
    pub fn attach_via(launcher: &[&str], pid: i32, args: &[&str]) -> Self {
        let program = match launcher.split_first() {
            Some((program, launcher_args)) => {
                let mut launch = Command::new(program);
                launch.args(launcher_args).arg(pooltrace_bin());
                launch
            }
            None => Command::new(pooltrace_bin()),
        };
        Self::attach_with(program, pid, args)
    }

    /// As [`Tracer::attach`], with pooltrace run by `program` (its command line up to
    /// pooltrace's subcommand, e.g. a container runtime running the image).
    pub fn attach_with(program: Command, pid: i32, args: &[&str]) -> Self {
        let interval: &[&str] = if args.contains(&"--interval") {
            &[]
        } else {
            &["--interval", "0"]
        };
        let format: &[&str] = if args.contains(&"--format") {
            &[]
        } else {
            &["--format", "json"]
        };
        let args: Vec<&str> = [format, interval, args].concat();
        Self::start(program, "report", pid, &args, "pooltrace: attached")
    }

    /// Starts `pooltrace stream --pid PID ARGS` and waits until it says it is streaming.
    pub fn stream(pid: i32, args: &[&str]) -> Self {
        let program = Command::new(pooltrace_bin());
        Self::start(program, "stream", pid, args, "pooltrace: streaming")
    }

    fn start(mut program: Command, command: &str, pid: i32, args: &[&str], ready: &str) -> Self {
        let mut child = program
            .args([command, "--pid", &pid.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pooltrace");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let stderr = Lines::of(child.stderr.take().expect("piped stderr"));
        let mut tracer = Self {
            child,
            stdout: Some(stdout),
            stderr,
        };
        tracer.expect_stderr(ready);
        tracer
    }

    /// Waits for the next stderr line starting with `prefix`, keeping every line.
    pub fn expect_stderr(&mut self, prefix: &str) -> String {
        expect_line(&mut self.stderr, prefix, "pooltrace")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Ctrl-C: pooltrace prints its final report and detaches.
    pub fn interrupt(self) -> Finished {
        self.signal(libc::SIGINT)
    }

    /// Sends `signal` to pooltrace and waits for it to finish.
    pub fn signal(self, signal: i32) -> Finished {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.finish()
    }

    /// Waits for pooltrace to stop by itself (target exit or --duration).
    pub fn finish(mut self) -> Finished {
        let status = wait_with_timeout(&mut self.child).expect("pooltrace exits");
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        self.stderr.drain();
        let stderr = std::mem::take(&mut self.stderr.seen);
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next line of `lines` starting with `prefix`, or a failed test naming `who`.
fn expect_line(lines: &mut Lines, prefix: &str, who: &str) -> String {
    lines
        .starting(prefix, STEP_TIMEOUT)
        .unwrap_or_else(|missing| panic!("{who} printed {missing}"))
}

/// A running `pooltrace run ARGS -- PROGRAM`, with the program's stdin and both outputs piped.
pub struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The program's lines.
    stdout: Lines,
    stderr: Lines,
    /// The program's PID, from its `ready PID` line.
    pub pid: i32,
}

impl Run {
    /// Starts `program` (a fixture speaking the fixtures' protocol) and waits for `ready`.
    pub fn start(args: &[&str], program: &Path) -> Self {
        let mut child = Command::new(pooltrace_bin())
            .arg("run")
            .args(args)
            .arg("--")
            .arg(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pooltrace run");
        let mut run = Self {
            stdin: child.stdin.take(),
            stdout: Lines::of(child.stdout.take().expect("piped stdout")),
            stderr: Lines::of(child.stderr.take().expect("piped stderr")),
            child,
            pid: 0,
        };
        let ready = run.expect_program("ready ");
        run.pid = ready["ready ".len()..].parse().expect("ready PID");
        run
    }

    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("program stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .expect("write to the program");
    }

    /// Waits for the program's next line starting with `prefix`.
    pub fn expect_program(&mut self, prefix: &str) -> String {
        expect_line(&mut self.stdout, prefix, "the program")
    }

    /// Waits for pooltrace's next stderr line starting with `prefix`.
    pub fn expect_stderr(&mut self, prefix: &str) -> String {
        expect_line(&mut self.stderr, prefix, "pooltrace")
    }

    /// Sends `signal` to pooltrace itself (as `kill` would, not a terminal).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for pooltrace to exit (the program may run on).
    pub fn wait(&mut self) -> ExitStatus {
        wait_with_timeout(&mut self.child).expect("pooltrace run exits")
    }

    /// Waits for pooltrace and its program to exit: pooltrace's status and every line it
    /// printed on stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
        self.stdin.take();
        let status = self.wait();
        // The reading thread ends at EOF, once every holder of the pipe has exited.
        self.stderr.until_end(STEP_TIMEOUT);
        let stderr = std::mem::take(&mut self.stderr.seen);
        (status, stderr)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Two rounds of the poolfix build `build` under the pooltrace that `attach` starts, given
/// the fixture's PID and pooltrace's options (`Tracer::attach`, or the container image);
/// then the fixture exits and pooltrace reports by itself. The fixture's own counts, and the
/// report, checked to name the fixture's toolchain and module.
pub fn traced_rounds(
    build: &str,
    args: &[&str],
    attach: impl FnOnce(i32, &[&str]) -> Tracer,
) -> (Counts, Value) {
    let mut target = Target::start(&fixture(build));
    let pid = target.pid;
    let tracer = attach(pid, args);
    target.round();
    let counts = target.round();
    let (status, _) = target.exit();
    assert_eq!(status.code(), Some(3));
    let finished = tracer.finish();
    // Its status is known only if pooltrace looked before the test reaped it.
    let exited = format!("pooltrace: PID {pid} exited");
    assert!(
        finished.stderr.iter().any(|l| l.starts_with(&exited)),
        "pooltrace did not notice the exit: {:?}",
        finished.stderr
    );
    let report = finished.json();
    // The build info read from .go.buildinfo names the toolchain the fixture was built with.
    let go = if build.contains("go1.19") {
        "go1.19."
    } else {
        "go1.27."
    };
    assert!(
        report["go_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(go)),
        "{}",
        report["go_version"]
    );
    assert_eq!(report["module"], "poolfix (devel)");
    (counts, report)
}

/// poolfix's pointer pool, traced as [`traced_rounds`] does, is counted exactly: every Get
/// and Put the fixture made, and nothing lost (tests/counts.rs on every build, tests/image.rs
/// from the container image).
pub fn assert_pointer_pool_exact(build: &str, attach: impl FnOnce(i32, &[&str]) -> Tracer) {
    let (counts, report) = traced_rounds(build, &POOLFIX_BUFS, attach);
    let pool = pool(&report, POOLFIX_BUFS[1]);
    assert_eq!(u64_of(&pool["gets"]), counts.get("buf_gets"));
    assert_eq!(u64_of(&pool["puts"]), counts.get("buf_puts"));
    assert_eq!(
        u64_of(&pool["outstanding"]),
        counts.get("buf_gets") - counts.get("buf_puts")
    );
    for lost in [
        "unmatched_puts",
        "dropped",
        "collected",
        "stack_failures",
        "read_faults",
    ] {
        assert_eq!(u64_of(&pool[lost]), 0, "{lost} in {pool:#}");
    }
}

/// Runs pooltrace to completion with `args` (for commands expected to fail fast).
pub fn run_pooltrace(args: &[&str]) -> std::process::Output {
    Command::new(pooltrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pooltrace")
}

/// Runs pooltrace with `args`, expecting it to succeed, and parses what it printed as JSON.
pub fn pooltrace_json(args: &[&str]) -> Value {
    let output = run_pooltrace(args);
    assert!(
        output.status.success(),
        "pooltrace {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("pooltrace printed JSON")
}

/// Runs pooltrace with `args`, expecting it to fail with exactly one stderr line.
pub fn assert_fails_with_line(args: &[&str], expected: &str) {
    assert_one_line_error(&run_pooltrace(args), expected);
}

/// `output` is a failure whose stderr is exactly `expected`.
pub fn assert_one_line_error(output: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    assert_eq!(stderr.lines().collect::<Vec<_>>(), [expected], "{stderr}");
}

/// The pool in a report whose `get` is `get`.
/// A leak score from which a call path counts as a suspected leak.
pub const SUSPECT_SCORE: f64 = 20.0;

/// What a report of a healthy program must never show: every call path scored as a suspect,
/// and every object booked as dropped without a Put, one line each. `sync_may_drop`: the
/// program uses `sync.Pool` as its contract allows, dropping some objects, so a collected one
/// there is lost reuse (still scored below the suspect score), not a leak.
pub fn suspected_leaks(report: &Value, sync_may_drop: bool) -> Vec<String> {
    let mut found = Vec::new();
    for pool in report["pools"].as_array().expect("pools") {
        let name = pool["get"].as_str().unwrap_or("?");
        let may_drop = sync_may_drop && pool["kind"] == "sync";
        if u64_of(&pool["collected"]) > 0 && !may_drop {
            found.push(format!("{name}: {} collected", pool["collected"]));
        }
        for stack in pool["stacks"].as_array().expect("stacks") {
            let score = stack["leak_score"].as_f64().expect("leak_score");
            if score >= SUSPECT_SCORE {
                found.push(format!("{name}: score {score}: {stack}"));
            }
        }
    }
    found
}

pub fn pool<'a>(report: &'a Value, get: &str) -> &'a Value {
    report["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["get"] == get))
        .unwrap_or_else(|| panic!("no pool {get} in {report:#}"))
}

/// Function names of a stack's frames, innermost first.
pub fn functions(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .filter_map(|f| f["function"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Address of a function symbol in an ELF file (link-time).
pub fn symbol_address(binary: &Path, name: &str) -> (u64, u64) {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(binary).expect("read fixture");
    let file = object::File::parse(&*data).expect("parse fixture");
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"));
    (symbol.address(), symbol.size())
}

pub fn u64_of(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The line (1-based) of `source` that holds `needle`, so expectations follow the source.
pub fn source_line(source: &str, needle: &str) -> u64 {
    let index = source
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in the fixture source"));
    index as u64 + 1
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A running `pooltrace agent`, killed when dropped (`stop` ends it with SIGTERM).
pub struct Agent {
    pub child: Child,
    pub stderr: Lines,
    /// Where clients reach it: on loopback, whatever address it listens on.
    pub addr: String,
}

impl Agent {
    /// An agent on loopback that scans and reports every second, with `args` after that.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on(&[], "127.0.0.1", args)
    }

    /// The same, listening on a free port of `listen_ip`, and started by `launcher` (a
    /// command that runs the rest of its command line) unless it is empty.
    pub fn start_on(launcher: &[&str], listen_ip: &str, args: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("{listen_ip}:{port}");
        let mut command = match launcher {
            [program, rest @ ..] => {
                let mut command = Command::new(program);
                command.args(rest).arg(pooltrace_bin());
                command
            }
            [] => Command::new(pooltrace_bin()),
        };
        let mut child = command
            .args(["agent", "--listen", &listen])
            .args(["--interval", "1s", "--scan-interval", "1s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let mut stderr = Lines::of(child.stderr.take().expect("stderr"));
        stderr
            .starting("pooltrace agent: serving", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("agent did not start: {e}"));
        Self {
            child,
            stderr,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// Waits until the agent says it attached to `pid`, unless it said so already while
    /// another wait read its lines (the agent attaches in the order of its scan, which is not
    /// the order processes started once PIDs wrap around) and the process has not ended since
    /// (a PID used again).
    pub fn expect_attached(&mut self, pid: i32, limit: Duration) {
        let prefix = "pooltrace agent: attached ";
        let to = format!(" to PID {pid} (");
        let attach = |line: &str| line.starts_with(prefix) && line.contains(&to);
        let ended = format!("pooltrace agent: PID {pid} (");
        let end = |line: &str| {
            line.starts_with(&ended)
                && [" exited", " was killed", " called exec"]
                    .iter()
                    .any(|e| line.contains(e))
        };
        let said = self.stderr.seen.iter().rev();
        if let Some(line) = said.map(String::as_str).find(|l| attach(l) || end(l)) {
            if attach(line) {
                return;
            }
        }
        self.stderr
            .matching("its attach", attach, limit)
            .unwrap_or_else(|e| panic!("agent did not attach to PID {pid}: {e}"));
    }

    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(&self.addr, path)
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        String::from_utf8(body).expect("utf-8 metrics")
    }

    /// Polls /metrics until `done` holds for it, for at most `limit`; the last text either way.
    pub fn metrics_until(&self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.metrics();
            if done(&text) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the agent with SIGTERM; everything it said on stderr.
    pub fn stop(mut self) -> Vec<String> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.stderr.until_end(Duration::from_secs(30));
        let status = self.child.wait().expect("agent exits");
        assert!(status.success(), "agent exited {status}");
        std::mem::take(&mut self.stderr.seen)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP GET; the status and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    pooltrace_harness::http_get(addr, path, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// A file of the repository, whose `tests/` directory is this crate.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the repository")
        .join(relative)
}

/// Percent-encoding of a query parameter.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A scratch directory under the system's temporary one, removed with everything in it.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `pooltrace-NAME-PID`, emptied if an earlier run left it.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pooltrace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    /// A copy of fixture `name` under its own file name `as_name`, so that `--exe` matches
    /// only the processes a test starts.
    pub fn fixture_copy(&self, name: &str, as_name: &str) -> PathBuf {
        let path = self.0.join(as_name);
        std::fs::copy(fixture(name), &path).expect("copy fixture");
        path
    }

    /// A file of the directory, holding `text`.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// The path of `name` in the directory, as a string for a command line.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("a UTF-8 path").to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tmux server of its own, with one window running a plain shell in `dir`.
pub struct Tmux(pooltrace_harness::Tmux);

impl Tmux {
    pub fn start(name: &str, dir: PathBuf, width: u16, height: u16) -> Self {
        let socket = format!("pooltrace-top-{name}-{}", std::process::id());
        let shell = [
            "env",
            "-i",
            "PATH=/usr/bin:/bin:/usr/sbin:/sbin",
            "TERM=tmux-256color",
            "PS1=$ ",
            "bash",
            "--norc",
            "--noprofile",
        ]
        .map(std::ffi::OsStr::new);
        let program = real_program("POOLTRACE_TMUX");
        let tmux = pooltrace_harness::Tmux::start(&program, socket, (width, height), &dir, &shell);
        Self(tmux.expect("start tmux"))
    }

    pub fn run(&self, args: &[&str]) -> String {
        (self.0.run(args)).unwrap_or_else(|e| panic!("tmux {args:?}: {e}"))
    }

    /// Types `text` and Enter into the shell.
    pub fn type_line(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
        self.run(&["send-keys", "-t", "top", "Enter"]);
    }

    /// Presses one key, by tmux's name for it (`q`, `Enter`, `Down`, `C-c`).
    pub fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "top", key]);
    }

    /// What the terminal shows now, one string a line.
    pub fn screen(&self) -> Vec<String> {
        self.0.screen().expect("capture the pane")
    }

    /// What the terminal shows now, with its colours and attributes as escape sequences.
    pub fn screen_styled(&self) -> String {
        self.run(&["capture-pane", "-p", "-e", "-t", "top"])
    }

    /// Everything written to the terminal since it started, scrollback included.
    pub fn history(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "top"])
    }

    pub fn query(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "top", format])
            .trim()
            .to_owned()
    }

    pub fn resize(&self, width: u16, height: u16) {
        let (width, height) = (width.to_string(), height.to_string());
        self.run(&["resize-window", "-t", "top", "-x", &width, "-y", &height]);
    }

    /// Presses q and waits for top to exit with status 0.
    pub fn quit_top(&self) {
        self.key("q");
        self.until("top exited", Duration::from_secs(15), |s| {
            s.iter().any(|l| l == "top exited 0")
        });
    }

    /// Waits until the screen passes `test`; the screen that did.
    pub fn until(
        &self,
        what: &str,
        limit: Duration,
        test: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        (self.0.until(limit, test)).unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// The command line that starts `pooltrace top` with `args`, then says its exit status.
pub fn top_command(args: &[&str]) -> String {
    let mut line = vec![
        pooltrace_bin().to_str().expect("UTF-8 path").to_owned(),
        "top".into(),
    ];
    line.extend(args.iter().map(|a| shell_quote(a)));
    line.join(" ") + "; echo \"top exited $?\""
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}
