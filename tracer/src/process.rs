//! The traced process: that it exists, where its executable is mapped, and when it exits.

use std::{
    fs,
    io::Write,
    num::NonZeroU32,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command},
};

use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

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
                _ => Error::Read {
                    path: PathBuf::from(format!("/proc/{pid}/exe")),
                    source,
                },
            })?
            .to_string_lossy()
            .into_owned();
        let mappings = read_mappings(pid)?;
        Ok(Self {
            pid: nonzero,
            pidfd,
            exe_name,
            // Through /proc: the very file the process runs, even if it was replaced on
            // disk or lives in another mount namespace.
            exe_path: PathBuf::from(format!("/proc/{pid}/exe")),
            mappings,
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
        })
    }

    /// Waits (briefly) until the process runs `program`, then reads its mappings: a PIE's
    /// load address is only known once it is mapped.
    pub fn wait_for_exec(&mut self, program: &Path) -> Result<()> {
        let exe = PathBuf::from(format!("/proc/{}/exe", self.pid));
        for _ in 0..2000 {
            match fs::read_link(&exe) {
                Ok(target) if target.to_string_lossy() == self.exe_name => {
                    self.refresh_mappings();
                    return Ok(());
                }
                // Exited already: the report can still name non-PIE frames.
                Err(_) => return Ok(()),
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        Err(Error::Usage(format!(
            "{} did not start within 2 s",
            program.display()
        )))
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

    /// A handle that becomes readable when the process exits (available once).
    pub fn exit_watch(&mut self) -> Result<AsyncFd<OwnedFd>> {
        let pidfd = self
            .pidfd
            .take()
            .ok_or_else(|| Error::Usage("exit watch taken twice".into()))?;
        // SAFETY: the AsyncFd owns the descriptor and deregisters it before closing it.
        unsafe { AsyncFd::register(pidfd) }.map_err(|e| Error::Read {
            path: PathBuf::from("pidfd"),
            source: e.into_parts().1,
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
            return Err(Error::Usage(format!(
                "cannot create a pipe: {}",
                std::io::Error::last_os_error()
            )));
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
        // close-on-exec, unlike the original).
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(door_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| Error::Read {
            path: PathBuf::from("/bin/sh"),
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
            .ok_or_else(|| Error::Usage("released twice".into()))?;
        door.write_all(b"\n").map_err(|source| Error::Write {
            path: PathBuf::from("pipe"),
            source,
        })
    }

    /// The program's exit status, as a shell reports it (128 + signal when killed).
    pub fn wait(mut self) -> Result<i32> {
        let status = self.child.wait().map_err(|source| Error::Read {
            path: self.program.clone(),
            source,
        })?;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1))
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
        .ok_or_else(|| Error::Usage(format!("no program {name} (not a file, nor on PATH)")))
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
}
