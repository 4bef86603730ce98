//! Finding the processes the agent should trace: a walk of `/proc` that matches each
//! process's executable against `--exe` and `--pid`, by host PID, so processes inside
//! containers (other mount and PID namespaces) are found the same way.

use std::{fs, path::Path, time::Duration};

/// One process, as the agent tells processes apart: a PID is reused, a PID and its start
/// time are not, and an exec keeps both but changes the executable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub pid: i32,
    /// Clock ticks after boot when it started (`/proc/PID/stat` field 22).
    pub start: u64,
    /// Its executable's full path, as the process itself sees it.
    pub exe: String,
}

impl Identity {
    /// The executable's file name, the `exe` label.
    pub fn exe_name(&self) -> &str {
        file_name(&self.exe)
    }

    /// Whether this process still runs this executable: not gone, not a zombie, not
    /// replaced by an exec, its PID not reused.
    pub fn runs_still(&self) -> bool {
        identity(self.pid).as_ref() == Some(self)
    }

    /// How long ago it was started (forked), `since_boot` being now; None when its start
    /// lies ahead of that, which only a clock that is not the start times' own can give.
    pub fn age(&self, since_boot: Duration) -> Option<Duration> {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let started = Duration::from_millis(self.start.saturating_mul(1000) / ticks_per_s);
        since_boot.checked_sub(started)
    }
}

/// Time since boot on the clock `/proc/PID/stat`'s start times count on (CLOCK_BOOTTIME,
/// which a time namespace offsets as it does them; `/proc/uptime` may be another's, e.g.
/// LXCFS's in a container).
pub fn since_boot() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    let seconds = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    (read == 0).then(|| Duration::new(seconds, nanos))
}

/// A process that matched, and what the agent labels it with.
#[derive(Clone, Debug)]
pub struct Found {
    pub identity: Identity,
    /// The container it runs in, from `/proc/PID/cgroup`, when it runs in one.
    pub container: Option<String>,
}

/// What the user asked to trace.
pub struct Matcher {
    /// `--pid`: each process as it was when the agent started, so that a reused PID is
    /// never taken for it.
    pids: Vec<Identity>,
    /// `--exe`: file names (no `/`) and full paths.
    exes: Vec<String>,
    /// The agent itself, never traced.
    own_pid: i32,
}

impl Matcher {
    /// The matcher for `--pid` and `--exe`; the PIDs that name no process are returned
    /// apart, for the log.
    pub fn new(pids: &[i32], exes: &[String]) -> (Self, Vec<i32>) {
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for &pid in pids {
            match identity(pid) {
                Some(identity) => found.push(identity),
                None => missing.push(pid),
            }
        }
        let matcher = Self {
            pids: found,
            exes: exes.to_vec(),
            own_pid: std::process::id() as i32,
        };
        (matcher, missing)
    }

    fn matches(&self, identity: &Identity) -> bool {
        if identity.pid == self.own_pid {
            return false;
        }
        self.pids.contains(identity)
            || self.exes.iter().any(|wanted| {
                if wanted.contains('/') {
                    *wanted == identity.exe
                } else {
                    wanted == identity.exe_name()
                }
            })
    }

    /// Every process that matches now, in PID order.
    pub fn scan(&self) -> Vec<Found> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found: Vec<Found> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(identity)
            .filter(|identity| self.matches(identity))
            .map(|identity| Found {
                container: container_id(identity.pid),
                identity,
            })
            .collect();
        found.sort_by_key(|f| f.identity.pid);
        found
    }
}

/// The process `pid` now; None for a kernel thread or one that is gone.
fn identity(pid: i32) -> Option<Identity> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe = exe.to_string_lossy();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Identity {
        pid,
        start: start_time(&stat)?,
        // A binary replaced on disk while it runs still is the one it runs.
        exe: exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_owned(),
    })
}

/// Field 22 of `/proc/PID/stat`, counted after the command name, which may hold spaces and
/// parentheses of its own.
fn start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on: starttime is the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(path)
}

/// The container a process runs in: the 64-hex-digit id that Docker, containerd and CRI-O
/// put in the last component of its cgroup path (`docker-ID.scope`, `cri-containerd-ID.scope`,
/// `/docker/ID`, `crio-ID`).
fn container_id(pid: i32) -> Option<String> {
    parse_container_id(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

fn parse_container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let last = path.rsplit('/').next()?;
        let last = last.strip_suffix(".scope").unwrap_or(last);
        let id = last.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_come_from_the_runtimes_cgroup_names() {
        let id = "3f4e5a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
        for cgroup in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope\n"),
            format!("12:memory:/docker/{id}\n0::/\n"),
            format!("0::/kubepods/besteffort/pod1234/crio-{id}\n"),
        ] {
            assert_eq!(parse_container_id(&cgroup).as_deref(), Some(id), "{cgroup}");
        }
        assert_eq!(parse_container_id("0::/user.slice/session-2.scope\n"), None);
        assert_eq!(parse_container_id("0::/\n"), None);
    }

    #[test]
    fn start_time_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(start_time(stat), Some(987654));
    }

    #[test]
    fn names_match_file_names_and_paths_match_whole_paths() {
        let matcher = Matcher {
            pids: Vec::new(),
            exes: vec!["storegw".into(), "/opt/bin/thanos".into()],
            own_pid: 1,
        };
        let process = |exe: &str| Identity {
            pid: 7,
            start: 1,
            exe: exe.into(),
        };
        assert!(matcher.matches(&process("/usr/local/bin/storegw")));
        assert!(matcher.matches(&process("/opt/bin/thanos")));
        assert!(!matcher.matches(&process("/usr/bin/thanos")));
        assert!(!matcher.matches(&process("/usr/bin/storegw2")));
    }
}
