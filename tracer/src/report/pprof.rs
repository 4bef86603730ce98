//! The report as a gzipped pprof profile (profile.proto), so Go developers can use
//! `go tool pprof` on it: one sample per call path, with its outstanding and collected
//! objects and bytes, and locations whose lines expand inlined calls. The agent puts many
//! processes' reports in one profile, each sample labelled with its `pid` and `exe`.

use std::{collections::HashMap, io::Write};

use flate2::{write::GzEncoder, Compression};
use prost::Message;

use super::Report;
use crate::symbolize::Frame;

/// Sample types, in the order of each sample's values; the first is the default view.
const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("outstanding_objects", "count"),
    ("outstanding_bytes", "bytes"),
    ("collected_objects", "count"),
    ("collected_bytes", "bytes"),
];

/// One report's profile.
pub fn encode(report: &Report) -> std::io::Result<Vec<u8>> {
    gzip(Builder::default().build(&[report], false))
}

/// One profile of many processes' reports, each sample labelled by `pid` and `exe`.
pub fn encode_targets(reports: &[&Report]) -> std::io::Result<Vec<u8>> {
    gzip(Builder::default().build(reports, true))
}

fn gzip(profile: Profile) -> std::io::Result<Vec<u8>> {
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    gzip.write_all(&profile.encode_to_vec())?;
    gzip.finish()
}

#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<Location>,
    /// By report (addresses of different processes are not comparable) and address.
    location_ids: HashMap<(usize, u64), u64>,
}

impl Builder {
    fn build(mut self, reports: &[&Report], label_targets: bool) -> Profile {
        self.string(""); // pprof requires string 0 to be empty.
        let sample_type = SAMPLE_TYPES
            .iter()
            .map(|(kind, unit)| ValueType {
                r#type: self.string(kind),
                unit: self.string(unit),
            })
            .collect();
        let mut samples = Vec::new();
        for (target, report) in reports.iter().enumerate() {
            for pool in &report.pools {
                let mut labels = vec![("pool", pool.get.clone())];
                if label_targets {
                    labels.push(("pid", report.pid.to_string()));
                    labels.push(("exe", report.binary.clone()));
                }
                let label: Vec<Label> = labels
                    .iter()
                    .map(|(key, value)| Label {
                        key: self.string(key),
                        str: self.string(value),
                        ..Label::default()
                    })
                    .collect();
                for stack in &pool.stacks {
                    samples.push(Sample {
                        location_id: self.locations(target, &stack.frames),
                        value: [
                            stack.outstanding,
                            stack.bytes,
                            stack.collected,
                            stack.collected_bytes,
                        ]
                        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                        .to_vec(),
                        label: label.clone(),
                    });
                }
            }
        }
        let elapsed_ms = reports.iter().map(|r| r.elapsed_ms).max().unwrap_or(0);
        let period_type = Some(ValueType {
            r#type: self.string("outstanding_objects"),
            unit: self.string("count"),
        });
        let default_sample_type = self.string(SAMPLE_TYPES[0].0);
        Profile {
            sample_type,
            sample: samples,
            location: self.locations,
            function: self.functions,
            string_table: self.strings,
            duration_nanos: i64::try_from(elapsed_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            period_type,
            period: 1,
            default_sample_type,
        }
    }

    /// Location ids, innermost first: one location per address, its lines the inlined calls
    /// there (innermost first, as pprof wants).
    fn locations(&mut self, target: usize, frames: &[Frame]) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut at = 0;
        while at < frames.len() {
            // Inlined frames, then the function they were inlined into: one address.
            let end = frames[at..]
                .iter()
                .position(|f| !f.inlined)
                .map_or(frames.len(), |i| at + i + 1);
            let group = &frames[at..end];
            let address = group[group.len() - 1].address;
            at = end;
            // Address 0 marks a frame without a captured address: give it its own location.
            let key = if address == 0 {
                u64::MAX - self.locations.len() as u64
            } else {
                address
            };
            if let Some(&id) = self.location_ids.get(&(target, key)) {
                ids.push(id);
                continue;
            }
            let line = group
                .iter()
                .map(|f| Line {
                    function_id: self.function(f),
                    line: f.line.map_or(0, i64::from),
                    column: 0,
                })
                .collect();
            let id = self.locations.len() as u64 + 1;
            self.locations.push(Location {
                id,
                address,
                line,
                ..Location::default()
            });
            self.location_ids.insert((target, key), id);
            ids.push(id);
        }
        ids
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let file = frame.file.clone().unwrap_or_default();
        if let Some(&id) = self
            .function_ids
            .get(&(frame.function.clone(), file.clone()))
        {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name = self.string(&frame.function);
        let filename = self.string(&file);
        self.functions.push(Function {
            id,
            name,
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert((frame.function.clone(), file), id);
        id
    }

    fn string(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(text) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(text.to_owned());
        self.string_ids.insert(text.to_owned(), id);
        id
    }
}

// The messages of github.com/google/pprof's profile.proto that pooltrace writes, field
// numbers as there.

#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    mapping_id: u64,
    #[prost(uint64, tag = "3")]
    address: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
    #[prost(int64, tag = "3")]
    column: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
    #[prost(int64, tag = "5")]
    start_line: i64,
}
