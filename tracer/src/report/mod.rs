//! Reporting: turning a snapshot of the kernel maps into call paths a user can read, as text
//! or as the JSON other tools parse (field names are a contract: add, never rename).

mod text;

use std::collections::HashMap;

use serde::Serialize;

pub use text::{render_final, render_interval};

use crate::{
    gobin::BuildInfo,
    probes::PoolPlan,
    process::Process,
    symbolize::{AddressKind, Frame, Symbolizer},
    tracking::{self, Snapshot},
};

#[derive(Clone, Debug, Serialize)]
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
    pub pools: Vec<PoolReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolReport {
    /// The Get and Put functions as the user named them.
    pub get: String,
    pub put: String,
    /// The symbols actually probed (a generic name resolves to its shape function).
    pub get_probed: String,
    pub put_probed: String,
    pub gets: u64,
    pub puts: u64,
    pub outstanding: u64,
    pub outstanding_bytes: u64,
    pub unmatched_puts: u64,
    pub dropped: u64,
    pub nil_gets: u64,
    pub stack_failures: u64,
    /// Objects dropped without a Put and garbage-collected (their address came back from a
    /// later Get while still outstanding): certain leaks.
    pub collected: u64,
    pub collected_dropped: u64,
    pub read_faults: u64,
    /// Call paths that hold outstanding objects or dropped some without a Put, those with
    /// the most such objects first.
    pub stacks: Vec<StackReport>,
    /// Call paths left out by `--top`.
    pub stacks_omitted: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct StackReport {
    /// The pool instance (Get's receiver, hex) the objects came from, where instances are
    /// told apart (generic pools, `--receiver`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// Objects out of the pool now (at least `min_age_ms` old).
    pub outstanding: u64,
    pub bytes: u64,
    /// Age of the oldest of them; 0 when none is outstanding.
    pub oldest_age_ms: u64,
    /// Objects from this path that were dropped without a Put and garbage-collected.
    pub collected: u64,
    pub collected_bytes: u64,
    /// Innermost first: the Get function, its caller, and so on out.
    pub frames: Vec<Frame>,
}

/// What a report needs besides the snapshot.
pub struct Context<'a, 'b> {
    pub process: &'a Process,
    pub build: Option<&'a BuildInfo>,
    pub plans: &'a [PoolPlan],
    pub symbolizer: &'a mut Symbolizer<'b>,
    pub ebpf: &'a aya::Ebpf,
    pub elapsed_ms: u64,
    pub min_age_ms: u64,
    pub top: usize,
}

impl Report {
    pub fn build(snapshot: &Snapshot, cx: Context) -> Self {
        let pools = snapshot
            .pools
            .iter()
            .zip(cx.plans)
            .map(|(state, plan)| {
                let paths = call_paths(cx.ebpf, &state.groups);
                let stacks: Vec<StackReport> = paths
                    .iter()
                    .take(cx.top)
                    .map(|path| StackReport {
                        receiver: (path.receiver != 0).then(|| format!("{:#x}", path.receiver)),
                        outstanding: path.count,
                        bytes: path.bytes,
                        oldest_age_ms: match path.count {
                            0 => 0,
                            _ => snapshot.now_ns.saturating_sub(path.oldest_taken_ns) / 1_000_000,
                        },
                        collected: path.collected,
                        collected_bytes: path.collected_bytes,
                        frames: path_frames(cx.process, cx.symbolizer, plan, path),
                    })
                    .collect();
                let c = state.counters;
                PoolReport {
                    get: plan.get.requested.clone(),
                    put: plan.put.requested.clone(),
                    get_probed: plan.get.function.name.clone(),
                    put_probed: plan.put.function.name.clone(),
                    gets: c.gets,
                    puts: c.puts,
                    outstanding: state.outstanding,
                    outstanding_bytes: state.outstanding_bytes,
                    unmatched_puts: c.unmatched_puts,
                    dropped: c.dropped,
                    nil_gets: c.nil_gets,
                    stack_failures: c.stack_failures,
                    collected: c.collected,
                    collected_dropped: c.collected_dropped,
                    read_faults: c.read_faults,
                    stacks_omitted: paths.len().saturating_sub(stacks.len()),
                    stacks,
                }
            })
            .collect();
        Report {
            pid: cx.process.pid(),
            binary: cx.process.exe_name().to_owned(),
            go_version: cx.build.map(|b| b.go_version.clone()),
            module: cx
                .build
                .and_then(|b| b.module.as_ref())
                .map(|(path, version)| format!("{path} {version}")),
            elapsed_ms: cx.elapsed_ms,
            min_age_ms: cx.min_age_ms,
            pools,
        }
    }

    pub fn to_json(&self) -> String {
        // A derived Serialize of plain data cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Objects taken through one call path: the same caller of Get and the same frames beyond
/// it. Which RET of Get they left through does not matter to a user, so groups that differ
/// only there are merged.
struct CallPath {
    /// Runtime address of one of Get's RETs, when the stack was captured.
    get_ret: Option<u64>,
    /// The immediate caller's return address, then the frame-pointer walk beyond it.
    outer: Vec<u64>,
    /// The pool instance, 0 when not tracked.
    receiver: u64,
    count: u64,
    bytes: u64,
    oldest_taken_ns: u64,
    collected: u64,
    collected_bytes: u64,
}

impl CallPath {
    /// Objects this path failed to give back, or has not yet.
    fn held(&self) -> u64 {
        self.count + self.collected
    }
}

/// Merges groups into call paths, most objects held or collected first, then oldest first.
fn call_paths(ebpf: &aya::Ebpf, groups: &[tracking::Group]) -> Vec<CallPath> {
    let mut paths: Vec<CallPath> = Vec::new();
    let mut index: HashMap<(u64, Vec<u64>), usize> = HashMap::new();
    for group in groups {
        // A stack that cannot be read leaves the path at its caller (stack_failures counts it).
        let stack = tracking::stack(ebpf, group.stack).unwrap_or_default();
        let mut outer = vec![group.caller];
        outer.extend(stack.iter().skip(1));
        let i = *index
            .entry((group.receiver, outer.clone()))
            .or_insert_with(|| {
                paths.push(CallPath {
                    get_ret: None,
                    outer,
                    receiver: group.receiver,
                    count: 0,
                    bytes: 0,
                    oldest_taken_ns: u64::MAX,
                    collected: 0,
                    collected_bytes: 0,
                });
                paths.len() - 1
            });
        let path = &mut paths[i];
        path.get_ret = path.get_ret.or(stack.first().copied());
        path.count += group.count;
        path.bytes += group.bytes;
        path.oldest_taken_ns = path.oldest_taken_ns.min(group.oldest_taken_ns);
        path.collected += group.collected;
        path.collected_bytes += group.collected_bytes;
    }
    paths.sort_by(|a, b| {
        b.held()
            .cmp(&a.held())
            .then(a.oldest_taken_ns.cmp(&b.oldest_taken_ns))
    });
    paths
}

/// The frames of a call path, innermost first: Get itself (at its entry line), its caller
/// (which the frame-pointer walk misses at a RET, field notes §4), and so on out.
fn path_frames(
    process: &Process,
    symbolizer: &mut Symbolizer,
    plan: &PoolPlan,
    path: &CallPath,
) -> Vec<Frame> {
    let get = &plan.get.function;
    let mut frames = match path
        .get_ret
        .and_then(|ret| symbolizer.runtime_entry(process, ret, get))
    {
        Some(entry) => symbolizer.frames(process, entry, AddressKind::Executing),
        None => vec![Frame {
            address: 0,
            function: get.name.clone(),
            file: None,
            line: None,
            inlined: false,
        }],
    };
    for &address in path.outer.iter().filter(|&&a| a != 0) {
        frames.extend(symbolizer.frames(process, address, AddressKind::ReturnAddress));
    }
    frames
}
