//! Every way a pooltrace run can fail, each with a message a user can act on.

use std::{io, path::PathBuf};

/// Why a pooltrace run failed; its `Display` is the message to show the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--pid` names no process.
    #[error("no process with PID {0}")]
    NoSuchProcess(i32),

    /// The traced process exited before pooltrace could read it.
    #[error("process {0} has exited")]
    Exited(i32),

    /// `--pid` names a kernel thread, which has no program to trace.
    #[error("PID {pid} is the kernel thread {name}, not a program; trace a Go process")]
    KernelThread {
        /// The PID given.
        pid: i32,
        /// The thread's name, as `/proc/PID/comm` gives it.
        name: String,
    },

    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },

    /// The program's file is not ELF.
    #[error("{path} is not an ELF file")]
    NotElf {
        /// The file read.
        path: PathBuf,
    },

    /// The program is built for an architecture other than x86-64.
    #[error("{path} is a {machine} ELF file; pooltrace traces x86-64 Go programs")]
    WrongArchitecture {
        /// The file read.
        path: PathBuf,
        /// The architecture it is built for.
        machine: String,
    },

    /// The program is ELF, but nothing in it says Go built it.
    #[error("{path} is not a Go program (it has no gopclntab, .go.buildinfo or runtime.main)")]
    NotGo {
        /// The file read.
        path: PathBuf,
    },

    /// The program has no function table pooltrace can read.
    #[error("{path} has neither a symbol table nor a readable Go function table (gopclntab)")]
    NoFunctions {
        /// The file read.
        path: PathBuf,
    },

    /// A function named on the command line is not in the program.
    #[error("no function {name} in {path}{}", suggestion_text(.suggestions))]
    NoSuchFunction {
        /// The name as given.
        name: String,
        /// The program searched.
        path: PathBuf,
        /// Names in the program close to it, offered as "did you mean".
        suggestions: Vec<String>,
    },

    /// The function exists but no probe can be placed on it.
    #[error("{name} has no machine code to probe ({reason})")]
    Unprobeable {
        /// The function.
        name: String,
        /// Why it cannot be probed.
        reason: String,
    },

    /// A register or memory spec (such as `--key`) does not parse.
    #[error("invalid {what} {spec:?}: {reason}")]
    BadSpec {
        /// Which option the spec was given to.
        what: &'static str,
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The command line asks for something pooltrace cannot do; the text says what.
    #[error("{0}")]
    Usage(String),

    /// The program to run is neither a file nor found on `PATH`.
    #[error("no program {name} (not a file, nor on PATH)")]
    NoSuchProgram {
        /// The name given after `--`.
        name: String,
    },

    /// The program to run could not be started.
    #[error("cannot {action} {program}: {source}")]
    Start {
        /// What was being done: "start", "hold at the door", "let in".
        action: &'static str,
        /// The program.
        program: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// The program to run did not get as far as its own code in time.
    #[error("{program} did not start within 2 s")]
    ProgramDidNotStart {
        /// The program.
        program: PathBuf,
    },

    /// The traced process's exit cannot be watched for.
    #[error("cannot watch PID {pid} for its exit: {source}")]
    Watch {
        /// The traced process.
        pid: i32,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// A file given to `diff` is not a JSON report.
    #[error("{path} is not a pooltrace JSON report")]
    NotAReport {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },

    /// The agent's address is taken, or not this machine's.
    #[error("cannot listen on {addr}")]
    Listen {
        /// `--listen`.
        addr: std::net::SocketAddr,
        /// What the system said (e.g. the address is in use).
        #[source]
        source: io::Error,
    },

    /// The agent's HTTP thread could not be started.
    #[error("cannot start serving HTTP")]
    Serve {
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// `top --agent` was given an address it cannot use.
    #[error("--agent {url}: {reason}")]
    AgentUrl {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// `top --agent`'s credentials or CA could not be read or used.
    #[error("{option} {}: {reason}", .path.display())]
    AgentCredentials {
        /// The option that names the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// `top --agent` could not reach the agent, or the TLS handshake failed.
    #[error("cannot reach the agent at {url}: {}", os_message(.source))]
    AgentUnreachable {
        /// `--agent`.
        url: String,
        /// What the system or TLS said.
        source: io::Error,
    },

    /// The agent's HTTP exchange failed midway.
    #[error("the agent at {url} did not answer over HTTP")]
    AgentHttp {
        /// `--agent`.
        url: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },

    /// The agent answered with an error status.
    #[error("the agent at {url} answered {status}{hint}")]
    AgentRefused {
        /// `--agent`.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What to do about it, when known.
        hint: &'static str,
    },

    /// The agent's `/report.json` is not a list of pooltrace reports of this version.
    #[error("the agent at {url} served no pooltrace reports at /report.json")]
    AgentReports {
        /// `--agent`.
        url: String,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },

    /// `top` was started without a terminal to draw on.
    #[error("pooltrace top draws on a terminal and standard output is not one; use `pooltrace report` or `pooltrace stream` to write to a pipe or a file")]
    NoTerminal,

    /// The terminal could not be set up or drawn on.
    #[error("cannot draw on the terminal: {}", os_message(.source))]
    Terminal {
        /// What the system said.
        source: io::Error,
    },

    /// The async runtime pooltrace runs on could not be created.
    #[error("cannot start the async runtime: {source}")]
    Runtime {
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// The report could not be rendered.
    #[error("cannot render the report: {source}")]
    Render {
        /// What went wrong writing it.
        #[source]
        source: io::Error,
    },

    /// A promise pooltrace's own code broke (a bug, never the user's doing).
    #[error("internal error: {0}")]
    Internal(&'static str),

    /// The `--pools` file is malformed.
    #[error("pools file {path}: {mistake}")]
    PoolsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and where.
        mistake: PoolsFileMistake,
    },

    /// The agent's `--web-config` file is malformed, names a file that cannot be used, or asks
    /// for what pooltrace does not do.
    #[error("--web-config {path}: {mistake}")]
    WebConfig {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it, and under which key (boxed: rustls' errors are large).
        #[source]
        mistake: Box<WebConfigMistake>,
    },

    /// Two pools probe the same Get or Put, so each call would be counted twice.
    #[error("{what} is named twice (pool {first} and pool {second})")]
    DuplicatePool {
        /// The function both pools probe.
        what: String,
        /// The first pool naming it, counting from 1.
        first: usize,
        /// The second pool naming it, counting from 1.
        second: usize,
    },

    /// pooltrace lacks a capability it needs to trace.
    #[error("pooltrace needs {capability} for {call}; run it as root, or grant it the capability")]
    Privilege {
        /// The capability missing, such as `CAP_BPF`.
        capability: &'static str,
        /// The call that needs it.
        call: &'static str,
    },

    /// The kernel refused to create a map with EPERM although pooltrace has CAP_BPF: a
    /// seccomp or LSM profile forbids bpf(2), as container runtimes' defaults may.
    #[error(
        "cannot load the eBPF object: bpf(2) was refused although pooltrace has CAP_BPF and \
         CAP_PERFMON; a seccomp or LSM profile (a container runtime's default) may forbid it"
    )]
    LoadForbidden {
        /// What aya reported.
        #[source]
        source: aya::EbpfError,
    },

    /// The kernel refused the embedded eBPF object.
    ///
    /// The causes of this and the aya variants below are kept as sources: aya wraps the errno
    /// that says what went wrong several levels deep, and [`Error::chain`] prints them all.
    #[error("cannot load the eBPF object")]
    Load {
        /// What aya reported.
        #[source]
        source: aya::EbpfError,
    },

    /// The kernel side's log messages (`--debug`, `RUST_LOG=pooltrace::kernel=...`) cannot
    /// be read.
    #[error("cannot read the kernel side's log messages")]
    KernelLog {
        /// What aya-log reported.
        #[source]
        source: aya_log::Error,
    },

    /// An eBPF program could not be loaded or attached.
    #[error("eBPF program {name}")]
    Program {
        /// The program, as the eBPF object names it.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: aya::programs::ProgramError,
    },

    /// An eBPF map could not be opened, read or written.
    #[error("eBPF map {name}")]
    Map {
        /// The map, as the eBPF object names it.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: aya::maps::MapError,
    },

    /// The embedded eBPF object lacks a program or map this build expects.
    #[error("the embedded eBPF object has no {what} {name} (a build mismatch)")]
    NotInObject {
        /// "program" or "map".
        what: &'static str,
        /// The name looked for.
        name: &'static str,
    },

    /// A uprobe could not be attached at one probe site.
    #[error("cannot attach a uprobe to {function} at {address:#x} (file offset {offset:#x})")]
    Attach {
        /// The function probed.
        function: String,
        /// The probe site's virtual address.
        address: u64,
        /// The probe site's offset in the file.
        offset: u64,
        /// Why it failed.
        #[source]
        source: AttachFailure,
    },

    /// Get's uprobe-multi links could not be made again (`--sample-gets`).
    #[error("cannot attach Get's uprobes again")]
    Multi {
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },

    /// `stream` could not wait for events.
    #[error("cannot poll the stream ring buffer")]
    Poll {
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// The pools need more probe sites than the eBPF side has room for.
    #[error("too many probe sites ({0}); pooltrace supports at most {max}", max = tracer_common::MAX_SITES)]
    TooManySites(usize),

    /// Every slot of a shared eBPF object holds a traced process.
    #[error("all {0} target slots of the eBPF object are in use")]
    NoFreeSlot(u32),

    /// More pools are named than one trace can follow.
    #[error("{0} pools named; pooltrace traces at most {max} at once", max = tracer_common::MAX_POOLS)]
    TooManyPools(usize),

    /// Writing the `--output` file failed.
    #[error("cannot write {path}: {}", os_message(.source))]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },

    /// The `--output` path is refused before anything is written.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The path given.
        path: PathBuf,
        /// Why it is refused.
        #[source]
        reason: OutputRefusal,
    },

    /// Writing to standard output failed (see [`Error::is_closed_pipe`]).
    #[error("cannot write to standard output: {}", os_message(.source))]
    Stdout {
        /// What the system said.
        source: io::Error,
    },

    /// The signal handlers that end a trace could not be installed.
    #[error("cannot handle signals: {source}")]
    Signals {
        /// What the system said.
        source: io::Error,
    },
}

/// What is wrong with a pools file, and where.
#[derive(Debug, thiserror::Error)]
pub enum PoolsFileMistake {
    /// Not TOML, or a key or value no `[[pool]]` takes: where TOML says it is.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// Counted from 1.
        line: usize,
        /// In characters, counted from 1.
        column: usize,
        /// TOML's words.
        message: String,
    },
    /// The same, where TOML names no place.
    #[error("{message}")]
    Unplaced {
        /// TOML's words.
        message: String,
    },
    /// The file has no `[[pool]]` table.
    #[error("it names no [[pool]]")]
    NoPools,
    /// One `[[pool]]` is well-formed TOML but not a pool.
    #[error("pool {number}: {reason}")]
    Pool {
        /// Counted from 1, in file order.
        number: usize,
        /// What it lacks or has too much of.
        reason: String,
    },
}

/// What is wrong with a `--web-config` file, and under which key (`tls_server_config.cert_file`).
#[derive(Debug, thiserror::Error)]
pub enum WebConfigMistake {
    /// The file itself cannot be read.
    #[error("cannot read it: {}", os_message(.0))]
    Read(#[source] io::Error),
    /// Not YAML, a key the format does not have, or a value of the wrong type: YAML's words,
    /// which name the key, and where it says it is.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// Counted from 1.
        line: usize,
        /// Counted from 1.
        column: usize,
        /// YAML's words, the key's path first.
        message: String,
    },
    /// The same, where YAML names no place.
    #[error("{message}")]
    Unplaced {
        /// YAML's words.
        message: String,
    },
    /// A file the configuration names cannot be read.
    #[error("{key}: cannot read {}: {}", .path.display(), os_message(.source))]
    File {
        /// The key that names it, as a path from the top.
        key: String,
        /// The file, relative paths taken from the configuration file's directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A value the key does not take, or keys that do not go together.
    #[error("{key}: {reason}")]
    Value {
        /// The key, as a path from the top (`basic_auth_users.alice`).
        key: String,
        /// What is wrong, and what it takes.
        reason: String,
    },
    /// rustls refused a certificate, a key, or the settings.
    #[error("{key}: {what}")]
    Tls {
        /// The key whose value was refused.
        key: String,
        /// What was refused.
        what: String,
        /// rustls' words.
        #[source]
        source: rustls::Error,
    },
}

/// Why one uprobe could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachFailure {
    /// The site's address maps to no place in the file, so there is no offset to probe.
    #[error("its address is in no loaded segment of the file")]
    NotLoaded,
    /// The kernel refused the uprobe.
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
    /// The path is a symbolic link.
    #[error("it is a symbolic link; pooltrace never writes through one")]
    Symlink,

    /// The file exists and `--force` was not given.
    #[error("it already exists (use --force to replace it)")]
    Exists,

    /// Checking or creating the file failed.
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

/// A result whose error is pooltrace's [`Error`].
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
