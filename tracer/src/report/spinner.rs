//! A spinner on stderr while something slow runs (reading a large binary's tables), shown
//! only on a terminal and only if it takes long enough to notice.

use std::{
    io::{IsTerminal, Write},
    sync::mpsc::{channel, RecvTimeoutError},
    thread,
    time::Duration,
};

const DELAY: Duration = Duration::from_millis(300);
const FRAMES: [char; 4] = ['|', '/', '-', '\\'];

/// Runs `work`, spinning with `message` meanwhile.
pub fn while_running<T>(message: &str, work: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let (done, finished) = channel::<()>();
    let message = message.to_owned();
    let spinner = thread::spawn(move || {
        if finished.recv_timeout(DELAY) != Err(RecvTimeoutError::Timeout) {
            return;
        }
        for frame in FRAMES.iter().cycle() {
            crate::status_text!("\r{frame} {message}");
            let _ = std::io::stderr().flush();
            if finished.recv_timeout(Duration::from_millis(100)) != Err(RecvTimeoutError::Timeout) {
                crate::status_text!("\r{}\r", " ".repeat(message.len() + 2));
                return;
            }
        }
    });
    let result = work();
    drop(done);
    let _ = spinner.join();
    result
}
