//! One trace's probes over time: the only place that decides when they are attached and
//! detached, for `report`, `run`, `stream` and the agent alike.
//!
//! ```text
//!   attach --> Armed --rest_gets--> PutOnly --wake_gets--> Armed ...      (sampled Gets)
//!   attach --> Armed --window--> PutOnly --grace--> Resting --period--> Armed ...  (windows)
//!   any state --drop--> detached
//! ```
//!
//! - Arming goes Put's sites, then Get's entries, then Get's RETs: a Get recorded while its
//!   Put could still pass unseen would look outstanding forever, so on a busy process any
//!   other order invents leaks. Detaching goes in reverse.
//! - `rest_gets` takes Get's RETs, then its entries, away and leaves Put: every object taken
//!   while Get was probed is still seen coming back.
//! - Sampled Gets (`--sample-gets`, the agent's `--continuous` budget) switch between Armed
//!   and PutOnly over [`SAMPLE_CYCLE`].
//! - Tracing windows (`--budget`, `--period`) cycle through all three states with the times
//!   `windows.rs` chooses. Taking Put away (entering Resting) ends an epoch: the kernel side
//!   is told the new one before Put comes back, so an object of an earlier epoch is known
//!   to have gone unwatched for a while. When the budget allows every probe all the time,
//!   the cycle stays Armed, and the budget is asked again every few seconds.
//!
//! [`Lifecycle::switch_at`] says when the next transition is due; [`Lifecycle::switch`] makes
//! it.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;
use tracer_common::names;

use super::{
    attach::Probes,
    windows::{Measured, Next, Planner, WindowTimes},
};
use crate::{error::Result, tracking};

/// Put's program, armed first and detached last.
const PUT: [&str; 1] = [names::PROGRAM_PUT];
/// Get's programs, in the arming order: its entry (which stashes the receiver) is live
/// whenever its RETs are.
const GETS: [&str; 2] = [names::PROGRAM_GET_ENTRY, names::PROGRAM_GET];

/// Epochs whose grace is remembered: a survivor older than that many windows is judged by
/// the oldest grace kept.
pub const GRACES_KEPT: usize = 4096;

/// While the budget allows every probe, it is asked again this often: a load that grows
/// starts the windows within this long.
const BUDGET_CHECK: Duration = Duration::from_secs(5);

/// When Get is probed only a share of the time, it is switched on and off over this period.
pub const SAMPLE_CYCLE: Duration = Duration::from_millis(500);

/// Which of a trace's probes are live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing live.
    Resting,
    /// Put's probes only.
    PutOnly,
    /// Put's and Get's probes.
    Armed,
}

/// A trace's probes and their state; dropping it detaches them all.
pub struct Lifecycle {
    probes: Probes,
    /// The traced process.
    pid: i32,
    pools: usize,
    state: State,
    /// Since when the state holds.
    since: Instant,
    /// The share of the time Get is probed when sampled, in (0, 1].
    get_share: f64,
    /// When the next transition is due; None while the probes stay as they are.
    switch_at: Option<Instant>,
    windows: Option<Windows>,
    /// How long Get and Put have been probed, in all and since the last measurement.
    probed: Probed,
    since_measured: Probed,
}

/// Tracing windows in force.
struct Windows {
    planner: Planner,
    /// This cycle's times (its period is known once its grace ends).
    times: WindowTimes,
    cycle_started: Instant,
    /// Every probe is live because the budget allows it.
    continuous: bool,
    epoch: u64,
    /// The grace each ended epoch's window had: its survivors were held at least that long.
    graces: BTreeMap<u64, Duration>,
    opened: u64,
    /// Windows that could not open (attach failed); each is said once.
    failed: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Probed {
    get: Duration,
    put: Duration,
}

/// What the windows in force are, for reports.
#[derive(Clone, Copy, Debug)]
pub struct WindowStatus {
    /// The last cycle's times.
    pub times: WindowTimes,
    /// Every probe is live because the budget allows it.
    pub continuous: bool,
    /// Windows opened and windows that could not open.
    pub opened: u64,
    pub failed: u64,
    /// The probes' estimated cost in cores, averaged over the cycle in force.
    pub cost_in_force: f64,
}

impl Lifecycle {
    /// Arms `probes`, placed for `pools` pools: the trace, and with `windows` its first
    /// window, starts here.
    pub fn attach(probes: Probes, pools: usize, windows: Option<Planner>) -> Result<Self> {
        let mut lifecycle = Self {
            pid: probes.pid(),
            probes,
            pools,
            state: State::Resting,
            since: Instant::now(),
            get_share: 1.0,
            switch_at: None,
            windows: None,
            probed: Probed::default(),
            since_measured: Probed::default(),
        };
        lifecycle.arm()?;
        // The window is timed from when Get went live, not from the (slower) load.
        let now = Instant::now();
        if let Some(planner) = windows {
            let window = planner.first_window();
            lifecycle.switch_at = Some(now + window);
            lifecycle.windows = Some(Windows {
                times: WindowTimes {
                    window,
                    grace: Duration::ZERO,
                    period: window,
                },
                planner,
                cycle_started: now,
                continuous: false,
                epoch: 0,
                graces: BTreeMap::new(),
                opened: 1,
                failed: 0,
            });
        }
        Ok(lifecycle)
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Probes Get `share` of the time from now on (1: always). A share below 1 switches at
    /// [`Lifecycle::switch_at`]; a share of 1 arms Get's probes at once if they rest. Under
    /// tracing windows, which set their own times, it changes nothing.
    pub fn set_get_share(&mut self, share: f64) -> Result<()> {
        if self.windows.is_some() {
            return Ok(());
        }
        self.get_share = share;
        if share >= 1.0 {
            self.switch_at = None;
            if self.state == State::PutOnly {
                self.wake_gets()?;
            }
        } else if self.switch_at.is_none() {
            self.schedule_sample_switch();
        }
        Ok(())
    }

    /// When the next transition is due; None while the probes stay as they are.
    pub fn switch_at(&self) -> Option<Instant> {
        self.switch_at
    }

    /// Makes the transition that is due.
    pub fn switch(&mut self) -> Result<()> {
        if self.windows.is_none() {
            match self.state {
                State::Armed => self.rest_gets()?,
                State::PutOnly | State::Resting => self.wake_gets()?,
            }
            self.schedule_sample_switch();
            return Ok(());
        }
        match self.state {
            State::Armed => self.end_window(),
            State::PutOnly => self.end_grace(),
            State::Resting => {
                self.open_window();
                Ok(())
            }
        }
    }

    /// The windows in force, if any.
    pub fn window_status(&self) -> Option<WindowStatus> {
        self.windows.as_ref().map(|w| WindowStatus {
            times: w.times,
            continuous: w.continuous,
            opened: w.opened,
            failed: w.failed,
            cost_in_force: match w.continuous {
                true => w.planner.cost().continuous,
                false => w.planner.cost().in_force,
            },
        })
    }

    /// The grace of each ended epoch's window (the latest [`GRACES_KEPT`]); empty without
    /// windows.
    pub fn graces(&self) -> &BTreeMap<u64, Duration> {
        static NONE: BTreeMap<u64, Duration> = BTreeMap::new();
        self.windows.as_ref().map_or(&NONE, |w| &w.graces)
    }

    /// Seconds Get, and Put, have been probed since attach: what their counters count over.
    pub fn probed_seconds(&self) -> (f64, f64) {
        let probed = self.probed_now();
        (probed.get.as_secs_f64(), probed.put.as_secs_f64())
    }

    /// The window's end: every probe stays if the budget allows it (asked again every
    /// [`BUDGET_CHECK`] while it does), else Get goes and Put stays for the grace.
    fn end_window(&mut self) -> Result<()> {
        let measured = self.measure()?;
        let Some(windows) = self.windows.as_mut() else {
            return Ok(());
        };
        match windows
            .planner
            .window_ended(&measured.view(), windows.times.window)
        {
            Next::Continuous => {
                windows.continuous = true;
                self.switch_at = Some(Instant::now() + BUDGET_CHECK);
                Ok(())
            }
            Next::Grace(grace) => {
                windows.continuous = false;
                windows.times.grace = grace;
                self.switch_at = Some(Instant::now() + grace);
                self.rest_gets()
            }
        }
    }

    /// The grace's end: Put goes, the epoch ends, and the cycle rests until its period ends.
    fn end_grace(&mut self) -> Result<()> {
        let Some(mut windows) = self.windows.take() else {
            return Ok(());
        };
        self.enter(State::Resting);
        let ended = self.probes.disarm(&PUT).and_then(|()| {
            windows.graces.insert(windows.epoch, windows.times.grace);
            if windows.graces.len() > GRACES_KEPT {
                windows.graces.pop_first();
            }
            windows.epoch += 1;
            self.probes.set_epoch(windows.epoch)?;
            self.measure()
        });
        let measured = match ended {
            Ok(measured) => measured,
            Err(error) => {
                self.windows = Some(windows);
                return Err(error);
            }
        };
        let (period, next_window) = windows.planner.grace_ended(
            &measured.view(),
            windows.times.window,
            windows.times.grace,
        );
        windows.times.period = period;
        self.switch_at = Some(windows.cycle_started + period);
        windows.times.window = next_window;
        self.windows = Some(windows);
        Ok(())
    }

    /// A new cycle: Put, then Get. A window that cannot open is said and counted, and the
    /// next one is tried a period later.
    fn open_window(&mut self) {
        let Some(mut windows) = self.windows.take() else {
            return;
        };
        let now = Instant::now();
        windows.cycle_started = now;
        match self.arm() {
            Ok(()) => {
                windows.opened += 1;
                self.switch_at = Some(now + windows.times.window);
            }
            Err(error) => {
                // A process that exited is no failed window: its exit is said where it is
                // seen.
                if self.target_runs() {
                    windows.failed += 1;
                    crate::status!(
                        "pooltrace: window {} could not open: {}",
                        windows.opened + windows.failed,
                        error.chain()
                    );
                }
                // What went live goes again, Get's first; a failure here leaves it to drop.
                let _ = self.probes.disarm(&GETS);
                let _ = self.probes.disarm(&PUT);
                self.enter(State::Resting);
                self.switch_at = Some(now + windows.times.period);
            }
        }
        self.windows = Some(windows);
    }

    /// Whether the traced process still runs: neither gone nor a zombie, which has no
    /// executable.
    fn target_runs(&self) -> bool {
        std::fs::read_link(format!("/proc/{}/exe", self.pid)).is_ok()
    }

    fn arm(&mut self) -> Result<()> {
        self.probes.arm(&PUT)?;
        self.enter(State::PutOnly);
        self.wake_gets()
    }

    fn rest_gets(&mut self) -> Result<()> {
        self.enter(State::PutOnly);
        self.probes.disarm(&GETS)
    }

    fn wake_gets(&mut self) -> Result<()> {
        self.probes.arm(&GETS)?;
        self.enter(State::Armed);
        Ok(())
    }

    /// Books the time spent in the state that ends now.
    fn enter(&mut self, state: State) {
        let now = Instant::now();
        let spent = now - self.since;
        for probed in [&mut self.probed, &mut self.since_measured] {
            if self.state != State::Resting {
                probed.put += spent;
            }
            if self.state == State::Armed {
                probed.get += spent;
            }
        }
        (self.state, self.since) = (state, now);
    }

    /// Probed times, with the state in progress counted up to now.
    fn probed_now(&self) -> Probed {
        let spent = Instant::now() - self.since;
        Probed {
            get: self.probed.get
                + if self.state == State::Armed {
                    spent
                } else {
                    Duration::ZERO
                },
            put: self.probed.put
                + if self.state != State::Resting {
                    spent
                } else {
                    Duration::ZERO
                },
        }
    }

    /// Counters and hold times now, with the probed time since the last measurement.
    fn measure(&mut self) -> Result<Measurement> {
        let state = self.state;
        self.enter(state);
        let since = std::mem::take(&mut self.since_measured);
        Ok(Measurement {
            counters: tracking::counters(&self.probes, self.pools)?,
            holds: tracking::pool_hold_times(&self.probes, self.pools)?,
            probed: since,
        })
    }

    /// The state now lasts its share of the sampling cycle.
    fn schedule_sample_switch(&mut self) {
        let share = match self.state {
            State::Armed => self.get_share,
            State::PutOnly | State::Resting => 1.0 - self.get_share,
        };
        self.switch_at = Some(Instant::now() + SAMPLE_CYCLE.mul_f64(share));
    }
}

/// What the planner is given.
struct Measurement {
    counters: Vec<tracer_common::PoolCounters>,
    holds: Vec<Vec<u64>>,
    probed: Probed,
}

impl Measurement {
    fn view(&self) -> Measured<'_> {
        Measured {
            counters: &self.counters,
            holds: &self.holds,
            get_seconds: self.probed.get.as_secs_f64(),
            put_seconds: self.probed.put.as_secs_f64(),
        }
    }
}
