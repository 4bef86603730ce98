//! The pool's own books: what each pool instance counts as lent out, and its limit, read
//! from the traced process's memory at each report. No probe is involved, so this costs the
//! target nothing and goes on between tracing windows. Set against what pooltrace saw go
//! out since attach, it tells how much was out before; a fit of the count over the last
//! minute tells how fast it climbs, and when the pool will refuse.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    io,
};

use crate::{
    probes::{BooksSpec, PoolPlan},
    report::{InstanceBooks, Report},
    tracking::Snapshot,
};

/// The samples a fill rate is fitted over.
const FIT_SECONDS: f64 = 60.0;
/// Fewer samples, or a shorter span, fit nothing yet.
const FIT_MIN_SAMPLES: usize = 3;
const FIT_MIN_SPAN: f64 = 2.0;
/// No pool lends a terabyte: a count beyond it is a word read from the wrong place.
const IMPLAUSIBLE_BYTES: u64 = 1 << 40;

/// Each instance's books over the reports of one trace.
#[derive(Default)]
pub struct Books {
    /// Per pool and instance: (seconds since attach, bytes lent out) of the last minute.
    samples: HashMap<(usize, u64), VecDeque<(f64, u64)>>,
    /// Instances whose books could not be read, said once each.
    said: HashSet<(usize, u64)>,
}

impl Books {
    /// Fills each pool's `instances` in `report`, reading each instance's books through
    /// `read_word` (8 bytes at an address of the process), `seconds` after attach.
    pub fn fill(
        &mut self,
        report: &mut Report,
        snapshot: &Snapshot,
        plans: &[PoolPlan],
        read_word: &dyn Fn(u64) -> io::Result<u64>,
        seconds: f64,
    ) {
        let pools = report.pools.iter_mut().zip(&snapshot.pools).zip(plans);
        for (index, ((pool, state), plan)) in pools.enumerate() {
            let Some(spec) = plan.books else { continue };
            // The instances seen at Get: those holding objects, and those whose objects
            // all came back.
            let mut instances: BTreeSet<u64> = state.held_by_instance.keys().copied().collect();
            instances.extend(state.groups.iter().map(|g| g.receiver).filter(|&r| r != 0));
            pool.instances = instances
                .into_iter()
                .map(|address| {
                    let seen = state.held_by_instance.get(&address).copied().unwrap_or(0);
                    self.instance((index, address), spec, seen, read_word, seconds)
                })
                .collect();
        }
    }

    fn instance(
        &mut self,
        key: (usize, u64),
        spec: BooksSpec,
        seen: u64,
        read_word: &dyn Fn(u64) -> io::Result<u64>,
        seconds: f64,
    ) -> InstanceBooks {
        let address = key.1;
        let mut books = InstanceBooks {
            address: format!("{address:#x}"),
            used_bytes: None,
            limit_bytes: None,
            seen_outstanding_bytes: seen,
            before_attach_bytes: None,
            fill_rate_bytes_per_s: None,
            fill_rate_spread: None,
            exhausts_in_s: None,
            unreadable: None,
        };
        let read = |offset: u32| read_word(address + u64::from(offset));
        let counts = read(spec.used).and_then(|used| {
            let limit = spec.limit.map(read).transpose()?;
            Ok((used, limit))
        });
        let (used, limit) = match counts
            .map_err(|e| e.to_string())
            .and_then(|(used, limit)| plausible(used, limit, seen).map(|()| (used, limit)))
        {
            Ok(counts) => counts,
            Err(why) => {
                if self.said.insert(key) {
                    crate::status!(
                        "pooltrace: the books of pool instance {address:#x} are not shown: {why}"
                    );
                }
                books.unreadable = Some(why);
                self.samples.remove(&key);
                return books;
            }
        };
        books.used_bytes = Some(used);
        // 0 is Thanos' "no limit".
        books.limit_bytes = limit.filter(|&l| l > 0);
        books.before_attach_bytes = Some(used.saturating_sub(seen));
        let samples = self.samples.entry(key).or_default();
        samples.push_back((seconds, used));
        while samples
            .front()
            .is_some_and(|&(t, _)| seconds - t > FIT_SECONDS)
        {
            samples.pop_front();
        }
        if let Some((rate, spread)) = fill_rate(samples) {
            books.fill_rate_bytes_per_s = Some(rate.round());
            books.fill_rate_spread = Some(spread.round());
            books.exhausts_in_s = match (books.limit_bytes, rate > 0.0) {
                (Some(limit), true) => Some((limit.saturating_sub(used) as f64 / rate).round()),
                _ => None,
            };
        }
        books
    }
}

/// Whether the words read can be the books: a count over its limit, beyond any real pool,
/// or under what pooltrace itself saw go out and not come back is a word read from the
/// wrong place, and is never shown as a number.
fn plausible(used: u64, limit: Option<u64>, seen: u64) -> Result<(), String> {
    let wrong = "the offsets in `used` and `limit` do not match this binary's pool";
    if used > IMPLAUSIBLE_BYTES {
        return Err(format!(
            "used reads {used}, more than any pool lends; {wrong}"
        ));
    }
    if let Some(limit) = limit.filter(|&l| l > 0 && used > l) {
        return Err(format!(
            "used reads {used}, over the limit it reads, {limit}; {wrong}"
        ));
    }
    // Gets and Puts between the map walk and this read move either side a little; half is
    // far beyond that, and a wrong word is rarely that close.
    if used < seen / 2 {
        return Err(format!(
            "used reads {used}, under the {seen} bytes pooltrace saw go out since attach; {wrong}"
        ));
    }
    Ok(())
}

/// The least-squares slope of bytes over seconds, and its standard error; None until there
/// are enough samples over a long enough span.
fn fill_rate(samples: &VecDeque<(f64, u64)>) -> Option<(f64, f64)> {
    let n = samples.len();
    let span = samples.back()?.0 - samples.front()?.0;
    if n < FIT_MIN_SAMPLES || span < FIT_MIN_SPAN {
        return None;
    }
    let count = n as f64;
    let mean_t = samples.iter().map(|&(t, _)| t).sum::<f64>() / count;
    let mean_v = samples.iter().map(|&(_, v)| v as f64).sum::<f64>() / count;
    let sxx: f64 = samples.iter().map(|&(t, _)| (t - mean_t).powi(2)).sum();
    let sxy: f64 = (samples.iter())
        .map(|&(t, v)| (t - mean_t) * (v as f64 - mean_v))
        .sum();
    let slope = sxy / sxx;
    let residuals: f64 = (samples.iter())
        .map(|&(t, v)| (v as f64 - mean_v - slope * (t - mean_t)).powi(2))
        .sum();
    let spread = (residuals / (count - 2.0)).sqrt() / sxx.sqrt();
    Some((slope, spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_climb_fits_its_rate_with_no_spread() {
        let samples: VecDeque<(f64, u64)> = (0..6).map(|i| (i as f64, 1000 + 250 * i)).collect();
        let (rate, spread) = fill_rate(&samples).expect("a fit");
        assert!(
            (rate - 250.0).abs() < 1e-9 && spread.abs() < 1e-6,
            "{rate} {spread}"
        );
        // Two samples, or a second's span, say nothing yet.
        let short: VecDeque<(f64, u64)> = samples.iter().copied().take(2).collect();
        assert_eq!(fill_rate(&short), None);
    }

    #[test]
    fn words_that_cannot_be_the_books_are_refused() {
        assert!(plausible(640, Some(4096), 640).is_ok());
        assert!(plausible(1280, None, 640).is_ok());
        assert!(plausible(5000, Some(4096), 0).is_err(), "over the limit");
        assert!(plausible(7, None, 640).is_err(), "under what was seen");
        assert!(plausible(0xc000_1234_5678, None, 0).is_err(), "a pointer");
    }
}
