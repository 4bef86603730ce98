//! What a pool's counters say about the words pooltrace reads. When nearly every Get reads its
//! object as nil or cannot read it at all, or no Put ever gives back an object a Get handed
//! out, the key spec (`--object`, `--get-key`, `--put-key`) most likely reads the wrong word,
//! and the report alone would look like an idle pool. Each doubt is said once per pool, and
//! points to `--debug` for the site and address behind it.

use std::collections::HashSet;

use super::{PoolReport, Report};

/// Fewer calls than this say nothing yet.
const ENOUGH: u64 = 20;

/// Nor does a report this soon after attach: objects taken before it come back unmatched,
/// and a busy pool makes `ENOUGH` such Puts in its first milliseconds.
const SETTLED_MS: u64 = 1000;

/// The doubts already said.
#[derive(Default)]
pub struct Doubts {
    said: HashSet<(String, Doubt)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Doubt {
    NilGets,
    FaultingGets,
    NoPutMatches,
}

impl Doubts {
    /// The doubts `report` raises that were not said before, one line each.
    pub fn new_in(&mut self, report: &Report) -> Vec<String> {
        let mut lines = Vec::new();
        if report.elapsed_ms < SETTLED_MS {
            return lines;
        }
        for pool in &report.pools {
            for (doubt, line) in doubts(pool, report.pid) {
                if self.said.insert((pool.get.clone(), doubt)) {
                    lines.push(line);
                }
            }
        }
        lines
    }
}

fn doubts(pool: &PoolReport, pid: i32) -> Vec<(Doubt, String)> {
    let counters = &pool.counters;
    let debug = match crate::diagnostics::kernel_level() {
        0 => "; --debug names each site and the address it read",
        _ => "",
    };
    let list =
        format!("`pooltrace list --pid {pid}` shows what each pair takes and returns{debug}");
    let mut found = Vec::new();
    let read = counters.gets + counters.nil_gets + counters.read_faults;
    if read >= ENOUGH && counters.nil_gets * 10 >= read * 9 {
        found.push((
            Doubt::NilGets,
            format!(
                "pooltrace: {}: {} of {read} Gets read their object as nil: --object or \
                 --get-key probably reads the wrong word (or the pool is always empty); {list}",
                pool.get, counters.nil_gets
            ),
        ));
    }
    if read >= ENOUGH && counters.read_faults * 10 >= read * 9 {
        found.push((
            Doubt::FaultingGets,
            format!(
                "pooltrace: {}: {} of {read} Gets could not read their object from memory: \
                 --object or --get-key probably loads through a word that is no pointer; {list}",
                pool.get, counters.read_faults
            ),
        ));
    }
    // Objects left out by size are never matched: only the tracked ones count.
    let tracked = counters.gets.saturating_sub(counters.size_filtered);
    if tracked >= ENOUGH && counters.puts >= ENOUGH && counters.unmatched_puts >= counters.puts {
        found.push((
            Doubt::NoPutMatches,
            format!(
                "pooltrace: {}: none of {} Puts gave back an object a Get handed out: \
                 --object or --put-key probably reads the wrong word at Put, or Put is given \
                 a new pointer each time (`Put(&b)`); {list}",
                pool.put, counters.puts
            ),
        ));
    }
    found
}
