//! Go's own function table, `pclntab`: every Go binary has it, stripped or not, because the
//! runtime needs it for tracebacks and garbage collection.
//!
//! Formats read: Go 1.16-1.17 (magic 0xfffffffa), 1.18-1.19 (0xfffffff0), 1.20+ (0xfffffff1),
//! as laid out in Go's runtime/symtab.go and cmd/link/internal/ld/pcln.go. The table is read
//! in place from the mapped file; every read is bounds-checked, so a corrupt or hostile file
//! yields `None`, never a panic, and no allocation is sized by a value read from the file.

use std::{ops::Range, str};

use super::{
    bytes::{cstr, i32_at, u32_at, u64_at, uvarint},
    file_offset, Segment,
};

/// The pclntab versions, by magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    Go116,
    Go118,
    Go120,
}

impl Version {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffa => Some(Self::Go116),
            0xffff_fff0 => Some(Self::Go118),
            0xffff_fff1 => Some(Self::Go120),
            _ => None,
        }
    }

    pub fn magic_bytes() -> [[u8; 4]; 3] {
        [
            0xffff_fffau32.to_le_bytes(),
            0xffff_fff0u32.to_le_bytes(),
            0xffff_fff1u32.to_le_bytes(),
        ]
    }
}

const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// Deepest chain of inlined calls followed at one PC (Go's own limit is far lower in practice).
const MAX_INLINE_DEPTH: usize = 64;

/// Where the tables are inside the file; found once, then used to build [`Pclntab`] views.
#[derive(Clone, Debug)]
pub struct Layout {
    pub version: Version,
    quantum: u64,
    nfunc: usize,
    /// `pcHeader.textStart` (1.18 and 1.19 only; 0 from 1.20 on).
    pub text_start: u64,
    funcnametab: Range<usize>,
    cutab: Range<usize>,
    filetab: Range<usize>,
    pctab: Range<usize>,
    functab: Range<usize>,
}

impl Layout {
    /// Reads the header at file offset `at`; `end` bounds the table (section end or file end).
    pub fn parse(data: &[u8], at: usize, end: usize) -> Option<Self> {
        let table = data.get(at..end.min(data.len()))?;
        let version = Version::from_magic(u32_at(table, 0)?)?;
        let (pad, quantum, ptr_size) = (table.get(4..6)?, *table.get(6)?, *table.get(7)?);
        if pad != [0, 0] || ptr_size != 8 || !matches!(quantum, 1 | 2 | 4) {
            return None;
        }
        let word = |i: usize| u64_at(table, 8 + 8 * i);
        let nfunc = usize::try_from(word(0)?).ok()?;
        let (text_start, offsets) = match version {
            Version::Go116 => (0, 2),
            Version::Go118 | Version::Go120 => (word(2)?, 3),
        };
        let offset = |i: usize| usize::try_from(word(offsets + i)?).ok();
        let (names, cu, files, pcs, funcs) =
            (offset(0)?, offset(1)?, offset(2)?, offset(3)?, offset(4)?);
        if !(names <= cu && cu <= files && files <= pcs && pcs <= funcs && funcs <= table.len()) {
            return None;
        }
        let abs = |r: Range<usize>| at + r.start..at + r.end;
        let functab_entry = match version {
            Version::Go116 => 16,
            _ => 8,
        };
        let functab_len = nfunc.checked_add(1)?.checked_mul(functab_entry)?;
        if funcs.checked_add(functab_len)? > table.len() {
            return None;
        }
        Some(Self {
            version,
            quantum: u64::from(quantum),
            nfunc,
            text_start,
            funcnametab: abs(names..cu),
            cutab: abs(cu..files),
            filetab: abs(files..pcs),
            pctab: abs(pcs..funcs),
            functab: abs(funcs..table.len()),
        })
    }
}

/// A read-only view of the table over the mapped file.
pub struct Pclntab<'a> {
    layout: &'a Layout,
    data: &'a [u8],
    text_base: u64,
    /// Maps virtual addresses to file offsets (funcdata in 1.16/1.17 are addresses).
    segments: &'a [Segment],
    /// Address of `go:func.*`, the base of 1.18+ funcdata offsets, when known.
    gofunc: Option<u64>,
}

/// One function of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Func {
    pub index: usize,
    pub entry: u64,
    pub end: u64,
    /// File offset of its `_func` record.
    record: usize,
}

/// One call the compiler inlined into a function: an entry of that function's inline tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlinedCopy<'a> {
    /// Its index in the inline tree: the value PCDATA_InlTreeIndex takes over its code.
    pub index: usize,
    /// The function inlined.
    pub function: &'a str,
    /// The instruction standing for the call site (Go's `parentPc`): its file and line are
    /// where the call was written, in the function it was inlined into.
    pub call_pc: u64,
}

/// A frame at a PC: a function, and the file and line executing in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame<'a> {
    pub function: &'a str,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    /// Inlined into the next frame.
    pub inlined: bool,
}

impl<'a> Pclntab<'a> {
    pub(super) fn new(
        layout: &'a Layout,
        data: &'a [u8],
        text_base: u64,
        gofunc: Option<u64>,
        segments: &'a [Segment],
    ) -> Self {
        Self {
            layout,
            data,
            text_base,
            segments,
            gofunc,
        }
    }

    fn file_offset(&self, vaddr: u64) -> Option<usize> {
        usize::try_from(file_offset(self.segments, vaddr)?).ok()
    }

    pub fn function_count(&self) -> usize {
        self.layout.nfunc
    }

    /// Function `index` (0-based, in address order).
    pub fn func(&self, index: usize) -> Option<Func> {
        if index >= self.layout.nfunc {
            return None;
        }
        let (entry, record) = self.functab_entry(index)?;
        let (end, _) = self.functab_entry(index + 1)?;
        let record = self.layout.functab.start.checked_add(record)?;
        (end >= entry).then_some(Func {
            index,
            entry,
            end,
            record,
        })
    }

    /// (entry address, offset of `_func` within the functab area).
    fn functab_entry(&self, index: usize) -> Option<(u64, usize)> {
        let table = self.data.get(self.layout.functab.clone())?;
        match self.layout.version {
            Version::Go116 => {
                let at = index.checked_mul(16)?;
                Some((
                    u64_at(table, at)?,
                    usize::try_from(u64_at(table, at + 8)?).ok()?,
                ))
            }
            Version::Go118 | Version::Go120 => {
                let at = index.checked_mul(8)?;
                let entry = self.text_base.checked_add(u64::from(u32_at(table, at)?))?;
                Some((entry, u32_at(table, at + 4)? as usize))
            }
        }
    }

    /// The function containing `pc`, by binary search over the sorted function table.
    pub fn find(&self, pc: u64) -> Option<Func> {
        let (mut low, mut high) = (0, self.layout.nfunc);
        while low < high {
            let mid = low + (high - low) / 2;
            let (entry, _) = self.functab_entry(mid)?;
            if entry <= pc {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        let f = self.func(low.checked_sub(1)?)?;
        (pc < f.end).then_some(f)
    }

    /// Every function, in address order.
    pub fn funcs(&self) -> impl Iterator<Item = Func> + '_ {
        (0..self.layout.nfunc).filter_map(|i| self.func(i))
    }

    pub fn name(&self, f: &Func) -> Option<&'a str> {
        let name_off = i32_at(self.data, f.record + self.field(Field::NameOff))?;
        self.name_at(name_off)
    }

    fn name_at(&self, name_off: i32) -> Option<&'a str> {
        let names = self.data.get(self.layout.funcnametab.clone())?;
        cstr(names, usize::try_from(name_off).ok()?)
    }

    /// Source file and line executing at `pc` in `f` (for inlined code: the inlined
    /// function's position).
    pub fn line(&self, f: &Func, pc: u64) -> (Option<&'a str>, Option<u32>) {
        let file = self
            .pcvalue(f, Field::PcFile, pc)
            .and_then(|index| self.file_name(f, index));
        let line = self
            .pcvalue(f, Field::PcLn, pc)
            .and_then(|l| u32::try_from(l).ok());
        (file, line)
    }

    fn file_name(&self, f: &Func, index: i32) -> Option<&'a str> {
        let cu_offset = u32_at(self.data, f.record + self.field(Field::CuOffset))? as usize;
        let cutab = self.data.get(self.layout.cutab.clone())?;
        let slot = cu_offset
            .checked_add(usize::try_from(index).ok()?)?
            .checked_mul(4)?;
        let file_off = u32_at(cutab, slot)?;
        cstr(
            self.data.get(self.layout.filetab.clone())?,
            file_off as usize,
        )
    }

    /// The frames at `pc`, innermost first: inlined calls expanded the way Go's own
    /// tracebacks show them, then `f` itself.
    pub fn frames(&self, f: &Func, pc: u64) -> Vec<GoFrame<'a>> {
        let mut frames = Vec::new();
        let tree = self.inline_tree(f);
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = self.line(f, at);
            let Some(call) = tree.and_then(|tree| self.inlined_call(f, tree, at)) else {
                frames.push(GoFrame {
                    function: self.name(f).unwrap_or("?"),
                    file,
                    line,
                    inlined: false,
                });
                return frames;
            };
            frames.push(GoFrame {
                function: self.name_at(call.name_off).unwrap_or("?"),
                file,
                line,
                inlined: true,
            });
            let Some(parent) = f
                .entry
                .checked_add(u64::from(call.parent_pc))
                .filter(|&p| p < f.end)
            else {
                return frames;
            };
            at = parent;
        }
        frames
    }

    /// File offset of `f`'s inline tree, if it has one.
    fn inline_tree(&self, f: &Func) -> Option<usize> {
        let nfuncdata = u32::from(*self.data.get(f.record + self.field(Field::NFuncData))?);
        if nfuncdata <= FUNCDATA_INL_TREE {
            return None;
        }
        let pcdata = f.record + self.header_size();
        let npcdata = u32_at(self.data, f.record + self.field(Field::NPcData))? as usize;
        let funcdata = pcdata.checked_add(npcdata.checked_mul(4)?)?;
        match self.layout.version {
            Version::Go116 => {
                let aligned = funcdata.checked_add(7)? & !7;
                let addr = u64_at(self.data, aligned + 8 * FUNCDATA_INL_TREE as usize)?;
                if addr == 0 {
                    return None;
                }
                self.file_offset(addr)
            }
            Version::Go118 | Version::Go120 => {
                let off = u32_at(self.data, funcdata + 4 * FUNCDATA_INL_TREE as usize)?;
                if off == u32::MAX {
                    return None;
                }
                self.file_offset(self.gofunc?.checked_add(u64::from(off))?)
            }
        }
    }

    /// Names of the calls inlined into `f`, one per inlined call site.
    pub fn inlined_calls(&self, f: &Func) -> Vec<&'a str> {
        self.inlined_copies(f)
            .into_iter()
            .map(|copy| copy.function)
            .collect()
    }

    /// The calls inlined into `f`, one per inlined call site: the entries of its inline tree.
    pub fn inlined_copies(&self, f: &Func) -> Vec<InlinedCopy<'a>> {
        let Some(tree) = self.inline_tree(f) else {
            return Vec::new();
        };
        let Some(last) = self.max_pcdata_value(f, PCDATA_INL_TREE_INDEX) else {
            return Vec::new();
        };
        (0..=last)
            .filter_map(|index| {
                let (name_off, parent_pc) = self.inline_entry(tree, index)?;
                Some(InlinedCopy {
                    index,
                    function: self.name_at(name_off)?,
                    call_pc: f.entry.checked_add(u64::from(parent_pc))?,
                })
            })
            .collect()
    }

    /// Whether the instruction at `pc` of `f` belongs to inlined copy `index`: to its own
    /// code, or to a call inlined into it in turn.
    pub fn runs_inlined_copy(&self, f: &Func, pc: u64, index: usize) -> bool {
        let Some(tree) = self.inline_tree(f) else {
            return false;
        };
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let current = self.pcdata_value(f, PCDATA_INL_TREE_INDEX, at);
            // -1: the code of `f` itself.
            let Some(current) = current.and_then(|i| usize::try_from(i).ok()) else {
                return false;
            };
            if current == index {
                return true;
            }
            let Some((_, parent_pc)) = self.inline_entry(tree, current) else {
                return false;
            };
            at = f.entry.saturating_add(u64::from(parent_pc));
            if at >= f.end {
                return false;
            }
        }
        false
    }

    /// The largest value a pcdata table takes over `f` (the inline tree's last index).
    fn max_pcdata_value(&self, f: &Func, table: u32) -> Option<usize> {
        let values = self.pc_values(f, self.pcdata_offset(f, table)?)?;
        usize::try_from(values.map(|(value, _)| value).max()?).ok()
    }

    /// How many of up to `samples` inline trees look right with this table's `gofunc`: the
    /// first entry of each names a function and points back into its caller. `None` when any
    /// does not, i.e. `gofunc` is wrong. Used to pick `gofunc` among moduledata's words in
    /// stripped binaries, whose layout changes between Go releases.
    pub fn inline_trees_valid(&self, samples: usize) -> Option<usize> {
        let mut valid = 0;
        for f in self.funcs() {
            if valid == samples {
                break;
            }
            let Some(tree) = self.inline_tree(&f) else {
                continue;
            };
            let (name_off, parent_pc) = self.inline_entry(tree, 0)?;
            let names = self.data.get(self.layout.funcnametab.clone())?;
            let at = usize::try_from(name_off).ok()?;
            let starts_name = at == 0 || names.get(at - 1) == Some(&0);
            if !starts_name
                || cstr(names, at).is_none_or(str::is_empty)
                || u64::from(parent_pc) >= f.end - f.entry
            {
                return None;
            }
            valid += 1;
        }
        Some(valid)
    }

    /// The inlined call active at `pc`, if any.
    fn inlined_call(&self, f: &Func, tree: usize, pc: u64) -> Option<InlinedCall> {
        let index = usize::try_from(self.pcdata_value(f, PCDATA_INL_TREE_INDEX, pc)?).ok()?;
        let (name_off, parent_pc) = self.inline_entry(tree, index)?;
        Some(InlinedCall {
            name_off,
            parent_pc,
        })
    }

    /// (nameOff, parentPc) of entry `index` of the inline tree at file offset `tree`.
    fn inline_entry(&self, tree: usize, index: usize) -> Option<(i32, u32)> {
        let (size, name_off, parent_pc) = match self.layout.version {
            Version::Go120 => (16, 4, 8),
            Version::Go116 | Version::Go118 => (20, 12, 16),
        };
        let at = tree.checked_add(index.checked_mul(size)?)?;
        Some((
            i32_at(self.data, at + name_off)?,
            u32::try_from(i32_at(self.data, at + parent_pc)?).ok()?,
        ))
    }

    fn pcdata_value(&self, f: &Func, table: u32, pc: u64) -> Option<i32> {
        self.value_at(f, self.pcdata_offset(f, table)?, pc)
    }

    /// Where pcdata table `table` of `f` starts in pctab.
    fn pcdata_offset(&self, f: &Func, table: u32) -> Option<u32> {
        let npcdata = u32_at(self.data, f.record + self.field(Field::NPcData))?;
        if table >= npcdata {
            return None;
        }
        u32_at(
            self.data,
            f.record + self.header_size() + 4 * table as usize,
        )
    }

    fn pcvalue(&self, f: &Func, field: Field, pc: u64) -> Option<i32> {
        let off = u32_at(self.data, f.record + self.field(field))?;
        self.value_at(f, off, pc)
    }

    /// The value in effect at `pc` in the table at `off`.
    fn value_at(&self, f: &Func, off: u32, pc: u64) -> Option<i32> {
        let (value, _) = self.pc_values(f, off)?.find(|&(_, end)| pc < end)?;
        i32::try_from(value).ok()
    }

    /// The runs of the pc-value table at `off` (0: none) of `f`.
    fn pc_values(&self, f: &Func, off: u32) -> Option<PcValues<'a>> {
        if off == 0 {
            return None;
        }
        let table = self
            .data
            .get(self.layout.pctab.clone())?
            .get(off as usize..)?;
        Some(PcValues {
            table,
            at: 0,
            value: -1,
            pc: f.entry,
            quantum: self.layout.quantum,
        })
    }

    fn header_size(&self) -> usize {
        match self.layout.version {
            Version::Go118 => 40,
            Version::Go116 | Version::Go120 => 44,
        }
    }

    /// Byte offset of a `_func` field in this version.
    fn field(&self, field: Field) -> usize {
        // 1.16 starts with an 8-byte entry; 1.18+ with a 4-byte entryOff.
        let shift = usize::from(self.layout.version == Version::Go116) * 4;
        let base = match field {
            Field::NameOff => 4,
            Field::PcFile => 20,
            Field::PcLn => 24,
            Field::NPcData => 28,
            Field::CuOffset => 32,
            Field::NFuncData => return self.header_size() - 1,
        };
        base + shift
    }
}

/// The `_func` fields pooltrace reads.
#[derive(Clone, Copy)]
enum Field {
    NameOff,
    PcFile,
    PcLn,
    NPcData,
    CuOffset,
    NFuncData,
}

/// A pc-value table as (value, end pc) runs: zig-zag value deltas and pc deltas in
/// instruction quanta, ended by a zero value delta. Every step moves forward through the
/// table, so iteration ends at the table's end at the latest.
struct PcValues<'a> {
    table: &'a [u8],
    at: usize,
    value: i64,
    pc: u64,
    quantum: u64,
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

struct InlinedCall {
    name_off: i32,
    parent_pc: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_with_bad_fields_are_refused() {
        let mut header = vec![0u8; 80];
        header[..4].copy_from_slice(&0xffff_fff1u32.to_le_bytes());
        header[6] = 1;
        header[7] = 8;
        // Offsets all zero and nfunc 0: a valid, empty table.
        assert!(Layout::parse(&header, 0, header.len()).is_some());
        header[7] = 4;
        assert!(
            Layout::parse(&header, 0, header.len()).is_none(),
            "32-bit tables are not ours"
        );
        header[7] = 8;
        header[8] = 0xff; // nfunc too large for the table
        assert!(Layout::parse(&header, 0, header.len()).is_none());
    }
}
