//! Check: every manifest and index parses and checksums, every referenced chunk exists, and
//! with `read_data` every chunk decodes and hashes to its name. Every problem names the file and
//! each generation, disk and offset it affects.
//!
//! [`Repository::check_and_repair`] (under the exclusive lock) also moves every chunk whose
//! content fails verification to `quarantine/`, so the next backup that reads the same data
//! stores a good copy under the same name, which heals every generation that references it.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::blob::BlobKind;
use crate::chunk_store::{ChunkEntry, ChunkFault, QUARANTINE_DIR};
use crate::digest::ChunkDigest;
use crate::error::{ChunkUse, Result};
use crate::format::{
    CHUNKS_DIR, CONFIG_FILE, INCOMPLETE_MARKER, LOCKS_DIR, MANIFEST_FILE, METADATA_DIR,
    TARGETS_DIR, TEMP_PREFIX,
};
use crate::lock::RepositoryLock;
use crate::manifest::{DiskRecord, Manifest};
use crate::repository::Repository;
use crate::target::{GenerationId, TargetKey};

/// One entry of a listing in `check`.
struct Entry {
    name: String,
    path: PathBuf,
    key: String,
    is_dir: bool,
}

/// Options of [`Repository::check`]. Repair is [`Repository::check_and_repair`], which needs the
/// exclusive lock and always reads the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Also read, decode and re-hash every referenced chunk.
    pub read_data: bool,
}

/// Part `part` of `of` of the chunks, by chunk id: `check --read-data-subset 3/7` reads about a
/// seventh of the data, and running 1/7 … 7/7 on seven nights reads every chunk once (as restic
/// does). The split is by id, so a part is the same set on every run while the data stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSubset {
    /// Which part, from 1.
    pub part: u32,
    /// Of how many parts.
    pub of: u32,
}

impl ReadSubset {
    /// Whether chunk `d` is in this part.
    pub fn contains(&self, d: &ChunkDigest) -> bool {
        let n = u32::from_be_bytes([d.0[0], d.0[1], d.0[2], d.0[3]]);
        n % self.of == self.part - 1
    }
}

impl std::str::FromStr for ReadSubset {
    type Err = String;

    /// `N/M` with 1 ≤ N ≤ M.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not N/M with 1 <= N <= M (for example 1/7)");
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (part, of) = (
            n.trim().parse::<u32>().map_err(|_| bad())?,
            m.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if part == 0 || of == 0 || part > of {
            return Err(bad());
        }
        Ok(ReadSubset { part, of })
    }
}

impl std::fmt::Display for ReadSubset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.part, self.of)
    }
}

/// Told about the chunk reads of a `read_data` check ([`Repository::check_reporting`]): the
/// work once it is known, then every chunk read (verified or not), from several threads.
pub trait CheckProgress: Sync {
    /// `chunks` chunks holding `bytes` bytes of content are about to be read.
    fn started(&self, chunks: u64, bytes: u64);
    /// One chunk of `bytes` content bytes was read.
    fn chunk_read(&self, bytes: u64);
}

/// A damaged chunk that [`Repository::check_and_repair`] moved out of `chunks/`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantinedChunk {
    /// The chunk's id (hex).
    pub chunk: String,
    /// Where it was (`chunks/<4 hex>/<64 hex>`).
    pub path: PathBuf,
    /// Where it is now (`quarantine/<4 hex>/<64 hex>`).
    pub quarantine_path: PathBuf,
    /// What was wrong with it.
    pub fault: String,
    /// Every place a committed generation uses it: those generations stay damaged (their
    /// indexes still name the chunk) until a backup reads the same data again.
    pub used_by: Vec<ChunkUse>,
}

/// A damaged or misplaced index that [`Repository::check_and_repair`] moved out of its
/// generation folder. The generation cannot be restored any more (it fails naming the missing
/// index), the next backup of its target reads that disk in full, and `gc` refuses to run until
/// the generation is deleted (its mark would be incomplete).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantinedIndex {
    /// Where it was (`targets/<key>/gen-NNNNNN/disk-<key>.fidx`).
    pub path: PathBuf,
    /// Where it is now (`quarantine/targets/<key>/gen-NNNNNN/disk-<key>.fidx`).
    pub quarantine_path: PathBuf,
    /// What was wrong with it.
    pub fault: String,
    /// Target folder name.
    pub target: String,
    /// Generation number.
    pub generation: u64,
    /// Disk (device key).
    pub disk: i32,
}

/// A generation that references a quarantined chunk, and so cannot be restored (or exported)
/// until the chunk is stored again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DamagedGeneration {
    /// Target folder name.
    pub target: String,
    /// Generation number.
    pub generation: u64,
    /// Disks (device keys) that use a quarantined chunk.
    pub disks: Vec<i32>,
}

/// What the report says about quarantined chunks (text of [`CheckReport::repair_note`]).
pub const REPAIR_NOTE: &str = "damaged chunks were moved to quarantine/; the generations that \
    use them stay damaged (their indexes still name the chunks) until a backup reads the same \
    data again: the next backup of each affected target, full or incremental (an incremental \
    reads again every chunk it would inherit that is missing), stores each chunk anew under the \
    same name, which heals every generation that uses it. A quarantined index cannot be \
    rebuilt: its generation stays damaged until it is deleted, and the next backup of its \
    target reads that disk in full";

/// Kind of damage found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A manifest is unreadable, damaged or inconsistent.
    DamagedManifest,
    /// A fixed index is missing, unreadable, damaged or does not match its manifest.
    DamagedIndex,
    /// A metadata file is missing or damaged.
    DamagedMetadata,
    /// A referenced chunk does not exist.
    MissingChunk,
    /// A referenced chunk is damaged (read-data only).
    DamagedChunk,
    /// A file that is not part of the format.
    ForeignFile,
    /// A file in `keys/` that is not a key file of this repository's keys.
    DamagedKeyFile,
}

/// One problem found by check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// Kind of damage.
    pub kind: ProblemKind,
    /// The damaged (or foreign, or missing) file.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
    /// Affected target, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Affected generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Affected disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<i32>,
    /// For chunks: every place the chunk is used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<ChunkUse>,
}

/// Result of a check; `ok()` is the exit status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    /// Whether chunk data was read.
    pub read_data: bool,
    /// The part of the chunks that was read (`3/7`), when not all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
    /// Targets seen.
    pub targets: u64,
    /// Committed generations checked.
    pub generations: u64,
    /// Indexes checked.
    pub indexes: u64,
    /// Distinct chunks referenced.
    pub chunks_referenced: u64,
    /// Chunks read and verified (read-data).
    pub chunks_verified: u64,
    /// Bytes of chunk content verified (read-data).
    pub bytes_verified: u64,
    /// Chunks no committed generation uses (freed by gc; not a problem).
    pub chunks_unreferenced: u64,
    /// Uncommitted generation folders (writer running, or abandoned; gc removes those).
    pub incomplete_generations: Vec<String>,
    /// Leftover temporary files (gc removes them; not a problem).
    pub temp_files: u64,
    /// Files kept in `quarantine/` by earlier repairs (not a problem; never removed
    /// automatically).
    pub quarantine_files: u64,
    /// Whether this was a repair ([`Repository::check_and_repair`]).
    pub repair: bool,
    /// Damaged chunks moved to `quarantine/` by this repair.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<QuarantinedChunk>,
    /// Damaged (or misplaced) indexes moved to `quarantine/` by this repair.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined_indexes: Vec<QuarantinedIndex>,
    /// Generations that use a chunk quarantined by this repair (still damaged until the next
    /// backup of their target stores the chunk again), or whose index it quarantined (damaged
    /// until deleted: an index cannot be rebuilt).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged_generations: Vec<DamagedGeneration>,
    /// [`REPAIR_NOTE`] when something was quarantined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_note: Option<String>,
    /// Every problem found (a quarantined chunk is still reported: its generations are
    /// damaged).
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True if no problem was found. A repair that quarantined chunks is not ok: the
    /// generations that use them stay damaged.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Ctx<'a> {
    report: &'a mut CheckReport,
}

impl Ctx<'_> {
    fn problem(
        &mut self,
        kind: ProblemKind,
        path: PathBuf,
        detail: impl Into<String>,
        at: (Option<&TargetKey>, Option<GenerationId>, Option<i32>),
    ) {
        self.report.problems.push(Problem {
            kind,
            path,
            detail: detail.into(),
            target: at.0.map(|k| k.to_string()),
            generation: at.1.map(|g| g.0),
            disk: at.2,
            used_by: Vec::new(),
        });
    }
}

/// Whether a fault means the chunk file's content is bad (and the file must go), as opposed to
/// missing or unreadable for a reason that may pass (permissions, a transient I/O error).
fn content_damaged(f: &ChunkFault) -> bool {
    matches!(
        f,
        ChunkFault::Blob(_) | ChunkFault::DigestMismatch(_) | ChunkFault::Length { .. }
    )
}

impl Repository {
    /// Checks the repository; never modifies it. Hold at least the shared lock.
    ///
    /// # Errors
    /// Only when folders cannot be listed at all; damage is reported in [`CheckReport`].
    pub fn check(&self, opts: &CheckOptions) -> Result<CheckReport> {
        self.run_check(opts.read_data, false, None, None)
    }

    /// [`Repository::check`] (or [`Repository::check_subset`] with `subset`) telling
    /// `progress` about the chunk reads of `read_data`, so a long check shows how far it is.
    ///
    /// # Errors
    /// As [`Repository::check`].
    pub fn check_reporting(
        &self,
        read_data: bool,
        subset: Option<ReadSubset>,
        progress: &dyn CheckProgress,
    ) -> Result<CheckReport> {
        self.run_check(read_data || subset.is_some(), false, subset, Some(progress))
    }

    /// Checks the structure and reads, decodes and re-hashes the chunks of one part of
    /// `subset` (see [`ReadSubset`]); never modifies the repository.
    ///
    /// # Errors
    /// As [`Repository::check`].
    pub fn check_subset(&self, subset: ReadSubset) -> Result<CheckReport> {
        self.run_check(true, false, Some(subset), None)
    }

    /// Checks the repository reading every chunk (repair implies `read_data`), and moves every
    /// chunk whose content fails verification (envelope, CRC, decryption, length or digest)
    /// to `quarantine/<4 hex>/<64 hex>` (rename, then fsync of both folders; never deleted).
    /// Missing chunks and damaged indexes, manifests and metadata are reported as by
    /// [`Repository::check`] and left alone; so is a chunk that could not be read at all (an
    /// I/O error), which may be a passing fault.
    ///
    /// Each quarantined chunk is listed in [`CheckReport::quarantined`] with every use, and
    /// the generations using it in [`CheckReport::damaged_generations`]: they stay damaged,
    /// and the report still lists the chunk's problem (so `ok()` is false), until a backup
    /// reads the same data and stores the chunk again. Since a chunk is named by its content,
    /// the new copy has the same name, and every generation using it is whole again.
    ///
    /// # Errors
    /// [`crate::Error::LockRequired`] without the exclusive lock of this repository; as
    /// [`Repository::check`]. A chunk that cannot be moved is named in its problem's detail.
    pub fn check_and_repair(&self, lock: &RepositoryLock) -> Result<CheckReport> {
        lock.require(self.config().repository_id, "check --repair", true)?;
        self.run_check(true, true, None, None)
    }

    /// Moves the index object `ikey` (`targets/<key>/gen-NNNNNN/<file>`) to
    /// `quarantine/<ikey>` (or `<ikey>.N` if that name is taken); returns the new path.
    fn quarantine_index(&self, ikey: &str) -> Result<PathBuf> {
        let be = self.backend().as_ref();
        let mut n = 0u32;
        loop {
            let to = if n == 0 {
                format!("{QUARANTINE_DIR}/{ikey}")
            } else {
                format!("{QUARANTINE_DIR}/{ikey}.{n}")
            };
            // A damaged index may be larger than a good one; allow for that when copying.
            match be.move_new(ikey, &to, 2 * crate::fixed_index::INDEX_LIMIT as u64) {
                Ok(()) => return Ok(be.display_path(&to)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err(crate::error::store_err(be, "move to quarantine", ikey)(e)),
            }
        }
    }

    /// One level of the store under `prefix`: folders and objects, sorted by name.
    fn entries(&self, prefix: &str) -> Result<Vec<Entry>> {
        let be = self.backend().as_ref();
        let l = be
            .list_dir(prefix)
            .map_err(crate::error::store_err(be, "list", prefix))?;
        let mut out: Vec<Entry> = l
            .dirs
            .into_iter()
            .map(|name| {
                let key = format!("{prefix}{name}");
                Entry {
                    path: be.display_path(&key),
                    name,
                    key,
                    is_dir: true,
                }
            })
            .chain(l.objects.into_iter().map(|o| Entry {
                name: o.name().to_string(),
                path: be.display_path(&o.key),
                key: o.key,
                is_dir: false,
            }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn run_check(
        &self,
        read_data: bool,
        repair: bool,
        subset: Option<ReadSubset>,
        progress: Option<&dyn CheckProgress>,
    ) -> Result<CheckReport> {
        let mut report = CheckReport {
            read_data,
            read_data_subset: subset.map(|s| s.to_string()),
            repair,
            ..Default::default()
        };
        // digest -> expected content length
        let mut referenced: HashMap<ChunkDigest, usize> = HashMap::new();
        // (target, generation, disk record) of every readable index, for the second pass
        let mut indexes: Vec<(TargetKey, GenerationId, DiskRecord)> = Vec::new();
        // (target, generation) -> disks whose index a repair quarantined
        let mut damaged_indexes: HashMap<(String, u64), HashSet<i32>> = HashMap::new();
        let mut ctx = Ctx {
            report: &mut report,
        };
        for Entry { name, path, .. } in self.entries("")? {
            if ![
                CONFIG_FILE,
                CHUNKS_DIR,
                TARGETS_DIR,
                LOCKS_DIR,
                crate::catalog::CATALOG_DIR,
                crate::chunk_cache::CACHE_EPOCH,
                crate::format::KEYS_DIR,
                QUARANTINE_DIR,
                crate::runs::RUNS_DIR,
            ]
            .contains(&name.as_str())
            {
                ctx.problem(
                    ProblemKind::ForeignFile,
                    path,
                    "not part of a repository",
                    (None, None, None),
                );
            }
        }
        if let Some(fp) = self.key_fingerprint() {
            let (good, bad) =
                crate::keys::scan_for_check(self.backend().as_ref(), self.config(), fp)?;
            for e in bad {
                let path = match &e {
                    crate::Error::KeyFile { path, .. } => path.clone(),
                    _ => self.backend().display_path(crate::format::KEYS_DIR),
                };
                ctx.problem(
                    ProblemKind::DamagedKeyFile,
                    path,
                    e.to_string(),
                    (None, None, None),
                );
            }
            if good == 0 {
                ctx.problem(
                    ProblemKind::DamagedKeyFile,
                    self.backend().display_path(crate::format::KEYS_DIR),
                    "no usable key file: the repository cannot be opened again; add one now",
                    (None, None, None),
                );
            }
        }
        for Entry {
            name,
            path: tpath,
            key: tkey,
            is_dir,
        } in self.entries(&format!("{TARGETS_DIR}/"))?
        {
            let key = match TargetKey::new(name.clone()) {
                Ok(k) if is_dir => k,
                _ => {
                    ctx.problem(
                        ProblemKind::ForeignFile,
                        tpath,
                        "not a target folder",
                        (None, None, None),
                    );
                    continue;
                }
            };
            ctx.report.targets += 1;
            for Entry {
                name: gname,
                path: gpath,
                key: gkey,
                is_dir,
            } in self.entries(&format!("{tkey}/"))?
            {
                let Some(id) = GenerationId::from_folder_name(&gname).filter(|_| is_dir) else {
                    ctx.problem(
                        ProblemKind::ForeignFile,
                        gpath,
                        "not a generation folder",
                        (Some(&key), None, None),
                    );
                    continue;
                };
                let at = |disk| (Some(&key), Some(id), disk);
                let mkey = format!("{gkey}/{MANIFEST_FILE}");
                let mpath = self.backend().display_path(&mkey);
                let be = self.backend().as_ref();
                if be
                    .head(&mkey)
                    .map_err(crate::error::store_err(be, "stat", &mkey))?
                    .is_none()
                {
                    ctx.report
                        .incomplete_generations
                        .push(format!("{key}/{gname}"));
                    continue;
                }
                let m = match self
                    .read_object(&mkey, crate::manifest::MANIFEST_LIMIT as u64)
                    .and_then(|b| Manifest::decode(&mpath, &b, self.codec()))
                {
                    Ok(m) => m,
                    Err(e) => {
                        ctx.problem(ProblemKind::DamagedManifest, mpath, e.to_string(), at(None));
                        continue;
                    }
                };
                if let Some(reason) = self.manifest_misplaced(&key, id, &m) {
                    ctx.problem(
                        ProblemKind::DamagedManifest,
                        mpath.clone(),
                        reason,
                        at(None),
                    );
                }
                ctx.report.generations += 1;
                let mut known_files: HashSet<String> = [
                    MANIFEST_FILE.to_string(),
                    METADATA_DIR.to_string(),
                    INCOMPLETE_MARKER.to_string(),
                ]
                .into();
                for d in &m.disks {
                    known_files.insert(d.index_file.clone());
                    let ikey = format!("{gkey}/{}", d.index_file);
                    let ipath = self.backend().display_path(&ikey);
                    match self.read_index(&key, id, d) {
                        Ok(idx) if idx.chunk_size() != m.chunk_size => ctx.problem(
                            ProblemKind::DamagedIndex,
                            ipath,
                            format!(
                                "chunk size {} but the manifest says {}",
                                idx.chunk_size(),
                                m.chunk_size
                            ),
                            at(Some(d.disk.key)),
                        ),
                        Ok(idx) => {
                            ctx.report.indexes += 1;
                            // A chunk id names one content, so one length: content-defined
                            // indexes record each chunk's length, and two that disagree
                            // cannot both be right (reported once per index).
                            let mut conflict = None;
                            for (slot, dg) in idx.stored_chunks() {
                                let len = idx.chunk_range(slot).1;
                                match referenced.entry(dg) {
                                    MapEntry::Vacant(v) => {
                                        v.insert(len);
                                    }
                                    MapEntry::Occupied(o) if *o.get() != len => {
                                        conflict.get_or_insert((dg, len, *o.get()));
                                    }
                                    MapEntry::Occupied(_) => {}
                                }
                            }
                            if let Some((dg, len, other)) = conflict {
                                ctx.problem(
                                    ProblemKind::DamagedIndex,
                                    ipath.clone(),
                                    format!(
                                        "chunk {dg} is {len} bytes long here, but {other} bytes \
                                         in an index read before"
                                    ),
                                    at(Some(d.disk.key)),
                                );
                            }
                            indexes.push((key.clone(), id, d.clone()));
                        }
                        Err(e) => {
                            let mut detail = e.to_string();
                            // Content that is wrong (damaged, or another place's index) is
                            // moved aside by a repair, like a damaged chunk: the generation
                            // stays damaged and says so, instead of failing in other ways.
                            // An I/O error may pass, and a missing file has nothing to move.
                            let content =
                                matches!(e, crate::Error::Blob { .. } | crate::Error::Index { .. });
                            if repair && content {
                                match self.quarantine_index(&ikey) {
                                    Ok(to) => {
                                        let _ = write!(
                                            detail,
                                            "; moved to {}: generation {} of {key} cannot be \
                                             restored until it is deleted",
                                            to.display(),
                                            id
                                        );
                                        damaged_indexes
                                            .entry((key.to_string(), id.0))
                                            .or_default()
                                            .insert(d.disk.key);
                                        ctx.report.quarantined_indexes.push(QuarantinedIndex {
                                            path: ipath.clone(),
                                            quarantine_path: to,
                                            fault: e.to_string(),
                                            target: key.to_string(),
                                            generation: id.0,
                                            disk: d.disk.key,
                                        });
                                    }
                                    Err(qe) => {
                                        let _ = write!(
                                            detail,
                                            "; could not be moved to quarantine: {qe}"
                                        );
                                    }
                                }
                            }
                            ctx.problem(
                                ProblemKind::DamagedIndex,
                                ipath,
                                detail,
                                at(Some(d.disk.key)),
                            )
                        }
                    }
                }
                let fingerprint = self.key_fingerprint().map(|f| f.0.as_str());
                if m.key_fingerprint() != fingerprint {
                    ctx.problem(
                        ProblemKind::DamagedManifest,
                        mpath.clone(),
                        format!(
                            "records key fingerprint {:?}, the repository's is {:?}",
                            m.key_fingerprint(),
                            fingerprint
                        ),
                        at(None),
                    );
                }
                let mdir_key = format!("{gkey}/{METADATA_DIR}");
                let mdir = self.backend().display_path(&mdir_key);
                let stored_names: Vec<String> = m
                    .metadata_files
                    .iter()
                    .map(|n| self.metadata_file_name(n))
                    .collect();
                for (name, stored) in m.metadata_files.iter().zip(&stored_names) {
                    if let Err(e) = self.read_metadata(&key, id, name) {
                        ctx.problem(
                            ProblemKind::DamagedMetadata,
                            mdir.join(stored),
                            e.to_string(),
                            at(None),
                        );
                    }
                }
                for Entry {
                    name: mname,
                    path: mpath,
                    ..
                } in self.entries(&format!("{mdir_key}/"))?
                {
                    if !stored_names.contains(&mname) && !mname.starts_with(TEMP_PREFIX) {
                        ctx.problem(
                            ProblemKind::ForeignFile,
                            mpath,
                            "not listed in the manifest",
                            at(None),
                        );
                    }
                }
                for Entry {
                    name: fname,
                    path: fpath,
                    ..
                } in self.entries(&format!("{gkey}/"))?
                {
                    if fname.starts_with(TEMP_PREFIX) {
                        ctx.report.temp_files += 1;
                    } else if !known_files.contains(&fname) {
                        ctx.problem(
                            ProblemKind::ForeignFile,
                            fpath,
                            "not listed in the manifest",
                            at(None),
                        );
                    }
                }
            }
        }
        ctx.report.chunks_referenced = referenced.len() as u64;
        let qprefix = format!("{QUARANTINE_DIR}/");
        ctx.report.quarantine_files += self
            .backend()
            .list(&qprefix)
            .map_err(crate::error::store_err(
                self.backend().as_ref(),
                "list",
                QUARANTINE_DIR,
            ))?
            .len() as u64;

        let mut present: HashSet<ChunkDigest> = HashSet::new();
        self.chunk_store().scan(|entry| {
            match entry {
                ChunkEntry::Chunk(d, _) => {
                    present.insert(d);
                }
                ChunkEntry::Temp(_) => ctx.report.temp_files += 1,
                ChunkEntry::Foreign(o) => ctx.problem(
                    ProblemKind::ForeignFile,
                    self.backend().display_path(&o.key),
                    "not a chunk file",
                    (None, None, None),
                ),
            }
            Ok(())
        })?;
        ctx.report.chunks_unreferenced = present
            .iter()
            .filter(|d| !referenced.contains_key(d))
            .count() as u64;

        // digest -> (kind, detail, content damaged: quarantined by a repair)
        let mut bad: HashMap<ChunkDigest, (ProblemKind, String, bool)> = HashMap::new();
        for d in referenced.keys() {
            if !present.contains(d) {
                // This host's cache of known chunks must not vouch for it any more: the next
                // backup of the same data then stores it again.
                if let Some(c) = self.chunk_store().cache() {
                    c.remove(d);
                }
                bad.insert(
                    *d,
                    (
                        ProblemKind::MissingChunk,
                        ChunkFault::Missing.to_string(),
                        false,
                    ),
                );
            }
        }
        if read_data {
            let todo: Vec<(ChunkDigest, usize)> = referenced
                .iter()
                .filter(|(d, _)| present.contains(d))
                .filter(|(d, _)| subset.is_none_or(|s| s.contains(d)))
                .map(|(d, l)| (*d, *l))
                .collect();
            let next = AtomicUsize::new(0);
            let faults = Mutex::new(Vec::new());
            let verified = AtomicUsize::new(0);
            let bytes = AtomicUsize::new(0);
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            if let Some(p) = progress {
                p.started(todo.len() as u64, todo.iter().map(|(_, l)| *l as u64).sum());
            }
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(d, len)) = todo.get(i) else { break };
                        let loaded = self.chunk_store().load(&d, len);
                        if let Some(p) = progress {
                            p.chunk_read(len as u64);
                        }
                        match loaded {
                            Ok(_) => {
                                verified.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(len, Ordering::Relaxed);
                            }
                            Err(f) => faults
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((d, f)),
                        }
                    });
                }
            });
            ctx.report.chunks_verified = verified.into_inner() as u64;
            ctx.report.bytes_verified = bytes.into_inner() as u64;
            for (d, f) in faults.into_inner().unwrap_or_else(|p| p.into_inner()) {
                let kind = if f == ChunkFault::Missing {
                    ProblemKind::MissingChunk
                } else {
                    ProblemKind::DamagedChunk
                };
                bad.insert(d, (kind, f.to_string(), content_damaged(&f)));
            }
        }

        if !bad.is_empty() {
            // Second pass: name every place each bad chunk is used.
            let mut uses: HashMap<ChunkDigest, Vec<ChunkUse>> = HashMap::new();
            for (key, id, rec) in &indexes {
                let Ok(idx) = self.read_index(key, *id, rec) else {
                    continue;
                };
                let disk = &rec.disk.key;
                for (slot, d) in idx.stored_chunks() {
                    if bad.contains_key(&d) {
                        uses.entry(d).or_default().push(ChunkUse {
                            target: key.to_string(),
                            generation: id.0,
                            disk: *disk,
                            offset: idx.chunk_range(slot).0,
                        });
                    }
                }
            }
            let mut bad: Vec<_> = bad.into_iter().collect();
            bad.sort_by_key(|(d, _)| *d);
            let mut damaged = std::mem::take(&mut damaged_indexes);
            for (d, (kind, detail, content)) in bad {
                let path = self.chunk_store().path(&d);
                let used_by = uses.remove(&d).unwrap_or_default();
                let mut text = format!("chunk {d}: {detail}");
                if repair && content {
                    let moved = self.chunk_store().quarantine(&d);
                    if moved.is_ok() {
                        self.chunks_removed()?;
                    }
                    match moved {
                        Ok(to) => {
                            let _ = write!(
                                text,
                                "; moved to {} (the next backup of the same data stores it \
                                 again)",
                                to.display()
                            );
                            for u in &used_by {
                                damaged
                                    .entry((u.target.clone(), u.generation))
                                    .or_default()
                                    .insert(u.disk);
                            }
                            ctx.report.quarantined.push(QuarantinedChunk {
                                chunk: d.to_hex(),
                                path: path.clone(),
                                quarantine_path: to,
                                fault: detail,
                                used_by: used_by.clone(),
                            });
                        }
                        Err(e) => {
                            let _ = write!(text, "; could not be moved to quarantine: {e}");
                        }
                    }
                } else if repair && kind == ProblemKind::DamagedChunk {
                    text.push_str(
                        "; not quarantined: the file could not be read, which may \
                                   pass (permissions, an I/O error); fix that and check again",
                    );
                }
                ctx.report.problems.push(Problem {
                    kind,
                    path,
                    detail: text,
                    target: None,
                    generation: None,
                    disk: None,
                    used_by,
                });
            }
            damaged_indexes = damaged;
        }
        if !damaged_indexes.is_empty() {
            let mut damaged: Vec<DamagedGeneration> = damaged_indexes
                .into_iter()
                .map(|((target, generation), disks)| {
                    let mut disks: Vec<i32> = disks.into_iter().collect();
                    disks.sort_unstable();
                    DamagedGeneration {
                        target,
                        generation,
                        disks,
                    }
                })
                .collect();
            damaged.sort();
            ctx.report.damaged_generations = damaged;
            if !ctx.report.quarantined.is_empty() || !ctx.report.quarantined_indexes.is_empty() {
                ctx.report.repair_note = Some(REPAIR_NOTE.to_string());
            }
        }
        let _ = BlobKind::Chunk;
        Ok(report)
    }
}

#[cfg(test)]
mod subset_tests {
    use super::*;

    #[test]
    fn parts_split_every_chunk_exactly_once_and_bad_parts_are_refused() {
        let parts: Vec<ReadSubset> = (1..=7).map(|n| format!("{n}/7").parse().unwrap()).collect();
        for i in 0u32..2000 {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&(i.wrapping_mul(2_654_435_761)).to_be_bytes());
            let d = ChunkDigest(d);
            assert_eq!(parts.iter().filter(|p| p.contains(&d)).count(), 1);
        }
        assert_eq!("3/7".parse::<ReadSubset>().unwrap().to_string(), "3/7");
        for bad in ["0/7", "8/7", "1/0", "7", "a/b", "-1/3", ""] {
            assert!(bad.parse::<ReadSubset>().is_err(), "{bad}");
        }
    }
}
