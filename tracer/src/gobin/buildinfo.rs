//! The Go version and main module recorded in `.go.buildinfo` (what `go version -m` prints),
//! in the inline form of Go 1.18+ and the pointer form before it.

use serde::Serialize;

use super::bytes::{u64_at, uvarint};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 0x2;
const FLAG_BIG_ENDIAN: u8 = 0x1;
/// Longest string accepted (the module info of large programs runs to a few hundred KiB).
const MAX_STRING: u64 = 1 << 22;

/// What the Go toolchain recorded about the build: its Go release, main package and module.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// e.g. "go1.27.3".
    pub(crate) go_version: String,
    /// The main package's import path, e.g. "github.com/nats-io/nats-server/v2".
    pub(crate) path: Option<String>,
    /// The main module and its version, e.g. ("github.com/caddyserver/caddy/v2", "v2.11.7").
    pub(crate) module: Option<(String, String)>,
}

impl BuildInfo {
    /// Parses the blob at the start of `blob` (the `.go.buildinfo` section, or the data
    /// segment from the magic on); `read_at` reads `len` bytes at a virtual address, for the
    /// pointer form.
    pub(crate) fn parse(
        blob: &[u8],
        read_at: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
    ) -> Option<Self> {
        let start = find(blob, MAGIC)?;
        let header = blob.get(start..start + HEADER_SIZE)?;
        let (ptr_size, flags) = (header[14], header[15]);
        let (version, modinfo) = if flags & FLAG_INLINE_STRINGS != 0 {
            let rest = blob.get(start + HEADER_SIZE..)?;
            let (version, used) = inline_string(rest)?;
            let (modinfo, _) = inline_string(rest.get(used..)?)?;
            (version, modinfo)
        } else {
            if ptr_size != 8 || flags & FLAG_BIG_ENDIAN != 0 {
                return None;
            }
            let string_at = |pointer: u64| -> Option<String> {
                let header = read_at(pointer, 16)?;
                let (data, len) = (u64_at(&header, 0)?, u64_at(&header, 8)?);
                if len > MAX_STRING {
                    return None;
                }
                String::from_utf8(read_at(data, len as usize)?).ok()
            };
            (
                string_at(u64_at(header, 16)?)?,
                string_at(u64_at(header, 24)?).unwrap_or_default(),
            )
        };
        if !version.starts_with("go") {
            return None;
        }
        let mut info = Self {
            go_version: version,
            ..Self::default()
        };
        for line in modinfo.lines() {
            let mut fields = line.split('\t');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("path"), Some(path), _) => info.path = Some(path.to_owned()),
                (Some("mod"), Some(path), Some(version)) => {
                    info.module = Some((path.to_owned(), version.to_owned()))
                }
                _ => {}
            }
        }
        Some(info)
    }

    /// (major, minor) of the Go release, e.g. (1, 27) for "go1.27.3".
    pub fn go_release(&self) -> Option<(u32, u32)> {
        let digits = self.go_version.strip_prefix("go")?;
        let mut parts = digits.split(|c: char| !c.is_ascii_digit());
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
}

fn inline_string(data: &[u8]) -> Option<(String, usize)> {
    let (len, used) = uvarint(data)?;
    if len > MAX_STRING {
        return None;
    }
    let end = used.checked_add(len as usize)?;
    Some((
        String::from_utf8_lossy(data.get(used..end)?).into_owned(),
        end,
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline_blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut blob = MAGIC.to_vec();
        blob.extend([8, FLAG_INLINE_STRINGS]);
        blob.resize(HEADER_SIZE, 0);
        for s in [version, modinfo] {
            blob.push(s.len() as u8);
            blob.extend(s.as_bytes());
        }
        blob
    }

    #[test]
    fn reads_the_inline_form() {
        let blob = inline_blob("go1.27.3", "path\tstoregw\nmod\tstoregw\t(devel)\t\n");
        let info = BuildInfo::parse(&blob, &|_, _| None).unwrap();
        assert_eq!(info.go_version, "go1.27.3");
        assert_eq!(info.path.as_deref(), Some("storegw"));
        assert_eq!(info.module, Some(("storegw".into(), "(devel)".into())));
        assert_eq!(info.go_release(), Some((1, 27)));
    }

    #[test]
    fn truncated_or_foreign_blobs_are_refused() {
        let blob = inline_blob("go1.27.3", "");
        assert!(BuildInfo::parse(&blob[..40], &|_, _| None).is_none());
        assert!(BuildInfo::parse(&inline_blob("rust", ""), &|_, _| None).is_none());
        assert!(BuildInfo::parse(b"nothing here", &|_, _| None).is_none());
    }
}
