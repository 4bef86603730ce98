//! The terminal while `top` runs: raw mode and the alternate screen, given back on every way
//! out (a drop on return or error, the panic hook); keys and resizes read on a thread of
//! their own; and standard error held while the screen is up, since a line written there
//! would tear the view: what pooltrace says meanwhile is shown in the footer and written out
//! once the terminal is restored.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Stdout},
    os::fd::FromRawFd,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        Arc, Once,
    },
    thread::JoinHandle,
    time::Duration,
};

use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyEvent, KeyEventKind},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    Frame, Terminal,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{Error, Result};

/// What reaches `top`'s loop from the terminal and from pooltrace's own standard error.
pub(crate) enum Input {
    Key(KeyEvent),
    Resize,
    /// A line pooltrace wrote to standard error.
    Said(String),
}

/// Standard error's own descriptor while it is held (-1 when it is not).
static HELD_STDERR: AtomicI32 = AtomicI32::new(-1);

/// The terminal in `top`'s hands; dropping it gives it back as it was.
pub(crate) struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    stop_keys: Arc<AtomicBool>,
    said: Option<JoinHandle<Vec<String>>>,
}

impl Screen {
    /// Takes the terminal: every key, resize and line said goes to `inputs`.
    pub(crate) fn enter(inputs: UnboundedSender<Input>) -> Result<Self> {
        let failed = |source| Error::Terminal { source };
        install_panic_hook();
        let said = hold_stderr(inputs.clone()).map_err(failed)?;
        let mut screen = Self {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout())).map_err(failed)?,
            stop_keys: Arc::new(AtomicBool::new(false)),
            said: Some(said),
        };
        terminal::enable_raw_mode().map_err(failed)?;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide).map_err(failed)?;
        screen.terminal.clear().map_err(failed)?;
        read_keys(inputs, Arc::clone(&screen.stop_keys));
        Ok(screen)
    }

    pub(crate) fn draw(&mut self, render: impl FnOnce(&mut Frame)) -> Result<()> {
        self.terminal
            .draw(render)
            .map(|_| ())
            .map_err(|source| Error::Terminal { source })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Not joined: on a terminal that hung up, crossterm's read never returns.
        self.stop_keys.store(true, Ordering::Relaxed);
        restore_terminal();
        release_stderr();
        let said = self.said.take().and_then(|reader| reader.join().ok());
        for line in said.unwrap_or_default() {
            crate::status!("{line}");
        }
    }
}

/// Leaves the alternate screen and raw mode; harmless when they are not in force.
fn restore_terminal() {
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// A panic restores the terminal and standard error before its message is printed.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            release_stderr();
            default(info);
        }));
    });
}

/// Points standard error at a pipe, whose lines a thread sends to `inputs` and returns
/// once the pipe closes (`release_stderr`).
fn hold_stderr(inputs: UnboundedSender<Input>) -> io::Result<JoinHandle<Vec<String>>> {
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: duplicates descriptor 2, which this process owns.
    let saved = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are this process's; 2 is the copy saved above.
    if unsafe { libc::dup2(pipe[1], libc::STDERR_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the write end now lives on as descriptor 2 alone.
    unsafe { libc::close(pipe[1]) };
    HELD_STDERR.store(saved, Ordering::SeqCst);
    // SAFETY: the read end is this process's and nothing else owns it.
    let reader = BufReader::new(unsafe { File::from_raw_fd(pipe[0]) });
    Ok(std::thread::spawn(move || {
        let mut said = Vec::new();
        for line in reader.lines().map_while(|line| line.ok()) {
            let _ = inputs.send(Input::Said(line.clone()));
            said.push(line);
        }
        said
    }))
}

/// Gives standard error its own descriptor back, which closes the pipe's last write end.
fn release_stderr() {
    let saved = HELD_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor `hold_stderr` duplicated, owned by nothing else.
        unsafe {
            libc::dup2(saved, libc::STDERR_FILENO);
            libc::close(saved);
        }
    }
}

/// Reads keys and resizes until `stop`, waking every 100 ms to check it.
fn read_keys(inputs: UnboundedSender<Input>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let input = match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => match event::read() {
                    Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => Input::Key(key),
                    Ok(Event::Resize(..)) => Input::Resize,
                    Ok(_) => continue,
                    Err(_) => return,
                },
                Err(_) => return,
            };
            if inputs.send(input).is_err() {
                return;
            }
        }
    });
}
