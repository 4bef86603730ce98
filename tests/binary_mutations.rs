//! The Go binary readers (ELF, pclntab, moduledata, build info, name resolution) never
//! panic and stay bounded in time on corrupt input: real Go binaries, mutated by a seeded
//! generator with the mutations aimed mostly at the tables pooltrace parses.
//!
//! A failure prints the binary, seed and mutation, so it can be replayed.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    time::{Duration, Instant},
};

use object::{Object, ObjectSection};
use pooltrace::gobin::GoBinary;
use pooltrace_tests::fixture;

const MUTANTS_PER_BINARY: u64 = 150;
/// Far above a healthy parse of these binaries (a few milliseconds).
const TIME_BOUND: Duration = Duration::from_secs(2);

/// xorshift64*: a dozen lines instead of a dependency, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What was done to a mutant; printed when it breaks a reader.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the fields are read through Debug, in failure messages"
)]
enum Mutation {
    FlipBytes { at: usize, count: usize },
    ClobberWord { at: usize, value: u64 },
    Truncate { len: usize },
}

/// File ranges worth aiming at: the tables the readers parse.
fn targets(data: &[u8]) -> Vec<(usize, usize)> {
    let file = object::File::parse(data).expect("fixture parses");
    let mut ranges: Vec<(usize, usize)> = [
        ".gopclntab",
        ".data.rel.ro.gopclntab",
        ".go.buildinfo",
        ".go.module",
        ".noptrdata",
    ]
    .iter()
    .filter_map(|name| file.section_by_name(name)?.file_range())
    .map(|(offset, size)| (offset as usize, size as usize))
    .collect();
    // The ELF and program headers.
    ranges.push((0, 4096.min(data.len())));
    ranges
}

fn mutate(data: &mut Vec<u8>, rng: &mut Rng, targets: &[(usize, usize)]) -> Mutation {
    let (start, len) = if rng.below(4) == 0 {
        (0, data.len())
    } else {
        targets[rng.below(targets.len())]
    };
    // Most mutations near a table's start, where headers and offsets live.
    let reach = if rng.below(2) == 0 { len.min(256) } else { len };
    let at = start + rng.below(reach.max(1));
    match rng.below(5) {
        0 => {
            let len = rng.below(data.len());
            data.truncate(len);
            Mutation::Truncate { len }
        }
        1 | 2 => {
            let value = match rng.below(4) {
                0 => 0,
                1 => u64::MAX,
                2 => rng.next() % 0x1_0000,
                _ => rng.next(),
            };
            if let Some(word) = data.get_mut(at..at + 8) {
                word.copy_from_slice(&value.to_le_bytes());
            }
            Mutation::ClobberWord { at, value }
        }
        _ => {
            let count = 1 + rng.below(16);
            for i in 0..count {
                let bit = 1u8 << rng.below(8);
                if let Some(byte) = data.get_mut(at + i * (1 + rng.below(64))) {
                    *byte ^= bit;
                }
            }
            Mutation::FlipBytes { at, count }
        }
    }
}

/// Every reader API on one (possibly corrupt) binary; whether it got as far as pclntab.
fn exercise(bytes: Vec<u8>) -> bool {
    let Ok(binary) = GoBinary::from_bytes(bytes, Path::new("mutant")) else {
        return false;
    };
    let _ = binary.build_info().map(|b| b.go_release());
    if let Some(table) = binary.pclntab() {
        for f in table.funcs().step_by(7).take(400) {
            let _ = table.name(&f);
            let pc = f.entry + (f.end - f.entry) / 2;
            let _ = table.find(pc);
            let _ = table.frames(&f, pc);
        }
    }
    for f in binary.functions().iter().step_by(13).take(100) {
        let _ = binary.code(f);
        let _ = binary.function_at(f.addr);
    }
    for name in [
        "main.(*BufPool).Get",
        "main.(*BucketedPool[uint8]).Get",
        "main.(*BufPool).Gett",
    ] {
        let _ = binary.resolve(name);
    }
    binary.pclntab().is_some()
}

fn assert_survives_mutations(build: &str, seed: u64) {
    let original = std::fs::read(fixture(build)).expect("read fixture");
    let targets = targets(&original);
    let mut rng = Rng(seed);
    let mut parsed = 0;
    for mutant in 0..MUTANTS_PER_BINARY {
        let mut data = original.clone();
        let mutations: Vec<Mutation> = (0..1 + rng.below(3))
            .map(|_| mutate(&mut data, &mut rng, &targets))
            .collect();
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(data)));
        let elapsed = started.elapsed();
        assert!(
            elapsed < TIME_BOUND,
            "{build}, seed {seed}, mutant {mutant}: took {elapsed:?} on {mutations:?}"
        );
        match outcome {
            Ok(reached_pclntab) => parsed += u64::from(reached_pclntab),
            Err(_) => panic!("{build}, seed {seed}, mutant {mutant}: panicked on {mutations:?}"),
        }
    }
    // Most mutants must get past the ELF layer, or the tables were never exercised.
    assert!(
        parsed * 2 > MUTANTS_PER_BINARY,
        "{build}: only {parsed} mutants reached pclntab"
    );
}

#[test]
fn readers_survive_mutated_go1_27_binaries() {
    assert_survives_mutations("poolfix-go1.27", 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn readers_survive_mutated_stripped_go1_19_binaries() {
    assert_survives_mutations("poolfix-go1.19-stripped", 0xd1b5_4a32_d192_ed03);
}

#[test]
fn readers_survive_mutated_stripped_pie_binaries() {
    assert_survives_mutations("poolfix-go1.27-pie-stripped", 0x94d0_49bb_1331_11eb);
}

#[test]
fn readers_survive_mutated_demo_binaries() {
    assert_survives_mutations("storegw", 0xbf58_476d_1ce4_e5b9);
}

#[test]
fn unmutated_binaries_read_completely() {
    // The control: the same exercise finds the functions it is meant to stress.
    let binary =
        GoBinary::open(&fixture("poolfix-go1.27-stripped"), Path::new("poolfix")).expect("opens");
    let table = binary.pclntab().expect("pclntab");
    assert!(table.function_count() > 1000);
    assert!(binary.resolve("main.(*BufPool).Get").is_ok());
}
