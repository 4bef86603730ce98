//! The traced process: that it exists, where its executable is mapped, and when it exits.

use std::{
    fs,
    num::NonZeroU32,
    os::fd::{FromRawFd, OwnedFd},
    path::PathBuf,
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
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Error::NoSuchProcess(pid));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let pidfd = Some(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        let exe_link = PathBuf::from(format!("/proc/{pid}/exe"));
        let exe_name = fs::read_link(&exe_link)
            .map_err(|source| match source.kind() {
                // A zombie keeps its PID but no longer has an executable.
                std::io::ErrorKind::NotFound => Error::Exited(pid),
                _ => Error::Read {
                    path: exe_link,
                    source,
                },
            })?
            .to_string_lossy()
            .into_owned();
        let mut process = Self {
            pid: nonzero,
            pidfd,
            exe_name,
            mappings: Vec::new(),
        };
        process.refresh_mappings()?;
        Ok(process)
    }

    pub fn pid(&self) -> i32 {
        self.pid.get() as i32
    }

    pub fn pid_nonzero(&self) -> NonZeroU32 {
        self.pid
    }

    /// The executable, opened through `/proc` so it is the very file the process runs even
    /// if it was replaced on disk or lives in another mount namespace.
    pub fn exe_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/exe", self.pid))
    }

    pub fn exe_name(&self) -> &str {
        &self.exe_name
    }

    /// Re-reads `/proc/PID/maps`; keeps the last good copy once the process is gone.
    pub fn refresh_mappings(&mut self) -> Result<()> {
        let path = PathBuf::from(format!("/proc/{}/maps", self.pid));
        match fs::read_to_string(&path) {
            Ok(text) => {
                self.mappings = text.lines().filter_map(parse_mapping).collect();
                Ok(())
            }
            Err(_) if !self.mappings.is_empty() => Ok(()),
            Err(source) => Err(Error::Read { path, source }),
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
