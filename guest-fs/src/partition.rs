//! GPT and MBR partition tables, numbered as Linux numbers them: GPT entries by their slot
//! (1-based), MBR primaries 1–4 by slot and logical partitions from 5 in chain order. A disk
//! without a table is one "partition" 0 covering the whole disk.
//!
//! Parsed here rather than with a crate: both formats are a few fixed structures, the crates
//! want a `Write` handle for a read-only job, and every number read is range-checked against
//! the disk so a damaged table is an error, never a panic. 512-byte sectors (what VMware
//! virtual disks present).

use crate::disk::{Disk, Window};
use crate::error::{Error, Result};
use crate::probe::{is_fs_boot_sector, probe, Content};

const SECTOR: u64 = 512;
/// Logical partitions followed at most (Linux stops far earlier in practice).
const MAX_LOGICAL: usize = 256;

/// The partition table kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// GUID partition table.
    Gpt,
    /// MS-DOS master boot record.
    Mbr,
    /// No table: a file system on the whole disk (or nothing recognised).
    None,
}

impl TableKind {
    /// Name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
            TableKind::None => "none",
        }
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Linux's number (`sda1` is 1); 0 for a whole disk without a table.
    pub number: u32,
    /// Byte offset.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// The table's type: a GPT type name or GUID, or the MBR type byte as `0x83 (Linux)`.
    pub type_name: String,
    /// GPT partition name (empty for MBR).
    pub label: String,
    /// What the partition holds.
    pub content: Content,
}

/// A disk's partition table.
#[derive(Debug, Clone)]
pub struct PartitionTable {
    /// Its kind.
    pub kind: TableKind,
    /// Its partitions in number order.
    pub partitions: Vec<Partition>,
}

impl PartitionTable {
    /// Reads the table of `disk` and probes what every partition holds.
    ///
    /// # Errors
    /// A table that points outside the disk or fails its checksums; a read error.
    pub fn read(disk: &Disk) -> Result<PartitionTable> {
        let size = disk.size();
        let mut s0 = vec![0u8; 512];
        let mut s1 = vec![0u8; 512];
        if size >= 1024 {
            disk.read_at(0, &mut s0)
                .map_err(|e| Error::io("read sector 0", e))?;
            disk.read_at(512, &mut s1)
                .map_err(|e| Error::io("read sector 1", e))?;
        }
        let (kind, mut parts) = if &s1[0..8] == b"EFI PART" {
            (TableKind::Gpt, gpt(disk, &s1)?)
        } else if s0[510..512] == [0x55, 0xAA] && !is_fs_boot_sector(&s0) {
            (TableKind::Mbr, mbr(disk, &s0)?)
        } else {
            let whole = Partition {
                number: 0,
                start: 0,
                size,
                type_name: "whole disk".into(),
                label: String::new(),
                content: Content::Unknown,
            };
            (TableKind::None, vec![whole])
        };
        // An extended partition's container probes as unknown (its first sector is a boot
        // record, its logical partitions start further in).
        for p in &mut parts {
            p.content = probe(&Window::new(disk.clone(), p.start, p.size));
        }
        Ok(PartitionTable {
            kind,
            partitions: parts,
        })
    }

    /// Partition `number`.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`] listing the numbers that exist.
    pub fn get(&self, number: u32) -> Result<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.number == number)
            .ok_or_else(|| Error::NoSuchPartition {
                number,
                have: self
                    .partitions
                    .iter()
                    .map(|p| p.number.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn bad(what: impl Into<String>) -> Error {
    Error::PartitionTable(what.into())
}

/// Checks a partition lies on the disk and returns (start, size) in bytes.
fn on_disk(disk_size: u64, first_sector: u64, sectors: u64, what: &str) -> Result<(u64, u64)> {
    let start = first_sector.checked_mul(SECTOR);
    let size = sectors.checked_mul(SECTOR);
    match (start, size) {
        (Some(s), Some(l)) if s.checked_add(l).is_some_and(|e| e <= disk_size) && l > 0 => {
            Ok((s, l))
        }
        _ => Err(bad(format!(
            "{what} (sectors {first_sector}+{sectors}) lies outside the {disk_size}-byte disk"
        ))),
    }
}

/// A GUID in its usual text form (the first three fields are little-endian on disk).
fn guid(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

fn gpt_type_name(g: &str) -> String {
    let name = match g {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "21686148-6E6F-744E-6564-4965644E6565" => "BIOS boot",
        _ => return g.to_string(),
    };
    name.to_string()
}

fn gpt(disk: &Disk, header: &[u8]) -> Result<Vec<Partition>> {
    let size = disk.size();
    let hsize = le32(header, 12) as usize;
    if !(92..=512).contains(&hsize) {
        return Err(bad(format!("GPT header size {hsize} is invalid")));
    }
    let mut h = header[..hsize].to_vec();
    let want = le32(&h, 16);
    h[16..20].fill(0);
    if crc32fast::hash(&h) != want {
        return Err(bad(
            "the GPT header checksum does not match (damaged table)",
        ));
    }
    let entries_lba = le64(header, 72);
    let count = le32(header, 80) as u64;
    let esize = le32(header, 84) as u64;
    if !(128..=4096).contains(&esize) || count > 1024 {
        return Err(bad(format!("GPT has {count} entries of {esize} bytes")));
    }
    let (at, len) = on_disk(
        size,
        entries_lba,
        (count * esize).div_ceil(SECTOR),
        "the GPT entry array",
    )?;
    let mut entries = vec![0u8; len as usize];
    disk.read_at(at, &mut entries)
        .map_err(|e| Error::io("read the GPT entries", e))?;
    let entries = &entries[..(count * esize) as usize];
    if crc32fast::hash(entries) != le32(header, 88) {
        return Err(bad(
            "the GPT entry array checksum does not match (damaged table)",
        ));
    }
    let mut out = Vec::new();
    for (i, e) in entries.chunks_exact(esize as usize).enumerate() {
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        if last < first {
            return Err(bad(format!("GPT entry {} ends before it starts", i + 1)));
        }
        let (start, len) = on_disk(
            size,
            first,
            last - first + 1,
            &format!("GPT partition {}", i + 1),
        )?;
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        out.push(Partition {
            number: i as u32 + 1,
            start,
            size: len,
            type_name: gpt_type_name(&guid(&e[0..16])),
            label: String::from_utf16_lossy(&name),
            content: Content::Unknown,
        });
    }
    Ok(out)
}

fn mbr_type_name(t: u8) -> String {
    let name = match t {
        0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e => "FAT",
        0x05 | 0x0f | 0x85 => "extended",
        0x07 => "NTFS/exFAT",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xef => "EFI System",
        0xfd => "Linux RAID",
        0xee => "GPT protective",
        _ => "other",
    };
    format!("0x{t:02x} ({name})")
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

fn mbr(disk: &Disk, s0: &[u8]) -> Result<Vec<Partition>> {
    let size = disk.size();
    let mut out = Vec::new();
    let mut extended = None;
    for slot in 0..4 {
        let e = &s0[446 + slot * 16..446 + slot * 16 + 16];
        let t = e[4];
        if t == 0 {
            continue;
        }
        if t == 0xee {
            return Err(bad("a GPT protective MBR without a readable GPT header"));
        }
        let n = slot as u32 + 1;
        let (start, len) = on_disk(
            size,
            u64::from(le32(e, 8)),
            u64::from(le32(e, 12)),
            &format!("MBR partition {n}"),
        )?;
        if is_extended(t) {
            if extended.is_some() {
                return Err(bad("two extended partitions"));
            }
            extended = Some(start);
        }
        out.push(Partition {
            number: n,
            start,
            size: len,
            type_name: mbr_type_name(t),
            label: String::new(),
            content: Content::Unknown,
        });
    }
    if let Some(ext) = extended {
        let mut ebr_at = ext;
        for n in 5..5 + MAX_LOGICAL as u32 {
            let mut ebr = vec![0u8; 512];
            disk.read_at(ebr_at, &mut ebr)
                .map_err(|e| Error::io("read an extended boot record", e))?;
            if ebr[510..512] != [0x55, 0xAA] {
                return Err(bad(format!(
                    "the extended boot record at byte {ebr_at} has no signature"
                )));
            }
            let (l, next) = (&ebr[446..462], &ebr[462..478]);
            if l[4] != 0 {
                let (start, len) = on_disk(
                    size,
                    ebr_at / SECTOR + u64::from(le32(l, 8)),
                    u64::from(le32(l, 12)),
                    &format!("logical partition {n}"),
                )?;
                out.push(Partition {
                    number: n,
                    start,
                    size: len,
                    type_name: mbr_type_name(l[4]),
                    label: String::new(),
                    content: Content::Unknown,
                });
            }
            if next[4] == 0 || le32(next, 8) == 0 {
                return Ok(out);
            }
            let following = ext + u64::from(le32(next, 8)) * SECTOR;
            if following <= ebr_at || following >= size {
                return Err(bad("the logical partition chain loops or leaves the disk"));
            }
            ebr_at = following;
        }
        return Err(bad(format!("more than {MAX_LOGICAL} logical partitions")));
    }
    Ok(out)
}
