//! The human-readable report, in the spirit of bcc's memleak: per pool a summary line, then
//! each call path as "N objects (size) outstanding, oldest T, from:" and its frames.

use std::fmt::Write;

use super::{PoolReport, Report, StackReport};

/// The periodic table: one header line per pool, then its top call paths.
pub fn render_interval(report: &Report) -> String {
    let mut out = String::new();
    for pool in &report.pools {
        let _ = writeln!(out, "[{:>7}] {}", seconds(report.elapsed_ms), summary(pool));
        render_stacks(&mut out, pool);
    }
    out
}

/// The report printed when tracing stops: totals, call paths, and every loss explained.
pub fn render_final(report: &Report) -> String {
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
        seconds(report.elapsed_ms)
    );
    for pool in &report.pools {
        let _ = writeln!(out, "\n{}", summary(pool));
        if report.min_age_ms > 0 && pool.stacks.is_empty() && pool.outstanding > 0 {
            let _ = writeln!(
                out,
                "  no object has been out longer than {}",
                seconds(report.min_age_ms)
            );
        }
        render_stacks(&mut out, pool);
        for warning in warnings(pool) {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    out
}

fn summary(pool: &PoolReport) -> String {
    let get = if pool.get == pool.get_probed {
        pool.get.clone()
    } else {
        format!("{} (via {})", pool.get, pool.get_probed)
    };
    format!(
        "{get}: {} gets, {} puts, {} outstanding{}, {} collected without Put, {} unmatched puts, {} dropped",
        pool.gets,
        pool.puts,
        pool.outstanding,
        bytes_suffix(pool.outstanding_bytes),
        pool.collected,
        pool.unmatched_puts,
        pool.dropped
    )
}

fn render_stacks(out: &mut String, pool: &PoolReport) {
    for stack in &pool.stacks {
        render_stack(out, stack);
    }
    if pool.stacks_omitted > 0 {
        let _ = writeln!(
            out,
            "  ... and {} more call paths (see --top)",
            pool.stacks_omitted
        );
    }
}

fn render_stack(out: &mut String, stack: &StackReport) {
    let instance = stack
        .receiver
        .as_ref()
        .map(|r| format!(" of pool {r}"))
        .unwrap_or_default();
    let _ = writeln!(out, "  {}{instance}, from:", held_summary(stack));
    for frame in &stack.frames {
        let location = match (&frame.file, frame.line) {
            (Some(file), Some(line)) => format!("  {file}:{line}"),
            (Some(file), None) => format!("  {file}"),
            _ => String::new(),
        };
        let inlined = if frame.inlined { " (inlined)" } else { "" };
        let _ = writeln!(out, "      {}{inlined}{location}", frame.function);
    }
}

/// "812 objects (12.7 MiB) outstanding, oldest 14.2s; 40 more (1.1 MiB) dropped without a
/// Put and garbage-collected".
fn held_summary(stack: &StackReport) -> String {
    let objects = |n: u64| {
        if n == 1 {
            "1 object".to_owned()
        } else {
            format!("{n} objects")
        }
    };
    let outstanding = (stack.outstanding > 0).then(|| {
        format!(
            "{}{} outstanding, oldest {}",
            objects(stack.outstanding),
            bytes_suffix(stack.bytes),
            seconds(stack.oldest_age_ms)
        )
    });
    let collected = (stack.collected > 0).then(|| {
        format!(
            "{}{} dropped without a Put and garbage-collected",
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

fn warnings(pool: &PoolReport) -> Vec<String> {
    let mut warnings = Vec::new();
    if pool.dropped > 0 {
        warnings.push(format!(
            "{} objects were not tracked because the object map was full (raise --max-objects)",
            pool.dropped
        ));
    }
    if pool.stack_failures > 0 {
        warnings.push(format!(
            "{} objects were tracked without a stack (stack map full or colliding; raise --max-stacks)",
            pool.stack_failures
        ));
    }
    if pool.collected > 0 {
        warnings.push(format!(
            "{} objects were dropped without a Put: a later Get returned their recycled memory \
             while they were still out (if Put is inlined into some callers, those Puts are \
             invisible and look the same)",
            pool.collected
        ));
    }
    if pool.collected_dropped > 0 {
        warnings.push(format!(
            "{} collected objects are in the totals but not under a call path (too many paths)",
            pool.collected_dropped
        ));
    }
    if pool.read_faults > 0 {
        warnings.push(format!(
            "{} object identities or sizes could not be read from the target's memory (check --get-key/--put-key/--get-size)",
            pool.read_faults
        ));
    }
    warnings
}

fn bytes_suffix(bytes: u64) -> String {
    if bytes == 0 {
        String::new()
    } else {
        format!(" ({})", human_bytes(bytes))
    }
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// 14200 -> "14.2s", 350 -> "350ms".
pub fn seconds(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_memleak() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(13_317_000), "12.7 MiB");
        assert_eq!(seconds(14_200), "14.2s");
        assert_eq!(seconds(350), "350ms");
    }
}
