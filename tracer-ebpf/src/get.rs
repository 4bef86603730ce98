//! What a Get does: opens the object's entry in `OUTSTANDING` with the stack that took it.
//! Kept apart from Put because a Get runs in two programs (the entry stashes the receiver
//! and the size asked for, the RET reads the object) that must agree on the in-flight key,
//! and because it is where a recycled address reveals an object that was dropped without a
//! Put.

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    programs::ProbeContext,
};
use tracer_common::{
    in_flight_key, GetInFlight, ObjectKey, Outstanding, PathCrossings, PathKey, PathSizes,
    PathTotals, PoolCounters, ProbeSite, REQUEST_UNKNOWN, SITE_DOUBLE_PUTS, SITE_ENTRY_STASH,
    SITE_SIZES, SITE_STREAM,
};

use crate::{
    diag,
    events::stream_get,
    maps::{
        add_crossing, add_held, epoch, object_quota, quota_full, size_wanted, COLLECTED,
        GETS_IN_FLIGHT, OUTSTANDING, RETURNED, SIZES,
    },
    read::{goes_to_morestack, load_address, read_word, GoRegs},
    stack::capture_stack,
};

const E2BIG: i32 = 7;

/// At Get's entry: stashes the receiver and the size asked for in `GETS_IN_FLIGHT` for the
/// RET, where they are gone from the registers.
pub(crate) fn stash_at_entry(ctx: &ProbeContext, site: &ProbeSite) {
    let regs = unsafe { &*ctx.regs };
    if goes_to_morestack(site, regs) {
        diag::morestack(ctx, site);
        return;
    }
    let words = GoRegs::read(regs, site);
    let Some(receiver) = read_word(&words, &site.receiver) else {
        diag::read_fault(ctx, site, "receiver", load_address(&words, &site.receiver));
        return;
    };
    if site.receiver_filter != 0 && receiver != site.receiver_filter {
        return;
    }
    let stash = GetInFlight {
        receiver,
        request: read_word(&words, &site.request).unwrap_or(REQUEST_UNKNOWN),
    };
    let _ = GETS_IN_FLIGHT.insert(&in_flight_key(site.pool, regs.r14), &stash, 0);
}

pub(crate) fn on_get(ctx: &ProbeContext, site: &ProbeSite, counters: &mut PoolCounters) {
    let regs = unsafe { &*ctx.regs };
    let words = GoRegs::read(regs, site);
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
    let mut stashed = GetInFlight {
        receiver: 0,
        request: REQUEST_UNKNOWN,
    };
    if site.flags & SITE_ENTRY_STASH != 0 {
        let in_flight = in_flight_key(site.pool, regs.r14);
        match unsafe { GETS_IN_FLIGHT.get(&in_flight) } {
            Some(&at_entry) => {
                stashed = at_entry;
                let _ = GETS_IN_FLIGHT.remove(&in_flight);
            }
            // Another pool instance (filtered at entry), or a call that began before attach.
            None if site.receiver_filter != 0 => return,
            None => diag::no_stash(ctx, site),
        }
    }
    let Some(addr) = object else {
        counters.read_faults += 1;
        diag::read_fault(ctx, site, "key", load_address(&words, &site.key));
        return;
    };
    if addr == 0 {
        counters.nil_gets += 1;
        diag::nil_key(ctx, site);
        return;
    }
    counters.gets += 1;
    let key = ObjectKey {
        pool: site.pool,
        _pad: 0,
        addr,
    };
    // A size that cannot be read is counted once, as a fault, and the object tracked.
    let size = read_word(&words, &site.size);
    if size.is_some_and(|size| !size_wanted(size).0) {
        counters.size_filtered += 1;
        return;
    }
    if size.is_none() {
        counters.read_faults += 1;
        diag::read_fault(ctx, site, "size", load_address(&words, &site.size));
    }
    // Over its process's share, an object is not tracked, unless it takes the place of one
    // that is (see below), which holds no more.
    let quota = object_quota(site.target);
    if quota.is_some_and(quota_full) && unsafe { OUTSTANDING.get(&key) }.is_none() {
        counters.dropped += 1;
        return;
    }
    // Unreadable, it is unknown (0) and never compared.
    let ident = read_word(&words, &site.ident).unwrap_or(0);
    // At a RET, [rsp] is the return address into Get's caller.
    let (stack, caller) = capture_stack(ctx, site);
    let stack = stack.unwrap_or_else(|| {
        counters.stack_failures += 1;
        diag::stack_failed(ctx, site);
        0
    });
    let value = Outstanding {
        stack,
        caller,
        size: size.unwrap_or(0),
        taken_ns: unsafe { bpf_ktime_get_ns() },
        goroutine: regs.r14,
        receiver: stashed.receiver,
        epoch: epoch(site.target),
        ident,
    };
    if let (Some(capacity), true) = (size, site.flags & SITE_SIZES != 0) {
        if stashed.request != REQUEST_UNKNOWN {
            record_sizes(&value.path(site.pool), stashed.request, capacity, counters);
        }
    }
    if site.flags & SITE_STREAM != 0 {
        stream_get(site, counters, &value, addr, regs);
    }
    match OUTSTANDING.insert(&key, &value, BPF_NOEXIST as u64) {
        Ok(()) => add_held(quota, 1),
        Err(errno) if -errno == E2BIG => {
            counters.dropped += 1;
            diag::objects_full(ctx, site, addr);
        }
        Err(_) => {
            // Still outstanding. Taken in this epoch, Put has watched it ever since: it was
            // dropped without a Put and its memory recycled, so it is booked as collected.
            // From an earlier one, it may have come back while nothing watched. Either way
            // the new object is tracked in its place.
            if let Some(earlier) = unsafe { OUTSTANDING.get(&key) } {
                match earlier.epoch == value.epoch {
                    true => record_collected(site.pool, earlier, counters),
                    false => {
                        let same = earlier.ident != 0 && earlier.ident == value.ident;
                        record_came_back_unseen(site.pool, earlier, same, counters)
                    }
                }
            }
            // In its place: unless a Put took it meanwhile, and the object is one more.
            if OUTSTANDING.insert(&key, &value, BPF_EXIST as u64).is_err() {
                match OUTSTANDING.insert(&key, &value, BPF_NOEXIST as u64) {
                    Ok(()) => add_held(quota, 1),
                    Err(_) => {
                        counters.dropped += 1;
                        diag::objects_full(ctx, site, addr);
                    }
                }
            }
        }
    }
}

/// Books one Get of `path` that asked for `requested` and was handed `capacity`.
fn record_sizes(path: &PathKey, requested: u64, capacity: u64, counters: &mut PoolCounters) {
    match SIZES.get_ptr_mut(path) {
        // SAFETY: this CPU's copy of the value.
        Some(sizes) => unsafe {
            (*sizes).gets += 1;
            (*sizes).requested += requested;
            (*sizes).capacity += capacity;
        },
        None => {
            let sizes = PathSizes {
                gets: 1,
                requested,
                capacity,
            };
            if SIZES.insert(path, &sizes, 0).is_err() {
                counters.paths_dropped += 1;
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

/// Books an object of an earlier epoch whose address is in use again, by a Get or by a Put
/// of another object: it may have come back while nothing watched. `same`: a Get handed out
/// the very object again (its second word of identity unchanged), so it did come back.
pub(crate) fn record_came_back_unseen(
    pool: u32,
    earlier: &Outstanding,
    same: bool,
    counters: &mut PoolCounters,
) {
    counters.came_back_unseen += 1;
    counters.returned_unseen += u64::from(same);
    let crossing = PathCrossings {
        came_back_unseen: 1,
        late_puts: 0,
        returned_unseen: u64::from(same),
    };
    add_crossing(&earlier.path(pool), crossing, counters);
}
