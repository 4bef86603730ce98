//! Placing probes: which instructions of a pool's Get and Put to probe, what each probe reads,
//! and attaching them to one process.

mod attach;
pub mod inlined;
pub mod keyspec;
mod multi;
pub mod pools_file;
pub mod presets;
pub mod sites;

pub use attach::{check_privileges, Limits, Probes};
pub use inlined::KnownPools;
use inlined::{Inlined, InlinedSite};
use keyspec::{ObjectKind, Side, Spec};
use sites::Site;
use tracer_common::{
    ProbeSite, SiteRole, WordSpec, SITE_DOUBLE_PUTS, SITE_RELEASE_PATHS, SITE_STREAM,
    SITE_TRACKS_RECEIVER,
};

use crate::{
    error::{Error, Result},
    gobin::{is_method, Function, GoBinary, ResolvedFunction},
};

/// What an object dropped without a Put means for a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
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
        })
    }
}

/// Where the user moved the object's identity and size from their defaults for its kind
/// (`--get-key`, `--get-size`, `--put-key`, or the same keys in the pools file): as text
/// until checked, then as [`Spec`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOverrides<T> {
    pub get_key: Option<T>,
    pub get_size: Option<T>,
    pub put_key: Option<T>,
}

impl<T> Default for KeyOverrides<T> {
    fn default() -> Self {
        Self {
            get_key: None,
            get_size: None,
            put_key: None,
        }
    }
}

impl<T> KeyOverrides<T> {
    pub fn is_empty(&self) -> bool {
        self.get_key.is_none() && self.get_size.is_none() && self.put_key.is_none()
    }
}

impl KeyOverrides<String> {
    /// The specs, checked; each error names the option it came from.
    fn parse(&self) -> Result<KeyOverrides<Spec>> {
        let spec = |text: &Option<String>, side, what, allow_none| {
            text.as_deref()
                .map(|t| Spec::parse(t, side, what, allow_none))
                .transpose()
        };
        Ok(KeyOverrides {
            get_key: spec(&self.get_key, Side::Get, "--get-key", false)?,
            get_size: spec(&self.get_size, Side::Get, "--get-size", true)?,
            put_key: spec(&self.put_key, Side::Put, "--put-key", false)?,
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
}

/// A pool resolved against one binary: the functions, the sites, what each site reads.
#[derive(Clone, Debug)]
pub struct PoolPlan {
    pub get: ResolvedFunction,
    pub put: ResolvedFunction,
    pub get_sites: Vec<Site>,
    pub put_site: Site,
    /// Where Get's receiver is stashed, when pool instances are told apart: a generic shape
    /// function serves every instance of its shape, and `--receiver` picks one.
    pub get_entry_site: Option<Site>,
    pub get_probe: ProbeSite,
    pub put_probe: ProbeSite,
    pub kind: PoolKind,
    /// Copies of Get and Put the compiler inlined into callers, probed on their calls to the
    /// pool underneath where they make one.
    pub inlined_gets: Inlined,
    pub inlined_puts: Inlined,
}

impl PoolPlan {
    /// Plans pool number `pool` of the run; `known` are the pools an inlined copy of its Get
    /// or Put may call.
    pub fn new(binary: &GoBinary, pool: u32, spec: &PoolSpec, known: &KnownPools) -> Result<Self> {
        let get = binary.resolve(&spec.get)?;
        let put = binary.resolve(&spec.put)?;
        let get_sites = sites::ret_sites(code(binary, &get)?, get.function.addr)
            .map_err(|reason| unprobeable(&get, reason))?;
        let put_site = sites::put_site(code(binary, &put)?, put.function.addr)
            .map_err(|reason| unprobeable(&put, reason))?;
        let reads = Reads::new(spec, &get, &put)?;

        let get_is_method = is_method(&get.requested);
        let first_arg = u8::from(is_method(&put.requested));
        if spec.receiver.is_some() && !(get_is_method && first_arg == 1) {
            return Err(Error::Usage(format!(
                "--receiver picks a pool instance, but {} and {} are not both methods",
                get.requested, put.requested
            )));
        }
        let get_entry_site =
            match (get_is_method && get.dictionary.is_some()) || spec.receiver.is_some() {
                true => Some(
                    sites::put_site(code(binary, &get)?, get.function.addr)
                        .map_err(|r| unprobeable(&get, r))?,
                ),
                false => None,
            };
        let receiver_filter = spec.receiver.unwrap_or(0);
        let stream_flag = if spec.stream { SITE_STREAM } else { 0 }
            | if spec.double_puts {
                SITE_DOUBLE_PUTS
            } else {
                0
            };
        let get_probe = ProbeSite {
            pool,
            flags: stream_flag
                | if get_entry_site.is_some() {
                    SITE_TRACKS_RECEIVER
                } else {
                    0
                },
            key: reads.get_key,
            size: reads.get_size,
            receiver: reads.get_receiver,
            morestack_flags: 0,
            receiver_filter,
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
        };
        // An inlined copy has no receiver of the wrapper's to filter on.
        let untraceable = spec
            .receiver
            .map(|_| "--receiver, which cannot tell pool instances apart there");
        // Inside an inlined copy no receiver is stashed, and none is filtered on.
        let in_caller = |probe: ProbeSite| ProbeSite {
            flags: probe.flags & !SITE_TRACKS_RECEIVER,
            receiver: WordSpec::default(),
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
        let mut plan = Self {
            get,
            put,
            get_sites,
            put_site,
            get_entry_site,
            get_probe,
            put_probe,
            kind: spec.kind,
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

/// One site of a pool's plan, with what runs there and what it reads.
#[derive(Clone, Copy, Debug)]
pub struct PlannedSite<'a> {
    pub plan: &'a PoolPlan,
    pub role: SiteRole,
    /// The function whose code holds the site: Get or Put, or the caller an inlined copy
    /// of them lies in.
    pub function: &'a Function,
    pub site: &'a Site,
    pub probe: ProbeSite,
    /// The inlined copy the site is in, for the `*-inlined-call` roles.
    pub inlined: Option<&'a InlinedSite>,
}

/// The sites of `plans` in the order they must go live, which is also the order of the
/// attach cookies and of `--dry-run`'s listing: every Put site of every pool first (with the
/// calls in Put's inlined copies), then Get's entries (which stash receivers for the RETs),
/// then Get's RETs and the sites after the calls in Get's inlined copies. A Get recorded
/// while a Put of its pool is not yet probed could be given back unseen and would then look
/// outstanding forever, or collected once Go hands its address out again: on a busy process
/// attach would invent leaks. Detaching runs the same list backwards.
pub fn arming_order(plans: &[PoolPlan]) -> impl Iterator<Item = PlannedSite<'_>> {
    let puts = plans.iter().flat_map(|plan| {
        let put = plain(plan, SiteRole::Put, &plan.put.function, &plan.put_site);
        std::iter::once(put).chain(inlined(plan, SiteRole::PutInlinedCall))
    });
    let get_entries = plans.iter().flat_map(|plan| {
        let entry = plan.get_entry_site.as_ref();
        entry.map(|site| plain(plan, SiteRole::GetEntry, &plan.get.function, site))
    });
    let gets = plans.iter().flat_map(|plan| {
        let rets = plan.get_sites.iter();
        rets.map(|site| plain(plan, SiteRole::GetRet, &plan.get.function, site))
            // After the call to the pool's Get, its results are where they are at its RET.
            .chain(inlined(plan, SiteRole::GetInlinedCall))
    });
    puts.chain(get_entries).chain(gets)
}

/// A site in Get's or Put's own code.
fn plain<'a>(
    plan: &'a PoolPlan,
    role: SiteRole,
    function: &'a Function,
    site: &'a Site,
) -> PlannedSite<'a> {
    let probe = match role.is_put_side() {
        true => plan.put_probe,
        false => plan.get_probe,
    };
    PlannedSite {
        plan,
        role,
        function,
        site,
        // The pool's probe, with what only this site knows.
        probe: ProbeSite {
            morestack_flags: site.morestack_flags,
            ..probe
        },
        inlined: None,
    }
}

/// The sites inside inlined copies of Get or Put, as `role` says.
fn inlined(plan: &PoolPlan, role: SiteRole) -> impl Iterator<Item = PlannedSite<'_>> {
    let copies = match role.is_put_side() {
        true => &plan.inlined_puts,
        false => &plan.inlined_gets,
    };
    copies.sites.iter().map(move |inlined| PlannedSite {
        plan,
        role,
        function: &inlined.host,
        site: &inlined.site,
        probe: inlined.probe,
        inlined: Some(inlined),
    })
}

/// The sites of `plans` as JSON, for `--dry-run`: what would be probed, and where, in the
/// order attach arms them.
pub fn sites_json(binary: &GoBinary, plans: &[PoolPlan]) -> String {
    let offset = |addr| binary.file_offset(addr).map(|o| format!("{o:#x}"));
    let sites: Vec<_> = arming_order(plans)
        .map(|planned| {
            let mut json = serde_json::json!({
                "pool": planned.plan.get.requested,
                "role": planned.role.as_str(),
                "function": planned.function.name,
                "function_offset": offset(planned.function.addr),
                "address": format!("{:#x}", planned.site.addr),
                "file_offset": offset(planned.site.addr),
                "instruction": planned.site.instruction,
                "emulated": planned.site.emulated,
            });
            // Inside an inlined copy: where the wrapper was called, and the pool function
            // whose call is probed.
            if let Some(inlined) = planned.inlined {
                json["inlined_call"] = inlined.call_site.clone().into();
                json["calls"] = inlined.callee.clone().into();
            }
            json
        })
        .collect();
    serde_json::to_string_pretty(&sites).unwrap_or_default()
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
