//! A disk's logical content read straight from its files: the text descriptor's flat
//! extents, holes and missing tails read as zeros.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// One extent line of a descriptor.
#[derive(Debug, PartialEq, Eq)]
pub struct Extent {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Extent file, relative to the descriptor's folder.
    pub file: String,
    /// Offset of the extent's data in the file, in sectors.
    pub offset: u64,
}

/// Reads the extents of a text descriptor (flat extents only).
pub fn parse_extents(text: &str) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(access) = line.split_whitespace().next() else {
            continue;
        };
        if !matches!(access, "RW" | "RDONLY" | "NOACCESS") {
            continue;
        }
        let (head, rest) = line
            .split_once('"')
            .with_context(|| format!("descriptor line {}: extent without a file name", n + 1))?;
        let (file, tail) = rest
            .split_once('"')
            .with_context(|| format!("descriptor line {}: unterminated file name", n + 1))?;
        let fields: Vec<&str> = head.split_whitespace().collect();
        if fields.len() != 3 {
            bail!(
                "descriptor line {}: expected `RW <sectors> <type> \"file\"`",
                n + 1
            );
        }
        let sectors: u64 = fields[1]
            .parse()
            .with_context(|| format!("descriptor line {}: bad sector count", n + 1))?;
        match fields[2] {
            "FLAT" | "VMFS" => {}
            other => bail!(
                "descriptor line {}: extent type {other} is not flat; the lab reads flat extents only",
                n + 1
            ),
        }
        let offset = match tail.trim() {
            "" => 0,
            t => t
                .parse()
                .with_context(|| format!("descriptor line {}: bad extent offset", n + 1))?,
        };
        out.push(Extent {
            sectors,
            file: file.to_string(),
            offset,
        });
    }
    if out.is_empty() {
        bail!("the descriptor has no extents");
    }
    Ok(out)
}

/// The disk's SHA-256 (lowercase hex) and capacity in bytes.
pub fn disk_digest(descriptor: &Path) -> Result<(String, u64)> {
    let meta = std::fs::metadata(descriptor)
        .with_context(|| format!("reading {}", descriptor.display()))?;
    if meta.len() > 1 << 20 {
        bail!(
            "{} is {} bytes: not a text descriptor",
            descriptor.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(descriptor)
        .with_context(|| format!("reading {} as a text descriptor", descriptor.display()))?;
    let extents =
        parse_extents(&text).with_context(|| format!("parsing {}", descriptor.display()))?;
    let folder = descriptor.parent().unwrap_or(Path::new("."));
    let mut hash = Sha256::new();
    let mut capacity = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for e in &extents {
        let path: PathBuf = folder.join(&e.file);
        let len = e
            .sectors
            .checked_mul(512)
            .context("extent size overflows")?;
        let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        io::Seek::seek(&mut f, io::SeekFrom::Start(e.offset * 512))?;
        let mut left = len;
        let mut reader = f.take(len);
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = reader
                .read(&mut buf[..want])
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                // The file ends before the extent does: the rest reads as zeros.
                buf[..want].fill(0);
                hash.update(&buf[..want]);
                left -= want as u64;
                continue;
            }
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        capacity += len;
    }
    Ok((hex::encode(hash.finalize()), capacity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_are_parsed() {
        let text = "# Disk DescriptorFile\nversion=1\nRW 131072 VMFS \"web01-flat.vmdk\"\nRW 8 FLAT \"x y.bin\" 16\nddb.uuid = \"60 00\"\n";
        let e = parse_extents(text).unwrap();
        assert_eq!(
            e,
            vec![
                Extent {
                    sectors: 131072,
                    file: "web01-flat.vmdk".into(),
                    offset: 0
                },
                Extent {
                    sectors: 8,
                    file: "x y.bin".into(),
                    offset: 16
                },
            ]
        );
    }

    #[test]
    fn sparse_extents_are_refused() {
        let err = parse_extents("RW 100 SESPARSE \"a-sesparse.vmdk\"\n").unwrap_err();
        assert!(err.to_string().contains("not flat"), "{err}");
        assert!(parse_extents("version=1\n").is_err());
    }

    #[test]
    fn short_files_read_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d-flat.vmdk"), [7u8; 100]).unwrap();
        let desc = dir.path().join("d.vmdk");
        std::fs::write(&desc, "RW 4 VMFS \"d-flat.vmdk\"\n").unwrap();
        let (digest, cap) = disk_digest(&desc).unwrap();
        let mut expected = vec![0u8; 2048];
        expected[..100].fill(7);
        assert_eq!(cap, 2048);
        assert_eq!(digest, hex::encode(Sha256::digest(&expected)));
    }
}
