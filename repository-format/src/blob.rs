//! Blobs: the envelope of every stored object.
//!
//! ```text
//! offset  size  field
//!      0     8  magic: "SK01" + kind + encoding + "\r\n"
//!      8     4  CRC32 (IEEE) of the payload as stored, little endian
//!     12     4  flags, must be 0 in format version 1
//!     16     8  payload length in bytes, little endian
//!     24     n  payload (plain, a zstd frame, or AES-256-GCM nonce ‖ ciphertext ‖ tag)
//! ```
//!
//! The kind byte is `C` (chunk), `I` (fixed index), `M` (manifest), `K` (config) or `F` (metadata
//! file); the encoding
//! byte is `P` (plain), `Z` (zstd), `E` (encrypted) or `X` (zstd then encrypted). Compression is
//! kept only when it makes the payload smaller.

use crate::aligned_buf::AlignedBuf;
use crate::format::BLOB_HEADER_LEN;
use crate::key::{NONCE_LEN, TAG_LEN};

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BlobKind {
    /// A chunk of disk data.
    Chunk,
    /// A fixed index.
    Index,
    /// A generation manifest.
    Manifest,
    /// The repository configuration (never encrypted).
    Config,
    /// A metadata file of a generation (vm config, .vmx, .nvram, ...).
    Metadata,
}

impl BlobKind {
    fn byte(self) -> u8 {
        match self {
            BlobKind::Chunk => b'C',
            BlobKind::Index => b'I',
            BlobKind::Manifest => b'M',
            BlobKind::Config => b'K',
            BlobKind::Metadata => b'F',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'C' => BlobKind::Chunk,
            b'I' => BlobKind::Index,
            b'M' => BlobKind::Manifest,
            b'K' => BlobKind::Config,
            b'F' => BlobKind::Metadata,
            _ => return None,
        })
    }
}

/// How a blob's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Encoding {
    /// Stored as is.
    Plain,
    /// One zstd frame.
    Zstd,
    /// AES-256-GCM (12-byte nonce, ciphertext, 16-byte tag).
    Encrypted,
    /// zstd, then AES-256-GCM.
    EncryptedZstd,
}

impl Encoding {
    fn byte(self) -> u8 {
        match self {
            Encoding::Plain => b'P',
            Encoding::Zstd => b'Z',
            Encoding::Encrypted => b'E',
            Encoding::EncryptedZstd => b'X',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'P' => Encoding::Plain,
            b'Z' => Encoding::Zstd,
            b'E' => Encoding::Encrypted,
            b'X' => Encoding::EncryptedZstd,
            _ => return None,
        })
    }
}

/// The 8-byte magic of a blob of `kind` stored with `encoding`.
pub fn magic(kind: BlobKind, encoding: Encoding) -> [u8; 8] {
    [
        b'S',
        b'K',
        b'0',
        b'1',
        kind.byte(),
        encoding.byte(),
        b'\r',
        b'\n',
    ]
}

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// Shorter than its header or its recorded payload length.
    #[error("truncated: {actual} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        actual: u64,
        /// Bytes the header promises.
        expected: u64,
    },
    /// Longer than its recorded payload length.
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// Does not start with a safekeeping magic.
    #[error("not a safekeeping object (magic {0})")]
    BadMagic(String),
    /// A safekeeping object of another kind.
    #[error("holds a {found:?}, expected a {expected:?}")]
    WrongKind {
        /// Kind wanted.
        expected: BlobKind,
        /// Kind found.
        found: BlobKind,
    },
    /// Header flags this version does not know.
    #[error("unknown header flags {0:#x}")]
    UnknownFlags(u32),
    /// Payload checksum mismatch.
    #[error("CRC32 mismatch: header says {expected:08x}, payload has {actual:08x}")]
    Crc {
        /// CRC in the header.
        expected: u32,
        /// CRC of the payload.
        actual: u32,
    },
    /// zstd could not decode the payload.
    #[error("zstd payload does not decode: {0}")]
    Decompress(String),
    /// Decoded content is larger than allowed for this object.
    #[error("decoded content exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// An encrypted blob read without a key (the repository is not encrypted, so the object
    /// does not belong to it).
    #[error("object is encrypted ({0:?}) but the repository has no key")]
    Encrypted(Encoding),
    /// An unencrypted blob in an encrypted repository: refused, since anyone who can write
    /// the files could have put it there.
    #[error("object is not encrypted ({0:?}) but the repository is: refused")]
    NotEncrypted(Encoding),
    /// The encrypted payload does not authenticate: it, its header or its nonce was modified,
    /// or it was encrypted under another key.
    #[error("encrypted object fails authentication (modified, or written with another key)")]
    Authentication,
}

/// A decoded blob header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// Kind of content.
    pub kind: BlobKind,
    /// Payload encoding.
    pub encoding: Encoding,
    /// CRC32 of the payload.
    pub crc: u32,
    /// Payload length.
    pub payload_len: u64,
}

/// Parses and checks the header at the start of `bytes` (without checking the payload).
pub fn parse_header(bytes: &[u8]) -> Result<BlobHeader, BlobError> {
    if bytes.len() < BLOB_HEADER_LEN {
        return Err(BlobError::Truncated {
            actual: bytes.len() as u64,
            expected: BLOB_HEADER_LEN as u64,
        });
    }
    let m = &bytes[..8];
    let bad = || BlobError::BadMagic(format!("{:02x?}", m));
    if &m[..4] != b"SK01" || &m[6..8] != b"\r\n" {
        return Err(bad());
    }
    let kind = BlobKind::from_byte(m[4]).ok_or_else(bad)?;
    let encoding = Encoding::from_byte(m[5]).ok_or_else(bad)?;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let flags = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if flags != 0 {
        return Err(BlobError::UnknownFlags(flags));
    }
    let payload_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    Ok(BlobHeader {
        kind,
        encoding,
        crc,
        payload_len,
    })
}

pub use crate::key::Key;

/// Encodes and decodes blobs with the repository's compression level and, for an encrypted
/// repository, its key.
///
/// With a key every blob is compressed (when that makes it smaller) and then encrypted:
/// encoding `X` (zstd, then AES-256-GCM) or `E` (AES-256-GCM). The payload is
/// `nonce (12) ‖ ciphertext ‖ tag (16)` and the associated data is the header without the CRC
/// (magic with kind and encoding, flags, payload length), so a header changed to another kind
/// or encoding, or a payload cut or extended, fails authentication. The CRC stays over the
/// stored payload (it tells bit rot from tampering). A codec with a key refuses unencrypted
/// blobs: otherwise whoever can write the files could substitute plain content.
#[derive(Debug, Clone)]
pub struct Codec {
    level: i32,
    key: Option<Key>,
}

impl Codec {
    /// A codec compressing with zstd at `level` (0 disables compression) and encrypting with
    /// `key` when there is one.
    pub fn new(level: i32, key: Option<Key>) -> Self {
        Self { level, key }
    }

    /// The zstd level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// The same codec (same key) compressing new blobs at `level`: the level is not part of
    /// a blob's identity (chunk ids hash the plain content), so blobs of any level mix freely.
    pub fn with_level(&self, level: i32) -> Self {
        Self {
            level,
            key: self.key.clone(),
        }
    }

    /// The key, for an encrypted repository.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// The id of a chunk with this content: SHA-256, or HMAC-SHA-256 under the chunk-id key
    /// when the codec has a key.
    pub fn chunk_id(&self, data: &[u8]) -> crate::digest::ChunkDigest {
        match &self.key {
            Some(k) => k.chunk_id(data),
            None => crate::digest::ChunkDigest::of(data),
        }
    }

    /// Encodes `data` as a blob of `kind`, compressing when that makes it smaller.
    ///
    /// # Panics
    /// Only if the operating system's random generator fails while encrypting (no nonce can
    /// be made safely); use [`Codec::try_encode`] to get that as an error.
    pub fn encode(&self, kind: BlobKind, data: &[u8]) -> Vec<u8> {
        self.try_encode(kind, data)
            .expect("operating system random generator failed")
    }

    /// Encodes `data` as a blob of `kind`, compressing when that makes it smaller.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce can be drawn (encrypted repositories only).
    pub fn try_encode(&self, kind: BlobKind, data: &[u8]) -> crate::Result<Vec<u8>> {
        self.try_encode_bound(kind, data, &[])
    }

    /// Encodes `data` as a blob of `kind` bound to `place`: when encrypted, `place` is
    /// appended to the associated data, so the blob authenticates only where the reader
    /// expects it (an index moved to another generation, target or disk fails
    /// authentication). `place` is not stored; without a key it changes nothing.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce can be drawn (encrypted repositories only).
    pub fn try_encode_bound(
        &self,
        kind: BlobKind,
        data: &[u8],
        place: &[u8],
    ) -> crate::Result<Vec<u8>> {
        let z = if self.level != 0 {
            zstd::bulk::compress(data, self.level)
                .ok()
                .filter(|z| z.len() < data.len())
        } else {
            None
        };
        self.finish(kind, z.as_deref(), data, place)
    }

    /// Encodes with a caller-owned compressor (the ingest keeps one per worker thread).
    /// Data that `looks_incompressible` is stored as is without compressing it whole: almost
    /// always the blob compression would have produced for it (compression is kept only when it
    /// makes the payload smaller), for a few percent of the work. A chunk whose compressible
    /// part falls between the samples is stored raw where a frame would have been a little
    /// smaller: on the benchmark's guest disk 0.4 MiB of 776 MiB.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce can be drawn (encrypted repositories only).
    pub fn encode_with(
        &self,
        compressor: &mut zstd::bulk::Compressor<'static>,
        kind: BlobKind,
        data: &[u8],
    ) -> crate::Result<Vec<u8>> {
        let z = if self.level != 0 && !looks_incompressible(compressor, data) {
            compressor
                .compress(data)
                .ok()
                .filter(|z| z.len() < data.len())
        } else {
            None
        };
        self.finish(kind, z.as_deref(), data, &[])
    }

    /// [`Codec::encode_with`] into `out`, whose data then is the blob, starting on the buffer's
    /// aligned start: the ingest hands it to the chunk store as is, and a local repository
    /// writes an aligned blob with direct I/O ([`crate::storage::LocalBackend`]). Unencrypted,
    /// zstd compresses straight into `out` behind the header, with room for one byte less than
    /// the chunk: a frame that would not be smaller fails there, and the chunk is copied in raw
    /// instead (what [`Codec::encode_with`] keeps too), so no compressor output is allocated and
    /// copied per chunk. Encrypted blobs are sealed as before and copied in.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce can be drawn (encrypted repositories only).
    pub fn encode_into(
        &self,
        compressor: &mut zstd::bulk::Compressor<'static>,
        kind: BlobKind,
        data: &[u8],
        out: &mut AlignedBuf,
    ) -> crate::Result<()> {
        if self.key.is_some() {
            let blob = self.encode_with(compressor, kind, data)?;
            out.resize(blob.len());
            out.copy_from_slice(&blob);
            return Ok(());
        }
        out.resize(BLOB_HEADER_LEN + data.len());
        let room = data.len().saturating_sub(1);
        let compressed = if self.level != 0 && room > 0 && !looks_incompressible(compressor, data) {
            compressor
                .compress_to_buffer(data, &mut out[BLOB_HEADER_LEN..BLOB_HEADER_LEN + room])
                .ok()
        } else {
            None
        };
        let (encoding, payload_len) = match compressed {
            Some(n) => (Encoding::Zstd, n),
            None => {
                out[BLOB_HEADER_LEN..].copy_from_slice(data);
                (Encoding::Plain, data.len())
            }
        };
        out.resize(BLOB_HEADER_LEN + payload_len);
        let header = plain_header(kind, encoding, &out[BLOB_HEADER_LEN..]);
        out[..BLOB_HEADER_LEN].copy_from_slice(&header);
        Ok(())
    }

    /// Assembles the blob from the compressed form (if kept) or the data, encrypting if keyed.
    fn finish(
        &self,
        kind: BlobKind,
        compressed: Option<&[u8]>,
        data: &[u8],
        place: &[u8],
    ) -> crate::Result<Vec<u8>> {
        let Some(key) = &self.key else {
            return Ok(match compressed {
                Some(z) => assemble(kind, Encoding::Zstd, z),
                None => assemble(kind, Encoding::Plain, data),
            });
        };
        let (encoding, inner) = match compressed {
            Some(z) => (Encoding::EncryptedZstd, z),
            None => (Encoding::Encrypted, data),
        };
        let payload_len = (NONCE_LEN + inner.len() + TAG_LEN) as u64;
        let mut out = Vec::with_capacity(BLOB_HEADER_LEN + payload_len as usize);
        out.extend_from_slice(&magic(kind, encoding));
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&payload_len.to_le_bytes());
        let aad = associated_data(kind, encoding, payload_len, place);
        key.seal_into(&aad, inner, &mut out)?;
        let crc = crc32fast::hash(&out[BLOB_HEADER_LEN..]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a blob that must be of `kind`, checking magic, length and CRC (and, encrypted,
    /// authenticating it); `limit` bounds the decoded size (a zstd bomb or a damaged length
    /// field cannot exhaust memory).
    pub fn decode(&self, kind: BlobKind, bytes: &[u8], limit: usize) -> Result<Vec<u8>, BlobError> {
        self.decode_bound(kind, bytes, limit, &[])
    }

    /// [`Codec::decode`] of a blob written by [`Codec::try_encode_bound`] for `place`: an
    /// encrypted blob written for another place fails authentication.
    pub fn decode_bound(
        &self,
        kind: BlobKind,
        bytes: &[u8],
        limit: usize,
        place: &[u8],
    ) -> Result<Vec<u8>, BlobError> {
        let payload = check(kind, bytes)?;
        let header = parse_header(bytes)?;
        match (&self.key, header.encoding) {
            (None, Encoding::Plain) => {
                if payload.len() > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                Ok(payload.to_vec())
            }
            (None, Encoding::Zstd) => decompress(payload, limit),
            (None, e @ (Encoding::Encrypted | Encoding::EncryptedZstd)) => {
                Err(BlobError::Encrypted(e))
            }
            (Some(_), e @ (Encoding::Plain | Encoding::Zstd)) => Err(BlobError::NotEncrypted(e)),
            (Some(key), e @ (Encoding::Encrypted | Encoding::EncryptedZstd)) => {
                if payload.len() > limit + NONCE_LEN + TAG_LEN {
                    return Err(BlobError::TooLarge { limit });
                }
                let aad = associated_data(kind, e, header.payload_len, place);
                let inner = key.open(&aad, payload).ok_or(BlobError::Authentication)?;
                if e == Encoding::EncryptedZstd {
                    decompress(&inner, limit)
                } else {
                    Ok(inner)
                }
            }
        }
    }
}

/// Where [`Codec::decode_chunk_into`] left a chunk's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The content is the blob's payload as stored (unencrypted, uncompressed): nothing was
    /// copied.
    InPlace,
    /// The content was written into the output buffer.
    Into,
}

impl Codec {
    /// Decodes a chunk blob for a restore, with the checks of [`Codec::decode`] (magic, kind,
    /// length, CRC, authentication when keyed, `limit` on the content) and without copies
    /// where it can: a plain payload is left where it is ([`Decoded::InPlace`]), and a zstd
    /// frame is decompressed in one call into `out`, sized for the `expected_len` bytes the
    /// index says the chunk holds (no zero-fill, no growing: `out` may be a reused buffer).
    /// Content of another length is returned as decoded (the caller reports the mismatch);
    /// a frame that does not decode into `expected_len` bytes is decoded again by the
    /// streaming decoder, so errors are [`Codec::decode`]'s. A frame whose header declares a
    /// content size other than what it decodes to fails (zstd checks it).
    ///
    /// # Errors
    /// As [`Codec::decode`].
    pub fn decode_chunk_into(
        &self,
        bytes: &[u8],
        limit: usize,
        expected_len: usize,
        dctx: &mut zstd::bulk::Decompressor<'static>,
        out: &mut crate::aligned_buf::AlignedBuf,
    ) -> Result<Decoded, BlobError> {
        if self.key.is_some() {
            // Encrypted: authenticated as always, then copied once into `out`.
            let data = self.decode(BlobKind::Chunk, bytes, limit)?;
            out.resize(data.len());
            out.copy_from_slice(&data);
            return Ok(Decoded::Into);
        }
        let payload = check(BlobKind::Chunk, bytes)?;
        match parse_header(bytes)?.encoding {
            Encoding::Plain => {
                if payload.len() > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                Ok(Decoded::InPlace)
            }
            Encoding::Zstd => {
                out.resize(expected_len.min(limit));
                match dctx.decompress_to_buffer(payload, &mut **out) {
                    Ok(n) => out.resize(n),
                    Err(_) => {
                        let data = decompress(payload, limit)?;
                        out.resize(data.len());
                        out.copy_from_slice(&data);
                    }
                }
                Ok(Decoded::Into)
            }
            e @ (Encoding::Encrypted | Encoding::EncryptedZstd) => Err(BlobError::Encrypted(e)),
        }
    }
}

/// Size of each sample [`looks_incompressible`] compresses: one file system block, so that a
/// sample lies inside one file (or one random extent) of the guest.
const PROBE_BLOCK: usize = 4096;
/// Samples taken, spread evenly over the data.
const PROBE_SAMPLES: usize = 8;

/// Whether `data` (64 KiB or more) is random-looking throughout: none of [`PROBE_SAMPLES`]
/// blocks spread over it shrinks by 2 % under `compressor`. Stops at the first block that
/// shrinks, so compressible data costs one 4 KiB sample; incompressible data (media, already
/// compressed or encrypted files: a quarter of the benchmark's guest disk) costs 32 KiB of
/// compression instead of the whole chunk's.
fn looks_incompressible(compressor: &mut zstd::bulk::Compressor<'static>, data: &[u8]) -> bool {
    if data.len() < 16 * PROBE_BLOCK {
        return false;
    }
    let stride = data.len() / PROBE_SAMPLES;
    (0..PROBE_SAMPLES).all(|i| {
        let start = i * stride / PROBE_BLOCK * PROBE_BLOCK;
        let sample = &data[start..start + PROBE_BLOCK];
        match compressor.compress(sample) {
            Ok(z) => z.len() * 100 >= sample.len() * 98,
            // Compression will be tried on the whole data and its answer used.
            Err(_) => false,
        }
    })
}

/// The header fields an encrypted payload is bound to: magic (kind, encoding), flags, length;
/// then the place the blob belongs to, if it is bound to one (empty otherwise, which leaves
/// the associated data of unbound blobs as format version 1 wrote it).
fn associated_data(kind: BlobKind, encoding: Encoding, payload_len: u64, place: &[u8]) -> Vec<u8> {
    let mut aad = vec![0u8; 20];
    aad[..8].copy_from_slice(&magic(kind, encoding));
    aad[12..].copy_from_slice(&payload_len.to_le_bytes());
    aad.extend_from_slice(place);
    aad
}

/// Checks magic, kind, length and CRC; returns the payload slice.
pub fn check(kind: BlobKind, bytes: &[u8]) -> Result<&[u8], BlobError> {
    let header = parse_header(bytes)?;
    if header.kind != kind {
        return Err(BlobError::WrongKind {
            expected: kind,
            found: header.kind,
        });
    }
    // Saturating: a hostile length field near u64::MAX is a truncation, not an overflow.
    let total = (BLOB_HEADER_LEN as u64).saturating_add(header.payload_len);
    let have = bytes.len() as u64;
    if have < total {
        return Err(BlobError::Truncated {
            actual: have,
            expected: total,
        });
    }
    if have > total {
        return Err(BlobError::TrailingBytes {
            extra: have - total,
        });
    }
    let payload = &bytes[BLOB_HEADER_LEN..];
    let actual = crc32fast::hash(payload);
    if actual != header.crc {
        return Err(BlobError::Crc {
            expected: header.crc,
            actual,
        });
    }
    Ok(payload)
}

fn decompress(payload: &[u8], limit: usize) -> Result<Vec<u8>, BlobError> {
    use std::io::Read;
    let mut decoder = zstd::stream::read::Decoder::new(payload)
        .map_err(|e| BlobError::Decompress(e.to_string()))?;
    let mut out = Vec::new();
    let read = (&mut decoder)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BlobError::Decompress(e.to_string()))?;
    if read > limit {
        return Err(BlobError::TooLarge { limit });
    }
    Ok(out)
}

fn assemble(kind: BlobKind, encoding: Encoding, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOB_HEADER_LEN + payload.len());
    out.extend_from_slice(&plain_header(kind, encoding, payload));
    out.extend_from_slice(payload);
    out
}

/// The header of an unencrypted blob of `payload`: magic, CRC32 of the payload, a reserved
/// zero, the payload's length.
fn plain_header(kind: BlobKind, encoding: Encoding, payload: &[u8]) -> [u8; BLOB_HEADER_LEN] {
    let mut h = [0u8; BLOB_HEADER_LEN];
    h[..8].copy_from_slice(&magic(kind, encoding));
    h[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [BlobKind; 4] = [
        BlobKind::Chunk,
        BlobKind::Index,
        BlobKind::Manifest,
        BlobKind::Config,
    ];

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..4, k in 0usize..4, repeat in any::<bool>()) {
            let data = if repeat { data.repeat(8) } else { data };
            let codec = Codec::new(level, None);
            let blob = codec.encode(KINDS[k], &data);
            let back = codec.decode(KINDS[k], &blob, data.len()).unwrap();
            prop_assert_eq!(back, data);
        }

        /// `encode_into` (the ingest's) writes the very blob `encode_with` makes, aligned,
        /// for compressible, incompressible and empty data, plain or encrypted (where the
        /// nonce differs, so the blob is decoded instead).
        #[test]
        fn encode_into_makes_encode_withs_blob(data in proptest::collection::vec(any::<u8>(), 0..20_000), repeat in 0usize..4, level in 0i32..4, keyed in any::<bool>()) {
            let data = data.repeat(repeat.max(1) * 4);
            let key = keyed.then(|| Key::generate().unwrap());
            let codec = Codec::new(level, key);
            let mut c = zstd::bulk::Compressor::new(level.max(1)).unwrap();
            let mut out = AlignedBuf::zeroed(0);
            codec.encode_into(&mut c, BlobKind::Chunk, &data, &mut out).unwrap();
            prop_assert!(out.is_aligned());
            prop_assert_eq!(codec.decode(BlobKind::Chunk, &out, data.len()).unwrap(), data.clone());
            if !keyed {
                let with = codec.encode_with(&mut c, BlobKind::Chunk, &data).unwrap();
                prop_assert_eq!(&out[..], &with[..]);
            }
        }

        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 1..2000), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let codec = Codec::new(1, None);
            let mut blob = codec.encode(BlobKind::Chunk, &data);
            let i = pos.index(blob.len());
            blob[i] ^= 1 << bit;
            match codec.decode(BlobKind::Chunk, &blob, data.len()) {
                Err(_) => {}
                Ok(back) => prop_assert!(false, "flip at {} undetected, decoded {} bytes", i, back.len()),
            }
        }

        #[test]
        fn truncation_is_detected(data in proptest::collection::vec(any::<u8>(), 1..2000), cut in any::<prop::sample::Index>()) {
            let codec = Codec::new(1, None);
            let blob = codec.encode(BlobKind::Index, &data);
            let n = cut.index(blob.len());
            prop_assert!(codec.decode(BlobKind::Index, &blob[..n], data.len()).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Codec::new(1, None).decode(BlobKind::Manifest, &bytes, 1 << 20);
        }
    }

    #[test]
    fn compression_kept_only_when_smaller() {
        let codec = Codec::new(1, None);
        let zeros = vec![7u8; 100_000];
        let blob = codec.encode(BlobKind::Chunk, &zeros);
        assert_eq!(parse_header(&blob).unwrap().encoding, Encoding::Zstd);
        assert!(blob.len() < 1000);
        let random: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let blob = codec.encode(BlobKind::Chunk, &random);
        let h = parse_header(&blob).unwrap();
        assert!(blob.len() <= random.len() + BLOB_HEADER_LEN);
        if h.encoding == Encoding::Plain {
            assert_eq!(blob.len(), random.len() + BLOB_HEADER_LEN);
        }
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn random_chunks_are_stored_raw_and_mixed_ones_compressed() {
        let codec = Codec::new(1, None);
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        let noise = random(1 << 20, 7);
        assert!(looks_incompressible(&mut c, &noise));
        let blob = codec.encode_with(&mut c, BlobKind::Chunk, &noise).unwrap();
        assert_eq!(parse_header(&blob).unwrap().encoding, Encoding::Plain);
        assert_eq!(
            codec.decode(BlobKind::Chunk, &blob, 1 << 20).unwrap(),
            noise
        );
        // Random but for a compressible stretch the size of one sample stride: compressed.
        let mut mixed = noise.clone();
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(3000);
        mixed[5 << 17..(5 << 17) + (1 << 17)].copy_from_slice(&text[..1 << 17]);
        assert!(!looks_incompressible(&mut c, &mixed));
        let blob = codec.encode_with(&mut c, BlobKind::Chunk, &mixed).unwrap();
        assert_eq!(parse_header(&blob).unwrap().encoding, Encoding::Zstd);
        assert!(blob.len() < mixed.len() - (1 << 16));
        assert_eq!(
            codec.decode(BlobKind::Chunk, &blob, 1 << 20).unwrap(),
            mixed
        );
        // Small data is never judged by samples.
        assert!(!looks_incompressible(&mut c, &noise[..32 << 10]));
    }

    /// `decode_chunk_into` with a fresh context and buffer.
    fn decode_into(
        codec: &Codec,
        blob: &[u8],
        expected: usize,
    ) -> Result<(Decoded, Vec<u8>), BlobError> {
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        let mut out = crate::aligned_buf::AlignedBuf::zeroed(0);
        let how = codec.decode_chunk_into(blob, 1 << 20, expected, &mut dctx, &mut out)?;
        let data = match how {
            Decoded::InPlace => check(BlobKind::Chunk, blob)?.to_vec(),
            Decoded::Into => out.to_vec(),
        };
        Ok((how, data))
    }

    #[test]
    fn chunks_decode_in_place_or_in_one_call_as_decode_does() {
        let codec = Codec::new(1, None);
        let text = b"restore me, byte for byte ".repeat(5000);
        let z = codec.encode(BlobKind::Chunk, &text);
        assert_eq!(parse_header(&z).unwrap().encoding, Encoding::Zstd);
        assert_eq!(
            decode_into(&codec, &z, text.len()).unwrap(),
            (Decoded::Into, text.clone())
        );
        let noise = random(70_000, 3);
        let p = codec.encode(BlobKind::Chunk, &noise);
        assert_eq!(parse_header(&p).unwrap().encoding, Encoding::Plain);
        assert_eq!(
            decode_into(&codec, &p, noise.len()).unwrap(),
            (Decoded::InPlace, noise.clone())
        );
        // The index expecting another length: the content comes back as decoded, shorter or
        // longer, for the caller to report the mismatch.
        assert_eq!(decode_into(&codec, &z, text.len() + 4096).unwrap().1, text);
        assert_eq!(decode_into(&codec, &z, text.len() - 4096).unwrap().1, text);
        // The envelope is checked as by decode: a flipped payload bit is a CRC error.
        let mut bad = z.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            decode_into(&codec, &bad, text.len()),
            Err(BlobError::Crc { .. })
        ));
        // Content over the limit is refused, plain or compressed.
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        let mut out = crate::aligned_buf::AlignedBuf::zeroed(0);
        assert_eq!(
            codec.decode_chunk_into(&z, 1000, text.len(), &mut dctx, &mut out),
            Err(BlobError::TooLarge { limit: 1000 })
        );
        assert_eq!(
            codec.decode_chunk_into(&p, 1000, noise.len(), &mut dctx, &mut out),
            Err(BlobError::TooLarge { limit: 1000 })
        );
    }

    #[test]
    fn a_frame_whose_declared_size_lies_is_refused() {
        let data = b"0123456789abcdef".repeat(256); // 4096 bytes
        let frame = zstd::bulk::compress(&data, 1).unwrap();
        // Frame header: magic (4), descriptor (1), then (single segment, as zstd writes a
        // small frame of known size) the content size; 4096 takes 2 bytes, stored minus 256.
        let descriptor = frame[4];
        assert_eq!(descriptor >> 6, 1, "2-byte content size field");
        assert_ne!(descriptor & 0x20, 0, "single segment: no window byte");
        let declared = u16::from_le_bytes([frame[5], frame[6]]) as usize + 256;
        assert_eq!(declared, data.len());
        for lie in [data.len() - 512, data.len() + 512] {
            let mut forged = frame.clone();
            forged[5..7].copy_from_slice(&((lie - 256) as u16).to_le_bytes());
            // A valid envelope (CRC over the forged payload) around the lying frame.
            let blob = assemble(BlobKind::Chunk, Encoding::Zstd, &forged);
            for expected in [data.len(), lie] {
                assert!(
                    decode_into(&Codec::new(1, None), &blob, expected).is_err(),
                    "declared {lie}, expected {expected}: accepted"
                );
            }
        }
    }

    #[test]
    fn wrong_kind_and_foreign_data() {
        let codec = Codec::new(1, None);
        let blob = codec.encode(BlobKind::Chunk, b"hello");
        assert!(matches!(
            codec.decode(BlobKind::Index, &blob, 100),
            Err(BlobError::WrongKind { .. })
        ));
        assert!(matches!(
            codec.decode(
                BlobKind::Chunk,
                b"GIF89a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
                100
            ),
            Err(BlobError::BadMagic(_))
        ));
        let mut enc = blob.clone();
        enc[5] = b'E';
        assert!(matches!(
            codec.decode(BlobKind::Chunk, &enc, 100),
            Err(BlobError::Encrypted(Encoding::Encrypted))
        ));
        assert!(matches!(
            codec.decode(BlobKind::Chunk, &blob, 2),
            Err(BlobError::TooLarge { limit: 2 })
        ));
    }
}
