//! pclntab's records as the Go linker writes them: a decoder per layout, or for `_func` one
//! table of field offsets per layout, chosen by an exhaustive `match` on [`Version`], so a
//! new layout is a new variant and the compiler names every place that must learn it.
//!
//! Layouts are from Go's runtime/symtab.go, runtime/symtabinl.go and
//! cmd/link/internal/ld/pcln.go. Offsets are typed by what they index: a name offset, a
//! pctab offset and a functab offset are all small integers that would read garbage if
//! swapped. Decoders take the bytes they index and bounds-check every read.

use crate::gobin::bytes::{i32_at, u32_at, u64_at, uvarint};

/// The pclntab layouts. What differs between them is asked through exhaustive matches,
/// never by comparing versions, so a new variant makes the compiler list every question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 on.
    Go120,
}

/// Each layout's magic, the first word of `pcHeader` (Go's internal/abi/symtab.go). The one
/// place they are written; Go 1.2's 0xfffffffb is not read.
const MAGICS: [(u32, Version); 3] = [
    (0xffff_fffa, Version::Go116),
    (0xffff_fff0, Version::Go118),
    (0xffff_fff1, Version::Go120),
];

impl Version {
    pub fn from_magic(magic: u32) -> Option<Self> {
        MAGICS
            .iter()
            .find(|&&(m, _)| m == magic)
            .map(|&(_, version)| version)
    }

    /// Whether funcdata are offsets from `go:func.*` (so the reader needs its address)
    /// rather than addresses.
    pub fn funcdata_from_gofunc(self) -> bool {
        match self {
            Self::Go116 => false,
            Self::Go118 | Self::Go120 => true,
        }
    }

    /// Whether the binary was built by the unified IR compiler (Go 1.20 on), which passes a
    /// generic method's dictionary after its receiver and does not start dictionaries with
    /// the type arguments. Asked when the build info is missing.
    pub fn unified_ir(self) -> bool {
        match self {
            Self::Go116 | Self::Go118 => false,
            Self::Go120 => true,
        }
    }
}

/// The pcdata table mapping each PC to its inline tree entry (`abi.PCDATA_InlTreeIndex`).
pub const PCDATA_INL_TREE_INDEX: u32 = 2;
/// The funcdata slot of a function's inline tree (`abi.FUNCDATA_InlTree`).
const FUNCDATA_INL_TREE: u32 = 3;

/// An offset into funcnametab: where a function's name starts (`nameOff`, signed in Go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameOff(i32);

impl NameOff {
    pub fn index(self) -> Option<usize> {
        usize::try_from(self.0).ok()
    }
}

/// An offset into pctab where a pc-value table starts; 0 means "no table".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcTabOff(u32);

/// An offset into the functab area where a function's `_func` record starts (`funcoff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncOff(usize);

impl FuncOff {
    pub fn index(self) -> usize {
        self.0
    }
}

/// The first cutab slot of a compilation unit's file list (`cuOffset`, in 4-byte slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CuIndex(u32);

/// An offset into filetab: where a file's name starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOff(u32);

impl FileOff {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A code address relative to the text base (functab's `entryoff`, 1.18 on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextOffset(u32);

/// A code address relative to its function's entry (an inline tree's `parentPc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryOffset(u32);

impl EntryOffset {
    pub fn vaddr(self, entry: u64) -> Option<u64> {
        entry.checked_add(u64::from(self.0))
    }

    pub fn get(self) -> u64 {
        u64::from(self.0)
    }
}

/// `pcHeader`: the table's geometry. Offsets are from the header's start.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: Version,
    /// The instruction size unit of pc-value tables (`minLC`).
    pub quantum: u8,
    pub nfunc: u64,
    /// `textStart`, or 0 where the layout has none.
    pub text_start: u64,
    pub funcnametab: u64,
    pub cutab: u64,
    pub filetab: u64,
    pub pctab: u64,
    pub functab: u64,
}

impl Header {
    /// Reads the header at the start of `table`; refuses 32-bit and malformed ones.
    pub fn read(table: &[u8]) -> Option<Self> {
        let version = Version::from_magic(u32_at(table, 0)?)?;
        let (pad, quantum, ptr_size) = (table.get(4..6)?, *table.get(6)?, *table.get(7)?);
        if pad != [0, 0] || ptr_size != 8 || !matches!(quantum, 1 | 2 | 4) {
            return None;
        }
        match version {
            Version::Go116 => Self::read_go116(table, quantum),
            Version::Go118 | Version::Go120 => Self::read_go118(table, version, quantum),
        }
    }

    /// Go 1.16-1.17: nfunc, nfiles, then the five table offsets.
    fn read_go116(table: &[u8], quantum: u8) -> Option<Self> {
        let word = |i: usize| u64_at(table, 8 + 8 * i);
        Some(Self {
            version: Version::Go116,
            quantum,
            nfunc: word(0)?,
            text_start: 0,
            funcnametab: word(2)?,
            cutab: word(3)?,
            filetab: word(4)?,
            pctab: word(5)?,
            functab: word(6)?,
        })
    }

    /// Go 1.18 on: nfunc, nfiles, textStart, then the five table offsets. From 1.20 the
    /// file holds 0 for textStart (the runtime uses moduledata's), and from 1.26 the slot
    /// is kept but unnamed; reading it as 0 sends callers to the other text bases.
    fn read_go118(table: &[u8], version: Version, quantum: u8) -> Option<Self> {
        let word = |i: usize| u64_at(table, 8 + 8 * i);
        Some(Self {
            version,
            quantum,
            nfunc: word(0)?,
            text_start: word(2)?,
            funcnametab: word(3)?,
            cutab: word(4)?,
            filetab: word(5)?,
            pctab: word(6)?,
            functab: word(7)?,
        })
    }
}

/// Where a function starts, as a functab row gives it.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    /// An absolute address (1.16-1.17).
    Vaddr(u64),
    Text(TextOffset),
}

impl Entry {
    pub fn vaddr(self, text_base: u64) -> Option<u64> {
        match self {
            Self::Vaddr(vaddr) => Some(vaddr),
            Self::Text(TextOffset(off)) => text_base.checked_add(u64::from(off)),
        }
    }
}

/// One functab row: a function's entry and where its `_func` record is. There are
/// nfunc + 1 rows; the last one's entry is the end of the last function.
#[derive(Clone, Copy, Debug)]
pub struct FunctabRow {
    pub entry: Entry,
    pub func: FuncOff,
}

impl FunctabRow {
    /// Bytes per row.
    pub fn size(version: Version) -> usize {
        match version {
            Version::Go116 => 16,
            Version::Go118 | Version::Go120 => 8,
        }
    }

    /// Row `index` of `functab`.
    pub fn read(functab: &[u8], index: usize, version: Version) -> Option<Self> {
        let at = index.checked_mul(Self::size(version))?;
        match version {
            Version::Go116 => Self::read_go116(functab, at),
            Version::Go118 | Version::Go120 => Self::read_go118(functab, at),
        }
    }

    /// Go 1.16-1.17: entry address, funcoff; 8 bytes each.
    fn read_go116(functab: &[u8], at: usize) -> Option<Self> {
        Some(Self {
            entry: Entry::Vaddr(u64_at(functab, at)?),
            func: FuncOff(usize::try_from(u64_at(functab, at.checked_add(8)?)?).ok()?),
        })
    }

    /// Go 1.18 on: entryoff from the text base, funcoff; 4 bytes each.
    fn read_go118(functab: &[u8], at: usize) -> Option<Self> {
        Some(Self {
            entry: Entry::Text(TextOffset(u32_at(functab, at)?)),
            func: FuncOff(u32_at(functab, at.checked_add(4)?)? as usize),
        })
    }
}

/// A function's funcdata slots, which follow its pcdata offsets.
#[derive(Clone, Copy, Debug)]
enum FuncdataSlots {
    /// 8-byte addresses, 0 for none (1.16-1.17).
    Addresses { at: usize, count: u8 },
    /// 4-byte offsets from `go:func.*`, all ones for none (1.18 on).
    GoFuncOffsets { at: usize, count: u8 },
}

/// Where a funcdata item is.
#[derive(Clone, Copy, Debug)]
pub enum Funcdata {
    Vaddr(u64),
    /// Relative to `go:func.*`.
    GoFuncOffset(u32),
}

/// The `_func` fields pooltrace reads, and where its variable-length arrays are.
#[derive(Clone, Copy, Debug)]
pub struct FuncRecord {
    pub name: NameOff,
    pub pcfile: PcTabOff,
    pub pcln: PcTabOff,
    pub cu: CuIndex,
    /// File offset of `npcdata` pctab offsets, right after the fixed fields.
    pcdata_at: usize,
    npcdata: u32,
    funcdata: FuncdataSlots,
}

/// Where `_func`'s fields sit in one layout: byte offsets into the fixed part of the record.
#[derive(Clone, Copy, Debug)]
struct FuncLayout {
    /// Size of the fixed fields; the pcdata offsets follow them.
    size: usize,
    name: usize,
    pcfile: usize,
    pcln: usize,
    npcdata: usize,
    cu: usize,
    nfuncdata: usize,
    /// Funcdata are 8-byte addresses, 8-aligned (1.16-1.17), rather than 4-byte offsets
    /// from `go:func.*`.
    funcdata_addresses: bool,
}

impl FuncLayout {
    fn of(version: Version) -> Self {
        match version {
            // entry (8), nameOff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset,
            // funcID, flag, pad, nfuncdata.
            Version::Go116 => Self {
                size: 44,
                name: 8,
                pcfile: 24,
                pcln: 28,
                npcdata: 32,
                cu: 36,
                nfuncdata: 43,
                funcdata_addresses: true,
            },
            // entryOff (4), then as 1.16.
            Version::Go118 => Self {
                size: 40,
                name: 4,
                pcfile: 20,
                pcln: 24,
                npcdata: 28,
                cu: 32,
                nfuncdata: 39,
                funcdata_addresses: false,
            },
            // As 1.18 with startLine (4) after cuOffset.
            Version::Go120 => Self {
                size: 44,
                nfuncdata: 43,
                ..Self::of(Version::Go118)
            },
        }
    }
}

impl FuncRecord {
    /// The record at file offset `at`.
    pub fn read(data: &[u8], at: usize, version: Version) -> Option<Self> {
        let layout = FuncLayout::of(version);
        let fixed = data.get(at..at.checked_add(layout.size)?)?;
        let npcdata = u32_at(fixed, layout.npcdata)?;
        let pcdata_at = at.checked_add(layout.size)?;
        let slots_at = pcdata_end(pcdata_at, npcdata)?;
        let count = *fixed.get(layout.nfuncdata)?;
        let funcdata = if layout.funcdata_addresses {
            FuncdataSlots::Addresses {
                at: slots_at.checked_add(7)? & !7,
                count,
            }
        } else {
            FuncdataSlots::GoFuncOffsets {
                at: slots_at,
                count,
            }
        };
        Some(Self {
            name: NameOff(i32_at(fixed, layout.name)?),
            pcfile: PcTabOff(u32_at(fixed, layout.pcfile)?),
            pcln: PcTabOff(u32_at(fixed, layout.pcln)?),
            cu: CuIndex(u32_at(fixed, layout.cu)?),
            pcdata_at,
            npcdata,
            funcdata,
        })
    }

    /// Where pcdata table `table` starts in pctab, if the function has that table.
    pub fn pcdata(&self, data: &[u8], table: u32) -> Option<PcTabOff> {
        if table >= self.npcdata {
            return None;
        }
        let at = self.pcdata_at.checked_add(4 * table as usize)?;
        u32_at(data, at).map(PcTabOff)
    }

    /// Where the function's inline tree is, if it has one.
    pub fn inline_tree(&self, data: &[u8]) -> Option<Funcdata> {
        self.funcdata(data, FUNCDATA_INL_TREE)
    }

    fn funcdata(&self, data: &[u8], slot: u32) -> Option<Funcdata> {
        match self.funcdata {
            FuncdataSlots::Addresses { at, count } => {
                if slot >= u32::from(count) {
                    return None;
                }
                let addr = u64_at(data, at.checked_add(8 * slot as usize)?)?;
                (addr != 0).then_some(Funcdata::Vaddr(addr))
            }
            FuncdataSlots::GoFuncOffsets { at, count } => {
                if slot >= u32::from(count) {
                    return None;
                }
                let off = u32_at(data, at.checked_add(4 * slot as usize)?)?;
                (off != u32::MAX).then_some(Funcdata::GoFuncOffset(off))
            }
        }
    }
}

/// The file offset just past `npcdata` pcdata offsets starting at `at`.
fn pcdata_end(at: usize, npcdata: u32) -> Option<usize> {
    at.checked_add((npcdata as usize).checked_mul(4)?)
}

/// The filetab offset of file `index` of compilation unit `cu`.
pub fn file_off(cutab: &[u8], cu: CuIndex, index: i32) -> Option<FileOff> {
    let slot = (cu.0 as usize).checked_add(usize::try_from(index).ok()?)?;
    u32_at(cutab, slot.checked_mul(4)?).map(FileOff)
}

/// An entry of an inline tree: one call the compiler inlined.
#[derive(Clone, Copy, Debug)]
pub struct InlineEntry {
    /// The function inlined.
    pub name: NameOff,
    /// An instruction standing for the call site.
    pub parent_pc: EntryOffset,
}

impl InlineEntry {
    /// Entry `index` of the tree at file offset `tree`.
    pub fn read(data: &[u8], tree: usize, index: usize, version: Version) -> Option<Self> {
        match version {
            Version::Go116 | Version::Go118 => Self::read_go116(data, tree, index),
            Version::Go120 => Self::read_go120(data, tree, index),
        }
    }

    /// Go 1.16-1.19, 20 bytes: parent (2), funcID, pad, file, line, func_ @12, parentPc @16.
    fn read_go116(data: &[u8], tree: usize, index: usize) -> Option<Self> {
        let at = tree.checked_add(index.checked_mul(20)?)?;
        Self::with_fields(data, at, 12, 16)
    }

    /// Go 1.20 on, 16 bytes: funcID, pad (3), nameOff @4, parentPc @8, startLine.
    fn read_go120(data: &[u8], tree: usize, index: usize) -> Option<Self> {
        let at = tree.checked_add(index.checked_mul(16)?)?;
        Self::with_fields(data, at, 4, 8)
    }

    fn with_fields(data: &[u8], at: usize, name: usize, parent_pc: usize) -> Option<Self> {
        Some(Self {
            name: NameOff(i32_at(data, at.checked_add(name)?)?),
            parent_pc: EntryOffset(u32::try_from(i32_at(data, at.checked_add(parent_pc)?)?).ok()?),
        })
    }
}

/// A pc-value table as (value, end pc) runs: zig-zag value deltas and pc deltas in
/// instruction quanta, ended by a zero value delta. Every step moves forward through the
/// table, so iteration ends at the table's end at the latest.
pub struct PcValues<'a> {
    table: &'a [u8],
    at: usize,
    value: i64,
    pc: u64,
    quantum: u64,
}

impl<'a> PcValues<'a> {
    /// The table at `off` in `pctab` of the function starting at `entry`; `None` for 0,
    /// which means the function has none.
    pub fn new(pctab: &'a [u8], off: PcTabOff, entry: u64, quantum: u8) -> Option<Self> {
        if off.0 == 0 {
            return None;
        }
        Some(Self {
            table: pctab.get(off.0 as usize..)?,
            at: 0,
            value: -1,
            pc: entry,
            quantum: u64::from(quantum),
        })
    }
}

impl Iterator for PcValues<'_> {
    type Item = (i64, u64);

    fn next(&mut self) -> Option<(i64, u64)> {
        let (value_delta, used) = uvarint(self.table.get(self.at..)?)?;
        if value_delta == 0 && self.at > 0 {
            return None;
        }
        self.at += used;
        let delta = if value_delta & 1 != 0 {
            -((value_delta >> 1) as i64) - 1
        } else {
            (value_delta >> 1) as i64
        };
        self.value = self.value.checked_add(delta)?;
        let (pc_delta, used) = uvarint(self.table.get(self.at..)?)?;
        self.at += used;
        self.pc = self.pc.checked_add(pc_delta.checked_mul(self.quantum)?)?;
        Some((self.value, self.pc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout after `version`. Exhaustive, so a new variant stops the tests compiling
    /// until it joins the chain (and `every_layout_has_a_magic` checks its row).
    fn later(version: Version) -> Option<Version> {
        match version {
            Version::Go116 => Some(Version::Go118),
            Version::Go118 => Some(Version::Go120),
            Version::Go120 => None,
        }
    }

    fn put32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn every_layout_has_a_magic() {
        let mut version = Some(Version::Go116);
        while let Some(v) = version {
            let (magic, _) = MAGICS.iter().find(|&&(_, w)| w == v).expect("a row");
            assert_eq!(Version::from_magic(*magic), Some(v));
            version = later(v);
        }
        assert_eq!(Version::from_magic(0xffff_fffb), None, "Go 1.2 is not read");
    }

    fn header(version: Version, words: &[u64]) -> Vec<u8> {
        let magic = MAGICS.iter().find(|&&(_, v)| v == version).unwrap().0;
        let mut bytes = vec![0u8; 8 + 8 * words.len()];
        put32(&mut bytes, 0, magic);
        bytes[6] = 1;
        bytes[7] = 8;
        for (i, &word) in words.iter().enumerate() {
            put64(&mut bytes, 8 + 8 * i, word);
        }
        bytes
    }

    #[test]
    fn headers_put_text_start_before_the_offsets_from_go_1_18() {
        let old = Header::read(&header(Version::Go116, &[7, 9, 10, 11, 12, 13, 14])).unwrap();
        assert_eq!((old.nfunc, old.text_start), (7, 0));
        assert_eq!(
            (
                old.funcnametab,
                old.cutab,
                old.filetab,
                old.pctab,
                old.functab
            ),
            (10, 11, 12, 13, 14)
        );
        for version in [Version::Go118, Version::Go120] {
            let words = [7, 9, 0x40_1000, 10, 11, 12, 13, 14];
            let new = Header::read(&header(version, &words)).unwrap();
            assert_eq!(
                (new.version, new.nfunc, new.text_start),
                (version, 7, 0x40_1000)
            );
            assert_eq!(
                (
                    new.funcnametab,
                    new.cutab,
                    new.filetab,
                    new.pctab,
                    new.functab
                ),
                (10, 11, 12, 13, 14)
            );
        }
        // Cut short: the last offset is missing.
        assert!(Header::read(&header(Version::Go118, &[7, 9, 0, 10, 11, 12, 13])).is_none());
    }

    #[test]
    fn functab_rows_hold_addresses_then_text_offsets() {
        let mut old = vec![0u8; 32];
        put64(&mut old, 16, 0x40_2000);
        put64(&mut old, 24, 0x88);
        let row = FunctabRow::read(&old, 1, Version::Go116).unwrap();
        assert_eq!(row.entry.vaddr(0x40_1000), Some(0x40_2000));
        assert_eq!(row.func.index(), 0x88);
        assert!(FunctabRow::read(&old, 2, Version::Go116).is_none());

        let mut new = vec![0u8; 16];
        put32(&mut new, 8, 0x20);
        put32(&mut new, 12, 0x44);
        let row = FunctabRow::read(&new, 1, Version::Go120).unwrap();
        assert_eq!(row.entry.vaddr(0x40_1000), Some(0x40_1020));
        assert_eq!(row.func.index(), 0x44);
        assert!(FunctabRow::read(&new, 2, Version::Go118).is_none());
    }

    /// A `_func` record of `version` with distinct field values, two pcdata tables and four
    /// funcdata slots, the inline tree's being `tree`.
    fn func_record(version: Version, tree: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 128];
        let (shift, size, nfuncdata_at) = match version {
            Version::Go116 => (4, 44, 43),
            Version::Go118 => (0, 40, 39),
            Version::Go120 => (0, 44, 43),
        };
        put32(&mut bytes, 4 + shift, 0x11); // nameOff
        put32(&mut bytes, 20 + shift, 0x22); // pcfile
        put32(&mut bytes, 24 + shift, 0x33); // pcln
        put32(&mut bytes, 28 + shift, 2); // npcdata
        put32(&mut bytes, 32 + shift, 0x44); // cuOffset
        bytes[nfuncdata_at] = 4;
        put32(&mut bytes, size, 0x55);
        put32(&mut bytes, size + 4, 0x66);
        let funcdata = size + 8;
        match version {
            // 8-aligned: 44 + 8 = 52 rounds up to 56.
            Version::Go116 => put64(&mut bytes, 56 + 8 * 3, tree),
            Version::Go118 | Version::Go120 => put32(&mut bytes, funcdata + 4 * 3, tree as u32),
        }
        bytes
    }

    #[test]
    fn func_records_are_read_at_each_layouts_offsets() {
        let mut version = Some(Version::Go116);
        while let Some(v) = version {
            let data = func_record(v, 0x77);
            let f = FuncRecord::read(&data, 0, v).unwrap();
            assert_eq!(f.name.index(), Some(0x11), "{v:?}");
            assert_eq!(
                (f.pcfile, f.pcln),
                (PcTabOff(0x22), PcTabOff(0x33)),
                "{v:?}"
            );
            assert_eq!(f.cu, CuIndex(0x44), "{v:?}");
            assert_eq!(f.pcdata(&data, 1), Some(PcTabOff(0x66)), "{v:?}");
            assert_eq!(f.pcdata(&data, 2), None, "{v:?}: only two tables");
            let tree = match f.inline_tree(&data) {
                Some(Funcdata::Vaddr(addr)) => addr,
                Some(Funcdata::GoFuncOffset(off)) => u64::from(off),
                None => panic!("{v:?}: no inline tree"),
            };
            assert_eq!(tree, 0x77, "{v:?}");
            assert!(
                FuncRecord::read(&data[..30], 0, v).is_none(),
                "{v:?}: cut short"
            );
            version = later(v);
        }
    }

    #[test]
    fn missing_funcdata_read_as_none() {
        let absent = |v: Version| match v {
            Version::Go116 => 0,
            Version::Go118 | Version::Go120 => u64::from(u32::MAX),
        };
        for v in [Version::Go116, Version::Go118, Version::Go120] {
            let data = func_record(v, absent(v));
            let f = FuncRecord::read(&data, 0, v).unwrap();
            assert!(f.inline_tree(&data).is_none(), "{v:?}");
        }
    }

    #[test]
    fn inline_entries_shrank_in_go_1_20() {
        let mut old = vec![0u8; 40];
        put32(&mut old, 20 + 12, 0x99);
        put32(&mut old, 20 + 16, 0x30);
        let entry = InlineEntry::read(&old, 0, 1, Version::Go118).unwrap();
        assert_eq!(entry.name.index(), Some(0x99));
        assert_eq!(entry.parent_pc.vaddr(0x1000), Some(0x1030));

        let mut new = vec![0u8; 32];
        put32(&mut new, 16 + 4, 0x99);
        put32(&mut new, 16 + 8, 0x30);
        let entry = InlineEntry::read(&new, 0, 1, Version::Go120).unwrap();
        assert_eq!(entry.name.index(), Some(0x99));
        assert_eq!(entry.parent_pc.get(), 0x30);

        put32(&mut new, 16 + 8, u32::MAX);
        assert!(
            InlineEntry::read(&new, 0, 1, Version::Go120).is_none(),
            "a negative parentPc is refused"
        );
        assert!(InlineEntry::read(&new, 0, 2, Version::Go120).is_none());
    }

    #[test]
    fn pc_value_tables_decode_zig_zag_runs() {
        // At offset 1: value -1 + 4 = 3 for 8 quanta, then 3 - 2 = 1 for 2, then the end.
        let pctab = [0xaa, 8, 8, 3, 2, 0];
        let runs: Vec<_> = PcValues::new(&pctab, PcTabOff(1), 0x1000, 4)
            .unwrap()
            .collect();
        assert_eq!(runs, [(3, 0x1020), (1, 0x1028)]);
        assert!(PcValues::new(&pctab, PcTabOff(0), 0x1000, 1).is_none());
        assert!(PcValues::new(&pctab, PcTabOff(99), 0x1000, 1).is_none());
    }
}
