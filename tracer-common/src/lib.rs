//! Types shared across the kernel boundary: what user space tells each probe site to read,
//! and what the kernel keeps for every object that is out of its pool.
//!
//! Every type is `#[repr(C)]`, `Copy` and free of padding surprises, because the eBPF program and
//! `pooltrace` read the same bytes out of the same maps.
#![no_std]

#[cfg(feature = "source-hash")]
extern crate std;
#[cfg(feature = "source-hash")]
pub mod source_hash;

/// Most pools one traced process can have (its range of indices into `COUNTERS`).
pub const MAX_POOLS: u32 = 16;
/// Most probe sites (Get RETs plus Put entries) in one traced process; the attach cookie
/// indexes `SITES`.
pub const MAX_SITES: u32 = 512;
/// Most processes one loaded object traces at once (the agent's `--max-targets`): each has a
/// slot, which owns pools `slot * MAX_POOLS ..` and sites `slot * MAX_SITES ..`, and tags
/// the keys that carry no pool (`STACKS`, `TYPE_KINDS`). 512 keeps the tags within the bits
/// user addresses leave free (see [`stack_key`]).
pub const MAX_TARGET_SLOTS: u32 = 512;
/// Default capacity of `OUTSTANDING`; user space resizes it before load (`--max-objects`).
pub const DEFAULT_MAX_OBJECTS: u32 = 262_144;
/// Default capacity of `STACKS` (distinct Get stacks); user space resizes it before load
/// (`--max-stacks`).
pub const DEFAULT_MAX_STACKS: u32 = 8_192;
/// Frames kept per stack, innermost first; deeper frames (outermost) are cut.
pub const MAX_STACK_DEPTH: usize = 64;
/// Capacity of `COLLECTED` (distinct call paths with objects collected without a Put).
pub const MAX_COLLECTED_PATHS: u32 = 16_384;

/// The names user space finds the kernel side's maps, programs and globals by. The eBPF
/// program's statics and functions carry exactly these names (a `tracer` unit test checks the
/// committed object against every one), so a rename is one edit here plus the kernel's.
pub mod names {
    /// Map: what each attached site reads, indexed by the attach cookie.
    pub const SITES: &str = "SITES";
    /// Map: every object out of its pool ([`crate::ObjectKey`] to [`crate::Outstanding`]).
    pub const OUTSTANDING: &str = "OUTSTANDING";
    /// Map: user stacks of the Gets, by a hash of their frames.
    pub const STACKS: &str = "STACKS";
    /// Map: objects dropped without a Put and collected, by call path.
    pub const COLLECTED: &str = "COLLECTED";
    /// Map: hold-time histograms, by call path.
    pub const HOLD_TIMES: &str = "HOLD_TIMES";
    /// Map: objects given back, by acquire path and release path.
    pub const RELEASES: &str = "RELEASES";
    /// Map: the stream mode ring buffer.
    pub const EVENTS: &str = "EVENTS";
    /// Map: per-pool counters, per CPU.
    pub const COUNTERS: &str = "COUNTERS";
    /// Map: Puts of objects already back in their pool, by both Puts' call paths.
    pub const DOUBLE_PUTS: &str = "DOUBLE_PUTS";
    /// Map: objects recently given back (sized at load: one entry when no pool catches
    /// double Puts, since an LRU map is allocated whole).
    pub const RETURNED: &str = "RETURNED";
    /// Map: each target slot's current epoch, a `u64` that user space adds one to each time
    /// it takes that target's Put probes away (tracing windows). 0 for as long as Put stays
    /// probed.
    pub const EPOCH: &str = "EPOCH";
    /// Map: objects that outlived their epoch, by call path: handed out again while nothing
    /// watched, or given back in a later window ([`crate::PathCrossings`]).
    pub const CROSSED: &str = "CROSSED";
    /// Map: each target slot's share of `OUTSTANDING` and how much of it is held
    /// ([`crate::ObjectQuota`]).
    pub const OBJECT_QUOTAS: &str = "OBJECT_QUOTAS";
    /// Map: what each Get in flight stashed at its entry (its receiver, the size asked
    /// for), by pool and goroutine.
    pub const GETS_IN_FLIGHT: &str = "GETS_IN_FLIGHT";
    /// Map: bytes asked for and capacity handed out, by call path ([`crate::PathSizes`]).
    pub const SIZES: &str = "SIZES";
    /// Every map user space opens by name.
    pub const MAPS: [&str; 15] = [
        SITES,
        OUTSTANDING,
        STACKS,
        COLLECTED,
        HOLD_TIMES,
        RELEASES,
        EVENTS,
        COUNTERS,
        DOUBLE_PUTS,
        RETURNED,
        EPOCH,
        CROSSED,
        OBJECT_QUOTAS,
        GETS_IN_FLIGHT,
        SIZES,
    ];

    /// Program at Put's entry and at the calls in Put's inlined copies.
    pub const PROGRAM_PUT: &str = "pool_put";
    /// Program at Get's entry: stashes the receiver and the size asked for, for the RETs.
    pub const PROGRAM_GET_ENTRY: &str = "pool_get_entry";
    /// Program at Get's RETs and after the calls in Get's inlined copies.
    pub const PROGRAM_GET: &str = "pool_get";
    /// Every program, in the order they are loaded.
    pub const PROGRAMS: [&str; 3] = [PROGRAM_PUT, PROGRAM_GET_ENTRY, PROGRAM_GET];

    /// Global (`u32`, set at load): one Put in this many records its release path.
    pub const RELEASE_SAMPLE: &str = "RELEASE_SAMPLE";
    /// Global (`u32`, set at load): addresses a stack walk records at most (`--stack-depth`),
    /// 1 to [`crate::MAX_STACK_DEPTH`].
    pub const STACK_DEPTH: &str = "STACK_DEPTH";
    /// Globals (`u64`, set at load): Gets of objects smaller or larger than these are not
    /// tracked (`--min-size`, `--max-size`).
    pub const SIZE_MIN: &str = "SIZE_MIN";
    pub const SIZE_MAX: &str = "SIZE_MAX";
    /// Every global user space sets at load time.
    pub const GLOBALS: [&str; 4] = [RELEASE_SAMPLE, STACK_DEPTH, SIZE_MIN, SIZE_MAX];
    /// The `log` target of the kernel side's diagnostics (aya-log), which `RUST_LOG` and
    /// `--debug` filter on.
    pub const KERNEL_LOG_TARGET: &str = "pooltrace::kernel";
}

/// Default of the `RELEASE_SAMPLE` global: one Put in 16 walks its stack, which keeps each
/// release path's share an unbiased estimate at a sixteenth of a stack walk per Put.
pub const DEFAULT_RELEASE_SAMPLE: u32 = 16;

/// What a probe site is, as `--dry-run` lists it and as the benchmarks read it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SiteRole {
    /// Near Put's entry.
    Put,
    /// On the call to the pool underneath an inlined copy of Put, in its caller's code.
    PutInlinedCall,
    /// At Get's entry, where its receiver and the size asked for are stashed.
    GetEntry,
    /// At one of Get's RETs.
    GetRet,
    /// After the call to the pool underneath an inlined copy of Get, in its caller's code.
    GetInlinedCall,
}

impl SiteRole {
    pub const ALL: [SiteRole; 5] = [
        SiteRole::Put,
        SiteRole::PutInlinedCall,
        SiteRole::GetEntry,
        SiteRole::GetRet,
        SiteRole::GetInlinedCall,
    ];

    /// The name in `--dry-run`'s JSON (`"role"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SiteRole::Put => "put",
            SiteRole::PutInlinedCall => "put-inlined-call",
            SiteRole::GetEntry => "get-entry",
            SiteRole::GetRet => "get-ret",
            SiteRole::GetInlinedCall => "get-inlined-call",
        }
    }

    /// The role named `text` by [`SiteRole::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// The eBPF program that runs at a site of this role.
    pub const fn program(self) -> &'static str {
        match self {
            SiteRole::Put | SiteRole::PutInlinedCall => names::PROGRAM_PUT,
            SiteRole::GetEntry => names::PROGRAM_GET_ENTRY,
            SiteRole::GetRet | SiteRole::GetInlinedCall => names::PROGRAM_GET,
        }
    }

    /// Whether the site gives objects back. Put sites stay attached while Get's are
    /// toggled (`--sample-gets`), so no object taken is missed coming back.
    pub const fn is_put_side(self) -> bool {
        matches!(self, SiteRole::Put | SiteRole::PutInlinedCall)
    }
}

/// Go's amd64 ABIInternal integer registers in argument order: word `n` of the arguments
/// (receiver first) or of the results lives in `GO_ABI_REGS[n]`.
pub const GO_ABI_REGS: [&str; 9] = ["rax", "rbx", "rcx", "rdi", "rsi", "r8", "r9", "r10", "r11"];

/// Offset of `Kind_` in Go's `abi.Type` (runtime `_type` before 1.21): two uintptrs, a u32 hash
/// and three u8s precede it, in every Go release with the register ABI.
pub const GO_TYPE_KIND_OFFSET: u64 = 23;
/// Mask of the kind bits in `Kind_` (the high bits are flags).
pub const GO_KIND_MASK: u8 = 0x1f;
/// `abi.Slice`: a boxed slice's data word points at a fresh slice header, so identity is one
/// load further.
pub const GO_KIND_SLICE: u8 = 23;

/// How a probe reads one machine word out of the traced goroutine's registers and memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WordSpec {
    /// One of the `WORD_*` constants.
    pub kind: u8,
    /// Index into [`GO_ABI_REGS`].
    pub reg: u8,
    pub _pad: [u8; 2],
    /// Byte offset added to the register value before a load (`WORD_LOAD`).
    pub offset: u32,
}

/// Nothing to read: the word is 0 (e.g. no size known).
pub const WORD_NONE: u8 = 0;
/// The register's value itself.
pub const WORD_REG: u8 = 1;
/// The 8 bytes at `reg + offset` in the target's memory.
pub const WORD_LOAD: u8 = 2;
/// An interface in `reg` (type word) and `reg + 1` (data word): the data word, or for a boxed
/// slice the slice's data pointer that the data word points at.
pub const WORD_IFACE: u8 = 3;

/// What one probe site (a Get entry or RET, a Put entry, or a call to the pool underneath an
/// inlined Get or Put) does; indexed by the attach cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeSite {
    /// Index of the pool this site belongs to (into `COUNTERS`, and part of [`ObjectKey`]).
    pub pool: u32,
    /// `SITE_*` flags.
    pub flags: u32,
    /// The traced process's slot (see [`MAX_TARGET_SLOTS`]): its epoch, its share of
    /// `OUTSTANDING`, and the tag of its stacks and type kinds.
    pub target: u32,
    pub _pad: u32,
    /// The object's identity: the word that is the same at Get and at Put.
    pub key: WordSpec,
    /// The object's size in bytes, or `WORD_NONE`.
    pub size: WordSpec,
    /// Where the pool instance (the method's receiver) is, at entry sites.
    pub receiver: WordSpec,
    /// At a stack check's branch, the `rflags` bits of which any set means this pass goes to
    /// `morestack` and the call passes here again: such a pass is not counted. 0 elsewhere.
    pub morestack_flags: u64,
    /// Only this pool instance is traced, when not 0.
    pub receiver_filter: u64,
    /// A word that stays the same for one object from its Get to its Put but is written
    /// anew when its memory is recycled (a `*[]T`'s data pointer, a slice's capacity), or
    /// `WORD_NONE`. Across a gap in tracing an address alone cannot tell the object that
    /// went out from a new one the garbage collector put there.
    pub ident: WordSpec,
    /// At a Get's entry, the size its caller asked for (an argument, e.g. Thanos'
    /// `Get(sz int)`), or `WORD_NONE`.
    pub request: WordSpec,
}

/// The Get RET takes what its entry probe stashed in `GETS_IN_FLIGHT`.
pub const SITE_ENTRY_STASH: u32 = 1;
/// The Put records the stack it was called from in `RELEASES`.
pub const SITE_RELEASE_PATHS: u32 = 2;
/// The site sends every event to `EVENTS` (stream mode).
pub const SITE_STREAM: u32 = 4;
/// The site lies in the caller's own code, inside a copy of Get or Put the compiler inlined
/// there (on the call it makes to the pool underneath): `[rsp]` is no return address, and
/// the probed instruction is already the caller's frame, so no immediate caller is added.
pub const SITE_IN_CALLER: u32 = 8;
/// Double Puts are caught: a matched Put remembers its object in `RETURNED` (with the
/// Put's stack), a Get forgets it, and a Put of a remembered object is a double Put.
pub const SITE_DOUBLE_PUTS: u32 = 16;
/// The Get RET books the size asked for at entry and the capacity it hands out in `SIZES`.
pub const SITE_SIZES: u32 = 32;
/// Capacity of `RETURNED`, the objects recently given back (an LRU: the oldest are forgotten
/// first, so a double Put of an object returned long ago is missed, not invented).
pub const MAX_RETURNED: u32 = 65_536;
/// Capacity of `DOUBLE_PUTS` (pairs of call paths).
pub const MAX_DOUBLE_PUT_PATHS: u32 = 1_024;
/// Capacity of `GETS_IN_FLIGHT`: Gets in flight at once. An entry left by a Get that never
/// returned (it panicked) is overwritten by its goroutine's next Get; goroutines that die
/// so would count against this bound (a full map only loses receivers, never objects).
pub const MAX_GETS_IN_FLIGHT: u32 = 65_536;

/// Key of `OUTSTANDING`: one object out of one pool.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub pool: u32,
    pub _pad: u32,
    pub addr: u64,
}

/// Value of `OBJECT_QUOTAS`: one target slot's share of `OUTSTANDING`. Where many
/// processes share one object (the agent), a process that leaks cannot take the entries the
/// others need: a Get over its slot's limit is not tracked, and counted in `dropped`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectQuota {
    /// Entries the slot may hold; 0: no limit but the map's size, and `held` is not kept.
    pub limit: u64,
    /// Entries the slot holds now (kept by the kernel with atomic adds).
    pub held: u64,
}

/// Bit of a `STACKS` key where the target slot begins: a key is the hash of the frames in
/// its low bits and the slot above, so a slot's stacks can be told apart and removed when
/// its process is gone (the same frames in two processes of one binary are two entries).
pub const STACK_TARGET_SHIFT: u32 = 52;
const _: () = assert!(MAX_TARGET_SLOTS <= 1 << (64 - STACK_TARGET_SHIFT));

/// The `STACKS` key of frames that hash to `hash` in target slot `target`; never 0 (0 means
/// no stack).
pub fn stack_key(hash: u64, target: u32) -> u64 {
    ((hash & ((1 << STACK_TARGET_SHIFT) - 1)) | u64::from(target) << STACK_TARGET_SHIFT).max(1)
}

/// The target slot of a `STACKS` key.
pub fn stack_target(key: u64) -> u32 {
    (key >> STACK_TARGET_SHIFT) as u32
}

/// Bit of a `GETS_IN_FLIGHT` key where the pool begins, above the goroutine's address (heap
/// addresses fit in 48 bits).
pub const RECEIVER_POOL_SHIFT: u32 = 48;
const _: () = assert!(MAX_TARGET_SLOTS * MAX_POOLS <= 1 << (64 - RECEIVER_POOL_SHIFT));

/// Key of `GETS_IN_FLIGHT`: a goroutine's Get from one pool.
pub fn in_flight_key(pool: u32, goroutine: u64) -> u64 {
    (u64::from(pool) << RECEIVER_POOL_SHIFT) ^ goroutine
}

/// Value of `GETS_IN_FLIGHT`: what a Get's entry saw that is gone from the registers by its
/// RET.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetInFlight {
    /// The pool instance (Get's receiver), 0 when not read.
    pub receiver: u64,
    /// The size asked for, or [`REQUEST_UNKNOWN`].
    pub request: u64,
}

/// `GetInFlight::request` when the site reads none, or its read failed.
pub const REQUEST_UNKNOWN: u64 = u64::MAX;

/// Value of `OUTSTANDING`: where and when an object was taken.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outstanding {
    /// Key in `STACKS` of the user stack at the Get's RET (its first frame is the Get
    /// itself), or 0 when it could not be captured (counted in `stack_failures`).
    pub stack: u64,
    /// Return address into Get's caller, read from `[rsp]` at the RET: the frame-pointer walk
    /// starts at the caller's frame and so never contains it. 0 at a `SITE_IN_CALLER` site,
    /// whose stack starts in the caller.
    pub caller: u64,
    /// Object size in bytes, 0 when unknown.
    pub size: u64,
    /// `bpf_ktime_get_ns` at the Get's return (CLOCK_MONOTONIC).
    pub taken_ns: u64,
    /// The goroutine (`g` pointer in R14) that took it.
    pub goroutine: u64,
    /// The pool instance (Get's receiver) it came from, 0 when not tracked.
    pub receiver: u64,
    /// The epoch of its Get (`EPOCH`): within it Put has watched the object without a break.
    pub epoch: u64,
    /// A second word of the object's identity (`ProbeSite::ident`), 0 when unknown: a Put in
    /// a later epoch whose word differs gave back another object at a recycled address.
    pub ident: u64,
}

impl Outstanding {
    /// The call path of pool `pool` that took this object.
    pub fn path(&self, pool: u32) -> PathKey {
        PathKey {
            pool,
            _pad: 0,
            stack: self.stack,
            caller: self.caller,
            receiver: self.receiver,
        }
    }
}

/// Key of `COLLECTED`: one call path of one pool (as in [`Outstanding`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathKey {
    pub pool: u32,
    pub _pad: u32,
    pub stack: u64,
    pub caller: u64,
    pub receiver: u64,
}

/// Value of `STACKS`, keyed by a 64-bit FNV-1a hash of the frames.
///
/// Not a `BPF_MAP_TYPE_STACK_TRACE`: that map keeps one stack per hash bucket and fails the
/// capture on a collision (or, with `BPF_F_REUSE_STACKID`, silently gives older objects the
/// wrong stack). A hundred distinct stacks collide in 8192 buckets about half the time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackFrames {
    /// Frames in `ips` that are filled.
    pub len: u64,
    pub ips: [u64; MAX_STACK_DEPTH],
}

/// Value of `COLLECTED` (per CPU): objects of a call path that were dropped without a Put.
///
/// Go reuses the memory of a collected object, so a Get that returns an address still
/// tracked as outstanding proves the earlier object was dropped by its holder and collected:
/// a leak (unless its Put was invisible, e.g. inlined). Its entry would otherwise be
/// overwritten and the leak forgotten exactly when it is certain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathTotals {
    pub count: u64,
    pub bytes: u64,
}

/// Value of `CROSSED`: a call path's objects that were still out when their epoch ended (Put
/// was taken away), and were then seen again. None is evidence of a leak: an object handed
/// out again may have been given back while nothing watched, and one given back in a later
/// window was held long, for exactly as long as its Get and Put say.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCrossings {
    /// Objects whose address a later epoch's Get handed out again, or whose address a later
    /// epoch's Put gave back with another second word of identity (another object).
    pub came_back_unseen: u64,
    /// Objects given back in a later epoch (their hold time is in `HOLD_TIMES`).
    pub late_puts: u64,
    /// Of `came_back_unseen`, those a Get handed out again with the same second word of
    /// identity: the very object, given back unseen, so held long and not lost.
    pub returned_unseen: u64,
}

/// Value of `SIZES` (per CPU): what the Gets of one call path asked for and were handed, in
/// the units of the pool's size (bytes for a byte pool). Only Gets whose entry read the size
/// asked for count: one that began before attach is left out, never guessed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathSizes {
    pub gets: u64,
    pub requested: u64,
    pub capacity: u64,
}

impl PathSizes {
    /// Adds `other` in (another CPU's copy, or another path's).
    pub fn add(&mut self, other: &Self) {
        self.gets += other.gets;
        self.requested += other.requested;
        self.capacity += other.capacity;
    }
}

/// Buckets of [`HoldHistogram`]: two per power of two of nanoseconds.
pub const HOLD_BUCKETS: usize = 128;
// The kernel masks bucket indices with `HOLD_BUCKETS - 1` for the verifier.
const _: () = assert!(HOLD_BUCKETS.is_power_of_two());
/// Capacity of `HOLD_TIMES`, `SIZES` and `RELEASES` (call paths, and acquire/release path
/// pairs).
pub const MAX_RELEASE_PATHS: u32 = 8_192;

/// Value of `HOLD_TIMES` (per CPU): how long objects of one call path stayed out before their
/// Put, in half-octave buckets (see [`hold_bucket`]). Kept in the kernel so that report mode
/// does no work per event in user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldHistogram {
    pub buckets: [u64; HOLD_BUCKETS],
}

/// The bucket of a hold time: `2 * floor(log2 ns)`, plus one in the upper half of the octave.
pub fn hold_bucket(ns: u64) -> usize {
    if ns < 2 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as usize;
    let upper_half = ((ns >> (log - 1)) & 1) as usize;
    (2 * log + upper_half).min(HOLD_BUCKETS - 1)
}

/// The smallest hold time in nanoseconds that falls in `bucket`.
pub fn hold_bucket_floor(bucket: usize) -> u64 {
    if bucket < 2 {
        return bucket as u64;
    }
    let log = (bucket / 2) as u32;
    (1u64 << log) + (bucket as u64 % 2) * (1u64 << (log - 1))
}

/// The upper edge of `bucket`: the next one's floor, or `u64::MAX` past the last.
pub fn hold_bucket_ceiling(bucket: usize) -> u64 {
    match bucket + 1 < HOLD_BUCKETS {
        true => hold_bucket_floor(bucket + 1),
        false => u64::MAX,
    }
}

/// Key of `RELEASES`: objects of one acquire path (as [`PathKey`]) given back through one
/// release path (the Put's stack and caller).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReleaseKey {
    pub acquire: PathKey,
    pub release_stack: u64,
    pub release_caller: u64,
}

/// Key of `DOUBLE_PUTS`: double Puts of one pool's objects through one call path (the second
/// Put's stack and caller) after a first Put from one caller.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DoublePutKey {
    pub pool: u32,
    pub _pad: u32,
    /// Key in `STACKS` of the second Put's stack, 0 when it could not be captured.
    pub stack: u64,
    /// Return address into the second Put's caller (0 at an inlined copy's site).
    pub caller: u64,
    /// The first Put's stack (key in `STACKS`) and caller, as [`ReturnedBy`] kept them; 0
    /// when the two Puts raced on two CPUs.
    pub first_stack: u64,
    pub first_caller: u64,
}

/// Value of `RETURNED`: the call path of the Put that gave an object back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnedBy {
    /// Key in `STACKS` of the Put's stack, 0 when it could not be captured.
    pub stack: u64,
    /// Return address into the Put's caller (0 at an inlined copy's site).
    pub caller: u64,
    /// The epoch of that Put: a later Put of the object is a second one only in the same
    /// epoch, since a Get in between may have gone unseen.
    pub epoch: u64,
}

/// What `EVENTS` carries in stream mode: one Get or Put.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamEvent {
    /// `EVENT_GET`, `EVENT_PUT` or `EVENT_DOUBLE_PUT`.
    pub kind: u32,
    pub pool: u32,
    pub time_ns: u64,
    pub goroutine: u64,
    pub object: u64,
    /// The object's size as its Get read it (0 when unknown, or at a Put of an object taken
    /// before attach).
    pub size: u64,
    /// Key in `STACKS` (0: none), and the immediate caller: the return address into it, or
    /// at a `SITE_IN_CALLER` site the probed instruction itself, which lies in it.
    pub stack: u64,
    pub caller: u64,
    /// At Put: how long the object was out, or `u64::MAX` when its Get was not seen.
    pub age_ns: u64,
}

pub const EVENT_GET: u32 = 1;
pub const EVENT_PUT: u32 = 2;
/// A Put of an object already back in its pool (`SITE_DOUBLE_PUTS`).
pub const EVENT_DOUBLE_PUT: u32 = 3;
/// Size of `EVENTS`, the stream mode ring buffer.
pub const EVENTS_BYTES: u32 = 1 << 22;

/// Per-pool counters, one copy per CPU (`PerCpuArray`), summed by user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Get calls that returned an object.
    pub gets: u64,
    /// Get calls that returned no object (nil, e.g. with an error).
    pub nil_gets: u64,
    /// Put calls.
    pub puts: u64,
    /// Put calls whose object was not outstanding (taken before attach, a nil object,
    /// dropped when `OUTSTANDING` was full, or left out by size) and is no double Put.
    pub unmatched_puts: u64,
    /// Objects not tracked because `OUTSTANDING` was full, or held its target's share
    /// (`OBJECT_QUOTAS`).
    pub dropped: u64,
    /// Objects tracked without a stack (`bpf_get_stack` failed, or `STACKS` was full).
    pub stack_failures: u64,
    /// Objects handed out again while still tracked as outstanding: the earlier object was
    /// dropped without a Put and collected (or its Put was invisible, e.g. inlined).
    /// Each is added to `COLLECTED` under the earlier object's call path.
    pub collected: u64,
    /// Collected objects not added to `COLLECTED` because it was full.
    pub collected_dropped: u64,
    /// Key or size words that could not be read from the target's memory.
    pub read_faults: u64,
    /// Hold times or release paths not recorded because their maps were full.
    pub paths_dropped: u64,
    /// Stream events lost because the ring buffer was full.
    pub stream_lost: u64,
    /// Puts of an object already back in the pool (`SITE_DOUBLE_PUTS`): counted apart from
    /// `unmatched_puts`, which are harmless.
    pub double_puts: u64,
    /// Gets whose object's size was outside `SIZE_MIN..=SIZE_MAX`: not tracked, so their
    /// Puts count as unmatched.
    pub size_filtered: u64,
    /// Passes of Put's stack check that went to `morestack` (the stack had to grow, or the
    /// goroutine was to be preempted): Put restarts from its entry and is counted then.
    pub put_restarts: u64,
    /// Gets that handed out the address of an object still tracked from an earlier epoch:
    /// it may have been given back while Put was not probed, so it is not counted as
    /// collected (see `CROSSED`).
    pub came_back_unseen: u64,
    /// Puts of an object taken in an earlier epoch: a long hold, timed exactly.
    pub late_puts: u64,
    /// Of `came_back_unseen`, Gets that handed out the very object again (its second word of
    /// identity unchanged): it was given back unseen.
    pub returned_unseen: u64,
}

/// User space sums the per-CPU copies. The destructuring names every field, so a counter
/// added to `PoolCounters` does not compile until it is summed here too.
impl core::ops::AddAssign<&PoolCounters> for PoolCounters {
    fn add_assign(&mut self, more: &PoolCounters) {
        let PoolCounters {
            gets,
            nil_gets,
            puts,
            unmatched_puts,
            dropped,
            stack_failures,
            collected,
            collected_dropped,
            read_faults,
            paths_dropped,
            stream_lost,
            double_puts,
            size_filtered,
            put_restarts,
            came_back_unseen,
            late_puts,
            returned_unseen,
        } = *more;
        self.gets += gets;
        self.nil_gets += nil_gets;
        self.puts += puts;
        self.unmatched_puts += unmatched_puts;
        self.dropped += dropped;
        self.stack_failures += stack_failures;
        self.collected += collected;
        self.collected_dropped += collected_dropped;
        self.read_faults += read_faults;
        self.paths_dropped += paths_dropped;
        self.stream_lost += stream_lost;
        self.double_puts += double_puts;
        self.size_filtered += size_filtered;
        self.put_restarts += put_restarts;
        self.came_back_unseen += came_back_unseen;
        self.late_puts += late_puts;
        self.returned_unseen += returned_unseen;
    }
}

/// Fails the build when a type's size is not the sum of the sizes of its fields: padding the
/// compiler inserts is never initialised, and these bytes cross into the kernel. The
/// destructuring names every field (the compiler refuses a missing one), and each field's size
/// is taken from the value, so the check cannot drift from the definition.
macro_rules! assert_no_padding {
    ($($ty:ident { $($field:ident),+ $(,)? });+ $(;)?) => {
        $(const _: () = {
            // SAFETY: every type checked here is plain integers, for which zero is valid.
            let $ty { $($field),+ } = unsafe { core::mem::zeroed::<$ty>() };
            let fields = 0 $(+ core::mem::size_of_val(&$field))+;
            assert!(
                core::mem::size_of::<$ty>() == fields,
                concat!(stringify!($ty), " has implicit padding"),
            );
        };)+
    };
}

assert_no_padding! {
    WordSpec { kind, reg, _pad, offset };
    ProbeSite {
        pool, flags, target, _pad, key, size, receiver, morestack_flags, receiver_filter, ident,
        request
    };
    GetInFlight { receiver, request };
    PathSizes { gets, requested, capacity };
    ObjectQuota { limit, held };
    ObjectKey { pool, _pad, addr };
    Outstanding { stack, caller, size, taken_ns, goroutine, receiver, epoch, ident };
    PathKey { pool, _pad, stack, caller, receiver };
    StackFrames { len, ips };
    PathTotals { count, bytes };
    PathCrossings { came_back_unseen, late_puts, returned_unseen };
    HoldHistogram { buckets };
    ReleaseKey { acquire, release_stack, release_caller };
    DoublePutKey { pool, _pad, stack, caller, first_stack, first_caller };
    ReturnedBy { stack, caller, epoch };
    StreamEvent { kind, pool, time_ns, goroutine, object, size, stack, caller, age_ns };
    PoolCounters {
        gets, nil_gets, puts, unmatched_puts, dropped, stack_failures, collected,
        collected_dropped, read_faults, paths_dropped, stream_lost, double_puts, size_filtered,
        put_restarts, came_back_unseen, late_puts, returned_unseen
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_buckets_are_half_octaves_and_floors_invert_them() {
        assert_eq!(hold_bucket(0), 0);
        assert_eq!(hold_bucket(1), 1);
        assert_eq!(hold_bucket(2), 2);
        assert_eq!(hold_bucket(3), 3);
        assert_eq!(hold_bucket(1000), 19);
        for bucket in 2..HOLD_BUCKETS - 2 {
            let floor = hold_bucket_floor(bucket);
            assert_eq!(hold_bucket(floor), bucket);
            assert_eq!(hold_bucket(hold_bucket_floor(bucket + 1) - 1), bucket);
            assert_eq!(hold_bucket_ceiling(bucket), hold_bucket_floor(bucket + 1));
        }
        assert_eq!(hold_bucket_ceiling(HOLD_BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn stack_keys_carry_their_slot_and_are_never_zero() {
        assert_eq!(stack_target(stack_key(u64::MAX, 7)), 7);
        assert_eq!(
            stack_target(stack_key(0x1234, MAX_TARGET_SLOTS - 1)),
            MAX_TARGET_SLOTS - 1
        );
        assert_eq!(stack_key(1 << STACK_TARGET_SHIFT, 0), 1);
        assert_ne!(stack_key(5, 1), stack_key(5, 2));
        assert_eq!(in_flight_key(3, 0x00c0_0000_1000) >> RECEIVER_POOL_SHIFT, 3);
    }

    #[test]
    fn site_roles_parse_back_from_their_names() {
        for role in SiteRole::ALL {
            assert_eq!(SiteRole::parse(role.as_str()), Some(role));
        }
        assert_eq!(SiteRole::parse("get"), None);
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        DoublePutKey, GetInFlight, HoldHistogram, ObjectKey, ObjectQuota, Outstanding,
        PathCrossings, PathKey, PathSizes, PathTotals, PoolCounters, ProbeSite, ReleaseKey,
        ReturnedBy, StackFrames, StreamEvent,
    };

    // SAFETY: plain #[repr(C)] data with no implicit padding (asserted at compile time by
    // `assert_no_padding!`); every bit pattern is a valid value.
    unsafe impl aya::Pod for ProbeSite {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ObjectKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Outstanding {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PoolCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PathKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PathTotals {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PathSizes {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GetInFlight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PathCrossings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StackFrames {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HoldHistogram {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ReleaseKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DoublePutKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StreamEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ObjectQuota {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ReturnedBy {}
}
