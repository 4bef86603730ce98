//! Every map and load-time global in one place: they are the object's interface to user
//! space, which sizes, fills and reads them by the names in `tracer_common::names`, so what
//! the kernel side keeps and what the loader may change are seen together, apart from the
//! logic that uses them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use tracer_common::{
    DoublePutKey, GetInFlight, HoldHistogram, ObjectKey, ObjectQuota, Outstanding, PathCrossings,
    PathKey, PathSizes, PathTotals, PoolCounters, ProbeSite, ReleaseKey, ReturnedBy, StackFrames,
    DEFAULT_MAX_OBJECTS, DEFAULT_MAX_STACKS, DEFAULT_RELEASE_SAMPLE, EVENTS_BYTES,
    MAX_COLLECTED_PATHS, MAX_DOUBLE_PUT_PATHS, MAX_GETS_IN_FLIGHT, MAX_POOLS, MAX_RELEASE_PATHS,
    MAX_RETURNED, MAX_SITES, MAX_STACK_DEPTH, MAX_TARGET_SLOTS,
};

/// Bytes of goroutine stack copied in one read from `rsp` before walking.
///
/// A compile-time constant, not a load-time global: it is the size of `STACK_WINDOW`'s value
/// type, and the verifier must see the read's length and every index into the window bounded
/// by that size. A smaller runtime window would save only part of one copy, and a larger one
/// needs a new value type (a rebuild) anyway.
pub(crate) const WINDOW_BYTES: usize = 1024;
pub(crate) const WINDOW_WORDS: usize = WINDOW_BYTES / 8;
// Indices into the window are masked with `WINDOW_WORDS - 1` for the verifier.
const _: () = assert!(WINDOW_WORDS.is_power_of_two() && WINDOW_BYTES % 8 == 0);

/// Slots of `TYPE_KINDS`: a pool sees a handful of types.
pub(crate) const TYPE_KIND_SLOTS: usize = 64;

/// What each attached site reads; indexed by the attach cookie. Sized by user space: one
/// process's sites, or `MAX_SITES` for each target slot of a shared object.
#[map]
pub(crate) static SITES: Array<ProbeSite> = Array::with_max_entries(MAX_SITES, 0);

/// Every object that is out of its pool: taken by a Get, not yet given back by a Put.
#[map]
pub(crate) static OUTSTANDING: HashMap<ObjectKey, Outstanding> =
    HashMap::with_max_entries(DEFAULT_MAX_OBJECTS, 0);

/// User stacks of the Gets, by a hash of their frames.
#[map]
pub(crate) static STACKS: HashMap<u64, StackFrames> =
    HashMap::with_max_entries(DEFAULT_MAX_STACKS, 0);

/// Where a stack is captured before it is hashed (too big for the 512-byte BPF stack).
#[map]
pub(crate) static SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

/// Objects dropped without a Put and collected, by the call path that took them.
#[map]
pub(crate) static COLLECTED: PerCpuHashMap<PathKey, PathTotals> =
    PerCpuHashMap::with_max_entries(MAX_COLLECTED_PATHS, 0);

/// What the Gets in flight saw at entry, by (pool, goroutine): the receiver and the size
/// asked for are gone from the registers by the time the RET probe runs. A plain hash (an
/// LRU costs ~100 ns more an update): the RET removes each entry, and one left by a Get that
/// panicked is overwritten when its goroutine next calls Get.
#[map]
pub(crate) static GETS_IN_FLIGHT: HashMap<u64, GetInFlight> =
    HashMap::with_max_entries(MAX_GETS_IN_FLIGHT, 0);

/// What the Gets of each call path asked for and were handed (`SITE_SIZES`).
#[map]
pub(crate) static SIZES: PerCpuHashMap<PathKey, PathSizes> =
    PerCpuHashMap::with_max_entries(MAX_RELEASE_PATHS, 0);

/// How long objects stayed out before their Put, by the call path that took them.
#[map]
pub(crate) static HOLD_TIMES: PerCpuHashMap<PathKey, HoldHistogram> =
    PerCpuHashMap::with_max_entries(MAX_RELEASE_PATHS, 0);

/// A zeroed histogram to insert from (it is too big for the BPF stack).
#[map]
pub(crate) static ZERO_HISTOGRAM: Array<HoldHistogram> = Array::with_max_entries(1, 0);

/// Objects given back, by acquire path and release path (the Put's stack).
#[map]
pub(crate) static RELEASES: PerCpuHashMap<ReleaseKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_RELEASE_PATHS, 0);

/// Objects given back and not handed out since, with the call path of their Put: what
/// tells a double Put from a harmless Put of an object taken before attach. An LRU, so it
/// stays bounded: an object returned long ago and forgotten is missed, not invented.
#[map]
pub(crate) static RETURNED: LruHashMap<ObjectKey, ReturnedBy> =
    LruHashMap::with_max_entries(MAX_RETURNED, 0);

/// Each target slot's current epoch: user space adds one each time it takes that process's
/// Put probes away, so an object whose entry carries an older one may have been given back
/// unseen.
#[map]
pub(crate) static EPOCH: Array<u64> = Array::with_max_entries(MAX_TARGET_SLOTS, 0);

/// Each target slot's share of `OUTSTANDING`, and how much of it its objects hold.
#[map]
pub(crate) static OBJECT_QUOTAS: Array<ObjectQuota> = Array::with_max_entries(MAX_TARGET_SLOTS, 0);

/// Objects that outlived their epoch and were seen again, by call path.
#[map]
pub(crate) static CROSSED: PerCpuHashMap<PathKey, PathCrossings> =
    PerCpuHashMap::with_max_entries(MAX_COLLECTED_PATHS, 0);

/// Double Puts, by the second Put's call path and where the first was called from.
#[map]
pub(crate) static DOUBLE_PUTS: PerCpuHashMap<DoublePutKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_DOUBLE_PUT_PATHS, 0);

/// Stream mode: every Get and Put, in order.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per-pool event counters, one copy per CPU so no update needs an atomic. Sized by user
/// space: `MAX_POOLS` for each target slot.
#[map]
pub(crate) static COUNTERS: PerCpuArray<PoolCounters> = PerCpuArray::with_max_entries(MAX_POOLS, 0);

/// One read of the stack from `rsp` up: most of a Go call chain fits.
#[map]
pub(crate) static STACK_WINDOW: PerCpuArray<[u64; WINDOW_WORDS]> =
    PerCpuArray::with_max_entries(1, 0);

/// The kinds of the Go types seen in interfaces, direct-mapped by type address: a Go type
/// descriptor never changes or moves, so a kind read once from the target stays true for
/// the process's life, and a hit spares a read of target memory on every Get and Put. Each
/// slot is `type address | target slot << 47 | kind << 56 | 1 << 63` (user addresses fit in
/// 47 bits), one word that checks itself, so a slot overwritten halfway through a program is
/// a miss, never a wrong kind, and one process's type at an address is never taken for
/// another's.
#[map]
pub(crate) static TYPE_KINDS: PerCpuArray<[u64; TYPE_KIND_SLOTS]> =
    PerCpuArray::with_max_entries(1, 0);

/// Puts whose stack is recorded for release paths: one in this many. A load-time global
/// (`names::RELEASE_SAMPLE`, like libbpf-tools' `const volatile`), so user space can change
/// it without a rebuild of the object; read only through [`release_sample`].
#[unsafe(no_mangle)]
static RELEASE_SAMPLE: u32 = DEFAULT_RELEASE_SAMPLE;

/// Addresses a stack walk records at most (`names::STACK_DEPTH`, `--stack-depth`); read
/// only through [`stack_depth`].
#[unsafe(no_mangle)]
static STACK_DEPTH: u32 = MAX_STACK_DEPTH as u32;

/// Objects of these sizes only are tracked (`names::SIZE_MIN`/`SIZE_MAX`, `--min-size`,
/// `--max-size`); read only through [`size_wanted`].
#[unsafe(no_mangle)]
static SIZE_MIN: u64 = 0;
#[unsafe(no_mangle)]
static SIZE_MAX: u64 = u64::MAX;

/// The loader's `STACK_DEPTH`, within 1..=MAX_STACK_DEPTH.
pub(crate) fn stack_depth() -> usize {
    // SAFETY: a valid, aligned static that nothing in the program writes.
    let depth = unsafe { core::ptr::read_volatile(&STACK_DEPTH) } as usize;
    depth.clamp(1, MAX_STACK_DEPTH)
}

/// Whether an object of `size` is tracked; `filtering` tells whether any size is refused.
pub(crate) fn size_wanted(size: u64) -> (bool, bool) {
    // SAFETY: valid, aligned statics that nothing in the program writes.
    let (min, max) = unsafe {
        (
            core::ptr::read_volatile(&SIZE_MIN),
            core::ptr::read_volatile(&SIZE_MAX),
        )
    };
    (size >= min && size <= max, min > 0 || max < u64::MAX)
}

/// Target slot `target`'s epoch now (0 until user space first takes its Put probes away).
pub(crate) fn epoch(target: u32) -> u64 {
    EPOCH.get(target).copied().unwrap_or(0)
}

/// Target slot `target`'s share of `OUTSTANDING`, when it has one (a shared object).
pub(crate) fn object_quota(target: u32) -> Option<*mut ObjectQuota> {
    let quota = OBJECT_QUOTAS.get_ptr_mut(target)?;
    // SAFETY: a valid entry of an array map.
    (unsafe { (*quota).limit } != 0).then_some(quota)
}

/// Whether the slot's objects hold all its share. Other CPUs add to `held` meanwhile, so a
/// slot may pass its limit by a Get per CPU, never more.
pub(crate) fn quota_full(quota: *mut ObjectQuota) -> bool {
    // SAFETY: a valid entry of an array map; an aligned word is read whole.
    unsafe { core::ptr::read_volatile(&raw const (*quota).held) >= (*quota).limit }
}

/// Adds `delta` (one, or `u64::MAX` for minus one) to the objects the slot holds.
pub(crate) fn add_held(quota: Option<*mut ObjectQuota>, delta: u64) {
    if let Some(quota) = quota {
        // An atomic add, since Gets and Puts of one process run on any CPU: the target has no
        // atomic types, but the instruction (BPF_XADD, its result unused) is in every kernel.
        // SAFETY: a valid, aligned entry of an array map.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*quota).held, delta)
        };
    }
}

/// Adds `crossing` (one object seen again after a gap in tracing) to `path`'s
/// entry in `CROSSED`; a full map is counted in `paths_dropped`.
pub(crate) fn add_crossing(path: &PathKey, crossing: PathCrossings, counters: &mut PoolCounters) {
    match CROSSED.get_ptr_mut(path) {
        // SAFETY: this CPU's copy of the value.
        Some(crossed) => unsafe {
            (*crossed).came_back_unseen += crossing.came_back_unseen;
            (*crossed).late_puts += crossing.late_puts;
            (*crossed).returned_unseen += crossing.returned_unseen;
        },
        None => {
            if CROSSED.insert(path, &crossing, 0).is_err() {
                counters.paths_dropped += 1;
            }
        }
    }
}

/// The loader's value of `RELEASE_SAMPLE`. A plain read would be folded to the compiled-in
/// default; 0 is taken as 1 so the modulo can never divide by zero.
pub(crate) fn release_sample() -> u32 {
    // SAFETY: a valid, aligned static that nothing in the program writes.
    unsafe { core::ptr::read_volatile(&RELEASE_SAMPLE) }.max(1)
}
