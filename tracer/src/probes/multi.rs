//! One uprobe-multi link per program (Linux 6.6+): all of a program's sites in one binary
//! go live in one `BPF_LINK_CREATE`, and go away with one RCU grace period when the link
//! closes. Per-site perf-event uprobes each wait for a grace period on detach, under a
//! kernel-wide mutex: ~80 ms a site here, 5 s for 64 sites.
//!
//! The kernel takes such a link only for a program loaded for it (`expected_attach_type`
//! `BPF_TRACE_UPROBE_MULTI`). aya 0.14 can neither load one nor create the link, so this
//! module loads its own copies of pooltrace's programs, from the same object relocated
//! against the maps aya created, and speaks to the `bpf` syscall for the two commands.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::{maps::Map, Ebpf};
use aya_obj::{generated::bpf_insn, Object};

/// `bpf(2)` commands and constants from `include/uapi/linux/bpf.h`.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`: the fields this module sets and
/// those before them (the kernel takes a shorter attr and zeroes the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with its `uprobe_multi` member.
#[repr(C)]
#[derive(Default)]
struct UprobeMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);
const _: () = assert!(std::mem::size_of::<UprobeMultiLinkAttr>() == 64);

/// Copies of the named programs loaded for uprobe-multi links, by name.
pub struct MultiPrograms(HashMap<&'static str, OwnedFd>);

/// Why the programs could not be loaded for uprobe-multi links.
#[derive(Debug, thiserror::Error)]
pub enum MultiLoadError {
    /// The object could not be parsed or relocated against aya's maps.
    #[error("cannot relocate the eBPF object: {0}")]
    Relocate(String),
    /// The kernel refused the program (no uprobe-multi before Linux 6.6).
    #[error("the kernel refused {name} for uprobe-multi links")]
    Load {
        /// The program.
        name: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

impl MultiPrograms {
    /// Loads `names` from `object`, whose maps `ebpf` (loaded from the same object)
    /// created: the copies share every map with aya's programs.
    pub fn load(
        ebpf: &Ebpf,
        object: &[u8],
        names: &[&'static str],
    ) -> Result<Self, MultiLoadError> {
        let relocate = |e: &dyn std::fmt::Display| MultiLoadError::Relocate(e.to_string());
        let mut obj = Object::parse(object).map_err(|e| relocate(&e))?;
        let fds: HashMap<&str, RawFd> = ebpf
            .maps()
            .filter_map(|(name, map)| Some((name, map_fd(map)?)))
            .collect();
        let text_sections: HashSet<usize> =
            obj.functions.keys().map(|(section, _)| *section).collect();
        let definitions: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
        let maps = definitions
            .iter()
            .filter_map(|(name, map)| Some((name.as_str(), *fds.get(name.as_str())?, map)));
        obj.relocate_maps(maps, &text_sections)
            .map_err(|e| relocate(&e))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| relocate(&e))?;
        obj.sanitize_functions(aya::features());
        let license = obj.license.clone();
        let mut programs = HashMap::new();
        for &name in names {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| MultiLoadError::Relocate(format!("no program {name}")))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| MultiLoadError::Relocate(format!("no code for {name}")))?;
            let fd = load_program(name, &function.instructions, &license)
                .map_err(|source| MultiLoadError::Load { name, source })?;
            programs.insert(name, fd);
        }
        Ok(Self(programs))
    }

    /// Why a kernel whose links pass [`Self::filters_by_process`] not is not used.
    pub const THREAD_FILTER: &str = "this kernel's uprobe-multi links trace only the thread \
        whose ID is the PID (fixed in Linux 6.10 and its stable backports)";

    /// Whether a link's PID filter takes the whole process. The first kernels with these
    /// links (6.6 to 6.9, before a stable fix) compared the PID with the thread: in Go,
    /// whose pool calls run on any thread, most Gets and Puts would pass unseen. A fixed
    /// kernel refuses a negative PID (EINVAL) before it looks at the path; an unfixed one
    /// looks at the path first and fails otherwise.
    pub fn filters_by_process(&self) -> bool {
        let Some(&name) = self.0.keys().next() else {
            return false;
        };
        let probe = self.attach(name, Path::new("/"), &[0], &[0], u32::MAX);
        matches!(probe, Err(error) if error.raw_os_error() == Some(libc::EINVAL))
    }

    /// Attaches program `name` at every `offset` of the binary at `target`, with the
    /// matching cookie, for process `pid` only. The sites go away when the link is dropped.
    pub fn attach(
        &self,
        name: &str,
        target: &Path,
        offsets: &[u64],
        cookies: &[u64],
        pid: u32,
    ) -> io::Result<OwnedFd> {
        let program = self
            .0
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if offsets.len() != cookies.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let path = CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let attr = UprobeMultiLinkAttr {
            prog_fd: program.as_fd().as_raw_fd() as u32,
            attach_type: BPF_TRACE_UPROBE_MULTI,
            path: path.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            cookies: cookies.as_ptr() as u64,
            cnt: offsets.len() as u32,
            pid,
            ..Default::default()
        };
        bpf(BPF_LINK_CREATE, &attr)
    }
}

fn load_program(name: &str, instructions: &[bpf_insn], license: &CString) -> io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    for (to, from) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from;
    }
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: instructions.len() as u32,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_LOAD, &attr)
}

/// Runs a `bpf(2)` command that returns a new descriptor.
fn bpf<T>(command: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, initialised `bpf_attr` prefix of its own size, and every
    // pointer in it refers to memory that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    match fd {
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        0.. => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The descriptor of one of aya's maps, for the map types pooltrace's object declares.
fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data) => data,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}
