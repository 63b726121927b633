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
    /// the whole disk is covered. Areas are in order, without overlap, inside the disk.
    ///
    /// # Errors
    ///
    /// As [`Client::query_changed_disk_areas`] (a refused change id is a fault: fall back to a
    /// full read), and [`Error::ChangedAreas`] when the answers do not tile the disk exactly
    /// (a gap, an overlap, an area outside the disk or the reply, no progress): that answer
    /// cannot be trusted, and the backup of the disk must fail rather than inherit stale data.
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

/// What is wrong with a `QueryChangedDiskAreas` answer that cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangedAreasProblem {
    /// The reply starts after the offset asked for: the bytes in between would silently count
    /// as unchanged.
    Gap,
    /// The reply starts before the offset asked for, or an area overlaps or precedes the one
    /// before it.
    Overlap,
    /// An area reaches beyond the disk's capacity.
    OutsideCapacity,
    /// An area lies outside the range the reply says it covers.
    OutsideReply,
    /// The reply covers nothing, so the loop would never end.
    NoProgress,
}

impl std::fmt::Display for ChangedAreasProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChangedAreasProblem::Gap => "the reply leaves a gap",
            ChangedAreasProblem::Overlap => "areas overlap",
            ChangedAreasProblem::OutsideCapacity => "an area lies outside the disk",
            ChangedAreasProblem::OutsideReply => "an area lies outside the range the reply covers",
            ChangedAreasProblem::NoProgress => "the reply makes no progress",
        })
    }
}

/// A `QueryChangedDiskAreas` answer that does not tile the disk: the incremental it would
/// drive could inherit stale data, so it is refused. Distinct from a refused change id (a
/// fault, after which a full read is right).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "QueryChangedDiskAreas answer refused: {problem} (asked from offset {asked}; reply \
         covers {reply_start}+{reply_length}; area {area:?}; disk capacity {capacity})"
)]
pub struct ChangedAreasError {
    /// What is wrong.
    pub problem: ChangedAreasProblem,
    /// The `startOffset` the client asked for.
    pub asked: u64,
    /// The reply's `startOffset`.
    pub reply_start: u64,
    /// The reply's `length`.
    pub reply_length: u64,
    /// The offending area as `(start, length)`, when an area is at fault.
    pub area: Option<(u64, u64)>,
    /// The disk's capacity in bytes.
    pub capacity: u64,
}

/// Checks one reply to a query from `asked` against the disk's `capacity` and the end of the
/// previous area, returning where the next query starts and the (non-empty) areas in order.
fn check_reply(
    asked: u64,
    capacity: u64,
    info: &DiskChangeInfo,
) -> std::result::Result<(u64, Vec<DiskArea>), ChangedAreasError> {
    let fail = |problem, area: Option<&DiskArea>| ChangedAreasError {
        problem,
        asked,
        reply_start: info.start_offset,
        reply_length: info.length,
        area: area.map(|a| (a.start, a.length)),
        capacity,
    };
    if info.start_offset > asked {
        return Err(fail(ChangedAreasProblem::Gap, None));
    }
    if info.start_offset < asked {
        return Err(fail(ChangedAreasProblem::Overlap, None));
    }
    if info.length == 0 {
        return Err(fail(ChangedAreasProblem::NoProgress, None));
    }
    // A reply may say it covers past the end of the disk; areas may not lie there.
    let reply_end = info.start_offset.saturating_add(info.length);
    let mut previous_end = info.start_offset;
    let mut areas = Vec::with_capacity(info.changed_areas.len());
    for a in &info.changed_areas {
        if a.length == 0 {
            continue;
        }
        let Some(end) = a.start.checked_add(a.length) else {
            return Err(fail(ChangedAreasProblem::OutsideCapacity, Some(a)));
        };
        if a.start < info.start_offset || end > reply_end {
            return Err(fail(ChangedAreasProblem::OutsideReply, Some(a)));
        }
        if end > capacity {
            return Err(fail(ChangedAreasProblem::OutsideCapacity, Some(a)));
        }
        if a.start < previous_end {
            return Err(fail(ChangedAreasProblem::Overlap, Some(a)));
        }
        previous_end = end;
        areas.push(*a);
    }
    Ok((reply_end.min(capacity), areas))
}

/// Loops over a disk of `capacity` bytes with `query(offset)`; shared by VMs and FCDs.
///
/// Each reply must start exactly where the previous one ended, cover something, and hold only
/// sorted, non-overlapping areas inside both the range it covers and the disk: anything else
/// is an [`Error::ChangedAreas`], never a silent gap.
pub(crate) async fn collect_areas<F, Fut>(capacity: u64, mut query: F) -> Result<Vec<DiskArea>>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<DiskChangeInfo>>,
{
    let mut offset = 0u64;
    let mut areas: Vec<DiskArea> = Vec::new();
    while offset < capacity {
        let info = query(offset).await?;
        let (next, found) = check_reply(offset, capacity, &info)?;
        areas.extend(found);
        offset = next;
    }
    Ok(areas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(start: u64, length: u64) -> DiskArea {
        DiskArea { start, length }
    }

    fn reply(start_offset: u64, length: u64, areas: &[(u64, u64)]) -> DiskChangeInfo {
        DiskChangeInfo {
            start_offset,
            length,
            changed_areas: areas.iter().map(|&(s, l)| area(s, l)).collect(),
        }
    }

    #[tokio::test]
    async fn loops_until_covered() {
        let calls = std::cell::RefCell::new(Vec::new());
        let areas = collect_areas(320, |offset| {
            calls.borrow_mut().push(offset);
            // The last reply says it covers up to 384, past the disk's end: allowed.
            let info = reply(offset, 128, &[(offset + 32, 32)]);
            async move { Ok(info) }
        })
        .await
        .unwrap();
        assert_eq!(*calls.borrow(), vec![0, 128, 256]);
        assert_eq!(areas, vec![area(32, 32), area(160, 32), area(288, 32)]);
    }

    async fn one(capacity: u64, info: DiskChangeInfo) -> Result<Vec<DiskArea>> {
        collect_areas(capacity, |_| {
            let i = info.clone();
            async move { Ok(i) }
        })
        .await
    }

    fn problem(r: Result<Vec<DiskArea>>) -> ChangedAreasProblem {
        match r {
            Err(Error::ChangedAreas(e)) => e.problem,
            other => panic!("expected a ChangedAreas error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reply_starting_beyond_the_offset_is_a_gap_not_unchanged_data() {
        // Asked from 0, told about 64..: bytes 0..64 must not count as unchanged.
        let r = one(128, reply(64, 64, &[(64, 8)])).await;
        assert_eq!(problem(r), ChangedAreasProblem::Gap);
    }

    #[tokio::test]
    async fn overlaps_areas_outside_and_stalls_are_errors() {
        use ChangedAreasProblem::*;
        assert_eq!(problem(one(100, reply(0, 0, &[])).await), NoProgress);
        assert_eq!(
            problem(one(100, reply(0, 100, &[(0, 50), (40, 10)])).await),
            Overlap
        );
        assert_eq!(
            problem(one(100, reply(0, 100, &[(50, 10), (0, 10)])).await),
            Overlap
        );
        assert_eq!(
            problem(one(100, reply(0, 50, &[(40, 20)])).await),
            OutsideReply
        );
        assert_eq!(
            problem(one(100, reply(0, 200, &[(90, 20)])).await),
            OutsideCapacity
        );
        assert_eq!(
            problem(one(100, reply(0, 100, &[(u64::MAX, 2)])).await),
            OutsideCapacity
        );
        // A second reply that starts before the first one ended.
        let r = collect_areas(200, |offset| async move {
            Ok(reply(offset.saturating_sub(10), 110, &[]))
        })
        .await;
        assert_eq!(problem(r), Overlap);
        let e = one(128, reply(64, 64, &[])).await.unwrap_err();
        assert!(e.to_string().contains("gap"), "{e}");
        assert!(!e.is_fault(&crate::FaultKind::InvalidArgument));
    }

    #[tokio::test]
    async fn a_reply_may_cover_past_the_end_of_the_disk() {
        let areas = one(100, reply(0, 4096, &[(0, 100)])).await.unwrap();
        assert_eq!(areas, vec![area(0, 100)]);
    }

    proptest::proptest! {
        /// Random replies: the areas returned always lie inside the disk, in order and without
        /// overlap, and are exactly the reply's areas; any reply that does not tile (gap,
        /// overlap, outside, stall) is refused with a ChangedAreas error, never accepted.
        #[test]
        fn random_replies_are_accepted_only_when_they_tile(
            capacity in 1u64..4096,
            steps in proptest::collection::vec(
                (0u64..3, -3i64..4, 0u64..2048,
                 proptest::collection::vec((0u64..2048, 0u64..256), 0..5)),
                1..8),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let served = std::cell::RefCell::new(Vec::<DiskChangeInfo>::new());
            let result = rt.block_on(collect_areas(capacity, |offset| {
                let n = served.borrow().len();
                let (kind, skew, len, areas) = &steps[n.min(steps.len() - 1)];
                // kind 0: start exactly at the offset; 1: skewed by `skew`; 2: areas made
                // relative to the offset (mostly valid).
                let start = match kind {
                    1 => offset.saturating_add_signed(*skew),
                    _ => offset,
                };
                let areas: Vec<(u64, u64)> = match kind {
                    2 => areas.iter().map(|&(s, l)| (offset + s % (len + 1), l)).collect(),
                    _ => areas.clone(),
                };
                let info = reply(start, *len, &areas);
                served.borrow_mut().push(info.clone());
                let stop = n >= 40;
                async move {
                    if stop {
                        Err(Error::Unexpected("too many calls".into()))
                    } else {
                        Ok(info)
                    }
                }
            }));
            let served = served.into_inner();
            // Re-check by an independent oracle: walk the replies served.
            let mut offset = 0u64;
            let mut expected = Vec::new();
            let mut valid = true;
            for info in &served {
                if offset >= capacity { break; }
                let end = info.start_offset.saturating_add(info.length);
                let mut prev = info.start_offset;
                let mut ok = info.start_offset == offset && info.length > 0;
                for a in info.changed_areas.iter().filter(|a| a.length > 0) {
                    let a_end = a.start.checked_add(a.length);
                    ok &= a.start >= prev
                        && a_end.is_some_and(|e| e <= end && e <= capacity);
                    prev = a_end.unwrap_or(u64::MAX);
                    if ok { expected.push(*a); }
                }
                if !ok { valid = false; break; }
                offset = end.min(capacity);
            }
            match result {
                Ok(areas) => {
                    proptest::prop_assert!(valid);
                    proptest::prop_assert!(offset >= capacity);
                    proptest::prop_assert_eq!(&areas, &expected);
                    let mut prev = 0;
                    for a in &areas {
                        proptest::prop_assert!(a.start >= prev && a.start + a.length <= capacity);
                        prev = a.start + a.length;
                    }
                }
                Err(Error::ChangedAreas(_)) => proptest::prop_assert!(!valid),
                Err(Error::Unexpected(m)) => proptest::prop_assert!(m.contains("too many calls")),
                Err(e) => proptest::prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
