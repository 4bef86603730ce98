//! Double-Put detection's own bookkeeping. A Put finds a double Put two ways (an object
//! remembered in `RETURNED`, or a lost race on `OUTSTANDING` with another CPU's Put) and
//! both must count it the same, under both Puts' call paths; so the counting lives here,
//! and `put` only decides when it happened.

use aya_ebpf::programs::ProbeContext;
use tracer_common::{
    DoublePutKey, ObjectKey, PoolCounters, ProbeSite, ReturnedBy, EVENT_DOUBLE_PUT, SITE_STREAM,
};

use crate::{diag, events::stream, maps::DOUBLE_PUTS, stack::capture_stack};

/// Counts a Put of an object already back in its pool under both Puts' call paths.
pub(crate) fn record_double_put(
    ctx: &ProbeContext,
    site: &ProbeSite,
    key: &ObjectKey,
    first: &ReturnedBy,
    counters: &mut PoolCounters,
) {
    counters.double_puts += 1;
    diag::double_put(ctx, site, key.addr);
    let (stack, caller) = capture_stack(ctx, site);
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
