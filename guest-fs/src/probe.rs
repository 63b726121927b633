//! What a partition (or a whole disk) holds, from its signatures.

use crate::disk::Window;

/// The content found in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// ext2 (no journal, no extents).
    Ext2,
    /// ext3 (journal).
    Ext3,
    /// ext4 (extents, flex_bg, 64bit...).
    Ext4,
    /// NTFS.
    Ntfs,
    /// FAT12, FAT16 or FAT32 (also EFI system partitions).
    Fat,
    /// An LVM physical volume.
    Lvm,
    /// A LUKS encrypted volume.
    Luks,
    /// Linux swap.
    Swap,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// exFAT.
    ExFat,
    /// A Windows dynamic disk's or Storage Spaces' area, a BIOS boot area, or anything else.
    Unknown,
}

impl Content {
    /// The name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Content::Ext2 => "ext2",
            Content::Ext3 => "ext3",
            Content::Ext4 => "ext4",
            Content::Ntfs => "ntfs",
            Content::Fat => "fat",
            Content::Lvm => "LVM physical volume",
            Content::Luks => "LUKS encrypted volume",
            Content::Swap => "swap",
            Content::Xfs => "xfs",
            Content::Btrfs => "btrfs",
            Content::ExFat => "exfat",
            Content::Unknown => "unknown",
        }
    }

    /// Whether files can be read from it here.
    pub fn readable(self) -> bool {
        matches!(
            self,
            Content::Ext2 | Content::Ext3 | Content::Ext4 | Content::Ntfs | Content::Fat
        )
    }
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn at(w: &Window, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    w.read_exact_at(offset, &mut b).ok().map(|()| b)
}

/// Whether a first sector is a FAT or NTFS boot sector (which also ends in 55 AA, like an
/// MBR, but describes a file system on the whole disk).
pub(crate) fn is_fs_boot_sector(s: &[u8]) -> bool {
    s.len() >= 512
        && (s[0] == 0xEB || s[0] == 0xE9)
        && (&s[3..11] == b"NTFS    "
            || &s[3..11] == b"EXFAT   "
            || s[54..59] == *b"FAT12"
            || s[54..59] == *b"FAT16"
            || s[54..59] == *b"FAT  "
            || s[82..87] == *b"FAT32")
}

/// Identifies the content of `w` from its signatures.
///
/// # Errors
/// None: unreadable signatures count as not found (a read error of the data itself is
/// reported when files are read).
pub fn probe(w: &Window) -> Content {
    if let Some(s) = at(w, 0, 512) {
        if &s[3..11] == b"NTFS    " {
            return Content::Ntfs;
        }
        if &s[3..11] == b"EXFAT   " {
            return Content::ExFat;
        }
        if is_fs_boot_sector(&s) && s[510..512] == [0x55, 0xAA] {
            return Content::Fat;
        }
        if &s[0..6] == b"LUKS\xba\xbe" {
            return Content::Luks;
        }
        if &s[0..4] == b"XFSB" {
            return Content::Xfs;
        }
    }
    if let Some(s) = at(w, 512, 32) {
        if &s[0..8] == b"LABELONE" && &s[24..32] == b"LVM2 001" {
            return Content::Lvm;
        }
    }
    if let Some(sb) = at(w, 1024, 1024) {
        if sb[56..58] == [0x53, 0xEF] {
            let compat = u32::from_le_bytes([sb[92], sb[93], sb[94], sb[95]]);
            let incompat = u32::from_le_bytes([sb[96], sb[97], sb[98], sb[99]]);
            // Beyond filetype, recover and meta_bg (ext2/3 have them) the flags are ext4 ones
            // (extents, 64bit, flex_bg...); a journal without them makes ext3.
            return if incompat & !0x16 != 0 {
                Content::Ext4
            } else if compat & 0x4 != 0 {
                Content::Ext3
            } else {
                Content::Ext2
            };
        }
    }
    if at(w, 4086, 10).as_deref() == Some(b"SWAPSPACE2") {
        return Content::Swap;
    }
    if at(w, 0x10040, 8).as_deref() == Some(b"_BHRfS_M") {
        return Content::Btrfs;
    }
    Content::Unknown
}
