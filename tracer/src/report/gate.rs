//! `run --fail-on`: the findings in a final report that should fail a CI job, each named by
//! the pool and the function that took the objects.

use std::fmt;

use super::{PoolReport, Report, StackReport};
use crate::symbolize::Frame;

/// What fails a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FailOn {
    /// Any object still out of its pool when the program exits.
    Outstanding,
    /// Any object dropped without a Put and garbage-collected.
    Collected,
    /// Any Put of an object already back in its pool (turns `--double-puts` on).
    DoublePut,
    /// Any call path whose leak score is at least this.
    Score(f64),
}

impl FailOn {
    /// `outstanding`, `collected` or `score=N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            None if text == "outstanding" => Ok(Self::Outstanding),
            None if text == "collected" => Ok(Self::Collected),
            None if text == "double-put" => Ok(Self::DoublePut),
            Some(("score", n)) => match n.parse::<f64>() {
                Ok(score) if (0.0..=100.0).contains(&score) => Ok(Self::Score(score)),
                _ => Err(format!("score={n}: the score is a number from 0 to 100")),
            },
            _ => Err(format!(
                "{text:?} is not one of outstanding, collected, double-put, score=N"
            )),
        }
    }
}

impl fmt::Display for FailOn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Outstanding => write!(f, "outstanding"),
            Self::Collected => write!(f, "collected"),
            Self::DoublePut => write!(f, "double-put"),
            Self::Score(score) => write!(f, "score={score}"),
        }
    }
}

/// One line per finding: what, how many, in which pool, taken where.
pub fn findings(report: &Report, fail_on: &[FailOn]) -> Vec<String> {
    let mut lines = Vec::new();
    for kind in fail_on {
        for pool in &report.pools {
            lines.extend(pool_findings(pool, *kind));
        }
    }
    lines
}

fn pool_findings(pool: &PoolReport, kind: FailOn) -> Vec<String> {
    match kind {
        FailOn::Outstanding => held(
            pool,
            kind,
            pool.outstanding,
            "still out of the pool at exit",
            |stack| stack.outstanding,
        ),
        FailOn::Collected => held(
            pool,
            kind,
            pool.counters.collected,
            "dropped without a Put",
            |stack| stack.collected,
        ),
        FailOn::DoublePut => double_puts(pool),
        FailOn::Score(min) => pool
            .stacks
            .iter()
            .filter(|stack| stack.leak_score >= min)
            .map(|stack| {
                format!(
                    "--fail-on {kind}: {} scores {:.0} (at least {min}): {} objects of {} not given back",
                    taker(stack),
                    stack.leak_score,
                    stack.outstanding + stack.collected,
                    pool.get
                )
            })
            .collect(),
    }
}

/// One line for a pool with `total` objects that are `what`, naming each path's taker and
/// its share (`of`).
fn held(
    pool: &PoolReport,
    kind: FailOn,
    total: u64,
    what: &str,
    of: fn(&StackReport) -> u64,
) -> Vec<String> {
    if total == 0 {
        return Vec::new();
    }
    let takers: Vec<String> = pool
        .stacks
        .iter()
        .filter(|stack| of(stack) > 0)
        .map(|stack| format!("{} ({})", taker(stack), of(stack)))
        .collect();
    let from = match takers.is_empty() {
        true => String::new(),
        false => format!(", taken by {}", takers.join(", ")),
    };
    vec![format!(
        "--fail-on {kind}: {total} objects of {} {what}{from}",
        pool.get
    )]
}

/// One line per pool with double Puts, naming where each second Put and its first Put were
/// called from.
fn double_puts(pool: &PoolReport) -> Vec<String> {
    if pool.counters.double_puts == 0 {
        return Vec::new();
    }
    let paths: Vec<String> = pool
        .double_put_paths
        .iter()
        .map(|path| {
            format!(
                "{} after {} ({})",
                caller(&path.frames),
                caller(&path.first_put_frames),
                path.count
            )
        })
        .collect();
    let n = pool.counters.double_puts;
    vec![format!(
        "--fail-on double-put: {n} double Put{} into the pool of {}, by {}",
        if n == 1 { "" } else { "s" },
        pool.get,
        paths.join(", ")
    )]
}

/// The function that called Get, with its line: the first frame past the pool's own.
fn taker(stack: &StackReport) -> String {
    caller(&stack.frames)
}

/// The caller of the pool's Get or Put, with its line: the first frame past the pool's own.
fn caller(frames: &[Frame]) -> String {
    let Some(frame) = frames.get(1).or(frames.first()) else {
        return "an unknown caller".to_owned();
    };
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => {
            let file = file.rsplit('/').next().unwrap_or(file);
            format!("{} ({file}:{line})", frame.function)
        }
        _ => frame.function.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print_as_written() {
        for text in ["outstanding", "collected", "double-put", "score=40"] {
            assert_eq!(FailOn::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            FailOn::parse("leaks").unwrap_err(),
            "\"leaks\" is not one of outstanding, collected, double-put, score=N"
        );
        assert_eq!(
            FailOn::parse("score=200").unwrap_err(),
            "score=200: the score is a number from 0 to 100"
        );
    }
}
