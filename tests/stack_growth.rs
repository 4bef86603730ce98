//! Put is probed on its stack check's branch, which the kernel emulates on every Go release
//! (Go 1.19's next instruction, `sub rsp,N`, would be single-stepped). When the stack must
//! grow at that check, Go runs `morestack` and restarts Put from its entry, so the probe
//! fires twice for one call: the first pass must be recognised and skipped, leaving every
//! count exact. The same holds whether the probes go live through uprobe-multi links (the
//! default where the kernel has them) or through a perf-event uprobe per site (the
//! fallback, forced with `POOLTRACE_UPROBE_LINKS=per-site`).

use pooltrace_tests::{fixture, pool, u64_of, Counts, Target, Tracer};

const BUF_GET: &str = "main.(*BufPool).Get";
const BUF_PUT: &str = "main.(*BufPool).Put";

/// The links pooltrace is asked for: the launcher that sets it, and the summary line.
enum Links {
    Multi,
    PerSite,
}

fn puts_that_grow_the_stack_count_once(build: &str, links: Links) {
    let mut target = Target::start(&fixture(build));
    let (launcher, summary): (&[&str], &str) = match links {
        Links::Multi => (&[], "  links: one uprobe-multi link per program"),
        Links::PerSite => (
            &["env", "POOLTRACE_UPROBE_LINKS=per-site"],
            "  links: one per site (detaching waits ~0.1 s a site): POOLTRACE_UPROBE_LINKS=per-site",
        ),
    };
    let tracer = Tracer::attach_via(launcher, target.pid, &["--get", BUF_GET, "--put", BUF_PUT]);
    target.send("grow");
    let counts = Counts::parse_line(&target.expect_line("counts"));
    let (status, _) = target.exit();
    assert_eq!(status.code(), Some(3));
    let finished = tracer.finish();
    let put_site = format!("  Put {BUF_PUT} at +0x4 (jbe ");
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l.starts_with(&put_site) && l.ends_with(", emulated)")),
        "Put is not probed on its emulated stack-check branch: {:?}",
        finished.stderr
    );
    assert!(
        finished.stderr.iter().any(|l| l == summary),
        "no {summary:?} in {:?}",
        finished.stderr
    );
    let report = finished.json();
    let pool = pool(&report, BUF_GET);
    // 2000 buffers, each given back from the bottom of a fresh goroutine's stack.
    assert_eq!(counts.get("buf_gets"), 2000);
    assert_eq!(
        (u64_of(&pool["gets"]), u64_of(&pool["puts"])),
        (counts.get("buf_gets"), counts.get("buf_puts"))
    );
    for zero in ["outstanding", "unmatched_puts", "collected", "read_faults"] {
        assert_eq!(u64_of(&pool[zero]), 0, "{zero} in {pool:#}");
    }
    // The stack really grew inside Put, and each time the pass to morestack was skipped.
    assert!(u64_of(&pool["put_restarts"]) > 0, "{pool:#}");
}

#[test]
fn puts_that_grow_the_stack_count_once_go1_19() {
    puts_that_grow_the_stack_count_once("poolfix-go1.19", Links::Multi);
}

#[test]
fn puts_that_grow_the_stack_count_once_go1_27() {
    puts_that_grow_the_stack_count_once("poolfix-go1.27", Links::Multi);
}

#[test]
fn puts_that_grow_the_stack_count_once_go1_19_a_link_per_site() {
    puts_that_grow_the_stack_count_once("poolfix-go1.19", Links::PerSite);
}

#[test]
fn puts_that_grow_the_stack_count_once_go1_27_a_link_per_site() {
    puts_that_grow_the_stack_count_once("poolfix-go1.27", Links::PerSite);
}

#[test]
fn an_unknown_kind_of_links_is_refused_in_one_line() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let output = std::process::Command::new(pooltrace_tests::pooltrace_bin())
        .args(["report", "--pid", &target.pid.to_string(), "--get", BUF_GET])
        .args(["--put", BUF_PUT, "--interval", "0"])
        .env("POOLTRACE_UPROBE_LINKS", "both")
        .output()
        .expect("pooltrace runs");
    pooltrace_tests::assert_one_line_error(
        &output,
        "pooltrace: error: POOLTRACE_UPROBE_LINKS is \"both\": it must be multi or per-site",
    );
    assert!(target.is_running());
}
