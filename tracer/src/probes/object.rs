//! The eBPF object loaded into the kernel: its maps and programs, loaded once for one traced
//! process (`report`, `run`, `stream`) or once for all the processes the agent traces on a
//! node. Each traced process gets a slot, which owns a range of pool indices and of site
//! cookies and tags the keys that carry no pool, so every map entry belongs to one slot:
//! reads keep to theirs, a slot's share of `OUTSTANDING` is its own, and a slot given back
//! leaves no entry behind ([`Object::clear_slot`]).

use std::{
    cell::{Cell, Ref, RefCell, RefMut},
    collections::{BTreeSet, HashSet},
    hash::Hash,
    rc::Rc,
};

use aya::{
    maps::{
        Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues,
    },
    Ebpf, EbpfLoader, Pod,
};
use tracer_common::{
    names, stack_target, DoublePutKey, GetInFlight, HoldHistogram, ObjectKey, ObjectQuota,
    Outstanding, PathCrossings, PathKey, PathSizes, PathTotals, PoolCounters, ProbeSite,
    ReleaseKey, StackFrames, DEFAULT_RELEASE_SAMPLE, MAX_POOLS, MAX_RETURNED, MAX_SITES,
    MAX_TARGET_SLOTS, RECEIVER_POOL_SHIFT,
};

use super::multi::MultiPrograms;
use crate::{
    capabilities::{self, Effective},
    diagnostics::{self, KernelLog},
    error::{Error, Result},
};

pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("POOLTRACE_EBPF_OBJECT"));

/// What the object is loaded with: map sizes, filters, and how many processes share it.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Objects tracked at once, over all slots.
    pub max_objects: u32,
    pub max_stacks: u32,
    /// Addresses a stack walk records at most.
    pub stack_depth: u32,
    /// Only objects of these sizes are tracked.
    pub size_min: u64,
    pub size_max: u64,
}

/// One slot of an object: a traced process's pools, sites and map entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

impl Slot {
    pub fn index(self) -> u32 {
        self.0
    }

    /// The index in `COUNTERS` (and in every key that carries a pool) of the slot's pool 0.
    pub fn first_pool(self) -> u32 {
        self.0 * MAX_POOLS
    }

    /// The slot's pool whose index in the maps is `pool`, if it is one of the slot's.
    pub fn local_pool(self, pool: u32) -> Option<usize> {
        let local = pool.checked_sub(self.first_pool())?;
        (local < MAX_POOLS).then_some(local as usize)
    }

    /// The cookie (index in `SITES`) of the slot's site `site`.
    pub fn cookie(self, site: usize) -> u64 {
        u64::from(self.0 * MAX_SITES) + site as u64
    }
}

/// The loaded object: maps and programs, the slots in use, and how programs can be linked.
pub struct Object {
    ebpf: RefCell<Ebpf>,
    /// Copies of the programs loaded for uprobe-multi links, or why there are none.
    multi: std::result::Result<MultiPrograms, String>,
    /// Whether aya's copies of the programs are loaded (for links of one site each).
    per_site_loaded: Cell<bool>,
    /// Slots a process holds now.
    taken: RefCell<BTreeSet<u32>>,
    slots: u32,
    /// Objects each slot may have tracked at once: `--max-objects` over the slots.
    share: u64,
    /// This object's map descriptors, told apart from any other object's in this process.
    map_fds: Vec<u32>,
    /// The kernel side's log messages, drained while they are wanted (`--debug`).
    _kernel_log: Option<KernelLog>,
}

/// The environment variable that asks for a link per site (`per-site`) instead of
/// uprobe-multi links (`multi`, the default).
const LINKS_VARIABLE: &str = "POOLTRACE_UPROBE_LINKS";

impl Object {
    /// Loads the object for `slots` processes (1 for a command that traces one). Maps are
    /// sized for all of them: `limits.max_objects` is the total, and when `slots` is more
    /// than 1 each slot may hold an equal share of it.
    pub fn load(limits: Limits, slots: u32, catches_double_puts: bool) -> Result<Rc<Self>> {
        if !(1..=MAX_TARGET_SLOTS).contains(&slots) {
            return Err(Error::Usage(format!(
                "{slots} processes at once: one eBPF object traces 1 to {MAX_TARGET_SLOTS}"
            )));
        }
        raise_memlock_limit();
        let maps_before = bpf_map_fds();
        let log_level = diagnostics::kernel_level();
        log::debug!("loading the eBPF object for {slots} processes, AYA_LOG_LEVEL {log_level}");
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::OUTSTANDING, limits.max_objects)
            .map_max_entries(names::STACKS, limits.max_stacks)
            .map_max_entries(names::SITES, MAX_SITES * slots)
            .map_max_entries(names::COUNTERS, MAX_POOLS * slots)
            .map_max_entries(
                names::RETURNED,
                if catches_double_puts { MAX_RETURNED } else { 1 },
            )
            // Must exist: a global renamed on one side only fails the load, not silently.
            .override_global(names::RELEASE_SAMPLE, &DEFAULT_RELEASE_SAMPLE, true)
            .override_global(names::STACK_DEPTH, &limits.stack_depth, true)
            .override_global(names::SIZE_MIN, &limits.size_min, true)
            .override_global(names::SIZE_MAX, &limits.size_max, true)
            // 0 unless asked: every log call in the programs is then skipped by the verifier.
            .override_global(aya_log::LEVEL, &log_level, true)
            .load(OBJECT)
            .map_err(load_error)?;
        // Not having uprobe-multi links is no error: the sites get a link each, and the
        // attach summary says why.
        let multi = match wanted_links()? {
            WantedLinks::PerSite => Err(format!("{LINKS_VARIABLE}=per-site")),
            WantedLinks::Multi => match MultiPrograms::load(&ebpf, OBJECT, &names::PROGRAMS) {
                Ok(programs) if programs.filters_by_process() => Ok(programs),
                Ok(_) => Err(MultiPrograms::THREAD_FILTER.to_owned()),
                Err(error) => Err(error.to_string()),
            },
        };
        // After the uprobe-multi copies are relocated against the log's ring buffer, which
        // this takes out of the maps aya keeps.
        let kernel_log = (log_level > 0)
            .then(|| KernelLog::start(&mut ebpf))
            .transpose()
            .map_err(|source| Error::KernelLog { source })?;
        Ok(Rc::new(Self {
            ebpf: RefCell::new(ebpf),
            multi,
            per_site_loaded: Cell::new(false),
            taken: RefCell::new(BTreeSet::new()),
            slots,
            share: u64::from(limits.max_objects / slots).max(1),
            map_fds: bpf_map_fds()
                .into_iter()
                .filter(|fd| !maps_before.contains(fd))
                .collect(),
            _kernel_log: kernel_log,
        }))
    }

    /// A free slot, with its share of `OUTSTANDING` set and nothing of it in the maps.
    pub fn take_slot(&self) -> Result<Slot> {
        let mut taken = self.taken.borrow_mut();
        let free = (0..self.slots)
            .find(|slot| !taken.contains(slot))
            .ok_or(Error::NoFreeSlot(self.slots))?;
        // One process alone is limited by the map's size: no count to keep.
        let quota = ObjectQuota {
            limit: if self.is_shared() { self.share } else { 0 },
            held: 0,
        };
        self.with_map(names::OBJECT_QUOTAS, |map| {
            Array::<_, ObjectQuota>::try_from(map)?.set(free, quota, 0)
        })?;
        taken.insert(free);
        Ok(Slot(free))
    }

    /// Gives `slot` back, after [`Object::clear_slot`] when other slots go on.
    pub fn free_slot(&self, slot: Slot) {
        self.taken.borrow_mut().remove(&slot.0);
    }

    /// Objects each slot may have tracked at once.
    pub fn share(&self) -> u64 {
        self.share
    }

    /// Whether more than one process can share the object.
    pub fn is_shared(&self) -> bool {
        self.slots > 1
    }

    /// Writes the slot's sites into `SITES`, the first at the slot's first cookie.
    pub fn write_sites(&self, slot: Slot, sites: &[ProbeSite]) -> Result<()> {
        if sites.len() > MAX_SITES as usize {
            return Err(Error::TooManySites(sites.len()));
        }
        self.with_map(names::SITES, |map| {
            let mut array = Array::<_, ProbeSite>::try_from(map)?;
            for (i, site) in sites.iter().enumerate() {
                array.set(slot.cookie(i) as u32, *site, 0)?;
            }
            Ok(())
        })
    }

    /// Tells the kernel side the epoch now in force for the slot.
    pub fn set_epoch(&self, slot: Slot, epoch: u64) -> Result<()> {
        self.with_map(names::EPOCH, |map| {
            Array::<_, u64>::try_from(map)?.set(slot.0, epoch, 0)
        })
    }

    /// Removes every entry of `slot` from the maps, once its probes are detached: what its
    /// process left there must neither count against the next process in the slot nor fill
    /// maps the others share.
    pub fn clear_slot(&self, slot: Slot) -> Result<()> {
        let mine = |pool: u32| slot.local_pool(pool).is_some();
        remove_keys::<ObjectKey, Outstanding>(self, names::OUTSTANDING, |k| mine(k.pool))?;
        remove_keys::<ObjectKey, tracer_common::ReturnedBy>(self, names::RETURNED, |k| {
            mine(k.pool)
        })?;
        remove_keys::<u64, GetInFlight>(self, names::GETS_IN_FLIGHT, |&k| {
            mine((k >> RECEIVER_POOL_SHIFT) as u32)
        })?;
        remove_keys::<u64, StackFrames>(self, names::STACKS, |&k| stack_target(k) == slot.0)?;
        remove_per_cpu_keys::<PathKey, PathTotals>(self, names::COLLECTED, |k| mine(k.pool))?;
        remove_per_cpu_keys::<PathKey, PathCrossings>(self, names::CROSSED, |k| mine(k.pool))?;
        remove_per_cpu_keys::<PathKey, HoldHistogram>(self, names::HOLD_TIMES, |k| mine(k.pool))?;
        remove_per_cpu_keys::<PathKey, PathSizes>(self, names::SIZES, |k| mine(k.pool))?;
        remove_per_cpu_keys::<ReleaseKey, u64>(self, names::RELEASES, |k| mine(k.acquire.pool))?;
        remove_per_cpu_keys::<DoublePutKey, u64>(self, names::DOUBLE_PUTS, |k| mine(k.pool))?;
        self.with_map(names::COUNTERS, |map| {
            let mut counters = PerCpuArray::<_, PoolCounters>::try_from(map)?;
            let cpus = counters.get(&slot.first_pool(), 0)?.iter().count();
            let zeroed = vec![PoolCounters::default(); cpus];
            for pool in slot.first_pool()..slot.first_pool() + MAX_POOLS {
                counters.set(pool, PerCpuValues::try_from(zeroed.to_vec())?, 0)?;
            }
            Ok(())
        })?;
        self.with_map(names::SITES, |map| {
            let mut sites = Array::<_, ProbeSite>::try_from(map)?;
            (0..MAX_SITES as usize)
                .try_for_each(|i| sites.set(slot.cookie(i) as u32, ProbeSite::default(), 0))
        })?;
        self.set_epoch(slot, 0)?;
        self.with_map(names::OBJECT_QUOTAS, |map| {
            Array::<_, ObjectQuota>::try_from(map)?.set(slot.0, ObjectQuota::default(), 0)
        })
    }

    /// The loaded object's maps and aya's copies of the programs, for reading.
    pub fn ebpf(&self) -> Ref<'_, Ebpf> {
        self.ebpf.borrow()
    }

    /// The same, for attaching aya's programs and taking maps out.
    pub fn ebpf_mut(&self) -> RefMut<'_, Ebpf> {
        self.ebpf.borrow_mut()
    }

    /// The copies of the programs loaded for uprobe-multi links, or why there are none.
    pub fn multi(&self) -> std::result::Result<&MultiPrograms, &str> {
        self.multi.as_ref().map_err(String::as_str)
    }

    /// Whether aya's copies of the programs are loaded; they are after this returns true once.
    pub fn per_site_loaded(&self) -> bool {
        self.per_site_loaded.get()
    }

    pub fn set_per_site_loaded(&self) {
        self.per_site_loaded.set(true);
    }

    /// Kernel memory charged for the object's maps, from `memlock:` in their
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

    /// Runs `write` on map `name`, naming the map in its error.
    fn with_map<T>(
        &self,
        name: &'static str,
        write: impl FnOnce(&mut aya::maps::Map) -> std::result::Result<T, MapError>,
    ) -> Result<T> {
        let mut ebpf = self.ebpf.borrow_mut();
        let map = ebpf
            .map_mut(name)
            .ok_or(Error::NotInObject { what: "map", name })?;
        write(map).map_err(|source| Error::Map { name, source })
    }
}

/// Removes the keys of hash map `name` that `remove` picks. Keys are collected first: a walk
/// that deletes as it goes starts over whenever its last key is gone.
fn remove_keys<K: Pod + Hash + Eq, V: Pod>(
    object: &Object,
    name: &'static str,
    remove: impl Fn(&K) -> bool,
) -> Result<()> {
    object.with_map(name, |map| {
        let mut hash = BpfHashMap::<&mut MapData, K, V>::try_from(map)?;
        let doomed: HashSet<K> = hash.keys().flatten().filter(|k| remove(k)).collect();
        for key in doomed {
            // Another process's Put may have taken it meanwhile.
            let _ = hash.remove(&key);
        }
        Ok(())
    })
}

fn remove_per_cpu_keys<K: Pod + Hash + Eq, V: Pod>(
    object: &Object,
    name: &'static str,
    remove: impl Fn(&K) -> bool,
) -> Result<()> {
    object.with_map(name, |map| {
        let mut hash = PerCpuHashMap::<&mut MapData, K, V>::try_from(map)?;
        let doomed: HashSet<K> = hash.keys().flatten().filter(|k| remove(k)).collect();
        for key in doomed {
            let _ = hash.remove(&key);
        }
        Ok(())
    })
}

/// A refused load, told apart when the capabilities were there and bpf(2) still said EPERM.
fn load_error(source: aya::EbpfError) -> Error {
    let denied = matches!(
        &source,
        aya::EbpfError::MapError(MapError::CreateError { io_error, .. })
            if io_error.raw_os_error() == Some(libc::EPERM)
    );
    match denied && Effective::read().require(&capabilities::TRACE).is_ok() {
        true => Error::LoadForbidden { source },
        false => Error::Load { source },
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

    #[test]
    fn slots_own_disjoint_pools_and_cookies() {
        let (a, b) = (super::Slot(0), super::Slot(3));
        let pools = tracer_common::MAX_POOLS;
        assert_eq!(b.first_pool(), 3 * pools);
        assert_eq!(b.local_pool(3 * pools + 2), Some(2));
        assert_eq!(b.local_pool(4 * pools), None);
        assert_eq!(a.local_pool(3 * pools), None);
        assert_eq!(b.cookie(5), u64::from(3 * tracer_common::MAX_SITES) + 5);
    }
}
