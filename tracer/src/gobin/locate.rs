//! Finding Go's tables in an ELF file: pclntab by section name or, when section headers
//! are missing or renamed, by its magic; `runtime.firstmoduledata` by the pointer to pclntab
//! it starts with; and from them the text base and `go:func.*` (field notes §5).

use object::{Object, ObjectSection, ObjectSymbol};

use super::{
    buildinfo::BuildInfo,
    bytes::{u32_at, u64_at},
    file_offset,
    pclntab::{Layout, Pclntab, Version},
    PclnInfo, Segment,
};

/// moduledata's words up to `text` have kept their places since Go 1.16: pcHeader, five
/// slices, ftab, findfunctab, minpc, maxpc, then text and etext.
const MD_MINPC: usize = 20;
const MD_MAXPC: usize = 21;
const MD_TEXT: usize = 22;
const MD_ETEXT: usize = 23;
/// Words after `etext` searched for `gofunc`, whose index differs between releases.
const MD_SEARCHED: std::ops::Range<usize> = 24..64;
/// Inline trees checked per `gofunc` candidate.
const GOFUNC_SAMPLES: usize = 64;

pub(super) fn pclntab(file: &object::File, data: &[u8], segments: &[Segment]) -> Option<PclnInfo> {
    let (layout, at) = section_range(file, &[".gopclntab", ".data.rel.ro.gopclntab"])
        .and_then(|(at, end)| Some((Layout::parse(data, at, end)?, at)))
        .or_else(|| scan_for_magic(data, segments))?;
    let header_vaddr = vaddr_of(segments, at as u64)?;
    let moduledata = find_moduledata(file, data, segments, header_vaddr);
    let md_word = |i: usize| u64_at(data, moduledata? + 8 * i);
    let text_base = symbol(file, "runtime.text")
        .or((layout.text_start != 0).then_some(layout.text_start))
        .or_else(|| md_word(MD_TEXT))
        .or_else(|| file.section_by_name(".text").map(|s| s.address()))?;
    let mut info = PclnInfo {
        layout,
        text_base,
        gofunc: None,
    };
    if info.layout.version.funcdata_from_gofunc() {
        info.gofunc = symbol(file, "go:func.*")
            .or_else(|| symbol(file, "go.func.*"))
            .or_else(|| {
                let candidates = MD_SEARCHED.filter_map(&md_word);
                best_gofunc(&info, data, segments, candidates)
            });
    }
    Some(info)
}

/// The `go:func.*` candidate under which the most inline trees decode sensibly.
fn best_gofunc(
    info: &PclnInfo,
    data: &[u8],
    segments: &[Segment],
    candidates: impl Iterator<Item = u64>,
) -> Option<u64> {
    candidates
        .filter(|&addr| {
            segments
                .iter()
                .any(|s| !s.executable && addr >= s.vaddr && addr - s.vaddr < s.filesz)
        })
        .filter_map(|addr| {
            let table = Pclntab::new(&info.layout, data, info.text_base, Some(addr), segments);
            Some((table.inline_trees_valid(GOFUNC_SAMPLES)?, addr))
        })
        .filter(|&(valid, _)| valid > 0)
        .max()
        .map(|(_, addr)| addr)
}

/// Finds a pclntab header in non-executable segments by its magic, for files whose section
/// headers are stripped or renamed.
fn scan_for_magic(data: &[u8], segments: &[Segment]) -> Option<(Layout, usize)> {
    segments.iter().filter(|s| !s.executable).find_map(|s| {
        let start = usize::try_from(s.offset).ok()?;
        let end = start
            .checked_add(usize::try_from(s.filesz).ok()?)?
            .min(data.len());
        let region = data.get(start..end)?;
        region
            .chunks_exact(4)
            .enumerate()
            .filter(|(_, word)| u32_at(word, 0).and_then(Version::from_magic).is_some())
            .find_map(|(i, _)| {
                let at = start + 4 * i;
                Some((Layout::parse(data, at, end)?, at))
            })
    })
}

/// File offset of `runtime.firstmoduledata`: a word holding pclntab's address, followed
/// by a consistent minpc/maxpc/text/etext.
fn find_moduledata(
    file: &object::File,
    data: &[u8],
    segments: &[Segment],
    pclntab_vaddr: u64,
) -> Option<usize> {
    let regions: Vec<(usize, usize)> = match section_range(file, &[".go.module", ".noptrdata"]) {
        Some(range) => vec![range],
        None => segments
            .iter()
            .filter(|s| !s.executable)
            .filter_map(|s| {
                let start = usize::try_from(s.offset).ok()?;
                Some((start, start.checked_add(usize::try_from(s.filesz).ok()?)?))
            })
            .collect(),
    };
    let needle = pclntab_vaddr.to_le_bytes();
    regions.into_iter().find_map(|(start, end)| {
        let region = data.get(start..end.min(data.len()))?;
        region.chunks_exact(8).enumerate().find_map(|(i, word)| {
            let at = start + 8 * i;
            (word == needle && moduledata_is_consistent(data, at)).then_some(at)
        })
    })
}

fn moduledata_is_consistent(data: &[u8], at: usize) -> bool {
    let word = |i: usize| u64_at(data, at + 8 * i);
    match (
        word(MD_MINPC),
        word(MD_MAXPC),
        word(MD_TEXT),
        word(MD_ETEXT),
    ) {
        (Some(minpc), Some(maxpc), Some(text), Some(etext)) => {
            text <= minpc && minpc < maxpc && maxpc <= etext
        }
        _ => false,
    }
}

pub(super) fn build_info(
    file: &object::File,
    data: &[u8],
    segments: &[Segment],
) -> Option<BuildInfo> {
    let read_at = |vaddr: u64, len: usize| -> Option<Vec<u8>> {
        let start = usize::try_from(file_offset(segments, vaddr)?).ok()?;
        data.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
    };
    if let Some((start, end)) = section_range(file, &[".go.buildinfo"]) {
        return BuildInfo::parse(data.get(start..end)?, &read_at);
    }
    // Without section headers: search the data segments for the blob's magic.
    segments.iter().filter(|s| !s.executable).find_map(|s| {
        let start = usize::try_from(s.offset).ok()?;
        let end = start
            .checked_add(usize::try_from(s.filesz).ok()?)?
            .min(data.len());
        BuildInfo::parse(data.get(start..end)?, &read_at)
    })
}

/// Address range of the runtime type descriptors: `runtime.types` to `runtime.etypes` when
/// symbols exist, else the section Go puts them in (`.go.type` from Go 1.26, before that the
/// start of `.rodata`). A wrong guess mostly fails the checks names read through it must pass.
pub(super) fn types(file: &object::File) -> Option<(u64, u64)> {
    if let (Some(start), Some(end)) = (
        symbol(file, "runtime.types"),
        symbol(file, "runtime.etypes"),
    ) {
        return Some((start, end));
    }
    [".go.type", ".rodata", ".data.rel.ro"]
        .iter()
        .find_map(|name| file.section_by_name(name))
        .map(|s| (s.address(), s.address() + s.size()))
}

/// File range of the first of `names` that exists.
fn section_range(file: &object::File, names: &[&str]) -> Option<(usize, usize)> {
    names.iter().find_map(|name| {
        let (offset, size) = file.section_by_name(name)?.file_range()?;
        let start = usize::try_from(offset).ok()?;
        Some((start, start.checked_add(usize::try_from(size).ok()?)?))
    })
}

fn symbol(file: &object::File, name: &str) -> Option<u64> {
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
}

pub(super) fn vaddr_of(segments: &[Segment], offset: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| offset >= s.offset && offset - s.offset < s.filesz)
        .map(|s| offset - s.offset + s.vaddr)
}
