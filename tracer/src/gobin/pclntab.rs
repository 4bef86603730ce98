//! Go's own function table, `pclntab`: every Go binary has it, stripped or not, because the
//! runtime needs it for tracebacks and garbage collection.
//!
//! Formats read: Go 1.16-1.17, 1.18-1.19 and 1.20+ ([`Version`]). The records' layouts are
//! decoded in [`raw`]; this module finds the tables and answers questions over them. The
//! table is read in place from the mapped file; every read is bounds-checked, so a corrupt
//! or hostile file yields `None`, never a panic, and no allocation is sized by a value read
//! from the file.

mod raw;

use std::{ops::Range, str};

use super::{bytes::cstr, file_offset, Segment};
pub(crate) use raw::Version;
use raw::{
    EntryOffset, FuncRecord, Funcdata, FunctabRow, Header, InlineEntry, NameOff, PcTabOff,
    PcValues, PCDATA_INL_TREE_INDEX,
};

/// Deepest chain of inlined calls followed at one PC (Go's own limit is far lower in practice).
const MAX_INLINE_DEPTH: usize = 64;

/// Where the tables are inside the file; found once, then used to build [`Pclntab`] views.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub version: Version,
    quantum: u8,
    nfunc: usize,
    /// `pcHeader.textStart`, 0 where the file holds none.
    pub text_start: u64,
    funcnametab: Range<usize>,
    cutab: Range<usize>,
    filetab: Range<usize>,
    pctab: Range<usize>,
    functab: Range<usize>,
}

impl Layout {
    /// Reads the header at file offset `at`; `end` bounds the table (section end or file end).
    pub(crate) fn parse(data: &[u8], at: usize, end: usize) -> Option<Self> {
        let table = data.get(at..end.min(data.len()))?;
        let header = Header::read(table)?;
        let offset = |off: u64| usize::try_from(off).ok();
        let (names, cu, files, pcs, funcs) = (
            offset(header.funcnametab)?,
            offset(header.cutab)?,
            offset(header.filetab)?,
            offset(header.pctab)?,
            offset(header.functab)?,
        );
        if !(names <= cu && cu <= files && files <= pcs && pcs <= funcs && funcs <= table.len()) {
            return None;
        }
        let nfunc = usize::try_from(header.nfunc).ok()?;
        let functab_len = nfunc
            .checked_add(1)?
            .checked_mul(FunctabRow::size(header.version))?;
        if funcs.checked_add(functab_len)? > table.len() {
            return None;
        }
        let abs = |r: Range<usize>| at + r.start..at + r.end;
        Some(Self {
            version: header.version,
            quantum: header.quantum,
            nfunc,
            text_start: header.text_start,
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
    pub(crate) index: usize,
    /// Address of its first instruction.
    pub entry: u64,
    /// Address just past its code (the next function's entry).
    pub end: u64,
    /// File offset of its `_func` record.
    record: usize,
}

/// One call the compiler inlined into a function: an entry of that function's inline tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InlinedCopy<'a> {
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
    /// The Go function's name.
    pub function: &'a str,
    /// The source file, when the table has it.
    pub file: Option<&'a str>,
    /// The source line, when the table has it.
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

    /// How many functions the table holds.
    pub fn function_count(&self) -> usize {
        self.layout.nfunc
    }

    /// Function `index` (0-based, in address order).
    pub(crate) fn func(&self, index: usize) -> Option<Func> {
        if index >= self.layout.nfunc {
            return None;
        }
        let row = self.functab_row(index)?;
        let entry = row.entry.vaddr(self.text_base)?;
        let end = self.functab_row(index + 1)?.entry.vaddr(self.text_base)?;
        let record = self.layout.functab.start.checked_add(row.func.index())?;
        (end >= entry).then_some(Func {
            index,
            entry,
            end,
            record,
        })
    }

    fn functab_row(&self, index: usize) -> Option<FunctabRow> {
        let functab = self.data.get(self.layout.functab.clone())?;
        FunctabRow::read(functab, index, self.layout.version)
    }

    /// The function containing `pc`, by binary search over the sorted function table.
    pub fn find(&self, pc: u64) -> Option<Func> {
        let (mut low, mut high) = (0, self.layout.nfunc);
        while low < high {
            let mid = low + (high - low) / 2;
            let entry = self.functab_row(mid)?.entry.vaddr(self.text_base)?;
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

    /// `f`'s `_func` record.
    fn record(&self, f: &Func) -> Option<FuncRecord> {
        FuncRecord::read(self.data, f.record, self.layout.version)
    }

    /// `f`'s Go name, such as `main.(*BufPool).Get`.
    pub fn name(&self, f: &Func) -> Option<&'a str> {
        self.name_at(self.record(f)?.name)
    }

    fn funcnametab(&self) -> Option<&'a [u8]> {
        self.data.get(self.layout.funcnametab.clone())
    }

    fn name_at(&self, name: NameOff) -> Option<&'a str> {
        cstr(self.funcnametab()?, name.index()?)
    }

    fn line_in(&self, f: &Func, record: &FuncRecord, pc: u64) -> (Option<&'a str>, Option<u32>) {
        let file = self
            .value_at(f, record.pcfile, pc)
            .and_then(|index| self.file_name(record, index));
        let line = self
            .value_at(f, record.pcln, pc)
            .and_then(|l| u32::try_from(l).ok());
        (file, line)
    }

    fn file_name(&self, record: &FuncRecord, index: i32) -> Option<&'a str> {
        let cutab = self.data.get(self.layout.cutab.clone())?;
        let file = raw::file_off(cutab, record.cu, index)?;
        cstr(self.data.get(self.layout.filetab.clone())?, file.index())
    }

    /// The frames at `pc`, innermost first: inlined calls expanded the way Go's own
    /// tracebacks show them, then `f` itself.
    pub fn frames(&self, f: &Func, pc: u64) -> Vec<GoFrame<'a>> {
        let mut frames = Vec::new();
        let record = self.record(f);
        let tree = record.and_then(|record| self.inline_tree(&record));
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = record.map_or((None, None), |r| self.line_in(f, &r, at));
            let call = record
                .zip(tree)
                .and_then(|(record, tree)| self.inlined_call(f, &record, tree, at));
            let Some(call) = call else {
                frames.push(GoFrame {
                    function: self.name(f).unwrap_or("?"),
                    file,
                    line,
                    inlined: false,
                });
                return frames;
            };
            frames.push(GoFrame {
                function: self.name_at(call.name).unwrap_or("?"),
                file,
                line,
                inlined: true,
            });
            let Some(parent) = self.parent_pc(f, call.parent_pc) else {
                return frames;
            };
            at = parent;
        }
        frames
    }

    /// The call site `parent_pc` stands for, if it lies inside `f`.
    fn parent_pc(&self, f: &Func, parent_pc: EntryOffset) -> Option<u64> {
        parent_pc.vaddr(f.entry).filter(|&p| p < f.end)
    }

    /// File offset of the inline tree of the function of `record`, if it has one.
    fn inline_tree(&self, record: &FuncRecord) -> Option<usize> {
        match record.inline_tree(self.data)? {
            Funcdata::Vaddr(addr) => self.file_offset(addr),
            Funcdata::GoFuncOffset(off) => {
                self.file_offset(self.gofunc?.checked_add(u64::from(off))?)
            }
        }
    }

    fn inline_entry(&self, tree: usize, index: usize) -> Option<InlineEntry> {
        InlineEntry::read(self.data, tree, index, self.layout.version)
    }

    /// Names of the calls inlined into `f`, one per inlined call site.
    pub(crate) fn inlined_calls(&self, f: &Func) -> Vec<&'a str> {
        self.inlined_copies(f)
            .into_iter()
            .map(|copy| copy.function)
            .collect()
    }

    /// The calls inlined into `f`, one per inlined call site: the entries of its inline tree.
    pub(crate) fn inlined_copies(&self, f: &Func) -> Vec<InlinedCopy<'a>> {
        let Some(record) = self.record(f) else {
            return Vec::new();
        };
        let Some(tree) = self.inline_tree(&record) else {
            return Vec::new();
        };
        let Some(last) = self.max_pcdata_value(f, &record, PCDATA_INL_TREE_INDEX) else {
            return Vec::new();
        };
        // Each inlined call owns at least one byte of `f`'s code: a larger index is a
        // corrupt table, and walking up to it would take as long as it is large.
        if last as u64 >= f.end.saturating_sub(f.entry) {
            return Vec::new();
        }
        (0..=last)
            .filter_map(|index| {
                let entry = self.inline_entry(tree, index)?;
                Some(InlinedCopy {
                    index,
                    function: self.name_at(entry.name)?,
                    call_pc: entry.parent_pc.vaddr(f.entry)?,
                })
            })
            .collect()
    }

    /// Whether the instruction at `pc` of `f` belongs to inlined copy `index`: to its own
    /// code, or to a call inlined into it in turn.
    pub(crate) fn runs_inlined_copy(&self, f: &Func, pc: u64, index: usize) -> bool {
        let Some(record) = self.record(f) else {
            return false;
        };
        let Some(tree) = self.inline_tree(&record) else {
            return false;
        };
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let current = self.pcdata_value(f, &record, PCDATA_INL_TREE_INDEX, at);
            // -1: the code of `f` itself.
            let Some(current) = current.and_then(|i| usize::try_from(i).ok()) else {
                return false;
            };
            if current == index {
                return true;
            }
            let Some(entry) = self.inline_entry(tree, current) else {
                return false;
            };
            at = f.entry.saturating_add(entry.parent_pc.get());
            if at >= f.end {
                return false;
            }
        }
        false
    }

    /// The largest value a pcdata table takes over `f` (the inline tree's last index).
    fn max_pcdata_value(&self, f: &Func, record: &FuncRecord, table: u32) -> Option<usize> {
        let off = record.pcdata(self.data, table)?;
        let values = self.pc_values(f, off)?;
        usize::try_from(values.map(|(value, _)| value).max()?).ok()
    }

    /// How many of up to `samples` inline trees look right with this table's `gofunc`: the
    /// first entry of each names a function and points back into its caller. `None` when any
    /// does not, i.e. `gofunc` is wrong. Used to pick `gofunc` among moduledata's words in
    /// stripped binaries, whose layout changes between Go releases.
    pub(crate) fn inline_trees_valid(&self, samples: usize) -> Option<usize> {
        let mut valid = 0;
        for f in self.funcs() {
            if valid == samples {
                break;
            }
            let Some(tree) = self.record(&f).and_then(|record| self.inline_tree(&record)) else {
                continue;
            };
            let entry = self.inline_entry(tree, 0)?;
            let names = self.funcnametab()?;
            let at = entry.name.index()?;
            let starts_name = at == 0 || names.get(at - 1) == Some(&0);
            if !starts_name
                || cstr(names, at).is_none_or(str::is_empty)
                || entry.parent_pc.get() >= f.end - f.entry
            {
                return None;
            }
            valid += 1;
        }
        Some(valid)
    }

    /// The inlined call active at `pc`, if any.
    fn inlined_call(
        &self,
        f: &Func,
        record: &FuncRecord,
        tree: usize,
        pc: u64,
    ) -> Option<InlineEntry> {
        let index = self.pcdata_value(f, record, PCDATA_INL_TREE_INDEX, pc)?;
        let index = usize::try_from(index).ok()?;
        self.inline_entry(tree, index)
    }

    fn pcdata_value(&self, f: &Func, record: &FuncRecord, table: u32, pc: u64) -> Option<i32> {
        let off = record.pcdata(self.data, table)?;
        self.value_at(f, off, pc)
    }

    /// The value in effect at `pc` in the table at `off`.
    fn value_at(&self, f: &Func, off: PcTabOff, pc: u64) -> Option<i32> {
        let (value, _) = self.pc_values(f, off)?.find(|&(_, end)| pc < end)?;
        i32::try_from(value).ok()
    }

    /// The runs of the pc-value table at `off` (0: none) of `f`.
    fn pc_values(&self, f: &Func, off: PcTabOff) -> Option<PcValues<'a>> {
        let pctab = self.data.get(self.layout.pctab.clone())?;
        PcValues::new(pctab, off, f.entry, self.layout.quantum)
    }
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
