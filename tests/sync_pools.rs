//! Healthy programs leave `sync.Pool` objects out in ordinary ways that real daemons were seen
//! to: a server that drops a reader per closed connection (Go 1.19's `net/http`), idle
//! keep-alive connections that each hold a reader and a writer, and a wrapper whose Put
//! boxes a new pointer that no Get ever handed out. What such a path holds grows, and the
//! report must show it, with what it may be, without making it a suspect.

use std::{thread, time::Duration};

use pooltrace_tests::{fixture, pool, suspected_leaks, Target, Tracer, Value};

/// Traces the `httppools` fixture's sync pools while `command` runs eight times, 650 ms
/// apart (five 1 s intervals or more: a growth reason needs four points of trend, and the
/// final report amends the last rather than adding one); returns the sync pool's report.
fn traced(build: &str, command: &str) -> Value {
    let mut target = Target::start(&fixture(build));
    let args = ["--pool", "sync", "--interval", "1s", "--top=1000"];
    let tracer = Tracer::attach(target.pid, &args);
    let verb = command.split_whitespace().next().unwrap_or(command);
    for _ in 0..8 {
        target.send(command);
        target.expect_line(&format!("done {verb}"));
        thread::sleep(Duration::from_millis(650));
    }
    let report = tracer.interrupt().json();
    target.exit();
    let found = suspected_leaks(&report, true);
    assert!(found.is_empty(), "false suspects:\n{}", found.join("\n"));
    pool(&report, "sync.(*Pool).Get").clone()
}

/// The paths whose reasons say what they hold grew.
fn grown(sync: &Value) -> Vec<&Value> {
    (sync["stacks"].as_array().expect("stacks").iter())
        .filter(|s| {
            s["reasons"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r.as_str().unwrap_or("").contains(" grew in "))
            })
        })
        .collect()
}

fn reasons(stack: &Value) -> String {
    stack["reasons"].to_string()
}

/// One request per connection, closed by the client: on Go 1.19 every connection drops a
/// `textproto.Reader`, which grows, and is said to be held or dropped, not a leak.
#[test]
fn one_request_per_connection_is_no_suspect_go119() {
    let sync = traced("httppools-go1.19", "oneshot 40");
    let grown = grown(&sync);
    assert!(
        grown
            .iter()
            .any(|s| s.to_string().contains("newTextprotoReader")),
        "the dropped readers did not show as growth: {sync:#}"
    );
    for stack in grown {
        assert!(
            reasons(stack).contains("which a sync pool allows"),
            "{stack:#}"
        );
    }
}

#[test]
fn one_request_per_connection_is_no_suspect_go127() {
    traced("httppools-go1.27", "oneshot 40");
}

/// Keep-alive connections left idle, more every half second: on Go 1.19 their pooled
/// readers and writers grow with them, held by long-lived owners.
#[test]
fn idle_keepalive_connections_are_no_suspect_go119() {
    let sync = traced("httppools-go1.19", "keepalive 10");
    let grown = grown(&sync);
    assert!(
        !grown.is_empty(),
        "the held readers did not show as growth: {sync:#}"
    );
    for stack in grown {
        assert!(
            reasons(stack).contains("held by long-lived owners"),
            "{stack:#}"
        );
    }
}

/// Go 1.27's server gives an idle connection's buffers back: nothing grows, nothing is
/// suspected.
#[test]
fn idle_keepalive_connections_are_no_suspect_go127() {
    traced("httppools-go1.27", "keepalive 10");
}

/// A wrapper whose Put boxes a new pointer: at `sync.Pool`'s level no Put matches, so every
/// object it takes looks held, and the reason points to tracing the wrapper.
fn a_wrapper_that_reboxes_on_put_is_no_suspect(build: &str) {
    let sync = traced(build, "rebox 200");
    let reboxed: Vec<&Value> = grown(&sync)
        .into_iter()
        .filter(|s| s.to_string().contains("main.(*bufferPool).Get"))
        .collect();
    assert!(
        !reboxed.is_empty(),
        "the wrapper's Gets did not show as growth: {sync:#}"
    );
    for stack in reboxed {
        assert!(
            reasons(stack).contains("none of its objects ever came back"),
            "{stack:#}"
        );
    }
}

#[test]
fn a_wrapper_that_reboxes_on_put_is_no_suspect_go119() {
    a_wrapper_that_reboxes_on_put_is_no_suspect("httppools-go1.19");
}

#[test]
fn a_wrapper_that_reboxes_on_put_is_no_suspect_go127() {
    a_wrapper_that_reboxes_on_put_is_no_suspect("httppools-go1.27");
}
