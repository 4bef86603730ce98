//! Reporting: turning a snapshot of the kernel maps into call paths a user can read, as text
//! or as the JSON other tools parse (field names are a contract: add, never rename). A report
//! is a function of the snapshot, the plans and a symbolizer: it reads nothing itself.

pub mod analysis;
mod doubts;
mod flame;
pub mod gate;
pub mod pprof;
pub mod spinner;
mod text;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use doubts::Doubts;
pub use text::{books_line, render_final, render_interval, sizes_line, windows_line, Style};

use analysis::{Evidence, Percentiles, WindowEvidence, WindowSurvivors};
use tracer_common::{hold_bucket_ceiling, hold_bucket_floor, PathSizes, PoolCounters, SITE_SIZES};

use crate::{
    gobin::{BuildInfo, Function},
    probes::{budget::HitCosts, windows::hold_quantile, PoolKind, PoolPlan, WindowStatus},
    symbolize::{AddressKind, Frame, Symbolize},
    tracking::{self, Held, Snapshot},
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub pid: i32,
    pub binary: String,
    /// From `.go.buildinfo`, e.g. "go1.27.3".
    pub go_version: Option<String>,
    /// The main module and its version, e.g. "github.com/nats-io/nats-server/v2 v2.15.1".
    pub module: Option<String>,
    /// Milliseconds since the probes were attached.
    pub elapsed_ms: u64,
    /// Objects younger than this were left out of `stacks` (they still count in totals).
    pub min_age_ms: u64,
    /// The fraction of the time Get was probed (`--sample-gets`), when not always.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_gets: Option<f64>,
    /// The tracing windows in force (`--budget`, `--period`, the agent), when not continuous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowsReport>,
    pub pools: Vec<PoolReport>,
}

/// The tracing windows in force: counters count only what happened while probes were live,
/// so a rate is a counter over `traced_s` (Gets) or `put_traced_s` (Puts).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowsReport {
    /// The last cycle's window (Get and Put probed), grace (Put alone) and period.
    pub window_s: f64,
    pub grace_s: f64,
    pub period_s: f64,
    /// The share of the time Get is probed: 1 while the budget allows every probe all the
    /// time (`continuous`).
    pub duty: f64,
    pub continuous: bool,
    /// Seconds Get, and Put, have been probed since attach.
    pub traced_s: f64,
    pub put_traced_s: f64,
    /// Windows opened, and windows that could not open (their attach failed).
    pub opened: u64,
    pub not_opened: u64,
    /// The probes' estimated cost in cores, averaged over the cycle, and the budget.
    pub cost_cores: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_cores: Option<f64>,
}

impl WindowsReport {
    /// `probed`: seconds Get and Put have been probed; `budget`: percent of a core.
    pub fn new(status: &WindowStatus, probed: (f64, f64), budget: Option<f64>) -> Self {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Self {
            window_s: round(status.times.window.as_secs_f64()),
            grace_s: round(status.times.grace.as_secs_f64()),
            period_s: round(status.times.period.as_secs_f64()),
            duty: match status.continuous {
                true => 1.0,
                false => round(status.times.duty()),
            },
            continuous: status.continuous,
            traced_s: round(probed.0),
            put_traced_s: round(probed.1),
            opened: status.opened,
            not_opened: status.failed,
            cost_cores: (status.cost_in_force * 1e4).round() / 1e4,
            budget_cores: budget.map(|pct| pct / 100.0),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolReport {
    /// The Get and Put functions as the user named them.
    pub get: String,
    pub put: String,
    /// `counting` (an object dropped without a Put is a leak) or `sync` (it is lost reuse).
    pub kind: PoolKind,
    /// The symbols actually probed (a generic name resolves to its shape function).
    pub get_probed: String,
    pub put_probed: String,
    /// Rates since the previous report (or since attach).
    pub gets_per_s: f64,
    pub puts_per_s: f64,
    /// What the probes cost the target at these rates, in cores, estimated from each hit's
    /// measured cost (`probes::budget`). 0 in reports of versions before it.
    #[serde(default)]
    pub probe_cost_cores: f64,
    pub outstanding: u64,
    pub outstanding_bytes: u64,
    /// The kernel's counters, one JSON field each (see [`Counters`]).
    #[serde(flatten, with = "Counters")]
    pub counters: PoolCounters,
    /// Copies of Get and Put inlined into callers where no probe can see them (no call to a
    /// known pool inside). With unseen Puts, objects dropped without a Put are not scored as
    /// leaks: they may have come back there.
    pub unseen_get_sites: usize,
    pub unseen_put_sites: usize,
    /// Call paths that hold outstanding objects or dropped some without a Put, in `--sort`
    /// order (by default the likeliest leak first).
    pub stacks: Vec<StackReport>,
    /// Call paths left out by `--top`.
    pub stacks_omitted: usize,
    /// Puts of objects already back in the pool (`--double-puts`), by both Puts' call
    /// paths, the most frequent first.
    pub double_put_paths: Vec<DoublePutPath>,
    /// The pool instances' own books (`used` and `limit` in the pools file), each read from
    /// the process's memory at this report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceBooks>,
    /// In a pool whose Get is asked for a size: what its Gets since attach asked for and
    /// were handed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Sizes>,
    /// The same by call path, every path (those that gave everything back too), the most
    /// unused capacity first, up to `--top`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sized_paths: Vec<SizedPath>,
    /// Sized paths left out by `--top`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sized_paths_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What Gets asked for and were handed, in the units of the pool's size (bytes for a byte
/// pool): the capacity a bucketed pool rounds a request up to, and how much of it goes
/// unused. Only Gets whose entry was seen count (not one in flight at attach).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    pub gets: u64,
    pub requested_bytes: u64,
    pub capacity_bytes: u64,
}

impl Sizes {
    fn new(sizes: &PathSizes) -> Self {
        Self {
            gets: sizes.gets,
            requested_bytes: sizes.requested,
            capacity_bytes: sizes.capacity,
        }
    }

    /// Bytes handed out beyond what was asked for.
    pub fn unused_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.requested_bytes)
    }

    /// The share of the capacity handed out that was not asked for, 0 to 1.
    pub fn unused_share(&self) -> f64 {
        match self.capacity_bytes {
            0 => 0.0,
            capacity => self.unused_bytes() as f64 / capacity as f64,
        }
    }
}

/// What one call path's Gets asked for and were handed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizedPath {
    #[serde(flatten)]
    pub sizes: Sizes,
    /// The pool instance (hex), where instances are told apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// Innermost first: the Get function, its caller, and so on out.
    pub frames: Vec<Frame>,
}

/// One pool instance's own count of what it lends, set against what pooltrace saw.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceBooks {
    /// The instance: Get's receiver, hex.
    pub address: String,
    /// What the instance counts as lent out now, and its limit (None: it has none). Both
    /// None when the books could not be read (`unreadable`).
    pub used_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// Of `used_bytes`, what pooltrace saw go out since attach and not come back:
    /// outstanding objects of any age, and objects dropped without a Put.
    pub seen_outstanding_bytes: u64,
    /// The rest: out before pooltrace attached.
    pub before_attach_bytes: Option<u64>,
    /// How fast `used_bytes` climbs, fitted over the last minute's reports, and the fit's
    /// standard error; None until three reports span two seconds.
    pub fill_rate_bytes_per_s: Option<f64>,
    pub fill_rate_spread: Option<f64>,
    /// Seconds until `used_bytes` reaches the limit at that rate; None when it is not
    /// filling or has no limit.
    pub exhausts_in_s: Option<f64>,
    /// Why the books are not shown: a read that failed, or words that cannot be the books.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// Double Puts through one call path, after a first Put from one caller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DoublePutPath {
    pub count: u64,
    /// The second Put, innermost first: the Put function, its caller, and so on out.
    pub frames: Vec<Frame>,
    /// The first Put, the same way. Just the Put function when the two Puts raced on two
    /// CPUs.
    pub first_put_frames: Vec<Frame>,
}

/// How the kernel's per-pool counters appear in JSON: every field under its own name. A
/// counter added to `PoolCounters` is added here, and nowhere else in the report.
#[derive(Serialize, Deserialize)]
#[serde(remote = "PoolCounters")]
struct Counters {
    gets: u64,
    puts: u64,
    unmatched_puts: u64,
    /// Objects not tracked because the object map was full.
    dropped: u64,
    nil_gets: u64,
    stack_failures: u64,
    /// Objects dropped without a Put and garbage-collected (their address came back from a
    /// later Get while still outstanding): certain leaks.
    collected: u64,
    collected_dropped: u64,
    read_faults: u64,
    /// Hold times and release paths not recorded because their maps were full.
    paths_dropped: u64,
    /// Stream events lost because the ring buffer was full.
    stream_lost: u64,
    /// Puts of an object already back in the pool (`--double-puts`).
    double_puts: u64,
    /// Gets of objects outside `--min-size`/`--max-size`, not tracked.
    size_filtered: u64,
    /// Passes of Put's stack check that went to `morestack` (the stack had to grow, or the
    /// goroutine was to be preempted): not counted, as Put restarts and is counted then.
    put_restarts: u64,
    /// Under tracing windows: Gets that handed out the address of an object still out from
    /// an earlier window. It may have come back while Put was not probed: never scored.
    came_back_unseen: u64,
    /// Under tracing windows: Puts of an object taken in an earlier window, whose hold time
    /// is still exact.
    late_puts: u64,
    /// Of `came_back_unseen`, Gets that handed out the very object again (`slice-ptr` and
    /// `slice` objects, whose second word tells): it was given back unseen.
    returned_unseen: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackReport {
    /// How likely this path leaks, 0 to 100 (see `analysis::judge`).
    pub leak_score: f64,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// The pool instance (Get's receiver, hex) the objects came from, where instances are
    /// told apart (generic pools, `--receiver`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// Objects out of the pool now (at least `min_age_ms` old).
    pub outstanding: u64,
    pub bytes: u64,
    /// Age of the oldest of them; 0 when none is outstanding.
    pub oldest_age_ms: u64,
    /// Ages of the outstanding objects.
    pub age_ms: Option<Percentiles>,
    /// How long the objects that came back were held, Get to Put.
    pub hold_ms: Option<Percentiles>,
    /// How many came back.
    pub returned: u64,
    /// Their hold times in the kernel's half-octave buckets, the empty ones left out.
    #[serde(default)]
    pub hold_histogram: Vec<HoldBucket>,
    /// Under tracing windows: objects still out that outlived their window's grace (held at
    /// least that long), objects handed out again after a gap in tracing (perhaps given
    /// back unseen), and objects given back in a later window.
    pub survivors: u64,
    pub came_back_unseen: u64,
    pub late_puts: u64,
    /// Of `came_back_unseen`, the very objects handed out again (`slice-ptr` and `slice`
    /// objects, whose second word tells): given back unseen, so held long, not lost.
    pub returned_unseen: u64,
    /// Objects from this path that were dropped without a Put and garbage-collected.
    pub collected: u64,
    pub collected_bytes: u64,
    /// What this path held (outstanding + collected) at each report so far, oldest first.
    pub trend: Vec<u64>,
    /// The Put call paths its objects came back through, the most used first.
    pub release_paths: Vec<ReleasePath>,
    /// In a sized pool: what this path's Gets asked for and were handed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Sizes>,
    /// Innermost first: the Get function, its caller, and so on out.
    pub frames: Vec<Frame>,
}

/// Objects held from `from_ms` up to `to_ms` (0 when unbounded), Get to Put.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoldBucket {
    pub from_ms: f64,
    pub to_ms: f64,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleasePath {
    /// Share of the returned objects that came back this way, 0 to 1.
    pub share: f64,
    /// Innermost first: the Put function, its caller, and so on out.
    pub frames: Vec<Frame>,
}

/// The final report's format (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned text, colour on a terminal.
    Text,
    /// The JSON other tools parse.
    Json,
    /// Folded stacks (`frame;frame count`, outermost first) for flame graph tools.
    Folded,
    /// An SVG flame graph of the objects each path holds.
    Svg,
    /// A gzipped pprof profile for `go tool pprof`.
    Pprof,
}

/// How `stacks` are ordered (`--sort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Likeliest leak first.
    Score,
    /// Most objects held (outstanding + collected) first.
    Count,
    /// Most bytes held first.
    Bytes,
    /// Oldest outstanding object first.
    Age,
}

/// What each call path held at every report so far (a path's trend), and each pool's
/// counts at the last report (for rates). A path unseen for `TREND_LENGTH` reports is
/// forgotten, so an agent that reports for hours keeps only the paths of its last 60 reports
/// (5 minutes at its default interval), however many come and go.
#[derive(Default)]
pub struct History {
    /// Each path's trend, and the report that last recorded it.
    held: HashMap<(usize, u64, PathIdentity), (Vec<u64>, u64)>,
    /// Per pool: Gets and Puts at the report before the last and at the last, each with
    /// the milliseconds Get and Put were probed by then. A closing report measures its
    /// rates from the one before the last, as it amends the last's trend point.
    last_counts: HashMap<usize, [Counted; 2]>,
    /// Reports built so far.
    reports: u64,
    /// The report being built is the closing one, and stands in for the last: it amends
    /// each path's last point rather than adding one.
    amending: bool,
}

/// A (Get, Put) pair of numbers.
type Pair = (u64, u64);

/// Gets and Puts counted by a report, and the milliseconds each was probed by then.
type Counted = (Pair, Pair);

/// Reports of history kept per path.
const TREND_LENGTH: usize = 60;

impl History {
    /// Starts a report: forgets the paths no report recorded for `TREND_LENGTH` reports. A
    /// closing report comes less than an interval after the last one, so it amends that
    /// report's points: a trend keeps one point per interval, and the final report says what
    /// the last interval's table said, with the latest numbers.
    fn next_report(&mut self, closing: bool) {
        self.amending = closing && self.reports > 0;
        if self.amending {
            return;
        }
        self.reports += 1;
        let reports = self.reports;
        self.held
            .retain(|_, (_, seen)| reports - *seen <= TREND_LENGTH as u64);
    }

    /// Adds what `path` holds to its trend. Under tracing windows what is out changes with
    /// the window's state, so only survivors (with collected objects) count.
    fn record(&mut self, pool: usize, kind: PoolKind, path: &CallPath, windows: bool) -> Vec<u64> {
        let (trend, seen) = self
            .held
            .entry((pool, path.receiver, path.taken.identity()))
            .or_default();
        let out = match windows {
            true => path.held.survivor_count(),
            false => path.held.count,
        };
        let point = match kind {
            PoolKind::Counting => out + path.held.collected,
            PoolKind::Sync => out,
        };
        match trend.last_mut() {
            Some(last) if self.amending && *seen == self.reports => *last = point,
            _ => trend.push(point),
        }
        *seen = self.reports;
        if trend.len() > TREND_LENGTH {
            trend.remove(0);
        }
        trend.clone()
    }

    /// Gets/s and puts/s since the previous report of `pool`, `(gets, puts)` counted over
    /// `clocks_ms` (the time each was probed).
    fn rates(&mut self, pool: usize, counts: (u64, u64), clocks_ms: (u64, u64)) -> (f64, f64) {
        let [before_last, last] = self.last_counts.get(&pool).copied().unwrap_or_default();
        let (since, kept) = match self.amending {
            true => (before_last, before_last),
            false => (last, last),
        };
        self.last_counts.insert(pool, [kept, (counts, clocks_ms)]);
        let (last_counts, last_clocks) = since;
        let per_s = |now: u64, last: u64, now_ms: u64, last_ms: u64| {
            let seconds = now_ms.saturating_sub(last_ms).max(1) as f64 / 1000.0;
            now.saturating_sub(last) as f64 / seconds
        };
        (
            per_s(counts.0, last_counts.0, clocks_ms.0, last_clocks.0),
            per_s(counts.1, last_counts.1, clocks_ms.1, last_clocks.1),
        )
    }
}

/// What a report needs besides the snapshot.
pub struct Context<'a> {
    pub pid: i32,
    /// The executable's name.
    pub binary: &'a str,
    pub build: Option<&'a BuildInfo>,
    pub plans: &'a [PoolPlan],
    /// For the addresses of process `pid`.
    pub symbolizer: &'a mut dyn Symbolize,
    pub history: &'a mut History,
    pub elapsed_ms: u64,
    pub min_age_ms: u64,
    pub sample_gets: Option<f64>,
    pub top: usize,
    pub sort: SortBy,
    /// Tracing windows in force, and the grace each ended epoch's window had.
    pub windows: Option<WindowsReport>,
    pub graces: &'a BTreeMap<u64, Duration>,
    /// The final report of a trace, taken when it stops: see `History::next_report`.
    pub closing: bool,
}

impl Report {
    pub fn build(snapshot: &Snapshot, cx: Context) -> Self {
        cx.history.next_report(cx.closing);
        let mut pools = Vec::new();
        for (index, (state, plan)) in snapshot.pools.iter().zip(cx.plans).enumerate() {
            let symbolizer = &*cx.symbolizer;
            let in_caller = |site: u64| {
                symbolizer
                    .link_address(site)
                    .and_then(|vaddr| plan.in_caller_site(vaddr))
                    .is_some()
            };
            let paths = call_paths(snapshot, &state.groups, &in_caller);
            let doubles: Vec<(u64, Addresses, Addresses)> = state
                .double_puts
                .iter()
                .map(|d| {
                    let second = outer_frames(snapshot, d.stack, d.caller, &in_caller);
                    let first = outer_frames(snapshot, d.first_stack, d.first_caller, &in_caller);
                    (d.count, second, first)
                })
                .collect();
            let unseen_put_sites = plan.inlined_puts.unseen.len();
            let windows = cx.windows.is_some().then(|| Windowed {
                epoch: snapshot.epoch,
                graces: cx.graces,
                pool_p999_ns: hold_quantile(&state.hold_times(), 0.999),
            });
            let mut shown: Vec<(StackReport, &CallPath)> = paths
                .iter()
                .filter(|path| path.held.total() > 0)
                .map(|path| {
                    let trend = cx.history.record(index, plan.kind, path, windows.is_some());
                    let stack = stack_report(
                        snapshot,
                        path,
                        trend,
                        (plan.kind, cx.elapsed_ms, unseen_put_sites),
                        windows.as_ref(),
                    );
                    (stack, path)
                })
                .collect();
            shown.sort_by(|a, b| order(cx.sort, &a.0, &b.0));
            let omitted = shown.len().saturating_sub(cx.top);
            shown.truncate(cx.top);
            let stacks = shown
                .into_iter()
                .map(|(mut stack, path)| {
                    symbolize(&mut stack, path, cx.symbolizer, plan);
                    stack
                })
                .collect();
            let c = state.counters;
            // Under windows, counters count only while probes are live.
            let clocks = match &cx.windows {
                Some(w) => (
                    (w.traced_s * 1000.0) as u64,
                    (w.put_traced_s * 1000.0) as u64,
                ),
                None => (cx.elapsed_ms, cx.elapsed_ms),
            };
            let (gets_per_s, puts_per_s) = cx.history.rates(index, (c.gets, c.puts), clocks);
            let sized = plan.get_probe.flags & SITE_SIZES != 0;
            let (sized_paths, sized_paths_omitted) = match sized {
                true => sized_paths(&paths, cx.top, cx.symbolizer, plan),
                false => (Vec::new(), 0),
            };
            let costs = HitCosts::of(plan);
            pools.push(PoolReport {
                gets_per_s,
                puts_per_s,
                probe_cost_cores: (gets_per_s * costs.get_ns + puts_per_s * costs.put_ns) / 1e9,
                get: plan.get.requested.clone(),
                put: plan.put.requested.clone(),
                kind: plan.kind,
                get_probed: plan.get.function.name.clone(),
                put_probed: plan.put.function.name.clone(),
                outstanding: state.outstanding,
                outstanding_bytes: state.outstanding_bytes,
                counters: c,
                unseen_get_sites: plan.inlined_gets.unseen.len(),
                unseen_put_sites,
                stacks_omitted: omitted,
                stacks,
                double_put_paths: double_put_paths(doubles, cx.symbolizer, plan),
                instances: Vec::new(),
                sizes: sized.then(|| Sizes::new(&state.sizes())),
                sized_paths,
                sized_paths_omitted,
            });
        }
        Report {
            pid: cx.pid,
            binary: cx.binary.to_owned(),
            go_version: cx.build.map(|b| b.go_version.clone()),
            module: cx
                .build
                .and_then(|b| b.module.as_ref())
                .map(|(path, version)| format!("{path} {version}")),
            elapsed_ms: cx.elapsed_ms,
            min_age_ms: cx.min_age_ms,
            sample_gets: cx.sample_gets.filter(|&f| f < 1.0),
            windows: cx.windows,
            pools,
        }
    }

    pub fn to_json(&self) -> String {
        // A derived Serialize of plain data cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The final report in `format`.
    pub fn render(&self, format: ReportFormat, style: Style) -> std::io::Result<Vec<u8>> {
        Ok(match format {
            ReportFormat::Text => render_final(self, style).into_bytes(),
            ReportFormat::Json => (self.to_json() + "\n").into_bytes(),
            ReportFormat::Folded => flame::folded(self).into_bytes(),
            ReportFormat::Svg => flame::svg(self)?,
            ReportFormat::Pprof => pprof::encode(self)?,
        })
    }
}

/// What judging a path under tracing windows needs besides the path.
struct Windowed<'a> {
    epoch: u64,
    graces: &'a BTreeMap<u64, Duration>,
    /// The pool's returned objects' p99.9 hold time.
    pool_p999_ns: Option<u64>,
}

/// `pool`: the pool's kind, how long it has been traced, and its unseen Put sites.
fn stack_report(
    snapshot: &Snapshot,
    path: &CallPath,
    trend: Vec<u64>,
    (kind, elapsed_ms, unseen_put_sites): (PoolKind, u64, usize),
    windows: Option<&Windowed>,
) -> StackReport {
    let held = &path.held;
    let hold_ms = analysis::hold_times(&held.hold);
    let survivors: Vec<WindowSurvivors> = windows.map_or_else(Vec::new, |w| {
        held.survivors
            .iter()
            .map(|(&epoch, s)| WindowSurvivors {
                epoch,
                count: s.count,
                grace: grace_of(w.graces, epoch),
                youngest_age: Duration::from_nanos(
                    snapshot.now_ns.saturating_sub(s.newest_taken_ns),
                ),
            })
            .collect()
    });
    let verdict = analysis::judge(&Evidence {
        outstanding_ages_ns: &held.ages_ns,
        collected: held.collected,
        kind,
        elapsed_ms,
        hold: hold_ms,
        trend: &trend,
        unseen_put_sites,
        windows: windows.map(|w| WindowEvidence {
            survivors: &survivors,
            epoch: w.epoch,
            came_back_unseen: held.came_back_unseen,
            returned_unseen: held.returned_unseen,
            holds: &held.hold,
            pool_p999_ns: w.pool_p999_ns,
        }),
    });
    StackReport {
        leak_score: (verdict.score * 10.0).round() / 10.0,
        reasons: verdict.reasons,
        receiver: (path.receiver != 0).then(|| format!("{:#x}", path.receiver)),
        outstanding: held.count,
        bytes: held.bytes,
        oldest_age_ms: match held.count {
            0 => 0,
            _ => snapshot.now_ns.saturating_sub(held.oldest_taken_ns) / 1_000_000,
        },
        age_ms: analysis::ages(&held.ages_ns),
        hold_ms,
        returned: held.hold.iter().sum(),
        hold_histogram: hold_histogram(&held.hold),
        survivors: held.survivor_count(),
        came_back_unseen: held.came_back_unseen,
        returned_unseen: held.returned_unseen,
        late_puts: held.late_puts,
        collected: held.collected,
        collected_bytes: held.collected_bytes,
        trend,
        sizes: (held.sizes.gets > 0).then(|| Sizes::new(&held.sizes)),
        // Symbolized once the stacks shown are chosen.
        release_paths: Vec::new(),
        frames: Vec::new(),
    }
}

/// The non-empty buckets of a path's hold times.
fn hold_histogram(buckets: &[u64]) -> Vec<HoldBucket> {
    let ms = |ns: u64| ns as f64 / 1e6;
    (buckets.iter().enumerate())
        .filter(|(_, &count)| count > 0)
        .map(|(bucket, &count)| HoldBucket {
            from_ms: ms(hold_bucket_floor(bucket)),
            to_ms: match hold_bucket_ceiling(bucket) {
                u64::MAX => 0.0,
                ceiling => ms(ceiling),
            },
            count,
        })
        .collect()
}

/// The grace the window of `epoch` had; an epoch too old to be remembered gets the oldest
/// remembered.
fn grace_of(graces: &BTreeMap<u64, Duration>, epoch: u64) -> Duration {
    graces
        .get(&epoch)
        .or_else(|| graces.values().next())
        .copied()
        .unwrap_or_default()
}

/// `--sort`: which of two stacks comes first.
pub(crate) fn order(by: SortBy, a: &StackReport, b: &StackReport) -> std::cmp::Ordering {
    let held = |s: &StackReport| s.outstanding + s.collected;
    match by {
        SortBy::Score => b
            .leak_score
            .total_cmp(&a.leak_score)
            .then(held(b).cmp(&held(a))),
        SortBy::Count => held(b).cmp(&held(a)),
        SortBy::Bytes => (b.bytes + b.collected_bytes).cmp(&(a.bytes + a.collected_bytes)),
        SortBy::Age => b.oldest_age_ms.cmp(&a.oldest_age_ms),
    }
}

/// Objects taken through one call path: the same caller of Get, the same frames beyond it
/// and the same pool instance. Which RET of Get they left through does not matter to a
/// user, so groups that differ only there are merged.
struct CallPath {
    taken: Addresses,
    /// The pool instance, 0 when not tracked.
    receiver: u64,
    held: Held,
    /// Objects returned, by the path of the Put that returned them.
    releases: HashMap<PathIdentity, Release>,
}

/// Objects of a call path that came back through one release path.
struct Release {
    given_back: Addresses,
    count: u64,
}

/// What tells one path from another (see [`Addresses::identity`]).
type PathIdentity = (Option<u64>, Vec<u64>);

/// Where a path's objects were taken or given back, as runtime addresses.
#[derive(Clone, Debug, Default)]
struct Addresses {
    /// The probe site, when the stack was captured: one of Get's RETs or Put's entry, or a
    /// call in an inlined copy of them.
    site: Option<u64>,
    /// The site lies in the caller's own code, in an inlined copy of Get or Put: it is the
    /// caller's frame itself, and no immediate caller was read.
    in_caller: bool,
    /// Return addresses beyond the site, innermost first: the immediate caller (unless
    /// `in_caller`), then the frame-pointer walk.
    outer: Vec<u64>,
}

impl Addresses {
    /// The return addresses, and a site in the caller (which says where in it the path is);
    /// a site in Get or Put itself says nothing more.
    fn identity(&self) -> PathIdentity {
        (self.site.filter(|_| self.in_caller), self.outer.clone())
    }
}

/// The addresses of a captured stack and the immediate caller read with it. `in_caller` says
/// whether a site lies in a caller's code.
fn outer_frames(
    snapshot: &Snapshot,
    stack: u64,
    caller: u64,
    in_caller: &dyn Fn(u64) -> bool,
) -> Addresses {
    // A stack that could not be read leaves the path at its caller (stack_failures counts it).
    let frames = snapshot.stack(stack);
    let site = frames.first().copied();
    if site.is_some_and(in_caller) {
        // The walk from the caller's own frame holds every frame beyond it.
        return Addresses {
            site,
            in_caller: true,
            outer: frames.iter().skip(1).copied().collect(),
        };
    }
    // A walk from an entry or a RET starts at the caller's frame: the caller itself, read
    // from [rsp], is missing. Add it unless the frames hold it already.
    let mut outer = Vec::with_capacity(frames.len());
    if frames.get(1) != Some(&caller) {
        outer.push(caller);
    }
    outer.extend(frames.iter().skip(1));
    Addresses {
        site,
        in_caller: false,
        outer,
    }
}

/// Merges groups into call paths.
fn call_paths(
    snapshot: &Snapshot,
    groups: &[tracking::Group],
    in_caller: &dyn Fn(u64) -> bool,
) -> Vec<CallPath> {
    let mut paths: Vec<CallPath> = Vec::new();
    let mut index: HashMap<(u64, PathIdentity), usize> = HashMap::new();
    for group in groups {
        let taken = outer_frames(snapshot, group.stack, group.caller, in_caller);
        let i = *index
            .entry((group.receiver, taken.identity()))
            .or_insert_with(|| {
                paths.push(CallPath {
                    taken: Addresses {
                        site: None,
                        ..taken.clone()
                    },
                    receiver: group.receiver,
                    held: Held::default(),
                    releases: HashMap::new(),
                });
                paths.len() - 1
            });
        let path = &mut paths[i];
        path.taken.site = path.taken.site.or(taken.site);
        path.held.merge(&group.held);
        for &(stack, caller, count) in &group.releases {
            let given_back = outer_frames(snapshot, stack, caller, in_caller);
            let release = path
                .releases
                .entry(given_back.identity())
                .or_insert_with(|| Release {
                    given_back: Addresses {
                        site: None,
                        ..given_back.clone()
                    },
                    count: 0,
                });
            release.given_back.site = release.given_back.site.or(given_back.site);
            release.count += count;
        }
    }
    paths
}

/// Fills in the frames of a chosen stack and of its release paths.
fn symbolize(
    stack: &mut StackReport,
    path: &CallPath,
    symbolizer: &mut dyn Symbolize,
    plan: &PoolPlan,
) {
    // After the call to the pool's Get the site is looked up as the return address it is.
    stack.frames = frames(
        symbolizer,
        &plan.get.function,
        &path.taken,
        AddressKind::ReturnAddress,
    );
    let returned: u64 = path.releases.values().map(|r| r.count).sum();
    let mut releases: Vec<&Release> = path.releases.values().collect();
    releases.sort_by_key(|release| std::cmp::Reverse(release.count));
    stack.release_paths = releases
        .into_iter()
        .map(|release| ReleasePath {
            share: release.count as f64 / returned.max(1) as f64,
            frames: frames(
                symbolizer,
                &plan.put.function,
                &release.given_back,
                AddressKind::Executing,
            ),
        })
        .collect();
}

/// The `top` paths with the most unused capacity, symbolized, and how many were left out.
fn sized_paths(
    paths: &[CallPath],
    top: usize,
    symbolizer: &mut dyn Symbolize,
    plan: &PoolPlan,
) -> (Vec<SizedPath>, usize) {
    let mut sized: Vec<&CallPath> = paths.iter().filter(|p| p.held.sizes.gets > 0).collect();
    sized.sort_by_key(|p| {
        let sizes = Sizes::new(&p.held.sizes);
        std::cmp::Reverse((sizes.unused_bytes(), sizes.capacity_bytes))
    });
    let omitted = sized.len().saturating_sub(top);
    let shown = sized.into_iter().take(top).map(|path| SizedPath {
        sizes: Sizes::new(&path.held.sizes),
        receiver: (path.receiver != 0).then(|| format!("{:#x}", path.receiver)),
        frames: frames(
            symbolizer,
            &plan.get.function,
            &path.taken,
            AddressKind::ReturnAddress,
        ),
    });
    (shown.collect(), omitted)
}

/// Double Puts by path, the most frequent first, each with the frames of both Puts.
fn double_put_paths(
    doubles: Vec<(u64, Addresses, Addresses)>,
    symbolizer: &mut dyn Symbolize,
    plan: &PoolPlan,
) -> Vec<DoublePutPath> {
    let put = &plan.put.function;
    let mut paths: Vec<DoublePutPath> = doubles
        .into_iter()
        .map(|(count, second, first)| DoublePutPath {
            count,
            frames: frames(symbolizer, put, &second, AddressKind::Executing),
            first_put_frames: frames(symbolizer, put, &first, AddressKind::Executing),
        })
        .collect();
    paths.sort_by_key(|path| std::cmp::Reverse(path.count));
    paths
}

/// The frames of a path, innermost first: the probed function itself (at its entry line),
/// its caller (which the frame-pointer walk misses at a probe, field notes §4), and on out.
/// A site in the caller's code gives both at once, the inlined Get or Put and the caller,
/// looked up as `in_caller_site` says.
fn frames(
    symbolizer: &mut dyn Symbolize,
    function: &Function,
    addresses: &Addresses,
    in_caller_site: AddressKind,
) -> Vec<Frame> {
    let mut frames = match (addresses.site, addresses.in_caller) {
        (Some(site), true) => symbolizer.frames(site, in_caller_site),
        (site, _) => {
            match site.and_then(|site| symbolizer.runtime_entry(site, function)) {
                Some(entry) => symbolizer.frames(entry, AddressKind::Executing),
                // The stack was not captured (counted in stack_failures): still name the function.
                None => vec![Frame {
                    address: 0,
                    function: function.name.clone(),
                    file: None,
                    line: None,
                    inlined: false,
                }],
            }
        }
    };
    for &address in addresses.outer.iter().filter(|&&a| a != 0) {
        frames.extend(symbolizer.frames(address, AddressKind::ReturnAddress));
    }
    frames
}

#[cfg(test)]
mod tests;
