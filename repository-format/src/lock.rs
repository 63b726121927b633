//! Repository, target and key-management locks, made of objects so they work on any backend:
//! a local folder, a folder shared between hosts, or an S3 bucket. No `flock`, no shared file
//! system semantics.
//!
//! # Protocol
//!
//! A lock named `N` (`repository`, `target-<key>`, `keys`) is the set of objects under
//! `locks/N/`. A holder has two:
//!
//! - `locks/N/<run id>.claim`: its record (pid, host, machine, run id, mode, command, since,
//!   ttl), written once with a conditional create. Its store modification time is the claim's
//!   position in line;
//! - `locks/N/<run id>.alive`: a heartbeat the holder rewrites every `ttl / 3` from a
//!   background thread.
//!
//! A record is **stale** when the newest of its two store times is older than its ttl, measured
//! by the *store's* clock (so skewed host clocks do not matter), or at once when it names this
//! machine and boot (same machine id, same boot id) and its pid is not running. Host names are
//! never trusted for that: two hosts may share one.
//!
//! Taking the lock: list `locks/N/` (stale records are removed and reported); while a live
//! conflicting record exists (exclusive conflicts with shared and exclusive, shared with
//! exclusive, a pin waits for exclusive holders; see [`LockMode::Pin`]), wait. Then create the own claim and list again. If any other live conflicting claim is
//! there, delete the own claim, wait a random moment and try again; otherwise the lock is held.
//! Why no two runs hold conflicting locks: if run A's second listing did not show B's claim,
//! that listing came before B's claim was visible, so before B's second listing, which
//! therefore shows A's claim (created before A's listing), and B backs off. This needs a store
//! whose listings show every object whose creation has completed (S3 and SeaweedFS are
//! read-after-write consistent for listings), and holders that renew within their ttl. Claim
//! times are deliberately not used to pick a winner: a store stamps an object when it receives
//! it, which may be before it is visible, so "the earlier claim wins" can let both win.
//!
//! # Pins
//!
//! A reader that holds one generation open for long (`serve`, `files`) takes a **pin**: a
//! record in the repository lock that names the generation. Taking a pin waits for exclusive
//! holders like a shared lock does, but an exclusive holder does not wait for pins, so prune
//! and gc keep working while a disk is served. The same two-listing argument shows that no pin
//! slips past them: either the pin's second listing shows the exclusive claim (the pin backs
//! off until the exclusive holder is done), or the exclusive holder's second listing, and
//! every listing after it, shows the pin. Prune and delete therefore list the pins after
//! taking the exclusive lock and keep every pinned generation; gc's mark covers it because
//! its manifest stays. The pinning reader reads the generation's manifest only after the pin
//! is held, so it never starts reading a generation that is already being deleted. A pin goes
//! stale like any record (its process gone from this machine, or no heartbeat for its ttl).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{store_err, Error, Result};
use crate::storage::{Backend, ObjectInfo};
use crate::target::TargetKey;

/// Default time after which a holder that stopped renewing its heartbeat is stale.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(300);

/// Shared (backup, restore, check), exclusive (gc, prune, reindex, delete) or a pin of one
/// generation (serve, files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Many holders at once.
    Shared,
    /// One holder, no shared holders.
    Exclusive,
    /// A reader of one generation ([`LockHolder::pin`]): taken only while no exclusive holder
    /// runs, but an exclusive holder does not wait for it; prune and delete keep the pinned
    /// generation instead (see the module docs).
    Pin,
}

/// The generation a [`LockMode::Pin`] record keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedGeneration {
    /// The target's key.
    pub target: TargetKey,
    /// The generation.
    pub generation: u64,
}

/// Who holds (or held) a lock: the content of a claim object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name (for people: never used to decide staleness, two hosts may share a name).
    pub host: String,
    /// Command line of the holder (safekeeping never takes secrets as arguments).
    pub command: String,
    /// When the lock was taken (holder's clock).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Lock mode.
    pub mode: LockMode,
    /// Set when the record is stale, saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
    /// Unique id of the run holding the lock (the claim's object name).
    #[serde(default)]
    pub run_id: String,
    /// Hash of the machine id and boot id: a dead pid only proves a record stale on the same
    /// machine in the same boot.
    #[serde(default)]
    pub machine: String,
    /// Seconds without a heartbeat after which the record is stale.
    #[serde(default)]
    pub ttl_seconds: u64,
    /// The generation a [`LockMode::Pin`] record keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinnedGeneration>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self
            .since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        write!(
            f,
            "pid {} on {} ({:?}, since {since}): {}",
            self.pid, self.host, self.mode, self.command
        )?;
        if let Some(p) = &self.pin {
            write!(f, " [pins generation {} of {}]", p.generation, p.target)?;
        }
        if let Some(s) = &self.stale {
            write!(f, " [stale: {s}]")?;
        }
        Ok(())
    }
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A stable, non-secret name of the place a pid means something: this kernel's boot and this
/// pid namespace. A record written with the same identity names a process that [`pid_alive`]
/// can judge; any other record is judged by its heartbeat alone.
///
/// The boot id is random per boot, so two machines never share it; the pid namespace tells
/// containers on one kernel apart (each counts its own pids). The machine id is added when
/// there is one, but is not required: fresh containers and CI machines often have no
/// `/etc/machine-id`, and without an identity a killed backup's lock would look alive for its
/// whole time-to-live, keeping gc from freeing what it left. The result is a hash because the
/// machine id should not be published. Empty when the boot id is unknown (not Linux).
pub(crate) fn machine_identity() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let namespace = || {
        std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    identity_from(
        read("/proc/sys/kernel/random/boot_id"),
        namespace(),
        read("/etc/machine-id").or_else(|| read("/var/lib/dbus/machine-id")),
    )
}

/// [`machine_identity`] from its parts (separate so that a test can leave any of them out).
fn identity_from(boot: Option<String>, pid_ns: Option<String>, machine: Option<String>) -> String {
    let Some(boot) = boot else {
        return String::new();
    };
    let mut h = Sha256::new();
    h.update(b"safekeeping machine v2\0");
    for part in [Some(boot), pid_ns, machine] {
        h.update(part.unwrap_or_default().as_bytes());
        h.update(b"\0");
    }
    hex::encode(&h.finalize()[..16])
}

/// Whether `pid` is a running process on this machine (Linux `/proc`; elsewhere assumed alive).
pub(crate) fn pid_alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn command_line() -> String {
    let s = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    // Cut at a character boundary: arguments may hold any UTF-8 (VM names).
    s.chars().take(256).collect()
}

/// One record found under `locks/N/`.
#[derive(Debug, Clone)]
struct Found {
    run_id: String,
    claim: Option<ObjectInfo>,
    alive: Option<ObjectInfo>,
    holder: Option<LockHolder>,
}

impl Found {
    /// The newest store time of the record's objects.
    fn last_seen(&self) -> SystemTime {
        [&self.claim, &self.alive]
            .iter()
            .filter_map(|o| o.as_ref().map(|o| o.modified))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Why a record is stale at store time `now`, or `None` if it is live.
fn staleness(f: &Found, now: SystemTime, me: &str) -> Option<String> {
    let Some(h) = &f.holder else {
        // A claim still being written has no content yet on no backend (writes are atomic),
        // so this is damage or a heartbeat without claim: stale once it is a minute old.
        let age = now.duration_since(f.last_seen()).unwrap_or_default();
        return (age > Duration::from_secs(60))
            .then(|| format!("unreadable or orphaned for {} s", age.as_secs()));
    };
    if !me.is_empty() && h.machine == me && !pid_alive(h.pid) {
        return Some(format!("process {} is not running on this host", h.pid));
    }
    let ttl = Duration::from_secs(h.ttl_seconds.max(1));
    let quiet = now.duration_since(f.last_seen()).unwrap_or_default();
    if quiet > ttl {
        return Some(format!(
            "no heartbeat for {} s (expires after {} s without one)",
            quiet.as_secs(),
            ttl.as_secs()
        ));
    }
    None
}

/// Whether a run asking for `wanted` must wait for (or back off from) a live `held` record.
/// Not symmetric: a pin waits for an exclusive holder, an exclusive holder never waits for a
/// pin (it keeps the pinned generation instead).
fn conflicts(wanted: LockMode, held: LockMode) -> bool {
    use LockMode::{Exclusive, Pin, Shared};
    match (wanted, held) {
        (Exclusive, Pin) | (Pin, Shared | Pin) | (Shared, Shared | Pin) => false,
        (Exclusive, Shared | Exclusive) | (Shared | Pin, Exclusive) => true,
    }
}

/// How a lock is configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockSettings {
    pub ttl: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_LOCK_TTL,
        }
    }
}

/// A held lock: its objects, the heartbeat thread, and the stale records it found. Dropping
/// it stops the heartbeat and deletes the objects.
struct Held {
    backend: Arc<dyn Backend>,
    run_id: String,
    claim_key: String,
    alive_key: String,
    stale: Vec<LockHolder>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("claim", &self.claim_key)
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if let Err(e) = self.backend.delete(&self.claim_key) {
            tracing::warn!(lock = %self.claim_key, error = %e, "could not remove lock claim; it goes stale after its ttl");
        }
        let _ = self.backend.delete(&self.alive_key);
    }
}

fn records(backend: &dyn Backend, dir: &str) -> Result<Vec<Found>> {
    let listed = backend.list(dir).map_err(store_err(backend, "list", dir))?;
    let mut by_run: std::collections::BTreeMap<String, Found> = Default::default();
    for o in listed {
        let name = o.name().to_string();
        let (run, is_claim) = if let Some(r) = name.strip_suffix(".claim") {
            (r.to_string(), true)
        } else if let Some(r) = name.strip_suffix(".alive") {
            (r.to_string(), false)
        } else {
            continue;
        };
        let f = by_run.entry(run.clone()).or_insert_with(|| Found {
            run_id: run,
            claim: None,
            alive: None,
            holder: None,
        });
        if is_claim {
            f.claim = Some(o);
        } else {
            f.alive = Some(o);
        }
    }
    for f in by_run.values_mut() {
        if let Some(c) = &f.claim {
            f.holder = backend
                .get(&c.key, 64 * 1024)
                .ok()
                .and_then(|b| serde_json::from_slice::<LockHolder>(&b).ok());
        }
    }
    Ok(by_run.into_values().collect())
}

fn remove_record(backend: &dyn Backend, dir: &str, run: &str) {
    let _ = backend.delete(&format!("{dir}{run}.claim"));
    let _ = backend.delete(&format!("{dir}{run}.alive"));
}

/// Splits records into stale ones (removed, returned with the reason) and live ones.
fn sweep_stale(
    backend: &dyn Backend,
    dir: &str,
    found: Vec<Found>,
    now: SystemTime,
    me: &str,
    own_run: &str,
    stale: &mut Vec<LockHolder>,
) -> Vec<Found> {
    let mut live = Vec::new();
    for f in found {
        if f.run_id == own_run {
            live.push(f);
            continue;
        }
        match staleness(&f, now, me) {
            Some(reason) => {
                tracing::warn!(lock = %dir, run = %f.run_id, %reason, "removing stale lock record");
                remove_record(backend, dir, &f.run_id);
                if let Some(mut h) = f.holder {
                    h.stale = Some(reason);
                    if !stale.iter().any(|s| s.run_id == h.run_id) {
                        stale.push(h);
                    }
                }
            }
            None => live.push(f),
        }
    }
    live
}

fn acquire(
    backend: &Arc<dyn Backend>,
    name: &str,
    mode: LockMode,
    pin: Option<PinnedGeneration>,
    wait: Duration,
    settings: LockSettings,
) -> Result<Held> {
    let dir = format!("{}/{name}/", crate::format::LOCKS_DIR);
    let be: &dyn Backend = backend.as_ref();
    let deadline = Instant::now() + wait;
    let me = machine_identity();
    // The store's clock, as an offset from ours (one probe object).
    let store_now = {
        let local = SystemTime::now();
        let store = be
            .store_time()
            .map_err(store_err(be, "read the clock of", &dir))?;
        move || match store.duration_since(local) {
            Ok(ahead) => SystemTime::now() + ahead,
            Err(e) => SystemTime::now() - e.duration(),
        }
    };
    let mut stale = Vec::new();
    loop {
        let found = records(be, &dir)?;
        let live = sweep_stale(be, &dir, found, store_now(), &me, "", &mut stale);
        let blocked = live
            .iter()
            .any(|f| f.holder.as_ref().is_some_and(|h| conflicts(mode, h.mode)));
        if !blocked {
            let run_id = uuid::Uuid::new_v4().simple().to_string();
            let holder = LockHolder {
                pid: std::process::id(),
                host: host_name(),
                command: command_line(),
                since: OffsetDateTime::now_utc(),
                mode,
                stale: None,
                run_id: run_id.clone(),
                machine: me.clone(),
                ttl_seconds: settings.ttl.as_secs().max(1),
                pin: pin.clone(),
            };
            let claim_key = format!("{dir}{run_id}.claim");
            let alive_key = format!("{dir}{run_id}.alive");
            let json = serde_json::to_vec(&holder).expect("holder serialises");
            be.create_new(&claim_key, &json)
                .map_err(store_err(be, "create", &claim_key))?;
            // Re-list: decide by the claims' store times (see the module docs).
            let decided = (|| -> Result<bool> {
                let found = records(be, &dir)?;
                let Some(mine) = found
                    .iter()
                    .find(|f| f.run_id == run_id)
                    .and_then(|f| f.claim.clone())
                else {
                    // Our claim vanished: someone judged it stale. Try again.
                    return Ok(false);
                };
                let live = sweep_stale(be, &dir, found, mine.modified, &me, &run_id, &mut stale);
                // Any other live conflicting claim, earlier or later: back off. (Ordering by
                // claim times is not safe: a store stamps an object when it receives it, which
                // can be before it becomes visible to listings.)
                Ok(!live.iter().any(|f| {
                    f.run_id != run_id && f.holder.as_ref().is_some_and(|h| conflicts(mode, h.mode))
                }))
            })();
            match decided {
                Ok(true) => {
                    let (stop, heartbeat) = start_heartbeat(
                        backend.clone(),
                        alive_key.clone(),
                        claim_key.clone(),
                        settings.ttl,
                    );
                    return Ok(Held {
                        backend: backend.clone(),
                        run_id,
                        claim_key,
                        alive_key,
                        stale,
                        stop: Some(stop),
                        heartbeat: Some(heartbeat),
                    });
                }
                Ok(false) => remove_record(be, &dir, &run_id),
                Err(e) => {
                    remove_record(be, &dir, &run_id);
                    return Err(e);
                }
            }
        }
        if Instant::now() >= deadline {
            let now = store_now();
            let mut holders: Vec<LockHolder> = records(be, &dir)?
                .into_iter()
                .filter_map(|f| {
                    let reason = staleness(&f, now, &me);
                    f.holder.map(|mut h| {
                        h.stale = reason;
                        h
                    })
                })
                .filter(|h| conflicts(mode, h.mode))
                .collect();
            holders.sort_by_key(|h| h.since);
            return Err(Error::Locked {
                lock: be.display_path(dir.trim_end_matches('/')),
                holders,
            });
        }
        // A random pause, so two runs that backed off together do not meet again.
        let jitter = Duration::from_millis(20 + u64::from(rand_u8()) * 2);
        std::thread::sleep(jitter.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn rand_u8() -> u8 {
    let mut b = [0u8; 1];
    let _ = getrandom::getrandom(&mut b);
    b[0]
}

/// Starts the thread that rewrites the heartbeat every `ttl / 3` until the sender is dropped.
fn start_heartbeat(
    backend: Arc<dyn Backend>,
    alive_key: String,
    claim_key: String,
    ttl: Duration,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let beat = move || {
        if let Err(e) = backend.put(&alive_key, b"alive") {
            tracing::warn!(lock = %claim_key, error = %e, "could not renew the lock heartbeat");
        }
        // A claim removed by another run (this one was judged stale: paused, or cut off from
        // the store for longer than its ttl) means the lock is no longer ours: say so loudly.
        if let Ok(None) = backend.head(&claim_key) {
            tracing::error!(lock = %claim_key, "this run's lock claim was removed by another run (judged stale); the lock is no longer held");
        }
    };
    beat();
    let period = (ttl / 3).max(Duration::from_millis(200));
    let handle = std::thread::Builder::new()
        .name("safekeeping-lock".into())
        .spawn(move || loop {
            match rx.recv_timeout(period) {
                Err(mpsc::RecvTimeoutError::Timeout) => beat(),
                _ => return,
            }
        })
        .expect("spawn lock heartbeat thread");
    (tx, handle)
}

/// A shared or exclusive lock on a repository; released on drop.
///
/// A reader of a repository that cannot be written (a read-only mount, a snapshot of the
/// backup volume, read-only credentials) gets a shared lock that is **not held**
/// ([`RepositoryLock::is_held`]; see [`crate::Repository::lock_shared_for_reading`]): no lock
/// object could be written there. It lets restore, export and check read; nothing that writes
/// accepts it.
#[derive(Debug)]
pub struct RepositoryLock {
    mode: LockMode,
    repository_id: uuid::Uuid,
    /// `Err`: not held, because the repository cannot be written (the reason).
    held: std::result::Result<Held, String>,
}

impl RepositoryLock {
    pub(crate) fn acquire(
        backend: &Arc<dyn Backend>,
        repository_id: uuid::Uuid,
        mode: LockMode,
        wait: Duration,
        settings: LockSettings,
    ) -> Result<Self> {
        let held = acquire(backend, "repository", mode, None, wait, settings)?;
        Ok(Self {
            mode,
            repository_id,
            held: Ok(held),
        })
    }

    /// Takes a [`LockMode::Pin`] record keeping `pin`'s generation.
    pub(crate) fn acquire_pin(
        backend: &Arc<dyn Backend>,
        repository_id: uuid::Uuid,
        pin: PinnedGeneration,
        wait: Duration,
        settings: LockSettings,
    ) -> Result<Self> {
        let held = acquire(
            backend,
            "repository",
            LockMode::Pin,
            Some(pin),
            wait,
            settings,
        )?;
        Ok(Self {
            mode: LockMode::Pin,
            repository_id,
            held: Ok(held),
        })
    }

    /// A shared lock that is not held: the repository cannot be written, so no lock object
    /// can be recorded there (`reason` says why).
    pub(crate) fn not_held(repository_id: uuid::Uuid, reason: String) -> Self {
        Self {
            mode: LockMode::Shared,
            repository_id,
            held: Err(reason),
        }
    }

    /// False for the lock of a read-only repository, which could not be recorded: others
    /// (a gc, prune or delete elsewhere) do not see this reader.
    pub fn is_held(&self) -> bool {
        self.held.is_ok()
    }

    /// Why the lock is not held (a read-only repository), if it is not.
    pub fn not_held_reason(&self) -> Option<&str> {
        self.held.as_ref().err().map(String::as_str)
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The id of the run holding this lock (its claim's name): a backup writes it into the
    /// description of the snapshots it takes, so that a later run can tell whether the run
    /// that took a snapshot still holds this repository's lock ([`crate::Repository::live_runs`]).
    /// Empty when the lock is not held (a read-only repository).
    pub fn run_id(&self) -> &str {
        match &self.held {
            Ok(h) => &h.run_id,
            Err(_) => "",
        }
    }

    /// Stale holder records found (and removed) when this lock was taken.
    pub fn stale_records(&self) -> &[LockHolder] {
        match &self.held {
            Ok(h) => &h.stale,
            Err(_) => &[],
        }
    }

    /// Checks that this is a lock of `repository_id`, held or not: enough for reading.
    pub(crate) fn require_for_reading(
        &self,
        repository_id: uuid::Uuid,
        operation: &'static str,
    ) -> Result<()> {
        if self.repository_id != repository_id {
            return Err(Error::LockRequired {
                operation,
                needed: "a lock of this repository",
            });
        }
        Ok(())
    }

    /// Checks that this is a held lock of `repository_id`, exclusive if `exclusive`: what
    /// every operation that writes needs.
    pub(crate) fn require(
        &self,
        repository_id: uuid::Uuid,
        operation: &'static str,
        exclusive: bool,
    ) -> Result<()> {
        self.require_for_reading(repository_id, operation)?;
        if self.held.is_err() {
            return Err(Error::LockRequired {
                operation,
                needed: "a lock recorded in the repository (it is read-only here)",
            });
        }
        if exclusive && self.mode != LockMode::Exclusive {
            return Err(Error::LockRequired {
                operation,
                needed: "the exclusive repository lock",
            });
        }
        Ok(())
    }
}

/// The lock that keeps two backups of one target from overlapping; released on drop.
#[derive(Debug)]
pub struct TargetLock {
    key: TargetKey,
    repository_id: uuid::Uuid,
    // Shared by [`TargetLock::share`]: the lock is released when the last share is dropped.
    held: Arc<Held>,
}

impl TargetLock {
    pub(crate) fn acquire(
        backend: &Arc<dyn Backend>,
        repository_id: uuid::Uuid,
        key: &TargetKey,
        wait: Duration,
        settings: LockSettings,
    ) -> Result<Self> {
        let held = acquire(
            backend,
            &format!("target-{key}"),
            LockMode::Exclusive,
            None,
            wait,
            settings,
        )?;
        Ok(Self {
            key: key.clone(),
            repository_id,
            held: Arc::new(held),
        })
    }

    /// A second handle on the same held lock; the lock is released when the last handle is
    /// dropped. A backup hands one to the generation writer (which drops it at commit) and
    /// keeps the other until its snapshot is removed, so that no other backup of the target
    /// starts while that snapshot still exists.
    pub fn share(&self) -> TargetLock {
        TargetLock {
            key: self.key.clone(),
            repository_id: self.repository_id,
            held: self.held.clone(),
        }
    }

    /// The target this lock is for.
    pub fn key(&self) -> &TargetKey {
        &self.key
    }

    pub(crate) fn repository_id(&self) -> uuid::Uuid {
        self.repository_id
    }

    /// Stale holder records found (and removed) when this lock was taken.
    pub fn stale_records(&self) -> &[LockHolder] {
        &self.held.stale
    }
}

/// The lock serialising key changes (`locks/keys/`); released on drop.
#[derive(Debug)]
pub(crate) struct KeysLock {
    _held: Held,
}

impl KeysLock {
    pub(crate) fn acquire(backend: &Arc<dyn Backend>, settings: LockSettings) -> Result<Self> {
        Ok(Self {
            _held: acquire(
                backend,
                "keys",
                LockMode::Exclusive,
                None,
                Duration::from_secs(60),
                settings,
            )?,
        })
    }
}

/// The live (not stale) holders of every lock of the repository (`locks/**`) except the run
/// `own_run`: gc, holding the exclusive lock, asks whether any writer it can see is alive.
/// Records are described as `<lock>/<run id>` (with the holder when it is readable).
pub(crate) fn other_live_holders(backend: &dyn Backend, own_run: &str) -> Result<Vec<String>> {
    let dir = format!("{}/", crate::format::LOCKS_DIR);
    let found = records(backend, &dir)?;
    if found.iter().all(|f| f.run_id == own_run) {
        return Ok(Vec::new());
    }
    let now = backend
        .store_time()
        .map_err(store_err(backend, "read the clock of", &dir))?;
    let me = machine_identity();
    Ok(found
        .iter()
        .filter(|f| f.run_id != own_run && staleness(f, now, &me).is_none())
        .map(|f| {
            let lock = f
                .claim
                .as_ref()
                .or(f.alive.as_ref())
                .map(|o| {
                    o.key
                        .rsplit_once('/')
                        .map(|(d, _)| d.to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            match &f.holder {
                Some(h) => format!("{lock}/{}: {h}", f.run_id),
                None => format!("{lock}/{}", f.run_id),
            }
        })
        .collect())
}

/// Whether a live (not stale) holder of the lock `name` exists: gc and reindex ask this about
/// a target's lock before treating its incomplete generation as abandoned.
pub(crate) fn is_held(backend: &dyn Backend, name: &str) -> Result<bool> {
    let dir = format!("{}/{name}/", crate::format::LOCKS_DIR);
    let found = records(backend, &dir)?;
    if found.is_empty() {
        return Ok(false);
    }
    let now = backend
        .store_time()
        .map_err(store_err(backend, "read the clock of", &dir))?;
    let me = machine_identity();
    Ok(found.iter().any(|f| staleness(f, now, &me).is_none()))
}

/// The live (not stale) holders of the lock `name`: what [`crate::Repository::live_runs`]
/// answers for the repository lock.
pub(crate) fn live_holders(backend: &dyn Backend, name: &str) -> Result<Vec<LockHolder>> {
    let dir = format!("{}/{name}/", crate::format::LOCKS_DIR);
    let found = records(backend, &dir)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let now = backend
        .store_time()
        .map_err(store_err(backend, "read the clock of", &dir))?;
    let me = machine_identity();
    Ok(found
        .into_iter()
        .filter(|f| staleness(f, now, &me).is_none())
        .filter_map(|f| f.holder)
        .collect())
}

/// The live (not stale) pins of the repository lock: what prune, delete and gc keep.
pub(crate) fn live_pins(backend: &dyn Backend) -> Result<Vec<LockHolder>> {
    Ok(live_holders(backend, "repository")?
        .into_iter()
        .filter(|h| h.mode == LockMode::Pin && h.pin.is_some())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_waits_for_exclusive_holders_but_none_waits_for_a_pin() {
        use LockMode::{Exclusive, Pin, Shared};
        assert!(
            conflicts(Pin, Exclusive),
            "no pin is taken during a prune or gc"
        );
        assert!(
            !conflicts(Exclusive, Pin),
            "prune and gc run while a disk is served"
        );
        assert!(
            !conflicts(Shared, Pin),
            "backups run while a disk is served"
        );
        assert!(!conflicts(Pin, Shared));
        assert!(!conflicts(Pin, Pin));
        assert!(conflicts(Exclusive, Shared) && conflicts(Shared, Exclusive));
        assert!(conflicts(Exclusive, Exclusive) && !conflicts(Shared, Shared));
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn identity_needs_no_machine_id() {
        // A fresh container has a boot id and a pid namespace but no machine id: it must still
        // have an identity, or a killed run's lock would only expire by its time-to-live.
        let id = identity_from(s("boot-a"), s("pid:[1]"), None);
        assert_eq!(id.len(), 32);
        assert_ne!(
            id,
            identity_from(s("boot-a"), s("pid:[2]"), None),
            "pid namespaces"
        );
        assert_ne!(id, identity_from(s("boot-b"), s("pid:[1]"), None), "boots");
        assert_ne!(
            id,
            identity_from(s("boot-a"), s("pid:[1]"), s("m")),
            "machine ids"
        );
        assert_eq!(id, identity_from(s("boot-a"), s("pid:[1]"), None), "stable");
        assert_eq!(identity_from(None, s("pid:[1]"), s("m")), "");
    }

    #[test]
    fn this_machine_has_an_identity() {
        if std::path::Path::new("/proc/sys/kernel/random/boot_id").exists() {
            assert_eq!(machine_identity().len(), 32);
        }
    }
}
