//! What `top` shows and what each key does to it: one state, changed by reports and keys,
//! drawn by `view` after every change. Nothing here reads the kernel or the terminal.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::report::{self, PoolReport, Report, SortBy, StackReport};

/// What the table shows: the paths, the path opened, the keys, or an agent's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Screen {
    Paths,
    Path,
    Help,
    Picker,
}

/// What a key asks of the loop that owns the trace.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Nothing,
    Quit,
    /// Write the report shown as JSON (`w`).
    Write,
}

/// One row of the paths table: a call path of one pool.
pub(crate) struct Row<'a> {
    pub pool: usize,
    pub stack: &'a StackReport,
}

/// Everything `top` draws.
pub(crate) struct App {
    /// The report drawn; while paused, newer ones wait in `latest`.
    pub shown: Option<Report>,
    latest: Option<Report>,
    pub paused: bool,
    /// How the trace ended (the target's exit or exec), shown until quit.
    pub ended: Option<String>,
    pub sort: SortBy,
    /// Rows whose frames contain this text, case folded; and whether it is being typed.
    pub filter: String,
    pub typing: bool,
    pub screen: Screen,
    /// The selected row of the paths table, and the first line shown of an opened path.
    pub selected: usize,
    pub scroll: u16,
    /// The selected path's identity, so that it stays selected as rows move.
    selected_path: Option<PathKey>,
    /// The line at the bottom: what a key did, or the last thing pooltrace said.
    pub status: String,
    /// Rows a page key moves, set by the last draw.
    pub page: usize,
    /// An agent's processes (`--agent`), and the one shown.
    pub targets: Vec<Report>,
    pub picked: Option<i32>,
    pub colour: bool,
    /// Where the view is read from, for the header: "PID 4242" or the agent's address.
    pub source: String,
    /// Read from an agent (`--agent`).
    pub agent: bool,
    pub interval_ms: u64,
}

/// What tells a path from the others across reports: its pool, receiver and frames.
type PathKey = (usize, Option<String>, Vec<(String, Option<u32>)>);

fn path_key(row: &Row) -> PathKey {
    let frames = row.stack.frames.iter();
    (
        row.pool,
        row.stack.receiver.clone(),
        frames.map(|f| (f.function.clone(), f.line)).collect(),
    )
}

impl App {
    pub fn new(source: String, sort: SortBy, interval_ms: u64, colour: bool) -> Self {
        Self {
            shown: None,
            latest: None,
            paused: false,
            ended: None,
            sort,
            filter: String::new(),
            typing: false,
            screen: Screen::Paths,
            selected: 0,
            scroll: 0,
            selected_path: None,
            status: String::new(),
            page: 10,
            targets: Vec::new(),
            picked: None,
            colour,
            source,
            agent: false,
            interval_ms,
        }
    }

    /// A new report: shown at once unless paused.
    pub fn update(&mut self, report: Report) {
        match self.paused {
            true => self.latest = Some(report),
            false => {
                self.shown = Some(report);
                self.reselect();
            }
        }
    }

    /// The agent's reports: the picked process's is shown; with several and none picked,
    /// the picker opens.
    pub fn offer(&mut self, reports: Vec<Report>) {
        self.targets = reports;
        self.targets.sort_by_key(|r| r.pid);
        if self.picked.is_none() {
            match self.targets.as_slice() {
                [one] => self.picked = Some(one.pid),
                [] => {}
                _ => {
                    if self.screen != Screen::Help {
                        self.screen = Screen::Picker;
                    }
                    return;
                }
            }
        }
        let picked = self.picked;
        match self.targets.iter().find(|r| Some(r.pid) == picked) {
            Some(report) => {
                self.ended = None;
                self.update(report.clone());
            }
            None => {
                if let Some(pid) = picked {
                    self.ended = Some(format!("PID {pid} is no longer served by the agent"));
                }
            }
        }
    }

    /// The rows of the paths table: every pool's paths that pass the filter, in `sort`
    /// order.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let Some(report) = &self.shown else {
            return Vec::new();
        };
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<Row> = (report.pools.iter().enumerate())
            .flat_map(|(pool, p)| p.stacks.iter().map(move |stack| Row { pool, stack }))
            .filter(|row| needle.is_empty() || mentions(row.stack, &needle))
            .collect();
        rows.sort_by(|a, b| report::order(self.sort, a.stack, b.stack));
        rows
    }

    /// The pool of a row.
    pub fn pool(&self, index: usize) -> Option<&PoolReport> {
        self.shown.as_ref().and_then(|r| r.pools.get(index))
    }

    /// Reacts to a key; what the owner of the trace must do.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.typing {
            self.type_filter(key.code);
            return Action::Nothing;
        }
        if self.screen == Screen::Help {
            // Any key closes the help, and q still quits.
            self.screen = Screen::Paths;
            return match key.code {
                KeyCode::Char('q') => Action::Quit,
                _ => Action::Nothing,
            };
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('w') => return Action::Write,
            KeyCode::Char('?') => self.screen = Screen::Help,
            KeyCode::Char('p') => self.toggle_pause(),
            KeyCode::Char('t') if !self.targets.is_empty() => {
                self.screen = Screen::Picker;
                let picked = self.targets.iter().position(|r| Some(r.pid) == self.picked);
                self.selected = picked.unwrap_or(0);
            }
            _ => match self.screen {
                Screen::Paths => self.on_paths_key(key.code),
                Screen::Path => self.on_path_key(key.code),
                Screen::Picker => self.on_picker_key(key.code),
                Screen::Help => {}
            },
        }
        Action::Nothing
    }

    fn on_paths_key(&mut self, code: KeyCode) {
        let rows = self.rows().len();
        match code {
            KeyCode::Up => self.select(self.selected.saturating_sub(1), rows),
            KeyCode::Down => self.select(self.selected + 1, rows),
            KeyCode::PageUp => self.select(self.selected.saturating_sub(self.page), rows),
            KeyCode::PageDown => self.select(self.selected + self.page, rows),
            KeyCode::Home => self.select(0, rows),
            KeyCode::End => self.select(rows.saturating_sub(1), rows),
            KeyCode::Enter if rows > 0 => {
                self.screen = Screen::Path;
                self.scroll = 0;
            }
            KeyCode::Char('s') => {
                self.sort = next_sort(self.sort);
                self.status = format!("sorted by {}", sort_name(self.sort));
                self.reselect();
            }
            KeyCode::Char('/') => {
                self.typing = true;
                self.status.clear();
            }
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.reselect();
            }
            _ => {}
        }
    }

    fn on_path_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Up => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down => self.scroll = self.scroll.saturating_add(1),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(self.page as u16),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(self.page as u16),
            KeyCode::Esc | KeyCode::Enter | KeyCode::Left | KeyCode::Backspace => {
                self.screen = Screen::Paths;
            }
            _ => {}
        }
    }

    fn on_picker_key(&mut self, code: KeyCode) {
        let current = (self.targets.iter()).position(|r| Some(r.pid) == self.picked);
        let count = self.targets.len();
        match code {
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected = (self.selected + 1).min(count.saturating_sub(1)),
            KeyCode::Enter => {
                if let Some(report) = self.targets.get(self.selected) {
                    self.picked = Some(report.pid);
                    self.ended = None;
                    self.shown = Some(report.clone());
                    self.latest = None;
                    self.screen = Screen::Paths;
                    self.selected = 0;
                    self.selected_path = None;
                }
            }
            KeyCode::Esc if current.is_some() => {
                self.screen = Screen::Paths;
                self.selected = 0;
                self.selected_path = None;
            }
            _ => {}
        }
    }

    fn type_filter(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char(c) => self.filter.push(c),
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Enter => self.typing = false,
            KeyCode::Esc => {
                self.typing = false;
                self.filter.clear();
            }
            _ => {}
        }
        self.selected = 0;
        self.reselect();
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            if let Some(report) = self.latest.take() {
                self.shown = Some(report);
                self.reselect();
            }
        }
        self.status = match self.paused {
            true => "paused: tracing goes on; p resumes".to_owned(),
            false => "resumed".to_owned(),
        };
    }

    /// Moves the selection to `index` (within the rows), remembering the path there.
    fn select(&mut self, index: usize, rows: usize) {
        self.selected = index.min(rows.saturating_sub(1));
        self.selected_path = self.rows().get(self.selected).map(path_key);
    }

    /// After the rows changed: the row of the path the user moved to, else the same place
    /// (the top row stays the top row until the user moves).
    fn reselect(&mut self) {
        let rows = self.rows();
        let found = (self.selected_path.as_ref())
            .and_then(|key| rows.iter().position(|row| &path_key(row) == key));
        let count = rows.len();
        drop(rows);
        match found {
            Some(index) => self.selected = index,
            None => {
                self.selected_path = None;
                self.selected = self.selected.min(count.saturating_sub(1));
            }
        }
    }

    /// The selected row, when there is one.
    pub fn selected_row(&self) -> Option<Row<'_>> {
        self.rows().into_iter().nth(self.selected)
    }
}

/// Whether any frame of the path, or of its release paths, mentions `needle` (lower case).
fn mentions(stack: &StackReport, needle: &str) -> bool {
    let frames = (stack.frames.iter()).chain(stack.release_paths.iter().flat_map(|r| &r.frames));
    frames.into_iter().any(|f| {
        f.function.to_lowercase().contains(needle)
            || f.file
                .as_ref()
                .is_some_and(|file| file.to_lowercase().contains(needle))
    })
}

/// `s`: score, count, bytes, age, and round again.
fn next_sort(sort: SortBy) -> SortBy {
    match sort {
        SortBy::Score => SortBy::Count,
        SortBy::Count => SortBy::Bytes,
        SortBy::Bytes => SortBy::Age,
        SortBy::Age => SortBy::Score,
    }
}

pub(crate) fn sort_name(sort: SortBy) -> &'static str {
    match sort {
        SortBy::Score => "score",
        SortBy::Count => "count",
        SortBy::Bytes => "bytes",
        SortBy::Age => "age",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{probes::PoolKind, symbolize::Frame};
    use ratatui::crossterm::event::KeyEvent;
    use tracer_common::PoolCounters;

    fn frame(function: &str) -> Frame {
        Frame {
            address: 0,
            function: function.to_owned(),
            file: Some("/src/x.go".to_owned()),
            line: Some(1),
            inlined: false,
        }
    }

    fn stack(score: f64, outstanding: u64, age_ms: u64, caller: &str) -> StackReport {
        StackReport {
            leak_score: score,
            reasons: Vec::new(),
            receiver: None,
            outstanding,
            bytes: outstanding * 10,
            oldest_age_ms: age_ms,
            age_ms: None,
            hold_ms: None,
            returned: 0,
            hold_histogram: Vec::new(),
            survivors: 0,
            came_back_unseen: 0,
            late_puts: 0,
            returned_unseen: 0,
            collected: 0,
            collected_bytes: 0,
            trend: Vec::new(),
            release_paths: Vec::new(),
            sizes: None,
            frames: vec![frame("pool.Get"), frame(caller)],
        }
    }

    fn report(pid: i32, stacks: Vec<StackReport>) -> Report {
        Report {
            pid,
            binary: "svc".to_owned(),
            go_version: None,
            module: None,
            elapsed_ms: 1000,
            min_age_ms: 0,
            sample_gets: None,
            windows: None,
            pools: vec![PoolReport {
                get: "pool.Get".to_owned(),
                put: "pool.Put".to_owned(),
                kind: PoolKind::Counting,
                get_probed: "pool.Get".to_owned(),
                put_probed: "pool.Put".to_owned(),
                gets_per_s: 0.0,
                puts_per_s: 0.0,
                probe_cost_cores: 0.0,
                outstanding: 0,
                outstanding_bytes: 0,
                counters: PoolCounters::default(),
                unseen_get_sites: 0,
                unseen_put_sites: 0,
                stacks,
                stacks_omitted: 0,
                double_put_paths: Vec::new(),
                instances: Vec::new(),
                sizes: None,
                sized_paths: Vec::new(),
                sized_paths_omitted: 0,
            }],
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::from(code)
    }

    fn callers(app: &App) -> Vec<String> {
        let rows = app.rows();
        rows.iter()
            .map(|r| r.stack.frames[1].function.clone())
            .collect()
    }

    #[test]
    fn s_cycles_score_count_bytes_age_and_reorders_the_rows() {
        let mut app = App::new(String::new(), SortBy::Score, 1000, false);
        app.update(report(
            1,
            vec![
                stack(90.0, 1, 10, "leak"),
                stack(10.0, 5, 20, "busy"),
                stack(50.0, 2, 99, "old"),
            ],
        ));
        assert_eq!(callers(&app), ["leak", "old", "busy"]);
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(
            (app.sort, callers(&app)[0].as_str()),
            (SortBy::Count, "busy")
        );
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(
            (app.sort, callers(&app)[0].as_str()),
            (SortBy::Bytes, "busy")
        );
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!((app.sort, callers(&app)[0].as_str()), (SortBy::Age, "old"));
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.sort, SortBy::Score);
    }

    #[test]
    fn the_selected_path_stays_selected_as_rows_move_and_the_filter_keeps_matches() {
        let mut app = App::new(String::new(), SortBy::Score, 1000, false);
        let stacks = vec![stack(90.0, 1, 0, "leak"), stack(10.0, 5, 0, "busy")];
        app.update(report(1, stacks));
        app.on_key(key(KeyCode::Down));
        assert_eq!(
            app.selected_row()
                .map(|r| r.stack.frames[1].function.clone())
                .as_deref(),
            Some("busy")
        );
        // The busy path now scores higher: it moves up, and stays selected.
        app.update(report(
            1,
            vec![stack(10.0, 1, 0, "leak"), stack(95.0, 5, 0, "busy")],
        ));
        assert_eq!(app.selected, 0);
        for c in "LEA".chars() {
            app.on_key(key(KeyCode::Char(if c == 'L' { '/' } else { c })));
        }
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.filter, "EA");
        assert_eq!(callers(&app), ["leak"]);
        app.on_key(key(KeyCode::Esc));
        assert_eq!(callers(&app).len(), 2);
    }

    #[test]
    fn until_the_user_moves_the_top_row_stays_selected_whatever_path_it_shows() {
        let mut app = App::new(String::new(), SortBy::Score, 1000, false);
        app.update(report(
            1,
            vec![stack(10.0, 1, 0, "busy"), stack(5.0, 1, 0, "leak")],
        ));
        app.update(report(
            1,
            vec![stack(10.0, 1, 0, "busy"), stack(95.0, 1, 0, "leak")],
        ));
        let selected = app
            .selected_row()
            .map(|r| r.stack.frames[1].function.clone());
        assert_eq!(selected.as_deref(), Some("leak"));
    }

    #[test]
    fn paused_the_view_keeps_its_report_and_resumes_with_the_newest() {
        let mut app = App::new(String::new(), SortBy::Score, 1000, false);
        app.update(report(1, vec![stack(1.0, 1, 0, "first")]));
        app.on_key(key(KeyCode::Char('p')));
        app.update(report(1, vec![stack(1.0, 1, 0, "second")]));
        assert_eq!(callers(&app), ["first"]);
        app.on_key(key(KeyCode::Char('p')));
        assert_eq!(callers(&app), ["second"]);
    }

    #[test]
    fn several_agent_processes_open_the_picker_and_enter_picks_one() {
        let mut app = App::new(String::new(), SortBy::Score, 1000, false);
        app.offer(vec![
            report(7, vec![]),
            report(3, vec![stack(1.0, 1, 0, "x")]),
        ]);
        assert_eq!((app.screen, app.picked), (Screen::Picker, None));
        app.on_key(key(KeyCode::Enter));
        assert_eq!((app.screen, app.picked), (Screen::Paths, Some(3)));
        assert_eq!(callers(&app), ["x"]);
        app.offer(vec![report(7, vec![])]);
        assert_eq!(
            app.ended.as_deref(),
            Some("PID 3 is no longer served by the agent")
        );
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
    }
}
