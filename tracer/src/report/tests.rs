//! Reports built from hand-made snapshots: no root, no process, no binary. The symbolizer
//! names addresses from a table, and runtime addresses are link addresses (no load bias).

use std::collections::HashMap;

use serde_json::Value;
use tracer_common::ProbeSite;

use super::*;
use crate::{
    gobin::ResolvedFunction,
    probes::{inlined::Inlined, keyspec::Side, sites::Site},
    tracking::{Group, PoolState},
};

const GET: u64 = 0x1000;
const GET_RET_A: u64 = 0x1050;
const GET_RET_B: u64 = 0x1080;
const PUT: u64 = 0x2000;
/// Return addresses in the callers.
const HANDLER: u64 = 0x5010;
const RELEASER: u64 = 0x7010;
const OTHER_RELEASER: u64 = 0x7020;
const MAIN: u64 = 0x6010;

const SECOND_NS: u64 = 1_000_000_000;

/// Names addresses from a table; an address not in it is named by its value.
struct Names(HashMap<u64, &'static str>);

impl Names {
    fn new() -> Self {
        Self(HashMap::from([
            (GET, "pool.Get"),
            (PUT, "pool.Put"),
            (HANDLER, "main.handler"),
            (RELEASER, "main.release"),
            (OTHER_RELEASER, "main.releaseOther"),
            (MAIN, "main.main"),
        ]))
    }
}

impl Symbolize for Names {
    fn frames(&mut self, address: u64, _kind: AddressKind) -> Vec<Frame> {
        let function = self
            .0
            .get(&address)
            .map_or_else(|| format!("{address:#x}"), |name| (*name).to_owned());
        vec![Frame {
            address,
            function,
            file: Some("/src/main.go".to_owned()),
            line: Some(1),
            inlined: false,
        }]
    }

    fn runtime_entry(&self, _inside: u64, function: &Function) -> Option<u64> {
        Some(function.addr)
    }

    fn link_address(&self, address: u64) -> Option<u64> {
        Some(address)
    }
}

fn function(name: &str, addr: u64) -> ResolvedFunction {
    ResolvedFunction {
        requested: name.to_owned(),
        function: Function {
            name: name.to_owned(),
            addr,
            size: 0x100,
        },
        dictionary: None,
        inlined_only: false,
    }
}

fn site(addr: u64) -> Site {
    Site {
        addr,
        instruction: "ret".to_owned(),
        emulated: true,
        morestack_flags: 0,
    }
}

fn nothing_inlined(function: &str, side: Side) -> Inlined {
    Inlined {
        function: function.to_owned(),
        side,
        sites: Vec::new(),
        unseen: Vec::new(),
        traced_copies: 0,
    }
}

fn plan(kind: PoolKind) -> PoolPlan {
    PoolPlan {
        get: function("pool.Get", GET),
        put: function("pool.Put", PUT),
        get_sites: vec![site(GET_RET_A), site(GET_RET_B)],
        put_site: Some(site(PUT)),
        get_entry_site: None,
        get_probe: ProbeSite::default(),
        put_probe: ProbeSite::default(),
        kind,
        inlined_gets: nothing_inlined("pool.Get", Side::Get),
        inlined_puts: nothing_inlined("pool.Put", Side::Put),
        books: None,
    }
}

/// `count` objects out, taken `age_s` seconds before the snapshot.
fn group(stack: u64, caller: u64, count: u64, age_s: u64) -> Group {
    Group {
        stack,
        caller,
        receiver: 0,
        held: Held {
            count,
            bytes: count * 64,
            oldest_taken_ns: (100 - age_s) * SECOND_NS,
            ages_ns: vec![age_s * SECOND_NS; count as usize],
            ..Held::default()
        },
        releases: Vec::new(),
    }
}

/// A snapshot of one pool at 100 s; `stacks` as the kernel captured them (at a RET site the
/// walk starts beyond the immediate caller, which the probe reads itself).
fn snapshot(groups: Vec<Group>, stacks: &[(u64, &[u64])]) -> Snapshot {
    Snapshot {
        now_ns: 100 * SECOND_NS,
        epoch: 0,
        pools: vec![PoolState {
            groups,
            ..PoolState::default()
        }],
        stacks: stacks
            .iter()
            .map(|&(key, frames)| (key, frames.to_vec()))
            .collect(),
    }
}

fn build(snapshot: &Snapshot, plans: &[PoolPlan]) -> Report {
    build_with(snapshot, plans, &mut History::default())
}

/// A report that follows the earlier ones in `history`.
fn build_with(snapshot: &Snapshot, plans: &[PoolPlan], history: &mut History) -> Report {
    build_in(snapshot, plans, history, false)
}

fn build_in(
    snapshot: &Snapshot,
    plans: &[PoolPlan],
    history: &mut History,
    closing: bool,
) -> Report {
    Report::build(
        snapshot,
        Context {
            pid: 42,
            binary: "server",
            build: None,
            plans,
            symbolizer: &mut Names::new(),
            history,
            elapsed_ms: 60_000,
            min_age_ms: 0,
            sample_gets: None,
            top: 10,
            sort: SortBy::Score,
            windows: None,
            graces: &BTreeMap::new(),
            closing,
        },
    )
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.function.as_str()).collect()
}

#[test]
fn paths_that_differ_only_by_gets_ret_are_one_stack() {
    let snapshot = snapshot(
        vec![group(1, HANDLER, 2, 1), group(2, HANDLER, 3, 5)],
        &[(1, &[GET_RET_A, MAIN]), (2, &[GET_RET_B, MAIN])],
    );
    let report = build(&snapshot, &[plan(PoolKind::Counting)]);
    let stacks = &report.pools[0].stacks;
    assert_eq!(stacks.len(), 1, "{stacks:#?}");
    assert_eq!(stacks[0].outstanding, 5);
    assert_eq!(stacks[0].bytes, 5 * 64);
    assert_eq!(stacks[0].oldest_age_ms, 5_000);
    assert_eq!(
        names(&stacks[0].frames),
        ["pool.Get", "main.handler", "main.main"]
    );
}

#[test]
fn paths_with_different_callers_stay_apart() {
    let snapshot = snapshot(
        vec![group(1, HANDLER, 2, 1), group(2, RELEASER, 3, 1)],
        &[(1, &[GET_RET_A, MAIN]), (2, &[GET_RET_A, MAIN])],
    );
    let report = build(&snapshot, &[plan(PoolKind::Counting)]);
    assert_eq!(report.pools[0].stacks.len(), 2);
}

#[test]
fn collected_objects_score_as_leaks_only_in_a_counting_pool() {
    let collected = |kind| {
        let mut dropped = group(1, HANDLER, 0, 0);
        dropped.held.collected = 100;
        let snapshot = snapshot(vec![dropped], &[(1, &[GET_RET_A, MAIN])]);
        let report = build(&snapshot, &[plan(kind)]);
        let stack = report.pools[0].stacks[0].clone();
        assert_eq!(stack.collected, 100);
        stack.leak_score
    };
    // 60 for any collected object, plus 10 per decade of them.
    assert_eq!(collected(PoolKind::Counting), 80.0);
    assert_eq!(collected(PoolKind::Sync), 0.0);
}

#[test]
fn release_paths_are_shared_by_what_came_back_most_used_first() {
    let mut taken = group(1, HANDLER, 1, 1);
    taken.releases = vec![(11, OTHER_RELEASER, 1), (10, RELEASER, 3)];
    // Frames that already hold the caller (as bpf_get_stack's did at a `push rbp` entry).
    let snapshot = snapshot(
        vec![taken],
        &[
            (1, &[GET_RET_A, MAIN]),
            (10, &[PUT, RELEASER, MAIN]),
            (11, &[PUT, OTHER_RELEASER]),
        ],
    );
    let report = build(&snapshot, &[plan(PoolKind::Counting)]);
    let releases = &report.pools[0].stacks[0].release_paths;
    assert_eq!(releases.len(), 2);
    assert_eq!(releases[0].share, 0.75);
    assert_eq!(
        names(&releases[0].frames),
        ["pool.Put", "main.release", "main.main"]
    );
    assert_eq!(releases[1].share, 0.25);
    assert_eq!(
        names(&releases[1].frames),
        ["pool.Put", "main.releaseOther"]
    );
}

#[test]
fn an_uncaptured_stack_still_names_get() {
    let snapshot = snapshot(vec![group(0, HANDLER, 1, 1)], &[]);
    let report = build(&snapshot, &[plan(PoolKind::Counting)]);
    assert_eq!(
        names(&report.pools[0].stacks[0].frames),
        ["pool.Get", "main.handler"]
    );
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    keys
}

fn sorted(mut names: Vec<&str>) -> Vec<&str> {
    names.sort_unstable();
    names
}

/// Other tools parse these names: a test that fails here means a field was renamed or lost.
#[test]
fn json_field_names_are_the_contract() {
    let mut taken = group(1, HANDLER, 1, 1);
    taken.releases = vec![(10, RELEASER, 1)];
    let snapshot = snapshot(
        vec![taken],
        &[(1, &[GET_RET_A, MAIN]), (10, &[PUT, RELEASER])],
    );
    let report = build(&snapshot, &[plan(PoolKind::Counting)]);
    let json: Value = serde_json::from_str(&report.to_json()).expect("the report is JSON");
    assert_eq!(
        keys(&json),
        sorted(vec![
            "pid",
            "binary",
            "go_version",
            "module",
            "elapsed_ms",
            "min_age_ms",
            "pools"
        ])
    );
    let pool = &json["pools"][0];
    assert_eq!(
        keys(pool),
        sorted(vec![
            "get",
            "put",
            "kind",
            "get_probed",
            "put_probed",
            "gets",
            "puts",
            "gets_per_s",
            "puts_per_s",
            "probe_cost_cores",
            "outstanding",
            "outstanding_bytes",
            "unmatched_puts",
            "double_puts",
            "double_put_paths",
            "size_filtered",
            "put_restarts",
            "came_back_unseen",
            "late_puts",
            "returned_unseen",
            "dropped",
            "nil_gets",
            "stack_failures",
            "collected",
            "collected_dropped",
            "read_faults",
            "paths_dropped",
            "stream_lost",
            "unseen_get_sites",
            "unseen_put_sites",
            "stacks",
            "stacks_omitted",
        ])
    );
    assert_eq!(pool["kind"], "counting");
    let stack = &pool["stacks"][0];
    assert_eq!(
        keys(stack),
        sorted(vec![
            "leak_score",
            "reasons",
            "outstanding",
            "bytes",
            "oldest_age_ms",
            "age_ms",
            "hold_ms",
            "returned",
            "hold_histogram",
            "survivors",
            "came_back_unseen",
            "late_puts",
            "returned_unseen",
            "collected",
            "collected_bytes",
            "trend",
            "release_paths",
            "frames",
        ])
    );
    let frame_keys = sorted(vec!["address", "function", "file", "line", "inlined"]);
    assert_eq!(keys(&stack["frames"][0]), frame_keys);
    assert_eq!(stack["frames"][0]["address"], "0x1000");
    let release = &stack["release_paths"][0];
    assert_eq!(keys(release), sorted(vec!["share", "frames"]));
    assert_eq!(keys(&release["frames"][0]), frame_keys);
}

/// `top --agent` reads the agent's `/report.json` back into reports: nothing is lost on the
/// way, addresses and per-path hold-time buckets included.
#[test]
fn a_report_read_back_from_its_json_is_the_same_report() {
    let mut taken = group(1, HANDLER, 1, 1);
    taken.releases = vec![(10, RELEASER, 1)];
    taken.held.hold[20] = 3;
    let snapshot = snapshot(
        vec![taken],
        &[(1, &[GET_RET_A, MAIN]), (10, &[PUT, RELEASER])],
    );
    let report = build(&snapshot, &[plan(PoolKind::Counting)]);
    let json = report.to_json();
    let read: Report = serde_json::from_str(&json).expect("a report reads back");
    assert_eq!(read.to_json(), json);
    let histogram = &read.pools[0].stacks[0].hold_histogram;
    let bucket = histogram
        .iter()
        .find(|b| b.count == 3)
        .expect("the bucket of 3");
    // Bucket 20 holds 1024 to 1536 ns.
    assert_eq!((bucket.from_ms, bucket.to_ms), (0.001024, 0.001536));
}

/// `PoolCounters` is all `u64`s with no padding (tracer-common asserts it), so its size
/// counts its fields: a counter added there and not to `Counters` fails here.
#[test]
fn every_kernel_counter_is_in_the_json() {
    let snapshot = snapshot(Vec::new(), &[]);
    let report = build(&snapshot, &[plan(PoolKind::Counting)]);
    let json = Counters::serialize(&report.pools[0].counters, serde_json::value::Serializer)
        .expect("counters are JSON");
    assert_eq!(
        keys(&json).len(),
        size_of::<PoolCounters>() / size_of::<u64>()
    );
}

#[test]
fn history_forgets_a_path_no_report_has_recorded_for_a_trend_length() {
    let plans = [plan(PoolKind::Counting)];
    let held = snapshot(vec![group(1, HANDLER, 2, 1)], &[(1, &[GET_RET_A, MAIN])]);
    let gone = snapshot(Vec::new(), &[]);
    let mut history = History::default();
    let trend = |report: Report| report.pools[0].stacks[0].trend.len();
    assert_eq!(trend(build_with(&held, &plans, &mut history)), 1);
    // Back within TREND_LENGTH reports: its trend goes on.
    for _ in 1..TREND_LENGTH {
        build_with(&gone, &plans, &mut history);
    }
    assert_eq!(trend(build_with(&held, &plans, &mut history)), 2);
    // Away longer: forgotten, so an agent's memory does not grow with paths that come and go.
    for _ in 0..TREND_LENGTH {
        build_with(&gone, &plans, &mut history);
    }
    assert_eq!(history.held.len(), 1);
    assert_eq!(trend(build_with(&held, &plans, &mut history)), 1);
}

#[test]
fn the_closing_report_amends_the_last_point_of_a_trend_rather_than_adding_one() {
    let plans = [plan(PoolKind::Counting)];
    let two = snapshot(vec![group(1, HANDLER, 2, 1)], &[(1, &[GET_RET_A, MAIN])]);
    let three = snapshot(vec![group(1, HANDLER, 3, 1)], &[(1, &[GET_RET_A, MAIN])]);
    let mut history = History::default();
    build_with(&two, &plans, &mut history);
    build_with(&two, &plans, &mut history);
    let closing = build_in(&three, &plans, &mut history, true);
    assert_eq!(closing.pools[0].stacks[0].trend, [2, 3]);
    // A path first seen by the closing report starts its trend there.
    let mut fresh = History::default();
    let closing = build_in(&three, &plans, &mut fresh, true);
    assert_eq!(closing.pools[0].stacks[0].trend, [3]);
}

#[test]
fn the_closing_reports_rates_run_from_the_report_before_the_last() {
    let mut history = History::default();
    history.next_report(false);
    history.rates(0, (100, 100), (1_000, 1_000));
    history.next_report(false);
    history.rates(0, (300, 250), (2_000, 2_000));
    // 1 ms after the last report: measured from the one before, not over that 1 ms.
    history.next_report(true);
    let (gets, puts) = history.rates(0, (301, 251), (2_001, 2_001));
    assert!((gets - 201.0 / 1.001).abs() < 1e-9, "{gets}");
    assert!((puts - 151.0 / 1.001).abs() < 1e-9, "{puts}");
}

#[test]
fn a_sub_millisecond_oldest_object_prints_as_the_ages_do() {
    let young = Group {
        held: Held {
            oldest_taken_ns: 100 * SECOND_NS - 103_000,
            ages_ns: vec![103_000],
            ..group(1, HANDLER, 1, 0).held
        },
        ..group(1, HANDLER, 1, 0)
    };
    let report = build(
        &snapshot(vec![young], &[(1, &[GET_RET_A, MAIN])]),
        &[plan(PoolKind::Counting)],
    );
    let text = render_final(&report, Style { color: false });
    let summary = text
        .lines()
        .find(|l| l.contains("outstanding, oldest"))
        .unwrap_or_else(|| panic!("no path: {text}"));
    let oldest = summary.split("oldest ").nth(1).unwrap_or("");
    assert!(!oldest.starts_with("0us"), "{summary}");
    let max = text
        .split("max ")
        .nth(1)
        .unwrap_or("")
        .split([')', ';', '\n'])
        .next()
        .unwrap_or("");
    assert!(
        oldest.starts_with(max),
        "oldest {oldest:?}, ages' max {max:?}: {text}"
    );
}

/// A sized pool lists every path's sizes, the held and the fully returned alike, the most
/// unused capacity first; a path that holds objects carries its sizes in its stack too.
#[test]
fn a_sized_pool_lists_every_paths_sizes_by_unused_capacity_and_its_stacks_carry_theirs() {
    let sized = |group: Group, gets: u64, requested: u64, capacity: u64| Group {
        held: Held {
            sizes: tracer_common::PathSizes {
                gets,
                requested,
                capacity,
            },
            ..group.held
        },
        ..group
    };
    // main.handler holds 1 object; main.main gave everything back and wastes more.
    let holding = sized(group(1, HANDLER, 1, 1), 10, 10 * 1000, 10 * 1024);
    let returned = sized(group(2, MAIN, 0, 0), 4, 4 * 600, 4 * 1024);
    let snapshot = snapshot(
        vec![holding, returned],
        &[(1, &[GET_RET_A, MAIN]), (2, &[GET_RET_A])],
    );
    let mut sized_plan = plan(PoolKind::Counting);
    sized_plan.get_probe.flags |= tracer_common::SITE_SIZES;
    let report = build(&snapshot, &[sized_plan]);
    let pool = &report.pools[0];
    let total = |s: &Sizes| (s.gets, s.requested_bytes, s.capacity_bytes);
    assert_eq!(pool.sizes.as_ref().map(total), Some((14, 12_400, 14_336)));
    let paths: Vec<(u64, String)> = (pool.sized_paths.iter())
        .map(|p| (p.sizes.unused_bytes(), p.frames[1].function.clone()))
        .collect();
    assert_eq!(
        paths,
        [
            (1696, "main.main".to_owned()),
            (240, "main.handler".to_owned())
        ]
    );
    assert_eq!(pool.stacks.len(), 1);
    assert_eq!(
        pool.stacks[0].sizes.as_ref().map(total),
        Some((10, 10_000, 10_240))
    );
    // An unsized pool says nothing of sizes.
    let plain = build(&snapshot, &[plan(PoolKind::Counting)]);
    assert!(plain.pools[0].sizes.is_none() && plain.pools[0].sized_paths.is_empty());
}
