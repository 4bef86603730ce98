//! Telling a leak from a busy path. Thanos' leaking objects and its healthy ones were taken
//! by the same Get path; what differed was how long they stayed out and whether they came
//! back. So a path is judged by its objects dropped without a Put, by how its outstanding
//! objects' ages compare with how long its returned objects were held, and by whether what
//! it holds keeps growing.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tracer_common::{hold_bucket_floor, HOLD_BUCKETS};

use crate::probes::PoolKind;
use crate::units;

/// p50, p99 and max of a distribution, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
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
        let low = hold_bucket_floor(bucket);
        let high = if bucket + 1 < HOLD_BUCKETS {
            hold_bucket_floor(bucket + 1)
        } else {
            low.saturating_mul(2)
        };
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
    /// Its objects handed out again after a gap in tracing: perhaps given back unseen.
    pub came_back_unseen: u64,
    /// The p99.9 hold time of the objects that came back: this path's, or its pool's when
    /// none of this path's did.
    pub reference_p999_ns: Option<u64>,
    pub own_reference: bool,
    /// The longest this path's returned objects were held (upper edge of its bucket), late
    /// Puts included; None when none came back.
    pub longest_hold_ns: Option<u64>,
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

/// A survivor is evidence when its window's grace was at least this many times the p99.9 hold
/// time of the objects that come back...
const SURVIVOR_FACTOR: u64 = 10;
/// ... and it has stayed out through this many later windows since; on a path none of whose
/// objects came back yet, also for this many times its grace (it might hold them long). No
/// object of its path may ever have come back after as long as its grace: a path that holds
/// some objects that long explains its survivors.
const SURVIVOR_WINDOWS: u64 = 1;
const UNRETURNED_GRACES: u32 = 10;

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
    // For a sync pool this is the evidence that counts: what it keeps grows with the load.
    let (grew, steps) = growth(evidence.trend);
    let (first, last) = (
        evidence.trend.first().copied().unwrap_or(0),
        evidence.trend.last().copied().unwrap_or(0),
    );
    if steps >= 3 && grew * 3 >= steps * 2 && last * 2 >= first * 3 && last > first {
        score += match evidence.kind {
            PoolKind::Counting => 10.0,
            PoolKind::Sync => 30.0,
        };
        reasons.push(format!(
            "what it holds grew in {grew} of the last {steps} intervals"
        ));
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
                "{older}; {usual}; a sync pool may drop them, so only growth is scored"
            )),
        }
    }
}

/// Under windows: survivors held far longer than the path's (or its pool's) objects come
/// back, that stay out window after window. Objects handed out again after a gap are never
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
    let Some(reference) = windows.reference_p999_ns else {
        reasons.push(format!(
            "{outlived}; no object of this pool has come back yet to compare them with"
        ));
        return;
    };
    let whose = match windows.own_reference {
        true => "this path's",
        false => "its pool's",
    };
    let usual = format!(
        "{whose} objects come back within {} (p99.9)",
        units::millis(reference as f64 / 1e6)
    );
    let far_longer =
        |grace: Duration| grace.as_nanos() >= u128::from(reference) * u128::from(SURVIVOR_FACTOR);
    let held_as_long = |grace: Duration| {
        (windows.longest_hold_ns).is_some_and(|ns| u128::from(ns) >= grace.as_nanos())
    };
    let kept: Vec<&WindowSurvivors> = windows
        .survivors
        .iter()
        .filter(|s| {
            far_longer(s.grace)
                && !held_as_long(s.grace)
                && windows.epoch.saturating_sub(s.epoch) > SURVIVOR_WINDOWS
                && (windows.own_reference || s.youngest_age >= s.grace * UNRETURNED_GRACES)
        })
        .collect();
    let evidential: u64 = kept.iter().map(|s| s.count).sum();
    match (evidence.kind, kept.first(), kept.last()) {
        (PoolKind::Sync, ..) => reasons.push(format!(
            "{outlived}; {usual}; a sync pool may drop them, so only growth is scored"
        )),
        (PoolKind::Counting, Some(first), Some(last)) => {
            *score += 45.0 + (10.0 * (evidential as f64).log10()).min(25.0);
            let taken = match first.epoch == last.epoch {
                true => format!("window {}", first.epoch + 1),
                false => format!("windows {} to {}", first.epoch + 1, last.epoch + 1),
            };
            reasons.push(format!(
                "{evidential} objects taken in {taken} are still out, through their grace and \
                 {SURVIVOR_WINDOWS} or more later windows; {usual}"
            ));
        }
        _ if windows.survivors.iter().all(|s| !far_longer(s.grace)) => {
            reasons.push(format!("{outlived}, but {usual}: held long, not scored"));
        }
        _ if windows.survivors.iter().all(|s| held_as_long(s.grace)) => {
            let longest = windows.longest_hold_ns.unwrap_or_default();
            reasons.push(format!(
                "{outlived}, but objects of this path have come back after up to {}: held \
                 long, not scored",
                units::millis(longest as f64 / 1e6)
            ));
        }
        _ if windows.own_reference => reasons.push(format!(
            "{outlived}; {usual}; scored once they stay out through {SURVIVOR_WINDOWS} more \
             windows"
        )),
        _ => reasons.push(format!(
            "{outlived}; {usual}, but none of this path's has yet: scored once they stay out \
             through {SURVIVOR_WINDOWS} more windows and {UNRETURNED_GRACES} times their grace"
        )),
    }
}

/// (intervals in which the count rose, intervals compared).
fn growth(trend: &[u64]) -> (usize, usize) {
    let grew = trend.windows(2).filter(|w| w[1] > w[0]).count();
    (grew, trend.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
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
              5ms (p99); a sync pool may drop them, so only growth is scored"
            ]
        );
        let growing = judge(&evidence(&[10, 20, 30, 40]));
        assert_eq!(growing.score, 30.0);
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

    /// Under windows: epoch 10 now; this path's objects come back within 2 ms (p99.9).
    fn windowed<'a>(survivors: &'a [WindowSurvivors], kind: PoolKind) -> Evidence<'a> {
        Evidence {
            kind,
            windows: Some(WindowEvidence {
                survivors,
                epoch: 10,
                came_back_unseen: 0,
                reference_p999_ns: Some(2 * MS),
                own_reference: true,
                longest_hold_ns: Some(3 * MS),
            }),
            ..quiet()
        }
    }

    #[test]
    fn survivors_that_stay_out_window_after_window_are_evidence() {
        let verdict = judge(&windowed(&[survivors(3, 37, 5)], PoolKind::Counting));
        assert!(verdict.score >= 50.0, "{}", verdict.score);
        assert_eq!(
            verdict.reasons,
            ["37 objects taken in window 4 are still out, through their grace and 1 or more later \
              windows; this path's objects come back within 2ms (p99.9)"]
        );
    }

    #[test]
    fn survivors_of_the_last_windows_are_not_scored_yet() {
        let last = [survivors(9, 37, 2), survivors(9, 5, 1)];
        let verdict = judge(&windowed(&last, PoolKind::Counting));
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            [
                "42 objects outlived their window's grace (up to 1.0s); this path's objects come \
              back within 2ms (p99.9); scored once they stay out through 1 more windows"
            ]
        );
    }

    #[test]
    fn survivors_of_a_path_that_holds_its_objects_long_are_explained_not_scored() {
        // Its objects are held up to 4 s: a 1 s grace is no measure of them.
        let long = [survivors(1, 500, 8)];
        let mut evidence = windowed(&long, PoolKind::Counting);
        if let Some(w) = evidence.windows.as_mut() {
            w.reference_p999_ns = Some(4_000 * MS);
        }
        let verdict = judge(&evidence);
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            [
                "500 objects outlived their window's grace (up to 1.0s), but this path's objects \
              come back within 4.0s (p99.9): held long, not scored"
            ]
        );
    }

    #[test]
    fn survivors_of_a_path_that_has_given_some_back_as_late_are_explained() {
        // Its objects usually come back within 2 ms, but one came back after 1.5 s: a 1 s
        // grace does not make its survivors leaks.
        let long = [survivors(3, 4, 5)];
        let mut evidence = windowed(&long, PoolKind::Counting);
        if let Some(w) = evidence.windows.as_mut() {
            w.longest_hold_ns = Some(1_500 * MS);
        }
        let verdict = judge(&evidence);
        assert_eq!(verdict.score, 0.0);
        assert_eq!(
            verdict.reasons,
            [
                "4 objects outlived their window's grace (up to 1.0s), but objects of this path \
              have come back after up to 1.5s: held long, not scored"
            ]
        );
    }

    #[test]
    fn survivors_of_a_path_that_never_gave_one_back_wait_ten_graces() {
        // Its pool's objects come back fast, but this path's might be held long: only after
        // ten of their graces out are they evidence.
        let score = |age_s| {
            let kept = [survivors(3, 25, age_s)];
            let mut evidence = windowed(&kept, PoolKind::Counting);
            if let Some(w) = evidence.windows.as_mut() {
                w.own_reference = false;
            }
            judge(&evidence).score
        };
        assert_eq!(score(9), 0.0);
        assert!(score(10) >= 50.0, "{}", score(10));
    }

    #[test]
    fn objects_handed_out_again_after_a_gap_are_never_evidence() {
        let mut evidence = windowed(&[], PoolKind::Counting);
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
        let steady = judge(&Evidence {
            trend: &[40, 40, 40, 40],
            ..windowed(&kept, PoolKind::Sync)
        });
        assert_eq!(steady.score, 0.0);
        let growing = judge(&Evidence {
            trend: &[10, 20, 30, 40],
            ..windowed(&kept, PoolKind::Sync)
        });
        assert_eq!(growing.score, 30.0);
    }

    #[test]
    fn under_windows_old_objects_alone_are_not_evidence() {
        // Without Put probed, an object's age says nothing: only survivors are judged.
        let verdict = judge(&Evidence {
            outstanding_ages_ns: &[90 * SECOND; 412],
            ..windowed(&[], PoolKind::Counting)
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
