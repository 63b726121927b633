//! Changed Block Tracking: which byte ranges of a disk to read. vCenter's
//! QueryChangedDiskAreas answers in pieces (each covering `startOffset..startOffset+length`);
//! the areas are merged here and rounded out to the repository's chunk boundaries, because the
//! repository replaces whole chunks.

use serde::Serialize;
use vim_client::xml::Element;
use vim_client::MoRef;

use crate::error::{Error, Result};
use crate::vcenter::Vcenter;

/// One changed byte range reported by CBT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Area {
    /// Byte offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
}

impl Area {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.length)
    }
}

/// The areas of one disk to read, sorted, disjoint and chunk-aligned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangedAreas {
    areas: Vec<Area>,
}

impl ChangedAreas {
    /// Merges `raw` (in any order, possibly overlapping), rounds each area out to `chunk_size`
    /// boundaries and clips to `capacity`.
    pub fn aligned(raw: &[Area], chunk_size: u64, capacity: u64) -> ChangedAreas {
        assert!(chunk_size > 0, "chunk size is positive");
        let mut rounded: Vec<Area> = raw
            .iter()
            .filter(|a| a.length > 0 && a.start < capacity)
            .map(|a| {
                let start = a.start / chunk_size * chunk_size;
                let end = a.end().min(capacity).div_ceil(chunk_size) * chunk_size;
                let end = end.min(capacity);
                Area {
                    start,
                    length: end - start,
                }
            })
            .collect();
        rounded.sort_by_key(|a| a.start);
        let mut areas: Vec<Area> = Vec::with_capacity(rounded.len());
        for a in rounded {
            match areas.last_mut() {
                Some(last) if a.start <= last.end() => {
                    let end = last.end().max(a.end());
                    last.length = end - last.start;
                }
                _ => areas.push(a),
            }
        }
        ChangedAreas { areas }
    }

    /// The whole disk as one area (a full read).
    pub fn whole(capacity: u64) -> ChangedAreas {
        let areas = if capacity == 0 {
            Vec::new()
        } else {
            vec![Area {
                start: 0,
                length: capacity,
            }]
        };
        ChangedAreas { areas }
    }

    /// The areas.
    pub fn areas(&self) -> &[Area] {
        &self.areas
    }

    /// Total bytes to read.
    pub fn bytes(&self) -> u64 {
        self.areas.iter().map(|a| a.length).sum()
    }
}

/// Asks QueryChangedDiskAreas for every area of disk `device_key` in `snapshot` changed since
/// `since` (`*` for every allocated area), following the answers until `capacity` is covered.
///
/// # Errors
/// vCenter faults (for example when the change id is no longer valid) and answers that do not
/// make progress.
pub async fn query(
    vc: &Vcenter,
    vm: &MoRef,
    snapshot: &MoRef,
    device_key: i32,
    capacity: u64,
    since: &str,
) -> Result<Vec<Area>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    while start < capacity {
        let info = vc
            .call(
                "QueryChangedDiskAreas",
                vm,
                vec![
                    snapshot.to_element("snapshot"),
                    Element::vim_text("deviceKey", device_key.to_string()),
                    Element::vim_text("startOffset", start.to_string()),
                    Element::vim_text("changeId", since),
                ],
            )
            .await?
            .ok_or_else(|| Error::Other("QueryChangedDiskAreas returned nothing".into()))?;
        let piece_start: u64 = info.parse_at("startOffset").unwrap_or(start);
        let piece_len: u64 = info.parse_at("length").unwrap_or(0);
        for a in info.all("changedArea") {
            let (Some(s), Some(l)) = (a.parse_at::<u64>("start"), a.parse_at::<u64>("length"))
            else {
                return Err(Error::Other(
                    "QueryChangedDiskAreas returned a malformed area".into(),
                ));
            };
            out.push(Area {
                start: s,
                length: l,
            });
        }
        let next = piece_start.saturating_add(piece_len);
        if next <= start {
            return Err(Error::Other(format!(
                "QueryChangedDiskAreas made no progress at offset {start} of disk {device_key}"
            )));
        }
        start = next;
    }
    Ok(out)
}

/// Turns change tracking on when it is off (ReconfigVM_Task), returning whether it did.
///
/// # Errors
/// vCenter faults.
pub async fn ensure_enabled(vc: &Vcenter, vm: &MoRef, name: &str) -> Result<bool> {
    let o = vc
        .client
        .object_properties(vm, &["config.changeTrackingEnabled"])
        .await?;
    if o.text("config.changeTrackingEnabled").map(str::trim) == Some("true") {
        return Ok(false);
    }
    tracing::info!(vm = %name, "changed block tracking is off; enabling it (this backup reads every allocated area)");
    vc.task(
        "ReconfigVM_Task",
        vm,
        vec![Element::vim("spec").text_child("changeTrackingEnabled", "true")],
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(start: u64, length: u64) -> Area {
        Area { start, length }
    }

    #[test]
    fn rounds_out_and_merges() {
        let c = ChangedAreas::aligned(&[a(4096, 512), a(1024, 10), a(3000, 2000)], 1024, 1 << 20);
        assert_eq!(c.areas(), &[a(1024, 4096)]);
        assert_eq!(c.bytes(), 4096);
    }

    #[test]
    fn adjacent_chunks_merge_and_clip_to_capacity() {
        let c = ChangedAreas::aligned(&[a(0, 100), a(1024, 1), a(9000, 5000)], 1024, 10_000);
        assert_eq!(c.areas(), &[a(0, 2048), a(8192, 1808)]);
    }

    #[test]
    fn drops_empty_and_out_of_range() {
        let c = ChangedAreas::aligned(&[a(5, 0), a(20_000, 10)], 1024, 10_000);
        assert!(c.areas().is_empty());
        assert_eq!(ChangedAreas::whole(0).bytes(), 0);
        assert_eq!(ChangedAreas::whole(7).areas(), &[a(0, 7)]);
    }

    #[test]
    fn every_changed_byte_stays_covered() {
        let raw = [a(10, 7000), a(70_000, 1), a(65_535, 2)];
        let c = ChangedAreas::aligned(&raw, 4096, 100_000);
        for r in raw {
            for b in [r.start, r.end() - 1] {
                assert!(c.areas().iter().any(|x| x.start <= b && b < x.end()), "{b}");
            }
        }
        for x in c.areas() {
            assert_eq!(x.start % 4096, 0);
        }
    }
}
