//! What to probe: the pools the user asked for (the pools file's, then the command line's),
//! planned against one binary. Every command that traces, and `--dry-run`, asks here.

use std::path::Path;

use tracer_common::MAX_POOLS;

use super::{
    inlined::{self, KnownPools},
    keyspec::Side,
    named::PoolEntry,
    pool::PoolPlan,
    pools_file,
    spec::PoolSpec,
};
use crate::{
    error::{Error, Result},
    gobin::{GoBinary, ResolvedFunction},
};

/// What the user asked to trace: the pools named, in order, and the options that apply to
/// each of them.
pub(crate) struct PoolRequest {
    pub(crate) entries: Vec<PoolEntry>,
    /// `--receiver`: one pool instance.
    pub(crate) receiver: Option<u64>,
    /// Not `--no-release-paths`.
    pub(crate) release_paths: bool,
    /// `--double-puts`, or `run --fail-on double-put`.
    pub(crate) double_puts: bool,
    /// `--sizes`.
    pub(crate) sizes: bool,
}

/// The pools named: the pools file's (read now), then the command line's. Fails when there
/// are none, before anything is opened.
pub(crate) fn named_entries(
    pools_file: Option<&Path>,
    command_line: &[PoolEntry],
) -> Result<Vec<PoolEntry>> {
    let mut entries = match pools_file {
        Some(path) => pools_file::read(path)?,
        None => Vec::new(),
    };
    entries.extend(command_line.iter().cloned());
    if entries.is_empty() {
        return Err(Error::Usage(
            "name a pool: --get FUNC --put FUNC, --pool PRESET or --pools-file FILE".into(),
        ));
    }
    Ok(entries)
}

impl PoolRequest {
    /// The pools `entry` stands for in `binary`: a preset, those it finds there.
    fn specs(&self, entry: &PoolEntry, binary: &GoBinary) -> Result<Vec<PoolSpec>> {
        let mut specs = match entry {
            PoolEntry::Preset(preset) => preset.pools(binary)?,
            PoolEntry::Custom(custom) => vec![custom.spec()?],
        };
        for spec in &mut specs {
            spec.receiver = self.receiver;
            spec.release_paths = self.release_paths;
            spec.double_puts = self.double_puts;
            spec.sizes_may_add_probe |= self.sizes;
        }
        Ok(specs)
    }

    /// The named pools, planned against `binary` (with `adjust` applied to each spec), with their
    /// inlining warnings printed. Fails before anything is attached when there are more pools
    /// than the kernel side counts, or one pool is named twice (its objects would be counted
    /// twice).
    pub(crate) fn plan(
        &self,
        binary: &GoBinary,
        adjust: impl Fn(&mut PoolSpec),
    ) -> Result<Vec<PoolPlan>> {
        let mut specs = Vec::new();
        for entry in &self.entries {
            specs.extend(self.specs(entry, binary)?);
        }
        plan_specs(specs, binary, adjust, None)
    }

    /// For the agent, which serves one pools file to many programs: the named pools that
    /// `binary` has, planned, and why each of the others is not there. Fails only when it has
    /// none of them.
    pub(crate) fn plan_present(&self, binary: &GoBinary) -> Result<(Vec<PoolPlan>, Vec<Error>)> {
        let (mut specs, mut absent) = (Vec::new(), Vec::new());
        for entry in &self.entries {
            let present = self.specs(entry, binary).and_then(|specs| {
                for spec in &specs {
                    binary.resolve(&spec.get)?;
                    binary.resolve(&spec.put)?;
                }
                Ok(specs)
            });
            match present {
                Ok(found) => specs.extend(found),
                Err(error) => absent.push(error),
            }
        }
        let plans = match specs.is_empty() {
            true => Vec::new(),
            false => plan_specs(specs, binary, |_| {}, Some(&mut absent))?,
        };
        if plans.is_empty() {
            return Err(absent
                .into_iter()
                .next()
                .unwrap_or(Error::Internal("no pool named")));
        }
        Ok((plans, absent))
    }
}

/// Plans `specs`. A pool whose functions cannot be probed fails them all, or, given
/// `unprobeable`, is left out and its error put there (the agent's pools that a binary has
/// in name only, e.g. a wrapper that exists only inlined and calls no pool pooltrace reads).
fn plan_specs(
    mut specs: Vec<PoolSpec>,
    binary: &GoBinary,
    adjust: impl Fn(&mut PoolSpec),
    mut unprobeable: Option<&mut Vec<Error>>,
) -> Result<Vec<PoolPlan>> {
    if specs.len() > MAX_POOLS as usize {
        return Err(Error::TooManyPools(specs.len()));
    }
    specs.iter_mut().for_each(adjust);
    let known = KnownPools::new(binary, &specs);
    let mut plans = Vec::new();
    for spec in &specs {
        match PoolPlan::new(binary, plans.len() as u32, spec, &known) {
            Ok(plan) => plans.push(plan),
            Err(error @ Error::Unprobeable { .. }) => match unprobeable.as_deref_mut() {
                Some(left_out) => left_out.push(error),
                None => return Err(error),
            },
            Err(error) => return Err(error),
        }
    }
    refuse_duplicates(&plans)?;
    print_inlining(&plans);
    Ok(plans)
}

/// Two pools that probe the same Get or the same Put would count each call twice.
fn refuse_duplicates(plans: &[PoolPlan]) -> Result<()> {
    for (second, plan) in plans.iter().enumerate() {
        let Some(first) = plans[..second]
            .iter()
            .position(|earlier| probed(earlier).iter().any(|a| probed(plan).contains(a)))
        else {
            continue;
        };
        let what = match probed(&plans[first]).contains(&probed_id(&plan.get)) {
            true => &plan.get.function.name,
            false => &plan.put.function.name,
        };
        return Err(Error::DuplicatePool {
            what: what.clone(),
            first: first + 1,
            second: second + 1,
        });
    }
    Ok(())
}

/// What tells a pool's Get and Put from another pool's: see `probed_id`.
fn probed(plan: &PoolPlan) -> [(u64, &str); 2] {
    [probed_id(&plan.get), probed_id(&plan.put)]
}

/// What tells two probed functions apart: the address, or for a function that exists only
/// inlined (address 0), its name.
fn probed_id(f: &ResolvedFunction) -> (u64, &str) {
    match f.inlined_only {
        true => (0, &f.function.name),
        false => (f.function.addr, ""),
    }
}

/// A Get or Put inlined into a caller runs there without a call of its own: say where it is
/// traced on the call to the pool underneath, and warn of each copy where it is not.
fn print_inlining(plans: &[PoolPlan]) {
    for inlined in plans
        .iter()
        .flat_map(|p| [&p.inlined_gets, &p.inlined_puts])
    {
        let (traced, unseen) = inlined::messages(inlined);
        if let Some(traced) = traced {
            crate::status!("pooltrace: {traced}");
        }
        for warning in unseen {
            crate::status!("pooltrace: warning: {warning}");
        }
    }
}

/// Where one pool's probes sit, e.g. "Get main.(*P).Get at its 3 RETs (+0xfa, ...)".
pub(crate) fn plan_summary(plan: &PoolPlan) -> String {
    let rets: Vec<String> = plan
        .get_sites
        .iter()
        .map(|s| format!("+{:#x}", s.addr - plan.get.function.addr))
        .collect();
    let mut text = match plan.get.inlined_only {
        true => format!(
            "  Get {} only where it is inlined\n",
            plan.get.function.name
        ),
        false => format!(
            "  Get {} at its {} RET{} ({})\n",
            plan.get.function.name,
            rets.len(),
            if rets.len() == 1 { "" } else { "s" },
            rets.join(", "),
        ),
    };
    text += &match &plan.put_site {
        Some(site) => format!(
            "  Put {} at +{:#x} ({}, {})\n",
            plan.put.function.name,
            site.addr - plan.put.function.addr,
            site.instruction,
            emulation(site.emulated),
        ),
        None => format!(
            "  Put {} only where it is inlined\n",
            plan.put.function.name
        ),
    };
    for inlined in plan
        .inlined_gets
        .sites
        .iter()
        .chain(&plan.inlined_puts.sites)
    {
        let (what, at) = match inlined.side {
            Side::Get => ("Get", "after"),
            Side::Put => ("Put", "at"),
        };
        text += &format!(
            "  {what} inlined into {}: {at} its call to {} at {}+{:#x} ({}, {})\n",
            inlined.call_site,
            inlined.callee,
            inlined.host.name,
            inlined.site.addr - inlined.host.addr,
            inlined.site.instruction,
            emulation(inlined.site.emulated),
        );
    }
    text
}

fn emulation(emulated: bool) -> &'static str {
    if emulated {
        "emulated"
    } else {
        "single-stepped"
    }
}
