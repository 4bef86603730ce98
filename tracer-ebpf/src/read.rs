//! Reading the target: registers, words of its memory, and interface identities. Every
//! program reads the same way, and how it reads is shaped by the verifier (registers copied
//! at constant offsets, indices masked), so those constraints are kept in one place that
//! the Get and Put logic can trust.

use aya_ebpf::{bindings::pt_regs, helpers::bpf_probe_read_user};
use tracer_common::{
    ProbeSite, WordSpec, GO_KIND_MASK, GO_KIND_SLICE, GO_TYPE_KIND_OFFSET, MAX_TARGET_SLOTS,
    WORD_IFACE, WORD_LOAD, WORD_REG,
};

use crate::maps::{TYPE_KINDS, TYPE_KIND_SLOTS};

/// Whether this pass over a stack check's branch goes to `morestack`, which restarts the
/// function: the pass after it is the one to count.
pub(crate) fn goes_to_morestack(site: &ProbeSite, regs: &pt_regs) -> bool {
    regs.eflags & site.morestack_flags != 0
}

/// Reads one word as `spec` says; `None` when target memory could not be read.
pub(crate) fn read_word(regs: &GoRegs, spec: &WordSpec) -> Option<u64> {
    match spec.kind {
        WORD_REG => Some(regs.get(spec.reg)),
        WORD_LOAD => load(regs.get(spec.reg).wrapping_add(spec.offset as u64)),
        WORD_IFACE => iface_identity(regs.get(spec.reg), regs.get(spec.reg + 1), regs.target),
        _ => Some(0),
    }
}

/// Where a read of `spec` that failed tried to load from: for an interface, its data word
/// (or, not cached, its type's kind byte, which is read first). For diagnostics only.
pub(crate) fn load_address(regs: &GoRegs, spec: &WordSpec) -> u64 {
    match spec.kind {
        WORD_LOAD => regs.get(spec.reg).wrapping_add(spec.offset as u64),
        WORD_IFACE => regs.get(spec.reg + 1),
        _ => 0,
    }
}

/// Identity of an object held in an interface: the data word, except that a boxed slice's
/// data word points at a header allocated anew at each boxing, so the slice's data pointer
/// is the one that survives the round trip.
fn iface_identity(type_word: u64, data_word: u64, target: u32) -> Option<u64> {
    if type_word == 0 {
        return Some(0);
    }
    if type_kind(type_word, target)? & GO_KIND_MASK == GO_KIND_SLICE {
        load(data_word)
    } else {
        Some(data_word)
    }
}

const KIND_CACHED: u64 = 1 << 63;
/// User addresses fit below this bit; the target slot is kept above it.
const KIND_TARGET_SHIFT: u32 = 47;
const _: () = assert!(MAX_TARGET_SLOTS <= 1 << (56 - KIND_TARGET_SHIFT));

fn type_kind(type_word: u64, target: u32) -> Option<u8> {
    let slot = (type_word >> 4) as usize & (TYPE_KIND_SLOTS - 1);
    let tagged = type_word | u64::from(target) << KIND_TARGET_SHIFT;
    let cacheable = type_word < 1 << KIND_TARGET_SHIFT;
    let cache = TYPE_KINDS.get_ptr_mut(0);
    if let (Some(cache), true) = (cache, cacheable) {
        // SAFETY: this CPU's copy; the index is masked to the array's length.
        let cached = unsafe { (*cache)[slot] };
        if cached & KIND_CACHED != 0 && cached & ((1 << 56) - 1) == tagged {
            return Some((cached >> 56) as u8 & 0x7f);
        }
    }
    let kind: u8 =
        unsafe { bpf_probe_read_user((type_word + GO_TYPE_KIND_OFFSET) as *const u8) }.ok()?;
    if let (Some(cache), true) = (cache, cacheable) {
        // SAFETY: as above.
        unsafe { (*cache)[slot] = tagged | u64::from(kind & 0x7f) << 56 | KIND_CACHED };
    }
    Some(kind)
}

fn load(addr: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// Go's ABIInternal integer registers, in argument order (`tracer_common::GO_ABI_REGS`), at
/// one site, with the target slot whose process they belong to (what is cached of its
/// memory is cached under it).
///
/// All nine are copied at constant context offsets before any is chosen: selecting one by
/// index straight from `pt_regs` lets LLVM fold the choice into a computed context pointer,
/// which the verifier rejects.
pub(crate) struct GoRegs {
    words: [u64; 9],
    target: u32,
}

impl GoRegs {
    pub(crate) fn read(regs: &pt_regs, site: &ProbeSite) -> Self {
        Self {
            words: [
                regs.rax, regs.rbx, regs.rcx, regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10,
                regs.r11,
            ],
            target: site.target,
        }
    }

    fn get(&self, n: u8) -> u64 {
        self.words.get(n as usize).copied().unwrap_or(0)
    }
}
