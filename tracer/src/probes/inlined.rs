//! Inlined copies of a pool's Get and Put. A probe on a function never fires where the
//! compiler inlined it, and small wrappers (`func PutX(x *X) { x.reset(); xPool.Put(x) }`)
//! are often inlined at every call site. pclntab's inline tree says which instructions of a
//! caller belong to each inlined copy; inside each copy, the call it makes to the pool
//! underneath is probed instead: a Put at its `call` (the callee's arguments are in the ABI
//! registers there, and the kernel emulates `call`), a Get at the instruction after its
//! `call` (the callee's results are in registers there; that instruction is usually
//! single-stepped).
//!
//! The object is read with the callee's key spec. That gives the wrapper's own identity when
//! the wrapper hands the pool's object on as it is (`GetX() *X { return xPool.Get().(*X) }`:
//! the pointer is the interface's data word); a wrapper that converts the object (a `*[]byte`
//! in the pool, a `[]byte` out of the wrapper) would not match, and is the user's to avoid.
//!
//! A pool underneath is one pooltrace knows how to read: `sync.(*Pool)` and the other
//! presets' pools, and the other pools of the run. A copy with no call to one is unseen: each
//! is named in a warning, and a pool with unseen Puts does not score its objects dropped
//! without a Put as leaks (they may have come back there).

use std::cell::OnceCell;

use clap::ValueEnum;
use tracer_common::{ProbeSite, WordSpec, SITE_IN_CALLER};

use super::{
    keyspec::Side,
    presets::Preset,
    reads::Reads,
    sites::{self, Site},
    spec::PoolSpec,
};
use crate::gobin::{Function, GoBinary, InlinedCopy};

/// The pool functions pooltrace can read at a call, built on first need (most runs have no
/// inlined copies to look into).
pub struct KnownPools<'a> {
    binary: &'a GoBinary,
    run: &'a [PoolSpec],
    functions: OnceCell<Vec<KnownFunction>>,
}

/// A Get or Put pooltrace knows, with what its probe reads.
struct KnownFunction {
    name: String,
    addr: u64,
    side: Side,
    key: WordSpec,
    size: WordSpec,
}

impl<'a> KnownPools<'a> {
    /// The pools of the run (`run`) and of every preset, as far as `binary` has them.
    pub fn new(binary: &'a GoBinary, run: &'a [PoolSpec]) -> Self {
        Self {
            binary,
            run,
            functions: OnceCell::new(),
        }
    }

    fn functions(&self) -> &[KnownFunction] {
        self.functions.get_or_init(|| {
            let mut specs = self.run.to_vec();
            for preset in Preset::value_variants() {
                specs.extend(preset.pools(self.binary).unwrap_or_default());
            }
            specs.iter().flat_map(|spec| self.read(spec)).collect()
        })
    }

    /// Spec's Get and Put, when both are in the binary and readable.
    fn read(&self, spec: &PoolSpec) -> Vec<KnownFunction> {
        let (Ok(get), Ok(put)) = (
            self.binary.resolve(&spec.get),
            self.binary.resolve(&spec.put),
        ) else {
            return Vec::new();
        };
        let Ok(reads) = Reads::new(spec, &get, &put) else {
            return Vec::new();
        };
        vec![
            KnownFunction {
                name: get.function.name,
                addr: get.function.addr,
                side: Side::Get,
                key: reads.get_key,
                size: reads.get_size,
            },
            KnownFunction {
                name: put.function.name,
                addr: put.function.addr,
                side: Side::Put,
                key: reads.put_key,
                size: reads.put_size,
            },
        ]
    }

    /// The known `side` function at `addr`, other than `except` (the wrapper itself).
    fn at(&self, addr: u64, side: Side, except: u64) -> Option<&KnownFunction> {
        (addr != except)
            .then(|| {
                self.functions()
                    .iter()
                    .find(|f| f.addr == addr && f.side == side)
            })
            .flatten()
    }
}

/// A probe inside an inlined copy of a pool's Get or Put, on its call to the pool underneath.
#[derive(Clone, Debug)]
pub struct InlinedSite {
    pub side: Side,
    pub site: Site,
    /// The function whose code holds the copy.
    pub host: Function,
    /// Where the wrapper was called, e.g. "main.handle at /src/main.go:42".
    pub call_site: String,
    /// The pool function called there, e.g. `sync.(*Pool).Put`.
    pub callee: String,
    pub probe: ProbeSite,
}

/// An inlined copy of Get or Put in which nothing can be probed.
#[derive(Clone, Debug)]
pub struct UnseenCopy {
    pub call_site: String,
    /// Why it cannot be probed.
    pub why: &'static str,
}

/// The inlined copies of one pool's Get or Put.
#[derive(Clone, Debug)]
pub struct Inlined {
    /// The wrapper inlined: the pool's Get or Put.
    pub function: String,
    pub side: Side,
    pub sites: Vec<InlinedSite>,
    pub unseen: Vec<UnseenCopy>,
    /// Copies with at least one site.
    pub traced_copies: usize,
}

impl Inlined {
    /// The copies of `function` (the `side` of a pool) inlined into other functions, each
    /// probed on its calls to known pools with `probe` (its key and size set per callee).
    /// `untraceable` leaves every copy unseen, for the reason it gives.
    pub fn find(
        binary: &GoBinary,
        function: &Function,
        side: Side,
        known: &KnownPools,
        probe: ProbeSite,
        untraceable: Option<&'static str>,
    ) -> Self {
        let mut found = Self {
            function: function.name.clone(),
            side,
            sites: Vec::new(),
            unseen: Vec::new(),
            traced_copies: 0,
        };
        for copy in binary.inlined_copies(&function.name) {
            let sites = match untraceable {
                Some(_) => Vec::new(),
                None => copy_sites(binary, &copy, function, side, known, probe),
            };
            if sites.is_empty() {
                found.unseen.push(UnseenCopy {
                    call_site: copy.call_site(),
                    why: untraceable.unwrap_or("no call to a pool pooltrace knows under it"),
                });
            } else {
                found.traced_copies += 1;
                found.sites.extend(sites);
            }
        }
        found
    }
}

/// The probes inside one copy: on each of its calls to a known pool function of its side.
fn copy_sites(
    binary: &GoBinary,
    copy: &InlinedCopy,
    wrapper: &Function,
    side: Side,
    known: &KnownPools,
    probe: ProbeSite,
) -> Vec<InlinedSite> {
    let Some(code) = binary.code(&copy.host) else {
        return Vec::new();
    };
    let wanted = |call: u64, target: u64| {
        known.at(target, side, wrapper.addr).is_some() && binary.runs_inlined_copy(copy, call)
    };
    let calls =
        sites::call_sites(code, copy.host.addr, side == Side::Get, wanted).unwrap_or_default();
    calls
        .into_iter()
        .filter_map(|call| {
            let callee = known.at(call.target, side, wrapper.addr)?;
            Some(InlinedSite {
                side,
                site: call.site,
                host: copy.host.clone(),
                call_site: copy.call_site(),
                callee: callee.name.clone(),
                probe: ProbeSite {
                    flags: probe.flags | SITE_IN_CALLER,
                    key: callee.key,
                    size: callee.size,
                    // The pool underneath has its own object: no second word is known.
                    ident: WordSpec::default(),
                    ..probe
                },
            })
        })
        .collect()
}

/// What the user is told about a pool's inlined copies of Get or Put: a line when some are
/// traced, and a warning for each copy that is not.
pub fn messages(inlined: &Inlined) -> (Option<String>, Vec<String>) {
    let (what, at, consequence) = match inlined.side {
        Side::Get => (
            "Get",
            "after its call to",
            "Gets there are not seen, and Puts of their objects count as unmatched",
        ),
        Side::Put => (
            "Put",
            "at its call to",
            "Puts there are not seen, so this pool's objects dropped without a Put are not \
             scored as leaks",
        ),
    };
    let traced = (inlined.traced_copies > 0).then(|| {
        let n = inlined.traced_copies;
        let mut callees: Vec<&str> = inlined.sites.iter().map(|s| s.callee.as_str()).collect();
        callees.sort_unstable();
        callees.dedup();
        format!(
            "{} ({what}) is inlined at {n} call site{}: traced there {at} {}",
            inlined.function,
            if n == 1 { "" } else { "s" },
            callees.join(", ")
        )
    });
    let unseen = inlined
        .unseen
        .iter()
        .map(|copy| {
            format!(
                "{} is inlined into {} with {}: {consequence}",
                inlined.function, copy.call_site, copy.why
            )
        })
        .collect();
    (traced, unseen)
}
