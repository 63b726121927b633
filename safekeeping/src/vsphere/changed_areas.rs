//! Changed Block Tracking: switching it on, and asking which areas of a disk to read —
//! every allocated area (`*`) for a full backup, or the areas changed since the previous
//! generation's change id. The repository rounds the areas out to whole chunks.

use repository_format::Area;
use vim_client::MoRef;

use crate::error::Result;
use crate::vsphere::Vcenter;

/// The areas of disk `device_key` (of `capacity` bytes) in `snapshot` changed since `since`.
///
/// # Errors
/// vCenter faults, for example when the change id is no longer valid.
pub async fn query(
    vc: &Vcenter,
    vm: &MoRef,
    snapshot: &MoRef,
    device_key: i32,
    capacity: u64,
    since: &str,
) -> Result<Vec<Area>> {
    let areas = vc
        .client
        .changed_disk_areas(vm, Some(snapshot), device_key, capacity, since)
        .await?;
    Ok(areas
        .into_iter()
        .map(|a| Area::new(a.start, a.length))
        .collect())
}

/// Total bytes of `areas`.
pub fn total(areas: &[Area]) -> u64 {
    areas.iter().map(|a| a.len).sum()
}

/// Turns change tracking on when it is off, returning whether it did.
///
/// # Errors
/// vCenter faults.
pub async fn ensure_enabled(
    vc: &Vcenter,
    vm: &MoRef,
    enabled_now: bool,
    name: &str,
) -> Result<bool> {
    if enabled_now {
        return Ok(false);
    }
    tracing::info!(
        vm = %name,
        "changed block tracking is off; enabling it (this backup reads every allocated area)"
    );
    vc.client.enable_change_tracking(vm, true).await?;
    Ok(true)
}
