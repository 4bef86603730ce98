//! pooltrace's kernel side: uprobe programs that pair every pool Get with its Put.
//!
//! `pool_get` runs at each RET of a Get function and records the returned object in
//! `OUTSTANDING` with the stack that took it; `pool_put` runs on the branch of Put's stack
//! check and removes it (a pass that branches to `morestack` is skipped: Put restarts).
//! Where the compiler inlined Get or Put into a caller, they run inside the caller instead
//! (`SITE_IN_CALLER`): after, or at, the inlined copy's call to the pool underneath. What is
//! left in `OUTSTANDING` is what the program still holds. With `SITE_DOUBLE_PUTS`, a Put
//! also remembers its object in `RETURNED` until a Get hands it out again, and a Put of a
//! remembered object is a double Put. Every path that does not record an event bumps a
//! counter, so user space can say exactly what was lost.
#![no_std]
#![no_main]
// Map keys and values go by reference: by value they would be copied onto the 512-byte BPF
// stack for nothing.
#![allow(clippy::needless_borrows_for_generic_args)]

use aya_ebpf::{
    bindings::{pt_regs, BPF_NOEXIST},
    helpers::{
        bpf_get_attach_cookie, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf,
    },
    macros::{map, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProbeContext,
    EbpfContext,
};
use tracer_common::{
    hold_bucket, DoublePutKey, HoldHistogram, ReleaseKey, ReturnedBy, StreamEvent,
    DEFAULT_RELEASE_SAMPLE, EVENTS_BYTES, EVENT_DOUBLE_PUT, EVENT_GET, EVENT_PUT, HOLD_BUCKETS,
    MAX_DOUBLE_PUT_PATHS, MAX_RELEASE_PATHS, MAX_RETURNED, SITE_DOUBLE_PUTS, SITE_IN_CALLER,
    SITE_RELEASE_PATHS, SITE_STREAM,
};
use tracer_common::{
    ObjectKey, Outstanding, PathKey, PathTotals, PoolCounters, ProbeSite, StackFrames, WordSpec,
    DEFAULT_MAX_OBJECTS, DEFAULT_MAX_STACKS, GO_KIND_MASK, GO_KIND_SLICE, GO_TYPE_KIND_OFFSET,
    MAX_COLLECTED_PATHS, MAX_GETS_IN_FLIGHT, MAX_POOLS, MAX_SITES, MAX_STACK_DEPTH,
    SITE_TRACKS_RECEIVER, WORD_IFACE, WORD_LOAD, WORD_REG,
};

// Map, program and global names are `tracer_common::names`: user space opens them by those
// strings, and a unit test in `tracer` checks the object carries every one.

/// What each attached site reads; indexed by the attach cookie.
#[map]
static SITES: Array<ProbeSite> = Array::with_max_entries(MAX_SITES, 0);

/// Every object that is out of its pool: taken by a Get, not yet given back by a Put.
#[map]
static OUTSTANDING: HashMap<ObjectKey, Outstanding> =
    HashMap::with_max_entries(DEFAULT_MAX_OBJECTS, 0);

/// User stacks of the Gets, by a hash of their frames.
#[map]
static STACKS: HashMap<u64, StackFrames> = HashMap::with_max_entries(DEFAULT_MAX_STACKS, 0);

/// Where a stack is captured before it is hashed (too big for the 512-byte BPF stack).
#[map]
static SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

/// Objects dropped without a Put and collected, by the call path that took them.
#[map]
static COLLECTED: PerCpuHashMap<PathKey, PathTotals> =
    PerCpuHashMap::with_max_entries(MAX_COLLECTED_PATHS, 0);

/// Receivers of the Gets in flight, by (pool, goroutine): the entry probe stashes the
/// receiver, which is gone from the registers by the time the RET probe runs. A plain hash
/// (an LRU costs ~100 ns more an update): the RET removes each entry, and one left by a Get
/// that panicked is overwritten when its goroutine next calls Get.
#[map]
static RECEIVERS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_GETS_IN_FLIGHT, 0);

/// How long objects stayed out before their Put, by the call path that took them.
#[map]
static HOLD_TIMES: PerCpuHashMap<PathKey, HoldHistogram> =
    PerCpuHashMap::with_max_entries(MAX_RELEASE_PATHS, 0);

/// A zeroed histogram to insert from (it is too big for the BPF stack).
#[map]
static ZERO_HISTOGRAM: Array<HoldHistogram> = Array::with_max_entries(1, 0);

/// Objects given back, by acquire path and release path (the Put's stack).
#[map]
static RELEASES: PerCpuHashMap<ReleaseKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_RELEASE_PATHS, 0);

/// Objects given back and not handed out since, with the call path of their Put: what
/// tells a double Put from a harmless Put of an object taken before attach. An LRU, so it
/// stays bounded: an object returned long ago and forgotten is missed, not invented.
#[map]
static RETURNED: LruHashMap<ObjectKey, ReturnedBy> = LruHashMap::with_max_entries(MAX_RETURNED, 0);

/// Double Puts, by the second Put's call path and where the first was called from.
#[map]
static DOUBLE_PUTS: PerCpuHashMap<DoublePutKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_DOUBLE_PUT_PATHS, 0);

/// Stream mode: every Get and Put, in order.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per-pool event counters, one copy per CPU so no update needs an atomic.
#[map]
static COUNTERS: PerCpuArray<PoolCounters> = PerCpuArray::with_max_entries(MAX_POOLS, 0);

const E2BIG: i32 = 7;
const EEXIST: i32 = -17;

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
fn stack_depth() -> usize {
    // SAFETY: a valid, aligned static that nothing in the program writes.
    let depth = unsafe { core::ptr::read_volatile(&STACK_DEPTH) } as usize;
    depth.clamp(1, MAX_STACK_DEPTH)
}

/// Whether an object of `size` is tracked; `filtering` tells whether any size is refused.
fn size_wanted(size: u64) -> (bool, bool) {
    // SAFETY: valid, aligned statics that nothing in the program writes.
    let (min, max) = unsafe {
        (
            core::ptr::read_volatile(&SIZE_MIN),
            core::ptr::read_volatile(&SIZE_MAX),
        )
    };
    (size >= min && size <= max, min > 0 || max < u64::MAX)
}

/// The loader's value of `RELEASE_SAMPLE`. A plain read would be folded to the compiled-in
/// default; 0 is taken as 1 so the modulo can never divide by zero.
fn release_sample() -> u32 {
    // SAFETY: a valid, aligned static that nothing in the program writes.
    unsafe { core::ptr::read_volatile(&RELEASE_SAMPLE) }.max(1)
}

#[uprobe]
pub fn pool_get(ctx: ProbeContext) -> u32 {
    if let Some((site, counters)) = site_and_counters(&ctx) {
        on_get(&ctx, site, counters);
    }
    0
}

#[uprobe]
pub fn pool_get_entry(ctx: ProbeContext) -> u32 {
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if let Some(site) = SITES.get(cookie as u32) {
        let regs = unsafe { &*ctx.regs };
        if goes_to_morestack(site, regs) {
            return 0;
        }
        if let Some(receiver) = read_word(&GoRegs::read(regs), &site.receiver) {
            if site.receiver_filter == 0 || receiver == site.receiver_filter {
                let _ = RECEIVERS.insert(&in_flight_key(site.pool, regs.r14), &receiver, 0);
            }
        }
    }
    0
}

#[uprobe]
pub fn pool_put(ctx: ProbeContext) -> u32 {
    if let Some((site, counters)) = site_and_counters(&ctx) {
        on_put(&ctx, site, counters);
    }
    0
}

fn site_and_counters(
    ctx: &ProbeContext,
) -> Option<(&'static ProbeSite, &'static mut PoolCounters)> {
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let site = SITES.get(cookie as u32)?;
    let counters = COUNTERS.get_ptr_mut(site.pool)?;
    // SAFETY: per-CPU slot, and uprobe programs do not preempt each other on one CPU.
    Some((site, unsafe { &mut *counters }))
}

fn on_get(ctx: &ProbeContext, site: &ProbeSite, counters: &mut PoolCounters) {
    let regs = unsafe { &*ctx.regs };
    let words = GoRegs::read(regs);
    let object = read_word(&words, &site.key);
    if let (Some(addr @ 1..), true) = (object, site.flags & SITE_DOUBLE_PUTS != 0) {
        // Handed out again, whatever else this Get turns out to be (another instance, one
        // begun before attach, the wrong size): its next Put is a first one. Forgetting can
        // only miss a double Put, never invent one.
        let key = ObjectKey {
            pool: site.pool,
            _pad: 0,
            addr,
        };
        let _ = RETURNED.remove(&key);
    }
    let mut receiver = 0;
    if site.flags & SITE_TRACKS_RECEIVER != 0 {
        let in_flight = in_flight_key(site.pool, regs.r14);
        match unsafe { RECEIVERS.get(&in_flight) } {
            Some(&stashed) => {
                receiver = stashed;
                let _ = RECEIVERS.remove(&in_flight);
            }
            // Another pool instance (filtered at entry), or a call that began before attach.
            None if site.receiver_filter != 0 => return,
            None => {}
        }
    }
    let Some(addr) = object else {
        counters.read_faults += 1;
        return;
    };
    if addr == 0 {
        counters.nil_gets += 1;
        return;
    }
    counters.gets += 1;
    let key = ObjectKey {
        pool: site.pool,
        _pad: 0,
        addr,
    };
    // A size that cannot be read is counted once, as a fault, and the object tracked.
    let size = match read_word(&words, &site.size) {
        Some(size) if !size_wanted(size).0 => {
            counters.size_filtered += 1;
            return;
        }
        Some(size) => size,
        None => {
            counters.read_faults += 1;
            0
        }
    };
    // At a RET, [rsp] is the return address into Get's caller.
    let (stack, caller) = capture_stack(ctx, site.flags);
    let stack = stack.unwrap_or_else(|| {
        counters.stack_failures += 1;
        0
    });
    let value = Outstanding {
        stack,
        caller,
        size,
        taken_ns: unsafe { bpf_ktime_get_ns() },
        goroutine: regs.r14,
        receiver,
    };
    if site.flags & SITE_STREAM != 0 {
        stream_get(site, counters, &value, addr, regs);
    }
    match OUTSTANDING.insert(&key, &value, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(errno) if -errno == E2BIG => counters.dropped += 1,
        Err(_) => {
            // Still outstanding: the earlier object at this address was dropped without a
            // Put and its memory recycled. Book it as collected, then track the new one.
            if let Some(earlier) = unsafe { OUTSTANDING.get(&key) } {
                record_collected(site.pool, earlier, counters);
            }
            if OUTSTANDING.insert(&key, &value, 0).is_err() {
                counters.dropped += 1;
            }
        }
    }
}

fn record_collected(pool: u32, earlier: &Outstanding, counters: &mut PoolCounters) {
    counters.collected += 1;
    let path = earlier.path(pool);
    match COLLECTED.get_ptr_mut(&path) {
        // SAFETY: this CPU's copy of the value.
        Some(totals) => unsafe {
            (*totals).count += 1;
            (*totals).bytes += earlier.size;
        },
        None => {
            let totals = PathTotals {
                count: 1,
                bytes: earlier.size,
            };
            if COLLECTED.insert(&path, &totals, 0).is_err() {
                counters.collected_dropped += 1;
            }
        }
    }
}

/// Whether this pass over a stack check's branch goes to `morestack`, which restarts the
/// function: the pass after it is the one to count.
fn goes_to_morestack(site: &ProbeSite, regs: &pt_regs) -> bool {
    regs.eflags & site.morestack_flags != 0
}

fn on_put(ctx: &ProbeContext, site: &ProbeSite, counters: &mut PoolCounters) {
    let regs = unsafe { &*ctx.regs };
    let words = GoRegs::read(regs);
    if site.receiver_filter != 0 && read_word(&words, &site.receiver) != Some(site.receiver_filter)
    {
        return;
    }
    if goes_to_morestack(site, regs) {
        counters.put_restarts += 1;
        return;
    }
    counters.puts += 1;
    let Some(addr) = read_word(&words, &site.key) else {
        counters.read_faults += 1;
        counters.unmatched_puts += 1;
        return;
    };
    let key = ObjectKey {
        pool: site.pool,
        _pad: 0,
        addr,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // Copied out before the entry goes: the hold time and release path need it.
    let Some(taken) = (unsafe { OUTSTANDING.get(&key) }).copied() else {
        if site.flags & SITE_DOUBLE_PUTS != 0 {
            if let Some(&first) = unsafe { RETURNED.get(&key) } {
                record_double_put(ctx, site, &key, &first, counters);
                return;
            }
        }
        counters.unmatched_puts += 1;
        // Under a size filter most unmatched Puts are of objects left out by size: only
        // the objects shown are streamed.
        if site.flags & SITE_STREAM != 0 && !size_wanted(0).1 {
            stream(site, counters, EVENT_PUT, regs, addr, 0, u64::MAX);
        }
        return;
    };
    if OUTSTANDING.remove(&key).is_err() {
        // Another CPU's Put of the same object won the race: two Puts of one Get.
        match site.flags & SITE_DOUBLE_PUTS {
            0 => counters.unmatched_puts += 1,
            _ => record_double_put(ctx, site, &key, &ReturnedBy::default(), counters),
        }
        return;
    }
    let acquire = taken.path(site.pool);
    let held = now.saturating_sub(taken.taken_ns);
    record_hold_time(&acquire, held, counters);
    // One Put in RELEASE_SAMPLE records its stack: each path's share stays an unbiased
    // estimate, at a fraction of a stack walk per Put. Catching double Puts needs every
    // Put's stack; one walk serves both.
    let sampled = site.flags & SITE_RELEASE_PATHS != 0
        && unsafe { bpf_get_prandom_u32() } % release_sample() == 0;
    let remembered = site.flags & SITE_DOUBLE_PUTS != 0;
    if sampled || remembered {
        // Before Put's prologue, [rsp] is the return address into its caller.
        let (stack, caller) = capture_stack(ctx, site.flags);
        let by = ReturnedBy {
            stack: stack.unwrap_or(0),
            caller,
        };
        if remembered {
            let _ = RETURNED.insert(&key, &by, 0);
        }
        if sampled {
            record_release(acquire, &by, counters);
        }
    }
    if site.flags & SITE_STREAM != 0 {
        stream(site, counters, EVENT_PUT, regs, addr, taken.size, held);
    }
}

/// Counts a Put of an object already back in its pool under both Puts' call paths.
fn record_double_put(
    ctx: &ProbeContext,
    site: &ProbeSite,
    key: &ObjectKey,
    first: &ReturnedBy,
    counters: &mut PoolCounters,
) {
    counters.double_puts += 1;
    let (stack, caller) = capture_stack(ctx, site.flags);
    let path = DoublePutKey {
        pool: site.pool,
        _pad: 0,
        stack: stack.unwrap_or(0),
        caller,
        first_stack: first.stack,
        first_caller: first.caller,
    };
    match DOUBLE_PUTS.get_ptr_mut(&path) {
        // SAFETY: this CPU's copy of the counter.
        Some(count) => unsafe { *count += 1 },
        None => {
            if DOUBLE_PUTS.insert(&path, &1, 0).is_err() {
                counters.paths_dropped += 1;
            }
        }
    }
    if site.flags & SITE_STREAM != 0 {
        // SAFETY: the context's registers, valid for the whole program.
        let regs = unsafe { &*ctx.regs };
        stream(
            site,
            counters,
            EVENT_DOUBLE_PUT,
            regs,
            key.addr,
            0,
            u64::MAX,
        );
    }
}

/// Where the probed Put was called from: the return address at `[rsp]` at its entry, or
/// the site itself in an inlined copy.
fn called_from(regs: &pt_regs, flags: u32) -> u64 {
    match flags & SITE_IN_CALLER {
        0 => unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0),
        _ => regs.rip,
    }
}

fn record_hold_time(acquire: &PathKey, held: u64, counters: &mut PoolCounters) {
    // Masked where it is used: LLVM knows hold_bucket() < HOLD_BUCKETS and drops a bounds
    // check, but the verifier must see one. black_box hides the range from LLVM.
    let bucket = core::hint::black_box(hold_bucket(held)) & (HOLD_BUCKETS - 1);
    // One lookup for a path seen before, the common case; a new path is inserted zeroed
    // (a histogram is too big for the BPF stack: copied from a map) and looked up again.
    let histogram = match HOLD_TIMES.get_ptr_mut(acquire) {
        Some(histogram) => histogram,
        None => {
            let Some(zero) = ZERO_HISTOGRAM.get(0) else {
                return;
            };
            let _ = HOLD_TIMES.insert(acquire, zero, BPF_NOEXIST as u64);
            match HOLD_TIMES.get_ptr_mut(acquire) {
                Some(histogram) => histogram,
                None => {
                    counters.paths_dropped += 1;
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's copy; the bucket index is below HOLD_BUCKETS.
    unsafe {
        if let Some(count) = (*histogram).buckets.get_mut(bucket) {
            *count += 1;
        }
    }
}

/// Counts the object under its acquire path and the call path of this Put.
fn record_release(acquire: PathKey, by: &ReturnedBy, counters: &mut PoolCounters) {
    let release = ReleaseKey {
        acquire,
        release_stack: by.stack,
        release_caller: by.caller,
    };
    match RELEASES.get_ptr_mut(&release) {
        // SAFETY: this CPU's copy of the counter.
        Some(count) => unsafe { *count += 1 },
        None => {
            if RELEASES.insert(&release, &1, 0).is_err() {
                counters.paths_dropped += 1;
            }
        }
    }
}

fn stream_get(
    site: &ProbeSite,
    counters: &mut PoolCounters,
    taken: &Outstanding,
    object: u64,
    regs: &pt_regs,
) {
    let Some(mut entry) = EVENTS.reserve::<StreamEvent>(0) else {
        counters.stream_lost += 1;
        return;
    };
    entry.write(StreamEvent {
        kind: EVENT_GET,
        pool: site.pool,
        time_ns: taken.taken_ns,
        goroutine: taken.goroutine,
        object,
        size: taken.size,
        stack: taken.stack,
        caller: match site.flags & SITE_IN_CALLER {
            0 => taken.caller,
            _ => regs.rip,
        },
        age_ns: 0,
    });
    entry.submit(0);
}

/// Sends one Get or Put to `EVENTS`; a full ring buffer is counted, never silent.
fn stream(
    site: &ProbeSite,
    counters: &mut PoolCounters,
    kind: u32,
    regs: &pt_regs,
    object: u64,
    size: u64,
    age_ns: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<StreamEvent>(0) else {
        counters.stream_lost += 1;
        return;
    };
    entry.write(StreamEvent {
        kind,
        pool: site.pool,
        time_ns: unsafe { bpf_ktime_get_ns() },
        goroutine: regs.r14,
        object,
        size,
        stack: 0,
        // No stack is sent with a Put: at an inlined copy, the site itself says where in the
        // caller it ran.
        caller: called_from(regs, site.flags),
        age_ns,
    });
    entry.submit(0);
}

/// Key of `RECEIVERS`: a goroutine's Get from one pool (heap addresses fit in 48 bits).
fn in_flight_key(pool: u32, goroutine: u64) -> u64 {
    (u64::from(pool) << 48) ^ goroutine
}

/// Captures the user stack into `STACKS`: its key (`None` when it could not be captured or
/// stored) and the word at `[rsp]`, the return address into the probed function's caller
/// at an entry or a RET. At a `SITE_IN_CALLER` site the probed instruction is in the caller
/// already and `[rsp]` is whatever its frame holds there: the caller is 0, none.
fn capture_stack(ctx: &ProbeContext, flags: u32) -> (Option<u64>, u64) {
    let (Some(scratch), Some(window)) = (SCRATCH.get_ptr_mut(0), STACK_WINDOW.get_ptr_mut(0))
    else {
        return (None, 0);
    };
    // SAFETY: this CPU's scratch slots; nothing else runs on this CPU meanwhile.
    let (frames, window) = unsafe { (&mut *scratch, &mut *window) };
    let regs = unsafe { &*ctx.regs };
    let (len, at_rsp) = walk_frame_pointers(regs, &mut frames.ips, window);
    let caller = match flags & SITE_IN_CALLER {
        0 => at_rsp,
        _ => 0,
    };
    frames.len = len;
    let key = fnv1a(frames);
    // Most stacks are known already: a lock-free lookup spares the insert's bucket lock.
    if unsafe { STACKS.get(&key) }.is_some() {
        return (Some(key), caller);
    }
    match STACKS.insert(&key, frames, BPF_NOEXIST as u64) {
        // Already there: the same frames, since the key is a 64-bit hash of them.
        Ok(()) | Err(EEXIST) => (Some(key), caller),
        Err(_) => (None, caller),
    }
}

/// Bytes of goroutine stack copied in one read from `rsp` before walking.
///
/// A compile-time constant, not a load-time global: it is the size of `STACK_WINDOW`'s value
/// type, and the verifier must see the read's length and every index into the window bounded
/// by that size. A smaller runtime window would save only part of one copy, and a larger one
/// needs a new value type (a rebuild) anyway.
const WINDOW_BYTES: usize = 1024;
const WINDOW_WORDS: usize = WINDOW_BYTES / 8;
// Indices into the window are masked with `WINDOW_WORDS - 1` for the verifier.
const _: () = assert!(WINDOW_WORDS.is_power_of_two() && WINDOW_BYTES % 8 == 0);

/// One read of the stack from `rsp` up: most of a Go call chain fits.
#[map]
static STACK_WINDOW: PerCpuArray<[u64; WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// The probed instruction, then the return address of each frame on Go's frame-pointer
/// chain (`[rbp]` = caller's rbp, `[rbp+8]` = return address), up to `ips.len()` frames.
///
/// Go keeps frame pointers in every function, and a goroutine's frames are contiguous, so
/// one 1 KiB read from `rsp` holds most chains: records inside it cost nothing more, and
/// only frames beyond it take a read each. `bpf_get_stack`'s generic perf callchain cost
/// 1.4 us a capture here, a read per frame 0.7 us (kernel.bpf_stats_enabled). Like the
/// kernel's walk, it starts at the caller's frame when the probe is at an entry or a RET; in
/// the middle of a function (an inlined copy's call), at its caller's.
fn walk_frame_pointers(
    regs: &pt_regs,
    ips: &mut [u64; MAX_STACK_DEPTH],
    window: &mut [u64; WINDOW_WORDS],
) -> (u64, u64) {
    let base = regs.rsp;
    let window_ok = unsafe {
        bpf_probe_read_user_buf(
            base as *const u8,
            core::slice::from_raw_parts_mut(window.as_mut_ptr().cast(), WINDOW_BYTES),
        )
    }
    .is_ok();
    let at_rsp = match window_ok {
        true => window[0],
        false => unsafe { bpf_probe_read_user(base as *const u64) }.unwrap_or(0),
    };
    ips[0] = regs.rip;
    let mut fp = regs.rbp;
    let mut len = 1;
    let depth = stack_depth();
    while len < MAX_STACK_DEPTH {
        if fp == 0 || len >= depth {
            break;
        }
        let offset = fp.wrapping_sub(base);
        let (next_fp, return_address) =
            if window_ok && offset.is_multiple_of(8) && offset + 16 <= WINDOW_BYTES as u64 {
                // Masked for the verifier; the bound above already holds.
                let at = (offset / 8) as usize & (WINDOW_WORDS - 1);
                (window[at], window[(at + 1) & (WINDOW_WORDS - 1)])
            } else {
                match unsafe { bpf_probe_read_user(fp as *const [u64; 2]) } {
                    Ok(record) => (record[0], record[1]),
                    Err(_) => break,
                }
            };
        if return_address == 0 {
            break;
        }
        ips[len] = return_address;
        len += 1;
        // Frames live further up the stack; anything else is a corrupt chain.
        if next_fp <= fp {
            break;
        }
        fp = next_fp;
    }
    (len as u64, at_rsp)
}

/// FNV-1a over the filled frames, never 0 (0 means "no stack").
fn fnv1a(frames: &StackFrames) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..MAX_STACK_DEPTH {
        if i as u64 >= frames.len {
            break;
        }
        hash = (hash ^ frames.ips[i]).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// Reads one word as `spec` says; `None` when target memory could not be read.
fn read_word(regs: &GoRegs, spec: &WordSpec) -> Option<u64> {
    match spec.kind {
        WORD_REG => Some(regs.get(spec.reg)),
        WORD_LOAD => load(regs.get(spec.reg).wrapping_add(spec.offset as u64)),
        WORD_IFACE => iface_identity(regs.get(spec.reg), regs.get(spec.reg + 1)),
        _ => Some(0),
    }
}

/// Identity of an object held in an interface: the data word, except that a boxed slice's
/// data word points at a header allocated anew at each boxing, so the slice's data pointer
/// is the one that survives the round trip.
fn iface_identity(type_word: u64, data_word: u64) -> Option<u64> {
    if type_word == 0 {
        return Some(0);
    }
    if type_kind(type_word)? & GO_KIND_MASK == GO_KIND_SLICE {
        load(data_word)
    } else {
        Some(data_word)
    }
}

/// Slots of `TYPE_KINDS`: a pool sees a handful of types.
const TYPE_KIND_SLOTS: usize = 64;

/// The kinds of the Go types seen in interfaces, direct-mapped by type address: a Go type
/// descriptor never changes or moves, so a kind read once from the target stays true for
/// the process's life, and a hit spares a read of target memory on every Get and Put. Each
/// slot is `type address | kind << 56 | 1 << 63` (user addresses fit in 47 bits), one word
/// that checks itself, so a slot overwritten halfway through a program is a miss, never a
/// wrong kind.
#[map]
static TYPE_KINDS: PerCpuArray<[u64; TYPE_KIND_SLOTS]> = PerCpuArray::with_max_entries(1, 0);

const KIND_CACHED: u64 = 1 << 63;

fn type_kind(type_word: u64) -> Option<u8> {
    let slot = (type_word >> 4) as usize & (TYPE_KIND_SLOTS - 1);
    let cache = TYPE_KINDS.get_ptr_mut(0);
    if let Some(cache) = cache {
        // SAFETY: this CPU's copy; the index is masked to the array's length.
        let cached = unsafe { (*cache)[slot] };
        if cached & KIND_CACHED != 0 && cached & ((1 << 56) - 1) == type_word {
            return Some((cached >> 56) as u8 & 0x7f);
        }
    }
    let kind: u8 =
        unsafe { bpf_probe_read_user((type_word + GO_TYPE_KIND_OFFSET) as *const u8) }.ok()?;
    if let (Some(cache), true) = (cache, type_word < 1 << 56) {
        // SAFETY: as above.
        unsafe { (*cache)[slot] = type_word | u64::from(kind & 0x7f) << 56 | KIND_CACHED };
    }
    Some(kind)
}

fn load(addr: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// Go's ABIInternal integer registers, in argument order (`tracer_common::GO_ABI_REGS`).
///
/// All nine are copied at constant context offsets before any is chosen: selecting one by
/// index straight from `pt_regs` lets LLVM fold the choice into a computed context pointer,
/// which the verifier rejects.
struct GoRegs([u64; 9]);

impl GoRegs {
    fn read(regs: &pt_regs) -> Self {
        Self([
            regs.rax, regs.rbx, regs.rcx, regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10, regs.r11,
        ])
    }

    fn get(&self, n: u8) -> u64 {
        self.0.get(n as usize).copied().unwrap_or(0)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
