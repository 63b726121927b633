//! Page-aligned, reusable buffers for restored chunks.
//!
//! A restore hands every verified chunk to a disk writer that wants page-aligned memory:
//! direct I/O (`O_DIRECT`) needs it, and a VDDK transport copies less from it. The chunk is
//! also read from its file, decompressed and hashed, so the same buffer is used all the way:
//! the chunk file is read with its 24-byte blob header in the [`HEADROOM`] in front of the
//! aligned start, so a chunk stored uncompressed is verified and written where it was read,
//! without a copy; a compressed chunk is decompressed once into a pooled buffer of the chunk's
//! length.
//!
//! Buffers come from a [`BufPool`] and go back to it when dropped (wherever that happens: on a
//! writer's completion, or an error path), so a restore touches a few dozen buffers' worth of
//! memory instead of allocating, zero-filling and page-faulting a fresh one per chunk. Safe
//! code only: the alignment comes from over-allocating a `Vec` and starting at its first
//! aligned byte, which stays put when the `Vec` (not its heap block) moves.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Alignment of a buffer's data: a page, what `O_DIRECT` and VDDK's fast paths want.
pub const BUF_ALIGN: usize = 4096;

/// Bytes available in front of the aligned data start (see [`AlignedBuf::with_prefix`]): room
/// for a blob header, so the payload of a blob read there starts aligned.
pub const HEADROOM: usize = BUF_ALIGN;

/// The bytes an [`AlignedBuf`] with room for `capacity` bytes of data allocates: the headroom,
/// the data and the worst-case alignment shift. What memory estimates count per buffer.
pub const fn footprint(capacity: usize) -> usize {
    HEADROOM + capacity + BUF_ALIGN
}

/// A byte buffer whose data starts on a [`BUF_ALIGN`] boundary (when the allocator allows:
/// otherwise it is merely unaligned, never wrong), with [`HEADROOM`] bytes before it.
pub struct AlignedBuf {
    /// The allocation; never resized in place once the data start is chosen.
    storage: Vec<u8>,
    /// Index in `storage` of the aligned data start (at least [`HEADROOM`]).
    start: usize,
    /// Length of the data.
    len: usize,
    /// Where the storage goes when the buffer is dropped.
    pool: Option<BufPool>,
}

impl AlignedBuf {
    /// A zero-filled buffer of `len` bytes, not from any pool.
    pub fn zeroed(len: usize) -> Self {
        let mut b = Self::from_storage(Vec::new(), None);
        b.resize(len);
        b
    }

    /// A buffer holding a copy of `data`, not from any pool.
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::from_storage(Vec::new(), None);
        b.resize(data.len());
        b.copy_from_slice(data);
        b
    }

    fn from_storage(storage: Vec<u8>, pool: Option<BufPool>) -> Self {
        let mut b = Self {
            storage,
            start: HEADROOM,
            len: 0,
            pool,
        };
        b.place();
        b
    }

    /// Chooses the aligned start inside the current storage.
    fn place(&mut self) {
        let off = self.storage.as_ptr().align_offset(BUF_ALIGN);
        // align_offset may decline (usize::MAX); the buffer is then merely unaligned.
        self.start = HEADROOM + if off < BUF_ALIGN { off } else { 0 };
    }

    /// Bytes the data can grow to without a new allocation.
    pub fn capacity(&self) -> usize {
        self.storage.len().saturating_sub(self.start)
    }

    /// Sets the data length to `len`. Bytes kept from earlier contents (of this buffer or of
    /// the pooled buffer it reuses) are not cleared: callers overwrite what they use. Growing
    /// past the capacity makes a new zero-filled allocation.
    pub fn resize(&mut self, len: usize) {
        if self.start + len > self.storage.len() {
            self.storage = vec![0u8; footprint(len)];
            self.place();
        }
        self.len = len;
    }

    /// Sets the data length to `len` and returns the `prefix + len` bytes ending where the
    /// data ends: the caller fills a header into the first `prefix` bytes and the data after
    /// it, so the data starts aligned. `prefix` is at most [`HEADROOM`] (more is clamped).
    pub fn with_prefix(&mut self, prefix: usize, len: usize) -> &mut [u8] {
        let prefix = prefix.min(HEADROOM);
        self.resize(len);
        &mut self.storage[self.start - prefix..self.start + len]
    }

    /// The `prefix` bytes before the data and the data, as filled by
    /// [`AlignedBuf::with_prefix`].
    pub fn prefixed(&self, prefix: usize) -> &[u8] {
        let prefix = prefix.min(HEADROOM);
        &self.storage[self.start - prefix..self.start + self.len]
    }

    /// For a direct read of a `len`-byte file: the storage from [`HEADROOM`] before the data
    /// start, `len` bytes rounded up to a whole [`BUF_ALIGN`], page-aligned at both ends (what
    /// `O_DIRECT` wants); `None` if this buffer's storage is not aligned. Read the file there,
    /// then call [`AlignedBuf::settle_read`].
    pub(crate) fn direct_read_region(&mut self, len: usize) -> Option<&mut [u8]> {
        self.resize(len);
        if !self.is_aligned() {
            return None;
        }
        let from = self.start - HEADROOM;
        // In bounds: the storage holds `footprint(capacity)` bytes and `capacity >= len`.
        let to = from + len.div_ceil(BUF_ALIGN) * BUF_ALIGN;
        self.storage.get_mut(from..to)
    }

    /// After `read` bytes were read into [`AlignedBuf::direct_read_region`]: moves them to where
    /// [`AlignedBuf::with_prefix`] would have put them, the first `prefix` in front of the data
    /// start and the rest as the data.
    pub(crate) fn settle_read(&mut self, read: usize, prefix: usize) {
        let prefix = prefix.min(HEADROOM).min(read);
        let from = self.start - HEADROOM;
        self.storage
            .copy_within(from..from + read, self.start - prefix);
        self.len = read - prefix;
    }

    /// Whether the data starts on a [`BUF_ALIGN`] boundary.
    pub fn is_aligned(&self) -> bool {
        self.as_ptr().align_offset(BUF_ALIGN) == 0
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Clone for AlignedBuf {
    /// A copy of the data in a buffer of its own (not pooled).
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for AlignedBuf {}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("aligned", &self.is_aligned())
            .finish()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.storage));
        }
    }
}

/// Spare buffer storage shared by the threads of one restore, export or ingest (cheap to
/// clone). Holds at most `keep` allocations; more are freed.
#[derive(Clone)]
pub struct BufPool {
    spare: Arc<Mutex<Spares>>,
    /// Data capacity of every new allocation, so that reused buffers never need to grow.
    min_capacity: usize,
}

impl BufPool {
    /// A pool keeping at most `keep` spare allocations, each with room for at least
    /// `min_capacity` bytes of data.
    pub fn new(keep: usize, min_capacity: usize) -> Self {
        Self {
            spare: Arc::new(Mutex::new(Spares {
                storage: Vec::new(),
                keep,
                out: 0,
                bound_out: false,
            })),
            min_capacity,
        }
    }

    /// A pool whose buffers, those handed out and the spares together, number at most `keep`
    /// ([`BufPool::set_keep`]) whenever one comes back: for an owner that pays for every buffer
    /// it holds, in use or not (an ingest's blobs). More are made when asked for, and freed
    /// when they come back.
    pub fn bounded(keep: usize, min_capacity: usize) -> Self {
        let pool = Self::new(keep, min_capacity);
        pool.spares().bound_out = true;
        pool
    }

    /// A buffer of `len` bytes, reusing a spare allocation when there is one (its bytes are
    /// stale: overwrite before reading), else a new zero-filled one. It returns to the pool
    /// when dropped.
    pub fn get(&self, len: usize) -> AlignedBuf {
        let storage = {
            let mut spares = self.spares();
            spares.out += 1;
            spares.storage.pop().unwrap_or_default()
        };
        let mut b = AlignedBuf::from_storage(storage, Some(self.clone()));
        if b.capacity() < self.min_capacity {
            b.resize(self.min_capacity);
        }
        b.resize(len);
        b
    }

    /// Spare allocations held now.
    pub fn spare(&self) -> usize {
        self.spares().storage.len()
    }

    /// Keeps at most `keep` allocations from now on (spares; with [`BufPool::bounded`], spares
    /// and buffers handed out), freeing spares beyond it: for an owner whose memory share
    /// changes while it runs (an ingest's slots).
    pub fn set_keep(&self, keep: usize) {
        let mut spares = self.spares();
        spares.keep = keep;
        let room = spares.room();
        spares.storage.truncate(room);
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, Spares> {
        // A poisoned list is still a valid list of allocations.
        self.spare.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, storage: Vec<u8>) {
        let mut spares = self.spares();
        spares.out = spares.out.saturating_sub(1);
        if !storage.is_empty() && spares.storage.len() < spares.room() {
            spares.storage.push(storage);
        }
    }
}

/// The allocations a [`BufPool`] holds, and how many it may hold.
struct Spares {
    storage: Vec<Vec<u8>>,
    keep: usize,
    /// Buffers handed out and not back yet.
    out: usize,
    /// Whether `keep` bounds the buffers handed out too ([`BufPool::bounded`]).
    bound_out: bool,
}

impl Spares {
    /// How many spares may be held now.
    fn room(&self) -> usize {
        if self.bound_out {
            self.keep.saturating_sub(self.out)
        } else {
            self.keep
        }
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("spare", &self.spare())
            .field("keep", &self.spares().keep)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_page_aligned_with_headroom_before_it() {
        for len in [0, 1, 4096, (1 << 20) + 512] {
            let mut b = AlignedBuf::zeroed(len);
            assert!(b.is_aligned(), "len {len}");
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            let area = b.with_prefix(24, len);
            assert_eq!(area.len(), 24 + len);
            area[..24].fill(0xAA);
            area[24..].fill(0x55);
            assert!(b.is_aligned());
            assert!(b.iter().all(|&x| x == 0x55));
            assert_eq!(&b.prefixed(24)[..24], &[0xAA; 24]);
        }
    }

    #[test]
    fn growing_keeps_alignment_and_shrinking_keeps_the_allocation() {
        let mut b = AlignedBuf::from_slice(b"abc");
        assert_eq!(&*b, b"abc");
        b.resize(3 << 20);
        assert!(b.is_aligned());
        assert_eq!(b.len(), 3 << 20);
        let cap = b.capacity();
        b.resize(10);
        assert_eq!(b.capacity(), cap);
        assert_eq!(b.len(), 10);
    }

    #[test]
    fn dropped_buffers_return_to_their_pool_up_to_its_limit() {
        let pool = BufPool::new(2, 0);
        let a = pool.get(1 << 20);
        let ptr = a.as_ptr();
        let (b, c) = (pool.get(100), pool.get(100));
        assert_eq!(pool.spare(), 0);
        drop(a);
        assert_eq!(pool.spare(), 1);
        // The spare allocation is reused, at the same aligned address.
        let again = pool.get(4096);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_aligned());
        drop((again, b, c));
        assert_eq!(pool.spare(), 2);
        // Buffers from elsewhere, and clones, never join the pool.
        let own = AlignedBuf::zeroed(10);
        let copy = own.clone();
        assert_eq!(own, copy);
        drop((own, copy));
        assert_eq!(pool.spare(), 2);
        // A smaller share frees what is beyond it, now and when buffers come back.
        let held = pool.get(10);
        pool.set_keep(0);
        assert_eq!(pool.spare(), 0);
        drop(held);
        assert_eq!(pool.spare(), 0);
        pool.set_keep(1);
        drop(pool.get(10));
        assert_eq!(pool.spare(), 1);
    }

    #[test]
    fn a_bounded_pool_counts_its_buffers_in_use_against_its_limit() {
        let pool = BufPool::bounded(3, 0);
        let held: Vec<_> = (0..5).map(|_| pool.get(10)).collect();
        drop(held);
        // Three may exist at once: three come back as spares, the other two are freed.
        assert_eq!(pool.spare(), 3);
        let (a, b) = (pool.get(1), pool.get(1));
        assert_eq!(pool.spare(), 1);
        pool.set_keep(2);
        assert_eq!(pool.spare(), 0, "two in use fill a limit of two");
        drop(a);
        assert_eq!(pool.spare(), 1);
        pool.set_keep(1);
        assert_eq!(pool.spare(), 0);
        drop(b);
        assert_eq!(pool.spare(), 1);
    }
}
