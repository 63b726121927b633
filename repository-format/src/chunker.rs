//! Content-defined chunking at 4 KiB boundaries (format version 4): where a disk is cut into
//! chunks, and which bytes a backup must read so that its cuts are the ones a full read would
//! make.
//!
//! Guest file systems (ext4, XFS, NTFS) place every file, and so every copy of a file, at a
//! 4 KiB-aligned offset. Fixed chunks find a copy only when source and copy agree modulo the
//! chunk size; these chunks are cut after a 4 KiB block chosen by that block's own content, so
//! inside a copy the cuts fall where they fell in the original (docs/repository-format.md,
//! *Content-defined chunking*, has the measurements: 0.82× the stored size of fixed 1 MiB
//! chunks on the benchmark's guest-like disk).
//!
//! **The rule.** A chunk is a run of non-zero 4 KiB blocks. It ends after block `i` when it
//! holds at least `min` bytes and the seeded xxh3-64 of block `i` has its low `mask_bits` bits
//! zero, or when it holds `max` bytes, or when the next block is all zeros (which belongs to no
//! chunk: a hole, as all-zero chunks are), or at the end of what is read (the rest of the disk
//! reads as zeros there: unallocated or past the end). Every cut therefore depends only on the
//! chunk's start, its own blocks and whether the block after it is zero.
//!
//! **Incrementals.** A changed area changes the cuts from the chunk holding the block before it
//! until the cuts meet an old cut again after it. [`plan_spans`] says where to start (a cut the
//! change cannot move) and how far to read at least; the ingest then reads on until its cut
//! lands on an old cut or a zero block at or after the change ([`OldChunks::is_boundary`]),
//! from where the old chunks are the new ones.
//!
//! The seed keeps cut points from being a function of content alone: in an encrypted
//! repository it comes from the key, so the chunk lengths an observer of the store sees do not
//! fingerprint known files without it (restic's random chunker polynomial answers the same
//! concern). xxh3 is not a keyed PRF; the threat model says what that leaves.

use crate::digest::is_all_zero;
use crate::error::{Error, Result};
use crate::ingest::Area;

/// The cut granularity: every chunk starts and (except at the disk's end) ends on it.
pub const BLOCK: u64 = 4096;

/// When to end a chunk. Built from the repository's `chunking` configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CutRule {
    min: u64,
    max: u64,
    mask: u64,
    seed: u64,
}

impl std::fmt::Debug for CutRule {
    // The seed is derived from the key in encrypted repositories: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CutRule")
            .field("min", &self.min)
            .field("max", &self.max)
            .field("mask", &format_args!("{:#x}", self.mask))
            .finish_non_exhaustive()
    }
}

impl CutRule {
    /// A rule cutting chunks of `min..=max` bytes (multiples of [`BLOCK`]) after a block whose
    /// hash has its low `mask_bits` bits zero.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for sizes that are not multiples of 4096, `min > max`, or
    /// `mask_bits` outside 1..=24.
    pub fn new(min: u32, max: u32, mask_bits: u32, seed: u64) -> Result<Self> {
        let (min, max) = (u64::from(min), u64::from(max));
        if min == 0 || min % BLOCK != 0 || max % BLOCK != 0 || min > max {
            return Err(Error::InvalidOption(format!(
                "content-defined chunks of {min}..={max} bytes: both must be multiples of {BLOCK}, min at most max"
            )));
        }
        if !(1..=24).contains(&mask_bits) {
            return Err(Error::InvalidOption(format!(
                "content-defined chunks: mask of {mask_bits} bits is outside 1..=24"
            )));
        }
        Ok(Self {
            min,
            max,
            mask: (1u64 << mask_bits) - 1,
            seed,
        })
    }

    /// The largest chunk this rule makes.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// True if a chunk may end after `block` (once it holds at least `min` bytes).
    fn is_cut_block(&self, block: &[u8]) -> bool {
        xxhash_rust::xxh3::xxh3_64_with_seed(block, self.seed) & self.mask == 0
    }

    /// Splits `data`, read at `offset` (a multiple of [`BLOCK`]), into pieces under this rule,
    /// continuing the chunk `state` holds, and appends them to `out`. A short last block is
    /// allowed only at the end of the disk; the caller ends the chunk there.
    pub fn scan(&self, state: &mut CutState, offset: u64, data: &[u8], out: &mut Vec<Piece>) {
        let mut at = 0usize;
        while at < data.len() {
            let block = &data[at..(at + BLOCK as usize).min(data.len())];
            let pos = offset + at as u64;
            if is_all_zero(block) {
                match out.last_mut() {
                    Some(Piece::Zero { len, .. }) => *len += block.len() as u64,
                    _ => out.push(Piece::Zero {
                        offset: pos,
                        len: block.len() as u64,
                    }),
                }
                state.chunk_len = 0;
            } else {
                state.chunk_len += block.len() as u64;
                let ends = state.chunk_len >= self.max
                    || (state.chunk_len >= self.min && self.is_cut_block(block));
                match out.last_mut() {
                    Some(Piece::Data {
                        len, ends_chunk, ..
                    }) if !*ends_chunk => {
                        *len += block.len() as u64;
                        *ends_chunk = ends;
                    }
                    _ => out.push(Piece::Data {
                        offset: pos,
                        len: block.len() as u64,
                        ends_chunk: ends,
                    }),
                }
                if ends {
                    state.chunk_len = 0;
                }
            }
            at += block.len();
        }
    }
}

/// How much of the current chunk a [`CutRule::scan`] has seen: scans of consecutive reads
/// share it, so a chunk may span reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutState {
    chunk_len: u64,
}

impl CutState {
    /// True if no chunk is open (the last piece ended one, or nothing was scanned).
    pub fn at_cut(&self) -> bool {
        self.chunk_len == 0
    }

    /// Forgets the open chunk: the caller ended it (at the end of what it reads).
    pub fn end_chunk(&mut self) {
        self.chunk_len = 0;
    }
}

/// A piece of a scanned read, in disk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Non-zero blocks that belong to the open chunk; `ends_chunk`: the chunk ends after them.
    Data {
        /// Disk offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// The chunk ends with this piece (its hash, or `max`).
        ends_chunk: bool,
    },
    /// All-zero blocks: they end the open chunk and belong to none.
    Zero {
        /// Disk offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

/// The chunks of the base index, as the planning and the convergence test need them.
pub trait OldChunks {
    /// The start and end of the stored chunk holding byte `offset`; `None` in a hole.
    fn chunk_at(&self, offset: u64) -> Option<(u64, u64)>;

    /// True if the old chunking has a cut at `offset`: a stored chunk starts there, or the
    /// byte there is in a hole. A new cut at such an offset after every change means the old
    /// chunks from there on are the new ones.
    fn is_boundary(&self, offset: u64) -> bool;
}

impl OldChunks for crate::fixed_index::FixedIndex {
    fn chunk_at(&self, offset: u64) -> Option<(u64, u64)> {
        if offset >= self.size() {
            return None;
        }
        let slot = self.slot_at(offset);
        self.slot(slot)?;
        let (start, len) = self.chunk_range(slot);
        Some((start, start + len as u64))
    }

    fn is_boundary(&self, offset: u64) -> bool {
        if offset >= self.size() {
            return true;
        }
        let slot = self.slot_at(offset);
        self.slot(slot).is_none() || self.chunk_range(slot).0 == offset
    }
}

/// A stretch of the disk a backup reads and re-chunks as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Where reading starts: a cut of both the old and the new chunking.
    pub start: u64,
    /// Reading goes at least this far (the planned reads end here).
    pub end: u64,
    /// The end of the last change inside: cuts before it may differ from the old ones.
    pub changed_end: u64,
}

/// The spans a backup reads, in order, for the changed (or, in a full backup, allocated) areas
/// of a disk of `size` bytes, given the base's chunks for an incremental.
///
/// Areas are rounded out to [`BLOCK`]s. Without a base a span is the rounded area itself. With
/// one, it starts at the start of the old chunk holding the block before the area (that cut
/// does not depend on anything the change touched), or at the area when that block is a hole,
/// and is planned to end where the old chunk holding the area's last byte ended; overlapping
/// or touching spans are merged. Planning reads ahead; the ingest reads past `end` when the cuts
/// have not met again by then.
///
/// # Errors
/// [`Error::OutOfRange`] for an area past `size`.
pub fn plan_spans(areas: &[Area], size: u64, base: Option<&dyn OldChunks>) -> Result<Vec<Span>> {
    let mut rounded = Vec::with_capacity(areas.len());
    for a in areas {
        let end = a.end_within(size)?;
        if a.len == 0 {
            continue;
        }
        let start = a.offset / BLOCK * BLOCK;
        let end = end.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
        rounded.push((start, end));
    }
    rounded.sort_unstable();
    let mut spans: Vec<Span> = Vec::with_capacity(rounded.len());
    for (start, changed_end) in rounded {
        let (start, end) = match base {
            None => (start, changed_end),
            Some(old) => {
                let from = match start.checked_sub(1).and_then(|b| old.chunk_at(b)) {
                    Some((chunk_start, _)) => chunk_start,
                    None => start,
                };
                let to = match old.chunk_at(changed_end - 1) {
                    Some((_, chunk_end)) => chunk_end.max(changed_end),
                    None => changed_end,
                };
                (from, to)
            }
        };
        match spans.last_mut() {
            Some(last) if start <= last.end => {
                last.end = last.end.max(end);
                last.changed_end = last.changed_end.max(changed_end);
            }
            _ => spans.push(Span {
                start,
                end,
                changed_end,
            }),
        }
    }
    Ok(spans)
}

/// The `(offset, length)` reads of `spans`, in order: pieces of at most `extent` bytes from each
/// span's start to its planned end. A read-ahead source follows these.
pub fn span_reads(spans: &[Span], extent: u64) -> Vec<(u64, usize)> {
    let mut reads = Vec::new();
    for s in spans {
        let mut at = s.start;
        while at < s.end {
            let len = (s.end - at).min(extent);
            reads.push((at, len as usize));
            at += len;
        }
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    /// Cuts a whole in-memory disk into chunks with `rule`: the reference every ingest must
    /// agree with.
    fn chunks_of(rule: &CutRule, disk: &[u8]) -> Vec<(u64, u64)> {
        let mut state = CutState::default();
        let mut pieces = Vec::new();
        rule.scan(&mut state, 0, disk, &mut pieces);
        let mut out = Vec::new();
        let mut open: Option<(u64, u64)> = None;
        for p in pieces {
            match p {
                Piece::Zero { .. } => {
                    if let Some(c) = open.take() {
                        out.push(c);
                    }
                }
                Piece::Data {
                    offset,
                    len,
                    ends_chunk,
                } => {
                    let c = open.get_or_insert((offset, 0));
                    c.1 += len;
                    if ends_chunk {
                        out.push(open.take().unwrap());
                    }
                }
            }
        }
        out.extend(open);
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn rule() -> CutRule {
        CutRule::new(16 * KIB as u32, 128 * KIB as u32, 2, 7).unwrap()
    }

    #[test]
    fn chunks_are_block_aligned_and_within_bounds() {
        let disk = pseudo_random(4 << 20, 1);
        let r = rule();
        let chunks = chunks_of(&r, &disk);
        let mut at = 0;
        for &(off, len) in &chunks {
            assert_eq!(off, at);
            assert_eq!(off % BLOCK, 0);
            assert!(len <= r.max, "{len}");
            at += len;
        }
        assert_eq!(at, disk.len() as u64);
        // Every chunk but the last is at least min.
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.1 >= 16 * KIB));
        // And the hash really decides: not everything is cut at max.
        assert!(chunks.iter().filter(|c| c.1 < r.max).count() > chunks.len() / 2);
    }

    #[test]
    fn zero_blocks_end_chunks_and_belong_to_none() {
        let mut disk = pseudo_random(64 * KIB as usize, 2);
        disk[8 * KIB as usize..12 * KIB as usize].fill(0);
        let r = CutRule::new(32 * KIB as u32, 1 << 20, 24, 0).unwrap();
        assert_eq!(
            chunks_of(&r, &disk),
            vec![(0, 8 * KIB), (12 * KIB, 52 * KIB)]
        );
    }

    #[test]
    fn a_copy_at_another_aligned_offset_gets_the_same_cuts_inside() {
        let file = pseudo_random(2 << 20, 3);
        let mut disk = pseudo_random(512 * KIB as usize, 4);
        disk.extend_from_slice(&file);
        disk.extend_from_slice(&pseudo_random(300 * KIB as usize, 5));
        disk.extend_from_slice(&file);
        let r = rule();
        let chunks = chunks_of(&r, &disk);
        let contents: std::collections::HashSet<&[u8]> = chunks
            .iter()
            .map(|&(o, l)| &disk[o as usize..(o + l) as usize])
            .collect();
        // Most of the copy deduplicates against the original.
        let copy_start = (512 + 2048 + 300) * KIB;
        let shared: u64 = chunks
            .iter()
            .filter(|&&(o, _)| o >= copy_start)
            .filter(|&&(o, l)| {
                let c = &disk[o as usize..(o + l) as usize];
                chunks
                    .iter()
                    .any(|&(o2, l2)| o2 < copy_start && &disk[o2 as usize..(o2 + l2) as usize] == c)
            })
            .map(|c| c.1)
            .sum();
        assert!(
            shared > 1536 * KIB,
            "only {shared} bytes of the copy shared"
        );
        assert!(contents.len() < chunks.len());
    }

    #[test]
    fn scanning_in_pieces_cuts_as_scanning_whole() {
        let disk = pseudo_random(1 << 20, 6);
        let r = rule();
        let whole = chunks_of(&r, &disk);
        let mut state = CutState::default();
        let mut pieces = Vec::new();
        for (i, part) in disk.chunks(12 * KIB as usize).enumerate() {
            r.scan(&mut state, i as u64 * 12 * KIB, part, &mut pieces);
        }
        let ends: Vec<u64> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Data {
                    offset,
                    len,
                    ends_chunk: true,
                } => Some(offset + len),
                _ => None,
            })
            .collect();
        let whole_ends: Vec<u64> = whole.iter().map(|c| c.0 + c.1).collect();
        assert_eq!(ends, whole_ends[..ends.len()]);
        assert!(ends.len() + 1 >= whole_ends.len());
    }

    #[test]
    fn the_seed_moves_the_cuts() {
        let disk = pseudo_random(2 << 20, 8);
        let a = chunks_of(&CutRule::new(16 * 1024, 128 * 1024, 2, 1).unwrap(), &disk);
        let b = chunks_of(&CutRule::new(16 * 1024, 128 * 1024, 2, 2).unwrap(), &disk);
        assert_ne!(a, b);
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(CutRule::new(0, 4096, 7, 0).is_err());
        assert!(CutRule::new(4097, 8192, 7, 0).is_err());
        assert!(CutRule::new(8192, 4096, 7, 0).is_err());
        assert!(CutRule::new(4096, 8192, 0, 0).is_err());
        assert!(CutRule::new(4096, 8192, 25, 0).is_err());
    }

    /// The old chunks as a sorted list, for planning tests.
    struct Old(Vec<(u64, u64)>);

    impl OldChunks for Old {
        fn chunk_at(&self, offset: u64) -> Option<(u64, u64)> {
            self.0
                .iter()
                .copied()
                .find(|&(s, e)| s <= offset && offset < e)
        }
        fn is_boundary(&self, offset: u64) -> bool {
            self.chunk_at(offset).is_none_or(|(s, _)| s == offset)
        }
    }

    #[test]
    fn spans_without_a_base_are_the_rounded_areas() {
        let s = plan_spans(
            &[Area::new(5000, 10), Area::new(0, 1), Area::new(8192, 100)],
            100_000,
            None,
        )
        .unwrap();
        // Rounded out to blocks, then merged: they touch.
        assert_eq!(
            s,
            vec![Span {
                start: 0,
                end: 12288,
                changed_end: 12288
            }]
        );
        assert!(plan_spans(&[Area::new(99_999, 2)], 100_000, None).is_err());
        // The disk's last, short block is read whole.
        assert_eq!(
            plan_spans(&[Area::new(99_000, 1)], 99_500, None).unwrap(),
            vec![Span {
                start: 98_304,
                end: 99_500,
                changed_end: 99_500
            }]
        );
    }

    #[test]
    fn spans_with_a_base_start_at_an_unmovable_cut() {
        let old = Old(vec![
            (0, 40 * KIB),
            (40 * KIB, 100 * KIB),
            (120 * KIB, 200 * KIB),
        ]);
        // A change inside the second chunk: start at its start, plan to its end.
        let s = plan_spans(&[Area::new(50 * KIB, 4 * KIB)], 1 << 20, Some(&old)).unwrap();
        assert_eq!(
            s,
            vec![Span {
                start: 40 * KIB,
                end: 100 * KIB,
                // 50 KiB + 4 KiB rounded out to blocks.
                changed_end: 56 * KIB
            }]
        );
        // A change at a chunk's first block: the chunk before it may grow into it.
        let s = plan_spans(&[Area::new(40 * KIB, 4 * KIB)], 1 << 20, Some(&old)).unwrap();
        assert_eq!(s[0].start, 0);
        // A change right after a hole starts where it is.
        let s = plan_spans(&[Area::new(120 * KIB, 4 * KIB)], 1 << 20, Some(&old)).unwrap();
        assert_eq!(s[0].start, 120 * KIB);
        // Two changes whose spans meet become one.
        let s = plan_spans(
            &[Area::new(10 * KIB, 4 * KIB), Area::new(60 * KIB, 4 * KIB)],
            1 << 20,
            Some(&old),
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].start, s[0].end, s[0].changed_end),
            (0, 100 * KIB, 64 * KIB)
        );
    }

    #[test]
    fn reads_cover_each_span_in_extents() {
        let spans = [
            Span {
                start: 0,
                end: 10,
                changed_end: 10,
            },
            Span {
                start: 100,
                end: 125,
                changed_end: 125,
            },
        ];
        assert_eq!(
            span_reads(&spans, 10),
            vec![(0, 10), (100, 10), (110, 10), (120, 5)]
        );
    }
}
