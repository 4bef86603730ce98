//! Loading the eBPF object for one process, and making its three programs (Put, Get's entry,
//! Get's RETs) live at their planned sites or taking them away, a program at a time, in the
//! order `lifecycle.rs` asks for. Each program goes live at all its sites through one
//! uprobe-multi link where the kernel has them (`multi.rs`), else through one perf-event
//! uprobe per site. Dropping [`Probes`] detaches every probe, Get's before Put's; the
//! target's code is never written to by us (the kernel's uprobe machinery owns the
//! breakpoints and removes them on detach).

use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf, EbpfLoader,
};
use std::{num::NonZeroU32, os::fd::OwnedFd, path::PathBuf};

use tracer_common::{
    names, ProbeSite, SiteRole, DEFAULT_RELEASE_SAMPLE, MAX_RETURNED, MAX_SITES, SITE_DOUBLE_PUTS,
};

use super::{
    arming::{arming_order, PlannedSite},
    multi::MultiPrograms,
    pool::PoolPlan,
};
use crate::{
    error::{AttachFailure, Error, Result},
    gobin::GoBinary,
    process::Process,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("POOLTRACE_EBPF_OBJECT"));

/// Kernel map sizes (entries).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_objects: u32,
    pub max_stacks: u32,
    /// Addresses a stack walk records at most.
    pub stack_depth: u32,
    /// Only objects of these sizes are tracked.
    pub size_min: u64,
    pub size_max: u64,
}

/// Loaded programs and maps for one process, with the programs that are live there.
pub struct Probes {
    ebpf: Ebpf,
    target: PathBuf,
    pid: NonZeroU32,
    /// Every site, in the arming order, with its own link while live when the sites have one
    /// each.
    sites: Vec<AttachedSite>,
    /// How the programs go live at the sites.
    linking: Linking,
    /// The descriptors of this object's maps, told apart from those of other `Probes` in
    /// the same process (the agent's other targets).
    map_fds: Vec<u32>,
}

/// How the programs go live at the sites.
enum Linking {
    /// One uprobe-multi link per program: the copies loaded for them, and each live
    /// program's link, in the arming order.
    Multi(MultiPrograms, Vec<(&'static str, OwnedFd)>),
    /// A perf-event uprobe per site (`AttachedSite::link`), and why; the programs are loaded
    /// for it once.
    PerSite { why: String, loaded: bool },
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
    /// Loads the programs and maps for `plans` in `process`, with nothing live yet.
    pub fn load(
        process: &Process,
        binary: &GoBinary,
        plans: &[PoolPlan],
        limits: Limits,
    ) -> Result<Self> {
        raise_memlock_limit();
        let maps_before = bpf_map_fds();
        let catches_double_puts = plans
            .iter()
            .any(|plan| plan.put_probe.flags & SITE_DOUBLE_PUTS != 0);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::OUTSTANDING, limits.max_objects)
            .map_max_entries(names::STACKS, limits.max_stacks)
            .map_max_entries(
                names::RETURNED,
                if catches_double_puts { MAX_RETURNED } else { 1 },
            )
            // Must exist: a global renamed on one side only fails the load, not silently.
            .override_global(names::RELEASE_SAMPLE, &DEFAULT_RELEASE_SAMPLE, true)
            .override_global(names::STACK_DEPTH, &limits.stack_depth, true)
            .override_global(names::SIZE_MIN, &limits.size_min, true)
            .override_global(names::SIZE_MAX, &limits.size_max, true)
            .load(OBJECT)
            .map_err(|source| Error::Load { source })?;

        let planned: Vec<PlannedSite> = arming_order(plans).collect();
        if planned.len() > MAX_SITES as usize {
            return Err(Error::TooManySites(planned.len()));
        }
        write_sites(&mut ebpf, &planned)?;
        // Not having uprobe-multi links is no error: the sites get a link each, and the
        // attach summary says why.
        let linking = match wanted_links()? {
            WantedLinks::PerSite => per_site(format!("{LINKS_VARIABLE}=per-site")),
            WantedLinks::Multi => match MultiPrograms::load(&ebpf, OBJECT, &names::PROGRAMS) {
                Ok(programs) if programs.filters_by_process() => {
                    Linking::Multi(programs, Vec::new())
                }
                Ok(_) => per_site(MultiPrograms::THREAD_FILTER.to_owned()),
                Err(error) => per_site(error.to_string()),
            },
        };
        let mut probes = Self {
            ebpf,
            target: process.exe_path(),
            pid: process.pid_nonzero(),
            sites: Vec::with_capacity(planned.len()),
            linking,
            map_fds: bpf_map_fds()
                .into_iter()
                .filter(|fd| !maps_before.contains(fd))
                .collect(),
        };
        for (cookie, planned) in planned.iter().enumerate() {
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
                cookie: cookie as u64,
                link: None,
            });
        }
        Ok(probes)
    }

    /// Makes each of `programs` live at all its sites, in the order given (skipping one that
    /// is already live). On an error, what this call made live stays: dropping `Probes`, or
    /// [`Probes::disarm`], takes it away in reverse.
    pub fn arm(&mut self, programs: &[&'static str]) -> Result<()> {
        if let Linking::Multi(_, links) = &self.linking {
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

    /// Loads the programs into the kernel for links of their own, once.
    fn load_per_site_programs(&mut self) -> Result<()> {
        let Linking::PerSite { loaded, .. } = &mut self.linking else {
            return Ok(());
        };
        if !*loaded {
            for name in names::PROGRAMS {
                uprobe(&mut self.ebpf, name)?
                    .load()
                    .map_err(|source| Error::Program { name, source })?;
            }
            *loaded = true;
        }
        Ok(())
    }

    /// Attaches each of `programs` (in the arming order) at all its sites through one
    /// uprobe-multi link, skipping one already live.
    fn arm_multi(&mut self, programs: &[&'static str]) -> std::io::Result<()> {
        let Linking::Multi(loaded, links) = &mut self.linking else {
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
        if let Linking::Multi(_, links) = &mut self.linking {
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
        let link = uprobe(&mut self.ebpf, site.role.program())?
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
            let taken = uprobe(&mut self.ebpf, name).and_then(|program| {
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

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Tells the kernel side the epoch now in force (only while Put is not probed: a Put
    /// must never see its object's Get in an epoch that did not watch it throughout).
    pub fn set_epoch(&mut self, epoch: u64) -> Result<()> {
        let map = self.ebpf.map_mut(names::EPOCH).ok_or(Error::NotInObject {
            what: "map",
            name: names::EPOCH,
        })?;
        let map_error = |source| Error::Map {
            name: names::EPOCH,
            source,
        };
        let mut array: Array<_, u64> = Array::try_from(map).map_err(map_error)?;
        array.set(0, epoch, 0).map_err(map_error)
    }

    /// The stream mode ring buffer, taken out of the loaded object.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(Error::NotInObject {
                what: "map",
                name: names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(|source| Error::Map {
            name: names::EVENTS,
            source,
        })
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

    /// Kernel memory charged for these probes' maps, from `memlock:` in their
    /// `/proc/self/fdinfo` entries.
    pub fn kernel_memory(&self) -> u64 {
        self.map_fds
            .iter()
            .filter_map(|fd| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
                let line = info.lines().find(|l| l.starts_with("memlock:"))?;
                line["memlock:".len()..].trim().parse::<u64>().ok()
            })
            .sum()
    }
}

/// The descriptors of every BPF map this process holds now.
fn bpf_map_fds() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let info = std::fs::read_to_string(entry.path()).ok()?;
            info.contains("map_type:").then_some(fd)
        })
        .collect()
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
    Linking::PerSite { why, loaded: false }
}

/// The environment variable that asks for a link per site (`per-site`) instead of
/// uprobe-multi links (`multi`, the default).
const LINKS_VARIABLE: &str = "POOLTRACE_UPROBE_LINKS";

enum WantedLinks {
    Multi,
    PerSite,
}

fn wanted_links() -> Result<WantedLinks> {
    match std::env::var(LINKS_VARIABLE).as_deref() {
        Err(_) | Ok("multi") => Ok(WantedLinks::Multi),
        Ok("per-site") => Ok(WantedLinks::PerSite),
        Ok(other) => Err(Error::Usage(format!(
            "{LINKS_VARIABLE} is {other:?}: it must be multi or per-site"
        ))),
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.disarm_multi(&names::PROGRAMS);
        // Failing here leaves the links to aya, which detaches them with the programs.
        let _ = self.detach((0..self.sites.len()).collect());
    }
}

fn write_sites(ebpf: &mut Ebpf, sites: &[PlannedSite]) -> Result<()> {
    let map = ebpf.map_mut(names::SITES).ok_or(Error::NotInObject {
        what: "map",
        name: names::SITES,
    })?;
    let map_error = |source| Error::Map {
        name: names::SITES,
        source,
    };
    let mut array: Array<_, ProbeSite> = Array::try_from(map).map_err(map_error)?;
    for (i, planned) in sites.iter().enumerate() {
        array.set(i as u32, planned.probe, 0).map_err(map_error)?;
    }
    Ok(())
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or(Error::NotInObject {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Names the missing capability before the kernel answers with a bare EPERM. On this kernel
/// CAP_BPF and CAP_PERFMON load the programs, but opening a uprobe perf event (a link per
/// site, the fallback) still needs CAP_SYS_ADMIN. It is asked for on every path, so that a
/// run works the same whichever way its probes are linked.
pub fn check_privileges() -> Result<()> {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    Err(Error::Privilege {
        capability: "CAP_SYS_ADMIN",
        why: if has(CAP_BPF) && has(CAP_PERFMON) {
            " (it has CAP_BPF and CAP_PERFMON, but the kernel opens uprobes only for CAP_SYS_ADMIN)"
        } else {
            " (to load eBPF programs and open uprobes)"
        },
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones (this one) charge the
/// memory cgroup, and raising the limit without CAP_SYS_RESOURCE fails. So failure is fine.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol};
    use tracer_common::names;

    use super::OBJECT;

    /// The names of the symbols the embedded object defines in sections whose names pass
    /// `section`.
    fn symbols_in(section: impl Fn(&str) -> bool) -> Vec<String> {
        let file = object::File::parse(OBJECT).expect("the embedded eBPF object parses");
        file.symbols()
            .filter(|symbol| symbol.is_definition())
            .filter(|symbol| {
                let index = symbol.section_index();
                let name = index.and_then(|i| file.section_by_index(i).ok()?.name().ok());
                name.is_some_and(&section)
            })
            .filter_map(|symbol| symbol.name().ok().map(str::to_owned))
            .collect()
    }

    /// User space opens maps, programs and globals by `names`; a kernel-side rename that
    /// missed them would only fail at load time, as root. This catches it without root.
    #[test]
    fn every_name_user_space_uses_is_in_the_object() {
        let maps = symbols_in(|section| section == "maps");
        let programs = symbols_in(|section| section.starts_with("uprobe"));
        let globals = symbols_in(|section| section.starts_with(".rodata"));
        for name in names::MAPS {
            assert!(maps.iter().any(|m| m == name), "no map {name} in {maps:?}");
        }
        for name in names::PROGRAMS {
            assert!(
                programs.iter().any(|p| p == name),
                "no program {name} in {programs:?}"
            );
        }
        for name in names::GLOBALS {
            assert!(
                globals.iter().any(|g| g == name),
                "no global {name} in {globals:?}"
            );
        }
    }
}
