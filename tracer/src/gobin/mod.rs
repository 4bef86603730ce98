//! Reading Go binaries: the ELF layout (segments, address <-> file offset), the function
//! symbols, and which function a user's Go name means (generic shape functions included).
//!
//! The file is memory-mapped, not copied: Go binaries run to hundreds of megabytes.

mod names;

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use memmap2::Mmap;
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::error::{Error, Result};
pub use names::{is_method, ResolvedFunction};

/// One function symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

/// A PT_LOAD segment: what maps file bytes to virtual addresses.
#[derive(Clone, Copy, Debug)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
}

pub struct GoBinary {
    path: PathBuf,
    data: Mmap,
    pie: bool,
    segments: Vec<Segment>,
    /// Sorted by address.
    functions: Vec<Function>,
    by_name: HashMap<String, usize>,
}

impl GoBinary {
    /// Maps `file` and reads what pooltrace needs from it; fails unless it is an x86-64 Go
    /// program with a symbol table. Messages name it `path` (e.g. the target of
    /// `/proc/PID/exe`, which is the file opened).
    pub fn open(file: &Path, path: &Path) -> Result<Self> {
        let read_error = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(file).map_err(read_error)?;
        // SAFETY: the mapping is read-only; a binary rewritten under a running process is
        // replaced (new inode) by every Go build and package manager, not written in place.
        let data = unsafe { Mmap::map(&file) }.map_err(read_error)?;
        let parsed = object::File::parse(&*data).map_err(|_| Error::NotElf {
            path: path.to_path_buf(),
        })?;
        if parsed.format() != object::BinaryFormat::Elf {
            return Err(Error::NotElf {
                path: path.to_path_buf(),
            });
        }
        if parsed.architecture() != object::Architecture::X86_64 {
            return Err(Error::WrongArchitecture {
                path: path.to_path_buf(),
                machine: format!("{:?}", parsed.architecture()),
            });
        }
        if !is_go(&parsed) {
            return Err(Error::NotGo {
                path: path.to_path_buf(),
            });
        }
        let functions = function_symbols(&parsed);
        if functions.is_empty() {
            return Err(Error::Stripped {
                path: path.to_path_buf(),
            });
        }
        let by_name = functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let segments = parsed
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                Segment {
                    vaddr: s.address(),
                    memsz: s.size(),
                    offset,
                    filesz,
                }
            })
            .collect();
        let pie = matches!(parsed.kind(), object::ObjectKind::Dynamic);
        drop(parsed);
        Ok(Self {
            path: path.to_path_buf(),
            data,
            pie,
            segments,
            functions,
            by_name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, for readers (DWARF) that parse it themselves.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Position-independent (ET_DYN): loaded at a bias chosen by the kernel.
    pub fn is_pie(&self) -> bool {
        self.pie
    }

    pub fn function(&self, name: &str) -> Option<&Function> {
        self.by_name.get(name).map(|&i| &self.functions[i])
    }

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
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz.min(s.memsz))
            .map(|s| vaddr - s.vaddr + s.offset)
    }

    /// Virtual address of a file offset; the inverse of [`Self::file_offset`].
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset < s.offset + s.filesz)
            .map(|s| offset - s.offset + s.vaddr)
    }

    /// The machine code of `function`, as the file holds it.
    pub fn code(&self, function: &Function) -> Option<&[u8]> {
        let start = usize::try_from(self.file_offset(function.addr)?).ok()?;
        let end = start.checked_add(usize::try_from(function.size).ok()?)?;
        self.data.get(start..end)
    }
}

fn is_go(file: &object::File) -> bool {
    const GO_SECTIONS: [&str; 3] = [".gopclntab", ".data.rel.ro.gopclntab", ".go.buildinfo"];
    GO_SECTIONS
        .iter()
        .any(|name| file.section_by_name(name).is_some())
        || file.symbols().any(|s| s.name() == Ok("runtime.main"))
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
