//! What a Put does: closes the object's entry in `OUTSTANDING` and books how long it was
//! held and, sampled, where it was given back; across a gap in tracing, only once its second
//! word of identity shows the object is the one taken. Kept apart from Get because it is where
//! every lost or doubled Put is told apart, and each of those paths must bump a counter.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::ProbeContext,
};
use tracer_common::{
    hold_bucket, ObjectKey, Outstanding, PathCrossings, PathKey, PoolCounters, ProbeSite,
    ReleaseKey, ReturnedBy, EVENT_PUT, HOLD_BUCKETS, SITE_DOUBLE_PUTS, SITE_RELEASE_PATHS,
    SITE_STREAM,
};

use crate::{
    diag,
    double_put::record_double_put,
    events::stream,
    get::record_came_back_unseen,
    maps::{
        add_crossing, add_held, epoch, object_quota, release_sample, size_wanted, HOLD_TIMES,
        OUTSTANDING, RELEASES, RETURNED, ZERO_HISTOGRAM,
    },
    read::{goes_to_morestack, load_address, read_word, GoRegs},
    stack::capture_stack,
};

pub(crate) fn on_put(ctx: &ProbeContext, site: &ProbeSite, counters: &mut PoolCounters) {
    let regs = unsafe { &*ctx.regs };
    let words = GoRegs::read(regs, site);
    if site.receiver_filter != 0 && read_word(&words, &site.receiver) != Some(site.receiver_filter)
    {
        return;
    }
    if goes_to_morestack(site, regs) {
        counters.put_restarts += 1;
        diag::morestack(ctx, site);
        return;
    }
    counters.puts += 1;
    let Some(addr) = read_word(&words, &site.key) else {
        counters.read_faults += 1;
        counters.unmatched_puts += 1;
        diag::read_fault(ctx, site, "key", load_address(&words, &site.key));
        return;
    };
    let key = ObjectKey {
        pool: site.pool,
        _pad: 0,
        addr,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let epoch = epoch(site.target);
    // Copied out before the entry goes: the hold time and release path need it.
    let Some(taken) = (unsafe { OUTSTANDING.get(&key) }).copied() else {
        if site.flags & SITE_DOUBLE_PUTS != 0 {
            // Given back in an earlier epoch, it may have been handed out again unseen.
            if let Some(&first) = unsafe { RETURNED.get(&key) }.filter(|r| r.epoch == epoch) {
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
    if taken.epoch != epoch && !same_object(&words, site, &taken) {
        // Another object at the address of one taken before a gap: the first went unseen
        // (given back, or dropped and collected), and its hold time is unknown.
        if OUTSTANDING.remove(&key).is_ok() {
            add_held(object_quota(site.target), u64::MAX);
            record_came_back_unseen(site.pool, &taken, false, counters);
        }
        counters.unmatched_puts += 1;
        return;
    }
    if OUTSTANDING.remove(&key).is_err() {
        // Another CPU's Put of the same object won the race: two Puts of one Get.
        match site.flags & SITE_DOUBLE_PUTS {
            0 => counters.unmatched_puts += 1,
            _ => record_double_put(ctx, site, &key, &ReturnedBy::default(), counters),
        }
        return;
    }
    add_held(object_quota(site.target), u64::MAX);
    let acquire = taken.path(site.pool);
    let held = now.saturating_sub(taken.taken_ns);
    record_hold_time(&acquire, held, counters);
    if taken.epoch != epoch {
        record_late_put(&acquire, counters);
    }
    // One Put in RELEASE_SAMPLE records its stack: each path's share stays an unbiased
    // estimate, at a fraction of a stack walk per Put. Catching double Puts needs every
    // Put's stack; one walk serves both.
    let sampled = site.flags & SITE_RELEASE_PATHS != 0
        && unsafe { bpf_get_prandom_u32() } % release_sample() == 0;
    let remembered = site.flags & SITE_DOUBLE_PUTS != 0;
    if sampled || remembered {
        // Before Put's prologue, [rsp] is the return address into its caller.
        let (stack, caller) = capture_stack(ctx, site);
        let by = ReturnedBy {
            stack: stack.unwrap_or(0),
            caller,
            epoch,
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

/// Whether the object given back is the one taken: its second word of identity is the same,
/// or unknown.
fn same_object(words: &GoRegs, site: &ProbeSite, taken: &Outstanding) -> bool {
    match read_word(words, &site.ident) {
        Some(ident) if taken.ident != 0 => ident == taken.ident,
        _ => true,
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

/// A Put of an object taken before Put was last taken away: held across the gap, for as long
/// as its hold time says.
fn record_late_put(acquire: &PathKey, counters: &mut PoolCounters) {
    counters.late_puts += 1;
    let crossing = PathCrossings {
        came_back_unseen: 0,
        late_puts: 1,
        returned_unseen: 0,
    };
    add_crossing(acquire, crossing, counters);
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
