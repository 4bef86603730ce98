//! The pools file (`--pools-file`, TOML): the pools of a service written down once, after
//! `pooltrace list` found them, instead of a long command line each time. The agent mode
//! reads the same file.
//!
//! ```toml
//! [[pool]]
//! preset = "sync"
//!
//! [[pool]]
//! get = "main.(*BufPool).Get"
//! put = "main.(*BufPool).Put"
//! object = "ptr"          # ptr | slice | slice-ptr | iface (default ptr)
//! kind = "counting"       # counting | sync (default counting)
//! get_key = "r0"          # optional, as --get-key; also get_size, put_key
//! get_request = "a1"      # optional, as --get-request: the size Get is asked for
//! used = "*recv+56"       # optional: the instance's own count of bytes lent out, and
//! limit = "*recv+48"      # the most it lends (words at these offsets into Get's receiver)
//! ```

use std::path::Path;

use clap::ValueEnum;
use serde::Deserialize;

use super::{
    keyspec::ObjectKind,
    named::{CustomPool, PoolEntry},
    presets::Preset,
    spec::{BooksSpec, KeyOverrides, PoolKind},
};
use crate::error::{Error, PoolsFileMistake as Mistake, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    pool: Vec<Entry>,
}

/// A `[[pool]]` as written: either a preset, or Get and Put with optional details.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    preset: Option<String>,
    get: Option<String>,
    put: Option<String>,
    object: Option<String>,
    kind: Option<String>,
    // Flat, not a flattened `KeyOverrides`: serde cannot flatten under deny_unknown_fields.
    get_key: Option<String>,
    get_size: Option<String>,
    put_key: Option<String>,
    get_request: Option<String>,
    used: Option<String>,
    limit: Option<String>,
}

/// Reads and checks the pools file at `path`.
pub fn read(path: &Path) -> Result<Vec<PoolEntry>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|mistake| Error::PoolsFile {
        path: path.to_path_buf(),
        mistake,
    })
}

/// The pools of a file's text, or why it is wrong.
fn parse(text: &str) -> std::result::Result<Vec<PoolEntry>, Mistake> {
    let file: File = toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line_start = before.rfind('\n').map_or(0, |at| at + 1);
                Mistake::Syntax {
                    line: before.matches('\n').count() + 1,
                    column: before[line_start..].chars().count() + 1,
                    message,
                }
            }
            None => Mistake::Unplaced { message },
        }
    })?;
    if file.pool.is_empty() {
        return Err(Mistake::NoPools);
    }
    file.pool
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            entry.check().map_err(|reason| Mistake::Pool {
                number: i + 1,
                reason,
            })
        })
        .collect()
}

impl Entry {
    fn check(self) -> std::result::Result<PoolEntry, String> {
        let keys = KeyOverrides {
            get_key: self.get_key,
            get_size: self.get_size,
            put_key: self.put_key,
            get_request: self.get_request,
        };
        if let Some(preset) = &self.preset {
            let details = [
                &self.get,
                &self.put,
                &self.object,
                &self.kind,
                &self.used,
                &self.limit,
            ];
            if details.iter().any(|d| d.is_some()) || !keys.is_empty() {
                return Err(
                    "a preset takes no get, put, object, kind, key specs, used or limit".into(),
                );
            }
            return choice::<Preset>(preset, "preset").map(PoolEntry::Preset);
        }
        let (Some(get), Some(put)) = (self.get, self.put) else {
            return Err("name a preset, or both get and put".into());
        };
        let books = match (&self.used, &self.limit) {
            (Some(used), limit) => Some(BooksSpec::parse(used, limit.as_deref())?),
            (None, Some(_)) => return Err("limit needs used, the count it limits".into()),
            (None, None) => None,
        };
        Ok(PoolEntry::Custom(CustomPool {
            get,
            put,
            object: match &self.object {
                Some(object) => choice::<ObjectKind>(object, "object")?,
                None => ObjectKind::Ptr,
            },
            kind: match &self.kind {
                Some(kind) => choice::<PoolKind>(kind, "kind")?,
                None => PoolKind::Counting,
            },
            keys,
            books,
        }))
    }
}

/// One of the values the command line accepts for the same setting.
fn choice<T: ValueEnum>(text: &str, what: &str) -> std::result::Result<T, String> {
    T::from_str(text, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| Some(v.to_possible_value()?.get_name().to_owned()))
            .collect();
        format!("{what} {text:?} is not one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_custom_pools_keep_their_order_and_defaults() {
        let pools = parse(
            r#"
            [[pool]]
            get = "main.(*P).Get"
            put = "main.(*P).Put"

            [[pool]]
            preset = "sync"

            [[pool]]
            get = "main.getBuf"
            put = "main.putBuf"
            object = "slice"
            kind = "sync"
            get_size = "none"
            "#,
        )
        .unwrap();
        let custom = |get: &str, put: &str, object, kind, get_size: Option<&str>| {
            PoolEntry::Custom(CustomPool {
                get: get.into(),
                put: put.into(),
                object,
                kind,
                keys: KeyOverrides {
                    get_size: get_size.map(Into::into),
                    ..KeyOverrides::default()
                },
                books: None,
            })
        };
        assert_eq!(
            pools,
            [
                custom(
                    "main.(*P).Get",
                    "main.(*P).Put",
                    ObjectKind::Ptr,
                    PoolKind::Counting,
                    None
                ),
                PoolEntry::Preset(Preset::Sync),
                custom(
                    "main.getBuf",
                    "main.putBuf",
                    ObjectKind::Slice,
                    PoolKind::Sync,
                    Some("none")
                ),
            ]
        );
    }

    #[test]
    fn used_and_limit_are_offsets_into_the_instance() {
        let pools = parse(
            "[[pool]]\nget = \"a\"\nput = \"b\"\nused = \"*recv+56\"\nlimit = \"*recv + 0x30\"\n",
        )
        .unwrap();
        let PoolEntry::Custom(pool) = &pools[0] else {
            panic!("{pools:?}")
        };
        let books = BooksSpec {
            used: 56,
            limit: Some(48),
        };
        assert_eq!(pool.books, Some(books));
        let wrong = |used: &str| {
            let text = format!("[[pool]]\nget = \"a\"\nput = \"b\"\nused = \"{used}\"\n");
            parse(&text).unwrap_err().to_string()
        };
        assert_eq!(
            wrong("r0+8"),
            "pool 1: used \"r0+8\" is not *recv+OFFSET, the word OFFSET bytes into the pool instance"
        );
        assert!(wrong("*recv+x").starts_with("pool 1: used "));
        assert_eq!(
            parse("[[pool]]\nget = \"a\"\nput = \"b\"\nlimit = \"*recv\"\n")
                .unwrap_err()
                .to_string(),
            "pool 1: limit needs used, the count it limits"
        );
    }

    #[test]
    fn mistakes_name_the_pool_or_the_line() {
        assert_eq!(
            parse("[[pool]]\nget = \"a\"\n").unwrap_err().to_string(),
            "pool 1: name a preset, or both get and put"
        );
        assert_eq!(
            parse("[[pool]]\npreset = \"sync\"\n[[pool]]\npreset = \"redis\"\n")
                .unwrap_err()
                .to_string(),
            "pool 2: preset \"redis\" is not one of sync, thanos, prometheus, nats"
        );
        assert_eq!(
            parse("[[pool]]\npreset = \"sync\"\nobject = \"ptr\"\n")
                .unwrap_err()
                .to_string(),
            "pool 1: a preset takes no get, put, object, kind, key specs, used or limit"
        );
        assert_eq!(
            parse("[[pool]]\nget = \"a\"\nput = \"b\"\nkind = \"leaky\"\n")
                .unwrap_err()
                .to_string(),
            "pool 1: kind \"leaky\" is not one of counting, sync"
        );
        let unknown = parse("[[pool]]\n  gett = \"a\"\n").unwrap_err().to_string();
        assert!(
            unknown.starts_with("line 2, column 3: unknown field `gett`"),
            "{unknown}"
        );
        assert_eq!(parse("").unwrap_err().to_string(), "it names no [[pool]]");
        // A span that falls inside a multi-byte character must not panic; columns count
        // characters.
        let accented = parse("# é\n[[pool]]\né = 1\n").unwrap_err().to_string();
        assert!(accented.starts_with("line 3, column 1: "), "{accented}");
    }
}
