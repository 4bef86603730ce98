//! A pool as pooltrace traces it, before it is resolved against a binary: which functions,
//! what kind of pool, where the object's identity is read, and what else to record.

use super::keyspec::{ObjectKind, Spec, Words};
use crate::error::Result;

/// What an object dropped without a Put means for a pool.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// Every Get must be Put (Thanos', Prometheus' and most hand-written pools): an object
    /// dropped without a Put is a leak.
    #[default]
    Counting,
    /// Dropping is allowed, as sync.Pool says: an object dropped without a Put is lost reuse
    /// (an extra allocation), reported but not scored as a leak.
    Sync,
}

/// Where the user moved the object's identity and size from their defaults for its kind
/// (`--get-key`, `--get-size`, `--put-key`, or the same keys in the pools file), and where
/// Get's entry finds the size it is asked for (`--get-request`; a preset's default): as text
/// until checked, then as [`Spec`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOverrides<T> {
    pub get_key: Option<T>,
    pub get_size: Option<T>,
    pub put_key: Option<T>,
    pub get_request: Option<T>,
}

impl<T> Default for KeyOverrides<T> {
    fn default() -> Self {
        Self {
            get_key: None,
            get_size: None,
            put_key: None,
            get_request: None,
        }
    }
}

impl<T> KeyOverrides<T> {
    pub fn is_empty(&self) -> bool {
        self.get_key.is_none()
            && self.get_size.is_none()
            && self.put_key.is_none()
            && self.get_request.is_none()
    }
}

impl KeyOverrides<String> {
    /// The specs, checked; each error names the option it came from.
    pub(crate) fn parse(&self) -> Result<KeyOverrides<Spec>> {
        let spec = |text: &Option<String>, side, what, allow_none| {
            text.as_deref()
                .map(|t| Spec::parse(t, side, what, allow_none))
                .transpose()
        };
        Ok(KeyOverrides {
            get_key: spec(&self.get_key, Words::Results, "--get-key", false)?,
            get_size: spec(&self.get_size, Words::Results, "--get-size", true)?,
            put_key: spec(&self.put_key, Words::Arguments, "--put-key", false)?,
            get_request: spec(&self.get_request, Words::Arguments, "--get-request", true)?,
        })
    }
}

/// A pool as pooltrace traces it.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub get: String,
    pub put: String,
    pub object: ObjectKind,
    pub kind: PoolKind,
    /// Overrides of the object kind's defaults.
    pub keys: KeyOverrides<Spec>,
    /// Trace only the pool instance (receiver) at this address.
    pub receiver: Option<u64>,
    /// Record the Put stacks objects come back through.
    pub release_paths: bool,
    /// Catch Puts of objects already back in the pool.
    pub double_puts: bool,
    /// Send every Get and Put to the stream ring buffer.
    pub stream: bool,
    /// Where the pool instance keeps its own books, read from memory at each report.
    pub books: Option<BooksSpec>,
    /// The size Get is asked for (`keys.get_request`) is read even where that adds a probe
    /// at Get's entry: the user named it, or gave `--sizes`. A preset's alone is read only
    /// where the entry is probed anyway.
    pub sizes_may_add_probe: bool,
}

/// Where a counting pool keeps its own books: byte offsets into the pool instance (Get's
/// receiver) of the bytes it lends out now and of the most it will lend (Thanos'
/// `usedTotal` and `maxTotal`), each an unsigned 64-bit word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BooksSpec {
    pub used: u32,
    pub limit: Option<u32>,
}

impl BooksSpec {
    /// The pools file's `used` and `limit`, each written `*recv+OFFSET` (OFFSET decimal or
    /// 0x hex): the word at OFFSET bytes into the instance.
    pub fn parse(used: &str, limit: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            used: field_offset("used", used)?,
            limit: limit.map(|l| field_offset("limit", l)).transpose()?,
        })
    }
}

fn field_offset(what: &str, text: &str) -> Result<u32, String> {
    let bad = || {
        format!("{what} {text:?} is not *recv+OFFSET, the word OFFSET bytes into the pool instance")
    };
    let offset = text.trim().strip_prefix("*recv").ok_or_else(bad)?.trim();
    if offset.is_empty() {
        return Ok(0);
    }
    let number = offset.strip_prefix('+').ok_or_else(bad)?.trim();
    let parsed = match number.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => number.parse(),
    };
    parsed.map_err(|_| bad())
}
