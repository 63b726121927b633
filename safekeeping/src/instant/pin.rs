//! Choosing and pinning the generation a long reader (`serve`, `files`) reads.

use repository_format::{Manifest, Repository, RepositoryLock, TargetKey};

use crate::config::Config;
use crate::error::Result;
use crate::repo;

/// Picks the generation (`wanted`, or the latest successful one), pins it
/// ([`Repository::pin_generation`]) and reads its manifest again under the pin: a prune
/// that deleted it between the choice and the pin is then a clear "does not exist", never a
/// reader of chunks that gc is freeing. Keep the returned lock for as long as the generation
/// is read.
///
/// # Errors
/// Unknown generation, no successful generation, the lock (an exclusive holder that does not
/// finish within the configured wait).
pub fn pick_and_pin(
    r: &Repository,
    config: &Config,
    key: &TargetKey,
    wanted: Option<u64>,
) -> Result<(RepositoryLock, Manifest)> {
    let chosen = repo::pick_generation(r, key, wanted)?.generation;
    let pin = r.pin_generation(key, chosen, repo::lock_wait(config))?;
    let m = repo::pick_generation(r, key, Some(chosen.0))?;
    tracing::debug!(target = %key, generation = chosen.0, run = pin.run_id(), "generation pinned");
    Ok((pin, m))
}
