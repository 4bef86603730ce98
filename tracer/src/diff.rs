//! `pooltrace diff OLD.json NEW.json`: which call paths are new, grown, shrunk or gone
//! between two JSON reports (two releases, two times of day). Paths are matched by pool and
//! by their frames' functions and lines, never addresses, so reports of two builds compare.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    cli::{DiffArgs, DiffFormat},
    error::{Error, Result},
    output::write_stdout,
    units,
};

/// What `diff` reads of a report: the JSON contract's names.
#[derive(Deserialize)]
struct ReportIn {
    pools: Vec<PoolIn>,
}

#[derive(Deserialize)]
struct PoolIn {
    get: String,
    stacks: Vec<StackIn>,
    /// Paths the report left out (`--top`): such a path is missing without being gone.
    #[serde(default)]
    stacks_omitted: usize,
}

#[derive(Deserialize)]
struct StackIn {
    outstanding: u64,
    collected: u64,
    hold_ms: Option<HoldIn>,
    frames: Vec<FrameIn>,
}

#[derive(Deserialize)]
struct HoldIn {
    p99: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct FrameIn {
    function: String,
    line: Option<u32>,
}

/// One side of a path: what it held in one report.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
struct Held {
    outstanding: u64,
    collected: u64,
    /// How long objects that came back were held, 99th percentile, when any came back.
    hold_p99_ms: Option<f64>,
}

impl Held {
    fn total(&self) -> u64 {
        self.outstanding + self.collected
    }

    fn add(&mut self, stack: &StackIn) {
        self.outstanding += stack.outstanding;
        self.collected += stack.collected;
        let p99 = stack.hold_ms.as_ref().map(|h| h.p99);
        self.hold_p99_ms = match (self.hold_p99_ms, p99) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
enum Status {
    New,
    Grown,
    Shrunk,
    Gone,
}

/// One path that changed.
#[derive(Debug, Serialize)]
struct PathChange {
    status: Status,
    pool: String,
    /// Innermost first, as in the reports.
    frames: Vec<FrameIn>,
    old: Option<Held>,
    new: Option<Held>,
}

#[derive(Serialize)]
struct DiffOut {
    paths: Vec<PathChange>,
}

/// Runs `pooltrace diff`.
pub fn diff(args: &DiffArgs) -> Result<()> {
    let old = read(&args.old)?;
    let new = read(&args.new)?;
    for (path, report) in [(&args.old, &old), (&args.new, &new)] {
        let omitted: usize = report.pools.iter().map(|p| p.stacks_omitted).sum();
        if omitted > 0 {
            crate::status!(
                "pooltrace: {} left out {omitted} call paths (--top): one shown as new or gone \
                 may only have been cut there",
                path.display()
            );
        }
    }
    let changes = compare(&old, &new);
    let text = match args.format {
        DiffFormat::Text => render(&changes),
        // Plain data always serializes.
        DiffFormat::Json => {
            serde_json::to_string_pretty(&DiffOut { paths: changes }).unwrap_or_default() + "\n"
        }
    };
    write_stdout(text.as_bytes())
}

fn read(path: &Path) -> Result<ReportIn> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::NotAReport {
        path: path.to_path_buf(),
        source,
    })
}

type PathId = (String, Vec<FrameIn>);

/// What each path held in a report; the same path reported twice (two pool instances) is
/// summed.
fn paths(report: &ReportIn) -> BTreeMap<PathId, Held> {
    let mut paths: BTreeMap<PathId, Held> = BTreeMap::new();
    for pool in &report.pools {
        for stack in &pool.stacks {
            paths
                .entry((pool.get.clone(), stack.frames.clone()))
                .or_default()
                .add(stack);
        }
    }
    paths
}

/// The paths that changed, new and grown first, the biggest change first within each.
fn compare(old: &ReportIn, new: &ReportIn) -> Vec<PathChange> {
    let (old, new) = (paths(old), paths(new));
    let mut changes: Vec<PathChange> = Vec::new();
    for (id, before) in &old {
        let after = new.get(id);
        let status = match after {
            None => Status::Gone,
            Some(after) if after.total() > before.total() => Status::Grown,
            Some(after) if after.total() < before.total() => Status::Shrunk,
            Some(_) => continue,
        };
        changes.push(change(status, id, Some(*before), after.copied()));
    }
    for (id, after) in new.iter().filter(|(id, _)| !old.contains_key(*id)) {
        changes.push(change(Status::New, id, None, Some(*after)));
    }
    let delta = |c: &PathChange| {
        let total = |h: Option<Held>| h.map_or(0, |h| h.total()) as i64;
        (total(c.new) - total(c.old)).abs()
    };
    changes.sort_by(|a, b| a.status.cmp(&b.status).then(delta(b).cmp(&delta(a))));
    changes
}

fn change(
    status: Status,
    (pool, frames): &PathId,
    old: Option<Held>,
    new: Option<Held>,
) -> PathChange {
    PathChange {
        status,
        pool: pool.clone(),
        frames: frames.clone(),
        old,
        new,
    }
}

fn render(changes: &[PathChange]) -> String {
    if changes.is_empty() {
        return "no call path changed\n".to_owned();
    }
    let mut out = String::new();
    for c in changes {
        let side = |h: Option<Held>, f: fn(&Held) -> String| h.as_ref().map_or("-".to_owned(), f);
        let status = format!("{:?}", c.status).to_uppercase();
        out += &format!(
            "{status:<6} {}  outstanding {} -> {}, collected {} -> {}, hold p99 {} -> {}  [{}]\n",
            caller(&c.frames),
            side(c.old, |h| h.outstanding.to_string()),
            side(c.new, |h| h.outstanding.to_string()),
            side(c.old, |h| h.collected.to_string()),
            side(c.new, |h| h.collected.to_string()),
            side(c.old, p99),
            side(c.new, p99),
            c.pool,
        );
        // The frames past the caller, which the first line names.
        for frame in c.frames.iter().skip(2).take(3) {
            out += &format!("         {}{}\n", frame.function, line(frame));
        }
    }
    out
}

fn p99(held: &Held) -> String {
    held.hold_p99_ms.map_or("-".to_owned(), units::millis)
}

/// The path's first frame past the pool's Get, which names it in one line.
fn caller(frames: &[FrameIn]) -> String {
    frames
        .get(1)
        .or(frames.first())
        .map_or("(no frames)".to_owned(), |f| {
            format!("{}{}", f.function, line(f))
        })
}

fn line(frame: &FrameIn) -> String {
    frame.line.map_or(String::new(), |l| format!(":{l}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stacks: &[(&str, u32, u64, u64)]) -> ReportIn {
        ReportIn {
            pools: vec![PoolIn {
                get: "pool.Get".into(),
                stacks_omitted: 0,
                stacks: stacks
                    .iter()
                    .map(|&(caller, line, outstanding, collected)| StackIn {
                        outstanding,
                        collected,
                        hold_ms: None,
                        frames: vec![
                            FrameIn {
                                function: "pool.Get".into(),
                                line: Some(10),
                            },
                            FrameIn {
                                function: caller.into(),
                                line: Some(line),
                            },
                        ],
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn paths_match_by_function_and_line_and_are_classed_by_what_they_hold() {
        let old = report(&[
            ("a", 1, 5, 0),
            ("b", 2, 5, 0),
            ("c", 3, 5, 0),
            ("same", 4, 1, 1),
        ]);
        let new = report(&[
            ("a", 1, 9, 1),
            ("b", 2, 1, 0),
            ("d", 5, 3, 0),
            ("same", 4, 1, 1),
        ]);
        let changes = compare(&old, &new);
        let summary: Vec<(Status, &str)> = changes
            .iter()
            .map(|c| (c.status, c.frames[1].function.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (Status::New, "d"),
                (Status::Grown, "a"),
                (Status::Shrunk, "b"),
                (Status::Gone, "c"),
            ]
        );
        // The same function on another line is another path.
        let moved = report(&[("a", 7, 5, 0)]);
        let statuses: Vec<Status> = compare(&report(&[("a", 1, 5, 0)]), &moved)
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses, [Status::New, Status::Gone]);
    }
}
