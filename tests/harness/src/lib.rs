//! Driving child processes by the lines they print, each wait bounded in time, asking an
//! HTTP endpoint (the agent's), the Caddy site both load, and a tmux terminal: shared by the
//! integration tests (which panic on a failure) and `cargo xtask bench` (which reports it).
//! It depends on nothing of pooltrace's, so xtask builds even while the eBPF object is stale.

use std::{
    ffi::OsStr,
    fmt,
    io::{self, BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc::{channel, Receiver},
    thread,
    time::{Duration, Instant},
};

/// The lines of a child's output as they come, read on a thread of their own so that a wait
/// can end at a deadline; every line received so far is kept, for messages.
pub struct Lines {
    receiver: Receiver<String>,
    /// Every line received so far, in order.
    pub seen: Vec<String>,
}

/// No line matching what was waited for came in time (or the stream ended).
#[derive(Debug)]
pub struct NoLine {
    /// What was waited for.
    pub wanted: String,
    /// Every line the stream gave meanwhile and before.
    pub seen: Vec<String>,
}

impl fmt::Display for NoLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no line {}; it printed {:?}", self.wanted, self.seen)
    }
}

impl std::error::Error for NoLine {}

impl Lines {
    /// Starts reading `stream` line by line.
    pub fn of(stream: impl Read + Send + 'static) -> Self {
        let (send, receiver) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            receiver,
            seen: Vec::new(),
        }
    }

    /// The next line starting with `prefix`, within `limit`.
    pub fn starting(&mut self, prefix: &str, limit: Duration) -> Result<String, NoLine> {
        self.matching(
            &format!("starting {prefix:?}"),
            |l| l.starts_with(prefix),
            limit,
        )
    }

    /// The next line for which `matches` holds (`wanted` describes it), within `limit`.
    pub fn matching(
        &mut self,
        wanted: &str,
        matches: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<String, NoLine> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.receiver.recv_timeout(left) else {
                return Err(NoLine {
                    wanted: wanted.to_owned(),
                    seen: self.seen.clone(),
                });
            };
            self.seen.push(line.clone());
            if matches(&line) {
                return Ok(line);
            }
        }
    }

    /// Every line until the stream ends (every writer has closed it) or `limit` passes.
    pub fn until_end(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self
            .receiver
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// Every line received so far, without waiting, in order (kept in `seen` too).
    pub fn drain(&mut self) -> Vec<String> {
        let fresh: Vec<String> = self.receiver.try_iter().collect();
        self.seen.extend(fresh.iter().cloned());
        fresh
    }
}

/// One HTTP/1.0 GET of `path` from `addr` (the server closes the connection after it): the
/// status and the body.
pub fn http_get(addr: &str, path: &str, limit: Duration) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(limit))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let status = String::from_utf8_lossy(&response[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    Ok((status, response[split + 4..].to_vec()))
}

/// The value of the first series `name{labels...}` in an OpenMetrics text whose labels
/// include all of `labels` (any series of `name` when `labels` is empty).
pub fn metric_sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let all = labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.trim().parse().ok())?
    })
}

/// Caddy (`caddy`) serving, on `127.0.0.1:port`, a 700 KB page gzipped from `dir`: writes
/// the page and a Caddyfile there and returns the command that runs it, with its state kept
/// in `dir` too. The tests and the bench load it the same way.
pub fn caddy_serving_gzip(caddy: &Path, dir: &Path, port: u16) -> io::Result<Command> {
    std::fs::create_dir_all(dir)?;
    let page: String = (0..20_000)
        .map(|i| format!("line {i} of a page worth compressing\n"))
        .collect();
    std::fs::write(dir.join("index.html"), page)?;
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}}\nhttp://127.0.0.1:{port} {{\n\troot * {}\n\tencode gzip\n\tfile_server\n}}\n",
            dir.display()
        ),
    )?;
    let mut command = Command::new(caddy);
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir);
    Ok(command)
}

/// A tmux server of its own (`tmux -L socket`) with one window, `top`, killed on drop: the
/// real terminal that `pooltrace top`'s tests and its bench type into and read.
pub struct Tmux {
    program: PathBuf,
    socket: String,
}

impl Tmux {
    /// Runs `command` in a window of `width` x `height` whose working directory is `dir`.
    pub fn start(
        program: &Path,
        socket: String,
        (width, height): (u16, u16),
        dir: &Path,
        command: &[&OsStr],
    ) -> io::Result<Self> {
        let tmux = Self {
            program: program.to_path_buf(),
            socket,
        };
        let (width, height) = (width.to_string(), height.to_string());
        let mut args: Vec<&OsStr> = ["-f", "/dev/null", "new-session", "-d", "-s", "top", "-x"]
            .map(OsStr::new)
            .to_vec();
        args.extend([OsStr::new(&width), OsStr::new("-y"), OsStr::new(&height)]);
        args.extend([OsStr::new("-c"), dir.as_os_str()]);
        args.extend(command);
        tmux.run(&args)?;
        Ok(tmux)
    }

    /// Runs a tmux command against this server; what it printed.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> io::Result<String> {
        let output = Command::new(&self.program)
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(io::Error::other(format!("tmux failed: {}", said.trim())));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// What the window shows now, a string a line.
    pub fn screen(&self) -> io::Result<Vec<String>> {
        let text = self.run(&["capture-pane", "-p", "-t", "top"])?;
        Ok(text.lines().map(str::to_owned).collect())
    }

    /// The PID of what runs in the window (tmux runs a command of several words without a
    /// shell).
    pub fn pane_pid(&self) -> io::Result<u32> {
        let pid = self.run(&["list-panes", "-t", "top", "-F", "#{pane_pid}"])?;
        pid.trim().parse().map_err(io::Error::other)
    }

    /// Waits until the screen passes `test`; the screen that did, or a timeout that shows
    /// the last one.
    pub fn until(
        &self,
        limit: Duration,
        test: impl Fn(&[String]) -> bool,
    ) -> io::Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen()?;
            if test(&screen) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                let message = format!("not within {limit:?}; the screen:\n{}", screen.join("\n"));
                return Err(io::Error::new(io::ErrorKind::TimedOut, message));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_finds_its_line_or_says_what_came_instead() {
        let mut lines = Lines::of("ready 42\ncounts a=1\n".as_bytes());
        assert_eq!(
            lines.starting("counts", Duration::from_secs(5)).unwrap(),
            "counts a=1"
        );
        let missing = lines
            .starting("bye", Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(missing.seen, ["ready 42", "counts a=1"]);
        assert_eq!(
            missing.to_string(),
            "no line starting \"bye\"; it printed [\"ready 42\", \"counts a=1\"]"
        );
    }
}
