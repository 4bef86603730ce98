//! Finding pool-like Get/Put pairs in a binary, for `pooltrace list`: methods `Get` and
//! `Put` of one type (generic ones by instantiation), and plain functions whose names differ
//! only in Get/Put (`nbPoolGet`/`nbPoolPut`).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{calls::direct_call_targets, GoBinary};

/// One Get/Put pair and how the program reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolPair {
    /// The names to give `--get`/`--put`.
    pub get: String,
    pub put: String,
    /// The shape function probed for a generic instantiation.
    pub get_shape: Option<String>,
    /// Direct call sites of the probed Get and Put.
    pub get_calls: usize,
    pub put_calls: usize,
    /// Call sites where Get and Put were inlined (invisible to probes).
    pub get_inlined: usize,
    pub put_inlined: usize,
}

impl GoBinary {
    /// Every pool-like pair, most-called first.
    pub fn pool_pairs(&self) -> Vec<PoolPair> {
        let names: HashSet<&str> = self.functions().iter().map(|f| f.name.as_str()).collect();
        let mut candidates: Vec<(String, String)> = self
            .functions()
            .iter()
            // Shape functions are listed through their instantiations.
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
        let resolved: Vec<(String, String, super::Function, super::Function)> = candidates
            .into_iter()
            .filter_map(|(get, put)| {
                let (get_fn, put_fn) = (
                    self.resolve(&get).ok()?.function,
                    self.resolve(&put).ok()?.function,
                );
                Some((get, put, get_fn, put_fn))
            })
            .collect();
        let probed: Vec<&str> = resolved
            .iter()
            .flat_map(|(_, _, g, p)| [g.name.as_str(), p.name.as_str()])
            .collect();
        let inlined = self.inlined_sites(&probed);
        let calls = self.direct_call_counts();
        let count = |addr: u64| calls.get(&addr).copied().unwrap_or(0);
        let mut pairs: Vec<PoolPair> = resolved
            .iter()
            .zip(inlined.chunks(2))
            .map(|((get, put, get_fn, put_fn), inlined)| PoolPair {
                get: get.clone(),
                put: put.clone(),
                get_shape: (&get_fn.name != get).then(|| get_fn.name.clone()),
                get_calls: count(get_fn.addr),
                put_calls: count(put_fn.addr),
                get_inlined: inlined[0],
                put_inlined: inlined[1],
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
