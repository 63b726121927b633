//! The benchmarks' mixed disk image, shared by `repository-format`'s ingest benchmark and
//! `safekeeping`'s backup benchmark so both measure the same data: 1 MiB regions, about 40 %
//! zeros (left as holes), 25 % text-like, 25 % random and 10 % repeated from earlier regions,
//! from a fixed seed. Also the size parser and folder-size helper both use.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Region size of the generator (and the granularity of its data kinds).
pub const REGION: u64 = 1 << 20;
/// The generator's seed: every run writes the same image.
pub const SEED: u64 = 0x5AFE_C0DE;

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Region counts of each kind the generator wrote: zero, text, random, repeated.
pub type KindCounts = [u64; 4];

/// 8 MiB of text-like bytes to cut text regions from.
fn text_pool(rng: &mut Rng) -> Vec<u8> {
    let words: Vec<Vec<u8>> = (0..3000)
        .map(|_| {
            let len = 2 + rng.below(9) as usize;
            (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect();
    let mut pool = Vec::with_capacity(8 << 20);
    while pool.len() < 8 << 20 {
        // Zipf-ish: small indices are much more frequent, like real text and logs.
        let r = rng.below(3000);
        let i = (r * r / 3000) as usize;
        pool.extend_from_slice(&words[i]);
        pool.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    pool
}

/// Writes the mixed image into `f`, which is already `size` bytes long and all zeros (zero
/// regions are skipped, so they stay holes), then syncs it.
pub fn fill_mixed(f: &File, size: u64) -> std::io::Result<KindCounts> {
    let mut rng = Rng(SEED);
    let pool = text_pool(&mut rng);
    let mut written: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; REGION as usize];
    let mut counts: KindCounts = [0; 4];
    for r in 0..size.div_ceil(REGION) {
        let off = r * REGION;
        let len = (size - off).min(REGION) as usize;
        let u = rng.below(100);
        let kind = if u < 40 {
            0
        } else if u < 65 {
            1
        } else if u < 90 || written.is_empty() {
            2
        } else {
            3
        };
        counts[kind] += 1;
        match kind {
            0 => continue,
            1 => {
                let start = rng.below((pool.len() - REGION as usize) as u64) as usize;
                buf.copy_from_slice(&pool[start..start + REGION as usize]);
            }
            2 => {
                for w in buf.chunks_exact_mut(8) {
                    w.copy_from_slice(&rng.next().to_le_bytes());
                }
            }
            _ => {
                let src = written[rng.below(written.len() as u64) as usize];
                f.read_exact_at(&mut buf, src)?;
            }
        }
        f.write_all_at(&buf[..len], off)?;
        written.push(off);
    }
    f.sync_all()?;
    Ok(counts)
}

/// Parses `512M`, `4G`, `64K` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map_err(|e| format!("bad size {s:?}: {e}"))?
        .checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Bytes in the files below `p`.
pub fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
