//! `/metrics`: what the agent publishes, in the OpenMetrics text format that Prometheus
//! scrapes, encoded by `prometheus-client` from the published reports at each scrape.
//!
//! The metric names and their labels are a contract (see the README's "Run it on a fleet").
//! Series per traced process: 5 of its own; per pool 7 counters and gauges, 6 lost-event
//! reasons and the hold-time histogram's 30 lines (28 buckets, sum, count); per exported
//! call path 4, and 1 for `path="other"` (outstanding only). With `--top-paths K` and P pools that is at most
//! 5 + P x (44 + 4K) series a process, plus 2 + one per failing executable for the agent.
//! A pool whose books are read (`used`, `limit`) adds up to 3 per instance.

use std::{collections::BTreeMap, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType, TypedMetric},
    registry::Registry,
};
use tracer_common::{hold_bucket_floor, PoolCounters, HOLD_BUCKETS};

use super::TargetView;
use crate::{report::PoolReport, symbolize::Frame};

/// What one scrape encodes: the targets published, and the agent's own health.
#[derive(Debug)]
pub struct Scrape {
    pub targets: Vec<Arc<TargetView>>,
    pub health: Health,
}

/// The agent's own numbers.
#[derive(Debug, Default, Clone)]
pub struct Health {
    /// Processes that could not be traced, by executable name.
    pub attach_failures: BTreeMap<String, u64>,
    /// Matching processes left untraced because `--max-targets` were traced already.
    pub skipped: u64,
    /// Kernel memory of the maps every traced process shares.
    pub kernel_memory: u64,
    /// Objects each process may have tracked at once.
    pub object_share: u64,
}

/// The OpenMetrics text of `scrape`.
pub fn encode(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// A per-pool family and how to read its value from the pool's report.
type PerPool<'a> = (&'a Family<'a>, fn(&PoolReport) -> u64);

/// Labels every per-process series has.
type Labels = Vec<(&'static str, String)>;

fn target_labels(target: &TargetView) -> Labels {
    vec![
        ("pid", target.identity.pid.to_string()),
        ("exe", target.identity.exe_name().to_owned()),
        ("container", target.container.clone().unwrap_or_default()),
    ]
}

fn with(labels: &Labels, more: &[(&'static str, &str)]) -> Labels {
    let mut all = labels.clone();
    all.extend(more.iter().map(|&(k, v)| (k, v.to_owned())));
    all
}

/// One metric family: its descriptor once, then each series.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    metric_type: MetricType,
}

const GETS: Family = Family::counter("pooltrace_gets", "Get calls seen (while Get is probed).");
const PUTS: Family = Family::counter("pooltrace_puts", "Put calls seen.");
const UNMATCHED: Family = Family::counter(
    "pooltrace_unmatched_puts",
    "Puts of objects not taken while traced (before attach, or while Get was not probed).",
);
const COLLECTED: Family = Family::counter(
    "pooltrace_collected_objects",
    "Objects dropped without a Put and garbage-collected.",
);
const DOUBLE_PUTS: Family = Family::counter(
    "pooltrace_double_puts",
    "Puts of an object already back in its pool (--double-puts).",
);
const LOST: Family = Family::counter(
    "pooltrace_lost_events",
    "Events not recorded, by why: a kernel map or the stack reader was full or failed.",
);
const OUTSTANDING: Family = Family::gauge(
    "pooltrace_outstanding_objects",
    "Objects out of the pool now: taken by Get, not yet given back.",
);
const OUTSTANDING_BYTES: Family = Family::gauge(
    "pooltrace_outstanding_bytes",
    "Bytes of the objects out of the pool now.",
);
const HOLD: Family = Family {
    name: "pooltrace_hold_seconds",
    help: "How long objects that came back were held, Get to Put (sum estimated from the buckets).",
    metric_type: MetricType::Histogram,
};
const PATH_OUTSTANDING: Family = Family::gauge(
    "pooltrace_path_outstanding_objects",
    "Objects out of the pool now, by the call path that took them.",
);
const PATH_COLLECTED: Family = Family::counter(
    "pooltrace_path_collected_objects",
    "Objects dropped without a Put and garbage-collected, by the call path that took them.",
);
const PATH_SCORE: Family = Family::gauge(
    "pooltrace_path_leak_score",
    "How likely the call path leaks, 0 to 100.",
);
const PATH_INFO: Family = Family {
    name: "pooltrace_path",
    help: "What a path id stands for: Get's caller and up to 8 frames, innermost first.",
    metric_type: MetricType::Info,
};
const REQUESTED: Family = Family::counter(
    "pooltrace_requested_bytes",
    "Bytes Get was asked for, in pools whose Get takes a size.",
);
const CAPACITY: Family = Family::counter(
    "pooltrace_capacity_bytes",
    "Capacity Get handed out for those requests: a bucket rounds a request up.",
);
const POOL_USED: Family = Family::gauge(
    "pooltrace_pool_used_bytes",
    "What a pool instance counts as lent out now, read from the process (used in the pools file).",
);
const POOL_LIMIT: Family = Family::gauge(
    "pooltrace_pool_limit_bytes",
    "The most a pool instance lends at once, read from the process (limit in the pools file).",
);
const POOL_EXHAUSTION: Family = Family::gauge(
    "pooltrace_pool_exhaustion_seconds",
    "Seconds until a pool instance reaches its limit at the rate it filled over the last minute; absent when it is not filling.",
);
const TARGETS: Family = Family::gauge("pooltrace_targets_attached", "Processes traced now.");
const FAILURES: Family = Family::counter(
    "pooltrace_attach_failures",
    "Processes that matched but could not be traced (not Go, a pool missing, ...).",
);
const SKIPPED: Family = Family::counter(
    "pooltrace_targets_skipped",
    "Matching processes not traced because --max-targets were traced already.",
);
const FRACTION: Family = Family::gauge(
    "pooltrace_get_sampling_fraction",
    "The share of the time Get is probed (tracing windows, or --continuous with --budget or --sample-gets).",
);
const DUTY: Family = Family::gauge(
    "pooltrace_window_duty",
    "Under tracing windows, the window over the period: the share of the time Get is probed (1 while the budget allows every probe all the time).",
);
const TRACED: Family = Family::counter(
    "pooltrace_traced_seconds",
    "Seconds Get has been probed since attach: the counters count only then, so a rate is a counter's increase over this one's.",
);
const COST: Family = Family::gauge(
    "pooltrace_probe_cost_cores",
    "The probes' estimated cost to the process, in cores, from its Get and Put rates.",
);
const HITS: Family = Family::counter("pooltrace_probe_hits", "Probe hits: Gets and Puts seen.");
const PROBES: Family = Family::gauge("pooltrace_probes_attached", "Uprobes attached.");
const KERNEL_BYTES: Family = Family::gauge(
    "pooltrace_kernel_map_bytes",
    "Memory the kernel holds for the agent's maps, which every traced process shares.",
);
const OBJECT_SHARE: Family = Family::gauge(
    "pooltrace_tracked_objects_limit",
    "Objects each process may have tracked at once (--max-objects / --max-targets); Gets beyond it count in pooltrace_lost_events_total.",
);

impl<'a> Family<'a> {
    const fn counter(name: &'a str, help: &'a str) -> Self {
        Self {
            name,
            help,
            metric_type: MetricType::Counter,
        }
    }

    const fn gauge(name: &'a str, help: &'a str) -> Self {
        Self {
            name,
            help,
            metric_type: MetricType::Gauge,
        }
    }

    /// Encodes the descriptor, then `series` (labels and value) in order.
    fn encode<M: EncodeMetric>(
        &self,
        encoder: &mut DescriptorEncoder,
        series: impl IntoIterator<Item = (Labels, M)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.metric_type)?;
        for (labels, value) in series {
            if labels.is_empty() {
                // A family without labels has its one series; `{}` is not written.
                return value.encode(metric);
            }
            value.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Each pool of each target, with the target's labels plus `pool`.
fn pools(
    targets: &[Arc<TargetView>],
) -> impl Iterator<Item = (&TargetView, usize, &PoolReport, Labels)> {
    targets.iter().flat_map(|target| {
        let labels = target_labels(target);
        target
            .report
            .pools
            .iter()
            .enumerate()
            .map(move |(i, pool)| (&**target, i, pool, with(&labels, &[("pool", &pool.get)])))
    })
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The kinds of loss the report counts, as `reason` labels.
fn losses(c: &PoolCounters) -> [(&'static str, u64); 6] {
    [
        ("objects_map_full", c.dropped),
        ("collected_map_full", c.collected_dropped),
        ("stack_failed", c.stack_failures),
        ("read_fault", c.read_faults),
        ("path_maps_full", c.paths_dropped),
        ("stream_buffer_full", c.stream_lost),
    ]
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let targets = &self.targets;
        let by_pool = |f: fn(&PoolReport) -> u64| {
            pools(targets).map(move |(_, _, pool, labels)| (labels, f(pool)))
        };
        let counters: [PerPool; 5] = [
            (&GETS, |p| p.counters.gets),
            (&PUTS, |p| p.counters.puts),
            (&UNMATCHED, |p| p.counters.unmatched_puts),
            (&COLLECTED, |p| p.counters.collected),
            (&DOUBLE_PUTS, |p| p.counters.double_puts),
        ];
        for (family, value) in counters {
            family.encode(e, by_pool(value).map(|(l, v)| (l, counter(v))))?;
        }
        LOST.encode(
            e,
            pools(targets).flat_map(|(_, _, pool, labels)| {
                losses(&pool.counters)
                    .map(|(reason, n)| (with(&labels, &[("reason", reason)]), counter(n)))
            }),
        )?;
        let gauges: [PerPool; 2] = [
            (&OUTSTANDING, |p| p.outstanding),
            (&OUTSTANDING_BYTES, |p| p.outstanding_bytes),
        ];
        for (family, value) in gauges {
            family.encode(e, by_pool(value).map(|(l, v)| (l, gauge(v))))?;
        }
        HOLD.encode(
            e,
            pools(targets).map(|(target, i, _, labels)| {
                let buckets = target.hold_buckets.get(i).map_or(&[][..], Vec::as_slice);
                (labels, HoldHistogram::from_kernel(buckets))
            }),
        )?;
        let sized =
            || pools(targets).filter_map(|(_, _, pool, labels)| Some((labels, pool.sizes?)));
        REQUESTED.encode(e, sized().map(|(l, s)| (l, counter(s.requested_bytes))))?;
        CAPACITY.encode(e, sized().map(|(l, s)| (l, counter(s.capacity_bytes))))?;
        self.encode_books(e)?;
        self.encode_paths(e)?;
        self.encode_health(e)
    }
}

impl Scrape {
    /// Each pool instance's own books, where they were read.
    fn encode_books(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let books = || {
            pools(&self.targets).flat_map(|(_, _, pool, labels)| {
                (pool.instances.iter())
                    .map(move |i| (with(&labels, &[("pool_instance", &i.address)]), i))
            })
        };
        POOL_USED.encode(
            e,
            books().filter_map(|(l, i)| Some((l, gauge(i.used_bytes?)))),
        )?;
        POOL_LIMIT.encode(
            e,
            books().filter_map(|(l, i)| Some((l, gauge(i.limit_bytes?)))),
        )?;
        POOL_EXHAUSTION.encode(
            e,
            books().filter_map(|(l, i)| Some((l, ConstGauge::new(i.exhausts_in_s?)))),
        )
    }

    fn encode_paths(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let targets = &self.targets;
        // Each pool's exported paths, then what the rest hold together: built once, encoded
        // into four families.
        let rows: Vec<PathRow> = pools(targets)
            .flat_map(|(_, _, pool, labels)| {
                // Pool instances of one generic pool can share a path's frames: one series
                // each would collide, so they are summed under the path (the likeliest score).
                let mut rows: Vec<PathRow> = Vec::new();
                for stack in &pool.stacks {
                    let id = path_id(&stack.frames);
                    let same = rows.iter_mut().find(|r| r.id == id);
                    match same {
                        Some(row) => {
                            row.outstanding += stack.outstanding;
                            row.collected += stack.collected;
                            row.score = row.score.map(|s| s.max(stack.leak_score));
                        }
                        None => rows.push(PathRow {
                            labels: with(&labels, &[("path", &id)]),
                            id,
                            outstanding: stack.outstanding,
                            collected: stack.collected,
                            score: Some(stack.leak_score),
                            frames: Some(&stack.frames),
                        }),
                    }
                }
                let shown: u64 = rows.iter().map(|r| r.outstanding).sum();
                rows.push(PathRow {
                    labels: with(&labels, &[("path", "other")]),
                    id: "other".to_owned(),
                    outstanding: pool.outstanding.saturating_sub(shown),
                    // Not exported: what it sums shrinks when a path joins the top K, and a
                    // counter that goes down reads as a reset.
                    collected: 0,
                    score: None,
                    frames: None,
                });
                rows
            })
            .collect();
        let paths = || rows.iter().filter(|r| r.frames.is_some());
        PATH_OUTSTANDING.encode(
            e,
            rows.iter()
                .map(|r| (r.labels.clone(), gauge(r.outstanding))),
        )?;
        PATH_COLLECTED.encode(e, paths().map(|r| (r.labels.clone(), counter(r.collected))))?;
        PATH_SCORE.encode(
            e,
            paths().filter_map(|r| Some((r.labels.clone(), ConstGauge::new(r.score?)))),
        )?;
        PATH_INFO.encode(
            e,
            paths().filter_map(|r| {
                let frames = r.frames?;
                let info = vec![("caller", caller(frames)), ("frames", frame_list(frames))];
                Some((r.labels.clone(), Info(info)))
            }),
        )
    }

    fn encode_health(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live = || self.targets.iter().filter(|t| t.exited.is_none());
        TARGETS.encode(e, [(Vec::new(), gauge(live().count() as u64))])?;
        FAILURES.encode(
            e,
            self.health
                .attach_failures
                .iter()
                .map(|(exe, &n)| (vec![("exe", exe.clone())], counter(n))),
        )?;
        SKIPPED.encode(e, [(Vec::new(), counter(self.health.skipped))])?;
        KERNEL_BYTES.encode(e, [(Vec::new(), gauge(self.health.kernel_memory))])?;
        OBJECT_SHARE.encode(e, [(Vec::new(), gauge(self.health.object_share))])?;
        let each = || self.targets.iter().map(|t| (t, target_labels(t)));
        FRACTION.encode(
            e,
            each().map(|(t, l)| (l, ConstGauge::new(t.sample_fraction))),
        )?;
        COST.encode(e, each().map(|(t, l)| (l, ConstGauge::new(t.cost_cores))))?;
        let windows = || each().filter_map(|(t, l)| Some((t.report.windows.as_ref()?, l)));
        DUTY.encode(e, windows().map(|(w, l)| (l, ConstGauge::new(w.duty))))?;
        TRACED.encode(
            e,
            each().map(|(t, l)| {
                let seconds = (t.report.windows.as_ref())
                    .map_or(t.report.elapsed_ms as f64 / 1000.0, |w| w.traced_s);
                (l, ConstCounter::new(seconds))
            }),
        )?;
        HITS.encode(
            e,
            each().map(|(t, l)| {
                let hits = t.report.pools.iter();
                (
                    l,
                    counter(hits.map(|p| p.counters.gets + p.counters.puts).sum()),
                )
            }),
        )?;
        PROBES.encode(e, each().map(|(t, l)| (l, gauge(t.probes as u64))))
    }
}

/// One `path` series of a pool.
struct PathRow<'a> {
    labels: Labels,
    /// The `path` label.
    id: String,
    outstanding: u64,
    collected: u64,
    /// None for `other`.
    score: Option<f64>,
    frames: Option<&'a [Frame]>,
}

/// A short id for a call path that stays the same for the same stack in every scrape, every
/// process of the same build, and every run of the agent: FNV-1a over its functions and
/// lines (never its addresses, which move with ASLR), 48 bits in hex.
pub fn path_id(frames: &[Frame]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for frame in frames {
        let line = frame.line.unwrap_or(0).to_le_bytes();
        for byte in frame.function.bytes().chain(line).chain([0]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{:012x}", hash >> 16)
}

/// Get's immediate caller: the first frame past the pool's own Get.
fn caller(frames: &[Frame]) -> String {
    frames
        .get(1)
        .or(frames.first())
        .map(|f| f.function.clone())
        .unwrap_or_default()
}

/// Up to 8 function names, innermost first, joined by `;`.
fn frame_list(frames: &[Frame]) -> String {
    let names: Vec<&str> = frames.iter().take(8).map(|f| f.function.as_str()).collect();
    names.join(";")
}

/// An OpenMetrics info series: its labels, value 1.
#[derive(Debug)]
struct Info(Labels);

impl TypedMetric for Info {
    const TYPE: MetricType = MetricType::Info;
}

impl EncodeMetric for Info {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_info(&self.0)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Info
    }
}

/// The kernel's half-octave hold-time buckets, regrouped into octaves from 1 us to 64 s.
#[derive(Debug)]
struct HoldHistogram {
    sum_seconds: f64,
    count: u64,
    /// (upper bound in seconds, objects in this bucket alone); the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
}

/// Octave bounds exported: 2^10 ns (~1 us) to 2^36 ns (~69 s).
const FIRST_OCTAVE: usize = 10;
const LAST_OCTAVE: usize = 36;

impl HoldHistogram {
    fn from_kernel(kernel: &[u64]) -> Self {
        let mut buckets = Vec::with_capacity(LAST_OCTAVE - FIRST_OCTAVE + 2);
        let mut from = 0;
        // Kernel bucket 2e starts at 2^e ns, so the buckets below it end there.
        for octave in FIRST_OCTAVE..=LAST_OCTAVE {
            let to = (2 * octave).min(kernel.len());
            let count = kernel.get(from..to).map_or(0, |b| b.iter().sum());
            buckets.push(((1u64 << octave) as f64 / 1e9, count));
            from = to;
        }
        buckets.push((f64::MAX, kernel.get(from..).map_or(0, |b| b.iter().sum())));
        let sum_seconds = kernel
            .iter()
            .enumerate()
            .map(|(b, &n)| {
                let low = hold_bucket_floor(b) as f64;
                let high = if b + 1 < HOLD_BUCKETS {
                    hold_bucket_floor(b + 1) as f64
                } else {
                    low
                };
                n as f64 * (low + high) / 2.0 / 1e9
            })
            .sum();
        Self {
            sum_seconds,
            count: kernel.iter().sum(),
            buckets,
        }
    }
}

impl TypedMetric for HoldHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HoldHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_seconds,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_buckets_regroup_into_cumulative_octaves() {
        let mut kernel = vec![0u64; HOLD_BUCKETS];
        kernel[tracer_common::hold_bucket(500)] = 2; // 0.5 us: under the first bound
        kernel[tracer_common::hold_bucket(3_000)] = 3; // 3 us: under 2^12 ns
        kernel[tracer_common::hold_bucket(100_000_000_000)] = 1; // 100 s: +Inf
        let h = HoldHistogram::from_kernel(&kernel);
        assert_eq!(h.count, 6);
        assert_eq!(h.buckets.len(), LAST_OCTAVE - FIRST_OCTAVE + 2);
        assert_eq!(h.buckets[0], (1024e-9, 2));
        assert_eq!(h.buckets[2], (4096e-9, 3));
        assert_eq!(h.buckets.last(), Some(&(f64::MAX, 1)));
        assert_eq!(h.buckets.iter().map(|b| b.1).sum::<u64>(), 6);
    }

    #[test]
    fn path_ids_follow_functions_and_lines_not_addresses() {
        let frame = |address, function: &str, line| Frame {
            address,
            function: function.into(),
            file: None,
            line: Some(line),
            inlined: false,
        };
        let a = [
            frame(0x1000, "pool.Get", 10),
            frame(0x2000, "main.handle", 42),
        ];
        let moved = [
            frame(0x5000, "pool.Get", 10),
            frame(0x6000, "main.handle", 42),
        ];
        let other_line = [
            frame(0x1000, "pool.Get", 10),
            frame(0x2000, "main.handle", 43),
        ];
        assert_eq!(path_id(&a), path_id(&moved));
        assert_ne!(path_id(&a), path_id(&other_line));
        assert_eq!(path_id(&a).len(), 12);
    }
}
