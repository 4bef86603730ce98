//! Where in a function's machine code a probe may sit without harming the Go process.
//!
//! Get is probed at every RET, never with a uretprobe: Go moves goroutine stacks, and a
//! return address rewritten by the kernel would then point into freed memory. Put is probed
//! on the branch of its stack-growth check (`cmp rsp,[r14+16]; jbe morestack`): the kernel
//! emulates a branch in every Go release, where the instruction after it (Go 1.17-1.20's
//! `sub rsp,N`) would be single-stepped at ten times the cost. When the stack must grow, or
//! the goroutine is to be preempted, the branch goes to `morestack`, which restarts the
//! function from its entry: the probe fires again for the same call. The flags the compare
//! left say which pass that is, so the site carries the flags that take the branch, and the
//! kernel program ignores a pass that has any of them set.
//!
//! Inside a copy of Get or Put inlined into a caller, the site is the call to the pool
//! underneath (Put), or the instruction after it (Get), never one a branch also reaches.
//!
//! Sites come from decoding the function from its entry, so a probe is always on an
//! instruction boundary.

use iced_x86::{
    ConditionCode, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

/// A chosen probe address and what is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub addr: u64,
    /// The instruction, e.g. `push rbp`, for the attach summary.
    pub instruction: String,
    /// The kernel emulates it (~1 us a hit here) rather than single-stepping it (~15 us).
    pub emulated: bool,
    /// On a stack check's branch: the `rflags` bits of which any set means this pass goes to
    /// `morestack` and the call will pass here again. 0 elsewhere.
    pub morestack_flags: u64,
}

/// Every RET of a function; an error when its bytes do not decode cleanly.
pub fn ret_sites(code: &[u8], addr: u64) -> Result<Vec<Site>, String> {
    let sites: Vec<Site> = decode(code, addr)?
        .iter()
        .filter(|i| i.mnemonic() == Mnemonic::Ret)
        .map(site)
        .collect();
    if sites.is_empty() {
        return Err("it has no RET instruction (it never returns normally)".into());
    }
    Ok(sites)
}

/// The Put site: the branch of Go's `cmp rsp,[r14+16]; jbe` (or `lea r12,[rsp-N]; cmp
/// r12,[r14+16]; jbe`) stack check. Past the check when its branch tests another condition
/// (the instruction after a branch runs once per call), and the entry (after any ENDBR64)
/// when there is no check.
pub fn put_site(code: &[u8], addr: u64) -> Result<Site, String> {
    let prologue: Vec<Instruction> = decode(code, addr)?.into_iter().take(6).collect();
    let entry = usize::from(
        prologue
            .first()
            .is_some_and(|i| i.mnemonic() == Mnemonic::Endbr64),
    );
    let check = prologue.windows(2).position(|pair| {
        is_stack_guard_compare(&pair[0]) && pair[1].flow_control() == FlowControl::ConditionalBranch
    });
    let chosen = match check {
        Some(cmp) => match morestack_flags(&prologue[cmp + 1]) {
            0 => cmp + 2,
            flags => {
                return Ok(Site {
                    morestack_flags: flags,
                    ..site(&prologue[cmp + 1])
                })
            }
        },
        None => entry,
    };
    prologue
        .get(chosen)
        .map(site)
        .ok_or_else(|| "it is empty".to_owned())
}

/// The `rflags` bits that take a stack check's branch to `morestack`: CF or ZF for `jbe`
/// (stack pointer at or below the guard), CF for `jb`. 0 for a branch whose condition is
/// not "any of these bits set", which is then not probed.
fn morestack_flags(branch: &Instruction) -> u64 {
    const CF: u64 = 1 << 0;
    const ZF: u64 = 1 << 6;
    match branch.condition_code() {
        ConditionCode::be => CF | ZF,
        ConditionCode::b => CF,
        _ => 0,
    }
}

/// A direct call to a pool function, and where a probe sees that call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSite {
    /// The function called.
    pub target: u64,
    pub site: Site,
}

/// Where a probe sees each direct call in `code` (which starts at `addr`) that `wanted`
/// accepts (by call address and target): at the `call` itself when `after` is false (the
/// callee's arguments are in their registers there, and the kernel emulates a `call`), or at
/// the instruction after it when `after` is true (the callee's results are in theirs). A call
/// whose next instruction some branch also reaches is left out: a probe there would fire
/// without the call.
pub fn call_sites(
    code: &[u8],
    addr: u64,
    after: bool,
    wanted: impl Fn(u64, u64) -> bool,
) -> Result<Vec<CallSite>, String> {
    let instructions = decode(code, addr)?;
    let branch_targets: Vec<u64> = instructions
        .iter()
        .filter(|i| {
            matches!(
                i.flow_control(),
                FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
            ) && i.op0_kind() == OpKind::NearBranch64
        })
        .map(Instruction::near_branch_target)
        .collect();
    let mut sites = Vec::new();
    for (at, call) in instructions.iter().enumerate() {
        if call.flow_control() != FlowControl::Call || call.op0_kind() != OpKind::NearBranch64 {
            continue;
        }
        let target = call.near_branch_target();
        if !wanted(call.ip(), target) {
            continue;
        }
        let probed = match after {
            false => Some(call),
            true => instructions
                .get(at + 1)
                .filter(|next| !branch_targets.contains(&next.ip())),
        };
        if let Some(probed) = probed {
            sites.push(CallSite {
                target,
                site: site(probed),
            });
        }
    }
    Ok(sites)
}

/// `cmp rsp, [r14+0x10]` or `cmp r12, [r14+0x10]`: compares the stack pointer (or, for a
/// big frame, where it will be) with `g.stackguard0`. Exact, because the kernel program
/// skips the passes the branch after it takes: a wrong match would lose real Puts.
fn is_stack_guard_compare(i: &Instruction) -> bool {
    const STACKGUARD0: u64 = 0x10;
    i.mnemonic() == Mnemonic::Cmp
        && i.op_count() == 2
        && i.op0_kind() == OpKind::Register
        && matches!(i.op0_register(), Register::RSP | Register::R12)
        && i.op1_kind() == OpKind::Memory
        && i.memory_base() == Register::R14
        && i.memory_index() == Register::None
        && i.memory_displacement64() == STACKGUARD0
}

fn decode(code: &[u8], addr: u64) -> Result<Vec<Instruction>, String> {
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    for instruction in &mut decoder {
        if instruction.is_invalid() {
            return Err(format!("undecodable bytes at {:#x}", instruction.ip()));
        }
        instructions.push(instruction);
    }
    Ok(instructions)
}

fn site(i: &Instruction) -> Site {
    Site {
        addr: i.ip(),
        instruction: i.to_string(),
        emulated: is_emulated(i),
        morestack_flags: 0,
    }
}

/// Instructions the x86 uprobe code emulates instead of single-stepping (arch/x86/kernel/
/// uprobes.c: branches, calls, push of a register, nops).
fn is_emulated(i: &Instruction) -> bool {
    matches!(
        i.flow_control(),
        FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch | FlowControl::Call
    ) || matches!(i.mnemonic(), Mnemonic::Nop)
        || (i.mnemonic() == Mnemonic::Push && i.op0_kind() == OpKind::Register)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go 1.21+: cmp rsp,[r14+10h]; jbe +0x20; push rbp; mov rbp,rsp; ...; pop rbp; ret
    const GO_NEW: [u8; 16] = [
        0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55, 0x48, 0x89, 0xe5, 0x90, 0x90, 0x90, 0x90, 0x5d,
        0xc3,
    ];
    // Go 1.19: cmp rsp,[r14+10h]; jbe +0x20; sub rsp,18h; mov [rsp+10h],rbp; ... ret
    const GO_OLD: [u8; 16] = [
        0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0x6c, 0x24, 0x10,
        0xc3,
    ];

    #[test]
    fn put_site_is_the_stack_checks_branch_in_both_prologues() {
        for code in [GO_NEW, GO_OLD] {
            let site = put_site(&code, 0x1000).unwrap();
            assert_eq!(
                (
                    site.addr,
                    site.instruction.as_str(),
                    site.emulated,
                    site.morestack_flags
                ),
                (0x1004, "jbe short 0000000000001026h", true, 0x41)
            );
        }
    }

    #[test]
    fn a_stack_check_on_another_condition_leaves_the_site_past_it() {
        // cmp rsp,[r14+10h]; ja +0x20; ret
        let code = [0x49, 0x3b, 0x66, 0x10, 0x77, 0x20, 0xc3];
        let site = put_site(&code, 0x1000).unwrap();
        assert_eq!((site.addr, site.morestack_flags), (0x1006, 0));
    }

    #[test]
    fn a_compare_with_another_field_of_g_is_no_stack_check() {
        // cmp rsp,[r14+18h]; jbe +0x20; push rbp; ret
        let code = [0x49, 0x3b, 0x66, 0x18, 0x76, 0x20, 0x55, 0xc3];
        let site = put_site(&code, 0x1000).unwrap();
        assert_eq!((site.addr, site.morestack_flags), (0x1000, 0));
    }

    #[test]
    fn put_site_falls_back_to_the_entry_past_endbr64() {
        // endbr64; push rbp; mov rbp,rsp; ret
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xc3];
        assert_eq!(put_site(&code, 0x2000).unwrap().addr, 0x2004);
    }

    #[test]
    fn every_ret_is_found_on_instruction_boundaries() {
        // mov eax,0xc3c3c3c3 (c3 bytes inside an instruction); ret; ret
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3];
        let rets: Vec<u64> = ret_sites(&code, 0)
            .unwrap()
            .iter()
            .map(|s| s.addr)
            .collect();
        assert_eq!(rets, vec![5, 6]);
    }

    #[test]
    fn calls_are_probed_at_the_call_or_after_it_unless_a_branch_lands_there() {
        // 0: call +0 (to 5); 5: mov rax,rbx; 8: call -13 (to 0); 13: nop; 14: jmp -3 (to 13)
        let code = [
            0xe8, 0x00, 0x00, 0x00, 0x00, 0x48, 0x89, 0xd8, 0xe8, 0xf3, 0xff, 0xff, 0xff, 0x90,
            0xeb, 0xfd,
        ];
        let at = |after| {
            call_sites(&code, 0x100, after, |_, _| true)
                .unwrap()
                .iter()
                .map(|c| (c.target, c.site.addr, c.site.emulated))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(false), [(0x105, 0x100, true), (0x100, 0x108, true)]);
        // The second call's next instruction is also a jump's target.
        assert_eq!(at(true), [(0x105, 0x105, false)]);
        let only_second = call_sites(&code, 0x100, false, |call, _| call == 0x108).unwrap();
        assert_eq!(only_second.len(), 1);
    }

    #[test]
    fn a_function_without_ret_is_refused() {
        assert!(ret_sites(&[0x90, 0xeb, 0xfe], 0).is_err());
    }
}
