//! Diagnostics about pooltrace itself, from user space and from the kernel side, through
//! `log` into one env_logger for the whole binary: off unless `RUST_LOG` or `--debug` asks.
//! The kernel side's messages (aya-log, target `pooltrace::kernel`) arrive through a thread
//! that drains their ring buffer; they name sites by attach cookie and pools by index, and
//! are given names here. Every message is rate-limited by its kind and site, so a fault on
//! every call cannot flood a terminal or an agent's log, and what was held back is counted
//! and said.

use std::{
    collections::HashMap,
    fmt,
    io::Write as _,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::{Level, LevelFilter, Log, Metadata, Record};
use tracer_common::names::KERNEL_LOG_TARGET;

/// One message of a kind from a site is shown at most this often; the rest are counted.
const WINDOW: Duration = Duration::from_secs(10);

/// How long the drain waits for the kernel's next message before it looks at its stop flag.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Installs the logger for the whole binary: `RUST_LOG`'s filters, then `--debug`'s
/// (`pooltrace=debug`). Called once, before any command runs.
pub fn init(debug: bool) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Off);
    if let Ok(filters) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filters);
    }
    if debug {
        builder.filter_module("pooltrace", LevelFilter::Debug);
    }
    builder.format(|out, record| {
        let level = record.level().as_str().to_ascii_lowercase();
        writeln!(
            out,
            "pooltrace: {level} {}: {}",
            record.target(),
            record.args()
        )
    });
    let inner = builder.build();
    let max = inner.filter();
    let diagnostics = LOGGER.get_or_init(|| Diagnostics {
        inner,
        held_back: Mutex::new(HashMap::new()),
    });
    if log::set_logger(diagnostics).is_ok() {
        log::set_max_level(max);
    }
}

/// Says what the rate limit held back and has not said yet. Called as the binary ends.
pub fn finish() {
    if let Some(diagnostics) = LOGGER.get() {
        diagnostics.say_all_held_back();
    }
}

/// The one logger, kept where [`finish`] finds it (`log` hands out only a `dyn Log`).
static LOGGER: OnceLock<Diagnostics> = OnceLock::new();

/// The most verbose level the kernel side's messages are wanted at, as aya-log numbers it
/// (1 error to 5 trace), or 0 for none: the value of its `AYA_LOG_LEVEL` global.
pub(crate) fn kernel_level() -> u8 {
    [
        (Level::Trace, 5),
        (Level::Debug, 4),
        (Level::Info, 3),
        (Level::Warn, 2),
        (Level::Error, 1),
    ]
    .into_iter()
    .find(|&(level, _)| log::log_enabled!(target: KERNEL_LOG_TARGET, level))
    .map_or(0, |(_, number)| number)
}

/// Names for the attach cookies and pool indices the kernel's messages carry, as the
/// probes are placed. A slot taken over by another process overwrites its names.
pub(crate) fn name_sites(sites: impl IntoIterator<Item = (u64, String)>) {
    if let Ok(mut names) = names().lock() {
        names.sites.extend(sites);
    }
}

/// As [`name_sites`], for pools.
pub(crate) fn name_pools(pools: impl IntoIterator<Item = (u32, String)>) {
    if let Ok(mut names) = names().lock() {
        (names.pools).extend(pools.into_iter().map(|(i, s)| (u64::from(i), s)));
    }
}

#[derive(Default)]
struct Names {
    sites: HashMap<u64, String>,
    pools: HashMap<u64, String>,
}

fn names() -> &'static Mutex<Names> {
    static NAMES: OnceLock<Mutex<Names>> = OnceLock::new();
    NAMES.get_or_init(Mutex::default)
}

impl Names {
    /// `text` with each `site N` and `pool N` followed by what N is, where known.
    fn describe(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 80);
        let mut rest = text;
        while let Some((at, word, table)) = self.next_number(rest) {
            let (before, after) = rest.split_at(at + word.len());
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            out.push_str(before);
            out.push_str(&after[..digits]);
            let name = after[..digits]
                .parse()
                .ok()
                .and_then(|n: u64| table.get(&n));
            if let Some(name) = name {
                out.push_str(&format!(" ({name})"));
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }

    /// The first `site ` or `pool ` in `text`: where, which, and its table.
    fn next_number<'a>(
        &'a self,
        text: &str,
    ) -> Option<(usize, &'static str, &'a HashMap<u64, String>)> {
        let site = text.find("site ").map(|at| (at, "site ", &self.sites));
        let pool = text.find("pool ").map(|at| (at, "pool ", &self.pools));
        match (site, pool) {
            (Some(s), Some(p)) => Some(if s.0 <= p.0 { s } else { p }),
            (s, p) => s.or(p),
        }
    }
}

/// env_logger behind a rate limit, with the kernel's sites and pools named.
struct Diagnostics {
    inner: env_logger::Logger,
    /// Per kind of message and site (`read-fault: site 3`): when one was last shown, and
    /// how many have been held back since.
    held_back: Mutex<HashMap<(String, String), (Instant, u64)>>,
}

impl Diagnostics {
    fn say(&self, level: Level, target: &str, text: fmt::Arguments) {
        self.inner.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(text)
                .build(),
        );
    }

    /// Whether a message under `key` may be shown now; if so, first says how many like it
    /// were held back.
    fn admit(&self, level: Level, target: &str, key: (String, String)) -> bool {
        let now = Instant::now();
        let Ok(mut held_back) = self.held_back.lock() else {
            return true;
        };
        let earlier = held_back.get_mut(&key).map(|(shown, held)| {
            let due = now.duration_since(*shown) >= WINDOW;
            match due {
                true => {
                    *shown = now;
                    Some(std::mem::take(held))
                }
                false => {
                    *held += 1;
                    None
                }
            }
        });
        match earlier {
            None => {
                held_back.insert(key, (now, 0));
                true
            }
            Some(None) => false,
            Some(Some(held)) => {
                drop(held_back);
                if held > 0 {
                    self.say_held_back(level, target, &key.1, held);
                }
                true
            }
        }
    }

    /// Every count held back and not said yet.
    fn say_all_held_back(&self) {
        let held: Vec<((String, String), u64)> = match self.held_back.lock() {
            Ok(mut held_back) => held_back
                .iter_mut()
                .filter(|(_, (_, held))| *held > 0)
                .map(|(key, (_, held))| (key.clone(), std::mem::take(held)))
                .collect(),
            Err(_) => Vec::new(),
        };
        for ((target, kind), count) in held {
            self.say_held_back(Level::Warn, &target, &kind, count);
        }
    }

    fn say_held_back(&self, level: Level, target: &str, kind: &str, held: u64) {
        let window = WINDOW.as_secs();
        self.say(
            level,
            target,
            format_args!("{kind}: {held} more like it suppressed (one a {window}s is shown)"),
        );
    }
}

impl Log for Diagnostics {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        let key = (record.target().to_owned(), kind_of(&text).to_owned());
        if !self.admit(record.level(), record.target(), key) {
            return;
        }
        let text = match record.target() {
            KERNEL_LOG_TARGET => names().lock().map_or(text.clone(), |n| n.describe(&text)),
            _ => text,
        };
        self.say(record.level(), record.target(), format_args!("{text}"));
    }

    // aya-log flushes after every record: what was held back is said by `finish` alone.
    fn flush(&self) {
        self.inner.flush();
    }
}

/// What a message is about, for its rate limit: its text up to the second colon, e.g.
/// `read-fault: site 3 pool 0` (the kernel's kind, site and pool).
fn kind_of(text: &str) -> &str {
    let mut colons = text.match_indices(':').map(|(at, _)| at);
    match (colons.next(), colons.next()) {
        (Some(_), Some(second)) => &text[..second],
        (Some(first), None) => &text[..first],
        _ => text,
    }
}

/// The kernel side's messages, drained from their ring buffer into `log` by a thread of
/// their own until this is dropped.
pub(crate) struct KernelLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KernelLog {
    /// Takes the object's aya-log ring buffer (`AYA_LOGS`) and starts draining it.
    pub(crate) fn start(ebpf: &mut aya::Ebpf) -> Result<Self, aya_log::Error> {
        let mut logger = aya_log::EbpfLogger::init(ebpf)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kernel-log".into())
            .spawn(move || loop {
                let last = stopping.load(Ordering::Acquire);
                wait_readable(logger.as_raw_fd(), DRAIN_POLL);
                logger.flush();
                if last {
                    break;
                }
            })
            .inspect_err(|e| crate::status!("pooltrace: the kernel's log messages are lost: {e}"))
            .ok();
        Ok(Self { stop, thread })
    }
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until `fd` is readable, or `timeout`.
fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
}

#[cfg(test)]
mod tests {
    use super::{kind_of, Names};

    #[test]
    fn kernel_messages_get_their_sites_and_pools_named() {
        let mut names = Names::default();
        names
            .sites
            .insert(3, "get-ret main.getBuf+0x4c in PID 7".into());
        names.pools.insert(16, "main.getBuf in PID 7".into());
        assert_eq!(
            names.describe("read-fault: site 3 pool 16: at 0x10"),
            "read-fault: site 3 (get-ret main.getBuf+0x4c in PID 7) pool 16 (main.getBuf in PID 7): at 0x10"
        );
        assert_eq!(names.describe("site 9 pool x"), "site 9 pool x");
    }

    #[test]
    fn a_message_is_limited_by_its_kind_and_site() {
        assert_eq!(
            kind_of("objects-full: site 5 pool 0: goroutine 0xc0: object 0x1"),
            "objects-full: site 5 pool 0"
        );
        assert_eq!(kind_of("attached: 4 sites"), "attached");
        assert_eq!(kind_of("plain"), "plain");
    }
}
