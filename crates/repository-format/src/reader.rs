//! Reading a disk of a generation back: random access and a walk over the stored chunks.

use crate::chunk_store::{ChunkFault, ChunkStore};
use crate::error::{ChunkError, ChunkUse, Error, Result};
use crate::fixed_index::FixedIndex;
use crate::target::{GenerationId, TargetKey};

/// A stored (non-zero) chunk of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChunk {
    /// Byte offset in the disk.
    pub offset: u64,
    /// The verified content (shorter than the chunk size only at the end of the disk).
    pub data: Vec<u8>,
}

/// Verified reader of one disk of one generation. `Send`, not shared between threads.
#[derive(Debug)]
pub struct DiskReader {
    store: ChunkStore,
    index: FixedIndex,
    target: TargetKey,
    generation: GenerationId,
    disk: i32,
    cached: Option<(usize, Vec<u8>)>,
}

impl DiskReader {
    pub(crate) fn new(
        store: ChunkStore,
        index: FixedIndex,
        target: TargetKey,
        generation: GenerationId,
        disk: i32,
    ) -> Self {
        Self {
            store,
            index,
            target,
            generation,
            disk,
            cached: None,
        }
    }

    /// Disk size in bytes.
    pub fn capacity(&self) -> u64 {
        self.index.size()
    }

    /// The disk's fixed index.
    pub fn index(&self) -> &FixedIndex {
        &self.index
    }

    fn load_slot(&self, slot: usize) -> Result<Vec<u8>> {
        let (offset, len) = self.index.chunk_range(slot);
        let Some(digest) = self.index.slot(slot) else {
            return Ok(vec![0; len]);
        };
        self.store.load(&digest, len).map_err(|fault: ChunkFault| {
            Error::Chunk(Box::new(ChunkError {
                digest,
                path: self.store.path(&digest),
                used_by: ChunkUse {
                    target: self.target.to_string(),
                    generation: self.generation.0,
                    disk: self.disk,
                    offset,
                },
                reason: fault,
            }))
        })
    }

    /// Fills `buf` with the disk's bytes at `offset`, verifying every chunk it touches.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end; [`Error::Chunk`] naming the chunk, target,
    /// generation, disk and offset for a missing or damaged chunk.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.index.size())
            .ok_or(Error::OutOfRange {
                what: "read",
                offset,
                len: buf.len() as u64,
                capacity: self.index.size(),
            })?;
        let cs = self.index.chunk_size() as u64;
        let mut pos = offset;
        while pos < end {
            let slot = (pos / cs) as usize;
            let within = (pos % cs) as usize;
            let take = ((end - pos) as usize).min(cs as usize - within);
            let out = &mut buf[(pos - offset) as usize..][..take];
            if self.index.slot(slot).is_none() {
                out.fill(0);
            } else {
                if self.cached.as_ref().map(|c| c.0) != Some(slot) {
                    let data = self.load_slot(slot)?;
                    self.cached = Some((slot, data));
                }
                let data = &self.cached.as_ref().expect("just cached").1;
                out.copy_from_slice(&data[within..within + take]);
            }
            pos += take as u64;
        }
        Ok(())
    }

    /// Walks the stored (non-zero) chunks in offset order, verifying each. Zero chunks are
    /// skipped: a restore leaves them unwritten, an export leaves holes.
    pub fn chunks(&self) -> impl Iterator<Item = Result<DiskChunk>> + '_ {
        self.index.stored_chunks().map(move |(slot, _)| {
            let (offset, _) = self.index.chunk_range(slot);
            self.load_slot(slot).map(|data| DiskChunk { offset, data })
        })
    }
}
