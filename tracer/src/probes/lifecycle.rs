//! One trace's probes over time: the only place that decides when they are attached and
//! detached, for `report`, `run`, `stream` and the agent alike.
//!
//! ```text
//!   Loaded --attach--> Armed --rest_gets--> PutOnly --wake_gets--> Armed ...
//!   any state --drop--> detached
//! ```
//!
//! - `attach` loads the programs and arms Put's sites, then Get's entries, then Get's RETs: a
//!   Get recorded while its Put could still pass unseen would look outstanding forever, so on
//!   a busy process any other order invents leaks.
//! - `rest_gets` takes Get's RETs, then its entries, away and leaves Put: every object taken
//!   while Get was probed is still seen coming back. `wake_gets` arms them again.
//! - Dropping detaches in the reverse of the arming order, Get's probes before Put's.
//! - Get's share of the time (`--sample-gets`, the agent's budget) is kept by switching
//!   between Armed and PutOnly over [`SAMPLE_CYCLE`]: [`Lifecycle::switch_at`] says when, and
//!   [`Lifecycle::switch`] does it.

use std::time::Duration;

use tokio::time::Instant;
use tracer_common::names;

use super::{
    attach::{Limits, Probes},
    pool::PoolPlan,
};
use crate::{error::Result, gobin::GoBinary, process::Process};

/// Put's program, armed first and detached last.
const PUT: [&str; 1] = [names::PROGRAM_PUT];
/// Get's programs, in the arming order: its entry (which stashes the receiver) is live
/// whenever its RETs are.
const GETS: [&str; 2] = [names::PROGRAM_GET_ENTRY, names::PROGRAM_GET];

/// When Get is probed only a share of the time, it is switched on and off over this period.
pub const SAMPLE_CYCLE: Duration = Duration::from_millis(500);

/// Which of a trace's probes are live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Loaded, nothing live.
    Loaded,
    /// Put's probes only.
    PutOnly,
    /// Put's and Get's probes.
    Armed,
}

/// A trace's probes and their state; dropping it detaches them all.
pub struct Lifecycle {
    probes: Probes,
    state: State,
    /// The share of the time Get is probed, in (0, 1].
    get_share: f64,
    /// When Get is next switched on or off, while it is probed less than always.
    switch_at: Option<Instant>,
}

impl Lifecycle {
    /// Loads the probes of `plans` into `process` and arms them: the trace starts here.
    pub fn attach(
        process: &Process,
        binary: &GoBinary,
        plans: &[PoolPlan],
        limits: Limits,
    ) -> Result<Self> {
        let mut lifecycle = Self {
            probes: Probes::load(process, binary, plans, limits)?,
            state: State::Loaded,
            get_share: 1.0,
            switch_at: None,
        };
        lifecycle.probes.arm(&PUT)?;
        lifecycle.state = State::PutOnly;
        lifecycle.wake_gets()?;
        Ok(lifecycle)
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    pub fn probes_mut(&mut self) -> &mut Probes {
        &mut self.probes
    }

    /// Probes Get `share` of the time from now on (1: always). A share below 1 switches at
    /// [`Lifecycle::switch_at`]; a share of 1 arms Get's probes at once if they rest.
    pub fn set_get_share(&mut self, share: f64) -> Result<()> {
        self.get_share = share;
        if share >= 1.0 {
            self.switch_at = None;
            if self.state == State::PutOnly {
                self.wake_gets()?;
            }
        } else if self.switch_at.is_none() {
            self.schedule_switch();
        }
        Ok(())
    }

    /// When Get's probes are next switched on or off; None while they stay as they are.
    pub fn switch_at(&self) -> Option<Instant> {
        self.switch_at
    }

    /// Switches Get's probes off if they are live, on if they rest, and sets the next switch.
    pub fn switch(&mut self) -> Result<()> {
        match self.state {
            State::Armed => self.rest_gets()?,
            State::PutOnly => self.wake_gets()?,
            State::Loaded => {}
        }
        self.schedule_switch();
        Ok(())
    }

    fn rest_gets(&mut self) -> Result<()> {
        self.probes.disarm(&GETS)?;
        self.state = State::PutOnly;
        Ok(())
    }

    fn wake_gets(&mut self) -> Result<()> {
        self.probes.arm(&GETS)?;
        self.state = State::Armed;
        Ok(())
    }

    /// The state now lasts its share of the cycle.
    fn schedule_switch(&mut self) {
        let share = match self.state {
            State::Armed => self.get_share,
            State::PutOnly | State::Loaded => 1.0 - self.get_share,
        };
        self.switch_at = Some(Instant::now() + SAMPLE_CYCLE.mul_f64(share));
    }
}
