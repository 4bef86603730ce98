//! Every way a pooltrace run can fail, each with a message a user can act on.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with PID {0}")]
    NoSuchProcess(i32),

    #[error("process {0} has exited")]
    Exited(i32),

    #[error("PID {pid} is the kernel thread {name}, not a program; trace a Go process")]
    KernelThread { pid: i32, name: String },

    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("{path} is not an ELF file")]
    NotElf { path: PathBuf },

    #[error("{path} is a {machine} ELF file; pooltrace traces x86-64 Go programs")]
    WrongArchitecture { path: PathBuf, machine: String },

    #[error("{path} is not a Go program (it has no gopclntab, .go.buildinfo or runtime.main)")]
    NotGo { path: PathBuf },

    #[error("{path} has neither a symbol table nor a readable Go function table (gopclntab)")]
    NoFunctions { path: PathBuf },

    #[error("no function {name} in {path}{}", suggestion_text(.suggestions))]
    NoSuchFunction {
        name: String,
        path: PathBuf,
        suggestions: Vec<String>,
    },

    #[error("{name} has no machine code to probe ({reason})")]
    Unprobeable { name: String, reason: String },

    #[error("invalid {what} {spec:?}: {reason}")]
    BadSpec {
        what: &'static str,
        spec: String,
        reason: String,
    },

    #[error("{0}")]
    Usage(String),

    #[error("no program {name} (not a file, nor on PATH)")]
    NoSuchProgram { name: String },

    #[error("cannot {action} {program}: {source}")]
    Start {
        /// What was being done: "start", "hold at the door", "let in".
        action: &'static str,
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{program} did not start within 2 s")]
    ProgramDidNotStart { program: PathBuf },

    #[error("cannot watch PID {pid} for its exit: {source}")]
    Watch {
        pid: i32,
        #[source]
        source: io::Error,
    },

    #[error("cannot start the async runtime: {source}")]
    Runtime {
        #[source]
        source: io::Error,
    },

    #[error("cannot render the report: {source}")]
    Render {
        #[source]
        source: io::Error,
    },

    /// A promise pooltrace's own code broke (a bug, never the user's doing).
    #[error("internal error: {0}")]
    Internal(&'static str),

    #[error("pools file {path}: {reason}")]
    PoolsFile { path: PathBuf, reason: String },

    #[error("{what} is named twice (pool {first} and pool {second})")]
    DuplicatePool {
        what: String,
        first: usize,
        second: usize,
    },

    #[error("pooltrace needs {capability}{why}; run it as root (e.g. with sudo)")]
    Privilege {
        capability: &'static str,
        why: &'static str,
    },

    /// The causes of the aya variants below are kept as sources: aya wraps the errno that
    /// says what went wrong several levels deep, and [`Error::chain`] prints them all.
    #[error("cannot load the eBPF object")]
    Load {
        #[source]
        source: aya::EbpfError,
    },

    #[error("eBPF program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("the embedded eBPF object has no {what} {name} (a build mismatch)")]
    NotInObject {
        what: &'static str,
        name: &'static str,
    },

    #[error("cannot attach a uprobe to {function} at {address:#x} (file offset {offset:#x})")]
    Attach {
        function: String,
        address: u64,
        offset: u64,
        #[source]
        source: AttachFailure,
    },

    #[error("cannot poll the stream ring buffer")]
    Poll {
        #[source]
        source: io::Error,
    },

    #[error("too many probe sites ({0}); pooltrace supports at most {max}", max = tracer_common::MAX_SITES)]
    TooManySites(usize),

    #[error("{0} pools named; pooltrace traces at most {max} at once", max = tracer_common::MAX_POOLS)]
    TooManyPools(usize),

    #[error("cannot write {path}: {}", os_message(.source))]
    Write { path: PathBuf, source: io::Error },

    #[error("cannot write {path}: {reason}")]
    Output {
        path: PathBuf,
        #[source]
        reason: OutputRefusal,
    },

    #[error("cannot write to standard output: {}", os_message(.source))]
    Stdout { source: io::Error },

    #[error("cannot handle signals: {source}")]
    Signals { source: io::Error },
}

/// Why one uprobe could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachFailure {
    #[error("its address is in no loaded segment of the file")]
    NotLoaded,
    #[error(transparent)]
    Kernel(#[from] aya::programs::ProgramError),
}

impl Error {
    /// The error and every cause under it, "outer: inner: innermost", each cause's text
    /// left out where the message already carries it.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            let cause_text = without_errno(&cause_text);
            if !text.contains(cause_text) {
                text.push_str(": ");
                text.push_str(cause_text);
            }
            source = cause.source();
        }
        text
    }

    /// Whether stdout's reader closed the pipe (`| head`): the reader's choice, so pooltrace
    /// ends quietly and successfully, as ripgrep does.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, Error::Stdout { source } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Why the `--output` path cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputRefusal {
    #[error("it is a symbolic link; pooltrace never writes through one")]
    Symlink,

    #[error("it already exists (use --force to replace it)")]
    Exists,

    #[error("{}", os_message(.0))]
    Io(#[source] io::Error),
}

/// The system's own words ("No space left on device"), without Rust's "(os error 28)".
fn os_message(error: &io::Error) -> String {
    without_errno(&error.to_string()).to_owned()
}

/// `text` without the " (os error N)" Rust appends to an OS error's words.
fn without_errno(text: &str) -> &str {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text,
    }
}

fn suggestion_text(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        many => format!("; did you mean one of: {}?", many.join(", ")),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_every_cause_once() {
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        let kernel = Error::Program {
            name: "pool_put",
            source: aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
                call: "perf_event_open",
                io_error: denied,
            }),
        };
        let chain = kernel.chain();
        assert!(chain.starts_with("eBPF program pool_put: "), "{chain}");
        assert!(chain.contains("perf_event_open"), "{chain}");
        assert_eq!(chain.matches("Permission denied").count(), 1, "{chain}");
        assert!(!chain.contains("os error"), "{chain}");
        // A message that carries its cause already is not repeated.
        let read = Error::Read {
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(read.chain(), read.to_string());
        let write = Error::Write {
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(write.chain(), "cannot write /x: No space left on device");
    }
}
