//! Which instantiations of generic code a binary holds, and which shape function each one
//! runs, read from the dictionaries its call sites pass.
//!
//! A generic method called only directly exists only as its shape function
//! (`main.(*P[go.shape.uint8]).Put`, Go 1.19: `go.shape.uint8_0`), so names alone do not
//! say which instantiations it serves, and several instantiations can share one shape. But
//! every call of a shape function, direct or from a wrapper, loads the instantiation's
//! dictionary into the dictionary register just before the call. The dictionary names the
//! instantiation: by its symbol (`main..dict.P[uint8]`; Go 1.18/1.19 name one per method,
//! `main..dict.(*P[uint8]).Put`) when `.symtab` exists, else by the runtime type
//! descriptors it points to: Go 1.20+ dictionaries of a generic type's methods hold
//! `*main.P[uint8]` itself, Go 1.18/1.19 ones start with the type arguments. Stripped Go
//! 1.18/1.19 binaries also elide type arguments in pclntab (`main.(*P[...]).Put`, wrappers
//! and shape functions alike); a shape function is then told from a wrapper by not calling
//! a function of its own name.

use std::collections::{HashMap, HashSet};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic, OpKind, Register};

use super::{bytes::uvarint, names::split_type_args, Function, GoBinary};

/// Words of a dictionary searched for the type descriptor that names its instantiation.
const DICTIONARY_WORDS: usize = 8;
/// Longest type name read from a type descriptor; longer ones are taken as misreads.
const MAX_TYPE_NAME: usize = 1024;
/// `abi.Type` fields read here: `TFlag` and `Str` (a name offset from the types base).
const RTYPE_TFLAG: u64 = 20;
const RTYPE_STR: u64 = 40;
/// `TFlagExtraStar`: the stored name has a `*` that is not part of the type's name.
const TFLAG_EXTRA_STAR: u8 = 2;

/// Instantiation names (`main.(*P[uint8]).Put`) and the shape function each one runs.
pub(super) type Index = HashMap<String, Function>;

/// Whether a function is compiled generic code: a shape function (or, in stripped Go
/// 1.18/1.19 builds, anything with elided type arguments).
pub(super) fn is_shape_or_elided(name: &str) -> bool {
    split_type_args(name).is_some_and(|(_, args, _)| args.starts_with("go.shape.") || args == "...")
}

impl GoBinary {
    /// Every instantiation the binary's dictionaries name, built once.
    pub(super) fn generic_index(&self) -> &Index {
        self.generics.get_or_init(|| self.build_generic_index())
    }

    fn build_generic_index(&self) -> Index {
        let shapes = self.shape_functions();
        let mut index = Index::new();
        for (shape, dictionary) in self.dictionaries_passed(&shapes) {
            let function = &self.functions()[shape];
            let Some((prefix, _, suffix)) = split_type_args(&function.name) else {
                continue;
            };
            if let Some(args) = self.instantiation_args(dictionary, prefix) {
                index
                    .entry(format!("{prefix}[{args}]{suffix}"))
                    .or_insert_with(|| function.clone());
            }
        }
        index
    }

    /// Shape functions by address, each with its dictionary register. Elided names are
    /// shape functions unless they call a function of the same name (wrappers do).
    fn shape_functions(&self) -> HashMap<u64, (usize, Register)> {
        let elided: HashSet<u64> = self
            .functions()
            .iter()
            .filter(|f| f.name.contains("[...]"))
            .map(|f| f.addr)
            .collect();
        self.functions()
            .iter()
            .enumerate()
            .filter(|(_, f)| is_shape_or_elided(&f.name))
            .filter(|(_, f)| !f.name.contains("[...]") || !self.calls_same_name(f, &elided))
            .map(|(i, f)| {
                let register = match self.dictionary_slot(&f.name) {
                    0 => Register::RAX,
                    _ => Register::RBX,
                };
                (f.addr, (i, register))
            })
            .collect()
    }

    /// Whether `f` calls another function with its own name (an elided wrapper).
    fn calls_same_name(&self, f: &Function, elided: &HashSet<u64>) -> bool {
        self.code(f).is_some_and(|code| {
            super::calls::direct_call_targets(code, f.addr).any(|target| {
                target != f.addr
                    && elided.contains(&target)
                    && self.function_at(target).is_some_and(|t| t.name == f.name)
            })
        })
    }

    /// (shape function index, dictionary address) for every call of a shape function whose
    /// dictionary register was last set by a RIP-relative `lea`.
    fn dictionaries_passed(
        &self,
        shapes: &HashMap<u64, (usize, Register)>,
    ) -> HashSet<(usize, u64)> {
        let mut passed = HashSet::new();
        for f in self.functions() {
            let Some(code) = self.code(f) else { continue };
            let mut loaded: HashMap<Register, u64> = HashMap::new();
            for ins in Decoder::with_ip(64, code, f.addr, DecoderOptions::NONE) {
                if ins.flow_control() == FlowControl::Call {
                    let target = (ins.op0_kind() == OpKind::NearBranch64)
                        .then(|| ins.near_branch_target())
                        .and_then(|t| shapes.get(&t));
                    if let Some(&(shape, register)) = target {
                        if let Some(&dictionary) = loaded.get(&register) {
                            passed.insert((shape, dictionary));
                        }
                    }
                    loaded.clear();
                    continue;
                }
                if ins.op0_kind() != OpKind::Register {
                    continue;
                }
                let register = ins.op0_register().full_register();
                if ins.mnemonic() == Mnemonic::Lea && ins.is_ip_rel_memory_operand() {
                    loaded.insert(register, ins.ip_rel_memory_address());
                } else {
                    // Anything else naming the register may overwrite it.
                    loaded.remove(&register);
                }
            }
        }
        passed
    }

    /// The type arguments a dictionary stands for, e.g. `uint8` for `main..dict.P[uint8]`.
    /// `prefix` is the generic name up to its type arguments (`main.(*P`).
    fn instantiation_args(&self, dictionary: u64, prefix: &str) -> Option<String> {
        if let Some(symbol) = self.dictionaries.get(&dictionary) {
            return split_type_args(symbol).map(|(_, args, _)| args.to_owned());
        }
        let words: Vec<u64> = (0..DICTIONARY_WORDS as u64)
            .map_while(|i| self.u64_at_vaddr(dictionary + 8 * i))
            .collect();
        let type_path = generic_type_path(prefix);
        let own_type = words.iter().find_map(|&word| {
            let name = self.type_name(word)?;
            let (p, args, _) = split_type_args(name.trim_start_matches('*'))?;
            (p == type_path).then(|| args.to_owned())
        });
        if own_type.is_some() {
            return own_type;
        }
        // Go 1.18/1.19 dictionaries start with the type arguments; a single one is assumed
        // (the elided names do not say how many there are).
        let old = self.pclntab_version().is_some_and(|v| !v.unified_ir());
        old.then(|| self.type_name(*words.first()?)).flatten()
    }

    /// The name of the runtime type descriptor at `rtype`, if it reads as one.
    fn type_name(&self, rtype: u64) -> Option<String> {
        let (start, end) = self.types?;
        if !(start..end).contains(&rtype) {
            return None;
        }
        let tflag = *self.bytes_at_vaddr(rtype + RTYPE_TFLAG, 1)?.first()?;
        let offset =
            i32::from_le_bytes(self.bytes_at_vaddr(rtype + RTYPE_STR, 4)?.try_into().ok()?);
        let at = start.checked_add_signed(i64::from(offset))?;
        // A name: flag byte, uvarint length, bytes.
        let header = self.bytes_at_vaddr(at, 4)?;
        let (len, used) = uvarint(&header[1..])?;
        let bytes = self.bytes_at_vaddr(
            at + 1 + used as u64,
            len.min(MAX_TYPE_NAME as u64 + 1) as usize,
        )?;
        if bytes.len() > MAX_TYPE_NAME || !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
            return None;
        }
        let name = std::str::from_utf8(bytes).ok()?;
        let name = if tflag & TFLAG_EXTRA_STAR != 0 {
            name.strip_prefix('*')?
        } else {
            name
        };
        (!name.is_empty()).then(|| name.to_owned())
    }

    fn bytes_at_vaddr(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(self.file_offset(vaddr)?).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }

    fn u64_at_vaddr(&self, vaddr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.bytes_at_vaddr(vaddr, 8)?.try_into().ok()?,
        ))
    }
}

/// The type a generic method belongs to, as type descriptors name it: `main.(*P` and
/// `main.P` -> `main.P`. (For a generic function `main.F` this names no type, and no
/// descriptor matches.)
fn generic_type_path(prefix: &str) -> String {
    match prefix.rsplit_once(".(*") {
        Some((package, receiver)) => format!("{package}.{receiver}"),
        None => prefix.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_methods_are_named_after_their_type() {
        assert_eq!(generic_type_path("main.(*P"), "main.P");
        assert_eq!(
            generic_type_path("example.com/x/pool.(*BucketedPool"),
            "example.com/x/pool.BucketedPool"
        );
        assert_eq!(generic_type_path("main.P"), "main.P");
    }

    #[test]
    fn shape_functions_are_told_from_instantiations() {
        assert!(is_shape_or_elided("main.(*P[go.shape.uint8]).Put"));
        assert!(is_shape_or_elided("main.(*P[...]).Put"));
        assert!(!is_shape_or_elided("main.(*P[uint8]).Put"));
        assert!(!is_shape_or_elided("main.(*P).Put"));
    }
}
