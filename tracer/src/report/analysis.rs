//! Telling a leak from a busy path. Thanos' leaking objects and its healthy ones were taken
//! by the same Get path; what differed was how long they stayed out and whether they came
//! back. So a path is judged by its objects dropped without a Put, by how its outstanding
//! objects' ages compare with how long its returned objects were held, and by whether what
//! it holds keeps growing (in a sync pool, whose users may drop and keep objects as they
//! like, growth is shown but makes no suspect).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tracer_common::{hold_bucket_ceiling, hold_bucket_floor};

use crate::probes::{windows::hold_quantile, PoolKind};
use crate::units;

/// p50, p99 and max of a distribution, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        let ms = |ns: u64| ns as f64 / 1e6;
        (!histogram.is_empty()).then(|| Self {
            p50: ms(histogram.value_at_quantile(0.5)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        })
    }
}

/// Hold times from the kernel's half-octave buckets (each bucket counted at its middle, so
/// values are within ~20% of the truth).
pub fn hold_times(buckets: &[u64]) -> Option<Percentiles> {
    let mut histogram = Histogram::<u64>::new(2).ok()?;
    for (bucket, &count) in buckets.iter().enumerate().filter(|(_, &c)| c > 0) {
        let (low, high) = (hold_bucket_floor(bucket), hold_bucket_ceiling(bucket));
        histogram.record_n(low + (high - low) / 2, count).ok()?;
    }
    Percentiles::of(&histogram)
}

/// Ages of the outstanding objects, in nanoseconds.
pub fn ages(ages_ns: &[u64]) -> Option<Percentiles> {
    let mut histogram = Histogram::<u64>::new(2).ok()?;
    for &age in ages_ns {
        histogram.record(age).ok()?;
    }
    Percentiles::of(&histogram)
}

/// The evidence about one call path.
pub struct Evidence<'a> {
    pub outstanding_ages_ns: &'a [u64],
    pub collected: u64,
    /// Whether an object dropped without a Put is a leak (a counting pool) or lost reuse.
    pub kind: PoolKind,
    /// How long the path has been traced, for the rate of lost reuse.
    pub elapsed_ms: u64,
    /// How long its returned objects were held, if any came back.
    pub hold: Option<Percentiles>,
    /// Objects it held at each past interval, oldest first: outstanding plus collected in a
    /// counting pool, outstanding alone in a sync pool (whose drops are not leaks).
    pub trend: &'a [u64],
    /// Inlined copies of its pool's Put that no probe sees: objects given back there look
    /// dropped when their address is handed out again.
    pub unseen_put_sites: usize,
    /// Under tracing windows, what the gaps leave to judge by (then the ages of outstanding
    /// objects are not: an object's age says nothing while Put is not probed).
    pub windows: Option<WindowEvidence<'a>>,
}

/// A path's evidence under tracing windows.
pub struct WindowEvidence<'a> {
    /// Its survivors still out, by the window they were taken in.
    pub survivors: &'a [WindowSurvivors],
    /// The epoch now.
    pub epoch: u64,
    /// Its objects whose address was in use again after a gap in tracing: perhaps given back
    /// unseen.
    pub came_back_unseen: u64,
    /// Of those, the very objects handed out again (their second word of identity
    /// unchanged): given back unseen, so held long, not lost.
    pub returned_unseen: u64,
    /// Hold times of its objects that came back (`tracer_common::hold_bucket`s), late Puts
    /// included.
    pub holds: &'a [u64],
    /// The p99.9 hold time of its pool's returned objects: the reference while none of this
    /// path's came back.
    pub pool_p999_ns: Option<u64>,
}

/// How sure pooltrace is that a path leaks (0 to 100), and why, in words.
pub struct Verdict {
    pub score: f64,
    pub reasons: Vec<String>,
}

/// The survivors of one window still out on one path.
#[derive(Clone, Copy, Debug)]
pub struct WindowSurvivors {
    /// The epoch of their Get (window `epoch + 1`).
    pub epoch: u64,
    pub count: u64,
    /// Their window's grace: they were held at least that long.
    pub grace: Duration,
    /// The age of the youngest of them.
    pub youngest_age: Duration,
}

/// A survivor is evidence when its window's grace was at least this many times the p99 hold
/// time of its path's objects that came back (the p99.9 of its pool's, while none of its
/// path's did)...
const SURVIVOR_FACTOR: u64 = 10;
/// ... and it has stayed out through this many later windows since; on a path none of whose
/// objects came back yet, also for this many times its grace (it might hold them long).
const SURVIVOR_WINDOWS: u64 = 1;
const UNRETURNED_GRACES: u32 = 10;
/// ... and the survivors outnumber this many times over the path's objects seen back after a
/// long hold: held more than a tenth of the grace, given back late, or handed out again as
/// themselves after a gap. A path that gives objects back after long holds leaves a few out
/// for good, unseen (given back while nothing watched, then dropped by the pool); on the
/// saturated demo its healthy path left about one for every ten it was seen to give back.
/// A leak's survivors never come back as themselves.
const SURVIVOR_EXCESS: u64 = 2;

/// What growth adds in a sync pool: shown, below a suspect's 20. A sync pool's user may drop
/// its objects or keep them as long as it likes, so what it holds grows on healthy programs:
/// with idle keep-alive connections, when a server drops a reader per closed connection,
/// and when a wrapper gives the pool a new pointer at every Put.
const SYNC_GROWTH_SCORE: f64 = 10.0;
const _: () = assert!(
    SYNC_GROWTH_SCORE < 20.0,
    "a sync pool's growth makes no suspect"
);

/// What a sync pool's growing path may be, in words.
fn sync_growth(evidence: &Evidence) -> &'static str {
    match (evidence.hold, evidence.collected) {
        (None, _) => {
            "none of its objects ever came back: they may be held by long-lived owners (a \
             connection, a worker), or its Put gives the pool a new pointer each time \
             (`Put(&buf)`), so that no Put can match a Get, which tracing the wrapper's own Get \
             and Put tells; not scored as a leak in a sync pool"
        }
        (Some(_), 1..) => {
            "it drops objects, which a sync pool allows: not scored as a leak, only as lost \
             reuse"
        }
        (Some(_), 0) => {
            "held by long-lived owners (a connection, a worker), or dropped and not collected \
             yet, both of which a sync pool allows: not scored as a leak"
        }
    }
}

/// Objects older than this many times their path's p99 hold time count as stuck.
const STUCK_FACTOR: f64 = 10.0;
/// ... and never younger than this, so sub-millisecond paths are not judged on jitter.
const STUCK_FLOOR_MS: f64 = 1000.0;

pub fn judge(evidence: &Evidence) -> Verdict {
    let mut score = 0.0;
    let mut reasons = Vec::new();
    match evidence.kind {
        _ if evidence.collected == 0 => {}
        // Objects given back through an inlined Put no probe sees look dropped.
        _ if evidence.unseen_put_sites > 0 => reasons.push(format!(
            "{} objects were handed out again while still out, but this is not scored: Put is \
             inlined at {} call site{} where pooltrace cannot see it, so they may have come back \
             there",
            evidence.collected,
            evidence.unseen_put_sites,
            if evidence.unseen_put_sites == 1 {
                ""
            } else {
                "s"
            }
        )),
        PoolKind::Counting => {
            score += 60.0 + (10.0 * (evidence.collected as f64).log10()).min(20.0);
            reasons.push(format!(
                "{} objects were dropped without a Put and garbage-collected",
                evidence.collected
            ));
        }
        // sync.Pool allows dropping: what is lost is reuse, paid for by allocating anew.
        PoolKind::Sync => {
            let per_s = evidence.collected as f64 * 1000.0 / evidence.elapsed_ms.max(1) as f64;
            reasons.push(format!(
                "{} objects ({per_s:.1}/s) were dropped without a Put: lost reuse, which a \
                 sync pool allows, not a leak",
                evidence.collected
            ));
        }
    }
    match &evidence.windows {
        Some(windows) => judge_survivors(evidence, windows, &mut score, &mut reasons),
        None => judge_ages(evidence, &mut score, &mut reasons),
    }
    // A busy path's count wobbles; a leaking one climbs, and ends well above where it began.
    let (grew, steps) = growth(evidence.trend);
    let (first, last) = (
        evidence.trend.first().copied().unwrap_or(0),
        evidence.trend.last().copied().unwrap_or(0),
    );
    if steps >= 3 && grew * 3 >= steps * 2 && last * 2 >= first * 3 && last > first {
        let grown = format!("what it holds grew in {grew} of the last {steps} intervals");
        match evidence.kind {
            PoolKind::Counting => {
                score += 10.0;
                reasons.push(grown);
            }
            PoolKind::Sync => {
                score += SYNC_GROWTH_SCORE;
                reasons.push(format!("{grown}; {}", sync_growth(evidence)));
            }
        }
    }
    Verdict {
        score: score.min(100.0),
        reasons,
    }
}

/// Without windows: outstanding objects far older than the path's returned ones were held.
fn judge_ages(evidence: &Evidence, score: &mut f64, reasons: &mut Vec<String>) {
    let threshold_ms = evidence.hold.map_or(STUCK_FLOOR_MS, |h| {
        (h.p99 * STUCK_FACTOR).max(STUCK_FLOOR_MS)
    });
    let stuck = evidence
        .outstanding_ages_ns
        .iter()
        .filter(|&&age| age as f64 / 1e6 > threshold_ms)
        .count();
    if stuck > 0 {
        let usual = match evidence.hold {
            Some(hold) => format!(
                "objects from this path normally come back within {} (p99)",
                units::millis(hold.p99)
            ),
            None => "no object from this path has come back".to_owned(),
        };
        let older = format!("{stuck} objects older than {}", units::millis(threshold_ms));
        match evidence.kind {
            PoolKind::Counting => {
                let share = stuck as f64 / evidence.outstanding_ages_ns.len() as f64;
                *score += 40.0 * share + (10.0 * (stuck as f64).log10()).min(20.0);
                reasons.push(format!("{older}; {usual}"));
            }
            // An object a sync pool's user keeps is as likely dropped and not yet collected.
            PoolKind::Sync => reasons.push(format!(
                "{older}; {usual}; a sync pool may drop them, so they are not scored"
            )),
        }
    }
}

/// Under windows: survivors held far longer than the path's (or its pool's) objects come
/// back, that stay out window after window, and far outnumber the objects the path is seen to
/// give back after long holds. Objects whose address is in use again after a gap are never
/// evidence: they may have come back while nothing watched.
fn judge_survivors(
    evidence: &Evidence,
    windows: &WindowEvidence,
    score: &mut f64,
    reasons: &mut Vec<String>,
) {
    if windows.came_back_unseen > 0 {
        reasons.push(format!(
            "{} objects were handed out again after a gap in tracing: they may have been given \
             back while Put was not probed, so they are not scored",
            windows.came_back_unseen
        ));
    }
    let total: u64 = windows.survivors.iter().map(|s| s.count).sum();
    if total == 0 {
        return;
    }
    let longest_grace = (windows.survivors.iter().map(|s| s.grace))
        .max()
        .unwrap_or_default();
    let outlived = format!(
        "{total} objects outlived their window's grace (up to {})",
        units::millis(longest_grace.as_secs_f64() * 1000.0)
    );
    let own = windows.holds.iter().any(|&count| count > 0);
    let reference = match own {
        true => hold_quantile(windows.holds, 0.99),
        false => windows.pool_p999_ns,
    };
    let Some(reference) = reference else {
        reasons.push(format!(
            "{outlived}; no object of this pool has come back yet to compare them with"
        ));
        return;
    };
    let (whose, quantile) = match own {
        true => ("this path's", "p99"),
        false => ("its pool's", "p99.9"),
    };
    let usual = format!(
        "{whose} objects come back within {} ({quantile})",
        units::millis(reference as f64 / 1e6)
    );
    let far_longer =
        |grace: Duration| grace.as_nanos() >= u128::from(reference) * u128::from(SURVIVOR_FACTOR);
    let kept: Vec<&WindowSurvivors> = windows
        .survivors
        .iter()
        .filter(|s| {
            far_longer(s.grace)
                && windows.epoch.saturating_sub(s.epoch) > SURVIVOR_WINDOWS
                && (own || s.youngest_age >= s.grace * UNRETURNED_GRACES)
        })
        .collect();
    let evidential: u64 = kept.iter().map(|s| s.count).sum();
    let long_hold = kept.iter().map(|s| s.grace).min().unwrap_or_default() / SURVIVOR_FACTOR as u32;
    let seen_back = held_longer(windows.holds, long_hold) + windows.returned_unseen;
    let long = units::millis(long_hold.as_secs_f64() * 1000.0);
    match (evidence.kind, kept.first(), kept.last()) {
        (PoolKind::Sync, ..) => reasons.push(format!(
            "{outlived}; {usual}; a sync pool may drop them, so they are not scored"
        )),
        (PoolKind::Counting, Some(_), _) if evidential < SURVIVOR_EXCESS * seen_back => reasons
            .push(format!(
                "{outlived}, but {seen_back} objects of this path were seen back after more \
                 than {long}: held long, not scored"
            )),
        (PoolKind::Counting, Some(first), Some(last)) => {
            *score += 45.0 + (10.0 * (evidential as f64).log10()).min(25.0);
            let taken = match first.epoch == last.epoch {
                true => format!("window {}", first.epoch + 1),
                false => format!("windows {} to {}", first.epoch + 1, last.epoch + 1),
            };
            let back = match seen_back {
                0 => format!("none came back after more than {long}"),
                n => format!("{n} came back after more than {long}"),
            };
            reasons.push(format!(
                "{evidential} objects taken in {taken} are still out, through their grace and \
                 {SURVIVOR_WINDOWS} or more later windows; {usual}, and {back}"
            ));
        }
        _ if windows.survivors.iter().all(|s| !far_longer(s.grace)) => {
            reasons.push(format!("{outlived}, but {usual}: held long, not scored"));
        }
        _ if own => reasons.push(format!(
            "{outlived}; {usual}; scored once they stay out through {SURVIVOR_WINDOWS} more \
             windows"
        )),
        _ => reasons.push(format!(
            "{outlived}; {usual}, but none of this path's has yet: scored once they stay out \
             through {SURVIVOR_WINDOWS} more windows and {UNRETURNED_GRACES} times their grace"
        )),
    }
}

/// How many of `holds` (hold-time buckets) may have been held longer than `at`: every bucket
/// whose upper edge lies above it counts whole, so the count is never too low.
fn held_longer(holds: &[u64], at: Duration) -> u64 {
    let at = at.as_nanos();
    (holds.iter().enumerate())
        .filter(|&(bucket, _)| u128::from(hold_bucket_ceiling(bucket)) > at)
        .map(|(_, &count)| count)
        .sum()
}

/// (intervals in which the count rose, intervals compared).
fn growth(trend: &[u64]) -> (usize, usize) {
    let grew = trend.windows(2).filter(|w| w[1] > w[0]).count();
    (grew, trend.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use tracer_common::HOLD_BUCKETS;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// A counting-pool path traced for 10 s whose objects came back within 35 ms (p99), with
    /// nothing outstanding, collected or trending: each test sets what it is about.
    fn quiet() -> Evidence<'static> {
        Evidence {
            outstanding_ages_ns: &[],
            collected: 0,
            kind: PoolKind::Counting,
            elapsed_ms: 10_000,
            hold: hold(35.0),
            trend: &[],
            unseen_put_sites: 0,
            windows: None,
        }
    }

    fn hold(p99_ms: f64) -> Option<Percentiles> {
        Some(Percentiles {
            p50: p99_ms / 4.0,
            p99: p99_ms,
            max: p99_ms * 2.0,
        })
    }

    #[test]
    fn a_busy_path_with_only_young_objects_scores_zero() {
        let ages = vec![SECOND / 100; 500];
        let verdict = judge(&Evidence {
            outstanding_ages_ns: &ages,
            trend: &[480, 510, 495, 500],
            ..quiet()
        });
        assert_eq!(verdict.score, 0.0);
        assert!(verdict.reasons.is_empty());
    }

    #[test]
    fn old_objects_beyond_the_usual_hold_time_are_explained() {
        let ages = vec![90 * SECOND; 412];
        let verdict = judge(&Evidence {
            outstanding_ages_ns: &ages,
            ..quiet()
        });
        assert!(verdict.score > 50.0);
        assert_eq!(
            verdict.reasons,
            ["412 objects older than 1.0s; objects from this path normally come back within 35ms (p99)"]
        );
    }

    #[test]
    fn collected_objects_and_growth_outrank_everything_else() {
        let leak = judge(&Evidence {
            collected: 5820,
            hold: hold(5.0),
            trend: &[10, 20, 30, 40],
            ..quiet()
        });
        let old = judge(&Evidence {
            outstanding_ages_ns: &[90 * SECOND; 10],
            hold: hold(5.0),
            ..quiet()
        });
        assert!(leak.score > old.score);
        assert_eq!(leak.reasons.len(), 2);
        assert!(leak.reasons[1].starts_with("what it holds grew in 3 of the last 3 intervals"));
    }

    #[test]
    fn a_sync_pool_reports_dropped_objects_as_lost_reuse_without_a_score() {
        let evidence = |kind| Evidence {
            collected: 500,
            kind,
            hold: hold(5.0),
            ..quiet()
        };
        let counting = judge(&evidence(PoolKind::Counting));
        assert_eq!(counting.score, 80.0);
        let sync = judge(&evidence(PoolKind::Sync));
        assert_eq!(sync.score, 0.0);
        assert_eq!(
            sync.reasons,
            [
                "500 objects (50.0/s) were dropped without a Put: lost reuse, which a sync pool \
              allows, not a leak"
            ]
        );
    }

    #[test]
    fn a_sync_pool_is_judged_by_growth_not_by_old_objects() {
        let ages = vec![90 * SECOND; 40];
        let evidence = |trend| Evidence {
            outstanding_ages_ns: &ages,
            kind: PoolKind::Sync,
            hold: hold(5.0),
            trend,
            ..quiet()
        };
        let steady = judge(&evidence(&[40, 38, 41, 40]));
        assert_eq!(steady.score, 0.0);
        assert_eq!(
            steady.reasons,
            [
                "40 objects older than 1.0s; objects from this path normally come back within \
              5ms (p99); a sync pool may drop them, so they are not scored"
            ]
        );
        let growing = judge(&evidence(&[10, 20, 30, 40]));
        assert_eq!(growing.score, 10.0);
        assert_eq!(
            growing.reasons[1],
            "what it holds grew in 3 of the last 3 intervals; held by long-lived owners (a \
             connection, a worker), or dropped and not collected yet, both of which a sync pool \
             allows: not scored as a leak"
        );
    }

    #[test]
    fn a_growing_sync_path_says_what_else_it_may_be_and_stays_below_a_suspect() {
        let growing = |hold, collected| {
            judge(&Evidence {
                kind: PoolKind::Sync,
                hold,
                collected,
                trend: &[10, 20, 30, 40],
                ..quiet()
            })
        };
        // Nothing ever came back: a Put that boxes a new pointer never matches.
        let reboxed = growing(None, 0);
        assert_eq!(reboxed.score, SYNC_GROWTH_SCORE);
        assert!(
            reboxed.reasons[0].contains("none of its objects ever came back"),
            "{:?}",
            reboxed.reasons
        );
        // Dropped, with their memory reused: lost reuse.
        let dropping = growing(hold(5.0), 12);
        assert_eq!(dropping.score, SYNC_GROWTH_SCORE);
        assert!(
            dropping.reasons[1].contains("it drops objects, which a sync pool allows"),
            "{:?}",
            dropping.reasons
        );
    }

    #[test]
    fn objects_handed_out_again_are_not_scored_when_puts_are_unseen() {
        let verdict = judge(&Evidence {
            collected: 40,
            hold: hold(5.0),
            trend: &[40],
            unseen_put_sites: 1,
            ..quiet()
        });
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            [
                "40 objects were handed out again while still out, but this is not scored: Put is \
              inlined at 1 call site where pooltrace cannot see it, so they may have come back \
              there"
            ]
        );
    }

    const MS: u64 = 1_000_000;

    /// `count` survivors of window `epoch + 1`, held past a 1 s grace and `age_s` old.
    fn survivors(epoch: u64, count: u64, age_s: u64) -> WindowSurvivors {
        WindowSurvivors {
            epoch,
            count,
            grace: Duration::from_secs(1),
            youngest_age: Duration::from_secs(age_s),
        }
    }

    /// Hold-time buckets: `count` objects held `ms` each, for each pair.
    fn holds(held: &[(u64, u64)]) -> Vec<u64> {
        let mut buckets = vec![0; HOLD_BUCKETS];
        for &(count, ms) in held {
            buckets[tracer_common::hold_bucket(ms * MS)] += count;
        }
        buckets
    }

    /// Under windows: epoch 10 now; the path's objects came back as `holds` says.
    fn windowed<'a>(
        survivors: &'a [WindowSurvivors],
        holds: &'a [u64],
        kind: PoolKind,
    ) -> Evidence<'a> {
        Evidence {
            kind,
            windows: Some(WindowEvidence {
                survivors,
                epoch: 10,
                came_back_unseen: 0,
                returned_unseen: 0,
                holds,
                pool_p999_ns: Some(2 * MS),
            }),
            ..quiet()
        }
    }

    #[test]
    fn survivors_that_stay_out_window_after_window_are_evidence() {
        let fast = holds(&[(1000, 2)]);
        let verdict = judge(&windowed(&[survivors(3, 37, 5)], &fast, PoolKind::Counting));
        assert!(verdict.score >= 50.0, "{}", verdict.score);
        assert_eq!(
            verdict.reasons,
            ["37 objects taken in window 4 are still out, through their grace and 1 or more later \
              windows; this path's objects come back within 2ms (p99), and none came back after \
              more than 100ms"]
        );
    }

    #[test]
    fn survivors_of_the_last_windows_are_not_scored_yet() {
        let last = [survivors(9, 37, 2), survivors(9, 5, 1)];
        let fast = holds(&[(1000, 2)]);
        let verdict = judge(&windowed(&last, &fast, PoolKind::Counting));
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            [
                "42 objects outlived their window's grace (up to 1.0s); this path's objects come \
              back within 2ms (p99); scored once they stay out through 1 more windows"
            ]
        );
    }

    #[test]
    fn survivors_of_a_path_that_holds_its_objects_long_are_explained_not_scored() {
        // Its objects are held up to 400 ms: a 1 s grace is no measure of them.
        let long = [survivors(1, 500, 8)];
        let slow = holds(&[(1000, 2), (30, 400)]);
        let verdict = judge(&windowed(&long, &slow, PoolKind::Counting));
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            [
                "500 objects outlived their window's grace (up to 1.0s), but this path's objects \
              come back within 402ms (p99): held long, not scored"
            ]
        );
    }

    #[test]
    fn survivors_of_a_path_seen_to_give_as_many_back_late_are_explained() {
        // Its objects usually come back within 2 ms, but three came back after 1.5 s: four
        // survivors of a 1 s grace are no leak.
        let long = [survivors(3, 4, 5)];
        let late = holds(&[(1000, 2), (3, 1500)]);
        let verdict = judge(&windowed(&long, &late, PoolKind::Counting));
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            [
                "4 objects outlived their window's grace (up to 1.0s), but 3 objects of this path \
              were seen back after more than 100ms: held long, not scored"
            ]
        );
    }

    #[test]
    fn one_slow_return_does_not_explain_many_survivors() {
        // As on the saturated demo: one object held 0.9 s among hundreds back in milliseconds.
        let kept = [survivors(3, 43, 5)];
        let one_slow = holds(&[(552, 2), (1, 900)]);
        let verdict = judge(&windowed(&kept, &one_slow, PoolKind::Counting));
        assert!(verdict.score >= 50.0, "{}", verdict.score);
        assert!(
            verdict.reasons[0].ends_with("and 1 came back after more than 100ms"),
            "{:?}",
            verdict.reasons
        );
    }

    #[test]
    fn survivors_of_a_path_whose_objects_come_back_as_themselves_are_explained() {
        // The very objects were handed out again after a gap: given back unseen, held long.
        let kept = [survivors(3, 12, 5)];
        let fast = holds(&[(1000, 2)]);
        let mut evidence = windowed(&kept, &fast, PoolKind::Counting);
        if let Some(w) = evidence.windows.as_mut() {
            (w.came_back_unseen, w.returned_unseen) = (30, 30);
        }
        let verdict = judge(&evidence);
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons[1],
            "12 objects outlived their window's grace (up to 1.0s), but 30 objects of this path \
             were seen back after more than 100ms: held long, not scored"
        );
    }

    #[test]
    fn survivors_of_a_path_that_never_gave_one_back_wait_ten_graces() {
        // Its pool's objects come back fast, but this path's might be held long: only after
        // ten of their graces out are they evidence.
        let score = |age_s| {
            let kept = [survivors(3, 25, age_s)];
            judge(&windowed(&kept, &[], PoolKind::Counting)).score
        };
        assert_eq!(score(9), 0.0);
        assert!(score(10) >= 50.0, "{}", score(10));
    }

    #[test]
    fn objects_handed_out_again_after_a_gap_are_never_evidence() {
        let mut evidence = windowed(&[], &[], PoolKind::Counting);
        if let Some(w) = evidence.windows.as_mut() {
            w.came_back_unseen = 12;
        }
        let verdict = judge(&evidence);
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            ["12 objects were handed out again after a gap in tracing: they may have been given \
              back while Put was not probed, so they are not scored"]
        );
    }

    #[test]
    fn a_sync_pools_survivors_are_explained_and_only_growth_scores() {
        let kept = [survivors(2, 40, 9)];
        let fast = holds(&[(1000, 2)]);
        let steady = judge(&Evidence {
            trend: &[40, 40, 40, 40],
            ..windowed(&kept, &fast, PoolKind::Sync)
        });
        assert_eq!(steady.score, 0.0);
        let growing = judge(&Evidence {
            trend: &[10, 20, 30, 40],
            ..windowed(&kept, &fast, PoolKind::Sync)
        });
        assert_eq!(growing.score, SYNC_GROWTH_SCORE);
    }

    #[test]
    fn under_windows_old_objects_alone_are_not_evidence() {
        // Without Put probed, an object's age says nothing: only survivors are judged.
        let verdict = judge(&Evidence {
            outstanding_ages_ns: &[90 * SECOND; 412],
            ..windowed(&[], &[], PoolKind::Counting)
        });
        assert_eq!(verdict.score, 0.0);
        assert!(verdict.reasons.is_empty());
    }

    #[test]
    fn hold_time_percentiles_come_back_from_buckets_within_their_width() {
        let mut buckets = vec![0; HOLD_BUCKETS];
        buckets[tracer_common::hold_bucket(35_000_000)] = 99;
        buckets[tracer_common::hold_bucket(900_000_000)] = 1;
        let p = hold_times(&buckets).unwrap();
        assert!((p.p50 - 35.0).abs() < 35.0 * 0.3, "{p:?}");
        assert!((p.max - 900.0).abs() < 900.0 * 0.3, "{p:?}");
    }
}
