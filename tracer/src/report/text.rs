//! The human-readable report, in the spirit of bcc's memleak: per pool a summary line, then
//! each call path as "N objects (size) outstanding, oldest T, from:" and its frames.

use std::fmt::Write;

use super::{
    analysis::Percentiles, InstanceBooks, PoolReport, Report, Sizes, StackReport, WindowsReport,
};
use crate::{probes::PoolKind, symbolize::Frame, units};

/// The periodic table: one header line per pool, then its top call paths.
pub fn render_interval(report: &Report, style: Style) -> String {
    let mut out = String::new();
    for pool in &report.pools {
        let header = format!(
            "[{:>7}] {}: {:.0} gets/s, {:.0} puts/s, {} outstanding{}, {} collected, {} dropped",
            units::millis(report.elapsed_ms as f64),
            pool.get,
            pool.gets_per_s,
            pool.puts_per_s,
            pool.outstanding,
            bytes_suffix(pool.outstanding_bytes),
            pool.counters.collected,
            pool.counters.dropped + pool.counters.stream_lost,
        );
        let _ = writeln!(out, "{}", style.bold(&header));
        render_books(&mut out, pool);
        if let Some(sizes) = pool.sizes.filter(|s| s.gets > 0) {
            let _ = writeln!(out, "  sizes: {}", sizes_line(&sizes));
        }
        render_stacks(&mut out, pool, style);
    }
    out
}

/// Each instance's own books: "instance 0x..: 61.2 MiB lent of 80.0 MiB (77%); 12.0 MiB
/// seen since attach, 49.2 MiB out before; filling 1.2 MiB/s (± 20.0 KiB/s): full in 15.0s".
fn render_books(out: &mut String, pool: &PoolReport) {
    for instance in &pool.instances {
        let _ = writeln!(
            out,
            "  instance {}: {}",
            instance.address,
            books_line(instance)
        );
    }
}

/// One instance's books in words.
pub fn books_line(books: &InstanceBooks) -> String {
    let Some(used) = books.used_bytes else {
        let why = books.unreadable.as_deref().unwrap_or("not read");
        return format!("books not shown: {why}");
    };
    let lent = match books.limit_bytes {
        Some(limit) => format!(
            "{} lent of {} ({:.0}%)",
            units::bytes(used),
            units::bytes(limit),
            used as f64 * 100.0 / limit as f64
        ),
        None => format!("{} lent, no limit", units::bytes(used)),
    };
    let before = books.before_attach_bytes.unwrap_or(0);
    let mut line = format!(
        "{lent}; {} seen since attach, {} out before",
        units::bytes(books.seen_outstanding_bytes),
        units::bytes(before)
    );
    match (books.fill_rate_bytes_per_s, books.fill_rate_spread) {
        (Some(rate), Some(spread)) if rate > 0.0 => {
            let _ = write!(
                line,
                "; filling {}/s (± {}/s)",
                units::bytes(rate as u64),
                units::bytes(spread as u64)
            );
            if let Some(seconds) = books.exhausts_in_s {
                let _ = write!(line, ": full in {}", units::millis(seconds * 1000.0));
            }
        }
        (Some(_), _) => line += "; not filling",
        _ => line += "; too soon to tell a fill rate",
    }
    line
}

/// Call paths shown under a pool's sizes in the final text report (JSON has `--top`).
const SIZED_PATHS_SHOWN: usize = 5;

/// What a sized pool's Gets asked for against what they were handed, then the paths that
/// leave the most of it unused.
fn render_sizes(out: &mut String, pool: &PoolReport) {
    // A sized pool no Get has come through since attach has nothing to say.
    let Some(sizes) = pool.sizes.filter(|s| s.gets > 0) else {
        return;
    };
    let _ = writeln!(out, "  sizes: {}", sizes_line(&sizes));
    for path in pool.sized_paths.iter().take(SIZED_PATHS_SHOWN) {
        let caller = path.frames.get(1).or(path.frames.first());
        let _ = writeln!(
            out,
            "    {}, from {}  {}",
            sizes_line(&path.sizes),
            caller.map_or("?", |f| f.function.as_str()),
            caller.map(location).unwrap_or_default()
        );
    }
    let more = pool.sized_paths.len().saturating_sub(SIZED_PATHS_SHOWN) + pool.sized_paths_omitted;
    if more > 0 {
        let _ = writeln!(
            out,
            "    ... and {more} more call paths (see --format json)"
        );
    }
}

/// "requested 1.2 MiB, capacity 2.0 MiB (40% unused) in 812 Gets".
pub fn sizes_line(sizes: &Sizes) -> String {
    format!(
        "requested {}, capacity {} ({:.0}% unused) in {} Get{}",
        units::bytes(sizes.requested_bytes),
        units::bytes(sizes.capacity_bytes),
        sizes.unused_share() * 100.0,
        sizes.gets,
        if sizes.gets == 1 { "" } else { "s" }
    )
}

/// Terminal styling: ANSI colour when writing to a terminal, plain text otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Red for a likely leak, yellow for a suspect, plain otherwise.
    fn score(self, score: f64) -> String {
        let text = format!("[score {score:>3.0}]");
        match score {
            s if s >= 50.0 => self.paint("1;31", &text),
            s if s >= 20.0 => self.paint("33", &text),
            _ => text,
        }
    }
}

/// The report printed when tracing stops: totals, call paths, and every loss explained.
pub fn render_final(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let build = match (&report.go_version, &report.module) {
        (Some(go), Some(module)) => format!(", {go}, {module}"),
        (Some(go), None) => format!(", {go}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "pooltrace: PID {} ({}{build}), traced for {}",
        report.pid,
        report.binary,
        units::millis(report.elapsed_ms as f64)
    );
    if let Some(windows) = &report.windows {
        let _ = writeln!(out, "{}", windows_line(windows));
    }
    if let Some(fraction) = report.sample_gets {
        let _ = writeln!(
            out,
            "Gets were probed {:.0}% of the time (--sample-gets): counts cover those, and Puts of objects taken meanwhile are unmatched",
            fraction * 100.0
        );
    }
    for pool in &report.pools {
        let _ = writeln!(out, "\n{}", summary(pool));
        if report.min_age_ms > 0 && pool.stacks.is_empty() && pool.outstanding > 0 {
            let _ = writeln!(
                out,
                "  no object has been out longer than {}",
                units::millis(report.min_age_ms as f64)
            );
        }
        render_books(&mut out, pool);
        render_sizes(&mut out, pool);
        render_stacks(&mut out, pool, style);
        render_double_puts(&mut out, pool);
        for warning in warnings(pool) {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    out
}

/// What the tracing windows in force are, and what the counts then cover.
pub fn windows_line(w: &WindowsReport) -> String {
    let cost = match w.budget_cores {
        Some(budget) => format!(
            "estimated cost {:.2}% of a core (--budget {}%)",
            w.cost_cores * 100.0,
            budget * 100.0
        ),
        None => format!("estimated cost {:.2}% of a core", w.cost_cores * 100.0),
    };
    let seconds = |s: f64| units::millis(s * 1000.0);
    if w.continuous {
        return format!(
            "tracing windows: every probe stays, as the budget allows it; {cost}; {} windows",
            w.opened
        );
    }
    format!(
        "tracing windows: Get probed {} and Put {} more, every {} (duty {:.1}%); {} windows, {} \
         could not open; counts cover {} of Gets; {cost}",
        seconds(w.window_s),
        seconds(w.grace_s),
        seconds(w.period_s),
        w.duty * 100.0,
        w.opened,
        w.not_opened,
        seconds(w.traced_s),
    )
}

fn summary(pool: &PoolReport) -> String {
    let get = if pool.get == pool.get_probed {
        pool.get.clone()
    } else {
        format!("{} (via {})", pool.get, pool.get_probed)
    };
    format!(
        "{get}: {} gets, {} puts, {} outstanding{}, {} collected without Put, {} unmatched puts, {} double puts, {} dropped",
        pool.counters.gets,
        pool.counters.puts,
        pool.outstanding,
        bytes_suffix(pool.outstanding_bytes),
        pool.counters.collected,
        pool.counters.unmatched_puts,
        pool.counters.double_puts,
        pool.counters.dropped
    )
}

/// Each double Put path: the second Put's frames, then where the first Put came from.
fn render_double_puts(out: &mut String, pool: &PoolReport) {
    for path in &pool.double_put_paths {
        let _ = writeln!(
            out,
            "  {} double Put{} (an object put back while already in the pool), by:",
            path.count,
            if path.count == 1 { "" } else { "s" }
        );
        for frame in &path.frames {
            let _ = writeln!(out, "      {}  {}", frame.function, location(frame));
        }
        let _ = writeln!(out, "    after a first Put by:");
        for frame in &path.first_put_frames {
            let _ = writeln!(out, "      {}  {}", frame.function, location(frame));
        }
    }
}

fn location(frame: &Frame) -> String {
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("{file}:{line}"),
        (Some(file), None) => file.clone(),
        _ => String::new(),
    }
}

fn render_stacks(out: &mut String, pool: &PoolReport, style: Style) {
    for stack in &pool.stacks {
        render_stack(out, stack, pool.unseen_put_sites > 0, style);
    }
    if pool.stacks_omitted > 0 {
        let _ = writeln!(
            out,
            "  ... and {} more call paths (see --top)",
            pool.stacks_omitted
        );
    }
}

/// `puts_unseen`: some inlined Puts of the pool cannot be seen, so an object handed out again
/// may have come back there rather than been dropped.
fn render_stack(out: &mut String, stack: &StackReport, puts_unseen: bool, style: Style) {
    let instance = stack
        .receiver
        .as_ref()
        .map(|r| format!(" of pool {r}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {} {}{instance}, from:",
        style.score(stack.leak_score),
        held_summary(stack, puts_unseen)
    );
    let width = stack
        .frames
        .iter()
        .map(|f| f.function.len() + if f.inlined { 10 } else { 0 })
        .max()
        .unwrap_or(0)
        .min(90);
    for frame in &stack.frames {
        let name = if frame.inlined {
            format!("{} (inlined)", frame.function)
        } else {
            frame.function.clone()
        };
        let _ = writeln!(out, "      {name:<width$}  {}", style.dim(&location(frame)));
    }
    for reason in &stack.reasons {
        let _ = writeln!(out, "    why: {reason}");
    }
    let mut timing = Vec::new();
    if let Some(hold) = stack.hold_ms {
        timing.push(format!(
            "held {} ({} returned)",
            percentiles(hold),
            stack.returned
        ));
    }
    if let Some(age) = stack.age_ms {
        timing.push(format!("out now {}", percentiles(age)));
    }
    if !timing.is_empty() {
        let _ = writeln!(out, "    {}", timing.join("; "));
    }
    if let Some(sizes) = &stack.sizes {
        let _ = writeln!(out, "    {}", sizes_line(sizes));
    }
    for release in stack.release_paths.iter().take(3) {
        let _ = writeln!(
            out,
            "    released via {}: {:.0}%",
            release_path(&release.frames),
            release.share * 100.0
        );
    }
}

fn percentiles(p: Percentiles) -> String {
    let ms = units::millis;
    format!("p50 {}, p99 {}, max {}", ms(p.p50), ms(p.p99), ms(p.max))
}

/// "(*mergedSeries).Close -> (*blockSeriesClient).Close -> Put", outermost first: the three
/// frames above Put, with package paths cut to their last element.
fn release_path(frames: &[Frame]) -> String {
    let short = |name: &str| {
        name.rsplit('/')
            .next()
            .unwrap_or(name)
            .split_once('.')
            .map_or(name, |(_, rest)| rest)
            .to_owned()
    };
    let mut names: Vec<String> = frames
        .iter()
        .skip(1)
        .take(3)
        .map(|f| short(&f.function))
        .collect();
    names.reverse();
    names.push(
        frames
            .first()
            .map(|f| short(&f.function))
            .unwrap_or_default(),
    );
    names.join(" -> ")
}

/// "812 objects (12.7 MiB) outstanding, oldest 14.2s; 40 more (1.1 MiB) dropped without a
/// Put and garbage-collected".
fn held_summary(stack: &StackReport, puts_unseen: bool) -> String {
    let objects = |n: u64| {
        if n == 1 {
            "1 object".to_owned()
        } else {
            format!("{n} objects")
        }
    };
    let outstanding = (stack.outstanding > 0).then(|| {
        let survivors = match stack.survivors {
            0 => String::new(),
            n => format!(" ({n} survivors of earlier windows)"),
        };
        // The ages' own maximum where there is one: whole milliseconds would print a
        // sub-millisecond oldest as 0us beside "out now ... max 103us".
        let oldest = stack
            .age_ms
            .map_or(stack.oldest_age_ms as f64, |age| age.max);
        format!(
            "{}{} outstanding{survivors}, oldest {}",
            objects(stack.outstanding),
            bytes_suffix(stack.bytes),
            units::millis(oldest)
        )
    });
    let collected = (stack.collected > 0).then(|| {
        let what = match puts_unseen {
            true => "handed out again while still out (given back unseen, or dropped)",
            false => "dropped without a Put and garbage-collected",
        };
        format!(
            "{}{} {what}",
            if outstanding.is_some() {
                format!("{} more", stack.collected)
            } else {
                objects(stack.collected)
            },
            bytes_suffix(stack.collected_bytes)
        )
    });
    [outstanding, collected]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every event not recorded, with its reason: nothing is lost silently.
fn warnings(pool: &PoolReport) -> Vec<String> {
    let losses = [
        (pool.counters.dropped, "objects were not tracked because the object map was full (raise --max-objects)"),
        (pool.counters.stack_failures, "objects were tracked without a stack (stack map full or colliding; raise --max-stacks)"),
        (pool.counters.collected, match (pool.unseen_put_sites, pool.kind) {
            (1.., _) => "objects were handed out again while still out: dropped without a Put, or given back through an inlined Put that pooltrace cannot see",
            (0, PoolKind::Counting) => "objects were dropped without a Put: a later Get returned their recycled memory while they were still out",
            (0, PoolKind::Sync) => "objects were dropped without a Put: lost reuse (extra allocations), which a sync pool allows",
        }),
        (pool.counters.collected_dropped, "collected objects are in the totals but not under a call path (too many paths)"),
        (pool.counters.paths_dropped, "hold times, sizes or release paths were not recorded (too many distinct paths)"),
        (pool.counters.stream_lost, "stream events were lost (the ring buffer was full)"),
        (pool.counters.read_faults, "object identities or sizes could not be read from the target's memory (check --get-key/--put-key/--get-size)"),
        (pool.counters.size_filtered, "objects outside --min-size/--max-size were not tracked (their Puts count as unmatched)"),
    ];
    let unseen = [
        (pool.unseen_put_sites as u64, "inlined copies of Put make no call pooltrace can probe: objects given back there look outstanding, or dropped without a Put, which is therefore not scored"),
        (pool.unseen_get_sites as u64, "inlined copies of Get make no call pooltrace can probe: Puts of objects taken there count as unmatched"),
    ];
    losses
        .into_iter()
        .chain(unseen)
        .filter(|&(count, _)| count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect()
}

fn bytes_suffix(bytes: u64) -> String {
    if bytes == 0 {
        String::new()
    } else {
        format!(" ({})", units::bytes(bytes))
    }
}
