//! Shared helpers: build the fake libvixDiskLib, lay it out like a VDDK install, and make a
//! small lab (datastore folder, VDDK config file, stats file, flat disks).
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vddk::{ConnectParams, Credentials};

pub const USER: &str = "backup@vsphere.local";
pub const PASSWORD: &str = "lab-Pa55word";
pub const THUMBPRINT: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";
pub const SERVER: &str = "vcenter.lab.invalid";

/// `target/<profile>`, found from the test executable (`target/<profile>/deps/x-hash`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir
}

/// Builds the fake (a no-op when fresh) and returns the path of `libvixDiskLib.so`.
///
/// It is built in its own target directory (`target/fake-vddk`): a cdylib's file name carries
/// no hash, so builds of the package with different feature sets (a workspace build, a `-p`
/// build, someone else's build) would otherwise overwrite each other's `libvixDiskLib.so` and
/// a test could load a stale copy.
pub fn fake_library() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile = profile_dir();
            let target = profile.parent().expect("target dir").join("fake-vddk");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "fake-vixdisklib", "--target-dir"])
                .arg(&target);
            let release = profile.ends_with("release");
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build -p fake-vixdisklib");
            assert!(status.success(), "cargo build -p fake-vixdisklib failed");
            let lib = target
                .join(if release { "release" } else { "debug" })
                .join("libvixDiskLib.so");
            assert!(lib.exists(), "{} missing after build", lib.display());
            lib
        })
        .clone()
}

/// A per-test-binary scratch folder under the target directory, emptied at first use.
pub fn scratch(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let stem = exe.file_stem().unwrap().to_string_lossy().to_string();
    let dir = profile_dir()
        .join("vddk-test-scratch")
        .join(format!("{stem}-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Lays out `<root>/lib64/libvixDiskLib.so.8` as the lab does, returning `<root>`.
pub fn install_fake(root: &Path) -> PathBuf {
    let lib64 = root.join("lib64");
    std::fs::create_dir_all(&lib64).unwrap();
    std::fs::copy(fake_library(), lib64.join("libvixDiskLib.so.8")).unwrap();
    root.to_path_buf()
}

/// A lab: fake VDDK install, datastore `ds1`, config file and stats file.
pub struct Lab {
    pub root: PathBuf,
    pub libdir: PathBuf,
    pub datastore: PathBuf,
    pub config: PathBuf,
    pub stats: PathBuf,
}

impl Lab {
    pub fn new(name: &str, extra_config: &str) -> Lab {
        let root = scratch(name);
        let libdir = install_fake(&root.join("vddk"));
        let datastore = root.join("ds1");
        std::fs::create_dir_all(&datastore).unwrap();
        let lab = Lab {
            config: root.join("vddk.conf"),
            stats: root.join("stats.jsonl"),
            root,
            libdir,
            datastore,
        };
        lab.write_config(extra_config);
        lab
    }

    /// Rewrites the config with the base keys plus `extra` (the fake re-reads it at Open).
    pub fn write_config(&self, extra: &str) {
        let pw = self.root.join("password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        let text = format!(
            "# VDDK config written by the vddk tests\nvixDiskLib.nfc.LogLevel = 1\n\
             fake.datastore.ds1 = {}\nfake.user = {USER}\nfake.password_file = {}\n\
             fake.thumbprint = {THUMBPRINT}\nfake.stats_file = {}\ntmpDirectory = {}\n{extra}\n",
            self.datastore.display(),
            pw.display(),
            self.stats.display(),
            self.tmp_directory().display()
        );
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Creates `[ds1] <rel>` (descriptor plus sparse `-flat.vmdk` of `flat_len` bytes) and
    /// writes `data` at the given byte offsets. Returns the datastore path.
    pub fn make_disk(
        &self,
        rel: &str,
        capacity_sectors: u64,
        flat_len: u64,
        data: &[(u64, &[u8])],
    ) -> String {
        self.make_disk_with(rel, capacity_sectors, flat_len, data, "RW")
    }

    pub fn make_disk_with(
        &self,
        rel: &str,
        capacity_sectors: u64,
        flat_len: u64,
        data: &[(u64, &[u8])],
        access: &str,
    ) -> String {
        let desc_path = self.datastore.join(rel);
        std::fs::create_dir_all(desc_path.parent().unwrap()).unwrap();
        let stem = desc_path.file_stem().unwrap().to_string_lossy().to_string();
        let flat_name = format!("{stem}-flat.vmdk");
        let flat = std::fs::File::create(desc_path.with_file_name(&flat_name)).unwrap();
        flat.set_len(flat_len).unwrap();
        for (off, bytes) in data {
            flat.write_all_at(bytes, *off).unwrap();
        }
        let mut d = std::fs::File::create(&desc_path).unwrap();
        write!(
            d,
            "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"vmfs\"\n\n# Extent description\n{access} {capacity_sectors} VMFS \"{flat_name}\"\n\n\
             # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n\
             ddb.geometry.cylinders = \"{}\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n\
             ddb.uuid = \"60 00 C2 9a 11 22 33 44-55 66 77 88 99 aa bb cc\"\nddb.virtualHWVersion = \"13\"\n",
            (capacity_sectors / (255 * 63)).max(1)
        )
        .unwrap();
        format!("[ds1] {rel}")
    }

    pub fn flat_path(&self, rel: &str) -> PathBuf {
        let p = self.datastore.join(rel);
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        p.with_file_name(format!("{stem}-flat.vmdk"))
    }

    /// VDDK's `tmpDirectory`, where the fake keeps what VixDiskLib_Cleanup looks for.
    pub fn tmp_directory(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Every stats line so far.
    pub fn stats_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stats)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("stats line is JSON"))
            .collect()
    }

    /// Stats lines of `event` for `path`.
    pub fn events(&self, event: &str, path: &str) -> Vec<serde_json::Value> {
        self.stats_lines()
            .into_iter()
            .filter(|v| v["event"] == event && (path.is_empty() || v["path"] == path))
            .collect()
    }
}

/// VM connection parameters with the lab's good credentials.
pub fn good_params() -> ConnectParams {
    ConnectParams::vm("vm-42")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        })
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
