//! Loading the eBPF object and attaching its two programs at the planned sites of one process.
//! Dropping [`Probes`] detaches every probe; the target's code is never written to by us (the
//! kernel's uprobe machinery owns the breakpoints and removes them on detach).

use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf, EbpfLoader,
};
use std::{num::NonZeroU32, path::PathBuf};

use tracer_common::{ProbeSite, MAX_SITES};

use super::{sites::Site, PoolPlan};
use crate::{
    error::{Error, Result},
    gobin::GoBinary,
    process::Process,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("POOLTRACE_EBPF_OBJECT"));

/// Kernel map sizes (entries).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_objects: u32,
    pub max_stacks: u32,
}

/// Loaded programs and maps, attached to one process.
pub struct Probes {
    ebpf: Ebpf,
    attached: usize,
    target: PathBuf,
    pid: NonZeroU32,
    /// Get's sites (entry and RETs), which `--sample-gets` detaches and reattaches.
    get_sites: Vec<GetSite>,
}

/// A Get site and its link while attached.
struct GetSite {
    program: &'static str,
    offset: u64,
    cookie: u64,
    link: Option<UProbeLinkId>,
}

impl Probes {
    pub fn attach(
        process: &Process,
        binary: &GoBinary,
        plans: &[PoolPlan],
        limits: Limits,
    ) -> Result<Self> {
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("OUTSTANDING", limits.max_objects)
            .map_max_entries("STACKS", limits.max_stacks)
            .load(OBJECT)
            .map_err(|e| load_error(&e))?;

        let mut sites: Vec<(&'static str, &str, &Site, ProbeSite)> = Vec::new();
        for plan in plans {
            if let Some(site) = &plan.get_entry_site {
                sites.push((
                    "pool_get_entry",
                    &plan.get.function.name,
                    site,
                    plan.get_probe,
                ));
            }
            for site in &plan.get_sites {
                sites.push(("pool_get", &plan.get.function.name, site, plan.get_probe));
            }
            sites.push((
                "pool_put",
                &plan.put.function.name,
                &plan.put_site,
                plan.put_probe,
            ));
        }
        if sites.len() > MAX_SITES as usize {
            return Err(Error::TooManySites(sites.len()));
        }
        write_sites(&mut ebpf, &sites)?;
        for program in ["pool_get", "pool_get_entry", "pool_put"] {
            uprobe(&mut ebpf, program)?
                .load()
                .map_err(|e| load_error(&e))?;
        }
        let target = process.exe_path();
        let mut probes = Self {
            ebpf,
            attached: 0,
            target,
            pid: process.pid_nonzero(),
            get_sites: Vec::new(),
        };
        for (cookie, (program, function, site, _)) in sites.iter().enumerate() {
            let offset = binary.file_offset(site.addr).ok_or_else(|| Error::Attach {
                function: function.to_string(),
                address: site.addr,
                offset: 0,
                reason: "address is in no loaded segment".into(),
            })?;
            let link = probes
                .attach_one(program, offset, cookie as u64)
                .map_err(|reason| Error::Attach {
                    function: function.to_string(),
                    address: site.addr,
                    offset,
                    reason,
                })?;
            if *program != "pool_put" {
                probes.get_sites.push(GetSite {
                    program,
                    offset,
                    cookie: cookie as u64,
                    link: Some(link),
                });
            }
        }
        probes.attached = sites.len();
        Ok(probes)
    }

    fn attach_one(
        &mut self,
        program: &str,
        offset: u64,
        cookie: u64,
    ) -> std::result::Result<UProbeLinkId, String> {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(cookie),
        };
        let (target, pid) = (self.target.clone(), self.pid);
        uprobe(&mut self.ebpf, program)
            .map_err(|e| e.to_string())?
            .attach(point, &target, UProbeScope::OneProcess(pid))
            .map_err(|e| error_chain(&e))
    }

    /// Attaches or detaches Get's probes (`--sample-gets`); Put's stay, so every object taken
    /// while Get is probed is still seen coming back.
    pub fn set_gets_probed(&mut self, probed: bool) -> Result<()> {
        for i in 0..self.get_sites.len() {
            let (program, offset, cookie) = (
                self.get_sites[i].program,
                self.get_sites[i].offset,
                self.get_sites[i].cookie,
            );
            match (probed, self.get_sites[i].link.take()) {
                (true, None) => {
                    let link = self.attach_one(program, offset, cookie).map_err(|reason| {
                        Error::Attach {
                            function: program.to_owned(),
                            address: 0,
                            offset,
                            reason,
                        }
                    })?;
                    self.get_sites[i].link = Some(link);
                }
                (false, Some(link)) => {
                    uprobe(&mut self.ebpf, program)?
                        .detach(link)
                        .map_err(|e| Error::Load(error_chain(&e)))?;
                }
                (_, link) => self.get_sites[i].link = link,
            }
        }
        Ok(())
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The stream mode ring buffer, taken out of the loaded object.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| Error::Load("no EVENTS map".into()))?;
        RingBuf::try_from(map).map_err(|e| Error::Maps(e.to_string()))
    }

    /// Number of uprobes attached.
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// Kernel memory charged for the maps, from `memlock:` in `/proc/self/fdinfo` of every
    /// BPF map this process holds (only ours).
    pub fn kernel_memory(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
            return 0;
        };
        entries
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .filter(|info| info.contains("map_type:"))
            .filter_map(|info| {
                let line = info.lines().find(|l| l.starts_with("memlock:"))?;
                line["memlock:".len()..].trim().parse::<u64>().ok()
            })
            .sum()
    }
}

fn write_sites(ebpf: &mut Ebpf, sites: &[(&str, &str, &Site, ProbeSite)]) -> Result<()> {
    let map = ebpf
        .map_mut("SITES")
        .ok_or_else(|| Error::Load("no SITES map".into()))?;
    let mut array: Array<_, ProbeSite> =
        Array::try_from(map).map_err(|e| Error::Load(e.to_string()))?;
    for (i, (_, _, _, probe)) in sites.iter().enumerate() {
        array
            .set(i as u32, probe, 0)
            .map_err(|e| Error::Load(e.to_string()))?;
    }
    Ok(())
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Load(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Names the missing capability before the kernel answers with a bare EPERM. On this kernel
/// CAP_BPF and CAP_PERFMON load the programs, but opening a uprobe perf event still needs
/// CAP_SYS_ADMIN, so that is what a run needs.
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

fn load_error(e: &dyn std::error::Error) -> Error {
    Error::Load(error_chain(e))
}

/// "outer: inner: innermost", since aya wraps the errno several levels deep.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}
