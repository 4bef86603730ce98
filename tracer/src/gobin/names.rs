//! Which function a Go name given by the user means.
//!
//! Generic code is compiled once per GC shape: `pool.(*P[uint8]).Get` is a small wrapper kept
//! for interface calls and method values, while every call, direct or through the wrapper,
//! reaches the shape function `pool.(*P[go.shape.uint8]).Get` (Go 1.19 writes
//! `go.shape.uint8_0`), which takes the instantiation's dictionary as a hidden argument. So a
//! generic name resolves to its shape function, and the caller is told where the extra
//! argument sits: first in functions, and in methods first up to Go 1.19 but after the
//! receiver from Go 1.20 on (the unified IR builds shaped methods as receiver, dictionary,
//! parameters).

use super::{pclntab::Version, BuildInfo, Function, GoBinary};
use crate::error::{Error, Result};

/// A function to probe and how its arguments are laid out.
#[derive(Clone, Debug)]
pub struct ResolvedFunction {
    /// The name the user gave.
    pub(crate) requested: String,
    /// The function the name means: itself, or the shape function a generic one runs as.
    pub function: Function,
    /// For a generic shape function, the argument slot of its dictionary: Go-level argument
    /// words from that slot on sit one register later. Results are not shifted.
    pub(crate) dictionary: Option<u8>,
    /// The name exists only inlined (see `GoBinary::inlined_only_names`): `function` has
    /// no code, at address 0, and only the inlined copies are probed.
    pub(crate) inlined_only: bool,
}

impl GoBinary {
    /// Resolves a Go function name; unknown names get an error with the closest names.
    pub fn resolve(&self, name: &str) -> Result<ResolvedFunction> {
        let resolved = |function: &Function, shape: bool| ResolvedFunction {
            requested: name.to_owned(),
            function: function.clone(),
            dictionary: shape.then(|| self.dictionary_slot(name)),
            inlined_only: false,
        };
        if name.contains('[') && !name.contains("go.shape.") {
            // A dictionary passed to the shape function names this instantiation.
            if let Some(shape) = self.generic_index().get(name) {
                return Ok(resolved(shape, true));
            }
            if let Some(shape) = self.shape_function(name)? {
                return Ok(resolved(shape, true));
            }
            if let Some(shape) = self.elided_shape_function(name) {
                return Ok(resolved(shape, true));
            }
        }
        match self.function(name) {
            Some(function) => Ok(resolved(function, function.name.contains("go.shape."))),
            None if self.inlined_only_names().contains(name) => Ok(ResolvedFunction {
                requested: name.to_owned(),
                function: Function {
                    name: name.to_owned(),
                    addr: 0,
                    size: 0,
                },
                dictionary: None,
                inlined_only: true,
            }),
            None => Err(Error::NoSuchFunction {
                name: name.to_owned(),
                path: self.path().to_path_buf(),
                suggestions: self.closest_names(name),
            }),
        }
    }

    /// Where a shape function named `name` takes its dictionary: after the receiver in methods
    /// built by Go 1.20+, else first.
    pub(super) fn dictionary_slot(&self, name: &str) -> u8 {
        let unified_ir = match self.build_info().and_then(BuildInfo::go_release) {
            Some(release) => release >= (1, 20),
            None => self.pclntab_version().is_some_and(Version::unified_ir),
        };
        u8::from(is_method(name) && unified_ir)
    }

    /// The shape function behind an instantiated generic name, e.g.
    /// `main.(*P[uint8]).Get` -> `main.(*P[go.shape.uint8]).Get`.
    fn shape_function(&self, name: &str) -> Result<Option<&Function>> {
        let Some((prefix, type_args, suffix)) = split_type_args(name) else {
            return Ok(None);
        };
        let shapes: Vec<&Function> = self
            .functions()
            .iter()
            .filter(|f| {
                split_type_args(&f.name).is_some_and(|(p, args, s)| {
                    p == prefix && s == suffix && args.starts_with("go.shape.")
                })
            })
            .collect();
        let exact: Vec<&Function> = shapes
            .iter()
            .copied()
            .filter(|f| {
                split_type_args(&f.name).is_some_and(|(_, args, _)| shape_matches(args, type_args))
            })
            .collect();
        match (exact.as_slice(), shapes.as_slice()) {
            ([one], _) | ([], [one]) => Ok(Some(one)),
            ([], []) => Ok(None),
            (_, many) => Err(Error::Usage(format!(
                "{name} is reached through {} shape functions; name one: {}",
                many.len(),
                many.iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Go 1.18 and 1.19 write generic names into pclntab with the type arguments elided:
    /// in a stripped binary `main.(*P[...]).Get` names the wrappers and the shape function
    /// alike. The shape function is the one the others call.
    fn elided_shape_function(&self, name: &str) -> Option<&Function> {
        let (prefix, _, suffix) = split_type_args(name)?;
        let elided = format!("{prefix}[...]{suffix}");
        let candidates: Vec<&Function> = self
            .functions()
            .iter()
            .filter(|f| f.name == elided)
            .collect();
        if let [only] = candidates.as_slice() {
            return Some(only);
        }
        let called = |target: &Function| {
            candidates.iter().any(|caller| {
                self.code(caller).is_some_and(|code| {
                    super::calls::direct_call_targets(code, caller.addr).any(|t| t == target.addr)
                })
            })
        };
        candidates.iter().copied().find(|f| called(f))
    }

    /// Up to three names close to `wanted`: same final element first, then by edit distance,
    /// none more than one edit further than the closest.
    fn closest_names(&self, wanted: &str) -> Vec<String> {
        let last = |s: &str| s.rsplit('.').next().unwrap_or(s).to_owned();
        let wanted_last = last(wanted);
        let limit = (wanted.len() / 3).max(3);
        let mut scored: Vec<(bool, usize, &str)> = self
            .functions()
            .iter()
            .filter(|f| f.name.len().abs_diff(wanted.len()) <= limit)
            .map(|f| {
                (
                    last(&f.name) != wanted_last,
                    edit_distance(wanted, &f.name),
                    f.name.as_str(),
                )
            })
            .filter(|&(_, distance, _)| distance <= limit)
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.2 == b.2);
        // Names much further off than the best one are noise next to it.
        let best = scored
            .iter()
            .map(|&(_, distance, _)| distance)
            .min()
            .unwrap_or(0);
        scored
            .into_iter()
            .filter(|&(_, distance, _)| distance <= best + 1)
            .take(3)
            .map(|(_, _, name)| name.to_owned())
            .collect()
    }
}

/// Splits `pkg.(*P[A, B]).Get` into (`pkg.(*P`, `A, B`, `).Get`) at the outermost brackets.
pub(super) fn split_type_args(name: &str) -> Option<(&str, &str, &str)> {
    let open = name.find('[')?;
    let mut depth = 0usize;
    for (i, c) in name[open..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    let close = open + i;
                    return Some((&name[..open], &name[open + 1..close], &name[close + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether shape arguments (`go.shape.uint8` or Go 1.19's `go.shape.uint8_0`) are those the
/// type arguments of a named instantiation (`uint8`) are compiled to.
fn shape_matches(shape_args: &str, type_args: &str) -> bool {
    let shapes = shape_args.split(',').map(str::trim);
    let types = type_args.split(',').map(str::trim);
    shapes.clone().count() == types.clone().count()
        && shapes.zip(types).all(|(shape, ty)| {
            let Some(base) = shape.strip_prefix("go.shape.") else {
                return false;
            };
            let base = match base.rsplit_once('_') {
                Some((b, index)) if index.bytes().all(|c| c.is_ascii_digit()) => b,
                _ => base,
            };
            base == ty
        })
}

/// Whether a Go function name is a method (its first argument word is the receiver):
/// `pkg.(*T).M`, `pkg.T.M`, `pkg.T[...].M`; plain functions are `pkg.F`.
pub(crate) fn is_method(name: &str) -> bool {
    let after_path = name.rsplit('/').next().unwrap_or(name);
    if after_path.contains(").") {
        return true;
    }
    let mut depth = 0;
    let dots = after_path
        .chars()
        .filter(|&c| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == '.' && depth == 0
        })
        .count();
    dots >= 2
}

/// Levenshtein distance, by bytes (Go symbol names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_type_arguments_at_the_outermost_brackets() {
        assert_eq!(
            split_type_args("main.(*P[map[string]int]).Get"),
            Some(("main.(*P", "map[string]int", ").Get"))
        );
        assert_eq!(split_type_args("main.(*P).Get"), None);
    }

    #[test]
    fn shape_names_match_their_type_arguments_in_both_go_spellings() {
        assert!(shape_matches("go.shape.uint8", "uint8"));
        assert!(shape_matches("go.shape.uint8_0", "uint8"));
        assert!(!shape_matches("go.shape.int", "uint8"));
        assert!(!shape_matches("go.shape.uint8,go.shape.int", "uint8"));
    }

    #[test]
    fn methods_are_told_from_functions() {
        assert!(is_method("main.(*BufPool).Get"));
        assert!(is_method(
            "github.com/thanos-io/thanos/pkg/pool.(*BucketedPool[go.shape.uint8]).Get"
        ));
        assert!(is_method("main.Pool.Get"));
        assert!(!is_method(
            "github.com/nats-io/nats-server/v2/server.nbPoolGet"
        ));
        assert!(!is_method("main.getBuf"));
    }

    #[test]
    fn edit_distance_counts_single_byte_edits() {
        assert_eq!(edit_distance("Get", "Get"), 0);
        assert_eq!(edit_distance("Get", "Put"), 2);
        assert_eq!(edit_distance("main.(*Pool).Gt", "main.(*Pool).Get"), 1);
    }
}
