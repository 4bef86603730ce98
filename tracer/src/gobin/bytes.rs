//! Little-endian reads from file bytes. Every read is bounds-checked and answers `None`
//! past the end, so the table readers above can treat a short or corrupt file like any
//! other mismatch.

use std::str;

pub(super) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(super) fn i32_at(data: &[u8], at: usize) -> Option<i32> {
    u32_at(data, at).map(|v| v as i32)
}

pub(super) fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The NUL-terminated string at `at`.
pub(super) fn cstr(data: &[u8], at: usize) -> Option<&str> {
    let rest = data.get(at..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    str::from_utf8(rest.get(..len)?).ok()
}

/// Go's unsigned LEB128 varint: (value, bytes read). Ten bytes at most, as in Go's
/// `binary.Uvarint`; a longer or unterminated run is refused.
pub(super) fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_like_go() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[5, 0xff]), Some((5, 1)));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(uvarint(&[0x80 | 3, 1]), Some((131, 2)));
        assert_eq!(uvarint(&[0x80; 3]), None);
        assert_eq!(uvarint(&[0x80; 11]), None);
        assert_eq!(uvarint(&[]), None);
    }

    #[test]
    fn reads_past_the_end_are_refused() {
        assert_eq!(u32_at(&[1, 0, 0, 0], 0), Some(1));
        assert_eq!(u32_at(&[1, 0, 0], 0), None);
        assert_eq!(u64_at(&[0; 8], 1), None);
        assert_eq!(u64_at(&[0; 8], usize::MAX), None);
        assert_eq!(i32_at(&[0xff; 4], 0), Some(-1));
    }

    #[test]
    fn strings_need_their_terminator() {
        assert_eq!(cstr(b"ab\0cd\0", 3), Some("cd"));
        assert_eq!(cstr(b"ab", 0), None);
        assert_eq!(cstr(b"ab\0", 9), None);
    }
}
