//! What a probe hit costs the traced thread, and the agent's `--continuous` budget: how much
//! of the time Get may be probed so that the probes' estimated cost stays under a share of
//! one core while Put stays probed. Tracing windows (`windows.rs`) use the same costs.

use tracer_common::PoolCounters;

use super::{pool::PoolPlan, sites::Site};

/// What one hit of a probe costs the traced thread, by how the kernel runs the probed
/// instruction: the trap (the upper ends measured on this machine kind, field notes §3) and
/// pooltrace's program (about 0.6 us at Put, 0.7 us at Get's RET: BENCHMARKS.md).
const EMULATED_HIT_NS: f64 = 1_200.0 + 600.0;
const SINGLE_STEPPED_HIT_NS: f64 = 17_000.0 + 700.0;

/// Get is never probed less than this share of the time: below it, too few objects are
/// tracked to say anything.
pub const MIN_FRACTION: f64 = 0.01;

/// The Get sampling fraction that fits one process's probes in the budget.
pub struct Budget {
    /// Nanoseconds of probe cost allowed per second.
    allowed_ns: f64,
    /// `--sample-gets`: the fraction never goes above it.
    cap: f64,
    /// Nor below this: `MIN_FRACTION`, or 1 when every Get must be seen (`--double-puts`).
    floor: f64,
    /// Per pool: what one Get and one Put cost.
    costs: Vec<HitCosts>,
    /// Per pool: Gets and Puts counted at the last decision.
    last: Vec<(u64, u64)>,
}

impl Budget {
    /// `every_get`: Get may not be sampled (`--double-puts`); the cost is still estimated.
    pub fn new(
        percent_of_core: f64,
        cap: Option<f64>,
        plans: &[PoolPlan],
        every_get: bool,
    ) -> Self {
        let costs = plans.iter().map(HitCosts::of).collect();
        Self {
            allowed_ns: percent_of_core / 100.0 * 1e9,
            cap: cap.unwrap_or(1.0),
            floor: if every_get { 1.0 } else { MIN_FRACTION },
            costs,
            last: vec![(0, 0); plans.len()],
        }
    }

    /// The first fraction, before any rate is known.
    pub fn initial(&self) -> f64 {
        self.cap
    }

    /// The fraction for the next period, from the counters now, `seconds` after the last
    /// decision, during which Get was probed `in_force` of the time.
    pub fn next(&mut self, counters: &[PoolCounters], seconds: f64, in_force: f64) -> Decision {
        let (mut get_ns, mut put_ns) = (0.0, 0.0);
        for ((c, last), cost) in counters.iter().zip(&mut self.last).zip(&self.costs) {
            let (gets, puts) = (c.gets.saturating_sub(last.0), c.puts.saturating_sub(last.1));
            *last = (c.gets, c.puts);
            // Gets seen while probed stand for all of them.
            get_ns += gets as f64 / in_force.max(MIN_FRACTION) * cost.get_ns;
            put_ns += puts as f64 * cost.put_ns;
        }
        let seconds = seconds.max(1e-3);
        let (get_ns, put_ns) = (get_ns / seconds, put_ns / seconds);
        let fraction = fraction(self.allowed_ns, get_ns, put_ns, self.floor, self.cap);
        Decision {
            fraction,
            cost_cores: (put_ns + fraction * get_ns) / 1e9,
            put_over_budget: put_ns > self.allowed_ns,
        }
    }
}

/// What the budget decided for the next period.
pub struct Decision {
    /// The share of the time Get is probed.
    pub fraction: f64,
    /// The probes' estimated cost with it, in cores.
    pub cost_cores: f64,
    /// Put's probes alone cost more than the budget: only Get can be sampled, so the budget
    /// is not met.
    pub put_over_budget: bool,
}

/// What one Get and one Put of a pool cost, in nanoseconds of the traced thread's time.
#[derive(Clone, Copy, Debug)]
pub struct HitCosts {
    pub get_ns: f64,
    pub put_ns: f64,
}

impl HitCosts {
    pub fn of(plan: &PoolPlan) -> Self {
        let entry = plan.get_entry_site.as_ref().map_or(0.0, hit_cost);
        // A Get returns through one of its RETs, or runs in an inlined copy; a Put likewise
        // enters its own code or runs inlined. The dearest site of each is assumed.
        let gets = (plan.get_sites.iter()).chain(plan.inlined_gets.sites.iter().map(|s| &s.site));
        let puts = (plan.put_site.iter()).chain(plan.inlined_puts.sites.iter().map(|s| &s.site));
        Self {
            get_ns: entry + gets.map(hit_cost).fold(0.0, f64::max),
            put_ns: puts.map(hit_cost).fold(0.0, f64::max),
        }
    }
}

fn hit_cost(site: &Site) -> f64 {
    if site.emulated {
        EMULATED_HIT_NS
    } else {
        SINGLE_STEPPED_HIT_NS
    }
}

/// The share of Get's full cost (`get_ns` a second when always probed) that fits in
/// `allowed_ns` a second beside Put's `put_ns`.
fn fraction(allowed_ns: f64, get_ns: f64, put_ns: f64, floor: f64, cap: f64) -> f64 {
    if get_ns <= 0.0 {
        return cap;
    }
    // A --sample-gets below the floor is the user's choice: it wins.
    ((allowed_ns - put_ns) / get_ns).clamp(floor.min(cap), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_gets_what_put_leaves_of_the_budget() {
        // 1% of a core is 10 ms a second. Put takes 2 ms; Get at full rate would take 32 ms.
        assert_eq!(fraction(10e6, 32e6, 2e6, MIN_FRACTION, 1.0), 0.25);
        // Within budget: always probed, unless --sample-gets says less.
        assert_eq!(fraction(10e6, 4e6, 2e6, MIN_FRACTION, 1.0), 1.0);
        assert_eq!(fraction(10e6, 4e6, 2e6, MIN_FRACTION, 0.5), 0.5);
        // Put alone over budget: Get keeps its floor.
        assert_eq!(fraction(10e6, 32e6, 12e6, MIN_FRACTION, 1.0), MIN_FRACTION);
        // A --sample-gets under the floor wins, and never panics.
        assert_eq!(fraction(10e6, 32e6, 2e6, MIN_FRACTION, 0.001), 0.001);
        // Every Get must be seen (--double-puts): never lowered.
        assert_eq!(fraction(10e6, 32e6, 2e6, 1.0, 1.0), 1.0);
        // No Gets: nothing to lower.
        assert_eq!(fraction(10e6, 0.0, 50e6, MIN_FRACTION, 1.0), 1.0);
    }
}
