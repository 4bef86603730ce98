//! One tracing session from attach to detach: resolve the pools, attach the probes, print
//! the periodic tables, and on a signal, `--duration`, the target's exit or exec, or a closed
//! stdout, the final report, into the `--output` file opened before attaching. `run` passes
//! signals on to its program, waits for it to exit, and judges `--fail-on`. The setup every
//! command shares (`prepare`, `limits`, the pools planned) and `Attached`, which turns an
//! attached process's maps into reports, serve `stream` and the agent too.

use std::{
    io::IsTerminal,
    path::Path,
    time::{Duration, Instant},
};

use tracer_common::MAX_POOLS;

use crate::{
    cli::{Filters, MapSizes, PoolArgs, ReportArgs, RunArgs, TraceOptions},
    error::{Error, Result},
    gobin::{GoBinary, SymbolSource},
    output::{stdout_closed, write_stdout, OutputFile},
    probes::{
        self, keyspec::Side, pools_file, KnownPools, Limits, PoolEntry, PoolPlan, PoolSpec, Probes,
    },
    process::{signal_name, Change, Ending, Process, Spawned, Watch},
    report::gate::FailOn,
    report::{self, spinner, History, Report, ReportFormat, SortBy, Style},
    signals::{Received, Signals},
    symbolize::{InProcess, Symbolizer},
    tracking::Snapshot,
};

/// Why tracing stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    Signalled(i32),
    /// `run`'s program did not exit after a signal was passed on, and Ctrl-C came again.
    StoppedWaiting,
    DurationElapsed,
    Target(Change),
    /// The reader of stdout closed the pipe (`| head`): nothing more can be shown there.
    StdoutClosed,
}

impl Stop {
    /// What pooltrace says on stderr when it stops, about the process `pid`.
    pub(crate) fn message(&self, pid: i32) -> String {
        match self {
            Stop::Signalled(libc::SIGINT) => "pooltrace: interrupted, detaching".to_owned(),
            Stop::Signalled(signal) => {
                format!("pooltrace: got {}, detaching", signal_name(*signal))
            }
            Stop::StoppedWaiting => {
                format!("pooltrace: interrupted again: detaching without waiting for PID {pid}")
            }
            Stop::DurationElapsed => "pooltrace: --duration reached, detaching".to_owned(),
            Stop::Target(Change::Exited(ending)) => format!("pooltrace: PID {pid} {ending}"),
            Stop::Target(Change::Execed(now_running)) => format!(
                "pooltrace: PID {pid} called exec: tracing stopped (now running {now_running})"
            ),
            Stop::StdoutClosed => "pooltrace: standard output closed, detaching".to_owned(),
        }
    }
}

/// What ends a trace, `--duration` aside: a signal, or the target's exit or exec.
pub(crate) struct Ends {
    signals: Signals,
    watch: Watch,
    /// For `run`: signals go on to the program, which decides when tracing ends.
    forwarder: Option<Forwarder>,
}

impl Ends {
    pub(crate) fn new(signals: Signals, watch: Watch) -> Self {
        Self {
            signals,
            watch,
            forwarder: None,
        }
    }

    fn forwarding(signals: Signals, watch: Watch) -> Self {
        Self {
            forwarder: Some(Forwarder::default()),
            ..Self::new(signals, watch)
        }
    }

    /// Arms the exec watch on the image `process` runs now.
    pub(crate) fn arm_exec(&mut self, process: &Process) {
        self.watch.arm_exec(process);
    }

    /// Waits for the next reason to stop. Cancel-safe: nothing is lost when another branch
    /// of a `select!` wins.
    pub(crate) async fn next(&mut self) -> Result<Stop> {
        loop {
            tokio::select! {
                received = self.signals.recv() => {
                    if let Some(stop) = self.on_signal(received?) {
                        return Ok(stop);
                    }
                }
                change = self.watch.changed() => return Ok(Stop::Target(change)),
            }
        }
    }

    /// Whether the process called exec (checked before each report, for short intervals).
    fn execed(&mut self) -> Option<Stop> {
        self.watch
            .execed()
            .map(|now| Stop::Target(Change::Execed(now)))
    }

    fn on_signal(&mut self, received: Received) -> Option<Stop> {
        match &mut self.forwarder {
            None => Some(Stop::Signalled(received.signal)),
            Some(forwarder) => {
                (!forwarder.pass(received, &self.watch)).then_some(Stop::StoppedWaiting)
            }
        }
    }

    /// `run`'s program's exit, once tracing has stopped; None if Ctrl-C ended the wait.
    async fn wait_for_exit(&mut self) -> Result<Option<Ending>> {
        loop {
            match self.next().await? {
                Stop::Target(Change::Exited(ending)) => return Ok(Some(ending)),
                Stop::StoppedWaiting => return Ok(None),
                _ => {}
            }
        }
    }
}

/// `run` passes SIGINT, SIGTERM and SIGHUP on to its program and waits for it to exit; a
/// Ctrl-C while it waits ends the wait.
#[derive(Default)]
struct Forwarder {
    waiting: bool,
}

impl Forwarder {
    /// Passes `received` on to the watched program; false for the Ctrl-C that ends the wait.
    fn pass(&mut self, received: Received, watch: &Watch) -> bool {
        if self.waiting && received.signal == libc::SIGINT {
            return false;
        }
        self.waiting = true;
        let (name, pid) = (signal_name(received.signal), watch.pid());
        let hint = "waiting for it to exit (Ctrl-C again stops waiting)";
        if received.from_terminal {
            crate::status!("pooltrace: PID {pid} got {name} from the terminal; {hint}");
        } else {
            match watch.send(received.signal) {
                Ok(()) => crate::status!("pooltrace: passed {name} to PID {pid}; {hint}"),
                Err(e) => crate::status!("pooltrace: cannot pass {name} to PID {pid}: {e}"),
            }
        }
        true
    }
}

pub async fn report(args: ReportArgs) -> Result<()> {
    let options = &args.trace;
    // Checked before anything is opened; used at attach.
    limits(&options.maps, &options.filters)?;
    double_puts_need_every_get(options.pools.double_puts, options.sample_gets)?;
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
    let named = named_pools(pools)?;
    let output = OutputFile::open_requested(output.path, output.force)?;
    if needs_privileges {
        probes::check_privileges()?;
    }
    let process = Process::open(pid)?;
    let binary = open_binary(&process)?;
    let plans = plan_pools(&named, &binary, adjust)?;
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
    let mut named = named_pools(&args.trace.pools)?;
    named.double_puts |= args.fail_on.contains(&FailOn::DoublePut);
    limits(&args.trace.maps, &args.trace.filters)?;
    double_puts_need_every_get(named.double_puts, args.trace.sample_gets)?;
    let output = OutputFile::open_requested(args.trace.output.as_deref(), args.trace.force)?;
    probes::check_privileges()?;
    let mut child = Spawned::start(&args.command)?;
    let binary = spinner::while_running(&format!("reading {}", child.program().display()), || {
        GoBinary::open(child.program(), child.program())
    })?;
    let mut process = Process::spawned(child.pid(), child.program())?;
    let mut ends = Ends::forwarding(signals, process.watch()?);
    let plans = plan_pools(&named, &binary, |_| {})?;
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
    mut process: Process,
    binary: &GoBinary,
    attached: impl FnOnce(&mut Process) -> Result<()>,
) -> Result<(Stop, Report, Result<()>)> {
    let probes = Probes::attach(
        &process,
        binary,
        &plans,
        limits(&options.maps, &options.filters)?,
    )?;
    attached(&mut process)?;
    ends.arm_exec(&process);
    let mut trace = Trace {
        args: options,
        attached: Attached::new(binary, process, probes, plans),
    };
    crate::status_text!("{}", trace.attach_summary());

    let stop = trace.run_until_stopped(ends).await?;
    crate::status!("{}", stop.message(trace.attached.process.pid()));
    let last = trace.report()?;
    drop(trace);
    let written = write_report(options, output, &last);
    Ok((stop, last, written))
}

/// The final report, into the `--output` file or onto stdout.
fn write_report(options: &TraceOptions, output: Option<OutputFile>, last: &Report) -> Result<()> {
    let color = output.is_none() && std::io::stdout().is_terminal();
    let rendered = last
        .render(options.format, Style { color })
        .map_err(|source| Error::Render { source })?;
    match output {
        Some(mut file) => file.replace_contents(&rendered),
        None => write_stdout(&rendered),
    }
}

/// `--sample-gets` cycles Get's probes over this period.
const SAMPLE_CYCLE: Duration = Duration::from_millis(500);

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
    pub(crate) probes: Probes,
    pub(crate) plans: Vec<PoolPlan>,
    symbolizer: Symbolizer<'a>,
    history: History,
    started: Instant,
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
        probes: Probes,
        plans: Vec<PoolPlan>,
    ) -> Self {
        Self {
            binary,
            process,
            probes,
            plans,
            symbolizer: Symbolizer::new(binary),
            history: History::default(),
            started: Instant::now(),
        }
    }

    /// Reads the kernel maps once, and the report built from what they held.
    pub(crate) fn report(&mut self, cut: &Cut) -> Result<(Snapshot, Report)> {
        let min_age_ns = u64::try_from(cut.min_age.as_nanos()).unwrap_or(u64::MAX);
        let snapshot = Snapshot::read(&self.probes, self.plans.len(), min_age_ns)?;
        let report = Report::build(
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
            },
        );
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
        let sampling = self.args.sample_gets.filter(|&fraction| fraction < 1.0);
        let mut gets_probed = true;
        let phase = |probed: bool, fraction: f64| {
            let share = if probed { fraction } else { 1.0 - fraction };
            tokio::time::Instant::now() + SAMPLE_CYCLE.mul_f64(share)
        };
        let mut toggle_at = sampling.map(|fraction| phase(true, fraction));
        loop {
            tokio::select! {
                stop = ends.next() => return stop,
                _ = sleep_until(deadline) => return Ok(Stop::DurationElapsed),
                _ = sleep_until(toggle_at) => {
                    gets_probed = !gets_probed;
                    self.attached.probes.set_gets_probed(gets_probed)?;
                    toggle_at = sampling.map(|fraction| phase(gets_probed, fraction));
                }
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
            }
        }
    }

    fn report(&mut self) -> Result<Report> {
        let cut = Cut {
            min_age: self.args.min_age,
            sort: self.args.sort,
            sample_gets: self.args.sample_gets,
            top: self.args.top,
        };
        Ok(self.attached.report(&cut)?.1)
    }

    fn attach_summary(&self) -> String {
        let build = self
            .attached
            .binary
            .build_info()
            .map(|b| format!(", {}", b.go_version))
            .unwrap_or_default();
        let symbols = match self.attached.binary.symbol_source() {
            SymbolSource::Symtab => "symbols from .symtab",
            SymbolSource::Pclntab => "stripped: symbols from gopclntab",
        };
        let links = self.attached.probes.links();
        let mut text = format!(
            "pooltrace: attached {} uprobes to PID {} ({}{build}; {symbols})\n  kernel maps: {} for up to {} objects and {} stacks (--max-objects, --max-stacks)\n  links: {links}\n",
            self.attached.probes.attached(),
            self.attached.process.pid(),
            self.attached.process.exe_name(),
            crate::units::bytes(self.attached.probes.kernel_memory()),
            self.args.maps.max_objects,
            self.args.maps.max_stacks,
        );
        for plan in &self.attached.plans {
            text += &plan_summary(plan);
        }
        text
    }
}

pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The pools the user named, in order: the pools file's, then the command line's.
pub(crate) struct NamedPools {
    pub(crate) entries: Vec<PoolEntry>,
    receiver: Option<u64>,
    release_paths: bool,
    /// `--double-puts`, or `run --fail-on double-put`.
    pub(crate) double_puts: bool,
}

/// Reads the pools file and checks that some pool is named, before anything is opened.
pub(crate) fn named_pools(args: &PoolArgs) -> Result<NamedPools> {
    let mut entries = match &args.pools_file {
        Some(path) => pools_file::read(path)?,
        None => Vec::new(),
    };
    entries.extend(args.named.0.iter().cloned());
    if entries.is_empty() {
        return Err(Error::Usage(
            "name a pool: --get FUNC --put FUNC, --pool PRESET or --pools-file FILE".into(),
        ));
    }
    Ok(NamedPools {
        entries,
        receiver: args.receiver,
        release_paths: !args.no_release_paths,
        double_puts: args.double_puts,
    })
}

impl NamedPools {
    /// The pools `entry` stands for in `binary`: a preset, those it finds there.
    fn specs(&self, entry: &PoolEntry, binary: &GoBinary) -> Result<Vec<PoolSpec>> {
        let mut specs = match entry {
            PoolEntry::Preset(preset) => preset.pools(binary)?,
            PoolEntry::Custom(custom) => vec![custom.spec()?],
        };
        for spec in &mut specs {
            spec.receiver = self.receiver;
            spec.release_paths = self.release_paths;
            spec.double_puts = self.double_puts;
        }
        Ok(specs)
    }
}

/// The named pools, planned against `binary` (with `adjust` applied to each spec), with their
/// inlining warnings printed. Fails before anything is attached when there are more pools
/// than the kernel side counts, or one pool is named twice (its objects would be counted
/// twice).
pub(crate) fn plan_pools(
    named: &NamedPools,
    binary: &GoBinary,
    adjust: impl Fn(&mut PoolSpec),
) -> Result<Vec<PoolPlan>> {
    let mut specs = Vec::new();
    for entry in &named.entries {
        specs.extend(named.specs(entry, binary)?);
    }
    plan_specs(specs, binary, adjust)
}

/// For the agent, which serves one pools file to many programs: the named pools that
/// `binary` has, planned, and why each of the others is not there. Fails only when it has
/// none of them.
pub(crate) fn plan_present_pools(
    named: &NamedPools,
    binary: &GoBinary,
) -> Result<(Vec<PoolPlan>, Vec<Error>)> {
    let (mut specs, mut absent) = (Vec::new(), Vec::new());
    for entry in &named.entries {
        let present = named.specs(entry, binary).and_then(|specs| {
            for spec in &specs {
                binary.resolve(&spec.get)?;
                binary.resolve(&spec.put)?;
            }
            Ok(specs)
        });
        match present {
            Ok(found) => specs.extend(found),
            Err(error) => absent.push(error),
        }
    }
    if specs.is_empty() {
        return Err(absent
            .into_iter()
            .next()
            .unwrap_or(Error::Internal("no pool named")));
    }
    Ok((plan_specs(specs, binary, |_| {})?, absent))
}

fn plan_specs(
    mut specs: Vec<PoolSpec>,
    binary: &GoBinary,
    adjust: impl Fn(&mut PoolSpec),
) -> Result<Vec<PoolPlan>> {
    if specs.len() > MAX_POOLS as usize {
        return Err(Error::TooManyPools(specs.len()));
    }
    specs.iter_mut().for_each(adjust);
    let known = KnownPools::new(binary, &specs);
    let plans = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| PoolPlan::new(binary, i as u32, spec, &known))
        .collect::<Result<Vec<_>>>()?;
    refuse_duplicates(&plans)?;
    print_inlining(&plans);
    Ok(plans)
}

/// Two pools that probe the same Get or the same Put would count each call twice.
fn refuse_duplicates(plans: &[PoolPlan]) -> Result<()> {
    let probed = |p: &PoolPlan| [p.get.function.addr, p.put.function.addr];
    for (second, plan) in plans.iter().enumerate() {
        let Some(first) = plans[..second]
            .iter()
            .position(|earlier| probed(earlier).iter().any(|a| probed(plan).contains(a)))
        else {
            continue;
        };
        let what = match plans[first].get.function.addr == plan.get.function.addr {
            true => &plan.get.function.name,
            false => &plan.put.function.name,
        };
        return Err(Error::DuplicatePool {
            what: what.clone(),
            first: first + 1,
            second: second + 1,
        });
    }
    Ok(())
}

/// A Get or Put inlined into a caller runs there without a call of its own: say where it is
/// traced on the call to the pool underneath, and warn of each copy where it is not.
fn print_inlining(plans: &[PoolPlan]) {
    for inlined in plans
        .iter()
        .flat_map(|p| [&p.inlined_gets, &p.inlined_puts])
    {
        let (traced, unseen) = probes::inlined::messages(inlined);
        if let Some(traced) = traced {
            crate::status!("pooltrace: {traced}");
        }
        for warning in unseen {
            crate::status!("pooltrace: warning: {warning}");
        }
    }
}

/// Where one pool's probes sit, e.g. "Get main.(*P).Get at its 3 RETs (+0xfa, ...)".
fn plan_summary(plan: &PoolPlan) -> String {
    let rets: Vec<String> = plan
        .get_sites
        .iter()
        .map(|s| format!("+{:#x}", s.addr - plan.get.function.addr))
        .collect();
    let site = &plan.put_site;
    let mut text = format!(
        "  Get {} at its {} RET{} ({})\n  Put {} at +{:#x} ({}, {})\n",
        plan.get.function.name,
        rets.len(),
        if rets.len() == 1 { "" } else { "s" },
        rets.join(", "),
        plan.put.function.name,
        site.addr - plan.put.function.addr,
        site.instruction,
        emulation(site.emulated),
    );
    for inlined in plan
        .inlined_gets
        .sites
        .iter()
        .chain(&plan.inlined_puts.sites)
    {
        let (what, at) = match inlined.side {
            Side::Get => ("Get", "after"),
            Side::Put => ("Put", "at"),
        };
        text += &format!(
            "  {what} inlined into {}: {at} its call to {} at {}+{:#x} ({}, {})\n",
            inlined.call_site,
            inlined.callee,
            inlined.host.name,
            inlined.site.addr - inlined.host.addr,
            inlined.site.instruction,
            emulation(inlined.site.emulated),
        );
    }
    text
}

fn emulation(emulated: bool) -> &'static str {
    if emulated {
        "emulated"
    } else {
        "single-stepped"
    }
}
