//! `--debug`: the kernel side says why an event went unrecorded, naming the site, the pool,
//! the goroutine and the address, once per kind and site in 10 s, with a count of the rest;
//! without it, not a line.

use std::{thread, time::Duration};

use pooltrace_tests::{fixture, u64_of, Target, Tracer, POOLFIX_BUFS};

/// The kernel's lines of `kind` in `stderr`, and the counts their held-back summaries give.
fn kernel_lines<'a>(stderr: &'a [String], kind: &str) -> (Vec<&'a String>, u64) {
    let prefix = format!("pooltrace: warn pooltrace::kernel: {kind}: site ");
    let (summaries, shown): (Vec<&String>, Vec<&String>) = (stderr.iter())
        .filter(|l| l.starts_with(&prefix))
        .partition(|l| l.contains(" more like it suppressed"));
    let held_back = summaries
        .iter()
        .map(|l| {
            let count = l
                .rsplit_once(": ")
                .map(|(_, tail)| tail)
                .unwrap_or_default();
            let count = count.split_whitespace().next().unwrap_or_default();
            count.parse::<u64>().unwrap_or_else(|_| panic!("{l}"))
        })
        .sum();
    (shown, held_back)
}

#[test]
fn a_wrong_get_key_under_debug_names_the_get_site_the_pool_and_the_faulting_address() {
    for debug in [true, false] {
        let mut target = Target::start(&fixture("poolfix-go1.27"));
        // 3.75 GiB past Get's result, above a small program's heap: every Get's read faults.
        let mut args = POOLFIX_BUFS.to_vec();
        args.extend(["--get-key", "*r0+0xf0000000"]);
        if debug {
            args.push("--debug");
        }
        let tracer = Tracer::attach(target.pid, &args);
        target.round();
        // Past the first second, when doubts are said.
        thread::sleep(Duration::from_millis(1200));
        target.round();
        let finished = tracer.interrupt();
        let report = finished.json();
        let faults = u64_of(&report["pools"][0]["read_faults"]);
        assert!(faults >= 200, "{report:#}");
        let doubt = (finished.stderr.iter())
            .find(|l| l.contains("Gets could not read their object from memory"))
            .unwrap_or_else(|| panic!("no doubt in {:#?}", finished.stderr));
        if !debug {
            assert!(
                !finished
                    .stderr
                    .iter()
                    .any(|l| l.contains("pooltrace::kernel")),
                "{:#?}",
                finished.stderr
            );
            assert!(doubt.ends_with("; --debug names each site and the address it read"));
            target.exit();
            continue;
        }
        assert!(!doubt.contains("--debug"), "{doubt}");
        let (shown, held_back) = kernel_lines(&finished.stderr, "read-fault");
        let pid = target.pid;
        for line in &shown {
            // read-fault: site 3 (get-ret main.(*BufPool).Get+0x51 in PID 7) pool 0
            // (main.(*BufPool).Get in PID 7): goroutine 0xc000..: the object's key could not
            // be read at 0xc0f0012340
            assert!(line.contains("(get-ret main.(*BufPool).Get+0x"), "{line}");
            assert!(
                line.contains(&format!(
                    " in PID {pid}) pool 0 (main.(*BufPool).Get in PID {pid}): goroutine 0x"
                )),
                "{line}"
            );
            let address = line
                .split_once("the object's key could not be read at 0x")
                .and_then(|(_, hex)| u64::from_str_radix(hex, 16).ok())
                .unwrap_or_else(|| panic!("no address in {line}"));
            assert!(address >= 0xf000_0000, "{line}");
        }
        // One line per Get RET that faulted, and every other fault counted, none lost.
        assert!(!shown.is_empty() && shown.len() <= 4, "{shown:#?}");
        assert_eq!(
            shown.len() as u64 + held_back,
            faults,
            "{:#?}",
            finished.stderr
        );
        target.exit();
    }
}

#[test]
fn a_full_object_map_under_debug_is_said_once_a_site_with_how_many_were_held_back() {
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let mut args = POOLFIX_BUFS.to_vec();
    args.extend(["--max-objects", "10", "--debug"]);
    let tracer = Tracer::attach(target.pid, &args);
    // Each round leaks 8 buffers: the second fills the map, and the Gets after are refused.
    target.round();
    target.round();
    let finished = tracer.interrupt();
    let dropped = u64_of(&finished.json()["pools"][0]["dropped"]);
    assert!(dropped > 0, "{:#?}", finished.stderr);
    let (shown, held_back) = kernel_lines(&finished.stderr, "objects-full");
    let mut sites: Vec<&str> = (shown.iter())
        .filter_map(|l| l.split(" (").next())
        .collect();
    sites.sort_unstable();
    sites.dedup();
    assert_eq!(sites.len(), shown.len(), "one line a site: {shown:#?}");
    assert!(
        shown
            .iter()
            .all(|l| l.contains("not tracked, OUTSTANDING is full")),
        "{shown:#?}"
    );
    assert_eq!(
        shown.len() as u64 + held_back,
        dropped,
        "{:#?}",
        finished.stderr
    );
    target.exit();
}
