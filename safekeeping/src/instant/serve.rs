//! `serve`: one disk of a generation as an NBD export until Ctrl-C or SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nbd_server::{BlockDevice, Export, ListenAddress, Server};
use repository_format::{CacheOptions, CachedDiskReader};
use serde::Serialize;

use crate::blocking::blocking;
use crate::cancel::Cancel;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::human_bytes;
use crate::instant::device::RepositoryDisk;
use crate::instant::overlay::OverlayDisk;
use crate::instant::pin;
use crate::repo;
use crate::target::Target;

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The target.
    pub target: Target,
    /// Generation (default: the latest successful one).
    pub generation: Option<u64>,
    /// Disk number (from 0, as `show` lists them).
    pub disk: u32,
    /// Where clients connect.
    pub listen: ListenAddress,
    /// Accept a non-loopback TCP address.
    pub allow_remote: bool,
    /// Copy-on-write file taking the clients' writes (none: read-only export).
    pub overlay: Option<PathBuf>,
    /// Chunk cache and read-ahead.
    pub cache: CacheOptions,
}

/// What a finished `serve` reports.
#[derive(Debug, Serialize)]
pub struct ServeReport {
    /// The target as given.
    pub target: String,
    /// Generation served.
    pub generation: u64,
    /// Disk number.
    pub disk: u32,
    /// Disk size in bytes.
    pub capacity: u64,
    /// The NBD URI clients used.
    pub uri: String,
    /// The overlay file, if writes were accepted.
    pub overlay: Option<PathBuf>,
    /// Chunks read from the repository while serving.
    pub chunks_loaded: u64,
}

/// Refuses a TCP address that other machines can reach unless `allow_remote`: NBD has no
/// authentication, and the disk may hold anything.
///
/// # Errors
/// [`Error::Other`] naming the address.
pub fn check_listen(listen: &ListenAddress, allow_remote: bool) -> Result<()> {
    if let ListenAddress::Tcp(a) = listen {
        let loopback = match a.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => ip.is_loopback(),
        };
        if !loopback && !allow_remote {
            return Err(Error::Other(format!(
                "{a} is reachable from other machines and NBD has no authentication: listen on 127.0.0.1, ::1 or a unix socket, or pass --allow-remote"
            )));
        }
    }
    Ok(())
}

/// Serves until `cancel` fires (Ctrl-C or SIGTERM), then closes every connection, flushes
/// the overlay, removes the socket and releases the pin of the generation.
///
/// # Errors
/// Unknown target, generation or disk; the lock; the listen address; the overlay file.
pub async fn run(config: &Config, opts: ServeOptions, cancel: Cancel) -> Result<ServeReport> {
    check_listen(&opts.listen, opts.allow_remote)?;
    let cfg = config.clone();
    let o = opts.clone();
    // Everything that touches the repository blocks: do it off the runtime's workers.
    let (lock, reader, generation, capacity) = blocking(move || {
        let r = repo::open(&cfg)?;
        let (summary, _) = repo::find_configured_target(&r, &o.target, &cfg)?;
        // Pinned: backups, prune and gc keep running; prune keeps this generation and gc its
        // chunks until the serve ends (see `repository_format::lock`).
        let (lock, m) = pin::pick_and_pin(&r, &cfg, &summary.key, o.generation)?;
        let disk = m.disks.get(o.disk as usize).ok_or_else(|| {
            Error::NotInRepository(format!(
                "generation {} of {} has {} disks (numbered from 0), no disk {}",
                m.generation,
                o.target,
                m.disks.len(),
                o.disk
            ))
        })?;
        let reader =
            CachedDiskReader::open(&r, &summary.key, m.generation, disk.disk.key, o.cache)?;
        Ok((lock, reader, m.generation.0, disk.disk.capacity))
    })
    .await?;
    let chunk_size = reader.chunk_size();
    let name = format!("{}-gen{}-disk{}", opts.target, generation, opts.disk);
    let base = Arc::new(RepositoryDisk::new(reader));
    let served = serve_until_stopped(
        &opts,
        base.clone(),
        name,
        generation,
        capacity,
        chunk_size,
        cancel,
    )
    .await;
    let chunks_loaded = base.reader().chunks_loaded();
    // Off the async threads: the repository handles may own a runtime (S3) and the lock a
    // heartbeat thread, neither of which may be dropped in async code.
    let _ = tokio::task::spawn_blocking(move || drop((base, lock))).await;
    let uri = served?;
    Ok(ServeReport {
        target: opts.target.to_string(),
        generation,
        disk: opts.disk,
        capacity,
        uri,
        overlay: opts.overlay,
        chunks_loaded,
    })
}

/// Binds, opens the overlay, serves until `cancel`, flushes the overlay; returns the URI.
async fn serve_until_stopped(
    opts: &ServeOptions,
    base: Arc<RepositoryDisk>,
    name: String,
    generation: u64,
    capacity: u64,
    chunk_size: u32,
    cancel: Cancel,
) -> Result<String> {
    let server = Server::bind(&opts.listen)
        .map_err(|e| Error::io(format!("listen on {}", opts.listen), e))?;
    let (device, overlay): (Arc<dyn BlockDevice>, Option<Arc<OverlayDisk>>) = match &opts.overlay {
        None => (base, None),
        Some(path) => {
            let (p, n) = (path.clone(), name.clone());
            let o = Arc::new(blocking(move || OverlayDisk::create(base, &p, &n)).await?);
            (o.clone(), Some(o))
        }
    };
    let uri = server.address().uri();
    let export = Export {
        name,
        description: format!(
            "disk {} of generation {generation} of {}",
            opts.disk, opts.target
        ),
        preferred_block_size: chunk_size,
    };
    eprintln!(
        "serving disk {} ({}) of generation {generation} of {} at {uri} ({}); Ctrl-C stops",
        opts.disk,
        human_bytes(capacity),
        opts.target,
        match &opts.overlay {
            Some(p) => format!("writes go to {}", p.display()),
            None => "read-only".into(),
        }
    );
    tracing::info!(uri = %uri, generation, disk = opts.disk, "serving");
    cancel.on_signals();
    let c = cancel.clone();
    let served = server
        .run(device, export, async move { c.cancelled().await })
        .await;
    if let Some(o) = overlay {
        blocking(move || o.flush_all()).await?;
    }
    served.map_err(|e| Error::io("accept NBD clients", e))?;
    Ok(uri)
}
