//! What a pool's probes read, in the kernel's terms: where the object's identity, its size
//! and the pool instance are at Get and at Put.

use tracer_common::WordSpec;

use super::{keyspec::Spec, spec::PoolSpec};
use crate::{
    error::{Error, Result},
    gobin::{is_method, ResolvedFunction},
};

/// What a pool's probes read, in the kernel's terms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reads {
    pub get_key: WordSpec,
    pub get_size: WordSpec,
    /// Get's receiver, at its entry.
    pub get_receiver: WordSpec,
    pub put_key: WordSpec,
    pub put_size: WordSpec,
    pub put_receiver: WordSpec,
}

impl Reads {
    /// The reads of `spec`, whose Get and Put resolved to `get` and `put`.
    pub(crate) fn new(
        spec: &PoolSpec,
        get: &ResolvedFunction,
        put: &ResolvedFunction,
    ) -> Result<Self> {
        let (default_key, default_size) = spec.object.get_defaults();
        let first_arg = u8::from(is_method(&put.requested));
        let get_key = spec.keys.get_key.unwrap_or(default_key);
        let get_size = spec.keys.get_size.unwrap_or(default_size);
        let put_key = (spec.keys.put_key).unwrap_or(spec.object.put_default(first_arg));
        if get_key == Spec::None || put_key == Spec::None {
            return Err(Error::Usage(
                "an object identity (--get-key, --put-key) cannot be none".into(),
            ));
        }
        Ok(Self {
            get_key: get_key.to_word_spec(None)?,
            get_size: get_size.to_word_spec(None)?,
            get_receiver: Spec::Word(0).to_word_spec(get.dictionary)?,
            put_key: put_key.to_word_spec(put.dictionary)?,
            put_size: Spec::None.to_word_spec(None)?,
            put_receiver: Spec::Word(0).to_word_spec(put.dictionary)?,
        })
    }
}
