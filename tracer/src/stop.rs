//! What ends a trace, `--duration` aside: a signal, the target's exit or exec, or for `run`,
//! its program's exit after the signals passed on to it; and the line said when it stops.

use crate::{
    error::Result,
    process::{signal_name, Change, Ending, Process, Watch},
    signals::{Received, Signals},
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

    pub(crate) fn forwarding(signals: Signals, watch: Watch) -> Self {
        Self {
            forwarder: Some(Forwarder::default()),
            ..Self::new(signals, watch)
        }
    }

    /// Arms the exec watch on the image `process` runs now.
    pub(crate) fn arm_exec(&mut self, process: &Process) {
        self.watch.arm_exec(process);
    }

    /// [`Ends::next`], or with `target` false a signal alone: what still ends `top` once
    /// its target has ended. Cancel-safe.
    pub(crate) async fn next_of(&mut self, target: bool) -> Result<Stop> {
        match target {
            true => self.next().await,
            false => Ok(Stop::Signalled(self.signals.recv().await?.signal)),
        }
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
    pub(crate) fn execed(&mut self) -> Option<Stop> {
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
    pub(crate) async fn wait_for_exit(&mut self) -> Result<Option<Ending>> {
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
