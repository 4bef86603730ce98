//! Stream mode's events, apart from the bookkeeping: an event is sent alongside the maps'
//! accounting, never instead of it, and what one event carries is user space's wire format
//! (`StreamEvent`), so it is filled in one place.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
};
use tracer_common::{Outstanding, PoolCounters, ProbeSite, StreamEvent, EVENT_GET, SITE_IN_CALLER};

use crate::maps::EVENTS;

pub(crate) fn stream_get(
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
pub(crate) fn stream(
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

/// Where the probed Put was called from: the return address at `[rsp]` at its entry, or
/// the site itself in an inlined copy.
fn called_from(regs: &pt_regs, flags: u32) -> u64 {
    match flags & SITE_IN_CALLER {
        0 => unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0),
        _ => regs.rip,
    }
}
