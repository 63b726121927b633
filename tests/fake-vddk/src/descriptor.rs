//! VMware text disk descriptors: parsing the ones the lab writes (flat disks and the lab's
//! delta disks, see `chain.rs`) and writing new ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A descriptor with exactly one extent: flat, or the lab's sparse delta format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub create_type: String,
    /// `parentFileNameHint` of a delta disk (`createType="vmfsSparse"`): the parent's
    /// descriptor, relative to this one's folder unless absolute.
    pub parent_hint: Option<String>,
    pub capacity_sectors: u64,
    /// Extent file name as written (relative to the descriptor's folder unless absolute).
    pub extent_file: String,
    /// Sector offset of the disk's data inside the extent file (usually 0).
    pub extent_offset: u64,
    pub read_only: bool,
    pub ddb: BTreeMap<String, String>,
}

/// Largest descriptor read; real ones are well under 2 KiB.
pub const MAX_DESCRIPTOR_BYTES: u64 = 64 * 1024;

impl Descriptor {
    /// Parses descriptor text.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.lines().any(|l| l.trim() == "# Disk DescriptorFile") {
            return Err("not a VMware disk descriptor (no \"# Disk DescriptorFile\")".into());
        }
        let mut create_type = None;
        let mut parent_hint = None;
        let mut extents = Vec::new();
        let mut ddb = BTreeMap::new();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                extents.push(parse_extent(line)?);
            } else if let Some((k, v)) = line.split_once('=') {
                let k = k.trim();
                let v = v.trim().trim_matches('"').to_string();
                if k == "createType" {
                    create_type = Some(v);
                } else if k == "parentFileNameHint" {
                    parent_hint = Some(v);
                } else if k.starts_with("ddb.") {
                    ddb.insert(k.to_string(), v);
                }
            }
        }
        let create_type = create_type.ok_or("descriptor has no createType")?;
        let delta = create_type == "vmfsSparse";
        if !delta
            && !matches!(
                create_type.as_str(),
                "vmfs" | "vmfsThin" | "monolithicFlat" | "twoGbMaxExtentFlat"
            )
        {
            return Err(format!("createType {create_type:?} is not a flat disk"));
        }
        if delta != parent_hint.is_some() {
            return Err(
                "a delta disk (createType \"vmfsSparse\") needs a parentFileNameHint, and only it"
                    .into(),
            );
        }
        let [extent]: [(bool, u64, String, String, u64); 1] = extents
            .try_into()
            .map_err(|e: Vec<_>| format!("{} extents; the fake supports exactly one", e.len()))?;
        let (read_only, capacity_sectors, kind, extent_file, extent_offset) = extent;
        if delta {
            if kind != "VMFSSPARSE" || extent_offset != 0 {
                return Err(format!(
                    "a delta disk's extent is VMFSSPARSE without offset, not {kind}"
                ));
            }
        } else if !matches!(kind.as_str(), "VMFS" | "FLAT") {
            return Err(format!("extent type {kind} is not flat"));
        }
        Ok(Self {
            create_type,
            parent_hint,
            capacity_sectors,
            extent_file,
            extent_offset,
            read_only,
            ddb,
        })
    }

    /// Reads and parses the descriptor file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_DESCRIPTOR_BYTES {
            return Err(format!(
                "{} is {} bytes, too large for a text descriptor (binary sparse disks are not supported)",
                path.display(),
                meta.len()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not a text descriptor", path.display()))?;
        Self::parse(&text)
    }

    /// The extent file's path, resolved against the descriptor's folder.
    pub fn extent_path(&self, descriptor_path: &Path) -> PathBuf {
        let extent = Path::new(&self.extent_file);
        if extent.is_absolute() {
            extent.to_path_buf()
        } else {
            descriptor_path
                .parent()
                .unwrap_or(Path::new("/"))
                .join(extent)
        }
    }

    /// The parent's descriptor path of a delta disk, resolved against this descriptor's
    /// folder.
    pub fn parent_path(&self, descriptor_path: &Path) -> Option<PathBuf> {
        let hint = Path::new(self.parent_hint.as_deref()?);
        Some(if hint.is_absolute() {
            hint.to_path_buf()
        } else {
            descriptor_path
                .parent()
                .unwrap_or(Path::new("/"))
                .join(hint)
        })
    }

    /// A `ddb.*` value parsed as a number.
    pub fn ddb_u32(&self, key: &str) -> Option<u32> {
        self.ddb.get(key).and_then(|v| v.parse().ok())
    }

    /// Renders the descriptor in VMware's layout.
    pub fn render(&self, cid: u32) -> String {
        let access = if self.read_only { "RDONLY" } else { "RW" };
        let kind = if self.parent_hint.is_some() {
            "VMFSSPARSE"
        } else if self.create_type.starts_with("vmfs") {
            "VMFS"
        } else {
            "FLAT"
        };
        let parent = match &self.parent_hint {
            Some(p) => format!("parentFileNameHint=\"{p}\"\n"),
            None => String::new(),
        };
        // VMFS extents carry no offset, unless the parsed descriptor had one (a FLAT extent
        // under createType vmfs): dropping it would move the disk's data.
        let offset = if kind == "FLAT" || self.extent_offset != 0 {
            format!(" {}", self.extent_offset)
        } else {
            String::new()
        };
        let mut s = format!(
            "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID=ffffffff\n\
             createType=\"{}\"\n{parent}\n# Extent description\n{access} {} {kind} \"{}\"{offset}\n\n\
             # The Disk Data Base\n#DDB\n\n",
            self.create_type, self.capacity_sectors, self.extent_file
        );
        for (k, v) in &self.ddb {
            s.push_str(&format!("{k} = \"{v}\"\n"));
        }
        s
    }
}

fn parse_extent(line: &str) -> Result<(bool, u64, String, String, u64), String> {
    let bad = || format!("malformed extent line {line:?}");
    let (head, rest) = line.split_once('"').ok_or_else(bad)?;
    let (file, tail) = rest.split_once('"').ok_or_else(bad)?;
    let mut words = head.split_whitespace();
    let access = words.next().ok_or_else(bad)?;
    let sectors: u64 = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let kind = words.next().ok_or_else(bad)?.to_string();
    let offset = match tail.trim() {
        "" => 0,
        t => t.parse().map_err(|_| bad())?,
    };
    if access == "NOACCESS" {
        return Err("extent is NOACCESS".into());
    }
    Ok((access == "RDONLY", sectors, kind, file.to_string(), offset))
}

/// BIOS-style geometry VMware writes for a disk of `sectors` on an adapter.
pub fn geometry(adapter: &str, sectors: u64) -> (u32, u32, u32) {
    let (heads, spt, max_cyl) = if adapter == "ide" {
        (16u64, 63u64, 16383u64)
    } else {
        (255, 63, 65535)
    };
    let cyl = (sectors / (heads * spt)).clamp(1, max_cyl);
    (cyl as u32, heads as u32, spt as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
        createType=\"vmfs\"\n\n# Extent description\nRW 2097152 VMFS \"web01-flat.vmdk\"\n\n\
        # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"130\"\n\
        ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n\
        ddb.uuid = \"60 00 C2 9a 11 22 33 44-55 66 77 88 99 aa bb cc\"\n";

    #[test]
    fn parses_a_vmfs_descriptor() {
        let d = Descriptor::parse(LAB).unwrap();
        assert_eq!(d.capacity_sectors, 2_097_152);
        assert_eq!(d.extent_file, "web01-flat.vmdk");
        assert_eq!(d.ddb["ddb.adapterType"], "lsilogic");
        assert_eq!(d.ddb_u32("ddb.geometry.heads"), Some(255));
        assert_eq!(
            d.extent_path(Path::new("/ds/web01/web01.vmdk")),
            PathBuf::from("/ds/web01/web01-flat.vmdk")
        );
    }

    #[test]
    fn render_round_trips() {
        let d = Descriptor::parse(LAB).unwrap();
        assert_eq!(Descriptor::parse(&d.render(7)).unwrap(), d);
    }

    #[test]
    fn rejects_sparse_and_split_disks() {
        assert!(Descriptor::parse(&LAB.replace("\"vmfs\"", "\"monolithicSparse\"")).is_err());
        let two = LAB.replace(
            "RW 2097152 VMFS \"web01-flat.vmdk\"",
            "RW 1 FLAT \"a\" 0\nRW 1 FLAT \"b\" 0",
        );
        assert!(Descriptor::parse(&two).unwrap_err().contains("2 extents"));
        assert!(Descriptor::parse("hello").is_err());
        assert!(Descriptor::parse(&LAB.replace("RW 2097152 VMFS", "RW lots VMFS")).is_err());
    }

    const DELTA: &str = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=fffffffe\n\
        createType=\"vmfsSparse\"\nparentFileNameHint=\"web01.vmdk\"\n\n# Extent description\n\
        RW 2097152 VMFSSPARSE \"web01-000001-delta.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
        ddb.uuid = \"60 00 C2 9a 11 22 33 44-55 66 77 88 99 aa bb cc\"\n";

    #[test]
    fn parses_a_delta_descriptor() {
        let d = Descriptor::parse(DELTA).unwrap();
        assert_eq!(d.parent_hint.as_deref(), Some("web01.vmdk"));
        assert_eq!(d.capacity_sectors, 2_097_152);
        assert_eq!(
            d.parent_path(Path::new("/ds/web01/web01-000001.vmdk")),
            Some(PathBuf::from("/ds/web01/web01.vmdk"))
        );
        assert_eq!(Descriptor::parse(&d.render(7)).unwrap(), d);
        // A sparse extent without a parent, or a parent on a flat disk, is not ours.
        let orphan = DELTA.replace("parentFileNameHint=\"web01.vmdk\"\n", "");
        assert!(Descriptor::parse(&orphan).is_err());
        let flat_with_parent = LAB.replace("#DDB", "parentFileNameHint=\"x.vmdk\"\n#DDB");
        assert!(Descriptor::parse(&flat_with_parent).is_err());
        assert!(Descriptor::parse(&DELTA.replace("VMFSSPARSE", "VMFS")).is_err());
    }

    #[test]
    fn geometry_follows_adapter() {
        assert_eq!(geometry("lsilogic", 2_097_152), (130, 255, 63));
        assert_eq!(geometry("ide", 2_097_152), (2080, 16, 63));
    }
}
