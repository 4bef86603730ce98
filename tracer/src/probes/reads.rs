//! What a pool's probes read, in the kernel's terms: where the object's identity, its size
//! and the pool instance are at Get and at Put, the size Get is asked for, and the second
//! word of identity that tells an object from another one later put at its address.

use tracer_common::WordSpec;

use super::{
    keyspec::{ObjectKind, Spec},
    spec::PoolSpec,
};
use crate::{
    error::{Error, Result},
    gobin::{is_method, ResolvedFunction},
};

/// What a pool's probes read, in the kernel's terms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reads {
    pub get_key: WordSpec,
    pub get_size: WordSpec,
    /// Get's receiver, at its entry (none for a function).
    pub get_receiver: WordSpec,
    /// The size Get is asked for, at its entry, when the pool is sized.
    pub get_request: Option<WordSpec>,
    pub put_key: WordSpec,
    pub put_size: WordSpec,
    pub put_receiver: WordSpec,
    /// The object's second word of identity (`ProbeSite::ident`) at Get and at Put.
    pub get_ident: WordSpec,
    pub put_ident: WordSpec,
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
        let (get_ident, put_ident) = match (spec.keys.get_key, spec.keys.put_key) {
            // A word past the registers is no identity, not an error.
            (None, None) => (
                (ident(spec.object, get_key).to_word_spec(None)).unwrap_or_default(),
                (ident(spec.object, put_key).to_word_spec(put.dictionary)).unwrap_or_default(),
            ),
            // Keys the user placed say nothing of what else stays the same.
            _ => (WordSpec::default(), WordSpec::default()),
        };
        Ok(Self {
            get_key: get_key.to_word_spec(None)?,
            get_size: get_size.to_word_spec(None)?,
            get_receiver: match is_method(&get.requested) {
                true => Spec::Word(0).to_word_spec(get.dictionary)?,
                false => WordSpec::default(),
            },
            get_request: match spec.keys.get_request {
                None | Some(Spec::None) => None,
                Some(request) => Some(request.to_word_spec(get.dictionary)?),
            },
            put_key: put_key.to_word_spec(put.dictionary)?,
            put_size: Spec::None.to_word_spec(None)?,
            put_receiver: Spec::Word(0).to_word_spec(put.dictionary)?,
            get_ident,
            put_ident,
        })
    }
}

/// Where the second word of an object's identity is, given where its key is: a `*[]T`'s
/// data pointer (written anew by `make` when the header's memory is reused), a slice's
/// capacity. A pointer or an interface has no word its owner may not rewrite.
fn ident(object: ObjectKind, key: Spec) -> Spec {
    match (object, key) {
        (ObjectKind::SlicePtr, Spec::Word(word)) => Spec::Load { word, offset: 0 },
        (ObjectKind::Slice, Spec::Word(word)) => Spec::Word(word + 2),
        _ => Spec::None,
    }
}
