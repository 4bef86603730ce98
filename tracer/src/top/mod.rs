//! `pooltrace top`: a live view of one trace in the terminal, or of what an agent traces
//! (`remote`). The trace is `report`'s own (`session::attach`, `Attached`): the view is
//! built from the same snapshots at each `--interval`, so its numbers are the report's. On
//! quit it detaches and prints the final report as `report` would. `app` holds the state,
//! `view` draws it, `terminal` owns the terminal.

mod app;
mod remote;
mod terminal;
mod view;

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;

use app::{Action, App};
use terminal::{Input, Screen};

use crate::{
    cli::{TopArgs, TraceOptions},
    error::{Error, Result},
    output::OutputFile,
    report::Report,
    session::{self, prepare, sleep_until, Attached, Cut, Output},
    signals::Signals,
    stop::{Ends, Stop},
};

/// Paths kept per pool in the view, the likeliest leaks (the final report keeps `--top`).
const VIEW_PATHS: usize = 1000;

pub async fn top(args: TopArgs) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        return Err(Error::NoTerminal);
    }
    match &args.agent {
        Some(url) => remote(&args, url).await,
        None => local(&args).await,
    }
}

/// Whether colour may be used: not when `NO_COLOR` is set to anything but the empty string.
fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

async fn local(args: &TopArgs) -> Result<()> {
    let options = &args.trace;
    session::check(options)?;
    let pid = args
        .pid
        .ok_or(Error::Internal("clap requires --pid without --agent"))?;
    let target = prepare(
        pid,
        &options.pools,
        Output::new(options.output.as_deref(), options.force),
        true,
        |_| {},
    )?;
    let mut process = target.process;
    let mut ends = Ends::new(target.signals, process.watch()?);
    let mut attached = session::attach(
        options,
        &target.binary,
        process,
        target.plans,
        &mut ends,
        |_| Ok(()),
    )?;
    crate::status_text!("{}", attached.summary(&options.maps));

    let (inputs, mut keys) = mpsc::unbounded_channel();
    let source = format!("PID {pid}");
    let mut app = App::new(source, options.sort, interval_ms(options), colour());
    let screen = Screen::enter(inputs)?;
    let watched = watch(
        &mut app,
        screen,
        &mut attached,
        &mut ends,
        &mut keys,
        options,
    )
    .await;
    let (stop, last) = watched?;
    match stop {
        Some(stop) => crate::status!("{}", stop.message(pid)),
        None => crate::status!("pooltrace: quit, detaching"),
    }
    let last = match last {
        Some(last) => last,
        None => attached.closing_report(&cut(options))?.1,
    };
    drop(attached);
    session::write_report(options, target.output, &final_cut(last, options.top))
}

/// The loop of a local trace, until `q` or a signal: the screen is dropped (the terminal
/// restored) before it returns. Why it stopped, when not by a key, and the closing report
/// when the target's end already took it.
async fn watch(
    app: &mut App,
    mut screen: Screen,
    attached: &mut Attached<'_>,
    ends: &mut Ends,
    keys: &mut mpsc::UnboundedReceiver<Input>,
    options: &TraceOptions,
) -> Result<(Option<Stop>, Option<Report>)> {
    let mut ticks = ticks(options);
    let mut closing = None;
    screen.draw(|frame| view::draw(frame, app))?;
    loop {
        let tracing = app.ended.is_none();
        tokio::select! {
            biased;
            // Once the target ended, a hangup (the terminal closed) or SIGTERM still quits.
            stop = ends.next_of(tracing) => match stop? {
                Stop::Target(change) => {
                    let stop = Stop::Target(change);
                    closing = Some(end(app, attached, &stop, options)?);
                }
                stop => return Ok((Some(stop), closing)),
            },
            input = keys.recv() => if on_input(app, input) {
                return Ok((None, closing));
            },
            _ = ticks.tick(), if tracing => {
                if let Some(stop) = ends.execed() {
                    closing = Some(end(app, attached, &stop, options)?);
                } else {
                    attached.process.refresh_mappings();
                    app.update(attached.report(&cut(options))?.1);
                }
            }
            _ = sleep_until(attached.probes.switch_at()), if tracing => attached.probes.switch()?,
        }
        screen.draw(|frame| view::draw(frame, app))?;
    }
}

/// A key, a resize or a line said, taken in: whether it asks to quit.
fn on_input(app: &mut App, input: Option<Input>) -> bool {
    match input {
        Some(Input::Key(key)) => match app.on_key(key) {
            Action::Quit => return true,
            Action::Write => app.status = write_shown(app),
            Action::Nothing => {}
        },
        Some(Input::Said(line)) => app.status = line,
        Some(Input::Resize) | None => {}
    }
    false
}

/// The output of `task` once it finishes; never, when there is none.
async fn finished<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// The target exited or called exec: its closing report is taken now, shown, and kept
/// for the end.
fn end(
    app: &mut App,
    attached: &mut Attached,
    stop: &Stop,
    options: &TraceOptions,
) -> Result<Report> {
    let message = stop.message(attached.process.pid());
    // Said as report says it: in the status line now, on stderr once the view is gone.
    crate::status!("{message}");
    app.ended = Some(message.trim_start_matches("pooltrace: ").to_owned());
    let closing = attached.closing_report(&cut(options))?.1;
    app.paused = false;
    app.update(closing.clone());
    Ok(closing)
}

/// How the view's reports are cut: every path up to `VIEW_PATHS`, the rest as `report`.
fn cut(options: &TraceOptions) -> Cut {
    Cut {
        min_age: options.min_age,
        sort: options.sort,
        sample_gets: options.sample_gets,
        top: VIEW_PATHS,
    }
}

/// The final report keeps `--top` paths per pool, as `report`'s would.
fn final_cut(mut report: Report, top: usize) -> Report {
    for pool in &mut report.pools {
        pool.stacks_omitted += pool.stacks.len().saturating_sub(top);
        pool.stacks.truncate(top);
    }
    report
}

fn interval_ms(options: &TraceOptions) -> u64 {
    options.interval.max(Duration::from_millis(100)).as_millis() as u64
}

/// A tick every `--interval` (at least 100 ms), the first one interval from now: a report
/// taken as the probes go live would show only the Puts of objects taken before them.
fn ticks(options: &TraceOptions) -> tokio::time::Interval {
    let period = Duration::from_millis(interval_ms(options));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// `w`: the report shown, as JSON, into a new file of the current directory; what the
/// status line says of it.
fn write_shown(app: &App) -> String {
    let Some(report) = &app.shown else {
        return "no report yet to write".to_owned();
    };
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let path = PathBuf::from(format!("pooltrace-top-{}-{seconds}.json", report.pid));
    let written = OutputFile::open_requested(Some(&path), false).and_then(|file| match file {
        Some(mut file) => file.replace_contents((report.to_json() + "\n").as_bytes()),
        None => Err(Error::Internal("an output file was asked for")),
    });
    match written {
        Ok(()) => format!("wrote {}", path.display()),
        Err(error) => error.chain(),
    }
}

/// `top --agent`: the agent's reports, fetched at each `--interval`; nothing is attached.
async fn remote(args: &TopArgs, url: &str) -> Result<()> {
    let options = &args.trace;
    if !options.pools.named.0.is_empty() || options.pools.pools_file.is_some() {
        return Err(Error::Usage(
            "--agent shows the pools the agent traces: name pools to the agent, not to top".into(),
        ));
    }
    let mut signals = Signals::install()?;
    let output = OutputFile::open_requested(options.output.as_deref(), options.force)?;
    let agent = Arc::new(remote::Agent::new(url, &args.credentials)?);
    // The first fetch fails in one line, before the screen is taken.
    let first = agent.reports().await?;
    let (inputs, mut keys) = mpsc::unbounded_channel();
    let mut app = App::new(url.to_owned(), options.sort, interval_ms(options), colour());
    app.agent = true;
    app.offer(first);
    let mut screen = Screen::enter(inputs)?;
    let mut ticks = ticks(options);
    let mut fetching = None;
    let stop = loop {
        screen.draw(|frame| view::draw(frame, &mut app))?;
        tokio::select! {
            received = signals.recv() => break Some(Stop::Signalled(received?.signal)),
            input = keys.recv() => if on_input(&mut app, input) {
                break None;
            },
            // Fetched apart from the loop, so that keys are answered while an agent is slow.
            _ = ticks.tick(), if fetching.is_none() => {
                let agent = Arc::clone(&agent);
                fetching = Some(tokio::spawn(async move { agent.reports().await }));
            }
            fetched = finished(&mut fetching) => {
                fetching = None;
                match fetched {
                    Ok(Ok(reports)) => app.offer(reports),
                    Ok(Err(error)) => app.status = error.chain(),
                    Err(_) => app.status = "the fetch from the agent failed".to_owned(),
                }
            }
        }
    };
    drop(screen);
    if let Some(Stop::Signalled(signal)) = stop {
        crate::status!(
            "pooltrace: got {}, quitting",
            crate::process::signal_name(signal)
        );
    }
    match app.shown {
        Some(last) => session::write_report(options, output, &final_cut(last, options.top)),
        None => Ok(()),
    }
}
