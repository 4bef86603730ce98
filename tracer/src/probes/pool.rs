//! One pool resolved against one binary: its Get and Put, the instructions probed in each,
//! and what the kernel side reads at every site.

use tracer_common::{
    ProbeSite, WordSpec, SITE_DOUBLE_PUTS, SITE_ENTRY_STASH, SITE_RELEASE_PATHS, SITE_SIZES,
    SITE_STREAM, WORD_NONE,
};

use super::{
    inlined::{Inlined, KnownPools},
    keyspec::Side,
    reads::Reads,
    sites::{self, Site},
    spec::{BooksSpec, PoolKind, PoolSpec},
};
use crate::{
    error::{Error, Result},
    gobin::{is_method, GoBinary, ResolvedFunction},
};

/// A pool resolved against one binary: the functions, the sites, what each site reads.
#[derive(Clone, Debug)]
pub struct PoolPlan {
    pub get: ResolvedFunction,
    pub put: ResolvedFunction,
    /// Get's RETs: none when Get exists only inlined.
    pub get_sites: Vec<Site>,
    /// Put's entry: none when Put exists only inlined.
    pub put_site: Option<Site>,
    /// Where Get's receiver and the size it is asked for are stashed, when pool instances
    /// are told apart (a generic shape function serves every instance of its shape, and
    /// `--receiver` picks one) or the pool is sized.
    pub get_entry_site: Option<Site>,
    pub get_probe: ProbeSite,
    pub put_probe: ProbeSite,
    pub kind: PoolKind,
    /// Copies of Get and Put the compiler inlined into callers, probed on their calls to the
    /// pool underneath where they make one.
    pub inlined_gets: Inlined,
    pub inlined_puts: Inlined,
    /// Where each instance keeps its own books (`used`, `limit`), read at each report.
    pub books: Option<BooksSpec>,
}

impl PoolPlan {
    /// Plans pool number `pool` of the run; `known` are the pools an inlined copy of its Get
    /// or Put may call.
    pub fn new(binary: &GoBinary, pool: u32, spec: &PoolSpec, known: &KnownPools) -> Result<Self> {
        let get = binary.resolve(&spec.get)?;
        let put = binary.resolve(&spec.put)?;
        let get_sites = match get.inlined_only {
            true => Vec::new(),
            false => sites::ret_sites(code(binary, &get)?, get.function.addr)
                .map_err(|reason| unprobeable(&get, reason))?,
        };
        let put_site = match put.inlined_only {
            true => None,
            false => Some(
                sites::put_site(code(binary, &put)?, put.function.addr)
                    .map_err(|reason| unprobeable(&put, reason))?,
            ),
        };
        let reads = Reads::new(spec, &get, &put)?;

        let get_is_method = is_method(&get.requested);
        let first_arg = u8::from(is_method(&put.requested));
        if spec.receiver.is_some() && !(get_is_method && first_arg == 1) {
            return Err(Error::Usage(format!(
                "--receiver picks a pool instance, but {} and {} are not both methods",
                get.requested, put.requested
            )));
        }
        // The books are read from the instance, which only a method's receiver names.
        if spec.books.is_some() && !get_is_method {
            return Err(Error::Usage(format!(
                "used and limit are read from the pool instance, Get's receiver, but {} is \
                 not a method",
                get.requested
            )));
        }
        let entry = || {
            sites::put_site(code(binary, &get)?, get.function.addr)
                .map_err(|r| unprobeable(&get, r))
        };
        let needs_entry = !get.inlined_only
            && ((get_is_method && get.dictionary.is_some())
                || spec.receiver.is_some()
                || spec.books.is_some());
        let mut request = reads.get_request;
        // A request is set against the capacity handed out: with none read, nothing to say.
        if request.is_some() && reads.get_size.kind == WORD_NONE {
            if spec.sizes_may_add_probe {
                crate::status!(
                    "pooltrace: sizes are off for {}: the capacity Get hands out is not read \
                     (give --get-size)",
                    get.requested
                );
            }
            request = None;
        }
        let get_entry_site = match (needs_entry, request.is_some()) {
            (true, _) => Some(entry()?),
            (false, false) => None,
            // Sizes alone never keep a pool from being traced.
            (false, true) if !spec.sizes_may_add_probe => {
                request = None;
                None
            }
            (false, true) => {
                let placed = match get.inlined_only {
                    true => Err(
                        "Get exists only inlined, where the size asked for is not read".to_owned(),
                    ),
                    false => entry().map_err(|e| e.to_string()),
                };
                placed
                    .inspect_err(|why| {
                        crate::status!("pooltrace: sizes are off for {}: {why}", get.requested);
                        request = None;
                    })
                    .ok()
            }
        };
        let receiver_filter = spec.receiver.unwrap_or(0);
        let stream_flag = if spec.stream { SITE_STREAM } else { 0 }
            | if spec.double_puts {
                SITE_DOUBLE_PUTS
            } else {
                0
            };
        let entry_flags = match (&get_entry_site, request) {
            (None, _) => 0,
            (Some(_), None) => SITE_ENTRY_STASH,
            (Some(_), Some(_)) => SITE_ENTRY_STASH | SITE_SIZES,
        };
        let get_probe = ProbeSite {
            pool,
            flags: stream_flag | entry_flags,
            key: reads.get_key,
            size: reads.get_size,
            receiver: reads.get_receiver,
            morestack_flags: 0,
            receiver_filter,
            ident: reads.get_ident,
            request: request.unwrap_or_default(),
            // Set where the probes are placed, in the slot of the object they go into.
            target: 0,
            _pad: 0,
        };
        let put_probe = ProbeSite {
            pool,
            flags: stream_flag
                | if spec.release_paths {
                    SITE_RELEASE_PATHS
                } else {
                    0
                },
            key: reads.put_key,
            size: reads.put_size,
            receiver: reads.put_receiver,
            morestack_flags: 0,
            receiver_filter,
            ident: reads.put_ident,
            request: WordSpec::default(),
            target: 0,
            _pad: 0,
        };
        // An inlined copy has no receiver of the wrapper's to filter on.
        let untraceable = spec
            .receiver
            .map(|_| "--receiver, which cannot tell pool instances apart there");
        // Inside an inlined copy nothing is stashed at entry, and no receiver is filtered on.
        let in_caller = |probe: ProbeSite| ProbeSite {
            flags: probe.flags & !(SITE_ENTRY_STASH | SITE_SIZES),
            receiver: WordSpec::default(),
            request: WordSpec::default(),
            receiver_filter: 0,
            ..probe
        };
        let inlined_gets = Inlined::find(
            binary,
            &get.function,
            Side::Get,
            known,
            in_caller(get_probe),
            untraceable,
        );
        let inlined_puts = Inlined::find(
            binary,
            &put.function,
            Side::Put,
            known,
            in_caller(put_probe),
            untraceable,
        );
        for (function, inlined) in [(&get, &inlined_gets), (&put, &inlined_puts)] {
            if function.inlined_only && inlined.sites.is_empty() {
                return Err(unprobeable(
                    function,
                    match inlined.unseen.as_slice() {
                        [one] => format!(
                            "it exists only inlined, and its one copy cannot be probed: {}",
                            one.why
                        ),
                        [first, ..] => format!(
                            "it exists only inlined, and none of its {} copies can be probed: {}",
                            inlined.unseen.len(),
                            first.why
                        ),
                        [] => "it exists only inlined, and no copy of it was found".to_owned(),
                    },
                ));
            }
        }
        let mut plan = Self {
            get,
            put,
            get_sites,
            put_site,
            get_entry_site,
            get_probe,
            put_probe,
            kind: spec.kind,
            books: spec.books,
            inlined_gets,
            inlined_puts,
        };
        if let Some(why) = plan.double_puts_unsound().filter(|_| spec.double_puts) {
            crate::status!(
                "pooltrace: --double-puts is off for {}: {why}",
                plan.get.requested
            );
            plan.without(SITE_DOUBLE_PUTS);
        }
        Ok(plan)
    }

    /// Why a Put of an object already given back would not mean a double Put in this pool:
    /// a Get no probe sees would hand objects out without forgetting them, and a sync pool
    /// drops objects whose memory then comes back from allocations that pass no Get.
    fn double_puts_unsound(&self) -> Option<&'static str> {
        if !self.inlined_gets.unseen.is_empty() {
            return Some("some inlined copies of Get cannot be probed, and objects taken there would look put back twice");
        }
        match self.kind {
            PoolKind::Sync => Some("a sync pool drops objects, and their memory comes back through allocations no Get sees"),
            PoolKind::Counting => None,
        }
    }

    /// Clears `flag` from every site of the plan.
    fn without(&mut self, flag: u32) {
        self.get_probe.flags &= !flag;
        self.put_probe.flags &= !flag;
        let inlined = self.inlined_gets.sites.iter_mut();
        for site in inlined.chain(self.inlined_puts.sites.iter_mut()) {
            site.probe.flags &= !flag;
        }
    }

    /// Whether `vaddr` is a site inside an inlined copy of Get or Put, and which.
    pub fn in_caller_site(&self, vaddr: u64) -> Option<Side> {
        [&self.inlined_gets, &self.inlined_puts]
            .into_iter()
            .flat_map(|inlined| &inlined.sites)
            .find(|s| s.site.addr == vaddr)
            .map(|s| s.side)
    }
}

fn code<'a>(binary: &'a GoBinary, f: &ResolvedFunction) -> Result<&'a [u8]> {
    binary.code(&f.function).ok_or_else(|| {
        unprobeable(
            f,
            "its symbol lies outside the file's loaded segments".into(),
        )
    })
}

fn unprobeable(f: &ResolvedFunction, reason: String) -> Error {
    Error::Unprobeable {
        name: f.function.name.clone(),
        reason,
    }
}
