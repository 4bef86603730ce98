//! Finding pool-like Get/Put pairs in a binary, for `pooltrace list`: methods `Get` and
//! `Put` of one type, and plain functions whose names differ only in Get/Put
//! (`nbPoolGet`/`nbPoolPut`). Generic pools are listed per instantiation the dictionaries
//! name (see `generics`), so a pool whose Get or Put exists only as a shape function is
//! found too; a pair of shape functions no dictionary names is listed by the shape names.
//! Wrappers that exist only inlined are found by the names in pclntab's inline trees.
//!
//! A name is not a pool: key-value stores, request builders and compiler-made equality
//! functions have Get/Put pairs too. A pair is marked pool-like by what its Put does with
//! the object, read from its code (or from its inlined copies): it hands it to a
//! `sync.Pool`, sends it on a channel, or appends it to a free list.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{
    calls::{direct_call_targets, direct_calls},
    names::split_type_args,
    Function, GoBinary,
};

/// One Get/Put pair and how the program reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct PoolPair {
    /// The names to give `--get`/`--put`.
    pub(crate) get: String,
    pub(crate) put: String,
    /// The shape functions probed for a generic instantiation.
    pub(crate) get_shape: Option<String>,
    pub(crate) put_shape: Option<String>,
    /// Where a generic pair's names come from.
    pub(crate) named_from: Option<NamedFrom>,
    /// Direct call sites of the probed Get and Put.
    pub(crate) get_calls: usize,
    pub(crate) put_calls: usize,
    /// Call sites where Get and Put were inlined (traced on the pool call inside each).
    pub(crate) get_inlined: usize,
    pub(crate) put_inlined: usize,
    /// Get or Put exists only inlined: it has no code of its own, only inlined copies.
    pub(crate) get_inlined_only: bool,
    pub(crate) put_inlined_only: bool,
    /// What makes the pair look like a pool, from Put's code ("Put calls
    /// sync.(*Pool).Put"); None when only the names suggest one.
    pub(crate) pool_sign: Option<String>,
}

/// How a generic pair is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NamedFrom {
    /// The instantiation, from the dictionary its callers pass (`main.(*P[uint8]).Get`).
    Dictionary,
    /// The instantiation, from a wrapper's name, where no dictionary could be read.
    Wrapper,
    /// The shape function itself: no instantiation could be named.
    Shape,
}

/// A pair before counting: its names and the functions probed for them.
struct Found {
    get: String,
    put: String,
    get_fn: Function,
    put_fn: Function,
    named_from: Option<NamedFrom>,
    get_inlined_only: bool,
    put_inlined_only: bool,
}

impl GoBinary {
    /// Every Get/Put pair, most-called first, each with its sign of being a pool if it has
    /// one. Generic pools are listed once per instantiation their dictionaries name, and by
    /// their shape functions when none does.
    pub(crate) fn pool_pairs(&self) -> Vec<PoolPair> {
        let mut found = self.dictionary_pairs();
        let covered = |found: &[Found], get: &Function, put: &Function| {
            (found.iter()).any(|f| same_function(&f.get_fn, get) && same_function(&f.put_fn, put))
        };
        for pair in self.named_pairs() {
            let generic = pair.named_from.is_some();
            // An elided name (`main.(*P[...]).Get`, stripped Go 1.18/1.19) stands for every
            // instantiation at once: useless next to the ones the dictionaries name.
            let elided_and_named =
                pair.get.contains("[...]") && found.iter().any(|f| same_generic(&f.get, &pair.get));
            let listed = generic && covered(&found, &pair.get_fn, &pair.put_fn);
            if !elided_and_named && !listed {
                found.push(pair);
            }
        }
        for pair in self.shape_pairs() {
            if !covered(&found, &pair.get_fn, &pair.put_fn) {
                found.push(pair);
            }
        }
        self.counted(found)
    }

    /// Generic pairs named by the dictionaries passed to their shape functions.
    fn dictionary_pairs(&self) -> Vec<Found> {
        let index = self.generic_index();
        let mut found: Vec<Found> = index
            .iter()
            .filter_map(|(get, get_fn)| {
                let put = counterpart(get)?;
                let put_fn = index.get(&put)?;
                Some(Found {
                    get: get.clone(),
                    put,
                    get_fn: get_fn.clone(),
                    put_fn: put_fn.clone(),
                    named_from: Some(NamedFrom::Dictionary),
                    get_inlined_only: false,
                    put_inlined_only: false,
                })
            })
            .collect();
        found.sort_by(|a, b| a.get.cmp(&b.get));
        found
    }

    /// Pairs whose Get and Put are both functions named in the binary (shape functions
    /// aside), with code or only inlined, resolved as `--get`/`--put` would resolve them.
    fn named_pairs(&self) -> Vec<Found> {
        let inlined_only = self.inlined_only_names();
        let names: HashSet<&str> = (self.functions().iter().map(|f| f.name.as_str()))
            .chain(inlined_only.iter().map(String::as_str))
            .filter(|name| !name.contains("go.shape."))
            .collect();
        let mut candidates: Vec<(String, String)> = names
            .iter()
            .filter_map(|name| {
                Some((
                    name.to_string(),
                    counterpart(name).filter(|put| names.contains(put.as_str()))?,
                ))
            })
            .collect();
        candidates.sort();
        candidates.dedup();
        candidates
            .into_iter()
            .filter_map(|(get, put)| {
                let get_fn = self.resolve(&get).ok()?;
                let put_fn = self.resolve(&put).ok()?;
                let named_from = get.contains('[').then_some(NamedFrom::Wrapper);
                Some(Found {
                    get,
                    put,
                    get_inlined_only: get_fn.inlined_only,
                    put_inlined_only: put_fn.inlined_only,
                    get_fn: get_fn.function,
                    put_fn: put_fn.function,
                    named_from,
                })
            })
            .collect()
    }

    /// Pairs of shape functions, named as they are (`main.(*P[go.shape.uint8]).Get`).
    fn shape_pairs(&self) -> Vec<Found> {
        self.functions()
            .iter()
            .filter(|f| f.name.contains("go.shape."))
            .filter_map(|get_fn| {
                let put = counterpart(&get_fn.name)?;
                let put_fn = self.function(&put)?;
                Some(Found {
                    get: get_fn.name.clone(),
                    put,
                    get_fn: get_fn.clone(),
                    put_fn: put_fn.clone(),
                    named_from: Some(NamedFrom::Shape),
                    get_inlined_only: false,
                    put_inlined_only: false,
                })
            })
            .collect()
    }

    /// Call sites and inlined sites of each pair, most-called first.
    fn counted(&self, found: Vec<Found>) -> Vec<PoolPair> {
        let probed: Vec<&str> = found
            .iter()
            .flat_map(|f| [f.get_fn.name.as_str(), f.put_fn.name.as_str()])
            .collect();
        let inlined = self.inlined_sites(&probed);
        let calls = self.direct_call_counts();
        let count = |addr: u64| calls.get(&addr).copied().unwrap_or(0);
        let shape = |name: &str, f: &Function| (f.name != name).then(|| f.name.clone());
        let gives_to = self.object_destinations();
        let mut pairs: Vec<PoolPair> = found
            .iter()
            .zip(inlined.chunks(2))
            .map(|(f, inlined)| PoolPair {
                get_shape: shape(&f.get, &f.get_fn),
                put_shape: shape(&f.put, &f.put_fn),
                named_from: f.named_from,
                get_calls: count(f.get_fn.addr),
                put_calls: count(f.put_fn.addr),
                get_inlined: inlined[0],
                put_inlined: inlined[1],
                get_inlined_only: f.get_inlined_only,
                put_inlined_only: f.put_inlined_only,
                pool_sign: self.pool_sign(f, &gives_to),
                get: f.get.clone(),
                put: f.put.clone(),
            })
            .collect();
        // Many pairs on one type are an API (`(*S3).GetObjectAclRequest`, ...), whatever
        // their Puts append to: a pool has a pair or two.
        let mut families: HashMap<&str, usize> = HashMap::new();
        for pair in &pairs {
            *families.entry(family(&pair.get)).or_default() += 1;
        }
        let api: HashSet<String> = (families.into_iter())
            .filter(|&(_, pairs)| pairs > MAX_POOLS_PER_TYPE)
            .map(|(family, _)| family.to_owned())
            .collect();
        for pair in &mut pairs {
            if api.contains(family(&pair.get)) && pair.pool_sign.as_deref() == Some(APPENDS) {
                pair.pool_sign = None;
            }
        }
        pairs.sort_by(|a, b| {
            (b.get_calls + b.put_calls)
                .cmp(&(a.get_calls + a.put_calls))
                .then(a.get.cmp(&b.get))
        });
        pairs
    }

    /// The functions a pool's Put hands its object to, by address, each with the sign it
    /// gives: a `sync.Pool`, a channel send, or an append.
    fn object_destinations(&self) -> HashMap<u64, &'static str> {
        (POOL_DESTINATIONS.iter())
            .filter_map(|&(name, sign)| Some((self.function(name)?.addr, sign)))
            .collect()
    }

    /// What `found`'s Put calls that makes it pool-like. An append is a free list only if
    /// Get makes an object when the list is empty: a map's Put appends too, and its Get
    /// allocates nothing.
    fn pool_sign(&self, found: &Found, gives_to: &HashMap<u64, &str>) -> Option<String> {
        let sign = self.first_call(&found.put, &found.put_fn, found.put_inlined_only, |t| {
            gives_to.get(&t).copied()
        })?;
        let allocates = || {
            let allocator = |target: u64| {
                let name = &self.function_at(target)?.name;
                ALLOCATORS.iter().any(|a| name.starts_with(a)).then_some(())
            };
            (self.first_call(&found.get, &found.get_fn, found.get_inlined_only, allocator))
                .is_some()
        };
        (sign != APPENDS || allocates()).then(|| sign.to_owned())
    }

    /// The first call in function `name`'s code (`f`), or in its inlined copies when it
    /// exists only inlined, that `sign` gives a value for.
    fn first_call<T>(
        &self,
        name: &str,
        f: &Function,
        inlined_only: bool,
        sign: impl Fn(u64) -> Option<T>,
    ) -> Option<T> {
        if !inlined_only {
            let code = self.code(f)?;
            return direct_call_targets(code, f.addr).find_map(sign);
        }
        self.inlined_copies(name).iter().find_map(|copy| {
            let code = self.code(&copy.host)?;
            direct_calls(code, copy.host.addr)
                .filter(|&(pc, _)| self.runs_inlined_copy(copy, pc))
                .find_map(|(_, target)| sign(target))
        })
    }

    /// Direct call sites per target address, over every function's code.
    fn direct_call_counts(&self) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for f in self.functions() {
            let Some(code) = self.code(f) else { continue };
            for target in direct_call_targets(code, f.addr) {
                *counts.entry(target).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// Calls by which a Put gives its object to a pool, and the sign each is. `growslice` is
/// `append` growing a slice: a free list (a key-value store's Put copies bytes instead).
const POOL_DESTINATIONS: [(&str, &str); 4] = [
    ("sync.(*Pool).Put", "Put calls sync.(*Pool).Put"),
    ("runtime.chansend1", "Put sends on a channel"),
    ("runtime.selectnbsend", "Put sends on a channel"),
    ("runtime.growslice", APPENDS),
];

/// The weakest sign: many functions append. It counts only where Get allocates, on a type
/// with at most `MAX_POOLS_PER_TYPE` pairs.
const APPENDS: &str = "Put appends to a slice";
const MAX_POOLS_PER_TYPE: usize = 3;

/// What `new(T)` and `make` call, by name prefix (Go 1.26+ calls size-specialized
/// `runtime.mallocgc*` functions directly).
const ALLOCATORS: [&str; 3] = ["runtime.newobject", "runtime.makeslice", "runtime.mallocgc"];

/// The type (or, for a plain function, the package) a Get belongs to.
fn family(get: &str) -> &str {
    get.rsplit_once('.').map_or(get, |(family, _)| family)
}

/// Whether `a` and `b` are one function: one address, or for functions that exist only
/// inlined (all at address 0), one name.
fn same_function(a: &Function, b: &Function) -> bool {
    a.addr == b.addr && (a.addr != 0 || a.name == b.name)
}

/// Whether two names are instantiations of one generic function or method.
fn same_generic(a: &str, b: &str) -> bool {
    match (split_type_args(a), split_type_args(b)) {
        (Some((pa, _, sa)), Some((pb, _, sb))) => pa == pb && sa == sb,
        _ => false,
    }
}

/// The Put that goes with a Get: `T.Get` -> `T.Put`, `nbPoolGet` -> `nbPoolPut`,
/// `getBuf` -> `putBuf`.
fn counterpart(get: &str) -> Option<String> {
    let (prefix, last) = get.rsplit_once('.')?;
    let put = if let Some(stem) = last.strip_prefix("get") {
        format!("put{stem}")
    } else {
        let at = last.rfind("Get")?;
        format!("{}Put{}", &last[..at], &last[at + 3..])
    };
    Some(format!("{prefix}.{put}"))
}

#[cfg(test)]
mod tests {
    use super::counterpart;

    #[test]
    fn puts_are_named_after_their_gets() {
        assert_eq!(
            counterpart("main.(*BufPool).Get").as_deref(),
            Some("main.(*BufPool).Put")
        );
        assert_eq!(
            counterpart("x/server.nbPoolGet").as_deref(),
            Some("x/server.nbPoolPut")
        );
        assert_eq!(counterpart("main.getBuf").as_deref(), Some("main.putBuf"));
        assert_eq!(
            counterpart("main.(*P[uint8]).Get").as_deref(),
            Some("main.(*P[uint8]).Put")
        );
        assert_eq!(counterpart("main.load"), None);
    }
}
