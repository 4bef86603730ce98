//! The order probes go live in, which is what keeps attaching to a busy process from
//! inventing leaks, and the same list as `--dry-run` shows it.

use tracer_common::{ProbeSite, SiteRole};

use super::{inlined::InlinedSite, pool::PoolPlan, sites::Site};
use crate::gobin::{Function, GoBinary};

/// One site of a pool's plan, with what runs there and what it reads.
#[derive(Clone, Copy, Debug)]
pub struct PlannedSite<'a> {
    pub plan: &'a PoolPlan,
    pub role: SiteRole,
    /// The function whose code holds the site: Get or Put, or the caller an inlined copy
    /// of them lies in.
    pub function: &'a Function,
    pub site: &'a Site,
    pub probe: ProbeSite,
    /// The inlined copy the site is in, for the `*-inlined-call` roles.
    pub inlined: Option<&'a InlinedSite>,
}

/// The sites of `plans` in the order they must go live, which is also the order of the
/// attach cookies and of `--dry-run`'s listing: every Put site of every pool first (with the
/// calls in Put's inlined copies), then Get's entries (which stash receivers for the RETs),
/// then Get's RETs and the sites after the calls in Get's inlined copies. A Get recorded
/// while a Put of its pool is not yet probed could be given back unseen and would then look
/// outstanding forever, or collected once Go hands its address out again: on a busy process
/// attach would invent leaks. Detaching runs the same list backwards.
pub fn arming_order(plans: &[PoolPlan]) -> impl Iterator<Item = PlannedSite<'_>> {
    let puts = plans.iter().flat_map(|plan| {
        let put =
            (plan.put_site.iter()).map(|site| plain(plan, SiteRole::Put, &plan.put.function, site));
        put.chain(inlined(plan, SiteRole::PutInlinedCall))
    });
    let get_entries = plans.iter().flat_map(|plan| {
        let entry = plan.get_entry_site.as_ref();
        entry.map(|site| plain(plan, SiteRole::GetEntry, &plan.get.function, site))
    });
    let gets = plans.iter().flat_map(|plan| {
        let rets = plan.get_sites.iter();
        rets.map(|site| plain(plan, SiteRole::GetRet, &plan.get.function, site))
            // After the call to the pool's Get, its results are where they are at its RET.
            .chain(inlined(plan, SiteRole::GetInlinedCall))
    });
    puts.chain(get_entries).chain(gets)
}

/// A site in Get's or Put's own code.
fn plain<'a>(
    plan: &'a PoolPlan,
    role: SiteRole,
    function: &'a Function,
    site: &'a Site,
) -> PlannedSite<'a> {
    let probe = match role.is_put_side() {
        true => plan.put_probe,
        false => plan.get_probe,
    };
    PlannedSite {
        plan,
        role,
        function,
        site,
        // The pool's probe, with what only this site knows.
        probe: ProbeSite {
            morestack_flags: site.morestack_flags,
            ..probe
        },
        inlined: None,
    }
}

/// The sites inside inlined copies of Get or Put, as `role` says.
fn inlined(plan: &PoolPlan, role: SiteRole) -> impl Iterator<Item = PlannedSite<'_>> {
    let copies = match role.is_put_side() {
        true => &plan.inlined_puts,
        false => &plan.inlined_gets,
    };
    copies.sites.iter().map(move |inlined| PlannedSite {
        plan,
        role,
        function: &inlined.host,
        site: &inlined.site,
        probe: inlined.probe,
        inlined: Some(inlined),
    })
}

/// The sites of `plans` as JSON, for `--dry-run`: what would be probed, and where, in the
/// order attach arms them.
pub fn sites_json(binary: &GoBinary, plans: &[PoolPlan]) -> String {
    let offset = |addr| binary.file_offset(addr).map(|o| format!("{o:#x}"));
    let sites: Vec<_> = arming_order(plans)
        .map(|planned| {
            let mut json = serde_json::json!({
                "pool": planned.plan.get.requested,
                "role": planned.role.as_str(),
                "function": planned.function.name,
                "function_offset": offset(planned.function.addr),
                "address": format!("{:#x}", planned.site.addr),
                "file_offset": offset(planned.site.addr),
                "instruction": planned.site.instruction,
                "emulated": planned.site.emulated,
            });
            // Inside an inlined copy: where the wrapper was called, and the pool function
            // whose call is probed.
            if let Some(inlined) = planned.inlined {
                json["inlined_call"] = inlined.call_site.clone().into();
                json["calls"] = inlined.callee.clone().into();
            }
            json
        })
        .collect();
    serde_json::to_string_pretty(&sites).unwrap_or_default()
}
