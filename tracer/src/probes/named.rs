//! A pool as the user names it, on the command line or in the pools file: a preset, or Get
//! and Put with their details, still as text.

use super::{
    keyspec::ObjectKind,
    presets,
    spec::{BooksSpec, KeyOverrides, PoolKind, PoolSpec},
};
use crate::error::Result;

/// A pool as the user names it, on the command line or in the pools file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolEntry {
    /// A preset, which stands for the pools of its kind that a binary has.
    Preset(presets::Preset),
    Custom(CustomPool),
}

/// A pool the user describes by its functions (`--get/--put` or the pools file), before it
/// is checked: the key specs are still text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomPool {
    pub get: String,
    pub put: String,
    pub object: ObjectKind,
    pub kind: PoolKind,
    pub keys: KeyOverrides<String>,
    /// Where the instance keeps its own books (the pools file's `used` and `limit`).
    pub books: Option<BooksSpec>,
}

impl CustomPool {
    pub fn spec(&self) -> Result<PoolSpec> {
        Ok(PoolSpec {
            get: self.get.clone(),
            put: self.put.clone(),
            object: self.object,
            kind: self.kind,
            keys: self.keys.parse()?,
            receiver: None,
            release_paths: true,
            double_puts: false,
            stream: false,
            books: self.books,
            sizes_may_add_probe: true,
        })
    }
}
