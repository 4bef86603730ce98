//! A Go binary's DWARF: loaded once for the symbolizer's line tables, and read here for the
//! byte offsets of a struct's fields (where a pool instance keeps its own books).

use std::{borrow::Cow, rc::Rc};

use object::{Object, ObjectSection};

/// How the sections are held: inflated once (Go compresses its DWARF, SHF_COMPRESSED).
pub type Reader = gimli::EndianRcSlice<gimli::LittleEndian>;

/// The DWARF of the ELF file `data`; None when it has none (a stripped build).
pub fn load(data: &[u8]) -> Option<gimli::Dwarf<Reader>> {
    let file = object::File::parse(data).ok()?;
    file.section_by_name(".debug_info")?;
    let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[]));
        Ok(Reader::new(Rc::from(&*bytes), gimli::LittleEndian))
    };
    gimli::Dwarf::load(load).ok()
}

/// The fields of the struct type named `name` (as Go names it in DWARF, e.g.
/// `github.com/thanos-io/thanos/pkg/pool.BucketedPool[go.shape.uint8]`), each with its byte
/// offset; None when no such struct is described.
pub fn struct_fields(dwarf: &gimli::Dwarf<Reader>, name: &str) -> Option<Vec<(String, u64)>> {
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let mut tree = unit.entries_tree(None).ok()?;
        let root = tree.root().ok()?;
        let mut children = root.children();
        while let Ok(Some(child)) = children.next() {
            let entry = child.entry();
            if entry.tag() != gimli::DW_TAG_structure_type || !named(dwarf, &unit, entry, name) {
                continue;
            }
            let mut fields = Vec::new();
            let mut members = child.children();
            while let Ok(Some(member)) = members.next() {
                let member = member.entry();
                if member.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let field = attr_name(dwarf, &unit, member)?;
                let offset = member
                    .attr_value(gimli::DW_AT_data_member_location)
                    .ok()??;
                fields.push((field, offset.udata_value()?));
            }
            return Some(fields);
        }
    }
    None
}

fn named(
    dwarf: &gimli::Dwarf<Reader>,
    unit: &gimli::Unit<Reader>,
    entry: &gimli::DebuggingInformationEntry<Reader>,
    name: &str,
) -> bool {
    attr_name(dwarf, unit, entry).is_some_and(|n| n == name)
}

fn attr_name(
    dwarf: &gimli::Dwarf<Reader>,
    unit: &gimli::Unit<Reader>,
    entry: &gimli::DebuggingInformationEntry<Reader>,
) -> Option<String> {
    let value = entry.attr_value(gimli::DW_AT_name).ok()??;
    let text = dwarf.attr_string(unit, value).ok()?;
    Some(gimli::Reader::to_string_lossy(&text).ok()?.into_owned())
}
