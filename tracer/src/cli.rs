//! Command-line interface: what each option means, with examples in `--help`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    probes::{keyspec::ObjectKind, presets::Preset},
    report::{ReportFormat, SortBy},
};

#[derive(Debug, Parser)]
#[command(
    name = "pooltrace",
    version,
    about = "Find object-pool leaks in running Go programs",
    long_about = "pooltrace attaches uprobes to a live Go process's pool Get and Put functions, \
tracks every object that is out of its pool in kernel maps, keyed by the call path that took it, \
and reports which call paths hold objects that never come back.\n\n\
Get is probed at each of its RET instructions and Put just past its stack check; no uretprobe \
is ever used, so Go's moving stacks are safe. Detaching leaves the process as it was."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running process and report the call paths holding pool objects.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(Box<ReportArgs>),
    /// Start a program with its output passed through, traced from its first instruction,
    /// and report when it exits. Exits with the program's status.
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Print each Get and Put as it happens: time, goroutine, object, size or age, callers.
    #[command(after_help = STREAM_EXAMPLES)]
    Stream(Box<StreamArgs>),
    /// List the pool-like Get/Put pairs in a Go binary, with how many call sites reach them.
    #[command(after_help = LIST_EXAMPLES)]
    List(ListArgs),
}

const RUN_EXAMPLES: &str = "\
Examples:
  Count every Get and Put of a test server from its start:
    sudo pooltrace run --pool sync --format json --output pools.json -- ./server --port 8080

  The same options as `pooltrace report` apply (without --pid).

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

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Process to trace (every thread of it).
    #[arg(short, long, value_name = "PID")]
    pub pid: i32,

    #[command(flatten)]
    pub pools: PoolArgs,

    /// Show only events whose frames contain TEXT.
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,

    /// Show only Puts of objects that were out at least this long (hides Gets).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_age: Option<Duration>,

    /// Stop after this long.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Frames shown per event, from the caller out.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub frames: usize,

    /// Write the events to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

const LIST_EXAMPLES: &str = "\
Examples:
  What pools does a running service have?
    pooltrace list --pid 4242

  The same for a binary on disk, as JSON:
    pooltrace list --binary ./storegw --format json

Pairs are methods Get and Put of one type (generic types by instantiation, with the shape
function pooltrace probes) and functions whose names differ only in Get/Put. CALLS counts
direct call sites; INLINED counts sites where the compiler inlined the call, which no probe
can see. Needs no privileges beyond reading the binary.";

#[derive(Debug, Args)]
pub struct ListArgs {
    /// A running process whose executable to read.
    #[arg(short, long, value_name = "PID", conflicts_with = "binary")]
    pub pid: Option<i32>,

    /// A Go binary on disk.
    #[arg(short, long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
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

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Process to trace (every thread of it).
    #[arg(short, long, value_name = "PID")]
    pub pid: i32,

    #[command(flatten)]
    pub trace: TraceOptions,

    /// Print where the probes would go (JSON: function, address, file offset, instruction,
    /// whether the kernel emulates it) and exit without attaching.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub trace: TraceOptions,

    /// The program to start and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What to trace and how to report it, for `report` and `run`.
#[derive(Debug, Args)]
pub struct TraceOptions {
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

    /// Write the final report to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Probe Get only this fraction of the time (0 < FRACTION <= 1), in 500 ms cycles, while
    /// Put stays probed: Get's RET probes cost the most, and every object taken while Get is
    /// probed is still seen coming back, so no false leak appears. Untracked Puts count as
    /// unmatched.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub sample_gets: Option<f64>,

    /// Most objects tracked at once (kernel hash map entries, ~100 bytes each).
    #[arg(long, value_name = "N", default_value_t = tracer_common::DEFAULT_MAX_OBJECTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_objects: u32,

    /// Distinct Get stacks kept (kernel hash map entries, ~530 bytes each).
    #[arg(long, value_name = "N", default_value_t = tracer_common::DEFAULT_MAX_STACKS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_stacks: u32,
}

#[derive(Debug, Args)]
pub struct PoolArgs {
    /// A pool preset (repeatable).
    #[arg(long = "pool", value_enum, value_name = "PRESET")]
    pub presets: Vec<Preset>,

    /// The pool's Get function, as Go names it, e.g. 'main.(*BufPool).Get'.
    #[arg(long, value_name = "FUNC", requires = "put")]
    pub get: Option<String>,

    /// The pool's Put function, e.g. 'main.(*BufPool).Put'.
    #[arg(long, value_name = "FUNC", requires = "get")]
    pub put: Option<String>,

    /// What the pool hands out; decides where identity and size are read by default.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = ObjectKind::Ptr)]
    pub object: ObjectKind,

    /// Where Get's result object is: rN = result word N; *rN+OFF = the 8 bytes at rN+OFF;
    /// iface:rN = the interface in rN, rN+1. E.g. --get-key r0 for `Get() *T`.
    #[arg(long, value_name = "SPEC")]
    pub get_key: Option<String>,

    /// Where the object's size in bytes is at Get's return (same forms, or none).
    /// E.g. --get-size '*r0+16' for the capacity of the slice a `*[]T` points at.
    #[arg(long, value_name = "SPEC")]
    pub get_size: Option<String>,

    /// Skip recording the Put stacks objects come back through: saves a stack capture per
    /// Put, at the cost of the report's release paths.
    #[arg(long)]
    pub no_release_paths: bool,

    /// Trace only the pool instance at ADDR (the Get/Put receiver, e.g. 0xc000123400, as
    /// shown in a report): one shape function serves every instance of its shape.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub receiver: Option<u64>,

    /// Where Put's object is: aN = argument word N, counting the receiver of a method as a0.
    /// E.g. --put-key a1 for `func (p *Pool) Put(b *T)`.
    #[arg(long, value_name = "SPEC")]
    pub put_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
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
