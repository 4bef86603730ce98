//! One tracing session from attach to detach: resolve the pools, attach the probes, print
//! the periodic tables, and on Ctrl-C, `--duration` or the target's exit, the final report.

use std::{
    fs,
    io::{IsTerminal, Write},
    os::fd::OwnedFd,
    path::Path,
    time::{Duration, Instant},
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, Signal, SignalKind},
};
use tracer_common::MAX_POOLS;

use crate::{
    cli::{PoolArgs, ReportArgs, RunArgs, TraceOptions},
    error::{Error, Result},
    gobin::{GoBinary, SymbolSource},
    probes::{self, keyspec::Side, KnownPools, Limits, PoolPlan, PoolSpec, Probes},
    process::{Process, Spawned},
    report::{self, spinner, History, Report, ReportFormat, Style},
    symbolize::Symbolizer,
    tracking::Snapshot,
};

/// Why tracing stopped.
enum Stop {
    Interrupted,
    DurationElapsed,
    TargetExited,
}

/// Ctrl-C and SIGTERM, caught from the start so that no signal kills a run before it has
/// detached and reported.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self> {
        let install =
            |kind| signal(kind).map_err(|e| Error::Usage(format!("cannot handle signals: {e}")));
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }

    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

pub async fn report(args: ReportArgs) -> Result<()> {
    let mut signals = Signals::install()?;
    check_pool_args(&args.trace.pools)?;
    if !args.dry_run {
        probes::check_privileges()?;
    }
    let process = Process::open(args.pid)?;
    let binary = open_binary(&process)?;
    let plans = plan_pools(&args.trace.pools, &binary, |_| {})?;
    if args.dry_run {
        return write_stdout((probes::sites_json(&binary, &plans) + "\n").as_bytes());
    }
    trace(&args.trace, plans, &mut signals, process, &binary, |_| {
        Ok(())
    })
    .await
}

/// The traced executable, with a spinner while a large one's tables are read.
pub(crate) fn open_binary(process: &Process) -> Result<GoBinary> {
    spinner::while_running(&format!("reading {}", process.exe_name()), || {
        GoBinary::open(&process.exe_path(), Path::new(process.exe_name()))
    })
}

/// `pooltrace run`: starts the program held at the door, attaches, lets it in, and reports
/// when it exits; returns its exit status.
pub async fn run(args: RunArgs) -> Result<i32> {
    let mut signals = Signals::install()?;
    check_pool_args(&args.trace.pools)?;
    probes::check_privileges()?;
    let mut child = Spawned::start(&args.command)?;
    let binary = spinner::while_running(&format!("reading {}", child.program().display()), || {
        GoBinary::open(child.program(), child.program())
    })?;
    let process = Process::spawned(child.pid(), child.program())?;
    let plans = plan_pools(&args.trace.pools, &binary, |_| {})?;
    trace(
        &args.trace,
        plans,
        &mut signals,
        process,
        &binary,
        |process| {
            child.release()?;
            process.wait_for_exec(child.program())
        },
    )
    .await?;
    child.wait()
}

/// Attaches to `process`, calls `attached` (the probes are live), reports until a signal,
/// `--duration` or the process's exit, then writes the final report and detaches.
async fn trace(
    options: &TraceOptions,
    plans: Vec<PoolPlan>,
    signals: &mut Signals,
    mut process: Process,
    binary: &GoBinary,
    attached: impl FnOnce(&mut Process) -> Result<()>,
) -> Result<()> {
    let limits = Limits {
        max_objects: options.max_objects,
        max_stacks: options.max_stacks,
    };
    let probes = Probes::attach(&process, binary, &plans, limits)?;
    let exit = process.exit_watch()?;
    attached(&mut process)?;
    let mut trace = Trace {
        args: options,
        binary,
        process,
        probes,
        plans,
        symbolizer: Symbolizer::new(binary),
        history: History::default(),
        started: Instant::now(),
    };
    eprint!("{}", trace.attach_summary());

    match trace.run_until_stopped(signals, &exit).await? {
        Stop::Interrupted => eprintln!("pooltrace: interrupted, detaching"),
        Stop::DurationElapsed => eprintln!("pooltrace: --duration reached, detaching"),
        Stop::TargetExited => eprintln!("pooltrace: PID {} exited", trace.process.pid()),
    }
    let last = trace.report()?;
    drop(trace);
    let color = options.output.is_none() && std::io::stdout().is_terminal();
    let rendered = last
        .render(options.format, Style { color })
        .map_err(|e| Error::Usage(format!("cannot render the report: {e}")))?;
    match &options.output {
        Some(path) => fs::write(path, rendered).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        }),
        None => write_stdout(&rendered),
    }
}

/// `--sample-gets` cycles Get's probes over this period.
const SAMPLE_CYCLE: Duration = Duration::from_millis(500);

/// One attached run; dropping it detaches the probes.
struct Trace<'a> {
    args: &'a TraceOptions,
    binary: &'a GoBinary,
    process: Process,
    probes: Probes,
    plans: Vec<PoolPlan>,
    symbolizer: Symbolizer<'a>,
    history: History,
    started: Instant,
}

impl Trace<'_> {
    /// Prints the periodic tables until a signal, `--duration` or the target's exit.
    async fn run_until_stopped(
        &mut self,
        signals: &mut Signals,
        exit: &AsyncFd<OwnedFd>,
    ) -> Result<Stop> {
        let deadline = self
            .args
            .duration
            .map(|d| tokio::time::Instant::from_std(self.started + d));
        let period = match self.args.interval {
            interval if interval.is_zero() => Duration::from_secs(u64::MAX / 4),
            interval => interval,
        };
        let first = tokio::time::Instant::from_std(self.started + period);
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
                _ = signals.recv() => return Ok(Stop::Interrupted),
                _ = exit.readable() => return Ok(Stop::TargetExited),
                _ = sleep_until(deadline) => return Ok(Stop::DurationElapsed),
                _ = sleep_until(toggle_at) => {
                    gets_probed = !gets_probed;
                    self.probes.set_gets_probed(gets_probed)?;
                    toggle_at = sampling.map(|fraction| phase(gets_probed, fraction));
                }
                _ = ticks.tick() => {
                    self.process.refresh_mappings();
                    let report = self.report()?;
                    match self.args.format {
                        ReportFormat::Text => {
                            let style = Style { color: std::io::stdout().is_terminal() };
                            write_stdout(report::render_interval(&report, style).as_bytes())?
                        }
                        _ => eprint!("{}", report::render_interval(&report, Style { color: std::io::stderr().is_terminal() })),
                    }
                }
            }
        }
    }

    fn report(&mut self) -> Result<Report> {
        let min_age_ns = u64::try_from(self.args.min_age.as_nanos()).unwrap_or(u64::MAX);
        let snapshot = Snapshot::read(self.probes.ebpf(), self.plans.len(), min_age_ns)?;
        Ok(Report::build(
            &snapshot,
            report::Context {
                process: &self.process,
                build: self.binary.build_info(),
                plans: &self.plans,
                symbolizer: &mut self.symbolizer,
                ebpf: self.probes.ebpf(),
                history: &mut self.history,
                sort: self.args.sort,
                elapsed_ms: self.started.elapsed().as_millis() as u64,
                min_age_ms: self.args.min_age.as_millis() as u64,
                sample_gets: self.args.sample_gets,
                top: self.args.top,
            },
        ))
    }

    fn attach_summary(&self) -> String {
        let build = self
            .binary
            .build_info()
            .map(|b| format!(", {}", b.go_version))
            .unwrap_or_default();
        let symbols = match self.binary.symbol_source() {
            SymbolSource::Symtab => "symbols from .symtab",
            SymbolSource::Pclntab => "stripped: symbols from gopclntab",
        };
        let mut text = format!(
            "pooltrace: attached {} uprobes to PID {} ({}{build}; {symbols})\n  kernel maps: {} for up to {} objects and {} stacks (--max-objects, --max-stacks)\n",
            self.probes.attached(),
            self.process.pid(),
            self.process.exe_name(),
            crate::report::human_bytes(self.probes.kernel_memory()),
            self.args.max_objects,
            self.args.max_stacks,
        );
        for plan in &self.plans {
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

/// Mistakes in naming the pools, caught before anything is opened.
pub(crate) fn check_pool_args(args: &PoolArgs) -> Result<()> {
    let overrides = args.get_key.is_some() || args.get_size.is_some() || args.put_key.is_some();
    if args.get.is_none() && overrides {
        return Err(Error::Usage(
            "--get-key, --get-size and --put-key apply to --get/--put".into(),
        ));
    }
    if args.get.is_none() && args.presets.is_empty() {
        return Err(Error::Usage(
            "name a pool: --get FUNC --put FUNC, or --pool PRESET".into(),
        ));
    }
    Ok(())
}

/// The pools to trace: the presets' pools, then the one named by --get/--put.
pub(crate) fn pool_specs(args: &PoolArgs, binary: &GoBinary) -> Result<Vec<PoolSpec>> {
    let mut specs = Vec::new();
    for preset in &args.presets {
        specs.extend(preset.pools(binary)?);
    }
    if let (Some(get), Some(put)) = (&args.get, &args.put) {
        let spec = |text: &Option<String>, side, what, allow_none| {
            probes::parse_override(text.as_deref(), side, what, allow_none)
        };
        specs.push(PoolSpec {
            get: get.clone(),
            put: put.clone(),
            object: args.object,
            get_key: spec(&args.get_key, Side::Get, "--get-key", false)?,
            get_size: spec(&args.get_size, Side::Get, "--get-size", true)?,
            put_key: spec(&args.put_key, Side::Put, "--put-key", false)?,
            receiver: None,
            release_paths: true,
            stream: false,
        });
    }
    for spec in &mut specs {
        spec.receiver = args.receiver;
        spec.release_paths = !args.no_release_paths;
    }
    Ok(specs)
}

/// The pools named by `args`, planned against `binary` (with `adjust` applied to each spec),
/// with their inlining warnings printed. Fails before anything is attached when there are
/// more pools than the kernel side counts.
pub(crate) fn plan_pools(
    args: &PoolArgs,
    binary: &GoBinary,
    adjust: impl Fn(&mut PoolSpec),
) -> Result<Vec<PoolPlan>> {
    let mut specs = pool_specs(args, binary)?;
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
    print_inlining(&plans);
    Ok(plans)
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
            eprintln!("pooltrace: {traced}");
        }
        for warning in unseen {
            eprintln!("pooltrace: warning: {warning}");
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

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is the reader's choice, not an error worth a message.
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
    Ok(())
}
