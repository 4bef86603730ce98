//! SIGINT, SIGTERM and SIGHUP, caught from the start so that no signal kills pooltrace before
//! it has detached and reported. They are blocked and read from a signalfd, which also says
//! how each was sent: a terminal's Ctrl-C or hangup reaches the program `run` started as
//! well, so that one must not be passed on a second time. A signal pooltrace was started
//! ignoring (`nohup`) stays ignored.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

const HANDLED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// One signal received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub signal: i32,
    /// Sent by the kernel to the terminal's foreground process group (Ctrl-C, a hangup),
    /// which the program `run` started belongs to.
    pub from_terminal: bool,
}

pub struct Signals {
    fd: AsyncFd<OwnedFd>,
}

impl Signals {
    /// Must run before pooltrace starts a thread: threads inherit the blocked mask, and a
    /// thread that does not block the signals would be killed by them.
    pub fn install() -> Result<Self> {
        let set = caught_set();
        let failed = |source| Error::Signals { source };
        // SAFETY: a valid, initialised set; the old mask is not wanted.
        let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if blocked != 0 {
            return Err(failed(io::Error::from_raw_os_error(blocked)));
        }
        // SAFETY: a new signalfd for a valid set.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(failed(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the descriptor and deregisters it before closing it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| failed(e.into_parts().1))?;
        Ok(Self { fd })
    }

    pub async fn recv(&mut self) -> Result<Received> {
        loop {
            let failed = |source| Error::Signals { source };
            let mut ready = self.fd.readable().await.map_err(failed)?;
            match ready.try_io(|fd| read_signal(fd.get_ref())) {
                Ok(received) => return received.map_err(failed),
                Err(_would_block) => continue,
            }
        }
    }
}

fn read_signal(fd: &OwnedFd) -> io::Result<Received> {
    // SAFETY: an all-zero signalfd_siginfo is valid; read fills it.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reads at most `size` bytes into `info`.
    let read = unsafe { libc::read(fd.as_raw_fd(), (&raw mut info).cast(), size) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Received {
        signal: info.ssi_signo as i32,
        from_terminal: info.ssi_code == libc::SI_KERNEL,
    })
}

fn handled_set() -> libc::sigset_t {
    signal_set(&HANDLED)
}

/// The handled signals pooltrace was not told to ignore. A blocked signal is queued even when
/// its action is SIG_IGN, so reading an ignored one from the signalfd would undo `nohup` (and a
/// background job's ignored SIGINT): those stay out, ignored, as the caller asked.
fn caught_set() -> libc::sigset_t {
    let caught: Vec<i32> = HANDLED.into_iter().filter(|&s| !is_ignored(s)).collect();
    signal_set(&caught)
}

fn is_ignored(signal: i32) -> bool {
    // SAFETY: an all-zero sigaction is valid for sigaction to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: reads the current action only (no new one is given).
    let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut action) };
    read == 0 && action.sa_sigaction == libc::SIG_IGN
}

fn signal_set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset adds valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// For a child between fork and exec: a blocked mask survives exec, and the program must
/// get the signals pooltrace blocks for itself. Async-signal-safe.
pub fn unblock_in_child() -> io::Result<()> {
    let set = handled_set();
    // SAFETY: a valid set; sigprocmask is async-signal-safe.
    if unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
