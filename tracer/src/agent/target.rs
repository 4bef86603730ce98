//! One traced process, from attach to its exit (or the agent's): reads its kernel maps every
//! `--interval` into a report, publishes it, and sets the share of the time Get is probed to
//! what the budget allows (the switching itself is `probes::lifecycle`'s).

use std::{
    path::Path,
    rc::Rc,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::watch;

use super::{discover::Found, Config, Published, TargetView};
use crate::{
    error::Result,
    gobin::GoBinary,
    probes::{
        budget::{Budget, Decision},
        Lifecycle, Object, Probes,
    },
    process::{Change, Process},
    report::SortBy,
    session::{sleep_until, Attached, Cut},
    tracking::{PoolState, Snapshot},
};

/// How following a process ended.
pub enum Outcome {
    /// It could not be traced; it is not tried again.
    Refused,
    /// It exited or called exec, or the agent is stopping.
    Ended,
}

/// Traces `found` in a slot of `object` until it exits or `stop` turns true, publishing
/// into `published`.
pub async fn follow(
    found: Found,
    config: Arc<Config>,
    object: Rc<Object>,
    published: Arc<Mutex<Published>>,
    stop: watch::Receiver<bool>,
) -> Outcome {
    let (pid, exe) = (found.identity.pid, found.identity.exe_name().to_owned());
    let result = async {
        let mut process = Process::open(pid)?;
        let binary = GoBinary::open(&process.exe_path(), Path::new(process.exe_name()))?;
        let (plans, absent) = config.request.plan_present(&binary)?;
        for why in absent {
            crate::status!("pooltrace agent: PID {pid} ({exe}): {}", why.chain());
        }
        let planner = (config.windows.as_ref())
            .map(|windows| windows.planner(&plans))
            .transpose()?;
        let probes = Probes::in_object(&object, &process, &binary, &plans)?;
        let probes = Lifecycle::attach(probes, plans.len(), planner)?;
        let mut watch = process.watch()?;
        watch.arm_exec(&process);
        crate::status!(
            "pooltrace agent: attached {} uprobes to PID {pid} ({exe}), {} pool(s)",
            probes.probes().attached(),
            plans.len()
        );
        let mut traced = Traced {
            found: &found,
            config: &config,
            published: &published,
            attached: Attached::new(&binary, process, probes, plans),
            fraction: 1.0,
            cost_cores: 0.0,
        };
        if config.windows.is_some() {
            traced.attached.budget = Some(config.budget);
        }
        let change = traced.until_stopped(&mut watch, stop).await?;
        if change.is_some() {
            // The maps outlive the process: its last numbers are read after it is gone.
            traced.publish(true)?;
        }
        Ok::<_, crate::Error>(change)
    }
    .await;
    match result {
        Ok(Some(change)) => {
            crate::status!("pooltrace agent: PID {pid} ({exe}) {}", describe(&change));
            Outcome::Ended
        }
        Ok(None) => Outcome::Ended,
        // A process that exits or execs while its probes go on or off (a kill during a
        // window's switch, a child between fork and exec that still shows its parent's
        // executable) fails that step: what happened is the exit.
        Err(error) if !found.identity.runs_still() => {
            crate::status!(
                "pooltrace agent: PID {pid} ({exe}) exited or called exec while being \
                 attached or switched ({}): detached",
                error.chain()
            );
            let mut published = published.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(view) = published.targets.get_mut(&found.identity) {
                // Its last numbers stay for --forget-after, as any exit's.
                let mut ended = TargetView::clone(view);
                ended.exited = Some(Instant::now());
                *view = Arc::new(ended);
            }
            Outcome::Ended
        }
        Err(error) => {
            crate::status!(
                "pooltrace agent: cannot trace PID {pid} ({exe}): {}",
                error.chain()
            );
            let mut published = published.lock().unwrap_or_else(|e| e.into_inner());
            *published.attach_failures.entry(exe).or_default() += 1;
            // A failure after attach leaves no live-looking numbers behind.
            published.targets.remove(&found.identity);
            Outcome::Refused
        }
    }
}

fn describe(change: &Change) -> String {
    match change {
        Change::Exited(ending) => ending.to_string(),
        Change::Execed(now) => format!("called exec (now running {now}): detached"),
    }
}

/// How much the over-budget estimate must grow since it was last said to be said again.
const RESAY_GROWTH: f64 = 1.5;

/// An attached process; dropping it detaches.
struct Traced<'a> {
    found: &'a Found,
    config: &'a Config,
    published: &'a Mutex<Published>,
    attached: Attached<'a>,
    /// The share of the time Get is probed now.
    fraction: f64,
    /// The probes' estimated cost at that fraction, in cores (0 until rates are known).
    cost_cores: f64,
}

impl Traced<'_> {
    /// Publishes every `--interval` until the process exits or execs (returned) or the
    /// agent stops (None).
    async fn until_stopped(
        &mut self,
        watch: &mut crate::process::Watch,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Option<Change>> {
        // `--continuous`: Get sampled to the budget, if there is one. Tracing windows keep to
        // theirs in the lifecycle.
        let continuous = self.config.windows.is_none();
        let mut budget = (continuous && self.config.budget > 0.0).then(|| {
            Budget::new(
                self.config.budget,
                self.config.sample_gets,
                &self.attached.plans,
                self.config.request.double_puts,
            )
        });
        if continuous {
            self.fraction = budget.as_ref().map_or(1.0, Budget::initial);
            self.fraction = self.fraction.min(self.config.sample_gets.unwrap_or(1.0));
            self.attached.probes.set_get_share(self.fraction)?;
        }
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.interval,
            self.config.interval,
        );
        // After a stall (another process's binary being read), one late tick, not a burst
        // that would give the budget rates over a millisecond.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        // The cost last said to be over the budget. Said again whenever it grows by half:
        // the first estimate comes while every Get is probed and the target runs slowed, so
        // its Put rate, and Put's cost, climb once Get is sampled.
        let mut said_cores: Option<f64> = None;
        self.publish(false)?;
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(None),
                change = watch.changed() => return Ok(Some(change)),
                _ = sleep_until(self.attached.probes.switch_at()) => self.attached.probes.switch()?,
                _ = ticks.tick() => {
                    if let Some(now) = watch.execed() {
                        return Ok(Some(Change::Execed(now)));
                    }
                    self.attached.process.refresh_mappings();
                    let snapshot = self.publish(false)?;
                    let Some(budget) = &mut budget else { continue };
                    let counters: Vec<_> = snapshot.pools.iter().map(|p| p.counters).collect();
                    let seconds = last_tick.elapsed().as_secs_f64();
                    let decision = budget.next(&counters, seconds, self.fraction);
                    last_tick = Instant::now();
                    if decision.put_over_budget
                        && said_cores.is_none_or(|said| decision.cost_cores >= said * RESAY_GROWTH)
                    {
                        self.warn_over_budget(&decision, said_cores.is_some());
                        said_cores = Some(decision.cost_cores);
                    }
                    (self.fraction, self.cost_cores) = (decision.fraction, decision.cost_cores);
                    self.attached.probes.set_get_share(self.fraction)?;
                }
            }
        }
    }

    /// Says the probes cost more than the budget; `again`, that the figure said before grew.
    fn warn_over_budget(&self, decision: &Decision, again: bool) {
        crate::status!(
            "pooltrace agent: PID {} ({}): the probes {} about {:.1}% of a core, over \
             --budget {}%: Put's alone are over it, and only Get is sampled ({:.0}% of the time)",
            self.attached.process.pid(),
            self.found.identity.exe_name(),
            if again { "now cost" } else { "cost" },
            decision.cost_cores * 100.0,
            self.config.budget,
            decision.fraction * 100.0,
        );
    }

    /// Reads the maps, builds the report and publishes it; the snapshot is returned for the
    /// budget's counters.
    fn publish(&mut self, exited: bool) -> Result<Snapshot> {
        let cut = Cut {
            min_age: self.config.min_age,
            sort: SortBy::Score,
            sample_gets: self.config.windows.is_none().then_some(self.fraction),
            top: self.config.top_paths,
        };
        let (snapshot, report) = self.attached.report(&cut)?;
        if let Some(windows) = &report.windows {
            (self.fraction, self.cost_cores) = (windows.duty, windows.cost_cores);
        }
        let view = TargetView {
            identity: self.found.identity.clone(),
            container: self.found.container.clone(),
            hold_buckets: snapshot.pools.iter().map(PoolState::hold_times).collect(),
            report,
            sample_fraction: self.fraction,
            cost_cores: self.cost_cores,
            probes: self.attached.probes.probes().attached(),
            exited: exited.then(Instant::now),
        };
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        published
            .targets
            .insert(self.found.identity.clone(), Arc::new(view));
        Ok(snapshot)
    }
}
