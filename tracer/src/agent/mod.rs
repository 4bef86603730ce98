//! `pooltrace agent`: tracing left running on a fleet node. It loads one eBPF object for
//! all the processes it traces, finds them (`discover`), follows each from attach to exit in
//! a task of its own, in a slot of that object (`target`), within
//! its budget through tracing windows (`probes::lifecycle`, or Get sampled with
//! `--continuous`), and publishes each process's latest report for the HTTP endpoints
//! (`http`: `/metrics` encoded by `metrics`, pprof, JSON), which read only what was
//! published, over TLS and behind basic authentication when `--web-config` says so
//! (`web_config`, `auth`).

mod auth;
mod discover;
mod http;
mod metrics;
mod target;
mod web_config;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    rc::Rc,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use discover::{Identity, Matcher};
use target::Outcome;
use tokio::{sync::watch, task::JoinHandle};
use web_config::WebConfig;

use crate::{
    capabilities::{self, Effective},
    cli::{AgentArgs, Filters},
    error::{Error, Result},
    output::write_stdout,
    probes::plan::PoolRequest,
    probes::{Object, PoolEntry},
    process::signal_name,
    report::Report,
    session::{checked_windows, double_puts_need_every_get, limits, pool_request, WindowRequest},
    signals::Signals,
};

/// What every target's task needs from the command line.
pub struct Config {
    request: PoolRequest,
    interval: Duration,
    top_paths: usize,
    budget: f64,
    sample_gets: Option<f64>,
    /// Tracing windows, unless `--continuous` or `--budget 0`.
    windows: Option<WindowRequest>,
    min_age: Duration,
}

/// The latest numbers of every process traced (or exited, until forgotten), and the
/// agent's own: all the HTTP side ever reads.
#[derive(Clone, Debug, Default)]
pub struct Published {
    targets: BTreeMap<Identity, Arc<TargetView>>,
    /// Processes that could not be traced, by executable name.
    attach_failures: BTreeMap<String, u64>,
    /// Matching processes left untraced over `--max-targets`.
    skipped: u64,
    /// Kernel memory of the maps every traced process shares.
    kernel_memory: u64,
    /// Objects each process may have tracked at once.
    object_share: u64,
}

impl Published {
    fn scrape(&self) -> metrics::Scrape {
        metrics::Scrape {
            targets: self.targets.values().cloned().collect(),
            health: metrics::Health {
                attach_failures: self.attach_failures.clone(),
                skipped: self.skipped,
                kernel_memory: self.kernel_memory,
                object_share: self.object_share,
            },
        }
    }
}

/// One process's latest numbers.
#[derive(Clone, Debug)]
pub struct TargetView {
    identity: Identity,
    container: Option<String>,
    /// Built with the likeliest `--top-paths` leaks per pool.
    report: Report,
    /// Per pool: hold times of the objects that came back, in the kernel's buckets.
    hold_buckets: Vec<Vec<u64>>,
    /// The share of the time Get is probed.
    sample_fraction: f64,
    /// The probes' estimated cost, in cores.
    cost_cores: f64,
    probes: usize,
    /// When it was seen to exit; its numbers are served until `--forget-after` later.
    exited: Option<Instant>,
}

/// Runs the agent until SIGTERM, SIGINT or SIGHUP.
pub async fn agent(args: AgentArgs) -> Result<()> {
    let request = pool_request(&args.pools)?;
    double_puts_need_every_get(request.double_puts, args.sample_gets)?;
    let windows = checked_windows(
        !args.continuous && args.budget > 0.0,
        Some(args.budget),
        &args.windows,
        args.sample_gets,
    )?;
    let (matcher, missing) = Matcher::new(&args.pid, &args.exe);
    let web = match &args.web_config {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::plain(),
    };
    if args.dry_run {
        return dry_run(&args, &request, &web, &matcher, &missing);
    }
    let signals = Signals::install()?;
    let effective = Effective::read();
    effective.require(&capabilities::AGENT)?;
    let listener = std::net::TcpListener::bind(args.listen).map_err(|source| Error::Listen {
        addr: args.listen,
        source,
    })?;
    // One object for every process: the verifier runs once, and the maps are the node's.
    let object = Object::load(
        limits(&args.maps, &Filters::NONE)?,
        args.max_targets,
        request.double_puts,
    )?;
    let published = Arc::new(Mutex::new(Published {
        kernel_memory: object.kernel_memory(),
        object_share: object.share(),
        ..Published::default()
    }));
    let scheme = web.scheme();
    let exposed = exposure(&args, &web);
    let summary = args
        .web_config
        .as_ref()
        .map(|_| format!(" ({})", web.summary));
    http::serve(listener, published.clone(), web)?;
    crate::status!(
        "pooltrace agent: serving {scheme}://{}/metrics, /debug/pprof/pool, /report.json{}",
        args.listen,
        summary.unwrap_or_default()
    );
    let mut known = capabilities::AGENT.to_vec();
    known.push(capabilities::SYS_ADMIN);
    crate::status!(
        "pooltrace agent: running with {}",
        effective.names(&known).join(", ")
    );
    if let Some(warning) = exposed {
        crate::status!("pooltrace agent: warning: {warning}");
    }
    for pid in &missing {
        crate::status!("pooltrace agent: no process {pid} (--pid): not traced");
    }
    let config = Arc::new(Config {
        request,
        interval: args.interval,
        top_paths: args.top_paths,
        budget: args.budget,
        sample_gets: args.sample_gets,
        windows,
        min_age: args.min_age,
    });
    let local = tokio::task::LocalSet::new();
    let agent = Agent {
        config,
        object,
        published,
        matcher,
        max_targets: args.max_targets,
        attach_after: args.attach_after,
        forget_after: args.forget_after,
        following: HashMap::new(),
        refused: HashSet::new(),
        over_limit: HashSet::new(),
    };
    local
        .run_until(agent.run(signals, args.scan_interval))
        .await
}

/// The agent's own state: which processes it follows, and which it gave up on.
struct Agent {
    config: Arc<Config>,
    /// The eBPF object every target is traced through.
    object: Rc<Object>,
    published: Arc<Mutex<Published>>,
    matcher: Matcher,
    max_targets: u32,
    /// `--attach-after`: younger matches wait for a later scan.
    attach_after: Duration,
    forget_after: Duration,
    following: HashMap<Identity, JoinHandle<Outcome>>,
    /// Processes that could not be traced: not tried again while they run as they are.
    refused: HashSet<Identity>,
    /// Processes over `--max-targets`, counted once each.
    over_limit: HashSet<Identity>,
}

impl Agent {
    async fn run(mut self, mut signals: Signals, scan_interval: Duration) -> Result<()> {
        let (stop, stopped) = watch::channel(false);
        let mut scans = tokio::time::interval(scan_interval);
        let received = loop {
            tokio::select! {
                received = signals.recv() => break received?,
                _ = scans.tick() => self.scan(&stopped).await,
            }
        };
        crate::status!(
            "pooltrace agent: got {}, detaching from {} process(es)",
            signal_name(received.signal),
            self.following.len()
        );
        // Every task detaches its probes as it returns.
        let _ = stop.send(true);
        for (_, task) in self.following.drain() {
            let _ = task.await;
        }
        Ok(())
    }

    /// Reaps finished tasks, forgets old exits, and starts following new matches.
    async fn scan(&mut self, stopped: &watch::Receiver<bool>) {
        let finished: Vec<Identity> = self
            .following
            .iter()
            .filter(|(_, task)| task.is_finished())
            .map(|(identity, _)| identity.clone())
            .collect();
        for identity in finished {
            if let Some(task) = self.following.remove(&identity) {
                if let Ok(Outcome::Refused) = task.await {
                    self.refused.insert(identity);
                }
            }
        }
        let found = self.matcher.scan();
        let running: HashSet<&Identity> = found.iter().map(|f| &f.identity).collect();
        self.refused.retain(|identity| running.contains(identity));
        self.over_limit
            .retain(|identity| running.contains(identity));
        self.forget_exited(&running);
        let since_boot = discover::since_boot();
        for found in found {
            let identity = &found.identity;
            if self.following.contains_key(identity) || self.refused.contains(identity) {
                continue;
            }
            // A process whose age cannot be told is traced at once.
            let age = since_boot.and_then(|now| identity.age(now));
            if age.is_some_and(|age| age < self.attach_after) {
                continue;
            }
            if self.following.len() >= self.max_targets as usize {
                if self.over_limit.insert(identity.clone()) {
                    self.lock().skipped += 1;
                    crate::status!(
                        "pooltrace agent: PID {} ({}) not traced: --max-targets {} reached",
                        identity.pid,
                        identity.exe_name(),
                        self.max_targets
                    );
                }
                continue;
            }
            let task = target::follow(
                found.clone(),
                self.config.clone(),
                self.object.clone(),
                self.published.clone(),
                stopped.clone(),
            );
            self.following
                .insert(found.identity, tokio::task::spawn_local(task));
        }
    }

    /// Drops the numbers of processes that exited more than `--forget-after` ago, or that
    /// are gone without a task to say so (refused ones never publish).
    fn forget_exited(&self, running: &HashSet<&Identity>) {
        let forget_after = self.forget_after;
        let following = &self.following;
        self.lock()
            .targets
            .retain(|identity, view| match view.exited {
                Some(at) => at.elapsed() < forget_after,
                None => following.contains_key(identity) || running.contains(identity),
            });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a client on the network could do that it should not, when `--listen` is not a
/// loopback address: read the endpoints without proving who it is, or read the basic-auth
/// passwords (authentication without TLS).
fn exposure(args: &AgentArgs, web: &WebConfig) -> Option<String> {
    if args.listen.ip().is_loopback() {
        return None;
    }
    let addr = args.listen;
    let warning = match (&args.web_config, web.authenticates(), web.tls.is_some()) {
        (None, _, _) => {
            "there is no --web-config: anyone who reaches it reads the endpoints, unencrypted \
             and unauthenticated"
        }
        (Some(_), false, false) => {
            "--web-config sets neither TLS nor authentication: anyone who reaches it reads the \
             endpoints, unencrypted"
        }
        (Some(_), false, true) => {
            "--web-config authenticates no one (no basic_auth_users, no \
             RequireAndVerifyClientCert): anyone who reaches it reads the endpoints"
        }
        (Some(_), true, false) => {
            "--web-config sets basic auth without TLS: passwords cross the network readable"
        }
        (Some(_), true, true) => return None,
    };
    Some(format!("{addr} is not loopback and {warning}"))
}

/// `--dry-run`: what the agent would do, without listening or attaching.
fn dry_run(
    args: &AgentArgs,
    request: &PoolRequest,
    web: &WebConfig,
    matcher: &Matcher,
    missing: &[i32],
) -> Result<()> {
    let pools: Vec<String> = request
        .entries
        .iter()
        .map(|entry| match entry {
            PoolEntry::Preset(preset) => format!("preset {preset:?}").to_lowercase(),
            PoolEntry::Custom(pool) => format!("{} / {} ({:?})", pool.get, pool.put, pool.kind),
        })
        .collect();
    let mut text = format!(
        "pooltrace agent --dry-run: would serve {}://{}/metrics\n  pools: {}\n  \
         processes: --exe {:?} --pid {:?}, at most {}\n  every {:?}, scan every {:?}, \
         top {} paths, budget {}% of a core\n",
        web.scheme(),
        args.listen,
        pools.join("; "),
        args.exe,
        args.pid,
        args.max_targets,
        args.interval,
        args.scan_interval,
        args.top_paths,
        args.budget,
    );
    text += &match &args.web_config {
        Some(path) => format!("  web config {}: {}\n", path.display(), web.summary),
        None => format!("  no web config: {}\n", web.summary),
    };
    if let Some(warning) = exposure(args, web) {
        text += &format!("  warning: {warning}\n");
    }
    for pid in missing {
        text += &format!("  no process {pid} (--pid)\n");
    }
    for found in matcher.scan() {
        text += &format!(
            "  matches now: PID {} ({})\n",
            found.identity.pid, found.identity.exe
        );
    }
    write_stdout(text.as_bytes())
}
