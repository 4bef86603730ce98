//! Command-line interface: what each option means, with examples in `--help`.

use std::{path::PathBuf, time::Duration};

use clap::{
    builder::EnumValueParser, error::ErrorKind, Arg, ArgAction, ArgMatches, Args, FromArgMatches,
    Parser, Subcommand, ValueEnum,
};

use crate::{
    probes::{keyspec::ObjectKind, presets::Preset, CustomPool, KeyOverrides, PoolEntry, PoolKind},
    report::{gate::FailOn, ReportFormat, SortBy},
};

#[derive(Debug, Parser)]
#[command(
    name = "pooltrace",
    version,
    about = "Find object-pool leaks in running Go programs",
    long_about = "pooltrace attaches uprobes to a live Go process's pool Get and Put functions, \
tracks every object that is out of its pool in kernel maps, keyed by the call path that took it, \
and reports which call paths hold objects that never come back.\n\n\
Get is probed at each of its RET instructions and Put on its stack check's branch; no uretprobe \
is ever used, so Go's moving stacks are safe. Detaching leaves the process as it was."
)]
/// The whole command line: `pooltrace` and one command.
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,

    /// Say on stderr why events went unrecorded, from the kernel side (the site, pool,
    /// goroutine and address of each read fault, nil object, full map, double Put, skipped
    /// pass), and what pooltrace does: `RUST_LOG=pooltrace=debug`. Each kind of message is
    /// shown once in 10 s per site, with a count of those held back. Off, the kernel side
    /// costs nothing for it.
    #[arg(long, global = true)]
    pub debug: bool,
}

/// One of pooltrace's commands, with its options.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running process and report the call paths holding pool objects.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(Box<ReportArgs>),
    /// Start a program with its output passed through, traced from its first instruction,
    /// and report when it exits. Exits with the program's status (or 70 on a --fail-on
    /// finding).
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Print each Get and Put as it happens: time, goroutine, object, size or age, callers.
    #[command(after_help = STREAM_EXAMPLES)]
    Stream(Box<StreamArgs>),
    /// A live view of the pools and their call paths, redrawn every second: sort, filter,
    /// open a path; on quit, detach and print the final report. Or the same view of what a
    /// running agent traces (--agent).
    #[command(after_help = TOP_EXAMPLES)]
    Top(Box<TopArgs>),
    /// List the pool-like Get/Put pairs in a Go binary, with how many call sites reach them.
    #[command(after_help = LIST_EXAMPLES)]
    List(ListArgs),
    /// Compare two JSON reports: call paths new, grown, shrunk or gone between them.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(DiffArgs),
    /// Watch matching processes for as long as it runs, attaching to each as it starts, and
    /// serve what it finds to Prometheus (/metrics) and pprof (/debug/pprof/pool) scrapers.
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(Box<AgentArgs>),
}

const DIFF_EXAMPLES: &str = "\
Examples:
  What the new release leaks that the old one did not:
    sudo pooltrace report --pid $(pidof storegw) --duration 10m --format json --output v1.json
    sudo pooltrace report --pid $(pidof storegw) --duration 10m --format json --output v2.json
    pooltrace diff v1.json v2.json

Paths are matched by pool and by their frames' functions and lines, so reports of two builds
compare; a path whose code moved to other lines shows as gone and new. A path's size is what
it holds: outstanding plus collected objects. Unchanged paths are not listed.";

/// Options of `pooltrace diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier report (`--format json`).
    #[arg(value_name = "OLD.json")]
    pub old: PathBuf,

    /// The later report.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,

    /// How to print the changes.
    #[arg(short, long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
}

/// What `diff` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// A line per changed path, with its next frames.
    Text,
    /// `{"paths": [{status, pool, frames, old, new}]}`.
    Json,
}

const AGENT_EXAMPLES: &str = "\
Examples:
  Watch every Thanos process on this host, and what Prometheus sees:
    sudo pooltrace agent --listen 127.0.0.1:9464 --exe thanos --pool thanos
    curl -s 127.0.0.1:9464/metrics | grep pooltrace_path_outstanding_objects

  Services named in a pools file, on every interface, and the leaking paths in pprof:
    sudo pooltrace agent --listen 0.0.0.0:9464 --pools-file /etc/pooltrace/pools.toml \\
        --exe thanos --exe prometheus
    go tool pprof -top http://127.0.0.1:9464/debug/pprof/pool

  Over TLS, with a password, as Prometheus exporters are configured:
    sudo pooltrace agent --listen 0.0.0.0:9464 --web-config /etc/pooltrace/web.yml --exe thanos
    curl -s --cacert ca.pem -u prometheus https://node1:9464/metrics

Endpoints: /metrics (Prometheus/OpenMetrics text), /debug/pprof/pool (gzipped pprof, every
target, labelled by pid and exe), /report.json (one JSON report per target), /healthz.

A process is matched by --exe when its executable's file name is NAME, or its full path, as
the process itself sees it (inside its container), is PATH. Matching processes are found
every --scan-interval; one that restarts is attached again under its new PID, and one that
exits keeps its last numbers for --forget-after. A process that cannot be traced (not Go, a
pool missing) is logged and counted, and the others go on. SIGTERM or Ctrl-C detaches from
every process and exits.";

/// Options of `pooltrace agent`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).multiple(true).args(["pid", "exe"])))]
pub struct AgentArgs {
    /// Serve the endpoints on this address. Loopback by default: without --web-config the
    /// endpoints have neither TLS nor authentication. Any other address where a client need
    /// not prove who it is gets a warning at start.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,

    /// Serve with TLS and basic authentication as FILE says: the Prometheus exporter-toolkit's
    /// web configuration (YAML: tls_server_config with cert_file, key_file, client_ca_file,
    /// client_auth_type, ...; basic_auth_users with bcrypt hashes). Read once, at start;
    /// relative paths in it are taken from its directory.
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,

    /// A process to trace (repeatable). It is not attached again once it exits.
    #[arg(short, long, value_name = "PID")]
    pub pid: Vec<i32>,

    /// Trace every process whose executable is NAME (its file name) or PATH (its full path as
    /// the process sees it, e.g. inside its container) (repeatable), now and as they start.
    #[arg(long, value_name = "NAME|PATH")]
    pub exe: Vec<String>,

    /// The pools to trace in each process.
    #[command(flatten)]
    pub pools: PoolArgs,

    /// How often each process's kernel maps are read into the served numbers.
    #[arg(short, long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// How often /proc is searched for new --exe matches.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_positive_duration)]
    pub scan_interval: Duration,

    /// How long a matching process must have run before it is traced. Shorter-lived ones
    /// (a fork on its way to exec, a helper command) would each cost an attach, most of it
    /// the kernel's verifier, for nothing seen; 0 traces every match.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub attach_after: Duration,

    /// How long an exited process's last numbers are still served.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub forget_after: Duration,

    /// Call paths per pool and process exported one by one (the likeliest leaks); the rest
    /// are summed under path="other". Bounds the number of series.
    #[arg(long, value_name = "K", default_value_t = 20)]
    pub top_paths: usize,

    /// Most processes traced at once (up to 512); further matches are counted and logged,
    /// not traced. Every process shares one set of kernel maps, sized by --max-objects and
    /// --max-stacks: each may have --max-objects / N objects tracked at once.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=tracer_common::MAX_TARGET_SLOTS as i64))]
    pub max_targets: u32,

    /// Keep the probes' estimated cost under PCT percent of one core per process, by
    /// tracing in windows (see --window, --grace, --period): every probe stays while the
    /// budget allows it. 0: no budget, every probe all the time.
    #[arg(long, value_name = "PCT", default_value_t = 1.0, value_parser = parse_budget_or_none)]
    pub budget: f64,

    /// Trace continuously, as before tracing windows: Put always probed, and Get a fraction
    /// of the time that keeps the estimated cost within --budget (Put's share may exceed
    /// it).
    #[arg(long)]
    pub continuous: bool,

    /// With --continuous: probe Get at most this fraction of the time (0 < FRACTION <= 1),
    /// whatever the budget.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub sample_gets: Option<f64>,

    /// The times of the tracing windows.
    #[command(flatten)]
    pub windows: WindowTimes,

    /// Leave objects younger than this out of the call paths (they still count in totals).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub min_age: Duration,

    /// How much each process's kernel maps hold.
    #[command(flatten)]
    pub maps: MapSizes,

    /// Check the options and the pools file, print what would be watched, and exit without
    /// listening or attaching (needs no privileges).
    #[arg(long)]
    pub dry_run: bool,
}

const RUN_EXAMPLES: &str = "\
Examples:
  Count every Get and Put of a test server from its start:
    sudo pooltrace run --pool sync --format json --output pools.json -- ./server --port 8080

  The same options as `pooltrace report` apply (without --pid).

  Fail a Go test that leaves pool objects out (exit status 70, the paths named on stderr):
    go test -exec 'sudo pooltrace run --get pkg.(*Pool).Get --put pkg.(*Pool).Put \
        --fail-on outstanding,collected --' ./pkg

The probes are in place before the program's first instruction: pooltrace starts it through
a shell that waits until the uprobes are attached, then execs it in the same process.

SIGINT, SIGTERM and SIGHUP go on to the program (a terminal's Ctrl-C reaches it directly),
and pooltrace reports once it exits. A second Ctrl-C stops waiting: pooltrace reports and
exits 130, leaving the program running.";

const STREAM_EXAMPLES: &str = "\
Examples:
  Every sync.Pool Get and Put of a process:
    sudo pooltrace stream --pid 4242 --pool sync

  Only objects that were out at least 100 ms, from one caller, into a file:
    sudo pooltrace stream --pid 4242 --pool sync --min-age 100ms --grep handleQuery --output slow.log

Events come through a ring buffer; if the terminal or file cannot keep up and the buffer
fills, the events lost are counted and reported, never dropped silently.";

const TOP_EXAMPLES: &str = "\
Examples:
  Watch a store-gateway's chunk pool:
    sudo pooltrace top --pid $(pidof storegw) --pool thanos
  The pools of a pools file, the oldest objects first:
    sudo pooltrace top --pid 4242 --pools-file pools.toml --sort age
  What a node's agent traces, with no privileges (a picker when it traces several processes):
    pooltrace top --agent http://node7:9464
    pooltrace top --agent https://node7:9464 --agent-ca ca.pem --agent-user ops --agent-password-file pw

Keys: Up/Down and PgUp/PgDn move, Enter opens a path (Esc goes back), s cycles the sort, /
filters by text in any frame (Esc clears), p pauses the view while tracing goes on, w writes
the report as JSON to a new file in the current directory, t picks another of the agent's
processes, ? shows the keys, q or Ctrl-C quits. On quit, pooltrace detaches and prints the
final report as `report` would (--format, --output). NO_COLOR turns colour off.";

/// Options of `pooltrace top`.
#[derive(Debug, Args)]
#[command(mut_arg("interval", |arg| arg
    .default_value("1s")
    .help("Read the kernel maps and redraw this often, e.g. 1s or 500ms")))]
pub struct TopArgs {
    /// Process to trace (every thread of it).
    #[arg(short, long, value_name = "PID", required_unless_present = "agent")]
    pub pid: Option<i32>,

    /// Show what a running `pooltrace agent` traces, read from URL/report.json (http:// or
    /// https://) at each --interval. Needs no privileges and attaches nothing.
    #[arg(long, value_name = "URL", conflicts_with = "pid")]
    pub agent: Option<String>,

    /// How to prove who is asking, when the agent has a --web-config.
    #[command(flatten)]
    pub credentials: AgentCredentials,

    /// What to trace and how to report it.
    #[command(flatten)]
    pub trace: TraceOptions,
}

/// What a scraper of an agent with a --web-config gives it: the CA its certificate is
/// checked against, a client certificate, and basic-auth credentials.
#[derive(Debug, Args)]
pub struct AgentCredentials {
    /// Check the agent's TLS certificate against the CA certificates in FILE (PEM).
    /// Needed for https:// (the agent's certificates are a deployment's own).
    #[arg(long, value_name = "FILE", requires = "agent")]
    pub agent_ca: Option<PathBuf>,

    /// Show the agent the client certificate in FILE (PEM), for a client_auth_type that
    /// asks for one.
    #[arg(long, value_name = "FILE", requires_all = ["agent", "agent_key"])]
    pub agent_cert: Option<PathBuf>,

    /// The private key of --agent-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "agent_cert")]
    pub agent_key: Option<PathBuf>,

    /// The basic-auth user, one of the agent's basic_auth_users.
    #[arg(long, value_name = "USER", requires_all = ["agent", "agent_password_file"])]
    pub agent_user: Option<String>,

    /// The file holding --agent-user's password (its first line), kept off the command
    /// line and out of `ps`.
    #[arg(long, value_name = "FILE", requires = "agent_user")]
    pub agent_password_file: Option<PathBuf>,
}

/// Options of `pooltrace stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Process to trace (every thread of it).
    #[arg(short, long, value_name = "PID")]
    pub pid: i32,

    /// The pools whose Gets and Puts to print.
    #[command(flatten)]
    pub pools: PoolArgs,

    /// Which objects, and how much of their stacks, are recorded.
    #[command(flatten)]
    pub filters: Filters,

    /// Show only events whose frames contain TEXT.
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,

    /// Show only Puts of objects that were out at least this long (hides Gets).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_age: Option<Duration>,

    /// Stop after this long.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Tracing windows: only the events inside them are seen.
    #[command(flatten)]
    pub windows: Windows,

    /// Frames shown per event, from the caller out.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub frames: usize,

    /// Write the events to FILE instead of stdout. FILE is created before attaching, so a
    /// bad path fails at once; an existing FILE is refused (see --force), and a symbolic link
    /// always is.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace the --output FILE if it exists (never through a symbolic link). It is emptied
    /// when streaming starts.
    #[arg(long, requires = "output")]
    pub force: bool,
}

const LIST_EXAMPLES: &str = "\
Examples:
  What pools does a running service have?
    pooltrace list --pid 4242

  The same for a binary on disk, as JSON:
    pooltrace list --binary ./storegw --format json

Pairs are methods Get and Put of one type (generic types by instantiation, with the shape
function pooltrace probes) and functions whose names differ only in Get/Put, including
wrappers that exist only inlined. A pair is listed when its Put hands the object to a
sync.Pool, a channel or a slice (a free list), or a --pool preset covers it; other pairs are
counted, and --all lists them after. CALLS counts direct call sites; INLINED counts call
sites where the compiler inlined Get or Put, which pooltrace traces on the call each copy
makes to the pool underneath. Needs no privileges beyond reading the binary.";

/// Options of `pooltrace list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// A running process whose executable to read.
    #[arg(short, long, value_name = "PID", conflicts_with = "binary")]
    pub pid: Option<i32>,

    /// A Go binary on disk.
    #[arg(short, long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// How to print the list.
    // `help = None`: doc comments here are for rustdoc; `list --help` keeps its wording.
    #[arg(short, long, value_enum, default_value_t = Format::Text, help = None::<&str>)]
    pub format: Format,

    /// Also list the pairs named Get/Put whose Put gives its object to no pool.
    #[arg(long)]
    pub all: bool,
}

const REPORT_EXAMPLES: &str = "\
Examples:
  Trace a pool by its methods, print the top paths every 5 s, hide objects younger than 2 s:
    sudo pooltrace report --pid 4242 --get 'main.(*BufPool).Get' --put 'main.(*BufPool).Put' \\
        --interval 5s --min-age 2s

  Trace sync.Pool for 30 s and write the final report as JSON:
    sudo pooltrace report --pid 4242 --pool sync --duration 30s --format json --output leaks.json

  A flame graph, or a profile for `go tool pprof -top leaks.pb.gz`:
    sudo pooltrace report --pid 4242 --pool sync --duration 30s --format svg --output leaks.svg
    sudo pooltrace report --pid 4242 --pool sync --duration 30s --format pprof --output leaks.pb.gz

  A generic pool, named by its instantiation (the shape function is probed):
    sudo pooltrace report --pid 4242 --object slice-ptr \\
        --get 'main.(*BucketedPool[uint8]).Get' --put 'main.(*BucketedPool[uint8]).Put'

  A Get returning (ptr, len, cap) whose objects are identified by the data pointer:
    sudo pooltrace report --pid 4242 --get main.getBuf --put main.putBuf --object slice

Stops on Ctrl-C, SIGTERM or SIGHUP, when --duration runs out, or when the process exits or
execs, then prints the final report and detaches.";

/// Options of `pooltrace report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Process to trace (every thread of it).
    #[arg(short, long, value_name = "PID")]
    pub pid: i32,

    /// What to trace and how to report it.
    #[command(flatten)]
    pub trace: TraceOptions,

    /// Print where the probes would go (JSON: function, address, file offset, instruction,
    /// whether the kernel emulates it) and exit without attaching.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `pooltrace run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to trace and how to report it.
    #[command(flatten)]
    pub trace: TraceOptions,

    /// Exit with status 70 when the final report finds any of these (comma-separated):
    /// `outstanding` (an object still out of its pool when the program exits), `collected`
    /// (an object dropped without a Put), `double-put` (a Put of an object already back in
    /// its pool; turns on --double-puts), `score=N` (a call path scoring N or more). A line
    /// on stderr names each pool and the functions that took or put back the objects. A
    /// program that fails keeps its own status.
    #[arg(long, value_name = "KIND[,KIND]", value_delimiter = ',', value_parser = FailOn::parse)]
    pub fail_on: Vec<FailOn>,

    /// The program to start and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What to trace and how to report it, for `report` and `run`.
#[derive(Debug, Args)]
pub struct TraceOptions {
    /// The pools to trace.
    #[command(flatten)]
    pub pools: PoolArgs,

    /// Print the top call paths this often, e.g. 10s or 500ms (0 disables the periodic table).
    #[arg(short, long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Leave objects younger than this out of the call paths (they still count in totals),
    /// so objects that are merely in use do not hide the ones that never come back.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub min_age: Duration,

    /// Stop after this long, e.g. 30s or 5m (default: until Ctrl-C or the process exits).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Order of the call paths: score (likeliest leak first), count, bytes or age.
    #[arg(long, value_enum, default_value_t = SortBy::Score)]
    pub sort: SortBy,

    /// Show at most this many call paths per pool.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Format of the final report. With any but text, the periodic tables go to stderr.
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,

    /// Write the final report to FILE instead of stdout. FILE is created before attaching, so
    /// a bad path fails at once; an existing FILE is refused (see --force), and a symbolic
    /// link always is. If no report is made, a FILE this run created is removed.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace the --output FILE if it exists (never through a symbolic link). It is kept as
    /// it was until the final report is written.
    #[arg(long, requires = "output")]
    pub force: bool,

    /// Probe Get only this fraction of the time (0 < FRACTION <= 1), in 500 ms cycles, while
    /// Put stays probed: Get's RET probes cost the most, and every object taken while Get is
    /// probed is still seen coming back, so no false leak appears. Untracked Puts count as
    /// unmatched.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub sample_gets: Option<f64>,

    /// Tracing windows, for a look at a hot service at a bounded cost.
    #[command(flatten)]
    pub windows: Windows,

    /// How much the kernel maps hold.
    #[command(flatten)]
    pub maps: MapSizes,

    /// Which objects, and how much of their stacks, are recorded.
    #[command(flatten)]
    pub filters: Filters,
}

/// Tracing windows for `report`, `run` and `stream`, which trace continuously and exactly
/// unless asked.
#[derive(Clone, Copy, Debug, Args)]
pub struct Windows {
    /// Trace in windows so that the probes' estimated cost stays under PCT percent of one
    /// core: Get and Put probed for a window, Put alone for a grace after it, then nothing
    /// until the cycle's period ends. Objects still out when Put goes are reported as
    /// survivors; no leak is invented by the gaps.
    #[arg(long, value_name = "PCT", value_parser = parse_budget)]
    pub budget: Option<f64>,

    /// The windows' times.
    #[command(flatten)]
    pub times: WindowTimes,
}

/// What the user fixes of each tracing window's times; the others are chosen from
/// measurements.
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct WindowTimes {
    /// How long Get and Put are probed in each cycle (default: about 1000 Gets, 10 ms to 5 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub window: Option<Duration>,

    /// How long Put stays probed after each window (default: 10x the longest p99.9 hold
    /// time, 0.1 s to 30 s, shortened where the budget cannot pay for it within a one-minute
    /// period). Raised to the hold times measured if below them.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub grace: Option<Duration>,

    /// How long one cycle lasts (default: as long as the budget needs). Without --budget, a
    /// period alone turns tracing windows on.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub period: Option<Duration>,
}

/// Which objects, and how much of their stacks, are recorded (`report`, `run`, `stream`).
#[derive(Clone, Copy, Debug, Args)]
pub struct Filters {
    /// Track only objects of at least BYTES, as the pool's size spec reads them (a slice's
    /// capacity, say), e.g. one bucket of a bucketed pool. Gets of others are counted as
    /// `size_filtered`, and their Puts as unmatched.
    #[arg(long, value_name = "BYTES")]
    pub min_size: Option<u64>,

    /// Track only objects of at most BYTES.
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<u64>,

    /// Record at most N addresses of each stack, from the probed function out (1 to 64, the
    /// default and the most the kernel side keeps). Paths that differ only deeper are
    /// merged, and deep stacks cost less to walk.
    #[arg(long, value_name = "N", default_value_t = tracer_common::MAX_STACK_DEPTH as u32,
          value_parser = clap::value_parser!(u32).range(1..=tracer_common::MAX_STACK_DEPTH as i64))]
    pub stack_depth: u32,
}

impl Filters {
    /// Every object, and whole stacks.
    pub const NONE: Self = Self {
        min_size: None,
        max_size: None,
        stack_depth: tracer_common::MAX_STACK_DEPTH as u32,
    };
}

impl MapSizes {
    /// The defaults of `--max-objects` and `--max-stacks`.
    pub const DEFAULT: Self = Self {
        max_objects: tracer_common::DEFAULT_MAX_OBJECTS,
        max_stacks: tracer_common::DEFAULT_MAX_STACKS,
    };
}

/// How much the kernel maps hold, for every command that reports.
#[derive(Clone, Copy, Debug, Args)]
pub struct MapSizes {
    /// Most objects tracked at once (kernel hash map entries, ~100 bytes each); beyond it,
    /// objects are counted as lost, never dropped silently.
    #[arg(long, value_name = "N", default_value_t = tracer_common::DEFAULT_MAX_OBJECTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_objects: u32,

    /// Distinct Get stacks kept (kernel hash map entries, ~530 bytes each).
    #[arg(long, value_name = "N", default_value_t = tracer_common::DEFAULT_MAX_STACKS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_stacks: u32,
}

/// The pools to trace: named on the command line, read from a file, or both.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// The pools named on the command line, in order.
    #[command(flatten)]
    pub named: NamedPools,

    /// Read the pools to trace from a TOML file: [[pool]] tables with `preset = "sync"`, or
    /// `get`, `put` and optionally `object`, `kind`, `get_key`, `get_size`, `put_key`,
    /// `get_request`, as the options of the same names, and `used`, `limit`. Traced before the pools named on the command line.
    #[arg(long, value_name = "FILE")]
    pub pools_file: Option<PathBuf>,

    /// Skip recording the Put stacks objects come back through: saves a stack capture per
    /// Put, at the cost of the report's release paths.
    #[arg(long)]
    pub no_release_paths: bool,

    /// Set what each call path asks the pool for against the capacity it is handed, also
    /// where reading the size adds a probe at Get's entry: the prometheus and nats presets,
    /// and Thanos' BucketedBytes without its books (about 1.15x the cost of a traced pair,
    /// see BENCHMARKS.md). Thanos' generic pools are sized without it.
    #[arg(long)]
    pub sizes: bool,

    /// Catch double Puts: a Put of an object already back in its pool, which hands it to two
    /// future holders. Each is counted and reported with both Puts' call paths. Costs a map
    /// update at every Get and Put (see BENCHMARKS.md), so it is off unless asked for (or
    /// `run --fail-on double-put`).
    #[arg(long)]
    pub double_puts: bool,

    /// Trace only the pool instance at ADDR (the Get/Put receiver, e.g. 0xc000123400, as
    /// shown in a report): one shape function serves every instance of its shape.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub receiver: Option<u64>,
}

/// The pools named on the command line, in the order given: presets (`--pool`) and pools
/// named by their functions. Each `--get` starts a pool; the `--put`, `--object`, `--kind`
/// and key specs after it, up to the next `--get` or `--pool`, belong to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedPools(pub Vec<PoolEntry>);

/// The options that name pools (their clap ids are their long names).
const POOL: &str = "pool";
const GET: &str = "get";
const PUT: &str = "put";
const OBJECT: &str = "object";
const KIND: &str = "kind";
const GET_KEY: &str = "get-key";
const GET_SIZE: &str = "get-size";
const PUT_KEY: &str = "put-key";
const GET_REQUEST: &str = "get-request";

impl Args for NamedPools {
    fn augment_args(command: clap::Command) -> clap::Command {
        let repeated = |id: &'static str, value_name: &'static str, help: &'static str| {
            Arg::new(id)
                .long(id)
                .value_name(value_name)
                .action(ArgAction::Append)
                .help(help)
        };
        command
            .arg(
                repeated(POOL, "PRESET", "A pool preset (repeatable).")
                    .value_parser(EnumValueParser::<Preset>::new()),
            )
            .arg(repeated(
                GET,
                "FUNC",
                "The Get function of a pool, as Go names it, e.g. 'main.(*BufPool).Get'. \
                 Repeat --get (each with its --put) to trace several pools.",
            ))
            .arg(repeated(
                PUT,
                "FUNC",
                "The Put function of the pool of the --get before it, e.g. 'main.(*BufPool).Put'.",
            ))
            .arg(
                repeated(
                    OBJECT,
                    "KIND",
                    "What the pool hands out; decides where identity and size are read by \
                     default [default: ptr]",
                )
                .value_parser(EnumValueParser::<ObjectKind>::new()),
            )
            .arg(
                repeated(
                    KIND,
                    "KIND",
                    "counting: every Get must be Put, so an object dropped without a Put is a \
                     leak; sync: dropping is allowed (sync.Pool-like), so it is lost reuse, not \
                     scored as a leak [default: counting]",
                )
                .value_parser(EnumValueParser::<PoolKind>::new()),
            )
            .arg(repeated(
                GET_KEY,
                "SPEC",
                "Where Get's result object is: rN = result word N; *rN+OFF = the 8 bytes at \
                 rN+OFF; iface:rN = the interface in rN, rN+1. E.g. --get-key r0 for `Get() *T`.",
            ))
            .arg(repeated(
                GET_SIZE,
                "SPEC",
                "Where the object's size in bytes is at Get's return (same forms, or none). \
                 E.g. --get-size '*r0+16' for the capacity of the slice a `*[]T` points at.",
            ))
            .arg(repeated(
                PUT_KEY,
                "SPEC",
                "Where Put's object is: aN = argument word N, counting the receiver of a \
                 method as a0. E.g. --put-key a1 for `func (p *Pool) Put(b *T)`.",
            ))
            .arg(repeated(
                GET_REQUEST,
                "SPEC",
                "Where the size Get is asked for is at its entry (aN forms, as --put-key): the \
                 report then sets what each call path asked for against the capacity it was \
                 handed. E.g. --get-request a1 for `func (p *Pool) Get(sz int) []byte`.",
            ))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

/// One option that names a pool or describes one, as given.
enum PoolOption {
    Preset(Preset),
    Get(String),
    Put(String),
    Object(ObjectKind),
    Kind(PoolKind),
    GetKey(String),
    GetSize(String),
    PutKey(String),
    GetRequest(String),
}

impl FromArgMatches for NamedPools {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut options = Vec::new();
        options.extend(occurrences(matches, POOL, PoolOption::Preset));
        options.extend(occurrences(matches, GET, PoolOption::Get));
        options.extend(occurrences(matches, PUT, PoolOption::Put));
        options.extend(occurrences(matches, OBJECT, PoolOption::Object));
        options.extend(occurrences(matches, KIND, PoolOption::Kind));
        options.extend(occurrences(matches, GET_KEY, PoolOption::GetKey));
        options.extend(occurrences(matches, GET_SIZE, PoolOption::GetSize));
        options.extend(occurrences(matches, PUT_KEY, PoolOption::PutKey));
        options.extend(occurrences(matches, GET_REQUEST, PoolOption::GetRequest));
        options.sort_by_key(|(index, _)| *index);
        group(options.into_iter().map(|(_, option)| option))
            .map(Self)
            .map_err(|message| clap::Error::raw(ErrorKind::ArgumentConflict, message + "\n"))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Each value of option `id` with its position on the command line.
fn occurrences<T: Clone + Send + Sync + 'static>(
    matches: &ArgMatches,
    id: &str,
    option: impl Fn(T) -> PoolOption,
) -> Vec<(usize, PoolOption)> {
    let (Some(indices), Some(values)) = (matches.indices_of(id), matches.get_many::<T>(id)) else {
        return Vec::new();
    };
    indices.zip(values.cloned().map(option)).collect()
}

/// Pools from their options in command-line order.
fn group(options: impl Iterator<Item = PoolOption>) -> Result<Vec<PoolEntry>, String> {
    let mut pools: Vec<Named> = Vec::new();
    for option in options {
        let name = option.name();
        let given_twice = match (option, pools.last_mut()) {
            (PoolOption::Preset(preset), _) => {
                pools.push(Named::Preset(preset));
                false
            }
            (PoolOption::Get(get), _) => {
                pools.push(Named::Custom(Described {
                    get,
                    ..Described::default()
                }));
                false
            }
            (option, Some(Named::Custom(pool))) => pool.set(option),
            (_, _) => {
                return Err(format!(
                    "{name} describes a pool: give it after that pool's --get"
                ))
            }
        };
        if given_twice {
            let get = match pools.last() {
                Some(Named::Custom(pool)) => pool.get.as_str(),
                _ => "",
            };
            return Err(format!("{name} is given twice for the pool of --get {get}"));
        }
    }
    pools.into_iter().map(Named::finish).collect()
}

/// A pool as its options are read.
enum Named {
    Preset(Preset),
    Custom(Described),
}

/// A custom pool's options so far; each may be given once.
#[derive(Default)]
struct Described {
    get: String,
    put: Option<String>,
    object: Option<ObjectKind>,
    kind: Option<PoolKind>,
    keys: KeyOverrides<String>,
}

impl Described {
    /// Sets one option; true when it was already given.
    fn set(&mut self, option: PoolOption) -> bool {
        fn once<T>(slot: &mut Option<T>, value: T) -> bool {
            slot.replace(value).is_some()
        }
        match option {
            PoolOption::Preset(_) | PoolOption::Get(_) => false,
            PoolOption::Put(put) => once(&mut self.put, put),
            PoolOption::Object(object) => once(&mut self.object, object),
            PoolOption::Kind(kind) => once(&mut self.kind, kind),
            PoolOption::GetKey(spec) => once(&mut self.keys.get_key, spec),
            PoolOption::GetSize(spec) => once(&mut self.keys.get_size, spec),
            PoolOption::PutKey(spec) => once(&mut self.keys.put_key, spec),
            PoolOption::GetRequest(spec) => once(&mut self.keys.get_request, spec),
        }
    }
}

impl Named {
    fn finish(self) -> Result<PoolEntry, String> {
        let pool = match self {
            Named::Preset(preset) => return Ok(PoolEntry::Preset(preset)),
            Named::Custom(pool) => pool,
        };
        let Some(put) = pool.put else {
            return Err(format!("--get {} needs its --put", pool.get));
        };
        Ok(PoolEntry::Custom(CustomPool {
            get: pool.get,
            put,
            object: pool.object.unwrap_or(ObjectKind::Ptr),
            kind: pool.kind.unwrap_or_default(),
            keys: pool.keys,
            books: None,
        }))
    }
}

impl PoolOption {
    fn name(&self) -> &'static str {
        match self {
            Self::Preset(_) => "--pool",
            Self::Get(_) => "--get",
            Self::Put(_) => "--put",
            Self::Object(_) => "--object",
            Self::Kind(_) => "--kind",
            Self::GetKey(_) => "--get-key",
            Self::GetSize(_) => "--get-size",
            Self::PutKey(_) => "--put-key",
            Self::GetRequest(_) => "--get-request",
        }
    }
}

/// How `list` prints the pairs it finds. (The variants' `help = None` keeps their docs out
/// of `--help`, which lists the values bare.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    #[value(help = None::<&str>)]
    Text,
    /// JSON, for programs.
    #[value(help = None::<&str>)]
    Json,
}

/// A share of one core in percent: more than 0, at most 100.
fn parse_budget(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(pct) if pct > 0.0 && pct <= 100.0 => Ok(pct),
        _ => Err(format!(
            "{text:?} is not a percentage in (0, 100], e.g. 1 or 0.5"
        )),
    }
}

/// The agent's budget: as `parse_budget`, or 0 for none.
fn parse_budget_or_none(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(pct) if (0.0..=100.0).contains(&pct) => Ok(pct),
        _ => Err(format!(
            "{text:?} is not a percentage in [0, 100] (0: no budget), e.g. 1 or 0.5"
        )),
    }
}

/// A duration that is not zero.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be longer than 0")),
        d => Ok(d),
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{text:?} is not a fraction in (0, 1], e.g. 0.25")),
    }
}

/// "0xc000123400" (or without the 0x).
fn parse_address(text: &str) -> Result<u64, String> {
    let digits = text.trim().trim_start_matches("0x");
    match u64::from_str_radix(digits, 16) {
        Ok(0) | Err(_) => Err(format!("{text:?} is not an address (e.g. 0xc000123400)")),
        Ok(address) => Ok(address),
    }
}

/// "5s", "250ms", "2m", "1h", or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 5s, 250ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
