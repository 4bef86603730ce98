//! Where results go is checked before anything is attached, and never lets a result vanish:
//! `--output` is created at start, never through a symbolic link, and never over a file
//! without `--force`; a failing stdout is an error, while a stdout closed by its reader
//! (`| head -1`) ends every command quietly with status 0.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Write},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use pooltrace_tests::{fixture, pooltrace_bin, Target, POOLFIX_BUFS, STEP_TIMEOUT};

/// A path of this test run's own in the temporary directory, with nothing at it yet.
fn scratch(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pooltrace-{}-{name}", std::process::id()));
    let _ = fs::remove_file(&path);
    path
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `pooltrace COMMAND ...` for each command that takes `--output`, with `output_args`
/// inserted; `report` and `stream` trace `target`, `run` starts the fixture itself.
fn each_command_with(target: &Target, output_args: &[&str]) -> Vec<(&'static str, Command)> {
    let pid = target.pid.to_string();
    ["report", "stream", "run"]
        .into_iter()
        .map(|name| {
            let mut command = Command::new(pooltrace_bin());
            command.arg(name).args(POOLFIX_BUFS).args(output_args);
            match name {
                "run" => command.arg("--").arg(fixture("poolfix-go1.27")),
                _ => command.args(["--pid", &pid, "--duration", "200ms"]),
            };
            command.stdin(Stdio::null());
            (name, command)
        })
        .collect()
}

/// Asserts the run failed with exit status 1 and exactly `expected` as its only stderr line:
/// nothing was attached (no "attached" line), nothing started, nothing printed.
fn assert_fails_with(name: &str, output: Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
    assert_eq!(stderr.lines().collect::<Vec<_>>(), [expected], "{name}");
    assert!(output.stdout.is_empty(), "{name}: {:?}", output.stdout);
}

#[test]
fn a_planted_symlink_is_refused_before_attaching_and_nothing_is_written_through_it() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let victim = scratch("victim");
    fs::write(&victim, "the victim's content\n").expect("victim");
    let link = scratch("planted-link");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let link_text = text(&link);
    for force in [&[][..], &["--force"][..]] {
        let mut args = vec!["--output", &link_text];
        args.extend(force);
        for (name, mut command) in each_command_with(&target, &args) {
            let output = command.output().expect("run pooltrace");
            assert_fails_with(
                name,
                output,
                &format!(
                    "pooltrace: error: cannot write {}: it is a symbolic link; pooltrace never \
                     writes through one",
                    link.display()
                ),
            );
        }
    }
    assert_eq!(fs::read_link(&link).expect("still a link"), victim);
    assert_eq!(
        fs::read_to_string(&victim).expect("victim"),
        "the victim's content\n"
    );
    let _ = fs::remove_file(&link);
    let _ = fs::remove_file(&victim);
}

#[test]
fn a_symlink_to_nothing_creates_nothing() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let nowhere = scratch("link-target-that-does-not-exist");
    let link = scratch("dangling-link");
    std::os::unix::fs::symlink(&nowhere, &link).expect("symlink");
    for (name, mut command) in each_command_with(&target, &["--output", &text(&link)]) {
        let output = command.output().expect("run pooltrace");
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(!nowhere.exists(), "{name} created the link's target");
    }
    let _ = fs::remove_file(&link);
}

#[test]
fn a_directory_that_does_not_exist_is_named_before_attaching() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let path = scratch("no-such-directory").join("leaks.json");
    for (name, mut command) in each_command_with(&target, &["--output", &text(&path)]) {
        assert_fails_with(
            name,
            command.output().expect("run pooltrace"),
            &format!(
                "pooltrace: error: cannot write {}: No such file or directory",
                path.display()
            ),
        );
    }
}

#[test]
fn an_existing_file_is_refused_without_force_and_left_as_it_was() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let path = scratch("existing");
    fs::write(&path, "someone's notes\n").expect("existing file");
    for (name, mut command) in each_command_with(&target, &["--output", &text(&path)]) {
        assert_fails_with(
            name,
            command.output().expect("run pooltrace"),
            &format!(
                "pooltrace: error: cannot write {}: it already exists (use --force to replace it)",
                path.display()
            ),
        );
    }
    assert_eq!(
        fs::read_to_string(&path).expect("kept"),
        "someone's notes\n"
    );
    let _ = fs::remove_file(&path);
}

#[test]
fn force_replaces_an_existing_file_with_the_whole_report() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    target.round();
    let path = scratch("replaced.json");
    fs::write(&path, "x".repeat(100_000)).expect("existing file");
    let output = Command::new(pooltrace_bin())
        .args(["report", "--pid", &target.pid.to_string()])
        .args(POOLFIX_BUFS)
        .args(["--duration", "200ms", "--interval", "0", "--format", "json"])
        .args(["--output", &text(&path), "--force"])
        .stdin(Stdio::null())
        .output()
        .expect("run pooltrace");
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty());
    // The whole file is the report: the longer old content was cut, not overwritten in part.
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("report")).expect("only JSON");
    assert_eq!(report["pools"][0]["get"], "main.(*BufPool).Get");
    let _ = fs::remove_file(&path);
}

#[test]
fn force_replaces_an_existing_file_with_the_events_streamed() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let path = scratch("replaced.log");
    fs::write(&path, "old line\n".repeat(10_000)).expect("existing file");
    let mut child = Command::new(pooltrace_bin())
        .args(["stream", "--pid", &target.pid.to_string()])
        .args(POOLFIX_BUFS)
        .args(["--output", &text(&path), "--force"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pooltrace stream");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = stderr.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.starts_with("pooltrace: streaming"), "{first}");
    let counts = target.round();
    target.exit();
    assert!(wait(&mut child).success());
    let events = fs::read_to_string(&path).expect("events");
    assert!(!events.contains("old line"), "{events}");
    assert_eq!(
        events.lines().filter(|l| l.contains(" get ")).count() as u64,
        counts.get("buf_gets")
    );
    let _ = fs::remove_file(&path);
}

#[test]
fn a_run_that_makes_no_report_leaves_no_file_and_keeps_an_existing_one() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let pid = target.pid.to_string();
    let fails = |output: &Path, force: &[&str]| {
        Command::new(pooltrace_bin())
            .args(["report", "--pid", &pid])
            .args([
                "--get",
                "main.(*BufPool).Gett",
                "--put",
                "main.(*BufPool).Put",
            ])
            .args(["--output", &text(output)])
            .args(force)
            .output()
            .expect("run pooltrace")
    };
    let fresh = scratch("never-written.json");
    assert_eq!(fails(&fresh, &[]).status.code(), Some(1));
    assert!(!fresh.exists(), "an empty file was left behind");
    let existing = scratch("kept.json");
    fs::write(&existing, "an earlier report\n").expect("existing file");
    assert_eq!(fails(&existing, &["--force"]).status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(&existing).expect("kept"),
        "an earlier report\n"
    );
    let _ = fs::remove_file(&existing);
}

/// Asserts a full stdout failed the run with exactly one error line, its last.
fn assert_stdout_full(name: &str, output: Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(
        errors,
        ["pooltrace: error: cannot write to standard output: No space left on device"],
        "{name}: {stderr}"
    );
    assert_eq!(stderr.lines().last(), errors.first().copied(), "{name}");
}

fn dev_full() -> File {
    File::options()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full")
}

#[test]
fn a_full_stdout_fails_report_after_a_whole_trace() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let output = Command::new(pooltrace_bin())
        .args(["report", "--pid", &target.pid.to_string()])
        .args(POOLFIX_BUFS)
        .args(["--duration", "200ms"])
        .stdin(Stdio::null())
        .stdout(dev_full())
        .output()
        .expect("run pooltrace");
    assert_stdout_full("report", output);
}

#[test]
fn a_full_stdout_fails_list() {
    let output = Command::new(pooltrace_bin())
        .args(["list", "--binary", &text(&fixture("poolfix-go1.27"))])
        .stdout(dev_full())
        .output()
        .expect("run pooltrace");
    assert_stdout_full("list", output);
}

/// `command | head -1` with real head: the line head printed, and pooltrace once it has
/// exited by itself. Until then `feed` drives the target, told whether head has gone.
fn piped_to_head(mut command: Command, mut feed: impl FnMut(&mut Child, bool)) -> (String, Child) {
    let mut pooltrace = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pooltrace");
    let stdout = pooltrace.stdout.take().expect("piped stdout");
    // Spawned from a temporary, so that head holds the pipe's only reading end.
    let mut head = Command::new("head")
        .arg("-1")
        .stdin(OwnedFd::from(stdout))
        .stdout(Stdio::piped())
        .spawn()
        .expect("head -1");
    let deadline = Instant::now() + STEP_TIMEOUT;
    while matches!(pooltrace.try_wait(), Ok(None)) {
        assert!(
            Instant::now() < deadline,
            "pooltrace went on after head -1 left"
        );
        let head_gone = matches!(head.try_wait(), Ok(Some(_)));
        feed(&mut pooltrace, head_gone);
        thread::sleep(Duration::from_millis(50));
    }
    let head = head.wait_with_output().expect("head -1 output");
    (
        String::from_utf8_lossy(&head.stdout).into_owned(),
        pooltrace,
    )
}

/// Asserts pooltrace ended with status 0, without an error or a panic.
fn assert_ended_quietly(name: &str, pooltrace: Child) -> Vec<String> {
    assert_ended_without_error(name, pooltrace, 0)
}

/// Asserts pooltrace ended with `expected` as its status, without an error or a panic.
fn assert_ended_without_error(name: &str, mut pooltrace: Child, expected: i32) -> Vec<String> {
    let status = wait(&mut pooltrace);
    let stderr: Vec<String> = BufReader::new(pooltrace.stderr.take().expect("stderr"))
        .lines()
        .map_while(Result::ok)
        .collect();
    assert_eq!(status.code(), Some(expected), "{name}: {stderr:?}");
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("error") || l.contains("panicked")),
        "{name}: {stderr:?}"
    );
    stderr
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        assert!(Instant::now() < deadline, "pooltrace does not exit");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn report_piped_to_head_stops_tracing_and_detaches_quietly() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let mut command = Command::new(pooltrace_bin());
    // No --duration: only the closed pipe can end it while the target lives.
    command
        .args(["report", "--pid", &target.pid.to_string()])
        .args(POOLFIX_BUFS)
        .args(["--interval", "100ms"])
        .stdin(Stdio::null());
    let (line, pooltrace) = piped_to_head(command, |_, _| {});
    assert!(line.contains("main.(*BufPool).Get: "), "{line}");
    let stderr = assert_ended_quietly("report", pooltrace);
    assert!(
        stderr.contains(&"pooltrace: standard output closed, detaching".to_owned()),
        "{stderr:?}"
    );
    // Detached, the target works on untouched.
    target.round();
    assert_eq!(target.exit().0.code(), Some(3));
}

#[test]
fn stream_piped_to_head_stops_quietly() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let mut command = Command::new(pooltrace_bin());
    command
        .args(["stream", "--pid", &target.pid.to_string()])
        .args(POOLFIX_BUFS)
        .stdin(Stdio::null());
    // Events come only from rounds; rounds go on until the closed pipe ends the stream.
    let (line, pooltrace) = piped_to_head(command, |_, _| {
        target.round();
    });
    assert!(
        line.contains(" obj=0x") && line.ends_with("[main.(*BufPool).Get]\n"),
        "{line}"
    );
    assert_ended_quietly("stream", pooltrace);
    assert!(target.is_running());
}

/// `run` exits with its program's status, however its own output fares: here the program
/// itself dies of SIGPIPE writing to the pipe head left.
#[test]
fn run_piped_to_head_ends_without_an_error_and_with_its_programs_status() {
    let mut command = Command::new(pooltrace_bin());
    command
        .arg("run")
        .args(POOLFIX_BUFS)
        .args(["--interval", "0", "--"])
        .arg(fixture("poolfix-go1.27"))
        .stdin(Stdio::piped());
    let mut commands_sent = false;
    // The program's own first line goes to head; once head has gone, the program works and
    // exits, and the final report meets the closed pipe.
    let (line, pooltrace) = piped_to_head(command, |pooltrace, head_gone| {
        if head_gone && !commands_sent {
            let mut stdin = pooltrace.stdin.take().expect("piped stdin");
            stdin.write_all(b"round\nexit\n").expect("commands");
            commands_sent = true;
        }
    });
    assert!(line.starts_with("ready "), "{line}");
    let stderr = assert_ended_without_error("run", pooltrace, 128 + libc::SIGPIPE);
    assert!(
        stderr.iter().any(|l| l.ends_with("was killed by SIGPIPE")),
        "{stderr:?}"
    );
}

/// When its periodic table meets the closed pipe, `run` detaches but still waits for its
/// program, which goes on running, and ends with its status.
#[test]
fn run_whose_stdout_closes_waits_for_its_program() {
    let mut command = Command::new(pooltrace_bin());
    command
        .arg("run")
        .args(POOLFIX_BUFS)
        .args(["--interval", "100ms", "--"])
        .arg(fixture("poolfix-go1.27"))
        .stdin(Stdio::piped());
    let mut head_gone_at = None;
    let (_, pooltrace) = piped_to_head(command, |pooltrace, head_gone| match head_gone_at {
        None if head_gone => head_gone_at = Some(Instant::now()),
        // Detached a while ago, and still waiting for the program: now let it go.
        Some(at) if at.elapsed() > Duration::from_millis(1500) && pooltrace.stdin.is_some() => {
            let mut stdin = pooltrace.stdin.take().expect("piped stdin");
            stdin.write_all(b"exit\n").expect("exit command");
        }
        _ => {}
    });
    let stderr = assert_ended_without_error("run", pooltrace, 128 + libc::SIGPIPE);
    let detached = stderr
        .iter()
        .position(|l| l == "pooltrace: standard output closed, detaching");
    let waited = stderr
        .iter()
        .position(|l| l.ends_with("was killed by SIGPIPE"));
    assert!(detached.is_some() && waited > detached, "{stderr:?}");
}

#[test]
fn list_piped_to_head_ends_quietly() {
    let mut command = Command::new(pooltrace_bin());
    command.args(["list", "--binary", &text(&fixture("poolfix-go1.27"))]);
    let (line, pooltrace) = piped_to_head(command, |_, _| {});
    assert!(line.contains("pool-like Get/Put pairs"), "{line}");
    assert_ended_quietly("list", pooltrace);
}

/// A pipe whose reader has already gone: every write to it fails with EPIPE at once.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors, each owned once below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: fresh descriptors owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    write_end
}

#[test]
fn a_pipe_closed_before_anything_is_written_ends_list_and_report_quietly() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let list = Command::new(pooltrace_bin())
        .args(["list", "--binary", &text(&fixture("poolfix-go1.27"))])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pooltrace list");
    assert_ended_quietly("list", list);
    let report = Command::new(pooltrace_bin())
        .args(["report", "--pid", &target.pid.to_string()])
        .args(POOLFIX_BUFS)
        .args(["--duration", "200ms", "--interval", "0"])
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pooltrace report");
    assert_ended_quietly("report", report);
}

/// `--dry-run` with `--output` writes the planned sites to the file, as the final report
/// would be: nothing on stdout, and the same refusal of a file already there.
#[test]
fn a_dry_run_writes_its_sites_to_the_output_file() {
    let target = Target::start(&fixture("poolfix-go1.27"));
    let path = scratch("dry-run.json");
    let pid = target.pid.to_string();
    let args = [
        "report",
        "--pid",
        &pid,
        "--dry-run",
        "--output",
        &text(&path),
    ];
    let dry_run = Command::new(pooltrace_bin())
        .args(args)
        .args(POOLFIX_BUFS)
        .output()
        .expect("pooltrace --dry-run");
    assert!(dry_run.status.success(), "{dry_run:?}");
    assert!(dry_run.stdout.is_empty());
    let sites: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("sites file")).expect("JSON");
    let mut roles: Vec<&str> = sites
        .as_array()
        .expect("sites")
        .iter()
        .filter_map(|s| s["role"].as_str())
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["get-ret", "get-ret", "get-ret", "put"]);
    let again = Command::new(pooltrace_bin())
        .args(args)
        .args(POOLFIX_BUFS)
        .output()
        .expect("pooltrace --dry-run again");
    assert_fails_with(
        "report --dry-run",
        again,
        &format!(
            "pooltrace: error: cannot write {}: it already exists (use --force to replace it)",
            path.display()
        ),
    );
    let _ = fs::remove_file(&path);
}
