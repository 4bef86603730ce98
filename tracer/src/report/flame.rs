//! Flame graphs of what each call path holds: folded stacks (`frame;frame;... count`,
//! outermost first, the format flamegraph.pl, inferno and speedscope read) and an SVG
//! rendered with inferno.

use std::io;

use inferno::flamegraph::{self, Options};

use super::{PoolReport, Report};

/// One line per call path and pool: its frames outermost first, then the objects it holds
/// (outstanding + collected without Put).
pub fn folded(report: &Report) -> String {
    let mut out = String::new();
    for pool in &report.pools {
        for line in pool_lines(pool) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn pool_lines(pool: &PoolReport) -> Vec<String> {
    pool.stacks
        .iter()
        .filter(|stack| stack.outstanding + stack.collected > 0)
        .map(|stack| {
            // Semicolons separate frames in this format; Go names never contain one, but a
            // symbol from a C library might.
            let frames: Vec<String> = stack
                .frames
                .iter()
                .rev()
                .map(|f| f.function.replace(';', ":"))
                .collect();
            format!(
                "{} {}",
                frames.join(";"),
                stack.outstanding + stack.collected
            )
        })
        .collect()
}

/// An SVG flame graph of the same data.
pub fn svg(report: &Report) -> io::Result<Vec<u8>> {
    let folded = folded(report);
    let mut options = Options::default();
    options.title = format!(
        "pooltrace: objects held, PID {} ({})",
        report.pid, report.binary
    );
    options.count_name = "objects".into();
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg).map_err(io::Error::other)?;
    Ok(svg)
}
