//! The extents of a variable (content-defined) index: stored chunks and holes that tile a disk
//! in order, kept in pages so that replacing a few of them (an incremental's splice) costs a
//! page, not the whole list, while slot numbers (ranks) and byte offsets both stay a binary
//! search away.

use crate::digest::ChunkDigest;

/// Extents per page when a list is built or rebuilt: large enough that the page table stays
/// small (16 Ki pages for 16 Mi chunks), small enough that a splice copies little.
const PAGE_EXTENTS: usize = 1024;

/// One extent: a stored chunk (`id` is its id) or a hole (`id` is the zero marker: all zeros,
/// not stored). 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// Byte offset in the disk.
    pub offset: u64,
    /// Length in bytes (at least 1; a hole may be longer than any chunk).
    pub len: u64,
    /// The chunk's id, or [`ChunkDigest::ZERO_MARKER`] for a hole.
    pub id: ChunkDigest,
}

impl Extent {
    /// A hole of `len` bytes at `offset`.
    pub fn hole(offset: u64, len: u64) -> Self {
        Self {
            offset,
            len,
            id: ChunkDigest::ZERO_MARKER,
        }
    }

    /// True for a stored chunk.
    pub fn stored(&self) -> bool {
        !self.id.is_zero_marker()
    }

    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The extents in order, in non-empty pages; the caller keeps them tiling the disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extents {
    pages: Vec<Vec<Extent>>,
    /// Slot number of the first extent of each page.
    starts: Vec<usize>,
    /// Byte offset of the first extent of each page: searched for an offset without touching
    /// every page on the way (one cache miss per probe otherwise).
    firsts: Vec<u64>,
    len: usize,
    stored: usize,
}

impl PartialEq for Extents {
    /// Equal when they hold the same extents, however they are paged.
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter_from(0).eq(other.iter_from(0))
    }
}

impl Eq for Extents {}

impl Extents {
    /// The extents of `list`, in order.
    pub fn from_vec(list: Vec<Extent>) -> Self {
        let mut e = Extents::default();
        e.replace(0, 0, list);
        e
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of stored chunks.
    pub fn stored(&self) -> usize {
        self.stored
    }

    /// Extent `i`; `None` past the end.
    pub fn get(&self, i: usize) -> Option<&Extent> {
        if i >= self.len {
            return None;
        }
        let p = self.starts.partition_point(|&s| s <= i) - 1;
        self.pages[p].get(i - self.starts[p])
    }

    /// The slot of the last extent starting at or before `offset` (the one holding it, when
    /// `offset` is inside the disk); 0 for an empty list.
    pub fn slot_at(&self, offset: u64) -> usize {
        let p = self
            .firsts
            .partition_point(|&first| first <= offset)
            .saturating_sub(1);
        let Some(page) = self.pages.get(p) else {
            return 0;
        };
        self.starts[p]
            + page
                .partition_point(|e| e.offset <= offset)
                .saturating_sub(1)
    }

    /// The extents from slot `from` on, with their slot numbers, in order.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = (usize, &Extent)> + '_ {
        let p = self
            .starts
            .partition_point(|&s| s <= from)
            .saturating_sub(1);
        self.pages
            .iter()
            .zip(&self.starts)
            .skip(p)
            .flat_map(|(page, &start)| page.iter().enumerate().map(move |(j, e)| (start + j, e)))
            .skip_while(move |(i, _)| *i < from)
    }

    /// Replaces slots `a..b` (`a <= b <= len`) by `new`. Touches the pages holding `a..b`
    /// and renumbers the pages after them.
    pub fn replace(&mut self, a: usize, b: usize, new: Vec<Extent>) {
        debug_assert!(a <= b && b <= self.len);
        if a == b && new.is_empty() {
            return;
        }
        let removed_stored = self
            .iter_from(a)
            .take(b - a)
            .filter(|(_, e)| e.stored())
            .count();
        let added_stored = new.iter().filter(|e| e.stored()).count();
        // The pages holding a..b: from the page of `a` (the last page when `a` is the end)
        // to the page of `b - 1` (or of `a` when nothing is removed).
        let page_of = |i: usize| self.starts.partition_point(|&s| s <= i).saturating_sub(1);
        let (pa, pb) = if self.pages.is_empty() {
            (0, None)
        } else {
            let pa = page_of(a.min(self.len - 1));
            let pb = if b > a { page_of(b - 1) } else { pa };
            (pa, Some(pb))
        };
        let mut combined = Vec::with_capacity(new.len() + 2 * PAGE_EXTENTS);
        if let Some(pb) = pb {
            combined.extend_from_slice(&self.pages[pa][..a - self.starts[pa]]);
            combined.extend(new);
            combined.extend_from_slice(&self.pages[pb][b - self.starts[pb]..]);
        } else {
            combined.extend(new);
        }
        let rebuilt: Vec<Vec<Extent>> = combined
            .chunks(PAGE_EXTENTS)
            .map(<[Extent]>::to_vec)
            .collect();
        let old_end = pb.map_or(pa, |pb| pb + 1);
        self.pages.splice(pa..old_end, rebuilt);
        self.renumber(pa);
        self.stored = self.stored - removed_stored + added_stored;
    }

    /// Recomputes the page starts and first offsets from page `from` on, and the length.
    fn renumber(&mut self, from: usize) {
        self.starts.truncate(from);
        self.firsts.truncate(from);
        self.firsts
            .extend(self.pages[from..].iter().map(|page| page[0].offset));
        let mut next = match from {
            0 => 0,
            _ => self.starts[from - 1] + self.pages[from - 1].len(),
        };
        for page in &self.pages[from..] {
            self.starts.push(next);
            next += page.len();
        }
        self.len = next;
    }
}
