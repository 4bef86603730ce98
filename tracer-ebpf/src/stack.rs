//! Stack capture on its own: a Get, a sampled Put and a double Put all take the same stack
//! the same way, and this is the costliest part of any program, so its verifier-shaped
//! bounds and its cost notes stay together rather than spread over their callers.

use aya_ebpf::{
    bindings::{pt_regs, BPF_NOEXIST},
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    programs::ProbeContext,
};
use tracer_common::{stack_key, ProbeSite, StackFrames, MAX_STACK_DEPTH, SITE_IN_CALLER};

use crate::maps::{stack_depth, SCRATCH, STACKS, STACK_WINDOW, WINDOW_BYTES, WINDOW_WORDS};

const EEXIST: i32 = -17;

/// Captures the user stack into `STACKS`: its key (`None` when it could not be captured or
/// stored) and the word at `[rsp]`, the return address into the probed function's caller
/// at an entry or a RET. At a `SITE_IN_CALLER` site the probed instruction is in the caller
/// already and `[rsp]` is whatever its frame holds there: the caller is 0, none. The key
/// carries the site's target slot.
pub(crate) fn capture_stack(ctx: &ProbeContext, site: &ProbeSite) -> (Option<u64>, u64) {
    let (Some(scratch), Some(window)) = (SCRATCH.get_ptr_mut(0), STACK_WINDOW.get_ptr_mut(0))
    else {
        return (None, 0);
    };
    // SAFETY: this CPU's scratch slots; nothing else runs on this CPU meanwhile.
    let (frames, window) = unsafe { (&mut *scratch, &mut *window) };
    let regs = unsafe { &*ctx.regs };
    let (len, at_rsp) = walk_frame_pointers(regs, &mut frames.ips, window);
    let caller = match site.flags & SITE_IN_CALLER {
        0 => at_rsp,
        _ => 0,
    };
    frames.len = len;
    let key = stack_key(fnv1a(frames), site.target);
    // Most stacks are known already: a lock-free lookup spares the insert's bucket lock.
    if unsafe { STACKS.get(&key) }.is_some() {
        return (Some(key), caller);
    }
    match STACKS.insert(&key, frames, BPF_NOEXIST as u64) {
        // Already there: the same frames, since the key is a 52-bit hash of them (two in
        // 10^8 collide among 8192 stacks).
        Ok(()) | Err(EEXIST) => (Some(key), caller),
        Err(_) => (None, caller),
    }
}

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

/// FNV-1a over the filled frames.
fn fnv1a(frames: &StackFrames) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..MAX_STACK_DEPTH {
        if i as u64 >= frames.len {
            break;
        }
        hash = (hash ^ frames.ips[i]).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
