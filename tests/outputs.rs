//! The report in the formats other tools read: folded stacks for flame graph tools, an SVG
//! flame graph, and a pprof profile that `go tool pprof` opens.

use std::process::Command;

use pooltrace_tests::{fixture, real_program, Target, Tracer, POOLFIX_BUFS};

/// Two rounds of the fixture traced with `--format format --output FILE`; the file's bytes.
fn report_as(format: &str) -> Vec<u8> {
    let output = std::env::temp_dir().join(format!("pooltrace-{}-{format}", std::process::id()));
    let mut target = Target::start(&fixture("poolfix-go1.27"));
    let mut args = POOLFIX_BUFS.to_vec();
    let path = output.to_string_lossy().into_owned();
    args.extend(["--format", format, "--output", &path]);
    let tracer = Tracer::attach(target.pid, &args);
    target.round();
    target.round();
    let finished = tracer.interrupt();
    target.exit();
    assert!(finished.status.success(), "{:?}", finished.stderr);
    let bytes = std::fs::read(&output).expect("report file");
    let _ = std::fs::remove_file(&output);
    bytes
}

#[test]
fn folded_stacks_list_each_leaking_path_outermost_first_with_its_count() {
    let folded = String::from_utf8(report_as("folded")).expect("text");
    let lines: Vec<&str> = folded.lines().collect();
    // leakyHandler: 7 objects a round; inlinedLeak (through the inlined takeBuf): 1.
    assert!(lines.contains(&"runtime.goexit;runtime.main;main.main;main.round;main.leakyHandler;main.(*BufPool).Get 14"), "{folded}");
    assert!(lines.contains(&"runtime.goexit;runtime.main;main.main;main.round;main.inlinedLeak;main.takeBuf;main.(*BufPool).Get 2"), "{folded}");
    assert_eq!(lines.len(), 2);
}

#[test]
fn the_svg_flame_graph_is_xml_and_names_the_leaking_function() {
    let svg = String::from_utf8(report_as("svg")).expect("text");
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_) | quick_xml::events::Event::Empty(_)) => {
                elements += 1
            }
            Ok(_) => {}
            Err(e) => panic!("not XML at {}: {e}", reader.buffer_position()),
        }
    }
    assert!(elements > 10);
    assert!(svg.contains("<svg"));
    assert!(svg.contains("main.leakyHandler"));
}

#[test]
fn go_tool_pprof_reads_the_profile_and_lists_the_leaking_function() {
    let profile = std::env::temp_dir().join(format!("pooltrace-{}.pb.gz", std::process::id()));
    std::fs::write(&profile, report_as("pprof")).expect("write profile");
    let output = Command::new(real_program("POOLTRACE_GO"))
        .args(["tool", "pprof", "-top"])
        .arg(&profile)
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go tool pprof");
    let _ = std::fs::remove_file(&profile);
    let top = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(top.contains("Type: outstanding_objects"), "{top}");
    // All 16 objects are flat in Get; leakyHandler holds 14 of them, cumulatively.
    let line = |function: &str| {
        top.lines()
            .find(|l| l.trim_end().ends_with(function))
            .unwrap_or_else(|| panic!("no {function} in {top}"))
            .to_owned()
    };
    assert!(
        line("main.(*BufPool).Get").trim_start().starts_with("16 "),
        "{top}"
    );
    assert!(line("main.leakyHandler").contains(" 14 "), "{top}");
    assert!(line("main.takeBuf (inline)").contains(" 2 "), "{top}");
}
