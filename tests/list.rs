//! `pooltrace list` finds the pool-like pairs of a binary, counts their call sites the way
//! objdump sees them and their inlined sites the way the compiler reports them, gives the
//! same answer for a stripped build, lists generic pools that exist only as shape functions
//! under names `report` accepts, and needs no privileges. Pairs that only share the names,
//! whose Put gives its object to no pool, are counted and listed only with `--all`.

use std::{os::unix::process::CommandExt, process::Command};

use pooltrace::gobin::GoBinary;
use pooltrace_tests::{fixture, pooltrace_bin, pooltrace_json, Target, Value};

fn listing(build: &str) -> Value {
    pooltrace_json(&[
        "list",
        "--binary",
        &fixture(build).to_string_lossy(),
        "--format",
        "json",
    ])
}

fn pair<'a>(listing: &'a Value, get: &str) -> &'a Value {
    listing["pairs"]
        .as_array()
        .and_then(|pairs| pairs.iter().find(|p| p["get"] == get))
        .unwrap_or_else(|| panic!("no pair {get} in {listing:#}"))
}

/// Direct calls to `function` in the disassembly of the unstripped fixture.
fn objdump_calls(function: &str) -> u64 {
    let output = Command::new("objdump")
        .arg("-d")
        .arg(fixture("poolfix-go1.27"))
        .output()
        .expect("objdump");
    let needle = format!("<{function}>");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains("call") && l.ends_with(&needle))
        .count() as u64
}

#[test]
fn pairs_are_found_with_call_sites_and_inlined_sites() {
    let listing = listing("poolfix-go1.27");
    let buf = pair(&listing, "main.(*BufPool).Get");
    assert_eq!(buf["put"], "main.(*BufPool).Put");
    assert_eq!(buf["get_calls"], objdump_calls("main.(*BufPool).Get"));
    assert_eq!(buf["put_calls"], objdump_calls("main.(*BufPool).Put"));
    let generic = pair(&listing, "main.(*BucketedPool[uint8]).Get");
    assert_eq!(
        generic["get_shape"],
        "main.(*BucketedPool[go.shape.uint8]).Get"
    );
    assert_eq!(
        generic["get_calls"],
        objdump_calls("main.(*BucketedPool[go.shape.uint8]).Get")
    );
    assert_eq!(pair(&listing, "sync.(*Pool).Get")["preset"], "sync");
    let tiny = pair(&listing, "main.(*TinyPool).Get");
    assert_eq!(
        (tiny["get_inlined"].as_u64(), tiny["put_inlined"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn a_stripped_build_lists_the_same_pairs() {
    let full = listing("poolfix-go1.27");
    let stripped = listing("poolfix-go1.27-stripped");
    assert_eq!(full["pairs"], stripped["pairs"]);
}

#[test]
fn listing_needs_no_privileges() {
    let output = Command::new(pooltrace_bin())
        .args([
            "list",
            "--binary",
            &fixture("poolfix-go1.27").to_string_lossy(),
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("main.(*BufPool).Get / main.(*BufPool).Put"));
}

/// The `shapes` builds, each with its unstripped twin (the same code at the same addresses).
const SHAPES_BUILDS: [(&str, &str); 4] = [
    ("shapes-go1.27", "shapes-go1.27"),
    ("shapes-go1.19", "shapes-go1.19"),
    ("shapes-go1.27-stripped", "shapes-go1.27"),
    ("shapes-go1.19-stripped", "shapes-go1.19"),
];

/// The fixture's instantiations: type argument, Go 1.27 shape, and the direct call sites of
/// the shape Get and Put (uint8's shape serves Pool[uint8] and Pool[Small]; Pool[uint8].Get
/// and Pool[string]'s methods are called from their wrappers).
const SHAPES_POOLS: [(&str, &str, u64, u64); 4] = [
    ("int64", "int64", 1, 1),
    ("main.Small", "uint8", 2, 2),
    ("string", "string", 1, 1),
    ("uint8", "uint8", 2, 2),
];

fn method(type_arg: &str, name: &str) -> String {
    format!("main.(*Pool[{type_arg}]).{name}")
}

/// The shape function a build names for `shape`'s method: Go 1.19 appends `_0`, and its
/// stripped pclntab elides the type arguments.
fn shape_name(build: &str, shape: &str, name: &str) -> String {
    match build {
        "shapes-go1.27" | "shapes-go1.27-stripped" => method(&format!("go.shape.{shape}"), name),
        "shapes-go1.19" => method(&format!("go.shape.{shape}_0"), name),
        _ => method("...", name),
    }
}

/// The listed pairs of the generic `main.Pool`, by Get name.
fn generic_pairs(listing: &Value) -> Vec<Value> {
    let mut pairs: Vec<Value> = listing["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .filter(|p| {
            p["get"]
                .as_str()
                .is_some_and(|g| g.starts_with("main.(*Pool["))
        })
        .cloned()
        .collect();
    pairs.sort_by_key(|p| p["get"].as_str().map(str::to_owned));
    pairs
}

#[test]
fn generic_pools_are_listed_per_instantiation_even_as_shape_functions_alone() {
    for (build, _) in SHAPES_BUILDS {
        let pairs = generic_pairs(&listing(build));
        let expected: Vec<Value> = SHAPES_POOLS
            .iter()
            .map(|&(arg, shape, get_calls, put_calls)| {
                serde_json::json!({
                    "get": method(arg, "Get"),
                    "put": method(arg, "Put"),
                    "get_shape": shape_name(build, shape, "Get"),
                    "put_shape": shape_name(build, shape, "Put"),
                    "named_from": "dictionary",
                    "get_calls": get_calls,
                    "put_calls": put_calls,
                    "get_inlined": 0,
                    "put_inlined": 0,
                    "get_inlined_only": false,
                    "put_inlined_only": false,
                    // Each instantiation's Put appends to its free list.
                    "pool_sign": "Put appends to a slice",
                    "preset": null,
                })
            })
            .collect();
        assert_eq!(pairs, expected, "{build}");
    }
}

#[test]
fn stripped_shape_builds_list_what_unstripped_ones_do() {
    for (build, twin) in SHAPES_BUILDS {
        let shapes_aside = |listing: Value| -> Vec<Value> {
            let mut pairs = listing["pairs"].as_array().expect("pairs").clone();
            for pair in &mut pairs {
                let pair = pair.as_object_mut().expect("pair object");
                // Stripped Go 1.19 names every shape function `main.(*Pool[...]).Get`.
                pair.remove("get_shape");
                pair.remove("put_shape");
            }
            pairs
        };
        assert_eq!(
            shapes_aside(listing(build)),
            shapes_aside(listing(twin)),
            "{build} against {twin}"
        );
    }
}

#[test]
fn listed_generic_names_resolve_to_their_own_shape_functions() {
    for (build, twin) in SHAPES_BUILDS {
        let path = fixture(build);
        let binary = GoBinary::open(&path, &path).expect("open fixture");
        let twin_path = fixture(twin);
        let symbols = GoBinary::open(&twin_path, &twin_path).expect("open fixture");
        for (arg, shape, _, _) in SHAPES_POOLS {
            for name in ["Get", "Put"] {
                let resolved = binary
                    .resolve(&method(arg, name))
                    .unwrap_or_else(|e| panic!("{build}: {e}"));
                let expected = symbols
                    .function(&shape_name(twin, shape, name))
                    .expect("shape symbol");
                assert_eq!(
                    resolved.function.addr,
                    expected.addr,
                    "{build}: {}",
                    method(arg, name)
                );
            }
        }
    }
}

#[test]
fn report_accepts_the_listed_generic_names_as_printed() {
    for (build, _) in SHAPES_BUILDS {
        let pairs = generic_pairs(&listing(build));
        let target = Target::start(&fixture(build));
        let pid = target.pid.to_string();
        for pair in &pairs {
            let (get, put) = (pair["get"].as_str().unwrap(), pair["put"].as_str().unwrap());
            let sites = pooltrace_json(&[
                "report",
                "--pid",
                &pid,
                "--dry-run",
                "--get",
                get,
                "--put",
                put,
            ]);
            let probed = |role: &str| -> Vec<&str> {
                sites
                    .as_array()
                    .expect("sites")
                    .iter()
                    .filter(|s| s["role"] == role)
                    .filter_map(|s| s["function"].as_str())
                    .collect()
            };
            let get_rets = probed("get-ret");
            assert!(
                !get_rets.is_empty() && get_rets.iter().all(|&f| pair["get_shape"] == f),
                "{build} {get}: {sites:#}"
            );
            assert_eq!(
                probed("put"),
                [pair["put_shape"].as_str().unwrap()],
                "{build} {put}"
            );
        }
        let (status, _) = target.exit();
        assert!(status.success(), "{build} exited with {status}");
    }
}

/// The fixture's runtime has Get/Put pairs that are no pools (`runtime.getempty`/`putempty`
/// hands work buffers around): they are counted, not listed, unless `--all` asks; then they
/// come after the pools, with no sign.
#[test]
fn pairs_whose_put_gives_its_object_to_no_pool_are_listed_only_with_all() {
    let path = fixture("poolfix-go1.27");
    let path = path.to_string_lossy();
    let pools = listing("poolfix-go1.27");
    let all = pooltrace_json(&["list", "--binary", &path, "--format", "json", "--all"]);
    let gets = |listing: &Value| -> Vec<String> {
        (listing["pairs"].as_array().expect("pairs").iter())
            .map(|p| p["get"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let signs = |listing: &Value| -> Vec<Value> {
        (listing["pairs"].as_array().expect("pairs").iter())
            .map(|p| p["pool_sign"].clone())
            .collect()
    };
    assert_eq!(
        signs(&pools),
        [
            "Put appends to a slice",
            "Put calls sync.(*Pool).Put",
            "the --pool sync preset",
            "Put appends to a slice",
        ],
        "{pools:#}"
    );
    assert_eq!(
        gets(&pools),
        [
            "main.(*BufPool).Get",
            "main.(*BucketedPool[uint8]).Get",
            "sync.(*Pool).Get",
            "main.(*TinyPool).Get",
        ]
    );
    let hidden = pools["not_pool_like"].as_u64().expect("a count") as usize;
    assert!(hidden > 0, "{pools:#}");
    assert!(!gets(&pools).contains(&"runtime.getempty".to_owned()));
    // --all: the same pools first, then every hidden pair, unsigned.
    let everything = gets(&all);
    assert_eq!(everything.len(), gets(&pools).len() + hidden, "{all:#}");
    assert_eq!(everything[..4], gets(&pools)[..]);
    assert!(everything.contains(&"runtime.getempty".to_owned()));
    assert!(signs(&all)[4..].iter().all(Value::is_null), "{all:#}");
    assert_eq!(all["not_pool_like"], 0);
}
