//! The traced process: that it exists, where its executable is mapped, and how its life goes
//! on while it is traced (exit with its status or signal, exec into another program).

use std::{
    fmt, fs,
    io::Write,
    num::NonZeroU32,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{
            fs::FileExt,
            process::{CommandExt, ExitStatusExt},
        },
    },
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use tokio::io::unix::AsyncFd;

use crate::{
    capabilities::{Effective, SYS_PTRACE},
    error::{Error, Result},
    signals,
};

/// One line of `/proc/PID/maps` that maps a file.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

pub struct Process {
    pid: NonZeroU32,
    /// Opened with the process, so its exit is seen however early it comes and a reused PID
    /// can never be mistaken for it.
    pidfd: Option<OwnedFd>,
    /// What `/proc/PID/exe` points at, as the process sees it (for messages and for finding
    /// the executable's lines in `maps`).
    exe_name: String,
    /// The file to read and attach uprobes to.
    exe_path: PathBuf,
    mappings: Vec<Mapping>,
    /// `/proc/PID/mem` of the image whose mappings were read, opened before them: an exec
    /// at any moment after that is then seen (see `Image`). None where it cannot be opened.
    image_mem: Option<fs::File>,
}

impl Process {
    pub fn open(pid: i32) -> Result<Self> {
        let nonzero = u32::try_from(pid)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or(Error::NoSuchProcess(pid))?;
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            return Err(Error::NoSuchProcess(pid));
        }
        let pidfd = Some(pidfd_open(pid)?);
        let exe_link = PathBuf::from(format!("/proc/{pid}/exe"));
        let exe_name = fs::read_link(&exe_link)
            .map_err(|source| match source.kind() {
                // Neither a zombie nor a kernel thread has an executable.
                std::io::ErrorKind::NotFound => match kernel_thread_name(pid) {
                    Some(name) => Error::KernelThread { pid, name },
                    None => Error::Exited(pid),
                },
                std::io::ErrorKind::PermissionDenied if !Effective::read().has(SYS_PTRACE) => {
                    Error::Privilege {
                        capability: SYS_PTRACE.name,
                        call: SYS_PTRACE.call,
                    }
                }
                _ => Error::Read {
                    path: PathBuf::from(format!("/proc/{pid}/exe")),
                    source,
                },
            })?
            .to_string_lossy()
            .into_owned();
        let image_mem = open_image_mem(pid);
        let mappings = read_mappings(pid)?;
        Ok(Self {
            pid: nonzero,
            pidfd,
            exe_name,
            // Through /proc: the very file the process runs, even if it was replaced on
            // disk or lives in another mount namespace.
            exe_path: PathBuf::from(format!("/proc/{pid}/exe")),
            mappings,
            image_mem,
        })
    }

    /// A child started by `Spawned`, which will exec `program`: attached to through
    /// `program` itself, since `/proc/PID/exe` is still the shell holding it.
    pub fn spawned(pid: i32, program: &Path) -> Result<Self> {
        let nonzero = u32::try_from(pid)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or(Error::NoSuchProcess(pid))?;
        let canonical = fs::canonicalize(program).map_err(|source| Error::Read {
            path: program.to_path_buf(),
            source,
        })?;
        Ok(Self {
            pid: nonzero,
            pidfd: Some(pidfd_open(pid)?),
            exe_name: canonical.to_string_lossy().into_owned(),
            exe_path: canonical,
            mappings: Vec::new(),
            // Opened once the program runs (`wait_for_exec`), not on the shell holding it.
            image_mem: None,
        })
    }

    /// Waits (briefly) until the process runs `program`, then reads its mappings: a PIE's
    /// load address is only known once it is mapped.
    pub fn wait_for_exec(&mut self, program: &Path) -> Result<()> {
        let exe = PathBuf::from(format!("/proc/{}/exe", self.pid));
        for _ in 0..2000 {
            match fs::read_link(&exe) {
                Ok(target) if target.to_string_lossy() == self.exe_name => {
                    self.image_mem = open_image_mem(self.pid());
                    self.refresh_mappings();
                    return Ok(());
                }
                // Exited already: the report can still name non-PIE frames.
                Err(_) => return Ok(()),
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        Err(Error::ProgramDidNotStart {
            program: program.to_path_buf(),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid.get() as i32
    }

    pub fn pid_nonzero(&self) -> NonZeroU32 {
        self.pid
    }

    /// The executable's file, to read and to attach uprobes to.
    pub fn exe_path(&self) -> PathBuf {
        self.exe_path.clone()
    }

    pub fn exe_name(&self) -> &str {
        &self.exe_name
    }

    /// The 8 bytes at `addr` in the traced image's memory, as a little-endian word: read,
    /// never written. Fails once the process has exited or called exec.
    pub fn read_word(&self, addr: u64) -> std::io::Result<u64> {
        let mem = (self.image_mem.as_ref())
            .ok_or_else(|| std::io::Error::other(format!("cannot open /proc/{}/mem", self.pid)))?;
        let mut word = [0; 8];
        mem.read_exact_at(&mut word, addr)?;
        Ok(u64::from_le_bytes(word))
    }

    /// Re-reads `/proc/PID/maps`; once the process is gone, the last copy stays.
    pub fn refresh_mappings(&mut self) {
        if let Ok(mappings) = read_mappings(self.pid()) {
            self.mappings = mappings;
        }
    }

    /// The file mapping that holds a runtime address.
    pub fn mapping_at(&self, addr: u64) -> Option<&Mapping> {
        self.mappings
            .iter()
            .find(|m| addr >= m.start && addr < m.end)
    }

    /// Whether a mapping is of the traced executable.
    pub fn is_exe(&self, mapping: &Mapping) -> bool {
        mapping.path == self.exe_name
    }

    /// Starts watching for the process's exit (its exec is watched once `Watch::arm_exec` is
    /// called). Available once: the watch takes the process's pidfd.
    pub fn watch(&mut self) -> Result<Watch> {
        let pidfd = self
            .pidfd
            .take()
            .ok_or(Error::Internal("the process is watched twice"))?;
        // SAFETY: the AsyncFd owns the descriptor and deregisters it before closing it.
        let pidfd = unsafe { AsyncFd::register(pidfd) }.map_err(|e| Error::Watch {
            pid: self.pid(),
            source: e.into_parts().1,
        })?;
        let start = tokio::time::Instant::now() + EXEC_POLL;
        let mut exec_poll = tokio::time::interval_at(start, EXEC_POLL);
        exec_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Watch {
            pid: self.pid(),
            pidfd,
            image: None,
            exec_poll,
        })
    }
}

/// `PF_KTHREAD` in the flags of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The name of `pid` when it is a kernel thread (`kthreadd`, `kworker/0:1`, ...).
fn kernel_thread_name(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = parse_stat(&stat)?;
    // After the name: state, ppid, pgrp, session, tty_nr, tpgid, flags.
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    (flags & PF_KTHREAD != 0).then(|| name.to_owned())
}

/// `/proc/PID/stat` split into the command name (which may hold spaces and parentheses) and
/// the fields after it.
fn parse_stat(stat: &str) -> Option<(&str, &str)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    Some((stat.get(open + 1..close)?, stat.get(close + 1..)?))
}

/// How often the watch looks for an exec: a report interval can be long, or never end.
const EXEC_POLL: Duration = Duration::from_millis(250);

/// How the traced process ended, as far as pooltrace can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    /// By this signal.
    Killed(i32),
    /// Not our child, and its parent reaped it before its status could be read.
    Unknown,
}

impl Ending {
    /// As a shell gives it: the exit code, or 128 + the signal.
    pub fn shell_status(self) -> Option<i32> {
        match self {
            Ending::Exited(code) => Some(code),
            Ending::Killed(signal) => Some(128 + signal),
            Ending::Unknown => None,
        }
    }

    /// From a wait status, as /proc/PID/stat's exit_code gives it.
    fn from_wait_status(status: i32) -> Self {
        match status & 0x7f {
            0 => Ending::Exited((status >> 8) & 0xff),
            signal => Ending::Killed(signal),
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ending::Exited(code) => write!(f, "exited with status {code}"),
            Ending::Killed(signal) => write!(f, "was killed by {}", signal_name(signal)),
            Ending::Unknown => write!(f, "exited; its status is unknown (its parent reaped it)"),
        }
    }
}

/// What became of a watched process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Exited(Ending),
    /// It called exec and now runs this executable.
    Execed(String),
}

/// Watches the traced process for its exit (through its pidfd) and for exec.
pub struct Watch {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    image: Option<Image>,
    exec_poll: tokio::time::Interval,
}

/// The program image that was traced. The kernel keeps the memory of the image a
/// `/proc/PID/mem` handle was opened on; once the process execs or exits, reading through
/// the handle gives 0 bytes (a live image gives its byte, or EIO where nothing is mapped).
/// The handle is only ever read.
struct Image {
    mem: fs::File,
    /// An address mapped in the image: the start of the executable's first mapping.
    addr: u64,
}

impl Watch {
    /// From now on, an exec away from the image whose mappings `process` read counts as a
    /// change. Without a handle on that image (a kernel that refuses to open
    /// `/proc/PID/mem`), an exec is not seen: said once, and tracing goes on.
    pub fn arm_exec(&mut self, process: &Process) {
        let mem = process.image_mem.as_ref().map(fs::File::try_clone);
        self.image = match (mem, image_address(process)) {
            (Some(Ok(mem)), Some(addr)) => Some(Image { mem, addr }),
            // Gone already: its exit is what the watch will see.
            (_, None) => None,
            (_, Some(_)) if !self.not_reaped() => None,
            (_, Some(_)) => {
                crate::status!(
                    "pooltrace: warning: cannot open /proc/{}/mem to watch for exec; \
                     an exec will look like the program went quiet",
                    self.pid
                );
                None
            }
        };
    }

    /// The next change: the process's exit, or an exec (seen within `EXEC_POLL`).
    pub async fn changed(&mut self) -> Change {
        loop {
            tokio::select! {
                _ = self.pidfd.readable() => return Change::Exited(self.ending()),
                _ = self.exec_poll.tick() => {
                    if let Some(now_running) = self.execed() {
                        return Change::Execed(now_running);
                    }
                }
            }
        }
    }

    /// What the process runs now, if it has called exec since `arm_exec` (said once: the
    /// watch is then disarmed).
    pub fn execed(&mut self) -> Option<String> {
        let image = self.image.as_ref()?;
        let mut byte = [0];
        if !matches!(image.mem.read_at(&mut byte, image.addr), Ok(0)) {
            return None;
        }
        // The old image is gone: by exec if the process still has an executable, by exit
        // if not (then the pidfd reports it).
        let exe = fs::read_link(format!("/proc/{}/exe", self.pid)).ok()?;
        // Read before confirming that the PID is still ours, not reaped and reused.
        let now_running = self
            .not_reaped()
            .then(|| exe.to_string_lossy().into_owned())?;
        self.image = None;
        Some(now_running)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How the process ended: exactly for our own child (read without reaping it), from
    /// `/proc/PID/stat` while a non-child is still a zombie, else unknown.
    pub fn ending(&self) -> Ending {
        self.child_ending()
            .or_else(|| self.zombie_ending())
            .unwrap_or(Ending::Unknown)
    }

    fn child_ending(&self) -> Option<Ending> {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: waitid on our pidfd, with WNOWAIT: it reads the status, the child stays.
        let waited = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.get_ref().as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        // SAFETY: the siginfo is all zeros, or a SIGCHLD one that waitid filled.
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if waited != 0 || pid == 0 {
            return None;
        }
        Some(match code {
            libc::CLD_EXITED => Ending::Exited(status),
            _ => Ending::Killed(status),
        })
    }

    fn zombie_ending(&self) -> Option<Ending> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let (state, exit_code) = parse_stat_ending(&stat)?;
        (state == "Z" && self.not_reaped()).then(|| Ending::from_wait_status(exit_code))
    }

    /// Whether the process still holds its PID: running, or a zombie not yet reaped. The
    /// kernel finds the process before it checks the right to signal it, so EPERM (another
    /// user's process, without CAP_KILL) says it is there as surely as success.
    fn not_reaped(&self) -> bool {
        match self.send(0) {
            Ok(()) => true,
            Err(error) => error.raw_os_error() == Some(libc::EPERM),
        }
    }

    /// Sends `signal` to the process (0 only checks that it is still there).
    pub fn send(&self, signal: i32) -> std::io::Result<()> {
        let fd = self.pidfd.get_ref().as_raw_fd();
        // SAFETY: pidfd_send_signal with our own pidfd, no siginfo and no flags.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if sent == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// A read-only handle on the memory of the image `pid` runs now; None when it cannot be
/// opened (gone already, or refused by the kernel's ptrace policy).
fn open_image_mem(pid: i32) -> Option<fs::File> {
    fs::File::open(format!("/proc/{pid}/mem")).ok()
}

/// An address mapped in the process's image: its executable's first mapping, or any.
fn image_address(process: &Process) -> Option<u64> {
    let mappings = &process.mappings;
    mappings
        .iter()
        .find(|m| process.is_exe(m))
        .or_else(|| mappings.first())
        .map(|m| m.start)
}

/// The state and the exit code (a wait status) from a `/proc/PID/stat` line.
fn parse_stat_ending(stat: &str) -> Option<(&str, i32)> {
    let (_, after_name) = parse_stat(stat)?;
    let state = after_name.split_whitespace().next()?;
    let exit_code = after_name.split_whitespace().last()?.parse().ok()?;
    Some((state, exit_code))
}

/// A signal's name, e.g. SIGKILL.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

fn read_mappings(pid: i32) -> Result<Vec<Mapping>> {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    let text = fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
    Ok(text.lines().filter_map(parse_mapping).collect())
}

fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::NoSuchProcess(pid));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A program started for `pooltrace run`, held before its first instruction: a shell waits
/// for a byte on fd 3, then execs the program in the same process (same PID), so uprobes
/// attached to that PID in between see every call the program makes.
pub struct Spawned {
    child: Child,
    program: PathBuf,
    door: Option<std::fs::File>,
}

/// Waits for the door, closes it, and becomes the program. If pooltrace goes away without
/// opening the door (EOF), the program must not run untraced: the shell exits 125.
const HOLD_AND_EXEC: &str = "read -r _ <&3 || exit 125; exec 3<&-; exec \"$0\" \"$@\"";

impl Spawned {
    pub fn start(command: &[String]) -> Result<Self> {
        let (name, args) = command
            .split_first()
            .ok_or_else(|| Error::Usage("name a program to run after --".into()))?;
        let program = find_program(name)?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Error::Start {
                action: "hold at the door",
                program,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fresh descriptors owned by nothing else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let door_fd = read_end.as_raw_fd();
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(HOLD_AND_EXEC)
            .arg(&program)
            .args(args);
        // SAFETY: dup2 is async-signal-safe; it gives the shell the door as fd 3 (not
        // close-on-exec, unlike the original). Unblocking the signals is too.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(door_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                signals::unblock_in_child()
            });
        }
        let child = command.spawn().map_err(|source| Error::Start {
            action: "start",
            program: program.clone(),
            source,
        })?;
        drop(read_end);
        Ok(Self {
            child,
            program,
            door: Some(std::fs::File::from(write_end)),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Lets the program start.
    pub fn release(&mut self) -> Result<()> {
        let mut door = self
            .door
            .take()
            .ok_or(Error::Internal("the program is let in twice"))?;
        door.write_all(b"\n").map_err(|source| Error::Start {
            action: "let in",
            program: self.program.clone(),
            source,
        })
    }

    /// The program's exit status, as a shell reports it (128 + signal when killed).
    pub fn wait(mut self) -> Result<i32> {
        let status = self.child.wait().map_err(|source| Error::Read {
            path: self.program.clone(),
            source,
        })?;
        let ending = match (status.code(), status.signal()) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(signal)) => Ending::Killed(signal),
            (None, None) => Ending::Unknown,
        };
        Ok(ending.shell_status().unwrap_or(1))
    }
}

/// `name` as a path, or found on `PATH` like a shell would.
fn find_program(name: &str) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![PathBuf::from(name)]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .collect()
            })
            .unwrap_or_default()
    };
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .ok_or_else(|| Error::NoSuchProgram {
            name: name.to_owned(),
        })
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path: Vec<&str> = fields.collect();
    let path = path.join(" ");
    if !path.starts_with('/') {
        return None;
    }
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_may_hold_spaces_and_parentheses() {
        let (name, rest) = parse_stat("42 (my (odd) name) S 1 42 42 0 -1 4194560 12").unwrap();
        assert_eq!(name, "my (odd) name");
        assert_eq!(rest.split_whitespace().nth(6), Some("4194560"));
    }

    #[test]
    fn parses_file_mappings_and_skips_anonymous_ones() {
        let m =
            parse_mapping("5646a000-5646b000 r-xp 00001000 fd:01 1234   /opt/my app/bin").unwrap();
        assert_eq!(
            (m.start, m.end, m.offset, m.path.as_str()),
            (0x5646a000, 0x5646b000, 0x1000, "/opt/my app/bin")
        );
        assert!(parse_mapping("7ffd0000-7ffd1000 rw-p 00000000 00:00 0   [stack]").is_none());
        assert!(parse_mapping("7ffd0000-7ffd1000 rw-p 00000000 00:00 0").is_none());
    }

    #[test]
    fn a_zombie_s_stat_gives_its_state_and_wait_status() {
        let stat = "4242 (my (odd) prog) Z 1 4242 4242 0 -1 4194572 0 0 0 0 0 0 0 0 20 0 1 0 \
                    100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 768";
        assert_eq!(parse_stat_ending(stat), Some(("Z", 768)));
    }

    #[test]
    fn endings_read_like_a_shell_reports_them() {
        let exited = Ending::from_wait_status(3 << 8);
        let killed = Ending::from_wait_status(libc::SIGKILL);
        assert_eq!(exited.to_string(), "exited with status 3");
        assert_eq!(killed.to_string(), "was killed by SIGKILL");
        // A core dump sets bit 7; the signal is still the low bits.
        assert_eq!(
            Ending::from_wait_status(0x80 | libc::SIGSEGV),
            Ending::Killed(libc::SIGSEGV)
        );
        assert_eq!(
            (
                exited.shell_status(),
                killed.shell_status(),
                Ending::Unknown.shell_status()
            ),
            (Some(3), Some(137), None)
        );
        assert_eq!(signal_name(64), "signal 64");
    }
}
