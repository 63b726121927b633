//! Changed block tracking: `QueryChangedDiskAreas`.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// One changed (or, for change id `*`, allocated) extent of a disk, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskArea {
    /// Offset in bytes.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
}

/// The answer to one `QueryChangedDiskAreas` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChangeInfo {
    /// Where the range the answer covers starts.
    pub start_offset: u64,
    /// How long the covered range is (the server may cover less than the whole disk).
    pub length: u64,
    /// The changed areas within the covered range.
    pub changed_areas: Vec<DiskArea>,
}

impl DiskChangeInfo {
    /// Reads a `DiskChangeInfo` element.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] when offsets are missing or malformed.
    pub fn from_element(e: &Element) -> Result<DiskChangeInfo> {
        let num = |e: &Element, p: &str| -> Result<u64> {
            e.parse_at::<u64>(p)
                .ok_or_else(|| Error::Unexpected(format!("DiskChangeInfo lacks a valid {p}")))
        };
        Ok(DiskChangeInfo {
            start_offset: num(e, "startOffset")?,
            length: num(e, "length")?,
            changed_areas: e
                .all("changedArea")
                .map(|a| {
                    Ok(DiskArea {
                        start: num(a, "start")?,
                        length: num(a, "length")?,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

impl Client {
    /// One `QueryChangedDiskAreas` call for disk `device_key` of `vm` as of `snapshot`.
    /// `change_id` is `*` for all allocated areas, or a disk's earlier `changeId`.
    ///
    /// # Errors
    ///
    /// Faults: `FileFault`/`InvalidArgument` when CBT is off or the change id is unknown.
    pub async fn query_changed_disk_areas(
        &self,
        vm: &MoRef,
        snapshot: Option<&MoRef>,
        device_key: i32,
        start_offset: u64,
        change_id: &str,
    ) -> Result<DiskChangeInfo> {
        let body = Element::vim("QueryChangedDiskAreas")
            .child(vm.to_element("_this"))
            .opt_child(snapshot.map(|s| s.to_element("snapshot")))
            .text_child("deviceKey", device_key.to_string())
            .text_child("startOffset", start_offset.to_string())
            .text_child("changeId", change_id);
        let response = self.call(body).await?;
        let info = response
            .get("returnval")
            .ok_or_else(|| Error::Unexpected("QueryChangedDiskAreas returned nothing".into()))?;
        DiskChangeInfo::from_element(info)
    }

    /// All changed areas of a disk of `capacity` bytes, calling `QueryChangedDiskAreas` until
    /// the whole disk is covered. Areas are in order, clipped to the capacity.
    ///
    /// # Errors
    ///
    /// As [`Client::query_changed_disk_areas`], and [`Error::Unexpected`] when the server makes
    /// no progress.
    pub async fn changed_disk_areas(
        &self,
        vm: &MoRef,
        snapshot: Option<&MoRef>,
        device_key: i32,
        capacity: u64,
        change_id: &str,
    ) -> Result<Vec<DiskArea>> {
        collect_areas(capacity, |offset| {
            self.query_changed_disk_areas(vm, snapshot, device_key, offset, change_id)
        })
        .await
    }
}

/// Loops over a disk of `capacity` bytes with `query(offset)`; shared by VMs and FCDs.
pub(crate) async fn collect_areas<F, Fut>(capacity: u64, mut query: F) -> Result<Vec<DiskArea>>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<DiskChangeInfo>>,
{
    let mut offset = 0u64;
    let mut areas: Vec<DiskArea> = Vec::new();
    while offset < capacity {
        let info = query(offset).await?;
        let end = info.start_offset.saturating_add(info.length);
        if end <= offset {
            return Err(Error::Unexpected(format!(
                "QueryChangedDiskAreas made no progress at offset {offset} (answered {}+{})",
                info.start_offset, info.length
            )));
        }
        for a in info.changed_areas {
            let start = a.start.max(offset);
            let stop = a.start.saturating_add(a.length).min(capacity);
            if stop > start {
                areas.push(DiskArea {
                    start,
                    length: stop - start,
                });
            }
        }
        offset = end;
    }
    areas.sort_by_key(|a| a.start);
    Ok(areas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loops_until_covered_and_clips() {
        let calls = std::cell::RefCell::new(Vec::new());
        let areas = collect_areas(300, |offset| {
            calls.borrow_mut().push(offset);
            let info = DiskChangeInfo {
                start_offset: offset,
                length: 128,
                changed_areas: vec![DiskArea {
                    start: offset + 64,
                    length: 128,
                }],
            };
            async move { Ok(info) }
        })
        .await
        .unwrap();
        assert_eq!(*calls.borrow(), vec![0, 128, 256]);
        assert_eq!(
            areas.last().unwrap().start + areas.last().unwrap().length,
            300
        );
        assert_eq!(
            areas[0],
            DiskArea {
                start: 64,
                length: 128
            }
        );
    }

    #[tokio::test]
    async fn no_progress_is_an_error() {
        let r = collect_areas(100, |_| async {
            Ok(DiskChangeInfo {
                start_offset: 0,
                length: 0,
                changed_areas: vec![],
            })
        })
        .await;
        assert!(matches!(r, Err(Error::Unexpected(m)) if m.contains("no progress")));
    }
}
