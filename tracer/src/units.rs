//! How pooltrace writes sizes and durations for people, the same in every table, report
//! reason and stream line: memleak's "12.7 MiB", and "922us", "350ms", "14.2s".

/// 1536 -> "1.5 KiB".
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in milliseconds: 0.922 -> "922us", 350 -> "350ms", 14200 -> "14.2s".
pub fn millis(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}us", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{:.0}ms", ms.floor())
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// A duration in nanoseconds, as [`millis`] writes it.
pub fn nanos(ns: u64) -> String {
    millis(ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_memleak() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(13_317_000), "12.7 MiB");
        assert_eq!(millis(14_200.0), "14.2s");
        assert_eq!(millis(350.0), "350ms");
        assert_eq!(millis(350.9), "350ms");
        assert_eq!(millis(0.922), "922us");
        assert_eq!(nanos(1_500_000), "1ms");
        assert_eq!(nanos(2_000_000_000), "2.0s");
    }
}
