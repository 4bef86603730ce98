//! One trace, from the command line to the final report: check the options, open the output
//! and the process, ask `probes::plan` what to probe, attach (`probes::lifecycle`), print the
//! periodic tables, and on a signal, `--duration`, the target's exit or exec, or a closed
//! stdout, detach and write the final report, into the `--output` file opened before
//! attaching. `run` passes signals on to its program, waits for it to exit, and judges
//! `--fail-on`. The setup every command shares (`prepare`, `limits`) and `Attached`, which
//! turns an attached process's maps into reports, serve `stream` and the agent too.

use std::{
    io::IsTerminal,
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    books::Books,
    capabilities::{self, Effective},
    cli::{self, Filters, MapSizes, PoolArgs, ReportArgs, RunArgs, TraceOptions},
    error::{Error, Result},
    gobin::{GoBinary, SymbolSource},
    output::{stdout_closed, write_stdout, OutputFile},
    probes::{
        self,
        plan::{self, plan_summary, PoolRequest},
        windows::{FixedTimes, Planner},
        Lifecycle, Limits, PoolPlan, PoolSpec, Probes,
    },
    process::{Change, Process, Spawned},
    report::gate::FailOn,
    report::{self, spinner, History, Report, ReportFormat, SortBy, Style},
    signals::Signals,
    stop::{Ends, Stop},
    symbolize::{InProcess, Symbolizer},
    tracking::Snapshot,
};

pub async fn report(args: ReportArgs) -> Result<()> {
    let options = &args.trace;
    check(options)?;
    let target = prepare(
        args.pid,
        &options.pools,
        Output::new(options.output.as_deref(), options.force),
        !args.dry_run,
        |_| {},
    )?;
    if args.dry_run {
        let sites = probes::sites_json(&target.binary, &target.plans) + "\n";
        return match target.output {
            Some(mut file) => file.replace_contents(sites.as_bytes()),
            None => write_stdout(sites.as_bytes()),
        };
    }
    let mut process = target.process;
    let mut ends = Ends::new(target.signals, process.watch()?);
    let (_, _, written) = trace(
        options,
        target.output,
        target.plans,
        &mut ends,
        process,
        &target.binary,
        |_| Ok(()),
    )
    .await?;
    written
}

/// Checks what `report` and `top` are asked, before anything is opened; each check is made
/// again where its result is used, at attach.
pub(crate) fn check(options: &TraceOptions) -> Result<()> {
    limits(&options.maps, &options.filters)?;
    double_puts_need_every_get(options.pools.double_puts, options.sample_gets)?;
    window_request(&options.windows, options.sample_gets)?;
    Ok(())
}

/// Where the user asked results to go: `--output` and `--force`.
pub(crate) struct Output<'a> {
    path: Option<&'a Path>,
    force: bool,
}

impl<'a> Output<'a> {
    pub(crate) fn new(path: Option<&'a Path>, force: bool) -> Self {
        Self { path, force }
    }
}

/// A running process, ready to be attached to.
pub(crate) struct Prepared {
    pub signals: Signals,
    pub output: Option<OutputFile>,
    pub process: Process,
    pub binary: GoBinary,
    pub plans: Vec<PoolPlan>,
}

/// What every command that attaches to a running process does first, in this order: catch
/// signals (so none can kill it later, mid-attach), read the named pools, open `--output`,
/// check privileges, open the process and its binary, and plan the pools (`adjust` tunes
/// each). Every mistake fails here, before anything is attached.
pub(crate) fn prepare(
    pid: i32,
    pools: &PoolArgs,
    output: Output,
    needs_privileges: bool,
    adjust: impl Fn(&mut PoolSpec),
) -> Result<Prepared> {
    let signals = Signals::install()?;
    let request = pool_request(pools)?;
    let output = OutputFile::open_requested(output.path, output.force)?;
    if needs_privileges {
        Effective::read().require(&capabilities::TRACE)?;
    }
    let process = Process::open(pid)?;
    let binary = open_binary(&process)?;
    let plans = request.plan(&binary, adjust)?;
    Ok(Prepared {
        signals,
        output,
        process,
        binary,
        plans,
    })
}

/// The traced executable, with a spinner while a large one's tables are read.
pub(crate) fn open_binary(process: &Process) -> Result<GoBinary> {
    spinner::while_running(&format!("reading {}", process.exe_name()), || {
        GoBinary::open(&process.exe_path(), Path::new(process.exe_name()))
    })
}

/// `pooltrace run`: starts the program held at the door, attaches, lets it in, and reports
/// when it exits; returns its exit status (128 + SIGINT when Ctrl-C ended the wait for it).
pub async fn run(args: RunArgs) -> Result<i32> {
    let signals = Signals::install()?;
    let mut request = pool_request(&args.trace.pools)?;
    request.double_puts |= args.fail_on.contains(&FailOn::DoublePut);
    limits(&args.trace.maps, &args.trace.filters)?;
    double_puts_need_every_get(request.double_puts, args.trace.sample_gets)?;
    window_request(&args.trace.windows, args.trace.sample_gets)?;
    let output = OutputFile::open_requested(args.trace.output.as_deref(), args.trace.force)?;
    Effective::read().require(&capabilities::TRACE)?;
    let mut child = Spawned::start(&args.command)?;
    let binary = spinner::while_running(&format!("reading {}", child.program().display()), || {
        GoBinary::open(child.program(), child.program())
    })?;
    let mut process = Process::spawned(child.pid(), child.program())?;
    let mut ends = Ends::forwarding(signals, process.watch()?);
    let plans = request.plan(&binary, |_| {})?;
    let (stop, last, written) = trace(
        &args.trace,
        output,
        plans,
        &mut ends,
        process,
        &binary,
        |process| {
            child.release()?;
            process.wait_for_exec(child.program())
        },
    )
    .await?;
    let exited = match stop {
        Stop::Target(Change::Exited(_)) => true,
        Stop::StoppedWaiting => false,
        // Detached, but the program runs on: its status is still pooltrace's.
        _ => match ends.wait_for_exit().await? {
            Some(ending) => {
                crate::status!("pooltrace: PID {} {ending}", child.pid());
                true
            }
            None => false,
        },
    };
    let status = if exited {
        child.wait()?
    } else {
        crate::status!("pooltrace: PID {} is still running", child.pid());
        128 + libc::SIGINT
    };
    // The program's status stands when only stdout's reader went away (`| head`).
    stdout_closed(written)?;
    Ok(gate(status, &last, &args.fail_on))
}

/// `run --fail-on`: the status that fails a CI job when the report finds what it names.
pub const FINDINGS_STATUS: i32 = 70;

/// The program's own status when it failed; otherwise [`FINDINGS_STATUS`] when the report
/// finds any of `fail_on`, each finding said on stderr.
fn gate(status: i32, last: &Report, fail_on: &[FailOn]) -> i32 {
    if status != 0 {
        return status;
    }
    let findings = report::gate::findings(last, fail_on);
    for finding in &findings {
        crate::status!("pooltrace: {finding}");
    }
    match findings.is_empty() {
        true => status,
        false => FINDINGS_STATUS,
    }
}

/// Attaches to `process`, calls `attached` (the probes are live), reports until `ends`,
/// `--duration` or a closed stdout stops it, then detaches and writes the final report, taken
/// at once, to `output` (or stdout). Why it stopped, and how writing the report went: `run`
/// must still wait for its program when that failed.
async fn trace(
    options: &TraceOptions,
    output: Option<OutputFile>,
    plans: Vec<PoolPlan>,
    ends: &mut Ends,
    process: Process,
    binary: &GoBinary,
    attached: impl FnOnce(&mut Process) -> Result<()>,
) -> Result<(Stop, Report, Result<()>)> {
    let attached = attach(options, binary, process, plans, ends, attached)?;
    crate::status_text!("{}", attached.summary(&options.maps));
    let mut trace = Trace {
        args: options,
        attached,
    };

    let stop = trace.run_until_stopped(ends).await?;
    crate::status!("{}", stop.message(trace.attached.process.pid()));
    let last = trace.closing_report()?;
    drop(trace);
    let written = write_report(options, output, &last);
    Ok((stop, last, written))
}

/// Attaches the probes `plans` need to `process` as `options` say, calls `attached` (the
/// probes are live), and arms the exec watch of `ends`: the start of every trace that
/// reports (`report`, `run`, `top`).
pub(crate) fn attach<'a>(
    options: &TraceOptions,
    binary: &'a GoBinary,
    mut process: Process,
    plans: Vec<PoolPlan>,
    ends: &mut Ends,
    attached: impl FnOnce(&mut Process) -> Result<()>,
) -> Result<Attached<'a>> {
    let windows = window_request(&options.windows, options.sample_gets)?
        .map(|request| request.planner(&plans))
        .transpose()?;
    let limits = limits(&options.maps, &options.filters)?;
    let probes = Probes::load(&process, binary, &plans, limits)?;
    let mut probes = Lifecycle::attach(probes, plans.len(), windows)?;
    if let Some(share) = options.sample_gets {
        probes.set_get_share(share)?;
    }
    attached(&mut process)?;
    ends.arm_exec(&process);
    let mut trace = Attached::new(binary, process, probes, plans);
    trace.budget = options.windows.budget;
    Ok(trace)
}

/// The final report, into the `--output` file or onto stdout.
pub(crate) fn write_report(
    options: &TraceOptions,
    output: Option<OutputFile>,
    last: &Report,
) -> Result<()> {
    let color = output.is_none() && std::io::stdout().is_terminal();
    let rendered = last
        .render(options.format, Style { color })
        .map_err(|source| Error::Render { source })?;
    match output {
        Some(mut file) => file.replace_contents(&rendered),
        None => write_stdout(&rendered),
    }
}

/// What the kernel side is loaded with: map sizes and filters, checked.
pub(crate) fn limits(maps: &MapSizes, filters: &Filters) -> Result<Limits> {
    let (size_min, size_max) = (
        filters.min_size.unwrap_or(0),
        filters.max_size.unwrap_or(u64::MAX),
    );
    if size_min > size_max {
        return Err(Error::Usage(format!(
            "--min-size {size_min} is larger than --max-size {size_max}: no object would be tracked"
        )));
    }
    Ok(Limits {
        max_objects: maps.max_objects,
        max_stacks: maps.max_stacks,
        stack_depth: filters.stack_depth,
        size_min,
        size_max,
    })
}

/// `--double-puts` with `--sample-gets`: an object handed out while Get is not probed would
/// still look given back, and its next Put like a second one.
pub(crate) fn double_puts_need_every_get(
    double_puts: bool,
    sample_gets: Option<f64>,
) -> Result<()> {
    match sample_gets {
        Some(fraction) if double_puts && fraction < 1.0 => Err(Error::Usage(
            "--double-puts needs every Get probed: it cannot go with --sample-gets".into(),
        )),
        _ => Ok(()),
    }
}

/// Tracing windows as the command line asks for them, checked before anything is opened.
pub(crate) struct WindowRequest {
    budget: Option<f64>,
    fixed: FixedTimes,
}

impl WindowRequest {
    /// The planner of the windows, for the pools planned.
    pub(crate) fn planner(&self, plans: &[PoolPlan]) -> Result<Planner> {
        Planner::new(self.budget, self.fixed, plans)
    }
}

/// `report`, `run` and `stream` trace in windows when given `--budget` or `--period`.
pub(crate) fn window_request(
    windows: &cli::Windows,
    sample_gets: Option<f64>,
) -> Result<Option<WindowRequest>> {
    let on = windows.budget.is_some() || windows.times.period.is_some();
    checked_windows(on, windows.budget, &windows.times, sample_gets)
}

/// The windows asked for when `on`; one line for what cannot go together.
pub(crate) fn checked_windows(
    on: bool,
    budget: Option<f64>,
    times: &cli::WindowTimes,
    sample_gets: Option<f64>,
) -> Result<Option<WindowRequest>> {
    if !on {
        return match times.window.is_some() || times.grace.is_some() || times.period.is_some() {
            true => Err(Error::Usage(
                "--window, --grace and --period shape tracing windows, which are off: give \
                 --budget (or, for report, run and stream, --period) and no --continuous"
                    .into(),
            )),
            false => Ok(None),
        };
    }
    if sample_gets.is_some_and(|fraction| fraction < 1.0) {
        return Err(Error::Usage(
            "--sample-gets cannot go with tracing windows: a window already probes Get for part \
             of the time; choose one"
                .into(),
        ));
    }
    let fixed = FixedTimes {
        window: times.window,
        grace: times.grace,
        period: times.period,
    };
    fixed.check()?;
    Ok(Some(WindowRequest { budget, fixed }))
}

/// One attached run of `report` or `run`; dropping it detaches the probes.
struct Trace<'a> {
    args: &'a TraceOptions,
    attached: Attached<'a>,
}

/// An attached process and what turns its kernel maps into reports, for every command that
/// reports (`report`, `run`, the agent); dropping it detaches the probes.
pub(crate) struct Attached<'a> {
    pub(crate) binary: &'a GoBinary,
    pub(crate) process: Process,
    pub(crate) probes: Lifecycle,
    pub(crate) plans: Vec<PoolPlan>,
    symbolizer: Symbolizer<'a>,
    history: History,
    /// Key specs the counters cast doubt on, said once each.
    doubts: report::Doubts,
    /// The pool instances' own books, read at each report.
    books: Books,
    started: Instant,
    /// The budget in percent of a core, for reports, when tracing windows keep to one.
    pub(crate) budget: Option<f64>,
}

/// How a report is cut from the maps: `report`'s options, or the agent's.
pub(crate) struct Cut {
    pub(crate) min_age: Duration,
    pub(crate) sort: SortBy,
    pub(crate) sample_gets: Option<f64>,
    pub(crate) top: usize,
}

impl<'a> Attached<'a> {
    pub(crate) fn new(
        binary: &'a GoBinary,
        process: Process,
        probes: Lifecycle,
        plans: Vec<PoolPlan>,
    ) -> Self {
        Self {
            binary,
            process,
            probes,
            plans,
            symbolizer: Symbolizer::new(binary),
            history: History::default(),
            doubts: report::Doubts::default(),
            books: Books::default(),
            started: Instant::now(),
            budget: None,
        }
    }

    /// Reads the kernel maps once, and the report built from what they held.
    pub(crate) fn report(&mut self, cut: &Cut) -> Result<(Snapshot, Report)> {
        self.build_report(cut, false)
    }

    /// The report a trace ends with, taken when it stops: it stands in for the last periodic
    /// one in each path's trend rather than adding a point less than an interval after it.
    pub(crate) fn closing_report(&mut self, cut: &Cut) -> Result<(Snapshot, Report)> {
        self.build_report(cut, true)
    }

    /// What was attached, said once tracing starts.
    pub(crate) fn summary(&self, maps: &MapSizes) -> String {
        let build = self
            .binary
            .build_info()
            .map(|b| format!(", {}", b.go_version))
            .unwrap_or_default();
        let symbols = match self.binary.symbol_source() {
            SymbolSource::Symtab => "symbols from .symtab",
            SymbolSource::Pclntab => "stripped: symbols from gopclntab",
        };
        let links = self.probes.probes().links();
        let mut text = format!(
            "pooltrace: attached {} uprobes to PID {} ({}{build}; {symbols})\n  kernel maps: {} for up to {} objects and {} stacks (--max-objects, --max-stacks)\n  links: {links}\n",
            self.probes.probes().attached(),
            self.process.pid(),
            self.process.exe_name(),
            crate::units::bytes(self.probes.probes().kernel_memory()),
            maps.max_objects,
            maps.max_stacks,
        );
        for plan in &self.plans {
            text += &plan_summary(plan);
        }
        text
    }

    fn build_report(&mut self, cut: &Cut, closing: bool) -> Result<(Snapshot, Report)> {
        let min_age_ns = u64::try_from(cut.min_age.as_nanos()).unwrap_or(u64::MAX);
        let snapshot = Snapshot::read(self.probes.probes(), self.plans.len(), min_age_ns)?;
        let mut report = Report::build(
            &snapshot,
            report::Context {
                pid: self.process.pid(),
                binary: self.process.exe_name(),
                build: self.binary.build_info(),
                plans: &self.plans,
                symbolizer: &mut InProcess {
                    symbolizer: &mut self.symbolizer,
                    process: &self.process,
                },
                history: &mut self.history,
                sort: cut.sort,
                elapsed_ms: self.started.elapsed().as_millis() as u64,
                min_age_ms: cut.min_age.as_millis() as u64,
                sample_gets: cut.sample_gets,
                top: cut.top,
                windows: self.probes.window_status().map(|status| {
                    report::WindowsReport::new(&status, self.probes.probed_seconds(), self.budget)
                }),
                graces: self.probes.graces(),
                closing,
            },
        );
        for doubt in self.doubts.new_in(&report) {
            crate::status!("{doubt}");
        }
        let seconds = report.elapsed_ms as f64 / 1000.0;
        let process = &self.process;
        let read_word = |addr| process.read_word(addr);
        (self.books).fill(&mut report, &snapshot, &self.plans, &read_word, seconds);
        Ok((snapshot, report))
    }
}

impl Trace<'_> {
    /// Prints the periodic tables until `ends` or `--duration` stops it.
    async fn run_until_stopped(&mut self, ends: &mut Ends) -> Result<Stop> {
        let deadline = self
            .args
            .duration
            .map(|d| tokio::time::Instant::from_std(self.attached.started + d));
        let period = match self.args.interval {
            interval if interval.is_zero() => Duration::from_secs(u64::MAX / 4),
            interval => interval,
        };
        let first = tokio::time::Instant::from_std(self.attached.started + period);
        let mut ticks = tokio::time::interval_at(first, period);
        loop {
            // Biased: a tick due with the deadline (a --duration that is a multiple of
            // --interval) prints its table first, so the final report amends the point of
            // the interval just ended, never the one before.
            tokio::select! {
                biased;
                stop = ends.next() => return stop,
                _ = ticks.tick() => {
                    // An interval shorter than the exec watch's own poll must not report
                    // the new program's silence as the old one's.
                    if let Some(stop) = ends.execed() {
                        return Ok(stop);
                    }
                    self.attached.process.refresh_mappings();
                    let report = self.report()?;
                    match self.args.format {
                        ReportFormat::Text => {
                            let style = Style { color: std::io::stdout().is_terminal() };
                            let table = report::render_interval(&report, style);
                            if stdout_closed(write_stdout(table.as_bytes()))? {
                                return Ok(Stop::StdoutClosed);
                            }
                        }
                        _ => crate::status_text!("{}", report::render_interval(&report, Style { color: std::io::stderr().is_terminal() })),
                    }
                }
                _ = sleep_until(deadline) => return Ok(Stop::DurationElapsed),
                _ = sleep_until(self.attached.probes.switch_at()) => self.attached.probes.switch()?,
            }
        }
    }

    fn report(&mut self) -> Result<Report> {
        Ok(self.attached.report(&self.cut())?.1)
    }

    fn closing_report(&mut self) -> Result<Report> {
        Ok(self.attached.closing_report(&self.cut())?.1)
    }

    fn cut(&self) -> Cut {
        Cut {
            min_age: self.args.min_age,
            sort: self.args.sort,
            sample_gets: self.args.sample_gets,
            top: self.args.top,
        }
    }
}

/// What the user asked to trace, from the command line and the pools file.
pub(crate) fn pool_request(args: &PoolArgs) -> Result<PoolRequest> {
    Ok(PoolRequest {
        entries: plan::named_entries(args.pools_file.as_deref(), &args.named.0)?,
        receiver: args.receiver,
        release_paths: !args.no_release_paths,
        double_puts: args.double_puts,
        sizes: args.sizes,
    })
}

pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
