//! `pooltrace list`: the pool-like Get/Put pairs in a binary, so a user can pick one to
//! trace without reading the source.

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
    let pairs: Vec<ListedPair> = binary
        .pool_pairs()
        .into_iter()
        .map(|pair| ListedPair {
            preset: Preset::covering(&pair.get).map(|p| p.name()),
            pair,
        })
        .collect();
    let listing = Listing {
        binary: binary.path().display().to_string(),
        go_version: binary.build_info().map(|b| b.go_version.as_str()),
        pairs,
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
    let _ = writeln!(
        out,
        "{}{version}: {} pool-like Get/Put pairs",
        listing.binary,
        listing.pairs.len()
    );
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
    }
    out
}
