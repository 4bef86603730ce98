//! Tracking: reading what the kernel side recorded. The probes do all per-event work; this
//! module only reads the maps when a report is due and groups the outstanding objects by the
//! call path that took them. It is the one place that reads the maps: a [`Snapshot`] holds
//! all a report needs, and stream mode reads its events and stacks through [`Events`] and
//! [`StackReader`], so neither `report` nor `stream` sees aya.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::fd::{AsRawFd, RawFd},
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    Ebpf,
};
use tracer_common::{
    names, DoublePutKey, HoldHistogram, ObjectKey, Outstanding, PathCrossings, PathKey, PathSizes,
    PathTotals, PoolCounters, ReleaseKey, StackFrames, StreamEvent, HOLD_BUCKETS,
};

use crate::{
    error::{Error, Result},
    probes::{Probes, Slot},
};

/// What a call path holds and gave back: the part of a [`Group`] that adds up when paths
/// are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Outstanding objects at least `min_age` old.
    pub count: u64,
    pub bytes: u64,
    /// `taken_ns` of the oldest of them (`u64::MAX` when there are none).
    pub oldest_taken_ns: u64,
    /// Their ages in nanoseconds.
    pub ages_ns: Vec<u64>,
    /// Objects dropped without a Put and collected (see `tracer_common::PathTotals`).
    pub collected: u64,
    pub collected_bytes: u64,
    /// Hold times of the objects that came back, in `tracer_common::hold_bucket`s.
    pub hold: Vec<u64>,
    /// Of the outstanding objects counted, those still out from an earlier epoch (they
    /// outlived their window's grace), by the epoch they were taken in.
    pub survivors: BTreeMap<u64, Survivors>,
    /// Objects that outlived their epoch and were seen again (`tracer_common::PathCrossings`).
    pub came_back_unseen: u64,
    pub late_puts: u64,
    /// Of `came_back_unseen`, the very objects handed out again: given back unseen.
    pub returned_unseen: u64,
    /// What its Gets asked for and were handed, in sized pools (`SITE_SIZES`).
    pub sizes: PathSizes,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            count: 0,
            bytes: 0,
            oldest_taken_ns: u64::MAX,
            ages_ns: Vec::new(),
            collected: 0,
            collected_bytes: 0,
            hold: vec![0; HOLD_BUCKETS],
            survivors: BTreeMap::new(),
            came_back_unseen: 0,
            late_puts: 0,
            returned_unseen: 0,
            sizes: PathSizes::default(),
        }
    }
}

impl Held {
    /// Objects not given back, yet or ever.
    pub fn total(&self) -> u64 {
        self.count + self.collected
    }

    /// Adds `other` in.
    pub fn merge(&mut self, other: &Held) {
        self.count += other.count;
        self.bytes += other.bytes;
        self.oldest_taken_ns = self.oldest_taken_ns.min(other.oldest_taken_ns);
        self.ages_ns.extend(&other.ages_ns);
        self.collected += other.collected;
        self.collected_bytes += other.collected_bytes;
        for (sum, count) in self.hold.iter_mut().zip(&other.hold) {
            *sum += count;
        }
        for (&epoch, other) in &other.survivors {
            self.survivors
                .entry(epoch)
                .or_default()
                .add(other.count, other.newest_taken_ns);
        }
        self.came_back_unseen += other.came_back_unseen;
        self.late_puts += other.late_puts;
        self.returned_unseen += other.returned_unseen;
        self.sizes.add(&other.sizes);
    }

    /// Outstanding objects from earlier epochs.
    pub fn survivor_count(&self) -> u64 {
        self.survivors.values().map(|s| s.count).sum()
    }
}

/// The survivors of one epoch on one call path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Survivors {
    pub count: u64,
    /// `taken_ns` of the youngest of them.
    pub newest_taken_ns: u64,
}

impl Survivors {
    fn add(&mut self, count: u64, taken_ns: u64) {
        self.count += count;
        self.newest_taken_ns = self.newest_taken_ns.max(taken_ns);
    }
}

/// Objects of one pool taken by one call path (one stack, one immediate caller, one pool
/// instance): what is out now, what was dropped, and how long returned ones were held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Key in `STACKS`, 0 when the stack was not captured.
    pub stack: u64,
    pub caller: u64,
    /// The pool instance, 0 when not tracked.
    pub receiver: u64,
    pub held: Held,
    /// The Puts they came back through: (release stack, release caller, objects).
    pub releases: Vec<(u64, u64, u64)>,
}

impl Group {
    fn new(stack: u64, caller: u64, receiver: u64) -> Self {
        Self {
            stack,
            caller,
            receiver,
            held: Held::default(),
            releases: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct PoolState {
    pub counters: PoolCounters,
    /// Objects outstanding right now, of any age.
    pub outstanding: u64,
    pub outstanding_bytes: u64,
    /// Bytes each pool instance (Get's receiver, where tracked) handed out since attach and
    /// never got back: outstanding of any age, and collected.
    pub held_by_instance: BTreeMap<u64, u64>,
    /// Every call path the kernel knows of (objects out, dropped or returned), in no order.
    pub groups: Vec<Group>,
    /// Double Puts, by both Puts' call paths (`--double-puts`), in no order.
    pub double_puts: Vec<DoublePuts>,
}

impl PoolState {
    /// What the pool's Gets asked for and were handed, over all its paths.
    pub fn sizes(&self) -> PathSizes {
        let mut sum = PathSizes::default();
        self.groups.iter().for_each(|g| sum.add(&g.held.sizes));
        sum
    }

    /// The hold-time buckets of the pool's objects that came back, over all its paths.
    pub fn hold_times(&self) -> Vec<u64> {
        let mut sum = vec![0; HOLD_BUCKETS];
        for group in &self.groups {
            sum.iter_mut()
                .zip(&group.held.hold)
                .for_each(|(s, n)| *s += n);
        }
        sum
    }
}

/// Puts of objects already back in the pool, through one call path after a first Put from
/// one caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoublePuts {
    /// The second Put's stack (key in `STACKS`, 0 when not captured) and caller.
    pub stack: u64,
    pub caller: u64,
    /// The first Put's stack and caller (0 when the two raced on two CPUs).
    pub first_stack: u64,
    pub first_caller: u64,
    pub count: u64,
}

/// What the kernel maps held at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC when read, the clock of `Outstanding::taken_ns`.
    pub now_ns: u64,
    /// The epoch in force (`EPOCH`): objects taken in an earlier one are survivors.
    pub epoch: u64,
    pub pools: Vec<PoolState>,
    /// The user stacks the groups and their releases name, by key in `STACKS`: return
    /// addresses innermost first. A key missing here was not captured or could not be read.
    pub stacks: HashMap<u64, Vec<u64>>,
}

/// A call path by its pool's index among the trace's pools, stack, caller and receiver.
type GroupKey = (usize, u64, u64, u64);

impl Snapshot {
    /// Reads counters and per-path state for the `pools` pools of `probes`' slot; objects
    /// younger than `min_age_ns` count in the totals but not in the groups.
    pub fn read(probes: &Probes, pools: usize, min_age_ns: u64) -> Result<Self> {
        let slot = probes.slot();
        let ebpf = &*probes.object().ebpf();
        let now_ns = monotonic_ns();
        let epoch = read_epoch(ebpf, slot)?;
        let mut states = read_counters(ebpf, slot, pools)?;
        let mut groups: HashMap<GroupKey, Group> = HashMap::new();
        let pool_of = |pool: u32| slot.local_pool(pool).filter(|&local| local < pools);

        let outstanding: BpfHashMap<&MapData, ObjectKey, Outstanding> =
            map(ebpf, names::OUTSTANDING)?;
        // The walk asks the kernel for the key after the last one seen; when that key was
        // deleted meanwhile (a Put, which a busy target does all the time), the kernel starts
        // over from the first key. Objects seen already must not count twice.
        let mut seen: HashSet<ObjectKey> = HashSet::new();
        for entry in outstanding.iter() {
            // An entry deleted between the key walk and its lookup is just gone: skip it.
            let Ok((key, object)) = entry else { continue };
            if !seen.insert(key) {
                continue;
            }
            let Some(pool) = pool_of(key.pool) else {
                continue;
            };
            let state = &mut states[pool];
            state.outstanding += 1;
            state.outstanding_bytes += object.size;
            let path = object.path(key.pool);
            if path.receiver != 0 {
                *state.held_by_instance.entry(path.receiver).or_default() += object.size;
            }
            let age = now_ns.saturating_sub(object.taken_ns);
            if age < min_age_ns {
                continue;
            }
            if let Some(group) = group_of(&mut groups, pool_of, &path) {
                let held = &mut group.held;
                held.count += 1;
                held.bytes += object.size;
                held.oldest_taken_ns = held.oldest_taken_ns.min(object.taken_ns);
                held.ages_ns.push(age);
                if object.epoch < epoch {
                    (held.survivors.entry(object.epoch).or_default()).add(1, object.taken_ns);
                }
            }
        }
        let collected: PerCpuHashMap<&MapData, PathKey, PathTotals> = map(ebpf, names::COLLECTED)?;
        for (path, per_cpu) in collected.iter().flatten() {
            let bytes = per_cpu.iter().map(|t| t.bytes).sum::<u64>();
            if let Some(pool) = pool_of(path.pool).filter(|_| path.receiver != 0) {
                *states[pool]
                    .held_by_instance
                    .entry(path.receiver)
                    .or_default() += bytes;
            }
            if let Some(group) = group_of(&mut groups, pool_of, &path) {
                group.held.collected += per_cpu.iter().map(|t| t.count).sum::<u64>();
                group.held.collected_bytes += bytes;
            }
        }
        let crossed: PerCpuHashMap<&MapData, PathKey, PathCrossings> = map(ebpf, names::CROSSED)?;
        for (path, per_cpu) in crossed.iter().flatten() {
            if let Some(group) = group_of(&mut groups, pool_of, &path) {
                group.held.came_back_unseen +=
                    per_cpu.iter().map(|c| c.came_back_unseen).sum::<u64>();
                group.held.late_puts += per_cpu.iter().map(|c| c.late_puts).sum::<u64>();
                group.held.returned_unseen +=
                    per_cpu.iter().map(|c| c.returned_unseen).sum::<u64>();
            }
        }
        let hold: PerCpuHashMap<&MapData, PathKey, HoldHistogram> = map(ebpf, names::HOLD_TIMES)?;
        for (path, per_cpu) in hold.iter().flatten() {
            if let Some(group) = group_of(&mut groups, pool_of, &path) {
                for histogram in per_cpu.iter() {
                    for (sum, count) in group.held.hold.iter_mut().zip(histogram.buckets) {
                        *sum += count;
                    }
                }
            }
        }
        let sizes: PerCpuHashMap<&MapData, PathKey, PathSizes> = map(ebpf, names::SIZES)?;
        for (path, per_cpu) in sizes.iter().flatten() {
            if let Some(group) = group_of(&mut groups, pool_of, &path) {
                per_cpu.iter().for_each(|cpu| group.held.sizes.add(cpu));
            }
        }
        let releases: PerCpuHashMap<&MapData, ReleaseKey, u64> = map(ebpf, names::RELEASES)?;
        for (release, per_cpu) in releases.iter().flatten() {
            if let Some(group) = group_of(&mut groups, pool_of, &release.acquire) {
                group.releases.push((
                    release.release_stack,
                    release.release_caller,
                    per_cpu.iter().sum(),
                ));
            }
        }
        for ((pool, _, _, _), group) in groups {
            states[pool].groups.push(group);
        }
        let doubles: PerCpuHashMap<&MapData, DoublePutKey, u64> = map(ebpf, names::DOUBLE_PUTS)?;
        for (key, per_cpu) in doubles.iter().flatten() {
            if let Some(state) = pool_of(key.pool).map(|pool| &mut states[pool]) {
                state.double_puts.push(DoublePuts {
                    stack: key.stack,
                    caller: key.caller,
                    first_stack: key.first_stack,
                    first_caller: key.first_caller,
                    count: per_cpu.iter().sum(),
                });
            }
        }
        let stacks = read_stacks(&StackReader { ebpf }, &states);
        Ok(Self {
            now_ns,
            epoch,
            pools: states,
            stacks,
        })
    }

    /// The stack recorded under `stack`, innermost first (empty when none was captured).
    pub fn stack(&self, stack: u64) -> &[u64] {
        self.stacks.get(&stack).map_or(&[], Vec::as_slice)
    }
}

/// The stacks that the groups of `pools`, the Puts their objects came back through, and
/// their double Puts name.
fn read_stacks(reader: &StackReader, pools: &[PoolState]) -> HashMap<u64, Vec<u64>> {
    let named = pools.iter().flat_map(|pool| {
        let doubles = (pool.double_puts.iter()).flat_map(|d| [d.stack, d.first_stack]);
        pool.groups
            .iter()
            .flat_map(|group| {
                let releases = group.releases.iter().map(|&(stack, _, _)| stack);
                std::iter::once(group.stack).chain(releases)
            })
            .chain(doubles)
    });
    let mut stacks = HashMap::new();
    for stack in named.filter(|&stack| stack != 0) {
        stacks.entry(stack).or_insert_with(|| reader.frames(stack));
    }
    stacks
}

/// The group of `path`, created on first sight; `None` for a pool that is not the trace's
/// (`pool_of` gives the trace's index of a pool in the maps).
fn group_of<'a>(
    groups: &'a mut HashMap<GroupKey, Group>,
    pool_of: impl Fn(u32) -> Option<usize>,
    path: &PathKey,
) -> Option<&'a mut Group> {
    let pool = pool_of(path.pool)?;
    Some(
        groups
            .entry((pool, path.stack, path.caller, path.receiver))
            .or_insert_with(|| Group::new(path.stack, path.caller, path.receiver)),
    )
}

/// Reads user stacks out of `STACKS` one at a time, for stream mode's events.
pub struct StackReader<'a> {
    ebpf: &'a aya::Ebpf,
}

impl StackReader<'_> {
    /// The user stack recorded under `stack` in `probes`' object, innermost first (empty
    /// when none was captured or it cannot be read: `stack_failures` counts those).
    pub fn frames_of(probes: &Probes, stack: u64) -> Vec<u64> {
        StackReader {
            ebpf: &probes.object().ebpf(),
        }
        .frames(stack)
    }

    /// The user stack recorded under `stack`, innermost first (empty when none was captured
    /// or it cannot be read: `stack_failures` counts those).
    pub fn frames(&self, stack: u64) -> Vec<u64> {
        if stack == 0 {
            return Vec::new();
        }
        let Ok(stacks) = map::<BpfHashMap<&MapData, u64, StackFrames>>(self.ebpf, names::STACKS)
        else {
            return Vec::new();
        };
        stacks
            .get(&stack, 0)
            .map(|frames| {
                frames
                    .ips
                    .iter()
                    .take(frames.len as usize)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Stream mode's ring buffer of Get and Put events, taken out of the loaded object. Its file
/// descriptor becomes readable when events arrive.
pub struct Events {
    ring: RingBuf<MapData>,
}

impl Events {
    pub fn take(probes: &Probes) -> Result<Self> {
        let name = names::EVENTS;
        let map = (probes.object().ebpf_mut().take_map(name))
            .ok_or(Error::NotInObject { what: "map", name })?;
        let ring = RingBuf::try_from(map).map_err(|source| Error::Map { name, source })?;
        Ok(Self { ring })
    }

    /// The next event in the ring, `None` once it is empty. Records too short to be an event
    /// are skipped.
    pub fn next_event(&mut self) -> Option<StreamEvent> {
        while let Some(item) = self.ring.next() {
            if item.len() < size_of::<StreamEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole StreamEvent; read_unaligned copies it out.
            return Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<StreamEvent>()) });
        }
        None
    }
}

impl AsRawFd for Events {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// Each pool's hold-time buckets, summed over its call paths.
pub fn pool_hold_times(probes: &Probes, pools: usize) -> Result<Vec<Vec<u64>>> {
    let ebpf = probes.object().ebpf();
    let hold: PerCpuHashMap<&MapData, PathKey, HoldHistogram> = map(&ebpf, names::HOLD_TIMES)?;
    let mut sums = vec![vec![0; HOLD_BUCKETS]; pools];
    for (path, per_cpu) in hold.iter().flatten() {
        let pool = probes.slot().local_pool(path.pool);
        if let Some(sum) = pool.and_then(|pool| sums.get_mut(pool)) {
            for histogram in per_cpu.iter() {
                for (sum, count) in sum.iter_mut().zip(histogram.buckets) {
                    *sum += count;
                }
            }
        }
    }
    Ok(sums)
}

/// The epoch in force in `slot`.
fn read_epoch(ebpf: &Ebpf, slot: Slot) -> Result<u64> {
    let epoch: Array<&MapData, u64> = map(ebpf, names::EPOCH)?;
    epoch.get(&slot.index(), 0).map_err(|source| Error::Map {
        name: names::EPOCH,
        source,
    })
}

fn read_counters(ebpf: &Ebpf, slot: Slot, pools: usize) -> Result<Vec<PoolState>> {
    Ok(per_cpu_counters(ebpf, slot, pools)?
        .into_iter()
        .map(|counters| PoolState {
            counters,
            ..PoolState::default()
        })
        .collect())
}

/// The per-pool counters, summed over CPUs.
pub fn counters(probes: &Probes, pools: usize) -> Result<Vec<PoolCounters>> {
    per_cpu_counters(&probes.object().ebpf(), probes.slot(), pools)
}

fn per_cpu_counters(ebpf: &Ebpf, slot: Slot, pools: usize) -> Result<Vec<PoolCounters>> {
    let counters: PerCpuArray<&MapData, PoolCounters> = map(ebpf, names::COUNTERS)?;
    (slot.first_pool()..slot.first_pool() + pools as u32)
        .map(|pool| {
            let per_cpu = counters.get(&pool, 0).map_err(|source| Error::Map {
                name: names::COUNTERS,
                source,
            })?;
            Ok(per_cpu
                .iter()
                .fold(PoolCounters::default(), |mut sum, cpu| {
                    sum += cpu;
                    sum
                }))
        })
        .collect()
}

fn map<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map(name)
        .ok_or(Error::NotInObject { what: "map", name })?;
    T::try_from(map).map_err(|source| Error::Map { name, source })
}

/// CLOCK_MONOTONIC in nanoseconds, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
