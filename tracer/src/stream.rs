//! `pooltrace stream`: every Get and Put as it happens, read from the kernel's ring buffer.
//! The probes only append to the ring; printing happens here, decoupled from the target, and
//! whatever the ring cannot hold is counted and reported, never silently lost.

use std::{
    collections::HashMap,
    fmt::Write,
    io::IsTerminal,
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;
use tracer_common::{StreamEvent, EVENT_DOUBLE_PUT, EVENT_GET};

use crate::{
    cli::{MapSizes, StreamArgs},
    error::{Error, Result},
    output::{stdout_closed, write_stdout, OutputFile},
    probes::{keyspec::Side, Lifecycle, PoolPlan, Probes},
    process::Process,
    session::{limits, prepare, sleep_until, window_request, Output},
    stop::{Ends, Stop},
    symbolize::{AddressKind, Symbolizer},
    tracking::{self, monotonic_ns, Events, StackReader},
    units,
};

pub async fn stream(args: StreamArgs) -> Result<()> {
    let limits = limits(&MapSizes::DEFAULT, &args.filters)?;
    let windows = window_request(&args.windows, None)?;
    let target = prepare(
        args.pid,
        &args.pools,
        Output::new(args.output.as_deref(), args.force),
        true,
        |spec| {
            spec.stream = true;
            spec.release_paths = false;
        },
    )?;
    let (mut process, binary, plans, mut output) =
        (target.process, target.binary, target.plans, target.output);
    let planner = windows.map(|w| w.planner(&plans)).transpose()?;
    let probes = Probes::load(&process, &binary, &plans, limits)?;
    let lifecycle = Lifecycle::attach(probes, plans.len(), planner)?;
    let ring = Events::take(lifecycle.probes())?;
    // SAFETY: the AsyncFd owns the ring buffer and deregisters it before it is closed; the
    // ring's descriptor stays the same for as long as `Events` owns it.
    let mut events = unsafe { AsyncFd::register(ring) }.map_err(|e| Error::Poll {
        source: e.into_parts().1,
    })?;
    let mut ends = Ends::new(target.signals, process.watch()?);
    ends.arm_exec(&process);
    process.refresh_mappings();
    if let Some(file) = &mut output {
        file.begin()?;
    }
    crate::status!(
        "pooltrace: streaming {} pool(s) of PID {} ({}); Ctrl-C stops",
        plans.len(),
        process.pid(),
        process.exe_name()
    );
    let mut printer = Printer {
        args: &args,
        plans: &plans,
        process: &process,
        lifecycle,
        symbolizer: Symbolizer::new(&binary),
        started_ns: monotonic_ns(),
        frames: HashMap::new(),
        output,
        pending: String::new(),
        shown: 0,
        lost_reported: 0,
    };

    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::from_std(Instant::now() + d));
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let stop = loop {
        tokio::select! {
            stop = ends.next() => break stop?,
            _ = sleep_until(deadline) => break Stop::DurationElapsed,
            _ = ticks.tick() => printer.report_losses()?,
            _ = sleep_until(printer.lifecycle.switch_at()) => printer.lifecycle.switch()?,
            ready = events.readable_mut() => {
                let mut ready = ready.map_err(|source| Error::Poll { source })?;
                let drained = printer.drain(ready.get_inner_mut());
                ready.clear_ready();
                if stdout_closed(drained)? {
                    break Stop::StdoutClosed;
                }
            }
        }
    };
    let stop = match stop {
        Stop::StdoutClosed => stop,
        _ if stdout_closed(printer.drain(events.get_mut()))? => Stop::StdoutClosed,
        _ => stop,
    };
    crate::status!("{}", stop.message(process.pid()));
    printer.report_losses()?;
    if let Some(file) = &mut printer.output {
        file.finish()?;
    }
    crate::status!(
        "pooltrace: {} events shown, {} lost",
        printer.shown,
        printer.lost_reported
    );
    Ok(())
}

struct Printer<'a, 'b> {
    args: &'a StreamArgs,
    plans: &'a [PoolPlan],
    process: &'a Process,
    /// The probes, switched here when tracing windows are in force.
    lifecycle: Lifecycle,
    symbolizer: Symbolizer<'b>,
    started_ns: u64,
    /// Rendered first frames, by (stack, caller): a path repeats, its symbols need not.
    frames: HashMap<(u64, u64), String>,
    /// The `--output` file; stdout without one.
    output: Option<OutputFile>,
    /// Event lines not yet written: one write per line would cost a system call per event.
    pending: String,
    shown: u64,
    lost_reported: u64,
}

/// Lines gathered before they are written, when a drain has not ended sooner.
const PENDING_LIMIT: usize = 64 * 1024;

impl Printer<'_, '_> {
    /// Prints every event in the ring, then writes out what is pending.
    fn drain(&mut self, events: &mut Events) -> Result<()> {
        while let Some(event) = events.next_event() {
            self.print(&event)?;
        }
        self.write_pending()
    }

    fn write_pending(&mut self) -> Result<()> {
        let bytes = self.pending.as_bytes();
        let written = match &mut self.output {
            Some(file) => file.append(bytes),
            None => write_stdout(bytes),
        };
        self.pending.clear();
        written
    }

    fn print(&mut self, event: &StreamEvent) -> Result<()> {
        let is_get = event.kind == EVENT_GET;
        if let Some(min_age) = self.args.min_age {
            if is_get || (event.age_ns as u128) < min_age.as_nanos() {
                return Ok(());
            }
        }
        let frames = self.first_frames(event);
        if self
            .args
            .grep
            .as_ref()
            .is_some_and(|needle| !frames.contains(needle.as_str()))
        {
            return Ok(());
        }
        let time = event.time_ns.saturating_sub(self.started_ns) as f64 / 1e9;
        let pool = self
            .plans
            .get(event.pool as usize)
            .map_or("?", |p| p.get.requested.as_str());
        let (kind, detail) = match (event.kind, event.age_ns) {
            (EVENT_GET, _) if event.size > 0 => ("get", format!("size={}", event.size)),
            (EVENT_GET, _) => ("get", String::new()),
            (EVENT_DOUBLE_PUT, _) => ("double-put", "already back in the pool".to_owned()),
            (_, u64::MAX) => ("put", "age=? (taken before attach)".to_owned()),
            (_, age) => ("put", format!("age={}", units::nanos(age))),
        };
        let _ = writeln!(
            self.pending,
            "{time:>11.6} {kind} g={:#x} obj={:#x} {detail:<12} {frames}  [{pool}]",
            event.goroutine, event.object,
        );
        self.shown += 1;
        if self.pending.len() >= PENDING_LIMIT {
            self.write_pending()?;
        }
        Ok(())
    }

    /// The caller, then the next frames out, e.g. `main.leakyHandler main.go:124 < main.round ...`.
    fn first_frames(&mut self, event: &StreamEvent) -> String {
        let (stack, caller) = (event.stack, event.caller);
        if let Some(text) = self.frames.get(&(stack, caller)) {
            return text.clone();
        }
        // A stack that cannot be read shows only the caller, as one not captured does.
        let walked = StackReader::frames_of(self.lifecycle.probes(), stack);
        let mut addresses = vec![caller];
        addresses.extend(walked.iter().skip(1).filter(|&&a| a != caller));
        // A Put inside an inlined copy of Put sends its own site, the call instruction, as the
        // caller: it is where execution is, not a return address (which is looked up a byte
        // earlier). A Get's site there follows its call, as a return address does.
        let caller_kind = match self.in_caller_put(event.pool, caller) {
            true => AddressKind::Executing,
            false => AddressKind::ReturnAddress,
        };
        let text = addresses
            .iter()
            .enumerate()
            .filter(|&(_, &a)| a != 0)
            .flat_map(|(i, &a)| {
                let kind = if i == 0 {
                    caller_kind
                } else {
                    AddressKind::ReturnAddress
                };
                self.symbolizer.frames(self.process, a, kind)
            })
            .take(self.args.frames)
            .map(
                |f| match (f.file.as_deref().and_then(|p| p.rsplit('/').next()), f.line) {
                    (Some(file), Some(line)) => format!("{} {file}:{line}", f.function),
                    _ => f.function,
                },
            )
            .collect::<Vec<_>>()
            .join(" < ");
        self.frames.insert((stack, caller), text.clone());
        text
    }

    /// Whether `address` is a probe site inside an inlined copy of pool `pool`'s Put.
    fn in_caller_put(&self, pool: u32, address: u64) -> bool {
        let Some(plan) = self.plans.get(pool as usize) else {
            return false;
        };
        self.symbolizer
            .link_address(self.process, address)
            .and_then(|vaddr| plan.in_caller_site(vaddr))
            == Some(Side::Put)
    }

    /// Says, once a second at most, how many events the ring buffer could not hold.
    fn report_losses(&mut self) -> Result<()> {
        let counters = tracking::counters(self.lifecycle.probes(), self.plans.len())?;
        let lost: u64 = counters.iter().map(|c| c.stream_lost).sum();
        if lost > self.lost_reported {
            let style = std::io::stderr().is_terminal();
            let text = format!(
                "pooltrace: {} events lost: the ring buffer was full",
                lost - self.lost_reported
            );
            crate::status!(
                "{}",
                if style {
                    format!("\x1b[33m{text}\x1b[0m")
                } else {
                    text
                }
            );
            self.lost_reported = lost;
        }
        Ok(())
    }
}
