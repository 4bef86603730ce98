//! One process's probes in a loaded eBPF object (`object.rs`): its sites in its slot, and
//! making the three programs (Put, Get's entry, Get's RETs) live at them or taking them
//! away, a program at a time, in the order `lifecycle.rs` asks for. Each program goes live at
//! all its sites through one uprobe-multi link where the kernel has them (`multi.rs`), else
//! through one perf-event uprobe per site. Dropping [`Probes`] detaches every probe, Get's
//! before Put's, and clears the slot's map entries when other processes share the object;
//! the target's code is never written to by us (the kernel's uprobe machinery owns the
//! breakpoints and removes them on detach).

use aya::programs::{
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeLinkId, UProbeScope},
    UProbe,
};
use std::{num::NonZeroU32, os::fd::OwnedFd, path::PathBuf, rc::Rc};

use tracer_common::{names, ProbeSite, SiteRole, SITE_DOUBLE_PUTS};

use super::{
    arming::{arming_order, PlannedSite},
    object::{Limits, Object, Slot},
    pool::PoolPlan,
};
use crate::{
    capabilities::{self, Effective},
    diagnostics,
    error::{AttachFailure, Error, Result},
    gobin::GoBinary,
    process::Process,
};

/// One process's probes: its slot of a loaded object, with the programs that are live there.
pub struct Probes {
    object: Rc<Object>,
    slot: Slot,
    target: PathBuf,
    pid: NonZeroU32,
    /// Every site, in the arming order, with its own link while live when the sites have one
    /// each.
    sites: Vec<AttachedSite>,
    /// How the programs go live at the sites.
    linking: Linking,
}

/// How the programs go live at the sites.
enum Linking {
    /// One uprobe-multi link per program: each live program's link, in the arming order.
    Multi(Vec<(&'static str, OwnedFd)>),
    /// A perf-event uprobe per site (`AttachedSite::link`), and why.
    PerSite { why: String },
}

/// A site, its role and cookie, and its link while attached.
struct AttachedSite {
    role: SiteRole,
    /// The probed function and address, for messages.
    function: String,
    address: u64,
    offset: u64,
    cookie: u64,
    link: Option<UProbeLinkId>,
}

impl Probes {
    /// Loads the object for `plans` in `process` alone, with nothing live yet.
    pub fn load(
        process: &Process,
        binary: &GoBinary,
        plans: &[PoolPlan],
        limits: Limits,
    ) -> Result<Self> {
        let catches_double_puts = plans
            .iter()
            .any(|plan| plan.put_probe.flags & SITE_DOUBLE_PUTS != 0);
        let object = Object::load(limits, 1, catches_double_puts)?;
        Self::in_object(&object, process, binary, plans)
    }

    /// Places the probes of `plans` in `process` in a free slot of `object`, with nothing
    /// live yet.
    pub fn in_object(
        object: &Rc<Object>,
        process: &Process,
        binary: &GoBinary,
        plans: &[PoolPlan],
    ) -> Result<Self> {
        let planned: Vec<PlannedSite> = arming_order(plans).collect();
        let slot = object.take_slot()?;
        let mut probes = Self {
            object: object.clone(),
            slot,
            target: process.exe_path(),
            pid: process.pid_nonzero(),
            sites: Vec::with_capacity(planned.len()),
            linking: match object.multi() {
                Ok(_) => Linking::Multi(Vec::new()),
                Err(why) => per_site(why.to_owned()),
            },
        };
        let sites: Vec<ProbeSite> = (planned.iter())
            .map(|planned| ProbeSite {
                pool: slot.first_pool() + planned.probe.pool,
                target: slot.index(),
                ..planned.probe
            })
            .collect();
        object.write_sites(slot, &sites)?;
        let pid = process.pid_nonzero();
        diagnostics::name_sites(planned.iter().enumerate().map(|(i, p)| {
            let offset = p.site.addr.saturating_sub(p.function.addr);
            let role = p.role.as_str();
            let name = format!("{role} {}+{offset:#x} in PID {pid}", p.function.name);
            log::debug!("site {}: {name}", slot.cookie(i));
            (slot.cookie(i), name)
        }));
        diagnostics::name_pools(planned.iter().map(|p| {
            let pool = slot.first_pool() + p.probe.pool;
            (pool, format!("{} in PID {pid}", p.plan.get.requested))
        }));
        for (i, planned) in planned.iter().enumerate() {
            let address = planned.site.addr;
            let function = &planned.function.name;
            let offset = binary.file_offset(address).ok_or_else(|| Error::Attach {
                function: function.clone(),
                address,
                offset: 0,
                source: AttachFailure::NotLoaded,
            })?;
            probes.sites.push(AttachedSite {
                role: planned.role,
                function: planned.function.name.clone(),
                address,
                offset,
                cookie: slot.cookie(i),
                link: None,
            });
        }
        Ok(probes)
    }

    /// Makes each of `programs` live at all its sites, in the order given (skipping one that
    /// is already live). On an error, what this call made live stays: dropping `Probes`, or
    /// [`Probes::disarm`], takes it away in reverse.
    pub fn arm(&mut self, programs: &[&'static str]) -> Result<()> {
        if let Linking::Multi(links) = &self.linking {
            let nothing_live = links.is_empty();
            match self.arm_multi(programs) {
                Ok(()) => return Ok(()),
                // The first time, what went live goes, and the sites get a link each, which
                // names the site at fault if there is one.
                Err(error) if nothing_live => {
                    self.disarm_multi(&names::PROGRAMS);
                    self.linking = per_site(format!("a uprobe-multi link was refused: {error}"));
                }
                Err(source) => return Err(Error::Multi { source }),
            }
        }
        self.load_per_site_programs()?;
        for &name in programs {
            for i in 0..self.sites.len() {
                if self.sites[i].role.program() == name && self.sites[i].link.is_none() {
                    self.attach_site(i)?;
                }
            }
        }
        Ok(())
    }

    /// Takes `programs` away from all their sites, the last armed first.
    pub fn disarm(&mut self, programs: &[&'static str]) -> Result<()> {
        self.disarm_multi(programs);
        let live = (0..self.sites.len()).filter(|&i| {
            let site = &self.sites[i];
            site.link.is_some() && programs.contains(&site.role.program())
        });
        self.detach(live.collect())
    }

    /// Loads aya's copies of the programs into the kernel for links of their own, once
    /// for the object.
    fn load_per_site_programs(&mut self) -> Result<()> {
        if matches!(self.linking, Linking::Multi(_)) {
            return Ok(());
        }
        // Without it the kernel refuses each site's perf event with a bare EACCES.
        Effective::read().require(&[capabilities::SYS_ADMIN])?;
        if self.object.per_site_loaded() {
            return Ok(());
        }
        for name in names::PROGRAMS {
            uprobe(&mut self.object.ebpf_mut(), name)?
                .load()
                .map_err(|source| Error::Program { name, source })?;
        }
        self.object.set_per_site_loaded();
        Ok(())
    }

    /// Attaches each of `programs` (in the arming order) at all its sites through one
    /// uprobe-multi link, skipping one already live.
    fn arm_multi(&mut self, programs: &[&'static str]) -> std::io::Result<()> {
        let (Linking::Multi(links), Ok(loaded)) = (&mut self.linking, self.object.multi()) else {
            return Ok(());
        };
        for &name in programs {
            if links.iter().any(|(live, _)| *live == name) {
                continue;
            }
            let (offsets, cookies): (Vec<u64>, Vec<u64>) = self
                .sites
                .iter()
                .filter(|site| site.role.program() == name)
                .map(|site| (site.offset, site.cookie))
                .unzip();
            if offsets.is_empty() {
                continue;
            }
            let link = loaded.attach(name, &self.target, &offsets, &cookies, self.pid.get())?;
            links.push((name, link));
        }
        Ok(())
    }

    /// Closes the uprobe-multi links of `programs`, the last armed first.
    fn disarm_multi(&mut self, programs: &[&'static str]) {
        if let Linking::Multi(links) = &mut self.linking {
            while let Some(at) = links.iter().rposition(|(name, _)| programs.contains(name)) {
                drop(links.remove(at));
            }
        }
    }

    /// Gives site `i` a link of its own; a failure names the probed function.
    fn attach_site(&mut self, i: usize) -> Result<()> {
        let site = &self.sites[i];
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(site.offset),
            cookie: Some(site.cookie),
        };
        let link = uprobe(&mut self.object.ebpf_mut(), site.role.program())?
            .attach(point, &self.target, UProbeScope::OneProcess(self.pid))
            .map_err(|source| Error::Attach {
                function: site.function.clone(),
                address: site.address,
                offset: site.offset,
                source: AttachFailure::Kernel(source),
            })?;
        self.sites[i].link = Some(link);
        Ok(())
    }

    /// Detaches the attached sites at `indices`, in the reverse of the arming order: Get's
    /// RETs, then Get's entries, then Put's, so no object is taken while its Put could pass
    /// unseen. A link that cannot be taken out of aya is skipped (aya detaches it with its
    /// program) and the first such error returned once the rest are gone.
    ///
    /// Each link's close waits for an RCU grace period under the kernel's `event_mutex` (~80
    /// ms here): closing a phase's links from a few threads overlaps only the work outside
    /// that mutex (64 sites: 6.9 s became 5.2 s). A thread that cannot be started leaves its
    /// links to be closed on this one.
    fn detach(&mut self, mut indices: Vec<usize>) -> Result<()> {
        const CLOSERS: usize = 8;
        indices.sort_by_key(|&i| std::cmp::Reverse(arming_phase(self.sites[i].role)));
        let mut phases: Vec<(usize, Vec<UProbeLink>)> = Vec::new();
        let mut first_error = None;
        for i in indices {
            let site = &mut self.sites[i];
            let Some(id) = site.link.take() else { continue };
            let name = site.role.program();
            let taken = uprobe(&mut self.object.ebpf_mut(), name).and_then(|program| {
                program
                    .take_link(id)
                    .map_err(|source| Error::Program { name, source })
            });
            let link = match taken {
                Ok(link) => link,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            let phase = arming_phase(site.role);
            match phases.last_mut() {
                Some((last, links)) if *last == phase => links.push(link),
                _ => phases.push((phase, vec![link])),
            }
        }
        for (_, mut links) in phases {
            let per_closer = links.len().div_ceil(CLOSERS).max(1);
            std::thread::scope(|scope| {
                while !links.is_empty() {
                    let batch: Vec<UProbeLink> =
                        links.drain(..per_closer.min(links.len())).collect();
                    let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(batch));
                }
            });
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The traced process.
    pub fn pid(&self) -> i32 {
        self.pid.get() as i32
    }

    /// The loaded object these probes are in.
    pub fn object(&self) -> &Object {
        &self.object
    }

    /// The slot of the object that these probes' pools, sites and map entries are in.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Tells the kernel side the epoch now in force (only while Put is not probed: a Put
    /// must never see its object's Get in an epoch that did not watch it throughout).
    pub fn set_epoch(&mut self, epoch: u64) -> Result<()> {
        self.object.set_epoch(self.slot, epoch)
    }

    /// Number of uprobes attached.
    pub fn attached(&self) -> usize {
        self.sites.len()
    }

    /// How the programs went live, for the attach summary.
    pub fn links(&self) -> String {
        match &self.linking {
            Linking::Multi(..) => "one uprobe-multi link per program".to_owned(),
            Linking::PerSite { why, .. } => {
                format!("one per site (detaching waits ~0.1 s a site): {why}")
            }
        }
    }

    /// Kernel memory charged for the maps of the object these probes are in.
    pub fn kernel_memory(&self) -> u64 {
        self.object.kernel_memory()
    }
}

/// The position of a site's role in the arming order: that of its program in
/// `names::PROGRAMS` (Put's, then Get's entries', then Get's RETs').
fn arming_phase(role: SiteRole) -> usize {
    let program = role.program();
    names::PROGRAMS
        .iter()
        .position(|&p| p == program)
        .unwrap_or(names::PROGRAMS.len())
}

fn per_site(why: String) -> Linking {
    Linking::PerSite { why }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.disarm_multi(&names::PROGRAMS);
        // Failing here leaves the links to aya, which detaches them with the programs.
        let _ = self.detach((0..self.sites.len()).collect());
        if self.object.is_shared() {
            if let Err(error) = self.object.clear_slot(self.slot) {
                crate::status!(
                    "pooltrace: PID {}'s map entries could not all be removed: {}",
                    self.pid,
                    error.chain()
                );
            }
        }
        self.object.free_slot(self.slot);
    }
}

fn uprobe<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or(Error::NotInObject {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}
