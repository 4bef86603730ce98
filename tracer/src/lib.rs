//! pooltrace: finds object-pool leaks in running Go programs.
//!
//! The library's public surface is what the `pooltrace` binary and the integration tests use:
//! [`cli`], [`run`], [`Error`] and [`gobin`]'s reader of Go binaries. The pieces, one module
//! per concern:
//! - [`gobin`] reads Go binaries (ELF layout, symbols, generic shape functions);
//! - `probes` plans what to probe (`probes::plan`), and attaches, switches and detaches the
//!   eBPF programs over one trace (`probes::lifecycle`);
//! - `tracking` reads what the kernel side recorded; `books` reads a pool instance's own
//!   count of what it lends from the process's memory; `units` writes sizes and durations
//!   for people;
//! - `symbolize` turns addresses into Go frames;
//! - `report` renders text and JSON, and judges `run --fail-on`; `list` shows the pools a
//!   binary has; `diff` compares two JSON reports;
//! - `output` writes results to stdout or the `--output` file, safely; `diagnostics` says
//!   what pooltrace and its kernel side could not do (`--debug`, `RUST_LOG`), rate-limited;
//! - `process` knows the traced process and watches its exit and exec; `signals` catches
//!   the signals that stop a trace, and `stop` says what ended one; `session` runs one trace
//!   from the command line to its final report; `stream` prints every event as it happens;
//!   `top` is a live view of one trace, or of an agent's, in the terminal;
//! - `agent` traces every matching process for as long as it runs and serves the results
//!   to Prometheus and pprof scrapers.

#![deny(missing_docs)]

mod agent;
mod books;
mod capabilities;
pub mod cli;
mod diagnostics;
mod diff;
pub mod error;
pub mod gobin;
mod list;
mod output;
mod probes;
mod process;
mod report;
mod session;
mod signals;
mod stop;
mod stream;
mod symbolize;
mod top;
mod tracking;
mod units;

pub use error::{Error, Result};

/// Runs one parsed command line; the exit status pooltrace should end with.
pub fn run(cli: cli::Cli) -> Result<i32> {
    diagnostics::init(cli.debug);
    let status = run_command(cli.command);
    diagnostics::finish();
    status
}

fn run_command(command: cli::Command) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;
    match command {
        cli::Command::Report(args) => runtime.block_on(session::report(*args)).map(|()| 0),
        cli::Command::Run(args) => runtime.block_on(session::run(*args)),
        cli::Command::Stream(args) => runtime.block_on(stream::stream(*args)).map(|()| 0),
        cli::Command::Top(args) => runtime.block_on(top::top(*args)).map(|()| 0),
        cli::Command::List(args) => list::list(&args).map(|()| 0),
        cli::Command::Diff(args) => diff::diff(&args).map(|()| 0),
        cli::Command::Agent(args) => runtime.block_on(agent::agent(*args)).map(|()| 0),
    }
}
