//! Pools pooltrace knows by name: `--pool sync|thanos|prometheus|nats`. A preset may stand
//! for several pools (one per generic instantiation) and may read the binary to choose the
//! signature its version uses.

use clap::ValueEnum;

use super::{
    keyspec::{ObjectKind, Spec},
    spec::{BooksSpec, KeyOverrides, PoolKind, PoolSpec},
};
use crate::{
    error::{Error, Result},
    gobin::{calls::direct_call_targets, dwarf, GoBinary},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// sync.(*Pool).Get / Put: objects boxed in `any`.
    Sync,
    /// Thanos' pkg/pool: every instantiation of BucketedPool[T] (`*[]T`, since 2024-09) and the
    /// older BucketedBytes (`*[]byte`); sizes from the slice's capacity, set against the
    /// `sz` asked for, and each instance's own books (`usedTotal`, `maxTotal`).
    Thanos,
    /// Prometheus' util/pool.(*Pool): `[]byte`, or `interface{}` in older releases; the
    /// capacity set against the `sz` asked for.
    Prometheus,
    /// nats-server's byte buffers: server.nbPoolGet / nbPoolPut (`[]byte`); the capacity set
    /// against the `sz` asked for.
    Nats,
}

const THANOS_POOL: &str = "github.com/thanos-io/thanos/pkg/pool.";
const PROMETHEUS_POOL: &str = "github.com/prometheus/prometheus/util/pool.(*Pool).";
const NATS_SERVER: &str = "github.com/nats-io/nats-server/v2/server.";

impl Preset {
    /// Its name on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    /// The preset that traces the pool whose Get is `get`.
    pub fn covering(get: &str) -> Option<Self> {
        if get == "sync.(*Pool).Get" {
            Some(Self::Sync)
        } else if get.starts_with(THANOS_POOL) {
            Some(Self::Thanos)
        } else if get.starts_with(PROMETHEUS_POOL) {
            Some(Self::Prometheus)
        } else if get == format!("{NATS_SERVER}nbPoolGet") {
            Some(Self::Nats)
        } else {
            None
        }
    }

    /// The pools this preset stands for in `binary`.
    pub fn pools(self, binary: &GoBinary) -> Result<Vec<PoolSpec>> {
        let pools = match self {
            Self::Sync => vec![PoolSpec {
                kind: PoolKind::Sync,
                ..spec("sync.(*Pool).Get", "sync.(*Pool).Put", ObjectKind::Iface)
            }],
            Self::Nats => {
                let (get, put) = (
                    format!("{NATS_SERVER}nbPoolGet"),
                    format!("{NATS_SERVER}nbPoolPut"),
                );
                present(binary, vec![sized(spec(&get, &put, ObjectKind::Slice), 0)])
            }
            Self::Prometheus => {
                let (get, put) = (
                    format!("{PROMETHEUS_POOL}Get"),
                    format!("{PROMETHEUS_POOL}Put"),
                );
                // The interface{} Put reads the capacity through reflect; the []byte one does not.
                let pool = match binary.function(&put) {
                    Some(f) if calls_reflect(binary, f) => PoolSpec {
                        // What the interface holds is a []byte: its capacity is the third word
                        // of the header the data word points at.
                        keys: KeyOverrides {
                            get_size: Some(Spec::Load {
                                word: 1,
                                offset: 16,
                            }),
                            ..KeyOverrides::default()
                        },
                        ..spec(&get, &put, ObjectKind::Iface)
                    },
                    _ => spec(&get, &put, ObjectKind::Slice),
                };
                present(binary, vec![sized(pool, 1)])
            }
            Self::Thanos => present(binary, thanos_pools(binary)),
        };
        if pools.is_empty() {
            return Err(Error::Usage(format!(
                "--pool {}: none of its pools is in {} (see `pooltrace list`)",
                self.name(),
                binary.path().display()
            )));
        }
        Ok(pools)
    }
}

/// Every instantiation of BucketedPool (its shape functions, or Go 1.19's `[...]` names) and
/// BucketedBytes.
fn thanos_pools(binary: &GoBinary) -> Vec<PoolSpec> {
    let generic = format!("{THANOS_POOL}(*BucketedPool[");
    let mut pools: Vec<PoolSpec> = binary
        .functions()
        .iter()
        .filter_map(|f| {
            let args = f.name.strip_prefix(&generic)?.strip_suffix("]).Get")?;
            (args.starts_with("go.shape.") || args == "...").then(|| {
                let put = format!("{generic}{args}]).Put");
                sized(spec(&f.name, &put, ObjectKind::SlicePtr), 1)
            })
        })
        .collect();
    pools.dedup_by(|a, b| a.get == b.get);
    let bytes = format!("{THANOS_POOL}(*BucketedBytes).");
    pools.push(sized(
        spec(
            &format!("{bytes}Get"),
            &format!("{bytes}Put"),
            ObjectKind::SlicePtr,
        ),
        1,
    ));
    // Inflating a large build's DWARF takes a while: once for every pool.
    let dwarf = binary.dwarf();
    for pool in &mut pools {
        let get = binary.function(&pool.get);
        pool.books = get.and_then(|get| thanos_books(binary, dwarf.as_ref(), get));
    }
    pools
}

/// Where Thanos' counting pools keep their books: `usedTotal` and `maxTotal`, after the
/// `buckets` and `sizes` slices, in BucketedBytes and in BucketedPool[T] alike.
const THANOS_USED: u32 = 56;
const THANOS_LIMIT: u32 = 48;

/// The books of the pool whose Get is `get`: the offsets DWARF gives `usedTotal` and
/// `maxTotal` in Get's receiver type; in a build without DWARF, Thanos' layout, if Get's
/// code reads both fields there (its check against the limit). Otherwise none: a layout
/// that cannot be confirmed shows no numbers.
fn thanos_books(
    binary: &GoBinary,
    dwarf: Option<&gimli::Dwarf<dwarf::Reader>>,
    get: &crate::gobin::Function,
) -> Option<BooksSpec> {
    let Some(dwarf) = dwarf else {
        let offsets = [THANOS_USED, THANOS_LIMIT].map(u64::from);
        let books = BooksSpec {
            used: THANOS_USED,
            limit: Some(THANOS_LIMIT),
        };
        return binary.accesses_fields(get, &offsets).then_some(books);
    };
    let fields = dwarf::struct_fields(dwarf, &receiver_type(&get.name)?)?;
    let offset = |name: &str| fields.iter().find(|(f, _)| f == name).map(|&(_, o)| o);
    Some(BooksSpec {
        used: u32::try_from(offset("usedTotal")?).ok()?,
        limit: Some(u32::try_from(offset("maxTotal")?).ok()?),
    })
}

/// The struct a pointer method's receiver points to, as DWARF names it:
/// `pkg.(*BucketedPool[go.shape.uint8]).Get` is a method of `pkg.BucketedPool[go.shape.uint8]`.
fn receiver_type(method: &str) -> Option<String> {
    let (package, rest) = method.split_once(".(*")?;
    let (receiver, _) = rest.rsplit_once(").")?;
    Some(format!("{package}.{receiver}"))
}

/// Keeps the pools whose Get and Put are both in the binary.
fn present(binary: &GoBinary, pools: Vec<PoolSpec>) -> Vec<PoolSpec> {
    pools
        .into_iter()
        .filter(|p| binary.resolve(&p.get).is_ok() && binary.resolve(&p.put).is_ok())
        .collect()
}

fn calls_reflect(binary: &GoBinary, f: &crate::gobin::Function) -> bool {
    binary.code(f).is_some_and(|code| {
        direct_call_targets(code, f.addr)
            .filter_map(|target| binary.function_at(target))
            .any(|callee| callee.name.starts_with("reflect."))
    })
}

/// `pool`, whose Get is asked for a size in argument word `word` (`Get(sz int)`).
fn sized(pool: PoolSpec, word: u8) -> PoolSpec {
    PoolSpec {
        keys: KeyOverrides {
            get_request: Some(Spec::Word(word)),
            ..pool.keys
        },
        ..pool
    }
}

/// A counting pool (every preset but `sync`).
fn spec(get: &str, put: &str, object: ObjectKind) -> PoolSpec {
    PoolSpec {
        get: get.to_owned(),
        put: put.to_owned(),
        object,
        kind: PoolKind::Counting,
        keys: KeyOverrides::default(),
        receiver: None,
        release_paths: true,
        double_puts: false,
        stream: false,
        books: None,
        sizes_may_add_probe: false,
    }
}

#[cfg(test)]
mod tests {
    use super::receiver_type;

    #[test]
    fn a_pointer_method_names_its_receiver_struct_as_dwarf_does() {
        let get = "github.com/thanos-io/thanos/pkg/pool.(*BucketedPool[go.shape.struct { main.t int64 }]).Get";
        assert_eq!(
            receiver_type(get).as_deref(),
            Some("github.com/thanos-io/thanos/pkg/pool.BucketedPool[go.shape.struct { main.t int64 }]")
        );
        assert_eq!(receiver_type("main.getBuf"), None);
    }
}
