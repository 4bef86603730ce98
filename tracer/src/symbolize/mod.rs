//! Turning runtime addresses of the traced process into Go frames: function, file and line,
//! with inlined calls expanded. Go code is read from pclntab, which even stripped binaries
//! carry; DWARF (loaded only if pclntab has no answer, as for cgo's C code) and then the ELF
//! symbols (`function+offset`) are the fallbacks.

use std::{cell::OnceCell, collections::HashMap};

use addr2line::Context;
use serde::{Deserialize, Serialize};

use crate::{
    gobin::{
        dwarf::{self, Reader},
        Function, GoBinary,
    },
    process::Process,
};

/// One frame of a call stack, innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Runtime address (the instruction, or the return address for outer frames).
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub address: u64,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// This call was inlined into the next frame: it has no frame of its own at run time.
    pub inlined: bool,
}

fn hex<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{value:#x}"))
}

/// An address as [`hex`] writes it (`pooltrace top --agent` reads the agent's reports).
fn from_hex<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let text = String::deserialize(deserializer)?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(serde::de::Error::custom)
}

/// Whether an address is where execution is (the probed instruction) or where it will
/// return to. A return address points past its call, possibly onto the next line, so it is
/// looked up one byte earlier, as Go's own tracebacks do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    Executing,
    ReturnAddress,
}

/// What a report asks of a symbolizer, for addresses of one process. Reports are built from
/// snapshots alone, so tests build them with a symbolizer that needs no binary or process.
pub trait Symbolize {
    /// The frames at one runtime address: more than one when calls were inlined there.
    fn frames(&mut self, address: u64, kind: AddressKind) -> Vec<Frame>;
    /// The runtime entry address of `function`, given a runtime address inside it.
    fn runtime_entry(&self, inside: u64, function: &Function) -> Option<u64>;
    /// The link-time address of a runtime address in the executable, `None` outside it.
    fn link_address(&self, address: u64) -> Option<u64>;
}

/// A [`Symbolizer`] bound to the process whose addresses it is given.
pub struct InProcess<'a, 'b> {
    pub symbolizer: &'a mut Symbolizer<'b>,
    pub process: &'a Process,
}

impl Symbolize for InProcess<'_, '_> {
    fn frames(&mut self, address: u64, kind: AddressKind) -> Vec<Frame> {
        self.symbolizer.frames(self.process, address, kind)
    }

    fn runtime_entry(&self, inside: u64, function: &Function) -> Option<u64> {
        self.symbolizer
            .runtime_entry(self.process, inside, function)
    }

    fn link_address(&self, address: u64) -> Option<u64> {
        self.symbolizer.link_address(self.process, address)
    }
}

pub struct Symbolizer<'a> {
    binary: &'a GoBinary,
    /// Inflating Go's compressed DWARF takes a while on big binaries: done on first need.
    dwarf: OnceCell<Option<Context<Reader>>>,
    cache: HashMap<(u64, bool), Vec<Frame>>,
}

impl<'a> Symbolizer<'a> {
    pub fn new(binary: &'a GoBinary) -> Self {
        Self {
            binary,
            dwarf: OnceCell::new(),
            cache: HashMap::new(),
        }
    }

    /// The frames at one runtime address: more than one when calls were inlined there.
    pub fn frames(&mut self, process: &Process, address: u64, kind: AddressKind) -> Vec<Frame> {
        let key = (address, kind == AddressKind::ReturnAddress);
        if let Some(frames) = self.cache.get(&key) {
            return frames.clone();
        }
        let frames = self.lookup(process, address, kind);
        self.cache.insert(key, frames.clone());
        frames
    }

    /// The runtime entry address of `function`, given a runtime address inside it (the same
    /// load bias applies to both; it is not 0 for PIE).
    pub fn runtime_entry(
        &self,
        process: &Process,
        inside: u64,
        function: &Function,
    ) -> Option<u64> {
        let vaddr = self.vaddr(process, inside)?;
        Some(inside - vaddr.checked_sub(function.addr)?)
    }

    /// The link-time address of a runtime address in the executable, `None` outside it.
    pub fn link_address(&self, process: &Process, address: u64) -> Option<u64> {
        self.vaddr(process, address)
    }

    /// The link-time address of a runtime address in the executable.
    fn vaddr(&self, process: &Process, address: u64) -> Option<u64> {
        match process.mapping_at(address) {
            Some(mapping) if process.is_exe(mapping) => self
                .binary
                .vaddr_of_offset(address - mapping.start + mapping.offset),
            Some(_) => None,
            // No mapping was read (a program that exited at once): a non-PIE executable is
            // loaded where it was linked, so its addresses need no translation.
            None => (!self.binary.is_pie() && self.binary.function_at(address).is_some())
                .then_some(address),
        }
    }

    fn lookup(&self, process: &Process, address: u64, kind: AddressKind) -> Vec<Frame> {
        let unknown = |function: String| {
            vec![Frame {
                address,
                function,
                file: None,
                line: None,
                inlined: false,
            }]
        };
        if let Some(mapping) = process.mapping_at(address).filter(|m| !process.is_exe(m)) {
            let library = mapping.path.rsplit('/').next().unwrap_or(&mapping.path);
            let file_offset = address - mapping.start + mapping.offset;
            return unknown(format!("[{library}]+{file_offset:#x}"));
        }
        let Some(vaddr) = self.vaddr(process, address) else {
            return unknown(format!("{address:#x}"));
        };
        let probe = match kind {
            AddressKind::Executing => vaddr,
            AddressKind::ReturnAddress => vaddr.saturating_sub(1),
        };
        let mut frames = self.pclntab_frames(probe, address);
        if frames.is_empty() {
            frames = self.dwarf_frames(probe, address);
        }
        if frames.is_empty() {
            frames = match self.binary.function_at(probe) {
                Some(f) => unknown(format!("{}+{:#x}", f.name, vaddr - f.addr)),
                None => unknown(format!("{address:#x}")),
            };
        }
        frames
    }

    fn pclntab_frames(&self, probe: u64, address: u64) -> Vec<Frame> {
        let Some(table) = self.binary.pclntab() else {
            return Vec::new();
        };
        let Some(function) = table.find(probe) else {
            return Vec::new();
        };
        table
            .frames(&function, probe)
            .into_iter()
            .map(|f| Frame {
                address,
                function: f.function.to_owned(),
                file: f.file.map(str::to_owned),
                line: f.line,
                inlined: f.inlined,
            })
            .collect()
    }

    fn dwarf_frames(&self, probe: u64, address: u64) -> Vec<Frame> {
        let Some(dwarf) = self.dwarf.get_or_init(|| load_dwarf(self.binary.data())) else {
            return Vec::new();
        };
        let Ok(mut iter) = dwarf.find_frames(probe).skip_all_loads() else {
            return Vec::new();
        };
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = iter.next() {
            let Some(function) = frame.function.as_ref().and_then(|f| f.raw_name().ok()) else {
                continue;
            };
            frames.push(Frame {
                address,
                function: function.into_owned(),
                file: frame
                    .location
                    .as_ref()
                    .and_then(|l| l.file)
                    .map(str::to_owned),
                line: frame.location.as_ref().and_then(|l| l.line),
                inlined: true,
            });
        }
        if let Some(outermost) = frames.last_mut() {
            outermost.inlined = false;
        }
        frames
    }
}

/// The line tables of the binary's DWARF, read once.
fn load_dwarf(data: &[u8]) -> Option<Context<Reader>> {
    Context::from_dwarf(dwarf::load(data)?).ok()
}
