//! Tracing never harms the target: it keeps running, prints exactly what it prints untraced,
//! exits with its own status, and its code is byte-for-byte restored when pooltrace detaches.

use pooltrace_tests::{fixture, symbol_address, Target, Tracer, POOLFIX_BUFS};

#[test]
fn output_and_exit_status_are_unchanged_across_repeated_attach_and_detach() {
    let reference = {
        let mut target = Target::start(&fixture("poolfix-go1.27"));
        for _ in 0..5 {
            target.round();
        }
        target.exit()
    };

    let mut target = Target::start(&fixture("poolfix-go1.27"));
    target.round();
    for _ in 0..2 {
        let tracer = Tracer::attach(target.pid, &POOLFIX_BUFS);
        target.round();
        let finished = tracer.interrupt();
        assert!(finished.status.success(), "{:?}", finished.stderr);
        assert!(target.is_running());
        target.round();
    }
    let traced = target.exit();

    assert_eq!(traced.0.code(), Some(3));
    assert_eq!(traced.0.code(), reference.0.code());
    // Every line, the fixture's own counts included, is the same as in the untraced run
    // (but for the pools' heap addresses, which Go randomizes per run).
    let without_addresses = |lines: &[String]| -> Vec<String> {
        lines[1..]
            .iter()
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| !w.contains("_addr="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    assert_eq!(
        without_addresses(&traced.1),
        without_addresses(&reference.1)
    );
}

#[test]
fn code_is_restored_byte_for_byte_after_detach() {
    let binary = fixture("poolfix-go1.27");
    let mut target = Target::start(&binary);
    let functions =
        ["main.(*BufPool).Get", "main.(*BufPool).Put"].map(|f| symbol_address(&binary, f));
    let read_all = |target: &Target| -> Vec<Vec<u8>> {
        functions
            .iter()
            .map(|&(addr, size)| target.read_memory(addr, size as usize))
            .collect()
    };
    let before = read_all(&target);

    let tracer = Tracer::attach(target.pid, &POOLFIX_BUFS);
    let during = read_all(&target);
    // The kernel's breakpoints (int3) are visible while attached: this check can fail.
    assert_ne!(during, before);
    let int3s: usize = during.iter().flatten().filter(|&&b| b == 0xcc).count()
        - before.iter().flatten().filter(|&&b| b == 0xcc).count();
    assert_eq!(int3s, 4, "3 RETs of Get and 1 site in Put");
    target.round();
    tracer.interrupt();

    assert_eq!(read_all(&target), before);
    target.round();
    assert_eq!(target.exit().0.code(), Some(3));
}
