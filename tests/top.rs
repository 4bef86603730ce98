//! `pooltrace top` as a user meets it: in a real terminal (Debian's tmux), typed into with
//! `send-keys` and read with `capture-pane`, against real processes and a real agent.

use std::{
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use pooltrace_tests::{
    assert_one_line_error, fixture, pooltrace_bin, top_command, Agent, Demo, Scratch, Target, Tmux,
};

const GET: &str = "storegw/pool.(*BucketedPool[uint8]).Get";
const PUT: &str = "storegw/pool.(*BucketedPool[uint8]).Put";
/// The demo's pool, as pooltrace names it.
const DEMO_POOL: [&str; 6] = ["--get", GET, "--put", PUT, "--object", "slice-ptr"];
/// The poolfix fixture's pool.
const POOLFIX_POOL: &[&str] = &[
    "--get",
    "main.(*BufPool).Get",
    "--put",
    "main.(*BufPool).Put",
];
/// The demo's leak, as the table shows Get's caller.
const LEAK_CALLER: &str = "store.(*bucketChunkReader).save";

/// The demo under load for `seconds`, and `pooltrace top` on it in a terminal of `size`
/// whose shell runs in a scratch directory.
/// `env` is put before the command line (`NO_COLOR=1 `).
fn top_on_demo(
    name: &str,
    seconds: u32,
    (width, height): (u16, u16),
    env: &str,
) -> (Tmux, Demo, Scratch) {
    let scratch = Scratch::new(&format!("top-{name}"));
    let demo = Demo::start(&fixture("storegw"), seconds);
    let tmux = Tmux::start(name, scratch.0.clone(), width, height);
    let pid = demo.pid().to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend(DEMO_POOL);
    tmux.type_line(&format!("{env}{}", top_command(&args)));
    (tmux, demo, scratch)
}

/// Whether any escape sequence in `styled` sets a foreground colour (SGR 30-38, 90-97).
fn coloured(styled: &str) -> bool {
    let sequences = styled
        .split('\x1b')
        .skip(1)
        .filter_map(|s| s.strip_prefix('['));
    let params = sequences.filter_map(|s| s.split_once('m').map(|(p, _)| p.to_owned()));
    let mut numbers = params.flat_map(|p| p.split(';').map(str::to_owned).collect::<Vec<_>>());
    numbers.any(|n| matches!(n.parse::<u8>(), Ok(30..=38 | 90..=97)))
}

/// The rows of the paths table: the lines under its column titles, down to the footer.
fn table_rows(screen: &[String]) -> Vec<String> {
    let Some(titles) = screen
        .iter()
        .position(|l| l.contains("SCORE") && l.contains("HELD"))
    else {
        return Vec::new();
    };
    let below = screen[titles + 1..]
        .iter()
        .take_while(|l| !l.contains("q quit"));
    below.filter(|l| !l.trim().is_empty()).cloned().collect()
}

/// The first row of the paths table shows the leak, Get's caller first, judged a likely
/// leak (a score of 50 or more: early on, before the healthy path's objects have come back
/// often enough to tell, the two may still trade places).
fn leak_on_top(screen: &[String]) -> bool {
    let score = |row: &String| {
        row.split_whitespace()
            .next()
            .and_then(|s| s.parse::<f64>().ok())
    };
    table_rows(screen)
        .first()
        .is_some_and(|row| row.contains(LEAK_CALLER) && score(row).is_some_and(|s| s >= 50.0))
}

/// The HELD column (the second) of each row.
fn counts(screen: &[String]) -> Vec<u64> {
    let rows = table_rows(screen);
    let second = |row: &String| row.split_whitespace().nth(1).and_then(|n| n.parse().ok());
    rows.iter().filter_map(second).collect()
}

/// The terminal is as the shell left it: the alternate screen gone, the cursor shown, and
/// a typed line echoed and run (no raw mode).
fn assert_terminal_restored(tmux: &Tmux) {
    assert_eq!(
        tmux.query("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
    assert_eq!(tmux.query("#{cursor_flag}"), "1", "the cursor is hidden");
    tmux.type_line("echo typed-$((20 + 22))");
    tmux.until("the shell runs a typed line", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.trim() == "typed-42")
    });
}

#[test]
fn top_puts_the_demo_leak_first_and_every_key_does_what_the_footer_says() {
    let (tmux, demo, scratch) = top_on_demo("keys", 90, (160, 45), "");
    let pid = demo.pid().to_string();

    // Within 15 s the leak is the top row, Get's caller first.
    let screen = tmux.until("the leak on top", Duration::from_secs(15), leak_on_top);
    // Its score is painted red: colour is on without NO_COLOR.
    assert!(
        coloured(&tmux.screen_styled()),
        "no colour without NO_COLOR"
    );
    assert!(
        screen[0].contains(&format!("PID {pid} storegw")),
        "{}",
        screen.join("\n")
    );
    assert!(screen
        .iter()
        .any(|l| l.contains("gets/s") && l.contains("counting")));
    assert!(table_rows(&screen).len() >= 2, "{}", screen.join("\n"));

    // Enter opens it: every frame with file:line, how its objects came back, and why.
    tmux.key("Enter");
    let path = tmux.until("the path opened", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.starts_with("taken at"))
    });
    let text = path.join("\n");
    assert!(
        text.contains("storegw/store.(*BucketStore).SeriesStream  "),
        "{text}"
    );
    assert!(
        text.contains("storegw/store.(*bucketChunkReader).save  "),
        "{text}"
    );
    assert!(text.contains(".go:"), "{text}");
    let why = path.iter().position(|l| l == "why").expect("why");
    assert!(
        !path[why + 1].trim().is_empty() && path[why + 1].starts_with("  "),
        "{text}"
    );
    let given_back = path
        .iter()
        .position(|l| l.starts_with("given back through"))
        .expect("releases");
    assert!(path[given_back + 1].contains("%  "), "{text}");
    assert!(path.iter().any(|l| l.starts_with("hold times")), "{text}");
    tmux.key("Escape");
    tmux.until("the table again", Duration::from_secs(5), leak_on_top);

    // s sorts by count: the HELD column never grows down the table.
    tmux.key("s");
    let sorted = tmux.until("sorted by count", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.contains("by count"))
    });
    let column = counts(&sorted);
    assert!(
        column.len() >= 2 && column.windows(2).all(|w| w[0] >= w[1]),
        "{}",
        sorted.join("\n")
    );

    // / keeps only the paths through a frame: the healthy Series path goes.
    let before = table_rows(&tmux.screen()).len();
    tmux.key("/");
    tmux.run(&["send-keys", "-t", "top", "-l", "SeriesStream"]);
    tmux.key("Enter");
    let filtered = tmux.until("the filter applied", Duration::from_secs(5), |s| {
        s.iter()
            .any(|l| l.contains("call paths matching \"SeriesStream\""))
    });
    let rows = table_rows(&filtered);
    assert!(
        !rows.is_empty() && rows.len() < before,
        "{before} rows, then:\n{}",
        filtered.join("\n")
    );
    tmux.key("Escape");
    tmux.until("the filter cleared", Duration::from_secs(5), |s| {
        !s.iter().any(|l| l.contains("call paths matching"))
    });

    // p freezes the view while tracing goes on; p again shows the newest.
    tmux.key("p");
    let paused = tmux.until("paused", Duration::from_secs(5), |s| {
        s[0].contains("PAUSED")
    });
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(tmux.screen()[0], paused[0], "the header moved while paused");
    tmux.key("p");
    tmux.until("resumed", Duration::from_secs(5), |s| {
        !s[0].contains("PAUSED")
    });

    // w writes the report shown, named in the status line.
    tmux.key("w");
    let written = tmux.until("written", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.contains("wrote pooltrace-top-"))
    });
    let line = written
        .iter()
        .find(|l| l.contains("wrote "))
        .expect("status");
    let name = line.split_whitespace().nth(1).expect("file name");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.0.join(name)).expect("written file"))
            .expect("JSON");
    assert_eq!(json["pid"].as_i64(), Some(demo.pid() as i64));

    // ? shows the keys; any key closes them.
    tmux.key("?");
    tmux.until("the keys", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.contains("pause the view"))
    });
    tmux.key("x");
    tmux.until("the keys closed", Duration::from_secs(5), |s| {
        !s.iter().any(|l| l.contains("pause the view"))
    });

    // q detaches, restores the terminal and prints the final report, naming the leak.
    tmux.quit_top();
    let history = tmux.history();
    assert!(
        history.contains("storegw/store.(*BucketStore).SeriesStream"),
        "{history}"
    );
    assert!(
        history.contains("storegw/store.(*bucketChunkReader).save"),
        "{history}"
    );
    assert_terminal_restored(&tmux);
}

#[test]
fn top_redraws_at_60x15_and_back_colourless_under_no_color_and_sigterm_restores_the_terminal() {
    let (tmux, demo, _scratch) = top_on_demo("resize", 60, (100, 30), "NO_COLOR=1 ");
    let pid = demo.pid().to_string();
    tmux.until("the leak on top", Duration::from_secs(15), leak_on_top);
    // NO_COLOR: no colour at all, even for a likely leak (bold and reverse video remain).
    let styled = tmux.screen_styled();
    assert!(!coloured(&styled), "colour under NO_COLOR: {styled:?}");
    for (width, height) in [(60, 15), (80, 24), (60, 15), (100, 30)] {
        tmux.resize(width, height);
        let screen = tmux.until(
            &format!("redrawn at {width}x{height}"),
            Duration::from_secs(5),
            |s| {
                s.len() == height as usize
                    && s[0].starts_with(&format!("PID {pid}"))
                    && s.iter().any(|l| l.contains("SCORE") && l.contains("HELD"))
                    && s.last()
                        .is_some_and(|l| l.starts_with("q quit") || l.contains("|"))
            },
        );
        // Columns drop by priority: the minute's sparkline needs room.
        let titles = screen.iter().find(|l| l.contains("SCORE")).expect("titles");
        assert_eq!(
            titles.contains("TREND 1m"),
            width >= 100,
            "{}",
            screen.join("\n")
        );
        assert!(screen.iter().all(|l| l.chars().count() <= width as usize));
    }
    // SIGTERM quits as q does: the final report, and the terminal given back.
    let top = format!("pooltrace top --pid {pid} ");
    let status = Command::new("pkill").args(["-TERM", "-f", &top]).status();
    assert!(status.expect("pkill").success());
    tmux.until("top exited", Duration::from_secs(15), |s| {
        s.iter().any(|l| l == "top exited 0")
    });
    let history = tmux.history();
    assert!(
        history.contains("pooltrace: got SIGTERM, detaching"),
        "{history}"
    );
    assert!(
        history.contains("storegw/store.(*BucketStore).SeriesStream"),
        "{history}"
    );
    assert!(!history.contains("panicked"), "{history}");
    assert_terminal_restored(&tmux);
}

#[test]
fn a_target_killed_or_execing_is_named_in_the_header_and_q_still_restores_the_terminal() {
    let sleep = std::fs::canonicalize("/bin/sleep").expect("/bin/sleep");
    for how in ["killed", "execs"] {
        let scratch = Scratch::new(&format!("top-{how}"));
        let mut target = Target::start(&fixture("poolfix-go1.27"));
        let pid = target.pid.to_string();
        let tmux = Tmux::start(how, scratch.0.clone(), 120, 30);
        tmux.type_line(&top_command(&[&["--pid", &pid], POOLFIX_POOL].concat()));
        tmux.until("attached", Duration::from_secs(15), |s| {
            s[0].starts_with(&format!("PID {pid}"))
        });
        target.round();
        // 7 objects a round leak from leakyHandler: the table shows them.
        tmux.until("the leak", Duration::from_secs(10), leaking_row);
        let said = match how {
            "killed" => {
                let status = Command::new("kill").args(["-KILL", &pid]).status();
                assert!(status.expect("kill").success());
                format!("PID {pid} was killed by SIGKILL")
            }
            _ => {
                target.send("exec");
                format!(
                    "PID {pid} called exec: tracing stopped (now running {})",
                    sleep.display()
                )
            }
        };
        let ended = tmux.until("the end said", Duration::from_secs(10), |s| {
            s.iter().any(|l| l.contains(&said))
        });
        // The view stays: the leak is still there to read, and the view no longer moves.
        assert!(leaking_row(&ended), "{how}: {}", ended.join("\n"));
        thread::sleep(Duration::from_millis(2500));
        assert_eq!(tmux.screen()[0], ended[0], "{how}");
        tmux.quit_top();
        let history = tmux.history();
        assert!(
            history.contains(&format!("pooltrace: {said}")),
            "{how}: {history}"
        );
        assert!(history.contains("main.leakyHandler"), "{how}: {history}");
        assert_terminal_restored(&tmux);
    }
}

fn leaking_row(screen: &[String]) -> bool {
    table_rows(screen)
        .first()
        .is_some_and(|r| r.contains("main.leakyHandler"))
}

#[test]
fn top_picks_one_of_an_agents_processes_without_privileges_and_shows_its_top_path() {
    let scratch = Scratch::new("top-agent");
    let demo = Demo::start(&fixture("storegw"), 90);
    let other = Demo::start(&fixture("storegw"), 90);
    let (pid, other_pid) = (demo.pid().to_string(), other.pid().to_string());
    let mut agent_args = vec!["--pid", &pid, "--pid", &other_pid, "--budget", "0"];
    agent_args.extend(DEMO_POOL);
    let mut agent = Agent::start(&agent_args);
    agent.expect_attached(demo.pid(), Duration::from_secs(10));
    agent.expect_attached(other.pid(), Duration::from_secs(10));
    let tmux = Tmux::start("agent", scratch.0.clone(), 160, 40);
    let url = format!("http://{}", agent.addr);
    // As nobody, with no capability at all: top --agent only talks HTTP.
    let line = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all {}",
        top_command(&["--agent", &url])
    );
    tmux.type_line(&line);
    // Two processes: the picker, in PID order, comes first.
    let picker = tmux.until("the picker", Duration::from_secs(15), |s| {
        s.iter()
            .any(|l| l.contains("the agent traces 2 processes: Enter picks one"))
    });
    let row = |p: &str| {
        picker
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("{p} ")))
    };
    let (mine, others) = (row(&pid).expect("row"), row(&other_pid).expect("row"));
    if mine > others {
        tmux.key("Down");
    }
    tmux.key("Enter");
    let screen = tmux.until(
        "the agent's leak on top",
        Duration::from_secs(30),
        leak_on_top,
    );
    assert!(
        screen[0].starts_with(&format!("PID {pid} storegw")),
        "{}",
        screen.join("\n")
    );
    tmux.quit_top();
    let history = tmux.history();
    assert!(
        history.contains("storegw/store.(*bucketChunkReader).save"),
        "{history}"
    );
    assert_terminal_restored(&tmux);
    agent.stop();
}

fn top_without_terminal(args: &[&str]) -> Output {
    Command::new(pooltrace_bin())
        .arg("top")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run pooltrace top")
}

#[test]
fn without_a_terminal_top_refuses_in_one_line_that_names_report_and_stream() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let pid = target.pid.to_string();
    let output = top_without_terminal(&[&["--pid", &pid], POOLFIX_POOL].concat());
    assert_one_line_error(
        &output,
        "pooltrace: error: pooltrace top draws on a terminal and standard output is not one; \
         use `pooltrace report` or `pooltrace stream` to write to a pipe or a file",
    );
    assert!(output.stdout.is_empty());
    target.exit();
}
