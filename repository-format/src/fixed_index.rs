//! Fixed index: the chunk id of every chunk of a disk, in an `I` blob.
//!
//! ```text
//! payload offset  size  field
//!              0     8  "SKFIDX04", "SKFIDX03" ("SKFIDX02", "SKFIDX01": older indexes, see below)
//!              8    16  index uuid
//!             24     8  creation time, Unix seconds, i64 LE
//!             32     8  logical size in bytes, u64 LE
//!             40     4  chunk size in bytes, u32 LE (version 4: the largest chunk)
//!             44     4  flags, 0
//!             48    32  SHA-256 over the body that follows the header
//!             80     8  chunk count, u64 LE: versions 1 to 3 ceil(size / chunk size),
//!                       version 4 the number of stored chunks in the body
//!             88     8  generation the index belongs to, u64 LE          (versions 2 to 4)
//!             96     4  disk (device key) it belongs to, i32 LE          (versions 2 to 4)
//!            100     2  length t of the target key, u16 LE (1..=200)     (versions 2 to 4)
//!            102     t  target key (the target's folder name), ASCII     (versions 2 to 4)
//! version 3 body, from 102+t: runs of stored chunks, ascending, separated by at least one
//!                   all-zero chunk (a canonical form: one index has one encoding)
//!                    8  first chunk of the run, u64 LE
//!                    4  number n of chunks in the run (>= 1), u32 LE
//!                 32*n  their ids (never all-zero)
//!                   every chunk not in a run is all zeros and not stored
//! version 4 body, from 102+t: runs of stored content-defined chunks, ascending, separated by
//!                   at least one byte of hole (canonical too)
//!                    8  byte offset of the run's first chunk, u64 LE (a multiple of 4096)
//!                    4  number n of chunks in the run (>= 1), u32 LE
//!                 36*n  for each chunk: its id (32, never all-zero), then its length in bytes
//!                       (u32 LE, 1..=chunk size, a multiple of 4096 unless the chunk ends
//!                       the disk); a chunk starts where the one before it in the run ends
//!                   every byte in no chunk is all zeros and not stored (a hole)
//! version 1 / 2 body, from 88 / 102+t: 32 × chunk count ids; all-zero = not stored
//! ```
//!
//! Version 3 (format version 3) stores only what was written: a 16 TiB disk with 1 GiB of data
//! at 1 MiB chunks has an index of about 32 KiB instead of 512 MiB, and decoding it allocates
//! for the stored chunks only. In memory an index keeps its stored chunks in pages of
//! [`PAGE_SLOTS`] slots, allocated only where a chunk is stored, so a mostly empty disk of any
//! size costs kilobytes and a full one no more than the dense list did.
//!
//! Version 4 (format version 4, content-defined chunks: see `docs/repository-format.md`) lists
//! each chunk's length, since chunks are no longer all `chunk size` long: 36 bytes per chunk.
//! In memory such a "variable" index is the list of extents that tile the disk in order, each a
//! stored chunk or a maximal hole (48 bytes each), so its slots are those extents: a 16 TiB
//! disk with 1 GiB written has a few thousand. Byte offsets map to slots by binary search
//! ([`FixedIndex::slot_at`]) and an incremental replaces byte ranges ([`FixedIndex::splice`]).
//! Chunk ids are the same as in fixed-chunk repositories (SHA-256, or HMAC-SHA-256 when
//! encrypted, of the chunk's bytes), so readers verify chunks as before, against the length
//! their index entry gives. A version-4 index is always bound.
//!
//! A version-2 to version-4 index names its place ([`IndexBinding`]): a copy of it in another
//! generation, target or disk is detected on read. In an encrypted repository the place is also
//! part of the blob's associated data ([`IndexBinding::associated_data`], the same string for
//! every version), so the index does not even decrypt elsewhere. Version-1 indexes (written by
//! format version 1) have no binding: they are read as legacy, unbound indexes. Version-2
//! indexes (format version 2) are read as they were written; this crate writes version 3 for
//! fixed chunks and version 4 for content-defined ones.

mod extents;
#[cfg(test)]
mod variable_tests;

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::blob::{BlobKind, Codec};
use crate::config::validate_chunk_size;
use crate::digest::ChunkDigest;
use crate::error::{Error, Result};
use crate::format::{
    CDC_BLOCK, INDEX_HEADER_LEN, INDEX_MAGIC, INDEX_MAGIC_V2, INDEX_MAGIC_V3, INDEX_MAGIC_V4,
    INDEX_V2_FIXED_LEN,
};
use crate::target::{GenerationId, TargetKey};
use extents::{Extent, Extents};

/// Where an index belongs: the target folder, generation and disk it was written for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexBinding {
    /// The target's folder name (keyed in an encrypted repository).
    pub target: TargetKey,
    /// The generation.
    pub generation: GenerationId,
    /// The disk's device key.
    pub disk: i32,
}

impl IndexBinding {
    /// The place an index belongs to.
    pub fn new(target: TargetKey, generation: GenerationId, disk: i32) -> Self {
        Self {
            target,
            generation,
            disk,
        }
    }

    /// The bytes appended to the associated data of the index blob in an encrypted repository.
    pub fn associated_data(&self) -> Vec<u8> {
        format!(
            "safekeeping index v2\0{}\0{}\0{}",
            self.target, self.generation.0, self.disk
        )
        .into_bytes()
    }
}

impl std::fmt::Display for IndexBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "target {} generation {} disk {}",
            self.target, self.generation, self.disk
        )
    }
}

/// Largest number of chunks one index may cover (128 Mi: 128 TiB at 1 MiB chunks); for a
/// variable index, the largest number of stored chunks, and its disk is at most this many
/// largest chunks.
pub(crate) const MAX_CHUNKS: u64 = 128 << 20;

/// Size of a version-4 chunk entry: id (32) and length (4).
const CHUNK_ENTRY_LEN: usize = 36;

/// Largest decoded index accepted: a version-4 index of [`MAX_CHUNKS`] stored chunks, each in
/// a run of its own (the worst case), which also bounds the dense (version 1 and 2) list of
/// [`MAX_CHUNKS`] ids and a version-3 index (a run costs 12 bytes and covers at least one chunk
/// that the dense list spent 32 bytes on, plus the zero chunk before it).
pub(crate) const INDEX_LIMIT: usize =
    INDEX_V2_FIXED_LEN + 200 + (CHUNK_ENTRY_LEN + RUN_HEADER_LEN) * MAX_CHUNKS as usize;

/// Slots per page of the in-memory index: small enough that scattered writes cost little
/// (8 KiB per page touched), large enough that a full disk costs no more than a dense list.
pub const PAGE_SLOTS: usize = 256;

/// Size of a version-3 or version-4 run header: first chunk (8) and run length (4).
const RUN_HEADER_LEN: usize = 12;

/// The block of content-defined chunks: every chunk and hole of a variable index starts at a
/// multiple of it.
const BLOCK: u64 = CDC_BLOCK as u64;

/// One page of [`PAGE_SLOTS`] slots with at least one stored chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Page {
    ids: Box<[ChunkDigest; PAGE_SLOTS]>,
    /// Slots of `ids` that are not the zero marker; a page at 0 is removed.
    stored: u16,
}

impl Page {
    fn empty() -> Self {
        Self {
            ids: Box::new([ChunkDigest::ZERO_MARKER; PAGE_SLOTS]),
            stored: 0,
        }
    }
}

/// A run of consecutive chunks of an index that are all zero or all stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRun {
    /// First chunk of the run.
    pub first: u64,
    /// Number of chunks in the run (at least 1).
    pub len: u64,
    /// True if every chunk of the run is stored; false if every one is all zeros.
    pub stored: bool,
}

/// How an index maps slots to bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// Format versions 1 to 3: slot `i` is bytes `i × chunk size` on, `count` slots.
    Fixed {
        count: u64,
        /// Page number → page; only pages with a stored chunk are present.
        pages: BTreeMap<u64, Page>,
    },
    /// Format version 4: the slots are the extents (chunks and maximal holes) tiling the disk.
    Variable(Extents),
}

/// The ids of every chunk of one disk in one generation.
///
/// Only stored (non-zero) chunks take memory, so an index of a huge, mostly empty disk is
/// small; consumers walk [`FixedIndex::stored_chunks`] or [`FixedIndex::runs`] rather than
/// every slot. The name predates content-defined chunks: a "variable" index
/// ([`FixedIndex::is_variable`]) has chunks of different lengths, and holes of any length as
/// slots of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedIndex {
    uuid: uuid::Uuid,
    created: i64,
    size: u64,
    /// The chunk size; the largest chunk of a variable index.
    chunk_size: u32,
    layout: Layout,
    /// Where it belongs; `None` for a legacy (version-1) index.
    binding: Option<IndexBinding>,
}

/// What [`FixedIndex::decode_at`] learned from the common header.
struct Header {
    uuid: uuid::Uuid,
    created: i64,
    size: u64,
    chunk_size: u32,
    body_hash: [u8; 32],
    count: u64,
}

/// The body layouts of the index versions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Versions 1 and 2: one id per chunk.
    Dense,
    /// Version 3: runs of ids.
    Runs,
    /// Version 4: runs of (id, length).
    VariableRuns,
}

impl FixedIndex {
    /// An index for a disk of `size` bytes where every chunk is zero.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad chunk size or a disk too large for one index.
    pub fn new(size: u64, chunk_size: u32) -> Result<Self> {
        validate_chunk_size(chunk_size)?;
        let count = size.div_ceil(chunk_size as u64);
        if count > MAX_CHUNKS {
            return Err(Error::InvalidOption(format!(
                "disk of {size} bytes needs {count} chunks of {chunk_size} bytes, more than one index holds ({MAX_CHUNKS})"
            )));
        }
        Ok(Self {
            uuid: uuid::Uuid::new_v4(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
            size,
            chunk_size,
            layout: Layout::Fixed {
                count,
                pages: BTreeMap::new(),
            },
            binding: None,
        })
    }

    /// An all-zero index of a disk of `size` bytes in content-defined chunks of at most
    /// `max_chunk` bytes (format version 4): one hole, filled by [`FixedIndex::splice`].
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad largest chunk (as for a chunk size) or a disk of more
    /// than `MAX_CHUNKS` largest chunks (the limit of a fixed index of that chunk size).
    pub fn new_variable(size: u64, max_chunk: u32) -> Result<Self> {
        validate_chunk_size(max_chunk)?;
        if size.div_ceil(u64::from(max_chunk)) > MAX_CHUNKS {
            return Err(Error::InvalidOption(format!(
                "disk of {size} bytes is larger than one index of chunks of at most \
                 {max_chunk} bytes covers ({MAX_CHUNKS} of them)"
            )));
        }
        let extents = if size == 0 {
            Vec::new()
        } else {
            vec![Extent::hole(0, size)]
        };
        Ok(Self {
            uuid: uuid::Uuid::new_v4(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
            size,
            chunk_size: max_chunk,
            layout: Layout::Variable(Extents::from_vec(extents)),
            binding: None,
        })
    }

    /// A copy of `base` with a new uuid and creation time and no binding: the start of an
    /// incremental index (bound to its own place when it is written).
    pub fn derive(base: &FixedIndex) -> Self {
        Self {
            uuid: uuid::Uuid::new_v4(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
            binding: None,
            ..base.clone()
        }
    }

    /// Binds the index to its place: it is then encoded as a version-3 (fixed) or version-4
    /// (variable) index naming it.
    pub fn bind(&mut self, binding: IndexBinding) {
        self.binding = Some(binding);
    }

    /// Where the index belongs; `None` for a legacy (version-1) index.
    pub fn binding(&self) -> Option<&IndexBinding> {
        self.binding.as_ref()
    }

    /// Index uuid.
    pub fn uuid(&self) -> uuid::Uuid {
        self.uuid
    }
    /// Creation time, Unix seconds.
    pub fn created(&self) -> i64 {
        self.created
    }
    /// Logical disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Chunk size in bytes; for a variable index the largest chunk (what bounds buffers and
    /// decompression), not the length of any particular chunk: that is
    /// [`FixedIndex::chunk_range`].
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// True for a format-4 (content-defined) index, whose slots are chunks of different
    /// lengths and holes.
    pub fn is_variable(&self) -> bool {
        matches!(self.layout, Layout::Variable(_))
    }

    /// Number of slots: chunks, stored or not (fixed), or chunks and holes (variable).
    pub fn chunk_count(&self) -> usize {
        match &self.layout {
            Layout::Fixed { count, .. } => *count as usize,
            Layout::Variable(e) => e.len(),
        }
    }

    /// Number of stored (non-zero) chunks.
    pub fn stored_chunk_count(&self) -> usize {
        match &self.layout {
            Layout::Fixed { pages, .. } => pages.values().map(|p| p.stored as usize).sum(),
            Layout::Variable(e) => e.stored(),
        }
    }

    /// Total length of the stored chunks in bytes: what a restore writes.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_chunks()
            .map(|(i, _)| self.chunk_range(i).1 as u64)
            .sum()
    }

    /// Digest of slot `i`; `None` for an all-zero chunk or a hole.
    ///
    /// # Panics
    /// If `i >= chunk_count()`.
    pub fn slot(&self, i: usize) -> Option<ChunkDigest> {
        match &self.layout {
            Layout::Fixed { count, pages } => {
                assert!(
                    (i as u64) < *count,
                    "slot {i} of an index of {count} chunks"
                );
                let page = pages.get(&((i / PAGE_SLOTS) as u64))?;
                let d = page.ids[i % PAGE_SLOTS];
                (!d.is_zero_marker()).then_some(d)
            }
            Layout::Variable(e) => {
                let x = Self::extent(e, i);
                x.stored().then_some(x.id)
            }
        }
    }

    fn extent(e: &Extents, i: usize) -> &Extent {
        e.get(i)
            .unwrap_or_else(|| panic!("slot {i} of an index of {} extents", e.len()))
    }

    /// The slot holding byte `offset`: `offset / chunk size` for a fixed index, a binary
    /// search over the extents for a variable one. An offset at or past the end of the disk
    /// gives [`FixedIndex::chunk_count`] (no slot).
    pub fn slot_at(&self, offset: u64) -> usize {
        if offset >= self.size {
            return self.chunk_count();
        }
        match &self.layout {
            Layout::Fixed { .. } => (offset / u64::from(self.chunk_size)) as usize,
            Layout::Variable(e) => e.slot_at(offset),
        }
    }

    /// Sets chunk `i` of a fixed index (`None` = all zeros). A variable index changes only
    /// through [`FixedIndex::splice`], which keeps its extents tiling the disk.
    ///
    /// # Panics
    /// If `i >= chunk_count()`, or on a variable index (a bug in the caller: its slots are not
    /// fixed byte ranges, so setting one would silently describe the wrong bytes).
    pub fn set(&mut self, i: usize, digest: Option<ChunkDigest>) {
        let Layout::Fixed { count, pages } = &mut self.layout else {
            panic!(
                "FixedIndex::set({i}) on a content-defined (variable) index: its slots change \
                 only through splice"
            );
        };
        assert!(
            (i as u64) < *count,
            "slot {i} of an index of {count} chunks"
        );
        let number = (i / PAGE_SLOTS) as u64;
        let at = i % PAGE_SLOTS;
        match digest.filter(|d| !d.is_zero_marker()) {
            Some(d) => {
                let page = pages.entry(number).or_insert_with(Page::empty);
                if page.ids[at].is_zero_marker() {
                    page.stored += 1;
                }
                page.ids[at] = d;
            }
            None => {
                let std::collections::btree_map::Entry::Occupied(mut e) = pages.entry(number)
                else {
                    return;
                };
                let page = e.get_mut();
                if !page.ids[at].is_zero_marker() {
                    page.ids[at] = ChunkDigest::ZERO_MARKER;
                    page.stored -= 1;
                    if page.stored == 0 {
                        e.remove();
                    }
                }
            }
        }
    }

    /// Byte offset and length of slot `i` (the last chunk of a fixed index may be short; a
    /// hole of a variable index may be longer than any chunk, up to the whole disk).
    ///
    /// # Panics
    /// On a variable index, if `i >= chunk_count()`.
    pub fn chunk_range(&self, i: usize) -> (u64, usize) {
        match &self.layout {
            Layout::Fixed { .. } => {
                let off = i as u64 * self.chunk_size as u64;
                let len = (self.size - off).min(self.chunk_size as u64) as usize;
                (off, len)
            }
            Layout::Variable(e) => {
                let x = Self::extent(e, i);
                (x.offset, x.len as usize)
            }
        }
    }

    /// Every stored (non-zero) chunk as (index, digest), in disk order. Costs time and memory
    /// in the stored chunks only, whatever the disk size.
    pub fn stored_chunks(&self) -> impl Iterator<Item = (usize, ChunkDigest)> + '_ {
        self.stored_from(0)
    }

    /// The stored chunks from chunk `from` on, in disk order.
    pub fn stored_from(&self, from: usize) -> impl Iterator<Item = (usize, ChunkDigest)> + '_ {
        let it: Box<dyn Iterator<Item = (usize, ChunkDigest)> + '_> = match &self.layout {
            Layout::Fixed { pages, .. } => {
                let first_page = (from / PAGE_SLOTS) as u64;
                Box::new(pages.range(first_page..).flat_map(move |(&n, page)| {
                    let base = n as usize * PAGE_SLOTS;
                    page.ids
                        .iter()
                        .enumerate()
                        .filter(move |(j, d)| base + j >= from && !d.is_zero_marker())
                        .map(move |(j, d)| (base + j, *d))
                }))
            }
            Layout::Variable(e) => Box::new(
                e.iter_from(from)
                    .filter(|(_, x)| x.stored())
                    .map(|(i, x)| (i, x.id)),
            ),
        };
        it
    }

    /// The first stored chunk at or after chunk `from`; `None` if the rest is all zeros.
    pub fn next_stored(&self, from: usize) -> Option<usize> {
        self.stored_from(from).next().map(|(i, _)| i)
    }

    /// Every stored chunk as (byte offset, length, id), in disk order.
    fn stored_extents(&self) -> impl Iterator<Item = (u64, u64, ChunkDigest)> + '_ {
        self.stored_chunks().map(|(i, d)| {
            let (offset, len) = self.chunk_range(i);
            (offset, len as u64, d)
        })
    }

    /// The byte ranges, as (offset, length), whose content may differ between `self` and
    /// `other`, merged and in order: every stored chunk of one that the other does not have at
    /// the same offset with the same length and id (a byte past the end of one index counts
    /// as all zeros there). Works for both layouts, and between them; a merge of the two
    /// stored lists, so it costs the stored chunks, not the disk size.
    pub fn differing_ranges(&self, other: &FixedIndex) -> Vec<(u64, u64)> {
        let mut a = self.stored_extents().peekable();
        let mut b = other.stored_extents().peekable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut push = |(offset, len, _): (u64, u64, ChunkDigest)| match out.last_mut() {
            Some((o, l)) if *o + *l >= offset => *l = (*l).max(offset + len - *o),
            _ => out.push((offset, len)),
        };
        loop {
            match (a.peek().copied(), b.peek().copied()) {
                (None, None) => break,
                (Some(x), None) => {
                    push(x);
                    a.next();
                }
                (None, Some(y)) => {
                    push(y);
                    b.next();
                }
                (Some(x), Some(y)) => {
                    // Chunks of one index never overlap, so the only chunk of the other that
                    // can match `x` starts where `x` does.
                    if x == y {
                        a.next();
                        b.next();
                    } else if x.0 < y.0 {
                        push(x);
                        a.next();
                    } else if y.0 < x.0 {
                        push(y);
                        b.next();
                    } else {
                        push(x);
                        push(y);
                        a.next();
                        b.next();
                    }
                }
            }
        }
        out
    }

    /// Variable indexes only: replaces the bytes `start..end` with `chunks`, each (offset,
    /// length, id); every byte of `start..end` in no chunk becomes a hole. The incremental
    /// backup of content-defined chunks cuts a changed area again and splices the new chunks
    /// over the old ones, so the range must not cut a stored chunk in two.
    ///
    /// Rules: `start` and `end` are multiples of 4096 (or `end` is the disk's size), inside
    /// the disk, and neither falls strictly inside a stored chunk; `chunks` are sorted, do not
    /// overlap, lie inside `start..end`, start at multiples of 4096, are 1 to `chunk_size()`
    /// bytes long (a multiple of 4096 unless the chunk ends the disk) and have non-zero ids;
    /// at most `MAX_CHUNKS` chunks are stored afterwards. Costs the extents replaced plus a
    /// page, not the whole index.
    ///
    /// # Errors
    /// [`Error::IndexEdit`] naming the broken rule, on a fixed index or any violation; the
    /// index is then unchanged.
    pub fn splice(
        &mut self,
        start: u64,
        end: u64,
        chunks: &[(u64, u32, ChunkDigest)],
    ) -> Result<()> {
        let (size, max) = (self.size, u64::from(self.chunk_size));
        let bad = |reason: String| Err(Error::IndexEdit(reason));
        let Layout::Variable(extents) = &mut self.layout else {
            return bad("splice of a fixed-chunk index: set its slots instead".into());
        };
        if start > end || end > size {
            return bad(format!(
                "range {start}..{end} is not inside the disk of {size} bytes"
            ));
        }
        if start % BLOCK != 0 || (end % BLOCK != 0 && end != size) {
            return bad(format!(
                "range {start}..{end} does not start and end at {BLOCK}-byte blocks (or the \
                 disk's end, {size})"
            ));
        }
        let mut at = start;
        for &(offset, len, id) in chunks {
            let len = u64::from(len);
            if offset < at {
                return bad(format!(
                    "chunk at byte {offset} starts before byte {at} (the range's start or the \
                     end of the chunk before it): chunks must be sorted, apart and inside \
                     {start}..{end}"
                ));
            }
            if offset % BLOCK != 0 {
                return bad(format!(
                    "chunk at byte {offset} does not start at a {BLOCK}-byte block"
                ));
            }
            if len == 0 || len > max {
                return bad(format!(
                    "chunk at byte {offset} has {len} bytes, outside 1..={max}"
                ));
            }
            let chunk_end = offset + len;
            if chunk_end > end {
                return bad(format!(
                    "chunk at byte {offset} of {len} bytes ends after the range's end {end}"
                ));
            }
            if len % BLOCK != 0 && chunk_end != size {
                return bad(format!(
                    "chunk at byte {offset} has {len} bytes: not a multiple of {BLOCK} and \
                     not the disk's last chunk"
                ));
            }
            if id.is_zero_marker() {
                return bad(format!(
                    "chunk at byte {offset} has the all-zero id, which marks holes"
                ));
            }
            at = chunk_end;
        }
        if start == end {
            return Ok(());
        }
        let mut a = extents.slot_at(start);
        let first = *Self::extent(extents, a);
        if first.stored() && first.offset < start {
            return bad(format!(
                "range start {start} falls inside the stored chunk at bytes {}..{}",
                first.offset,
                first.end()
            ));
        }
        let mut b = extents.slot_at(end - 1) + 1;
        let last = *Self::extent(extents, b - 1);
        if last.stored() && last.end() > end {
            return bad(format!(
                "range end {end} falls inside the stored chunk at bytes {}..{}",
                last.offset,
                last.end()
            ));
        }
        // Take in the holes next to the range, so the holes stay maximal.
        if a > 0 && !Self::extent(extents, a - 1).stored() {
            a -= 1;
        }
        if b < extents.len() && !Self::extent(extents, b).stored() {
            b += 1;
        }
        // Around start..end the covered extents are holes (checked above), so the new extents
        // are holes up to the first chunk and after the last, and holes between the chunks.
        let covered_end = Self::extent(extents, b - 1).end();
        let mut pos = Self::extent(extents, a).offset;
        let mut new = Vec::with_capacity(2 * chunks.len() + 2);
        for &(offset, len, id) in chunks {
            if offset > pos {
                new.push(Extent::hole(pos, offset - pos));
            }
            let len = u64::from(len);
            new.push(Extent { offset, len, id });
            pos = offset + len;
        }
        if covered_end > pos {
            new.push(Extent::hole(pos, covered_end - pos));
        }
        let removed = extents
            .iter_from(a)
            .take(b - a)
            .filter(|(_, x)| x.stored())
            .count();
        let stored_after = extents.stored() - removed + chunks.len();
        if stored_after as u64 > MAX_CHUNKS {
            return bad(format!(
                "{stored_after} stored chunks: more than one index holds ({MAX_CHUNKS})"
            ));
        }
        extents.replace(a, b, new);
        Ok(())
    }

    /// Replaces the id of every stored chunk by `f(id)`, keeping offsets and lengths: a copy
    /// to a repository with other keys names the same chunks by other ids.
    ///
    /// # Errors
    /// [`Error::IndexEdit`] if `f` gives the all-zero id (which marks holes); the index may
    /// then be partly translated.
    pub fn translate_ids(&mut self, mut f: impl FnMut(ChunkDigest) -> ChunkDigest) -> Result<()> {
        let mut next = |d: ChunkDigest| {
            let t = f(d);
            if t.is_zero_marker() {
                return Err(Error::IndexEdit(format!(
                    "chunk {d} translates to the all-zero id, which marks holes"
                )));
            }
            Ok(t)
        };
        match &mut self.layout {
            Layout::Fixed { pages, .. } => {
                for page in pages.values_mut() {
                    for d in page.ids.iter_mut().filter(|d| !d.is_zero_marker()) {
                        *d = next(*d)?;
                    }
                }
            }
            Layout::Variable(e) => {
                let list = e
                    .iter_from(0)
                    .map(|(_, x)| {
                        Ok(match x.stored() {
                            true => Extent {
                                id: next(x.id)?,
                                ..*x
                            },
                            false => *x,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                *e = Extents::from_vec(list);
            }
        }
        Ok(())
    }

    /// The whole disk as alternating runs of all-zero and stored chunks, in disk order: as
    /// many items as there are runs, whatever the disk size. (A hole of a variable index is
    /// one slot, so a zero run of it has length 1.)
    pub fn runs(&self) -> impl Iterator<Item = IndexRun> + '_ {
        let count = self.chunk_count() as u64;
        let mut stored = self.stored_chunks().map(|(i, _)| i as u64).peekable();
        let mut at = 0u64;
        std::iter::from_fn(move || {
            if at >= count {
                return None;
            }
            let run = match stored.peek().copied() {
                Some(s) if s == at => {
                    let mut end = at;
                    while stored.peek() == Some(&end) {
                        stored.next();
                        end += 1;
                    }
                    IndexRun {
                        first: at,
                        len: end - at,
                        stored: true,
                    }
                }
                next => IndexRun {
                    first: at,
                    len: next.unwrap_or(count) - at,
                    stored: false,
                },
            };
            at = run.first + run.len;
            Some(run)
        })
    }

    /// Serialises into an index blob.
    ///
    /// # Panics
    /// If the operating system's random generator fails while encrypting, or for an unbound
    /// variable index; the writer uses [`FixedIndex::try_encode`] instead.
    pub fn encode(&self, codec: &Codec) -> Vec<u8> {
        self.try_encode(codec)
            .unwrap_or_else(|e| panic!("encoding an index: {e}"))
    }

    /// Serialises into an index blob; a bound index is bound in the blob's associated data
    /// too (encrypted repositories).
    ///
    /// # Errors
    /// [`Error::Random`] if no nonce can be drawn (encrypted repositories only);
    /// [`Error::IndexEdit`] for a variable index without a binding.
    pub fn try_encode(&self, codec: &Codec) -> Result<Vec<u8>> {
        let place = self
            .binding
            .as_ref()
            .map(IndexBinding::associated_data)
            .unwrap_or_default();
        codec.try_encode_bound(BlobKind::Index, &self.payload()?, &place)
    }

    /// The payload of the index blob (header and body, before compression or encryption):
    /// version 4 for a variable index, version 3 (runs of stored chunks) for a bound fixed
    /// index, version 1 (legacy, dense) for an unbound fixed one.
    ///
    /// # Errors
    /// [`Error::IndexEdit`] for a variable index without a binding: version 4 has no unbound
    /// form, since format version 4 binds every index.
    pub fn payload(&self) -> Result<Vec<u8>> {
        match (&self.layout, &self.binding) {
            (Layout::Variable(e), Some(b)) => Ok(self.payload_v4(e, b)),
            (Layout::Variable(_), None) => Err(Error::IndexEdit(
                "a content-defined index is only written bound to its place".into(),
            )),
            (Layout::Fixed { .. }, Some(b)) => Ok(self.payload_v3(b)),
            (Layout::Fixed { .. }, None) => Ok(self.payload_dense(&INDEX_MAGIC, None)),
        }
    }

    /// The chunk count field of the header: every slot of a fixed index, the stored chunks
    /// of a variable one.
    fn header_count(&self) -> u64 {
        match &self.layout {
            Layout::Fixed { count, .. } => *count,
            Layout::Variable(e) => e.stored() as u64,
        }
    }

    fn common_header(&self, p: &mut Vec<u8>, magic: &[u8; 8], body_hash: [u8; 32]) {
        p.extend_from_slice(magic);
        p.extend_from_slice(self.uuid.as_bytes());
        p.extend_from_slice(&self.created.to_le_bytes());
        p.extend_from_slice(&self.size.to_le_bytes());
        p.extend_from_slice(&self.chunk_size.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&body_hash);
        p.extend_from_slice(&self.header_count().to_le_bytes());
    }

    fn binding_header(p: &mut Vec<u8>, b: &IndexBinding) {
        let t = b.target.as_str().as_bytes();
        p.extend_from_slice(&b.generation.0.to_le_bytes());
        p.extend_from_slice(&b.disk.to_le_bytes());
        // Target keys are at most 200 bytes (`TargetKey::new`).
        p.extend_from_slice(&(t.len() as u16).to_le_bytes());
        p.extend_from_slice(t);
    }

    /// The version-3 body: maximal runs of stored chunks.
    fn runs_body(&self) -> Vec<u8> {
        let stored = self.stored_chunk_count();
        let mut body = Vec::with_capacity(32 * stored + RUN_HEADER_LEN * 16);
        let mut ids = self.stored_chunks();
        for run in self.runs().filter(|r| r.stored) {
            body.extend_from_slice(&run.first.to_le_bytes());
            // MAX_CHUNKS is far below u32::MAX, so a run's length fits its u32 field.
            body.extend_from_slice(&(run.len as u32).to_le_bytes());
            for _ in 0..run.len {
                let (_, d) = ids.next().expect("a stored run's ids are stored chunks");
                body.extend_from_slice(&d.0);
            }
        }
        body
    }

    fn payload_v3(&self, b: &IndexBinding) -> Vec<u8> {
        let body = self.runs_body();
        self.bound_payload(&INDEX_MAGIC_V3, b, &body)
    }

    fn bound_payload(&self, magic: &[u8; 8], b: &IndexBinding, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(INDEX_V2_FIXED_LEN + 200 + body.len());
        self.common_header(&mut p, magic, Sha256::digest(body).into());
        Self::binding_header(&mut p, b);
        p.extend_from_slice(body);
        p
    }

    /// The version-4 body: maximal runs of stored chunks with their lengths.
    fn variable_body(extents: &Extents) -> Vec<u8> {
        let mut body = Vec::with_capacity(CHUNK_ENTRY_LEN * extents.stored() + RUN_HEADER_LEN * 16);
        // Where the open run's chunk count goes, and the count so far.
        let mut open: Option<(usize, u32)> = None;
        let close = |body: &mut Vec<u8>, open: &mut Option<(usize, u32)>| {
            if let Some((at, n)) = open.take() {
                body[at..at + 4].copy_from_slice(&n.to_le_bytes());
            }
        };
        for (_, x) in extents.iter_from(0) {
            if !x.stored() {
                close(&mut body, &mut open);
                continue;
            }
            let (_, n) = open.get_or_insert_with(|| {
                body.extend_from_slice(&x.offset.to_le_bytes());
                body.extend_from_slice(&[0; 4]);
                (body.len() - 4, 0)
            });
            // Stored chunks are at most MAX_CHUNKS and chunks at most 16 MiB: both fit u32.
            *n += 1;
            body.extend_from_slice(&x.id.0);
            body.extend_from_slice(&(x.len as u32).to_le_bytes());
        }
        close(&mut body, &mut open);
        body
    }

    fn payload_v4(&self, extents: &Extents, b: &IndexBinding) -> Vec<u8> {
        let body = Self::variable_body(extents);
        self.bound_payload(&INDEX_MAGIC_V4, b, &body)
    }

    /// A dense (version 1, or version 2 with a binding) payload of a fixed index: one id per
    /// chunk.
    fn payload_dense(&self, magic: &[u8; 8], binding: Option<&IndexBinding>) -> Vec<u8> {
        let count = self.chunk_count();
        let mut body = Vec::with_capacity(32 * count);
        let mut ids = self.stored_chunks().peekable();
        for i in 0..count {
            match ids.next_if(|(s, _)| *s == i) {
                Some((_, d)) => body.extend_from_slice(&d.0),
                None => body.extend_from_slice(&ChunkDigest::ZERO_MARKER.0),
            }
        }
        let mut p = Vec::with_capacity(INDEX_V2_FIXED_LEN + 200 + body.len());
        self.common_header(&mut p, magic, Sha256::digest(&body).into());
        if let Some(b) = binding {
            Self::binding_header(&mut p, b);
        }
        p.extend_from_slice(&body);
        p
    }

    /// Parses and verifies an index blob read from `path` (named in errors).
    ///
    /// # Errors
    /// [`Error::Blob`] for envelope damage, [`Error::Index`] for inconsistent content.
    pub fn decode(path: &Path, bytes: &[u8], codec: &Codec) -> Result<Self> {
        Self::decode_at(path, bytes, codec, None)
    }

    /// Parses and verifies an index blob expected to belong to `place`: in an encrypted
    /// repository the blob must authenticate for that place. (Whether the binding in the
    /// header names `place` is the caller's check: [`FixedIndex::binding`].) A legacy index
    /// is decoded without a place; `place` = `None` decodes without one too.
    ///
    /// # Errors
    /// As [`FixedIndex::decode`].
    pub fn decode_at(
        path: &Path,
        bytes: &[u8],
        codec: &Codec,
        place: Option<&IndexBinding>,
    ) -> Result<Self> {
        let aad = place.map(IndexBinding::associated_data).unwrap_or_default();
        let p = codec
            .decode_bound(BlobKind::Index, bytes, INDEX_LIMIT, &aad)
            .map_err(|reason| Error::Blob {
                path: path.to_path_buf(),
                reason,
            })?;
        Self::decode_payload(&p).map_err(|reason| Error::Index {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn decode_payload(p: &[u8]) -> std::result::Result<Self, String> {
        if p.len() < INDEX_HEADER_LEN {
            return Err(format!("header truncated ({} bytes)", p.len()));
        }
        let magic: [u8; 8] = p[..8].try_into().expect("8 bytes");
        let (bound, kind) = match magic {
            INDEX_MAGIC_V4 => (true, Body::VariableRuns),
            INDEX_MAGIC_V3 => (true, Body::Runs),
            INDEX_MAGIC_V2 => (true, Body::Dense),
            INDEX_MAGIC => (false, Body::Dense),
            _ => return Err("wrong index magic".into()),
        };
        let h = Self::decode_header(p, kind == Body::VariableRuns)?;
        let (binding, body_start) = if bound {
            let (b, end) = Self::decode_binding(p)?;
            (Some(b), end)
        } else {
            (None, INDEX_HEADER_LEN)
        };
        let body = &p[body_start..];
        let mut index = FixedIndex {
            uuid: h.uuid,
            created: h.created,
            size: h.size,
            chunk_size: h.chunk_size,
            layout: Layout::Fixed {
                count: h.count,
                pages: BTreeMap::new(),
            },
            binding,
        };
        // The hash is checked before the body is parsed, so a damaged body is reported as
        // damage rather than as whatever its bytes happen to say.
        if <[u8; 32]>::from(Sha256::digest(body)) != h.body_hash {
            return Err(match kind {
                Body::Runs | Body::VariableRuns => {
                    "SHA-256 of the run list does not match the header".into()
                }
                Body::Dense if body.len() as u64 != h.count * 32 => format!(
                    "digest list has {} bytes, expected {}",
                    body.len(),
                    h.count * 32
                ),
                Body::Dense => "SHA-256 of the digest list does not match the header".into(),
            });
        }
        match kind {
            Body::VariableRuns => {
                index.layout = Layout::Variable(Self::read_variable_runs(
                    body,
                    h.size,
                    h.chunk_size,
                    h.count,
                )?);
            }
            Body::Runs => index.read_runs(body)?,
            Body::Dense => {
                if body.len() as u64 != h.count * 32 {
                    return Err(format!(
                        "digest list has {} bytes, expected {}",
                        body.len(),
                        h.count * 32
                    ));
                }
                for (i, c) in body.chunks_exact(32).enumerate() {
                    let d = ChunkDigest(c.try_into().expect("32 bytes"));
                    if !d.is_zero_marker() {
                        index.set(i, Some(d));
                    }
                }
            }
        }
        Ok(index)
    }

    /// The common header; `variable`: of a version-4 index, whose count is its stored chunks.
    fn decode_header(p: &[u8], variable: bool) -> std::result::Result<Header, String> {
        let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().expect("8 bytes"));
        let size = u64_at(32);
        let chunk_size = u32::from_le_bytes(p[40..44].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(p[44..48].try_into().expect("4 bytes"));
        let count = u64_at(80);
        validate_chunk_size(chunk_size).map_err(|e| e.to_string())?;
        if flags != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let covering = size.div_ceil(chunk_size as u64);
        if variable {
            if covering > MAX_CHUNKS {
                return Err(format!(
                    "disk of {size} bytes: more than one index covers ({MAX_CHUNKS} chunks of \
                     at most {chunk_size} bytes)"
                ));
            }
            if count > MAX_CHUNKS {
                return Err(format!(
                    "{count} stored chunks: more than one index holds ({MAX_CHUNKS})"
                ));
            }
        } else {
            if count != covering {
                return Err(format!(
                    "{count} chunks do not cover {size} bytes in chunks of {chunk_size}"
                ));
            }
            if count > MAX_CHUNKS {
                return Err(format!(
                    "{count} chunks: the digest list would exceed what one index holds \
                     ({MAX_CHUNKS} chunks)"
                ));
            }
        }
        Ok(Header {
            uuid: uuid::Uuid::from_slice(&p[8..24]).expect("16 bytes"),
            created: u64_at(24) as i64,
            size,
            chunk_size,
            body_hash: p[48..80].try_into().expect("32 bytes"),
            count,
        })
    }

    /// The binding of a version-2 to version-4 header and where its body starts.
    fn decode_binding(p: &[u8]) -> std::result::Result<(IndexBinding, usize), String> {
        if p.len() < INDEX_V2_FIXED_LEN {
            return Err(format!("header truncated ({} bytes)", p.len()));
        }
        let h = INDEX_HEADER_LEN;
        let generation = GenerationId(u64::from_le_bytes(p[h..h + 8].try_into().expect("8 bytes")));
        let disk = i32::from_le_bytes(p[h + 8..h + 12].try_into().expect("4 bytes"));
        let tlen =
            u16::from_le_bytes(p[h + 12..INDEX_V2_FIXED_LEN].try_into().expect("2 bytes")) as usize;
        let end = INDEX_V2_FIXED_LEN + tlen;
        if p.len() < end {
            return Err(format!("header truncated ({} bytes)", p.len()));
        }
        let target = std::str::from_utf8(&p[INDEX_V2_FIXED_LEN..end])
            .ok()
            .and_then(|t| TargetKey::new(t).ok())
            .ok_or_else(|| "the target key in the header is not a valid key".to_string())?;
        Ok((
            IndexBinding {
                target,
                generation,
                disk,
            },
            end,
        ))
    }

    /// Reads a version-3 run list into the (empty, fixed) index, refusing anything but the one
    /// canonical encoding: runs ascending, inside the disk, separated by a zero chunk, of at
    /// least one chunk, with no all-zero id.
    fn read_runs(&mut self, mut body: &[u8]) -> std::result::Result<(), String> {
        let count = self.chunk_count() as u64;
        let mut next_free = 0u64;
        let mut first_run = true;
        while !body.is_empty() {
            let (first, n) = take_run_header(&mut body)?;
            if n == 0 {
                return Err(format!("empty run at chunk {first}"));
            }
            if !first_run && first <= next_free {
                return Err(format!(
                    "run at chunk {first} does not follow the previous run with a gap (it ended at {next_free})"
                ));
            }
            let end = first
                .checked_add(n)
                .filter(|&e| e <= count)
                .ok_or_else(|| {
                    format!("run of {n} chunks at chunk {first} past the end ({count} chunks)")
                })?;
            let bytes = n as usize * 32;
            if body.len() < bytes {
                return Err(format!(
                    "run at chunk {first} truncated ({} of {bytes} bytes)",
                    body.len()
                ));
            }
            for (j, c) in body[..bytes].chunks_exact(32).enumerate() {
                let d = ChunkDigest(c.try_into().expect("32 bytes"));
                if d.is_zero_marker() {
                    return Err(format!(
                        "run at chunk {first} holds the all-zero id at chunk {}",
                        first + j as u64
                    ));
                }
                self.set((first + j as u64) as usize, Some(d));
            }
            body = &body[bytes..];
            next_free = end;
            first_run = false;
        }
        Ok(())
    }

    /// Reads a version-4 run list into extents, refusing anything but the one canonical
    /// encoding: runs ascending, starting at 4096-byte blocks inside the disk, separated by at
    /// least one byte of hole, of at least one chunk, chunks of 1 to `max` bytes (a multiple
    /// of 4096 unless the last of the disk) with no all-zero id, as many as the header counts.
    /// Allocates for the chunks the body holds (36 bytes each) only.
    fn read_variable_runs(
        mut body: &[u8],
        size: u64,
        max: u32,
        count: u64,
    ) -> std::result::Result<Extents, String> {
        let max = u64::from(max);
        let mut list: Vec<Extent> = Vec::new();
        // One past the last chunk read, and the chunks read.
        let (mut pos, mut chunks) = (0u64, 0u64);
        while !body.is_empty() {
            let (first, n) = take_run_header(&mut body)?;
            if n == 0 {
                return Err(format!("empty run at byte {first}"));
            }
            if first % BLOCK != 0 {
                return Err(format!(
                    "run at byte {first} does not start at a {BLOCK}-byte block"
                ));
            }
            if chunks > 0 && first <= pos {
                return Err(format!(
                    "run at byte {first} does not follow the previous run with a hole (it \
                     ended at byte {pos})"
                ));
            }
            if first >= size {
                return Err(format!(
                    "run at byte {first} starts past the end of the disk ({size} bytes)"
                ));
            }
            chunks += n;
            if chunks > count {
                return Err(format!(
                    "more chunks in the runs than the {count} the header counts"
                ));
            }
            // n <= count <= MAX_CHUNKS: no overflow.
            let bytes = n as usize * CHUNK_ENTRY_LEN;
            if body.len() < bytes {
                return Err(format!(
                    "run at byte {first} truncated ({} of {bytes} bytes)",
                    body.len()
                ));
            }
            if first > pos {
                list.push(Extent::hole(pos, first - pos));
            }
            let mut at = first;
            for entry in body[..bytes].chunks_exact(CHUNK_ENTRY_LEN) {
                let id = ChunkDigest(entry[..32].try_into().expect("32 bytes"));
                let len = u64::from(u32::from_le_bytes(entry[32..].try_into().expect("4 bytes")));
                if id.is_zero_marker() {
                    return Err(format!(
                        "run at byte {first} holds the all-zero id at byte {at}"
                    ));
                }
                if len == 0 || len > max {
                    return Err(format!(
                        "chunk at byte {at} has {len} bytes, outside 1..={max}"
                    ));
                }
                let end = at.checked_add(len).filter(|&e| e <= size).ok_or_else(|| {
                    format!("chunk at byte {at} of {len} bytes ends past the disk ({size} bytes)")
                })?;
                if len % BLOCK != 0 && end != size {
                    return Err(format!(
                        "chunk at byte {at} has {len} bytes: not a multiple of {BLOCK} and \
                         not the disk's last chunk"
                    ));
                }
                list.push(Extent {
                    offset: at,
                    len,
                    id,
                });
                at = end;
            }
            body = &body[bytes..];
            pos = at;
        }
        if chunks != count {
            return Err(format!(
                "{chunks} chunks in the runs, but the header counts {count}"
            ));
        }
        if pos < size {
            list.push(Extent::hole(pos, size - pos));
        }
        Ok(Extents::from_vec(list))
    }

    /// Reads and verifies the index file at `path`.
    ///
    /// # Errors
    /// As [`FixedIndex::decode`], plus [`Error::Io`].
    pub fn read(path: &Path, codec: &Codec) -> Result<Self> {
        let bytes = crate::fsutil::read_limited(path, INDEX_LIMIT as u64 + 4096)?;
        Self::decode(path, &bytes, codec)
    }
}

/// Reads a run header (first chunk or byte, u64 LE; chunk count, u32 LE) off the front of an
/// index body: both index versions that store runs (3 and 4) start each run with it.
fn take_run_header(body: &mut &[u8]) -> std::result::Result<(u64, u64), String> {
    if body.len() < RUN_HEADER_LEN {
        return Err(format!("run header truncated ({} bytes)", body.len()));
    }
    let first = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let n = u64::from(u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")));
    *body = &body[RUN_HEADER_LEN..];
    Ok((first, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_index() -> impl Strategy<Value = FixedIndex> {
        (
            0u64..(40 << 16),
            proptest::collection::vec(any::<Option<u8>>(), 0..64),
        )
            .prop_map(|(size, fill)| {
                let mut idx = FixedIndex::new(size, 1 << 16).unwrap();
                for i in 0..idx.chunk_count() {
                    let f = fill.get(i % fill.len().max(1)).copied().flatten();
                    idx.set(i, f.map(|b| ChunkDigest::of(&[b, i as u8])));
                }
                idx
            })
    }

    proptest! {
        #[test]
        fn round_trip(idx in arb_index(), level in 0i32..3) {
            let codec = Codec::new(level, None);
            let blob = idx.encode(&codec);
            let back = FixedIndex::decode(Path::new("i"), &blob, &codec).unwrap();
            prop_assert_eq!(back, idx);
        }

        #[test]
        fn truncation_or_flip_detected(idx in arb_index(), cut in any::<prop::sample::Index>(), flip in any::<bool>()) {
            let codec = Codec::new(0, None);
            let blob = idx.encode(&codec);
            let n = cut.index(blob.len());
            let damaged = if flip { let mut b = blob.clone(); b[n] ^= 0x10; b } else { blob[..n].to_vec() };
            prop_assert!(FixedIndex::decode(Path::new("i"), &damaged, &codec).is_err());
        }

        /// Incremental semantics: derive from the parent, replace the re-read slots; every other
        /// slot equals the parent's, every replaced slot equals the new value.
        #[test]
        fn incremental_replaces_only_reread_slots(parent in arb_index(), changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<Option<u8>>()), 0..20)) {
            prop_assume!(parent.chunk_count() > 0);
            let mut child = FixedIndex::derive(&parent);
            let mut expected: Vec<Option<ChunkDigest>> = (0..parent.chunk_count()).map(|i| parent.slot(i)).collect();
            for (pos, v) in &changes {
                let i = pos.index(parent.chunk_count());
                let d = v.map(|b| ChunkDigest::of(&[b, 0xEE]));
                child.set(i, d);
                expected[i] = d;
            }
            prop_assert_ne!(child.uuid(), parent.uuid());
            prop_assert_eq!(child.size(), parent.size());
            for (i, e) in expected.iter().enumerate() {
                prop_assert_eq!(child.slot(i), *e);
            }
            let codec = Codec::new(1, None);
            let back = FixedIndex::decode(Path::new("i"), &child.encode(&codec), &codec).unwrap();
            prop_assert_eq!(back, child);
        }
    }

    fn place() -> IndexBinding {
        IndexBinding::new(TargetKey::new("vm-big").unwrap(), GenerationId(7), 2000)
    }

    proptest! {
        /// A bound index (version 3, runs) decodes to the same index, and `runs` tiles the
        /// disk with alternating zero and stored runs that agree with every slot.
        #[test]
        fn bound_round_trip_and_runs(mut idx in arb_index(), encrypted in any::<bool>()) {
            idx.bind(place());
            let codec = if encrypted {
                Codec::new(1, Some(crate::blob::Key::generate().unwrap()))
            } else {
                Codec::new(1, None)
            };
            let blob = idx.encode(&codec);
            let back = FixedIndex::decode_at(Path::new("i"), &blob, &codec, Some(&place())).unwrap();
            prop_assert_eq!(&back, &idx);
            let mut at = 0u64;
            let mut last: Option<bool> = None;
            for run in idx.runs() {
                prop_assert_eq!(run.first, at);
                prop_assert!(run.len > 0);
                prop_assert_ne!(Some(run.stored), last);
                for i in run.first..run.first + run.len {
                    prop_assert_eq!(idx.slot(i as usize).is_some(), run.stored);
                }
                last = Some(run.stored);
                at += run.len;
            }
            prop_assert_eq!(at, idx.chunk_count() as u64);
        }
    }

    /// A version-3 payload with `body` as its run list (and the matching hash).
    fn v3_payload(count: u64, body: &[u8]) -> Vec<u8> {
        let mut idx = FixedIndex::new(count * 65536, 65536).unwrap();
        idx.bind(place());
        let mut p = Vec::new();
        idx.common_header(&mut p, &INDEX_MAGIC_V3, Sha256::digest(body).into());
        FixedIndex::binding_header(&mut p, &place());
        p.extend_from_slice(body);
        p
    }

    fn run(first: u64, ids: &[[u8; 32]]) -> Vec<u8> {
        let mut r = first.to_le_bytes().to_vec();
        r.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for d in ids {
            r.extend_from_slice(d);
        }
        r
    }

    #[test]
    fn only_the_canonical_run_list_decodes() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let good = [run(1, &[a]), run(3, &[b, a])].concat();
        let idx = FixedIndex::decode_payload(&v3_payload(10, &good)).unwrap();
        assert_eq!(idx.stored_chunk_count(), 3);
        assert_eq!(idx.slot(4), Some(ChunkDigest(a)));
        for (body, why) in [
            ([run(1, &[a]), run(2, &[b])].concat(), "gap"),
            ([run(3, &[a]), run(1, &[b])].concat(), "gap"),
            (run(9, &[a, b]), "past the end"),
            (run(2, &[]), "empty run"),
            (run(2, &[[0; 32]]), "all-zero id"),
            (run(2, &[a])[..20].to_vec(), "truncated"),
            (run(2, &[a])[..8].to_vec(), "run header truncated"),
            (run(u64::MAX, &[a]), "past the end"),
        ] {
            let err = FixedIndex::decode_payload(&v3_payload(10, &body)).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    /// A 16 TiB disk with 64 MiB written at four places: the index is a few kilobytes on
    /// disk and in memory, and walking it costs the runs, not the 16 Mi slots.
    #[test]
    fn a_huge_sparse_disk_has_a_small_index() {
        let mut idx = FixedIndex::new(16 << 40, 1 << 20).unwrap();
        assert_eq!(idx.chunk_count(), 16 << 20);
        for base in [0usize, 3 << 20, (8 << 20) + 5, (16 << 20) - 16] {
            for i in base..base + 16 {
                idx.set(i, Some(ChunkDigest::of(&i.to_le_bytes())));
            }
        }
        idx.bind(place());
        assert_eq!(idx.stored_chunk_count(), 64);
        let Layout::Fixed { pages, .. } = &idx.layout else {
            panic!("a fixed index")
        };
        assert!(pages.len() <= 5, "{} pages", pages.len());
        // Stored, zero, stored, zero, stored, zero, stored (the last run ends the disk).
        assert_eq!(idx.runs().count(), 7);
        let codec = Codec::new(1, None);
        let blob = idx.encode(&codec);
        assert!(blob.len() < 4096, "{} bytes", blob.len());
        let back = FixedIndex::decode(Path::new("i"), &blob, &codec).unwrap();
        assert_eq!(back, idx);
        assert_eq!(back.next_stored(17), Some(3 << 20));
        assert_eq!(back.next_stored((16 << 20) - 1), Some((16 << 20) - 1));
        assert_eq!(back.next_stored((8 << 20) + 21), Some((16 << 20) - 16));
        // Clearing every stored chunk frees every page.
        let mut cleared = back.clone();
        for (i, _) in back.stored_chunks() {
            cleared.set(i, None);
        }
        assert!(matches!(&cleared.layout, Layout::Fixed { pages, .. } if pages.is_empty()));
        assert_eq!(cleared.runs().count(), 1);
    }

    /// A version-2 (dense, bound) index of the previous format decodes to the same index.
    #[test]
    fn a_version_2_index_still_decodes() {
        let mut idx = FixedIndex::new(40 * 65536 + 7, 65536).unwrap();
        for i in (0..idx.chunk_count()).step_by(3) {
            idx.set(i, Some(ChunkDigest::of(&[i as u8])));
        }
        idx.bind(place());
        let codec = Codec::new(1, None);
        let v2 = idx.payload_dense(&INDEX_MAGIC_V2, Some(&place()));
        let blob = codec.try_encode(BlobKind::Index, &v2).unwrap();
        assert_eq!(
            FixedIndex::decode(Path::new("i"), &blob, &codec).unwrap(),
            idx
        );
        assert!(v2.len() > idx.payload().unwrap().len());
    }

    #[test]
    fn differing_ranges_merge_both_stored_lists() {
        let id = |b: u8| Some(ChunkDigest::of(&[b]));
        let cs = 65536u64;
        let mut a = FixedIndex::new(10 * cs, 65536).unwrap();
        let mut b = FixedIndex::new(12 * cs, 65536).unwrap();
        for (i, d) in [(1, id(1)), (3, id(3)), (5, id(5))] {
            a.set(i, d);
        }
        for (i, d) in [(1, id(1)), (3, id(4)), (6, id(6)), (11, id(11))] {
            b.set(i, d);
        }
        // Chunks 3, 5 and 6 (adjacent: one range) and 11.
        let want = vec![(3 * cs, cs), (5 * cs, 2 * cs), (11 * cs, cs)];
        assert_eq!(a.differing_ranges(&b), want);
        assert_eq!(b.differing_ranges(&a), want);
        assert!(a.differing_ranges(&a.clone()).is_empty());
    }

    #[test]
    fn short_tail_chunk() {
        let idx = FixedIndex::new(3 * 65536 + 100, 65536).unwrap();
        assert_eq!(idx.chunk_count(), 4);
        assert_eq!(idx.chunk_range(3), (3 * 65536, 100));
        assert_eq!(idx.chunk_range(0), (0, 65536));
        assert!(FixedIndex::new(10, 1000).is_err());
    }
}
