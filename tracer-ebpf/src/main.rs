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
//!
//! This file holds only the programs, so every entry point the loader attaches by name is in
//! one place; each finds its site and hands over to the module for its concern: `maps` (every
//! map and load-time global), `get`, `put`, `double_put`, `events` (stream mode), `stack`
//! (stack capture), `read` (reading the target) and `diag` (aya-log messages on the paths
//! that lose an event, off unless user space asks).
#![no_std]
#![no_main]
// `atomic_xadd`: bpfel has no atomic types, but has the atomic add (maps.rs, `add_held`).
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map keys and values go by reference: by value they would be copied onto the 512-byte BPF
// stack for nothing.
#![allow(clippy::needless_borrows_for_generic_args)]

mod diag;
mod double_put;
mod events;
mod get;
mod maps;
mod put;
mod read;
mod stack;

use aya_ebpf::{
    helpers::bpf_get_attach_cookie, macros::uprobe, programs::ProbeContext, EbpfContext,
};
use tracer_common::{PoolCounters, ProbeSite};

use crate::maps::{COUNTERS, SITES};

// Map, program and global names are `tracer_common::names`: user space opens them by those
// strings, and a unit test in `tracer` checks the object carries every one.

#[uprobe]
pub fn pool_get(ctx: ProbeContext) -> u32 {
    if let Some((site, counters)) = site_and_counters(&ctx) {
        get::on_get(&ctx, site, counters);
    }
    0
}

#[uprobe]
pub fn pool_get_entry(ctx: ProbeContext) -> u32 {
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if let Some(site) = SITES.get(cookie as u32) {
        get::stash_at_entry(&ctx, site);
    }
    0
}

#[uprobe]
pub fn pool_put(ctx: ProbeContext) -> u32 {
    if let Some((site, counters)) = site_and_counters(&ctx) {
        put::on_put(&ctx, site, counters);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
