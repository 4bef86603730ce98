//! Where an object's identity and size, and the size Get is asked for, live at a probe site,
//! from the user's point of view.
//!
//! A spec names a word of Go's register ABI: `rN` is word N of Get's results, `aN` word N of
//! Put's arguments, or of Get's for the size it is asked for (receiver first for methods). `*w+OFF` loads the 8 bytes at `w + OFF`;
//! `iface:w` reads an interface from words w (type) and w+1 (data). A generic shape function's
//! dictionary register is accounted for here, so specs stay in terms of the Go signature.

use clap::ValueEnum;
use tracer_common::{WordSpec, WORD_IFACE, WORD_LOAD, WORD_NONE, WORD_REG};

use crate::error::{Error, Result};

/// The Go type a pool hands out, which decides where identity and size are by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    /// A pointer, `*T`: identity is the pointer; size unknown.
    Ptr,
    /// A slice, `[]T`: identity is its data pointer; size is its capacity.
    Slice,
    /// A pointer to a slice, `*[]T` (Thanos' pools): identity is the pointer; size is the
    /// pointed-to slice's capacity.
    SlicePtr,
    /// An interface, `any` (sync.Pool): identity is the data word, or a boxed slice's data
    /// pointer; size unknown.
    Iface,
}

/// Which side of the pool a site belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Get,
    Put,
}

/// Which words a spec names: a function's results (`rN`, at Get's RET) or its arguments
/// (`aN`, at an entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Words {
    Results,
    Arguments,
}

/// A parsed spec, in Go-signature terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    None,
    Word(u8),
    Load { word: u8, offset: u32 },
    Iface(u8),
}

impl Spec {
    /// Parses `rN`, `aN`, `*rN+OFF`, `iface:rN` (and `none` where `allow_none`).
    pub fn parse(text: &str, words: Words, what: &'static str, allow_none: bool) -> Result<Self> {
        let bad = |reason: String| Error::BadSpec {
            what,
            spec: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed == "none" {
            return if allow_none {
                Ok(Self::None)
            } else {
                Err(bad("an identity is required".into()))
            };
        }
        if let Some(word) = trimmed.strip_prefix("iface:") {
            return Ok(Self::Iface(parse_word(word, words).map_err(bad)?));
        }
        if let Some(load) = trimmed.strip_prefix('*') {
            let (word, offset) = match load.split_once('+') {
                Some((word, offset)) => (word, parse_offset(offset).map_err(bad)?),
                None => (load, 0),
            };
            return Ok(Self::Load {
                word: parse_word(word, words).map_err(bad)?,
                offset,
            });
        }
        Ok(Self::Word(parse_word(trimmed, words).map_err(bad)?))
    }

    /// The kernel-side form. `dictionary` is the argument slot of a shape function's
    /// dictionary (see `ResolvedFunction::dictionary`): argument words from it on sit one
    /// register later. Result words pass `None`.
    pub fn to_word_spec(self, dictionary: Option<u8>) -> Result<WordSpec> {
        let last = tracer_common::GO_ABI_REGS.len() as u8 - 1;
        let register = |word: u8, width: u8| {
            let reg = match dictionary {
                Some(slot) if word >= slot => word + 1,
                _ => word,
            };
            if reg + width - 1 > last {
                Err(Error::Usage(format!(
                    "word {word} is passed on the stack, not in a register; pooltrace reads \
                     the first {} register words",
                    last + 1
                )))
            } else {
                Ok(reg)
            }
        };
        let spec = |kind, reg, offset| WordSpec {
            kind,
            reg,
            _pad: [0; 2],
            offset,
        };
        Ok(match self {
            Self::None => spec(WORD_NONE, 0, 0),
            Self::Word(w) => spec(WORD_REG, register(w, 1)?, 0),
            Self::Load { word, offset } => spec(WORD_LOAD, register(word, 1)?, offset),
            Self::Iface(w) => spec(WORD_IFACE, register(w, 2)?, 0),
        })
    }
}

impl ObjectKind {
    /// Where Get's result object and its size are.
    pub fn get_defaults(self) -> (Spec, Spec) {
        match self {
            Self::Ptr => (Spec::Word(0), Spec::None),
            // A slice result is (ptr, len, cap) in r0..r2.
            Self::Slice => (Spec::Word(0), Spec::Word(2)),
            // cap is the third word of the slice header the pointer points at.
            Self::SlicePtr => (
                Spec::Word(0),
                Spec::Load {
                    word: 0,
                    offset: 16,
                },
            ),
            Self::Iface => (Spec::Iface(0), Spec::None),
        }
    }

    /// Where Put's object is; `first_arg` is 1 for methods (after the receiver), else 0.
    pub fn put_default(self, first_arg: u8) -> Spec {
        match self {
            Self::Iface => Spec::Iface(first_arg),
            Self::Ptr | Self::Slice | Self::SlicePtr => Spec::Word(first_arg),
        }
    }
}

fn parse_word(text: &str, words: Words) -> Result<u8, String> {
    let (prefix, expected) = match words {
        Words::Results => ('r', "a result word rN"),
        Words::Arguments => ('a', "an argument word aN"),
    };
    let index = text
        .strip_prefix(prefix)
        .ok_or_else(|| format!("expected {expected} (e.g. {prefix}0)"))?;
    let n: u8 = index
        .parse()
        .map_err(|_| format!("{index:?} is not a word number"))?;
    if usize::from(n) >= tracer_common::GO_ABI_REGS.len() {
        return Err(format!(
            "word {n} is past the {} register words",
            tracer_common::GO_ABI_REGS.len()
        ));
    }
    Ok(n)
}

fn parse_offset(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a byte offset"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(text: &str) -> Result<Spec> {
        Spec::parse(text, Words::Results, "key", true)
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(get("r0").unwrap(), Spec::Word(0));
        assert_eq!(
            get("*r0+16").unwrap(),
            Spec::Load {
                word: 0,
                offset: 16
            }
        );
        assert_eq!(
            get("*r1+0x10").unwrap(),
            Spec::Load {
                word: 1,
                offset: 16
            }
        );
        assert_eq!(get("iface:r0").unwrap(), Spec::Iface(0));
        assert_eq!(get("none").unwrap(), Spec::None);
        assert_eq!(
            Spec::parse("a2", Words::Arguments, "key", false).unwrap(),
            Spec::Word(2)
        );
    }

    #[test]
    fn rejects_words_of_the_wrong_side_and_out_of_range() {
        assert!(get("a0").is_err());
        assert!(get("r9").is_err());
        assert!(get("*r0+x").is_err());
        assert!(Spec::parse("none", Words::Arguments, "key", false).is_err());
    }

    #[test]
    fn the_dictionary_moves_the_words_after_it_one_register_later() {
        // A Go 1.20+ method: receiver, dictionary, then the arguments.
        let receiver = Spec::Word(0).to_word_spec(Some(1)).unwrap();
        let argument = Spec::Word(1).to_word_spec(Some(1)).unwrap();
        assert_eq!((receiver.reg, argument.reg), (0, 2));
        // A Go 1.19 method or any generic function: the dictionary first.
        assert_eq!(Spec::Word(0).to_word_spec(Some(0)).unwrap().reg, 1);
        assert_eq!(Spec::Word(1).to_word_spec(None).unwrap().reg, 1);
        assert!(Spec::Iface(7).to_word_spec(Some(0)).is_err());
    }
}
