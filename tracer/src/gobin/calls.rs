//! Direct calls in machine code: which functions a function calls, and how many call sites
//! reach a function across the whole program.

use iced_x86::{Decoder, DecoderOptions, FlowControl, OpKind};

/// Targets of the direct (rel32) calls in `code`, which starts at `addr`.
pub fn direct_call_targets(code: &[u8], addr: u64) -> impl Iterator<Item = u64> + '_ {
    direct_calls(code, addr).map(|(_, target)| target)
}

/// The direct (rel32) calls in `code`, which starts at `addr`: each call's address and its
/// target.
pub fn direct_calls(code: &[u8], addr: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    Decoder::with_ip(64, code, addr, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| i.flow_control() == FlowControl::Call && i.op0_kind() == OpKind::NearBranch64)
        .map(|i| (i.ip(), i.near_branch_target()))
}
