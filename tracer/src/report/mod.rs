//! Reporting: turning a snapshot of the kernel maps into call paths a user can read, as text
//! or as the JSON other tools parse (field names are a contract: add, never rename).

mod text;

use serde::Serialize;

pub use text::{render_interval, render_final};

use crate::{
    probes::PoolPlan,
    process::Process,
    symbolize::{AddressKind, Frame, Symbolizer},
    tracking::{self, Snapshot},
};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pid: i32,
    pub binary: String,
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
    pub reissued: u64,
    pub read_faults: u64,
    /// Call paths holding outstanding objects, most outstanding first.
    pub stacks: Vec<StackReport>,
    /// Call paths left out by `--top`.
    pub stacks_omitted: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct StackReport {
    pub outstanding: u64,
    pub bytes: u64,
    pub oldest_age_ms: u64,
    /// Innermost first: the Get function, its caller, and so on out.
    pub frames: Vec<Frame>,
}

/// What a report needs besides the snapshot.
pub struct Context<'a, 'b> {
    pub process: &'a Process,
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
                let stacks: Vec<StackReport> = state
                    .groups
                    .iter()
                    .take(cx.top)
                    .map(|group| StackReport {
                        outstanding: group.count,
                        bytes: group.bytes,
                        oldest_age_ms: snapshot.now_ns.saturating_sub(group.oldest_taken_ns) / 1_000_000,
                        frames: acquire_frames(cx.ebpf, cx.process, cx.symbolizer, plan, group),
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
                    reissued: c.reissued,
                    read_faults: c.read_faults,
                    stacks_omitted: state.groups.len().saturating_sub(stacks.len()),
                    stacks,
                }
            })
            .collect();
        Report {
            pid: cx.process.pid(),
            binary: cx.process.exe_name().to_owned(),
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

/// The acquiring call path: the Get's RET (first stack entry), then the immediate caller,
/// which the frame-pointer walk misses at a RET (field notes §4), then the rest of the walk.
fn acquire_frames(
    ebpf: &aya::Ebpf,
    process: &Process,
    symbolizer: &mut Symbolizer,
    plan: &PoolPlan,
    group: &tracking::Group,
) -> Vec<Frame> {
    let stack = tracking::stack(ebpf, group.stack_id).unwrap_or_default();
    let mut frames = match stack.first() {
        Some(&innermost) => symbolizer.frames(process, innermost, AddressKind::Executing),
        // The stack was not captured (counted in stack_failures): still name the Get.
        None => vec![Frame {
            address: 0,
            function: plan.get.function.name.clone(),
            file: None,
            line: None,
            inlined: false,
        }],
    };
    if group.caller != 0 {
        frames.extend(symbolizer.frames(process, group.caller, AddressKind::ReturnAddress));
    }
    for &address in stack.iter().skip(1) {
        frames.extend(symbolizer.frames(process, address, AddressKind::ReturnAddress));
    }
    frames
}
