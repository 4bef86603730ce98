//! Choosing tracing windows from measurements: how long Get is probed in a cycle (W), how
//! long Put stays probed after it (the grace, G), and how long the cycle lasts (P), so that the
//! probes' estimated cost, averaged over the cycle, stays within `--budget`.
//!
//! - G is ten times the longest p99.9 hold time of the pools' returned objects, within a floor
//!   and a cap, so an object still out when Put goes, a survivor, has been held far longer
//!   than its pool's objects usually are. Where the budget cannot pay for that grace within a
//!   period of a minute, it is shortened (and said once): its survivors are then no evidence,
//!   since scoring compares each window's grace with the hold times. Objects held longer still are timed exactly when a
//!   later window sees their Put, and their hold times join the measurements.
//! - W lasts long enough for about [`GETS_PER_WINDOW`] Gets at the rate measured, within
//!   bounds.
//! - P is as long as the cycle's cost needs: what its Gets and Puts cost, divided by the
//!   budget. When every probe can stay live within the budget, nothing is detached at all.
//!
//! What the user fixes (`--window`, `--grace`, `--period`) is kept, except a grace below the
//! hold times already measured, which is raised to them and said once.

use std::time::Duration;

use tracer_common::PoolCounters;

use super::{budget::HitCosts, pool::PoolPlan};
use crate::error::{Error, Result};

/// Grace bounds: below 100 ms, taking Put's probes away (an RCU grace period, ~0.1 s here)
/// is most of it; above half a minute, the cycle's Put cost needs a very long rest under a
/// small budget.
pub const GRACE_FLOOR: Duration = Duration::from_millis(100);
pub const GRACE_CAP: Duration = Duration::from_secs(30);
/// A cycle's grace is shortened to keep its period within this, so that a hot service is
/// still traced a window a minute.
const PERIOD_MAX: Duration = Duration::from_secs(60);
/// The grace is this many times the p99.9 hold time.
const GRACE_FACTOR: u32 = 10;
/// Window bounds. A window is short at a hot pool: Get's probes (single-stepped at its RETs)
/// slow the target while they are live, and the objects taken then are held longer than
/// usual. Measured on the saturated demo, a 0.2 s window stretched its paths' holds from
/// milliseconds to a second, and that hid a leak.
const WINDOW_MIN: Duration = Duration::from_millis(10);
/// The first window, before any rate is known: short, since at a hot pool a window is the
/// dearest part of a cycle.
const FIRST_WINDOW: Duration = Duration::from_millis(20);
const WINDOW_MAX: Duration = Duration::from_secs(5);
const GETS_PER_WINDOW: f64 = 1_000.0;
/// Probed for less than this, a count says nothing of a rate (seconds): what a program
/// counted while it was being taken away is counted over no probed time at all.
const MIN_MEASURED: f64 = 0.005;

/// One cycle's times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowTimes {
    /// Get and Put probed.
    pub window: Duration,
    /// Put alone, after the window.
    pub grace: Duration,
    /// The whole cycle, the rest with nothing probed included.
    pub period: Duration,
}

impl WindowTimes {
    /// The share of the time Get is probed.
    pub fn duty(&self) -> f64 {
        self.window.as_secs_f64() / self.period.as_secs_f64().max(1e-9)
    }
}

/// The times the user fixed; the others are chosen.
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedTimes {
    pub window: Option<Duration>,
    pub grace: Option<Duration>,
    pub period: Option<Duration>,
}

impl FixedTimes {
    /// Refuses times that cannot fit in one cycle.
    pub fn check(&self) -> Result<()> {
        let (window, grace) = (
            self.window.unwrap_or(WINDOW_MIN),
            self.grace.unwrap_or(GRACE_FLOOR),
        );
        match self.period {
            Some(period) if window + grace > period => Err(Error::Usage(format!(
                "--window {} plus --grace {} is longer than --period {}: a cycle holds its \
                 window and its grace",
                secs(window),
                secs(grace),
                secs(period)
            ))),
            _ => Ok(()),
        }
    }
}

/// What one cycle (or, while nothing is detached, one interval) measured.
pub struct Measured<'a> {
    /// Each pool's counters now.
    pub counters: &'a [PoolCounters],
    /// Each pool's hold-time buckets now (`tracer_common::hold_bucket`).
    pub holds: &'a [Vec<u64>],
    /// Seconds Get and Put were probed since the last measurement.
    pub get_seconds: f64,
    pub put_seconds: f64,
}

/// The estimated cost of the probes, in cores, as the last measurement gave it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Everything probed all the time.
    pub continuous: f64,
    /// Averaged over the cycle in force.
    pub in_force: f64,
}

/// Chooses each cycle's times.
pub struct Planner {
    /// Share of one core, in nanoseconds a second; None when the user fixed the period.
    allowed_ns: Option<f64>,
    fixed: FixedTimes,
    costs: Vec<HitCosts>,
    /// Per pool: Gets and Puts at the last measurement.
    last: Vec<(u64, u64)>,
    /// Get and Put per second while probed, as last measured.
    rates: Vec<(f64, f64)>,
    cost: Cost,
    /// The user's grace was raised to the measured hold times (said once).
    grace_raised: bool,
    /// The grace was lowered to what the budget allows (said once).
    grace_lowered: bool,
}

/// What the planner decided at the end of a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// Every probe stays live: the budget allows it.
    Continuous,
    /// Put alone for this grace.
    Grace(Duration),
}

impl Planner {
    /// `budget`: percent of one core, or None when `fixed.period` is given.
    pub fn new(budget: Option<f64>, fixed: FixedTimes, plans: &[PoolPlan]) -> Result<Self> {
        fixed.check()?;
        if budget.is_none() && fixed.period.is_none() {
            return Err(Error::Internal("tracing windows need a budget or a period"));
        }
        Ok(Self {
            allowed_ns: budget.map(|pct| pct / 100.0 * 1e9),
            fixed,
            costs: plans.iter().map(HitCosts::of).collect(),
            last: vec![(0, 0); plans.len()],
            rates: vec![(0.0, 0.0); plans.len()],
            cost: Cost::default(),
            grace_raised: false,
            grace_lowered: false,
        })
    }

    /// The first window's length: the first window opens at attach.
    pub fn first_window(&self) -> Duration {
        self.fixed.window.unwrap_or(FIRST_WINDOW)
    }

    /// The cost as last estimated.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// At the end of a window, or of a check while everything stays probed: whether it may
    /// go on so, or how long Put stays.
    pub fn window_ended(&mut self, measured: &Measured, window: Duration) -> Next {
        self.measure(measured);
        let fits = self
            .allowed_ns
            .is_some_and(|allowed| self.cost.continuous * 1e9 <= allowed);
        if fits && self.fixed.period.is_none() {
            return Next::Continuous;
        }
        Next::Grace(self.grace(measured.holds, window))
    }

    /// At the end of a cycle's grace, once Put is detached: how long the cycle that just
    /// traced `window` and `grace` lasts, and the next window.
    pub fn grace_ended(
        &mut self,
        measured: &Measured,
        window: Duration,
        grace: Duration,
    ) -> (Duration, Duration) {
        self.measure(measured);
        let traced = window + grace;
        // The ns the cycle's probes cost, at the rates measured while they were live.
        let cycle_ns: f64 = self
            .rates
            .iter()
            .zip(&self.costs)
            .map(|(&(gets, puts), cost)| {
                gets * cost.get_ns * window.as_secs_f64()
                    + puts * cost.put_ns * traced.as_secs_f64()
            })
            .sum();
        let period = match (self.fixed.period, self.allowed_ns) {
            (Some(period), _) => period,
            (None, Some(allowed)) => traced.max(Duration::from_secs_f64(cycle_ns / allowed)),
            (None, None) => traced,
        };
        self.cost.in_force = cycle_ns / period.as_secs_f64().max(1e-9) / 1e9;
        (period, self.window())
    }

    /// Folds in what was counted since the last measurement.
    fn measure(&mut self, measured: &Measured) {
        let mut continuous_ns = 0.0;
        for (((counters, last), rates), cost) in measured
            .counters
            .iter()
            .zip(&mut self.last)
            .zip(&mut self.rates)
            .zip(&self.costs)
        {
            let gets = counters.gets.saturating_sub(last.0);
            let puts = counters.puts.saturating_sub(last.1);
            *last = (counters.gets, counters.puts);
            // A few hits counted while a program was being taken away are no rate.
            if measured.get_seconds >= MIN_MEASURED {
                rates.0 = gets as f64 / measured.get_seconds;
            }
            if measured.put_seconds >= MIN_MEASURED {
                rates.1 = puts as f64 / measured.put_seconds;
            }
            continuous_ns += rates.0 * cost.get_ns + rates.1 * cost.put_ns;
        }
        self.cost.continuous = continuous_ns / 1e9;
    }

    /// The next window: about `GETS_PER_WINDOW` Gets at the rate measured.
    fn window(&self) -> Duration {
        if let Some(window) = self.fixed.window {
            return window;
        }
        let gets_per_s: f64 = self.rates.iter().map(|r| r.0).sum();
        if gets_per_s <= 0.0 {
            return FIRST_WINDOW;
        }
        Duration::from_secs_f64(GETS_PER_WINDOW / gets_per_s).clamp(WINDOW_MIN, WINDOW_MAX)
    }

    /// This cycle's grace: ten times the p99.9 hold time, or the user's (raised to the hold
    /// times measured).
    fn grace(&mut self, holds: &[Vec<u64>], window: Duration) -> Duration {
        let p999 = holds.iter().filter_map(|h| hold_quantile(h, 0.999)).max();
        let measured = Duration::from_nanos(p999.unwrap_or(0));
        if let Some(grace) = self.fixed.grace {
            // Raised no further than a fixed period leaves after the window.
            let most = (self.fixed.period).map_or(Duration::MAX, |p| p.saturating_sub(window));
            let raised = grace.max(measured).min(most).max(grace);
            if raised > grace && !self.grace_raised {
                self.grace_raised = true;
                crate::status!(
                    "pooltrace: --grace {} is below the p99.9 hold time measured ({}): \
                     Put stays {} after each window",
                    secs(grace),
                    secs(measured),
                    secs(raised)
                );
            }
            return raised;
        }
        let wanted = (measured * GRACE_FACTOR).clamp(GRACE_FLOOR, GRACE_CAP);
        match self.affordable_grace(window) {
            Some(affordable) if affordable < wanted => {
                if !self.grace_lowered {
                    self.grace_lowered = true;
                    crate::status!(
                        "pooltrace: the budget allows a grace of {} where ten times the p99.9 \
                         hold time is {}: survivors of such windows are not scored",
                        secs(affordable.max(GRACE_FLOOR)),
                        secs(wanted)
                    );
                }
                affordable.max(GRACE_FLOOR)
            }
            _ => wanted,
        }
    }

    /// The longest grace after `window` that keeps the cycle within [`PERIOD_MAX`] at the
    /// budget and the rates measured; None without a budget or a Put rate.
    fn affordable_grace(&self, window: Duration) -> Option<Duration> {
        let allowed = self.allowed_ns?;
        let (mut window_ns, mut put_ns_per_s) = (0.0, 0.0);
        for (&(gets, puts), cost) in self.rates.iter().zip(&self.costs) {
            window_ns += (gets * cost.get_ns + puts * cost.put_ns) * window.as_secs_f64();
            put_ns_per_s += puts * cost.put_ns;
        }
        let spare = allowed * PERIOD_MAX.as_secs_f64() - window_ns;
        (put_ns_per_s > 0.0).then(|| Duration::from_secs_f64((spare / put_ns_per_s).max(0.0)))
    }
}

/// The hold time below which a share `q` of the objects in `buckets` came back: the upper
/// edge of the bucket where that share is reached (so never an underestimate).
pub fn hold_quantile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (bucket, &count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= wanted.max(1) {
            return Some(tracer_common::hold_bucket_ceiling(bucket));
        }
    }
    None
}

/// A duration as the messages write it, e.g. "1.5s".
fn secs(d: Duration) -> String {
    crate::units::millis(d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_and_grace_longer_than_the_period_are_refused() {
        let fixed = FixedTimes {
            window: Some(Duration::from_secs(2)),
            grace: Some(Duration::from_secs(2)),
            period: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            fixed.check().unwrap_err().to_string(),
            "--window 2.0s plus --grace 2.0s is longer than --period 3.0s: a cycle holds its \
             window and its grace"
        );
    }

    #[test]
    fn the_hold_quantile_is_the_upper_edge_of_its_bucket() {
        let mut buckets = vec![0; tracer_common::HOLD_BUCKETS];
        buckets[tracer_common::hold_bucket(1_000_000)] = 999;
        buckets[tracer_common::hold_bucket(3_000_000_000)] = 1;
        let p999 = hold_quantile(&buckets, 0.999).unwrap();
        assert!((1_000_000..1_600_000).contains(&p999), "{p999}");
        let max = hold_quantile(&buckets, 1.0).unwrap();
        assert!(max > 3_000_000_000, "{max}");
        assert_eq!(hold_quantile(&[0; 4], 0.999), None);
        // The last bucket has no next one to take an edge from.
        let mut last = vec![0; tracer_common::HOLD_BUCKETS];
        last[tracer_common::HOLD_BUCKETS - 1] = 1;
        assert_eq!(hold_quantile(&last, 1.0), Some(u64::MAX));
    }
}
