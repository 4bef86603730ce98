//! `pooltrace list`: the pool-like Get/Put pairs in a binary, so a user can pick one to
//! trace without reading the source. Pairs that only share the names (no preset covers
//! them, and their Put gives its object to no pool) are counted, and listed with `--all`.

use std::{fmt::Write, path::Path};

use serde::Serialize;

use crate::{
    cli::{Format, ListArgs},
    error::{Error, Result},
    gobin::{GoBinary, PoolPair},
    output::write_stdout,
    probes::presets::Preset,
    process::Process,
};

#[derive(Serialize)]
struct Listing<'a> {
    binary: String,
    go_version: Option<&'a str>,
    pairs: Vec<ListedPair>,
    /// Pairs named like pools whose Put gives its object to no pool: listed with `--all`.
    not_pool_like: usize,
}

#[derive(Serialize)]
struct ListedPair {
    #[serde(flatten)]
    pair: PoolPair,
    /// The `--pool` preset that covers this pair, if any.
    preset: Option<String>,
}

pub fn list(args: &ListArgs) -> Result<()> {
    let binary = match (&args.pid, &args.binary) {
        (Some(pid), None) => {
            let process = Process::open(*pid)?;
            GoBinary::open(&process.exe_path(), Path::new(process.exe_name()))?
        }
        (None, Some(path)) => GoBinary::open(path, path)?,
        _ => return Err(Error::Usage("name one of --pid or --binary".into())),
    };
    let (pairs, others): (Vec<ListedPair>, Vec<ListedPair>) = binary
        .pool_pairs()
        .into_iter()
        .map(|mut pair| {
            let preset = Preset::covering(&pair.get).map(|p| p.name());
            if let Some(name) = preset.as_ref().filter(|_| pair.pool_sign.is_none()) {
                pair.pool_sign = Some(format!("the --pool {name} preset"));
            }
            ListedPair { preset, pair }
        })
        .partition(|listed| listed.pair.pool_sign.is_some());
    let not_pool_like = match args.all {
        true => 0,
        false => others.len(),
    };
    let listing = Listing {
        binary: binary.path().display().to_string(),
        go_version: binary.build_info().map(|b| b.go_version.as_str()),
        pairs: match args.all {
            true => pairs.into_iter().chain(others).collect(),
            false => pairs,
        },
        not_pool_like,
    };
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&listing).unwrap_or_default() + "\n",
        Format::Text => render(&listing),
    };
    write_stdout(text.as_bytes())
}

fn render(listing: &Listing) -> String {
    let mut out = String::new();
    let version = listing
        .go_version
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    let pool_like = (listing.pairs.iter())
        .filter(|listed| listed.pair.pool_sign.is_some())
        .count();
    let _ = writeln!(
        out,
        "{}{version}: {pool_like} pool-like Get/Put pairs",
        listing.binary,
    );
    if listing.not_pool_like > 0 {
        let _ = writeln!(
            out,
            "  and {} more named Get/Put whose Put gives its object to no pool, channel or \
             slice: --all lists them",
            listing.not_pool_like
        );
    }
    if listing.pairs.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:>15}  {:>9}  {:<10}  GET / PUT",
        "CALLS GET/PUT", "INLINED", "PRESET"
    );
    for ListedPair { pair, preset } in &listing.pairs {
        let calls = format!("{}/{}", pair.get_calls, pair.put_calls);
        let inlined = format!("{}/{}", pair.get_inlined, pair.put_inlined);
        let preset = preset.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{calls:>15}  {inlined:>9}  {preset:<10}  {} / {}",
            pair.get, pair.put
        );
        let shapes = match (&pair.get_shape, &pair.put_shape) {
            (Some(get), Some(put)) => Some(format!("{get} / {put}")),
            (Some(get), None) => Some(format!("{get} (Get)")),
            (None, Some(put)) => Some(format!("{put} (Put)")),
            (None, None) => None,
        };
        if let Some(shapes) = shapes {
            let _ = writeln!(out, "{:>40}probes the shape functions {shapes}", "");
        }
        let only = match (pair.get_inlined_only, pair.put_inlined_only) {
            (true, true) => Some("Get and Put exist"),
            (true, false) => Some("Get exists"),
            (false, true) => Some("Put exists"),
            (false, false) => None,
        };
        if let Some(only) = only {
            let _ = writeln!(
                out,
                "{:>40}{only} only inlined: probed at the pool call inside each copy",
                ""
            );
        }
        let sign = pair.pool_sign.as_deref();
        let _ = writeln!(
            out,
            "{:>40}{}",
            "",
            sign.unwrap_or("not pool-like: its Put gives the object to no pool")
        );
    }
    out
}
