//! Finding pool-like Get/Put pairs in a binary, for `pooltrace list`: methods `Get` and
//! `Put` of one type, and plain functions whose names differ only in Get/Put
//! (`nbPoolGet`/`nbPoolPut`). Generic pools are listed per instantiation the dictionaries
//! name (see `generics`), so a pool whose Get or Put exists only as a shape function is
//! found too; a pair of shape functions no dictionary names is listed by the shape names.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{calls::direct_call_targets, names::split_type_args, Function, GoBinary};

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
    /// Call sites where Get and Put were inlined (invisible to probes).
    pub(crate) get_inlined: usize,
    pub(crate) put_inlined: usize,
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
}

impl GoBinary {
    /// Every pool-like pair, most-called first. Generic pools are listed once per
    /// instantiation their dictionaries name, and by their shape functions when none does.
    pub(crate) fn pool_pairs(&self) -> Vec<PoolPair> {
        let mut found = self.dictionary_pairs();
        let covered = |found: &[Found], get: &Function, put: &Function| {
            found
                .iter()
                .any(|f| f.get_fn.addr == get.addr && f.put_fn.addr == put.addr)
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
                })
            })
            .collect();
        found.sort_by(|a, b| a.get.cmp(&b.get));
        found
    }

    /// Pairs whose Get and Put are both functions named in the binary (shape functions
    /// aside), resolved as `--get`/`--put` would resolve them.
    fn named_pairs(&self) -> Vec<Found> {
        let names: HashSet<&str> = self.functions().iter().map(|f| f.name.as_str()).collect();
        let mut candidates: Vec<(String, String)> = self
            .functions()
            .iter()
            .filter(|f| !f.name.contains("go.shape."))
            .filter_map(|f| {
                Some((
                    f.name.clone(),
                    counterpart(&f.name).filter(|put| names.contains(put.as_str()))?,
                ))
            })
            .collect();
        candidates.sort();
        candidates.dedup();
        candidates
            .into_iter()
            .filter_map(|(get, put)| {
                let get_fn = self.resolve(&get).ok()?.function;
                let put_fn = self.resolve(&put).ok()?.function;
                let named_from = get.contains('[').then_some(NamedFrom::Wrapper);
                Some(Found {
                    get,
                    put,
                    get_fn,
                    put_fn,
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
                get: f.get.clone(),
                put: f.put.clone(),
            })
            .collect();
        pairs.sort_by(|a, b| {
            (b.get_calls + b.put_calls)
                .cmp(&(a.get_calls + a.put_calls))
                .then(a.get.cmp(&b.get))
        });
        pairs
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
