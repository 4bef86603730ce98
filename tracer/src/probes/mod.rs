//! Placing probes: which pools to trace and which instructions of their Get and Put to probe
//! (`plan`, `pool`, `sites`, `inlined`), what each probe reads (`keyspec`), the order they go
//! live in (`arming`), the loaded eBPF object and the slots that keep the processes sharing
//! it apart (`object`), attaching probes to one process (`attach`, `multi`), their
//! states over one trace (`lifecycle`), and what they cost and how tracing windows keep that
//! within a budget (`budget`, `windows`).
//!
//! This file only names the room's parts: each part imports its siblings directly, so no
//! import runs back up through here.

mod arming;
mod attach;
pub mod budget;
pub mod inlined;
pub mod keyspec;
mod lifecycle;
mod multi;
mod named;
mod object;
pub mod plan;
mod pool;
pub mod pools_file;
pub mod presets;
mod reads;
pub mod sites;
mod spec;
pub mod windows;

pub use arming::sites_json;
pub use attach::Probes;
pub use lifecycle::{Lifecycle, WindowStatus};
pub use named::{CustomPool, PoolEntry};
pub use object::{Limits, Object, Slot};
pub use pool::PoolPlan;
pub use spec::{BooksSpec, KeyOverrides, PoolKind, PoolSpec};
