//! Reading Go binaries: the ELF layout (segments, address <-> file offset), Go's own
//! function table (pclntab, present even when stripped), the ELF symbols, the build info,
//! which function a user's Go name means (generic shape functions included), and from
//! DWARF where there is some, the fields of a struct (`dwarf`).
//!
//! The file is memory-mapped, not copied: Go binaries run to hundreds of megabytes.

mod buildinfo;
mod bytes;
pub(crate) mod calls;
pub(crate) mod dwarf;
mod generics;
mod locate;
mod names;
mod pclntab;
mod pools;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs::File,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use memmap2::Mmap;
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::error::{Error, Result};
pub use buildinfo::BuildInfo;
pub(crate) use names::is_method;
pub use names::ResolvedFunction;
use pclntab::Layout;
pub use pclntab::{Func, GoFrame, Pclntab};
pub(crate) use pools::PoolPair;

/// One function: from `.symtab`, or from pclntab when the binary is stripped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub(crate) name: String,
    /// Its entry address, as linked (before any load bias).
    pub addr: u64,
    pub(crate) size: u64,
}

/// A copy of a function that the compiler inlined into another (see
/// [`GoBinary::inlined_copies`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InlinedCopy {
    /// The function whose machine code holds the copy.
    pub(crate) host: Function,
    /// The copy's entry in the host's inline tree.
    index: usize,
    /// The function the call was written in (the host, or a function inlined into it), and
    /// where.
    pub(crate) caller: String,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
}

impl InlinedCopy {
    /// "main.handle at /src/main.go:42".
    pub(crate) fn call_site(&self) -> String {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{} at {file}:{line}", self.caller),
            (Some(file), None) => format!("{} in {file}", self.caller),
            _ => self.caller.clone(),
        }
    }
}

/// A PT_LOAD segment: what maps file bytes to virtual addresses.
#[derive(Clone, Copy, Debug)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
    executable: bool,
}

/// Where pclntab is and what its offsets are relative to.
#[derive(Clone, Debug)]
struct PclnInfo {
    layout: Layout,
    /// Address function entries are relative to (`runtime.text`).
    text_base: u64,
    /// Address of `go:func.*`, the base of funcdata offsets (1.18+).
    gofunc: Option<u64>,
}

/// Where the function names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SymbolSource {
    Symtab,
    Pclntab,
}

/// The file's bytes: mapped from disk, or owned (for tests that mutate binaries).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// A Go program's file, mapped, with its segments, functions, pclntab and build info read.
pub struct GoBinary {
    path: PathBuf,
    data: Bytes,
    pie: bool,
    segments: Vec<Segment>,
    /// Functions by address: `.symtab`'s, or pclntab's for a stripped binary.
    functions: Vec<Function>,
    by_name: HashMap<String, usize>,
    source: SymbolSource,
    pcln: Option<PclnInfo>,
    build: Option<BuildInfo>,
    /// Dictionary symbols of generic code (`main..dict.P[uint8]`) by address; `.symtab` only.
    dictionaries: HashMap<u64, String>,
    /// Address range of the runtime type descriptors, the base of their name offsets.
    types: Option<(u64, u64)>,
    /// Instantiations named by dictionaries, built on first use (it decodes all code).
    generics: OnceLock<generics::Index>,
    /// Names that exist only in inline trees, read on first need.
    inlined_only: OnceLock<BTreeSet<String>>,
}

impl GoBinary {
    /// Maps `file` and reads what pooltrace needs from it; fails unless it is an x86-64 Go
    /// program. Messages name it `path` (e.g. the target of `/proc/PID/exe`, which is the
    /// file opened).
    pub fn open(file: &Path, path: &Path) -> Result<Self> {
        let read_error = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(file).map_err(read_error)?;
        // SAFETY: the mapping is read-only; a binary rewritten under a running process is
        // replaced (new inode) by every Go build and package manager, not written in place.
        let data = unsafe { Mmap::map(&file) }.map_err(read_error)?;
        Self::from_data(Bytes::Mapped(data), path)
    }

    /// Reads a binary held in memory; `path` names it in messages.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        Self::from_data(Bytes::Owned(bytes), path)
    }

    fn from_data(data: Bytes, path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        let parsed =
            object::File::parse(&*data).map_err(|_| Error::NotElf { path: path.clone() })?;
        if parsed.format() != object::BinaryFormat::Elf {
            return Err(Error::NotElf { path });
        }
        if parsed.architecture() != object::Architecture::X86_64 {
            let machine = format!("{:?}", parsed.architecture());
            return Err(Error::WrongArchitecture { path, machine });
        }
        let segments: Vec<Segment> = parsed
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let executable = matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
                Segment { vaddr: s.address(), memsz: s.size(), offset, filesz, executable }
            })
            .collect();
        let symbols = function_symbols(&parsed);
        let dictionaries = dictionary_symbols(&parsed);
        let types = locate::types(&parsed);
        let pcln = locate::pclntab(&parsed, &data, &segments);
        let build = locate::build_info(&parsed, &data, &segments);
        let is_go =
            pcln.is_some() || build.is_some() || symbols.iter().any(|f| f.name == "runtime.main");
        if !is_go {
            return Err(Error::NotGo { path });
        }
        let pie = matches!(parsed.kind(), object::ObjectKind::Dynamic);
        drop(parsed);
        let mut binary = Self {
            path,
            data,
            pie,
            segments,
            functions: Vec::new(),
            by_name: HashMap::new(),
            source: SymbolSource::Symtab,
            pcln,
            build,
            dictionaries,
            types,
            generics: OnceLock::new(),
            inlined_only: OnceLock::new(),
        };
        let (functions, source) = if symbols.is_empty() {
            (binary.pclntab_functions(), SymbolSource::Pclntab)
        } else {
            (symbols, SymbolSource::Symtab)
        };
        if functions.is_empty() {
            return Err(Error::NoFunctions { path: binary.path });
        }
        binary.by_name = functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        binary.functions = functions;
        binary.source = source;
        Ok(binary)
    }

    /// Go's function table, when the binary has one that could be read.
    pub fn pclntab(&self) -> Option<Pclntab<'_>> {
        let info = self.pcln.as_ref()?;
        Some(Pclntab::new(
            &info.layout,
            &self.data,
            info.text_base,
            info.gofunc,
            &self.segments,
        ))
    }

    /// The pclntab format, which tells Go releases apart when build info is missing.
    pub(crate) fn pclntab_version(&self) -> Option<pclntab::Version> {
        self.pcln.as_ref().map(|info| info.layout.version)
    }

    fn pclntab_functions(&self) -> Vec<Function> {
        let Some(table) = self.pclntab() else {
            return Vec::new();
        };
        table
            .funcs()
            .filter_map(|f| {
                let name = table.name(&f)?;
                Some(Function {
                    name: name.to_owned(),
                    addr: f.entry,
                    size: f.end - f.entry,
                })
            })
            .collect()
    }

    /// For each name, at how many call sites the compiler inlined it (from pclntab's inline
    /// trees): calls that no probe on the function can see.
    pub(crate) fn inlined_sites(&self, names: &[&str]) -> Vec<usize> {
        let mut counts = vec![0; names.len()];
        let Some(table) = self.pclntab() else {
            return counts;
        };
        for f in table.funcs() {
            for call in table.inlined_calls(&f) {
                if let Some(i) = names.iter().position(|&n| n == call) {
                    counts[i] += 1;
                }
            }
        }
        counts
    }

    /// Functions that exist only inlined, by name: every call to them was inlined and the
    /// linker dropped the body, as it does for small wrappers (`GetBuffer() { return
    /// pool.Get().(*bytes.Buffer) }`). Only their inlined copies can be probed. Read from
    /// every inline tree once, on first need.
    pub(crate) fn inlined_only_names(&self) -> &BTreeSet<String> {
        self.inlined_only.get_or_init(|| {
            let Some(table) = self.pclntab() else {
                return BTreeSet::new();
            };
            let bodies: HashSet<&str> = self.functions().iter().map(|f| f.name.as_str()).collect();
            (table.funcs())
                .flat_map(|f| table.inlined_calls(&f))
                .filter(|name| !bodies.contains(name))
                .map(str::to_owned)
                .collect()
        })
    }

    /// Every copy of function `name` that the compiler inlined into another function.
    pub(crate) fn inlined_copies(&self, name: &str) -> Vec<InlinedCopy> {
        let Some(table) = self.pclntab() else {
            return Vec::new();
        };
        let mut copies = Vec::new();
        for f in table.funcs() {
            for copy in table.inlined_copies(&f) {
                if copy.function != name {
                    continue;
                }
                // The frame at the call site is the function it was written in (itself
                // perhaps inlined into `f`).
                let site = table.frames(&f, copy.call_pc).into_iter().next();
                copies.push(InlinedCopy {
                    host: Function {
                        name: table.name(&f).unwrap_or("?").to_owned(),
                        addr: f.entry,
                        size: f.end - f.entry,
                    },
                    index: copy.index,
                    caller: site.as_ref().map_or("?", |s| s.function).to_owned(),
                    file: site.as_ref().and_then(|s| s.file).map(str::to_owned),
                    line: site.and_then(|s| s.line),
                });
            }
        }
        copies
    }

    /// Whether the instruction at `pc` (in `copy.host`) belongs to the inlined copy.
    pub(crate) fn runs_inlined_copy(&self, copy: &InlinedCopy, pc: u64) -> bool {
        let Some(table) = self.pclntab() else {
            return false;
        };
        table
            .find(copy.host.addr)
            .is_some_and(|f| table.runs_inlined_copy(&f, pc, copy.index))
    }

    /// What the toolchain recorded about the build, when the binary has it.
    pub fn build_info(&self) -> Option<&BuildInfo> {
        self.build.as_ref()
    }

    /// Where function names came from.
    pub(crate) fn symbol_source(&self) -> SymbolSource {
        self.source
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, for readers (DWARF) that parse it themselves.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// The build's DWARF, inflated anew at each call (hold on to it); None without
    /// (`-ldflags=-w` leaves it out).
    pub fn dwarf(&self) -> Option<gimli::Dwarf<dwarf::Reader>> {
        dwarf::load(&self.data)
    }

    /// Whether `function`'s code loads or stores every one of `offsets` from a register
    /// (a pointer, not the stack): what a method does with its receiver's fields.
    pub fn accesses_fields(&self, function: &Function, offsets: &[u64]) -> bool {
        use iced_x86::{Decoder, DecoderOptions, OpKind, Register};
        let Some(code) = self.code(function) else {
            return false;
        };
        let mut seen = vec![false; offsets.len()];
        for instruction in Decoder::with_ip(64, code, function.addr, DecoderOptions::NONE) {
            let memory =
                (0..instruction.op_count()).any(|i| instruction.op_kind(i) == OpKind::Memory);
            let base = instruction.memory_base();
            let through_pointer = !matches!(
                base,
                Register::None | Register::RSP | Register::RBP | Register::RIP
            ) && instruction.memory_index() == Register::None;
            if !(memory && through_pointer) {
                continue;
            }
            let displacement = instruction.memory_displacement64();
            for (offset, found) in offsets.iter().zip(&mut seen) {
                *found |= *offset == displacement;
            }
        }
        seen.iter().all(|&found| found)
    }

    /// Position-independent (ET_DYN): loaded at a bias chosen by the kernel.
    pub(crate) fn is_pie(&self) -> bool {
        self.pie
    }

    /// The function with exactly this (linker) name.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.by_name.get(name).map(|&i| &self.functions[i])
    }

    /// Every function, in address order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The function whose code contains `vaddr`.
    pub fn function_at(&self, vaddr: u64) -> Option<&Function> {
        let i = self
            .functions
            .partition_point(|f| f.addr <= vaddr)
            .checked_sub(1)?;
        let f = &self.functions[i];
        (vaddr < f.addr + f.size.max(1)).then_some(f)
    }

    /// File offset of a virtual address, through the PT_LOAD segment that holds it
    /// (`vaddr - p_vaddr + p_offset`).
    pub(crate) fn file_offset(&self, vaddr: u64) -> Option<u64> {
        file_offset(&self.segments, vaddr)
    }

    /// Virtual address of a file offset; the inverse of [`Self::file_offset`].
    pub(crate) fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        locate::vaddr_of(&self.segments, offset)
    }

    /// The machine code of `function`, as the file holds it.
    pub fn code(&self, function: &Function) -> Option<&[u8]> {
        let start = usize::try_from(self.file_offset(function.addr)?).ok()?;
        let end = start.checked_add(usize::try_from(function.size).ok()?)?;
        self.data.get(start..end)
    }
}

/// File offset of `vaddr` through the segment that holds it in the file.
fn file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz.min(s.memsz))
        .map(|s| vaddr - s.vaddr + s.offset)
}

fn function_symbols(file: &object::File) -> Vec<Function> {
    let mut functions: Vec<Function> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
        .filter_map(|s| {
            let name = s.name().ok()?;
            Some(Function {
                name: name.to_owned(),
                addr: s.address(),
                size: s.size(),
            })
        })
        .collect();
    functions.sort_by_key(|f| f.addr);
    functions.dedup_by(|a, b| a.addr == b.addr && a.name == b.name);
    functions
}

/// Generic dictionaries by address: data symbols named `pkg..dict.Name[args]`.
fn dictionary_symbols(file: &object::File) -> HashMap<u64, String> {
    file.symbols()
        .filter(|s| s.kind() == SymbolKind::Data && s.is_definition())
        .filter_map(|s| Some((s.address(), s.name().ok()?.to_owned())))
        .filter(|(_, name)| name.contains("..dict."))
        .collect()
}
