//! Diagnostics: why an event was not recorded, said through aya-log. Only the paths that
//! bump a loss counter (or skip a pass) call here, never a matched pair; and every call is
//! skipped outright unless user space raised `AYA_LOG_LEVEL` at load (`--debug`, or
//! `RUST_LOG=pooltrace::kernel=...`), a read-only global the verifier folds, like
//! `RELEASE_SAMPLE`. Each message starts with its kind and names the site by its attach
//! cookie and the pool by its index: user space puts names to both, from its own tables.

use aya_ebpf::{helpers::bpf_get_attach_cookie, programs::ProbeContext, EbpfContext};
use aya_log_ebpf::{debug, info, warn};
use tracer_common::{names::KERNEL_LOG_TARGET, ProbeSite};

/// (attach cookie, goroutine) of the probe being run.
fn whence(ctx: &ProbeContext) -> (u64, u64) {
    // SAFETY: a helper every uprobe program may call; the registers are the context's.
    unsafe { (bpf_get_attach_cookie(ctx.as_ptr()), (*ctx.regs).r14) }
}

/// The object's `what` ("key" or "size") could not be read at `addr`.
pub(crate) fn read_fault(ctx: &ProbeContext, site: &ProbeSite, what: &str, addr: u64) {
    let (cookie, g) = whence(ctx);
    warn!(
        ctx,
        target: KERNEL_LOG_TARGET,
        "read-fault: site {} pool {}: goroutine 0x{:x}: the object's {} could not be read at 0x{:x}",
        cookie,
        site.pool,
        g,
        what,
        addr
    );
}

/// Get returned a nil object.
pub(crate) fn nil_key(ctx: &ProbeContext, site: &ProbeSite) {
    let (cookie, g) = whence(ctx);
    info!(
        ctx,
        target: KERNEL_LOG_TARGET,
        "nil-key: site {} pool {}: goroutine 0x{:x}: the object read as nil",
        cookie,
        site.pool,
        g
    );
}

/// `OUTSTANDING` refused object `addr`: the map is full.
pub(crate) fn objects_full(ctx: &ProbeContext, site: &ProbeSite, addr: u64) {
    let (cookie, g) = whence(ctx);
    warn!(
        ctx,
        target: KERNEL_LOG_TARGET,
        "objects-full: site {} pool {}: goroutine 0x{:x}: object 0x{:x} not tracked, OUTSTANDING is full",
        cookie,
        site.pool,
        g,
        addr
    );
}

/// The Get's stack could not be kept.
pub(crate) fn stack_failed(ctx: &ProbeContext, site: &ProbeSite) {
    let (cookie, g) = whence(ctx);
    warn!(
        ctx,
        target: KERNEL_LOG_TARGET,
        "stack-failed: site {} pool {}: goroutine 0x{:x}: the stack was not kept (STACKS full, or unreadable)",
        cookie,
        site.pool,
        g
    );
}

/// Object `addr` was put back while already in its pool.
pub(crate) fn double_put(ctx: &ProbeContext, site: &ProbeSite, addr: u64) {
    let (cookie, g) = whence(ctx);
    warn!(
        ctx,
        target: KERNEL_LOG_TARGET,
        "double-put: site {} pool {}: goroutine 0x{:x}: object 0x{:x} was already back in its pool",
        cookie,
        site.pool,
        g,
        addr
    );
}

/// This pass over the stack check goes to `morestack`; the call is counted when it restarts.
pub(crate) fn morestack(ctx: &ProbeContext, site: &ProbeSite) {
    let (cookie, g) = whence(ctx);
    debug!(
        ctx,
        target: KERNEL_LOG_TARGET,
        "morestack: site {} pool {}: goroutine 0x{:x}: skipped a pass that grows the stack first",
        cookie,
        site.pool,
        g
    );
}

/// A Get's RET found nothing its entry stashed (no receiver, no size asked for).
pub(crate) fn no_stash(ctx: &ProbeContext, site: &ProbeSite) {
    let (cookie, g) = whence(ctx);
    debug!(
        ctx,
        target: KERNEL_LOG_TARGET,
        "no-stash: site {} pool {}: goroutine 0x{:x}: nothing stashed at entry (the call began before attach?)",
        cookie,
        site.pool,
        g
    );
}
