//! Drawing `top`'s state: a header on the target and the trace, a line per pool, the table
//! of call paths (its columns dropped by priority when the terminal is narrow), an opened
//! path, the keys, an agent's processes, and a footer. Colour only where `NO_COLOR` allows.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap},
    Frame,
};

use super::app::{sort_name, App, Row, Screen};
use crate::{
    report::{books_line, sizes_line, windows_line, PoolReport, Report, StackReport},
    symbolize::Frame as StackFrame,
    units,
};

pub(crate) fn draw(frame: &mut Frame, app: &mut App) {
    let header = header(app);
    let pools = pool_lines(app);
    let footer_lines = footer_lines(app);
    let [top, middle, footer] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Min(3),
        Constraint::Length(footer_lines.len() as u16),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header), top);
    match app.screen {
        Screen::Picker => picker(frame, app, middle),
        Screen::Path => path(frame, app, middle),
        Screen::Paths | Screen::Help => {
            let pools_height = (pools.len() as u16 + 1).min(middle.height.saturating_sub(3));
            let [pools_area, table] =
                Layout::vertical([Constraint::Length(pools_height), Constraint::Min(2)])
                    .areas(middle);
            let block = Block::default().borders(Borders::TOP).title(" pools ");
            frame.render_widget(Paragraph::new(pools).block(block), pools_area);
            paths(frame, app, table);
        }
    }
    if app.screen == Screen::Help {
        help(frame, middle);
    }
    frame.render_widget(Paragraph::new(footer_lines), footer);
}

/// Painting that honours `NO_COLOR`: without colour, only bold and reverse remain.
fn paint(app: &App, colour: ratatui::style::Color) -> Style {
    match app.colour {
        true => Style::default().fg(colour),
        false => Style::default(),
    }
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn header(app: &App) -> Vec<Line<'static>> {
    use ratatui::style::Color;
    let Some(report) = &app.shown else {
        let waiting = match app.agent && app.targets.is_empty() {
            true => format!("the agent at {} traces no process yet", app.source),
            false => format!(
                "pooltrace top · {} · waiting for the first report",
                app.source
            ),
        };
        return vec![Line::from(waiting)];
    };
    let program = report.binary.rsplit('/').next().unwrap_or(&report.binary);
    let mut target = format!("PID {} {program}", report.pid);
    if let Some(go) = &report.go_version {
        target += &format!(" · {go}");
    }
    if let Some(module) = &report.module {
        target += &format!(" · {module}");
    }
    let mut first = vec![Span::styled(target, bold())];
    let traced = units::millis(report.elapsed_ms as f64);
    first.push(Span::raw(format!(
        " · traced {traced} · every {}",
        units::millis(app.interval_ms as f64)
    )));
    if app.paused {
        first.push(Span::styled(" · PAUSED", bold()));
    }
    let mut lines = vec![Line::from(first)];
    if let Some(ended) = &app.ended {
        let text = format!("{ended}; the view stays as it was: q quits");
        lines.push(Line::styled(
            text,
            paint(app, Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    lines.push(Line::from(probes_line(report)));
    let losses = losses(report);
    if !losses.is_empty() {
        let text = format!("! lost: {}", losses.join(" · "));
        lines.push(Line::styled(
            text,
            paint(app, Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    lines
}

/// The tracing windows and the budget, or the cost of continuous probes.
fn probes_line(report: &Report) -> String {
    if let Some(windows) = &report.windows {
        return windows_line(windows);
    }
    let cost: f64 = report.pools.iter().map(|p| p.probe_cost_cores).sum();
    let sampled = match report.sample_gets {
        Some(share) => format!(", Get probed {:.0}% of the time", share * 100.0),
        None => String::new(),
    };
    format!(
        "continuous probes{sampled}; estimated cost {:.2}% of a core",
        cost * 100.0
    )
}

/// Every loss counter that is not zero, in a few words each, summed over the pools.
fn losses(report: &Report) -> Vec<String> {
    let sum = |count: fn(&PoolReport) -> u64| report.pools.iter().map(count).sum::<u64>();
    let counts = [
        (
            sum(|p| p.counters.dropped),
            "objects untracked (object map full)",
        ),
        (sum(|p| p.counters.stack_failures), "stacks unread"),
        (
            sum(|p| p.counters.collected_dropped),
            "collected off their paths",
        ),
        (sum(|p| p.counters.paths_dropped), "hold times unrecorded"),
        (sum(|p| p.counters.stream_lost), "events lost"),
        (sum(|p| p.counters.read_faults), "read faults"),
    ];
    (counts.into_iter())
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect()
}

fn pool_lines(app: &App) -> Vec<Line<'static>> {
    let Some(report) = &app.shown else {
        return Vec::new();
    };
    let line = |p: &PoolReport| {
        let out = match p.outstanding_bytes {
            0 => p.outstanding.to_string(),
            bytes => format!("{} ({})", p.outstanding, units::bytes(bytes)),
        };
        Line::from(vec![
            Span::styled(short(&p.get), bold()),
            Span::raw(format!(
                " {}  gets/s {}  puts/s {}  out {out}  collected {}  unmatched {}  double {}",
                kind_name(p),
                rate(p.gets_per_s),
                rate(p.puts_per_s),
                p.counters.collected,
                p.counters.unmatched_puts,
                p.counters.double_puts,
            )),
        ])
    };
    // Each pool's line, then its instances' own books and its sizes.
    let mut lines = Vec::new();
    for pool in &report.pools {
        lines.push(line(pool));
        let books = pool.instances.iter();
        lines.extend(
            books.map(|i| Line::from(format!("  instance {}: {}", i.address, books_line(i)))),
        );
        lines
            .extend((pool.sizes.iter()).map(|s| Line::from(format!("  sizes: {}", sizes_line(s)))));
    }
    lines
}

fn kind_name(pool: &PoolReport) -> &'static str {
    match pool.kind {
        crate::probes::PoolKind::Counting => "counting",
        crate::probes::PoolKind::Sync => "sync",
    }
}

fn rate(per_s: f64) -> String {
    match per_s {
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// A function's name without its package path: `store.(*bucketChunkReader).save`.
fn short(function: &str) -> String {
    let from = function.rfind('/').map_or(0, |slash| slash + 1);
    function[from..].to_owned()
}

/// The table's columns, by what must stay longest when the terminal narrows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Score,
    Outstanding,
    Path,
    Bytes,
    Age,
    Hold,
    Trend,
    Pool,
}

impl Column {
    const BY_PRIORITY: [Column; 8] = [
        Column::Score,
        Column::Outstanding,
        Column::Path,
        Column::Bytes,
        Column::Age,
        Column::Hold,
        Column::Trend,
        Column::Pool,
    ];
    /// Left to right.
    const SHOWN_ORDER: [Column; 8] = [
        Column::Score,
        Column::Outstanding,
        Column::Bytes,
        Column::Age,
        Column::Hold,
        Column::Trend,
        Column::Pool,
        Column::Path,
    ];

    /// Its title; the trend's says what it spans.
    fn title(self, app: &App) -> &'static str {
        match self {
            Column::Trend if app.agent => "TREND",
            Column::Score => "SCORE",
            Column::Outstanding => "HELD",
            Column::Bytes => "BYTES",
            Column::Age => "OLDEST",
            Column::Hold => "P99HOLD",
            Column::Trend => "TREND 1m",
            Column::Pool => "POOL",
            Column::Path => "CALLER <- FRAMES",
        }
    }

    /// Its width; the path takes what is left, at least this.
    fn width(self) -> u16 {
        match self {
            Column::Score => 5,
            Column::Outstanding => 6,
            Column::Bytes => 9,
            Column::Age => 7,
            Column::Hold => 7,
            Column::Trend => 12,
            Column::Pool => 4,
            Column::Path => 32,
        }
    }

    fn cell(self, row: &Row, app: &App) -> Cell<'static> {
        let stack = row.stack;
        let held = stack.outstanding + stack.collected;
        match self {
            Column::Score => Cell::from(format!("{:>5.0}", stack.leak_score))
                .style(score_style(app, stack.leak_score)),
            Column::Outstanding => Cell::from(format!("{held:>6}")),
            Column::Bytes => Cell::from(format!(
                "{:>9}",
                units::bytes(stack.bytes + stack.collected_bytes)
            )),
            Column::Age => Cell::from(format!("{:>7}", age(stack.oldest_age_ms))),
            Column::Hold => Cell::from(format!(
                "{:>7}",
                stack
                    .hold_ms
                    .map_or("-".to_owned(), |h| units::millis(h.p99))
            )),
            Column::Trend => Cell::from(sparkline(&trend(stack, app), 12)),
            Column::Pool => Cell::from(format!("{:>4}", row.pool + 1)),
            Column::Path => Cell::from(path_text(stack)),
        }
    }
}

fn age(ms: u64) -> String {
    match ms {
        0 => "-".to_owned(),
        ms => units::millis(ms as f64),
    }
}

fn score_style(app: &App, score: f64) -> Style {
    use ratatui::style::Color;
    match score {
        s if s >= 50.0 => paint(app, Color::Red).add_modifier(Modifier::BOLD),
        s if s >= 20.0 => paint(app, Color::Yellow),
        _ => Style::default(),
    }
}

/// Get's immediate caller, then on out: as many frames as the column shows.
fn path_text(stack: &StackReport) -> String {
    let outer = stack.frames.iter().skip(1).map(|f| short(&f.function));
    let frames: Vec<String> = outer.collect();
    match frames.is_empty() {
        true => "(no stack)".to_owned(),
        false => frames.join(" <- "),
    }
}

/// What the sparkline draws: the last minute's points of a local trace; an agent's points
/// are its own, one per its --interval, which its reports do not carry, so all are drawn.
fn trend(stack: &StackReport, app: &App) -> Vec<u64> {
    match app.agent {
        true => stack.trend.clone(),
        false => minute(&stack.trend, app.interval_ms),
    }
}

/// The trend points of the last minute, at one point per report.
fn minute(trend: &[u64], interval_ms: u64) -> Vec<u64> {
    let points = (60_000 / interval_ms.max(1)).max(1) as usize;
    trend[trend.len().saturating_sub(points)..].to_vec()
}

/// `values` as `width` block characters, each the largest of its share of the points,
/// scaled to the largest of all.
fn sparkline(values: &[u64], width: usize) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() {
        return String::new();
    }
    let per_char = values.len().div_ceil(width);
    let buckets: Vec<u64> = values
        .chunks(per_char)
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect();
    let top = buckets.iter().copied().max().unwrap_or(0).max(1);
    (buckets.iter())
        .map(|&v| LEVELS[((v * 7).div_ceil(top) as usize).min(7)])
        .collect()
}

/// The columns that fit in `width`, left to right.
fn columns(width: u16, pools: usize) -> Vec<Column> {
    let mut kept = Vec::new();
    let mut used = 0u16;
    for column in Column::BY_PRIORITY {
        if column == Column::Pool && pools < 2 {
            continue;
        }
        let needs = column.width() + 1;
        if used + needs <= width {
            used += needs;
            kept.push(column);
        }
    }
    (Column::SHOWN_ORDER.into_iter())
        .filter(|c| kept.contains(c))
        .collect()
}

fn paths(frame: &mut Frame, app: &mut App, area: Rect) {
    let pools = app.shown.as_ref().map_or(0, |r| r.pools.len());
    let shown = columns(area.width, pools);
    let widths: Vec<Constraint> = (shown.iter())
        .map(|&c| match c {
            Column::Path => Constraint::Min(c.width()),
            _ => Constraint::Length(c.width()),
        })
        .collect();
    app.page = area.height.saturating_sub(2).max(1) as usize;
    let rows = app.rows();
    let count = rows.len();
    let table_rows: Vec<TableRow> = (rows.iter())
        .map(|row| TableRow::new(shown.iter().map(|c| c.cell(row, app))))
        .collect();
    let selected = app.selected;
    let header = TableRow::new(shown.iter().map(|c| c.title(app))).style(bold());
    let omitted: usize = (app.shown.iter())
        .flat_map(|r| &r.pools)
        .map(|p| p.stacks_omitted)
        .sum();
    let more = match omitted {
        0 => String::new(),
        n => format!(" (and {n} more, not kept)"),
    };
    let title = match (app.filter.is_empty(), app.typing) {
        (true, false) => format!(" call paths: {count}{more}, by {} ", sort_name(app.sort)),
        _ => format!(
            " call paths matching {:?}: {count}, by {} ",
            app.filter,
            sort_name(app.sort)
        ),
    };
    let table = Table::new(table_rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected((count > 0).then_some(selected));
    drop(rows);
    frame.render_stateful_widget(table, area, &mut state);
}

/// The opened path: every frame, the release paths, ages and hold times, and the reasons.
fn path(frame: &mut Frame, app: &mut App, area: Rect) {
    app.page = area.height.saturating_sub(2).max(1) as usize;
    let mut lines: Vec<Line> = Vec::new();
    let Some(row) = app.selected_row() else {
        frame.render_widget(Paragraph::new("no path selected: Esc goes back"), area);
        return;
    };
    let stack = row.stack;
    let pool = app.pool(row.pool).map_or(String::new(), |p| short(&p.get));
    lines.push(Line::styled(
        format!(
            "score {:.0} · {pool} · {}",
            stack.leak_score,
            held_summary(stack)
        ),
        score_style(app, stack.leak_score),
    ));
    if let Some(receiver) = &stack.receiver {
        lines.push(Line::from(format!("pool instance {receiver}")));
    }
    if let Some(sizes) = &stack.sizes {
        lines.push(Line::from(sizes_line(sizes)));
    }
    section(&mut lines, "why");
    lines.extend(stack.reasons.iter().map(|r| Line::from(format!("  {r}"))));
    section(&mut lines, "taken at (innermost first)");
    lines.extend(stack.frames.iter().map(frame_line));
    section(&mut lines, "given back through");
    if stack.release_paths.is_empty() {
        lines.push(Line::from("  none seen"));
    }
    for release in &stack.release_paths {
        let shown = release.frames.iter().skip(1).take(4);
        let names: Vec<String> = shown
            .map(|f| format!("{} ({})", short(&f.function), location(f)))
            .collect();
        lines.push(Line::from(format!(
            "  {:>5.1}%  {}",
            release.share * 100.0,
            names.join(" <- ")
        )));
    }
    section(&mut lines, "ages of the objects out");
    lines.push(Line::from(match stack.age_ms {
        Some(a) => format!(
            "  p50 {}  p99 {}  max {}",
            units::millis(a.p50),
            units::millis(a.p99),
            units::millis(a.max)
        ),
        None => "  none out".to_owned(),
    }));
    section(&mut lines, "hold times, Get to Put");
    lines.extend(hold_bars(stack, area.width));
    let title = " path: Up/Down scroll, Esc back ";
    let block = Block::default().borders(Borders::TOP).title(title);
    let paragraph = Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false })
        .scroll((app.scroll, 0));
    frame.render_widget(paragraph, area);
}

fn section(lines: &mut Vec<Line>, title: &str) {
    lines.push(Line::styled(title.to_owned(), bold()));
}

fn held_summary(stack: &StackReport) -> String {
    let mut text = format!("{} out ({})", stack.outstanding, units::bytes(stack.bytes));
    if stack.collected > 0 {
        text += &format!(", {} dropped without a Put", stack.collected);
    }
    text + &format!(", {} returned", stack.returned)
}

fn location(frame: &StackFrame) -> String {
    let file = frame
        .file
        .as_deref()
        .map_or("?", |f| f.rsplit('/').next().unwrap_or(f));
    match frame.line {
        Some(line) => format!("{file}:{line}"),
        None => file.to_owned(),
    }
}

fn frame_line(frame: &StackFrame) -> Line<'static> {
    let inlined = if frame.inlined { " (inlined)" } else { "" };
    let file = frame.file.as_deref().unwrap_or("?");
    let at = match frame.line {
        Some(line) => format!("{file}:{line}"),
        None => file.to_owned(),
    };
    Line::from(format!("  {}{inlined}  {at}", frame.function))
}

/// The hold-time histogram as bars, one line a bucket.
fn hold_bars(stack: &StackReport, width: u16) -> Vec<Line<'static>> {
    if stack.hold_histogram.is_empty() {
        return vec![Line::from("  none came back")];
    }
    let most = stack
        .hold_histogram
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(1)
        .max(1);
    let room = width.saturating_sub(32).max(4) as u64;
    (stack.hold_histogram.iter())
        .map(|b| {
            let to = match b.to_ms {
                0.0 => "...".to_owned(),
                to => units::millis(to),
            };
            let bar = "█".repeat((b.count * room).div_ceil(most) as usize);
            Line::from(format!(
                "  {:>8} - {:<8} {:>7} {bar}",
                units::millis(b.from_ms),
                to,
                b.count
            ))
        })
        .collect()
}

fn picker(frame: &mut Frame, app: &mut App, area: Rect) {
    let rows: Vec<TableRow> = (app.targets.iter())
        .map(|r| {
            let paths: usize = r.pools.iter().map(|p| p.stacks.len()).sum();
            let top = (r.pools.iter().flat_map(|p| &p.stacks))
                .map(|s| s.leak_score)
                .fold(0.0, f64::max);
            TableRow::new(vec![
                format!("{:>7}", r.pid),
                r.binary.clone(),
                format!("{paths:>5}"),
                format!("{top:>5.0}"),
                r.go_version.clone().unwrap_or_default(),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(7),
        Constraint::Min(12),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(10),
    ];
    let title = format!(
        " the agent traces {} processes: Enter picks one ",
        app.targets.len()
    );
    let table = Table::new(rows, widths)
        .header(TableRow::new(["PID", "PROGRAM", "PATHS", "SCORE", "GO"]).style(bold()))
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let selected = app.selected.min(app.targets.len().saturating_sub(1));
    let mut state =
        TableState::default().with_selected((!app.targets.is_empty()).then_some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}

const KEYS: [(&str, &str); 11] = [
    ("Up/Down", "move"),
    ("PgUp/PgDn", "move a page"),
    ("Enter", "open the path (Esc back)"),
    ("s", "sort: score, count, bytes, age"),
    ("/", "filter by text in any frame (Esc clears)"),
    ("p", "pause the view; tracing goes on"),
    ("w", "write the report as JSON"),
    ("t", "pick another of the agent's processes"),
    ("?", "these keys"),
    ("q, Ctrl-C", "quit: detach, print the final report"),
    ("", "any key closes this"),
];

fn help(frame: &mut Frame, area: Rect) {
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| Line::from(format!(" {key:>10}  {what}")))
        .collect();
    let height = (lines.len() as u16 + 2).min(area.height);
    let width = 58.min(area.width);
    let x = area.x + (area.width - width) / 2;
    let y = area.y + (area.height - height) / 2;
    let popup = Rect::new(x, y, width, height);
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(" keys ");
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

/// The status line, when something was said, above the keys (or the filter being typed).
fn footer_lines(app: &App) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if !app.status.is_empty() {
        lines.push(Line::styled(app.status.clone(), bold()));
    }
    lines.push(match app.typing {
        true => Line::from(format!(
            "filter: {}_   (Enter keeps it, Esc clears)",
            app.filter
        )),
        false => Line::from("q quit  ? keys  Enter open  s sort  / filter  p pause  w write"),
    });
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_scales_to_its_largest_point_and_fits_its_width() {
        // Anything held shows above the floor.
        assert_eq!(sparkline(&[0, 1, 7, 14], 12), "▁▂▅█");
        assert_eq!(sparkline(&[1; 60], 12).chars().count(), 12);
        assert_eq!(sparkline(&[], 12), "");
    }

    #[test]
    fn narrow_terminals_keep_score_count_and_path_first() {
        let at_60 = columns(60, 1);
        assert!(at_60.contains(&Column::Score) && at_60.contains(&Column::Path));
        assert!(!at_60.contains(&Column::Trend));
        let at_120 = columns(120, 2);
        assert_eq!(at_120.len(), 8);
        assert_eq!(at_120.last(), Some(&Column::Path));
    }
}
