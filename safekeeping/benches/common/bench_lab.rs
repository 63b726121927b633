//! The lab every end-to-end benchmark runs against: the lab and the fake VDDK built in release
//! (skipped with `SAFEKEEPING_BENCH_NO_BUILD=1`), and a folder of the benchmark's own beside the
//! release binaries, emptied at the start so that each run begins from the same state.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::timing::{run, BoxResult};

/// Where a benchmark's binaries and folders are.
pub struct BenchLab {
    /// The `safekeeping` binary under test.
    pub sk: PathBuf,
    /// The `safekeeping-lab` binary (release).
    pub lab_bin: PathBuf,
    /// The benchmark's own folder (`target/<name>`), emptied by [`BenchLab::start`].
    pub base: PathBuf,
    /// The lab's folder inside `base`.
    pub lab_dir: PathBuf,
}

impl BenchLab {
    /// Builds the lab and the fake VDDK (release) unless told not to, and names the folders of
    /// the benchmark `name` (`bench-backup`, …) beside the binaries.
    pub fn prepare(name: &str) -> BoxResult<Self> {
        let sk = PathBuf::from(env!("CARGO_BIN_EXE_safekeeping"));
        let bin_dir = sk.parent().ok_or("no binary directory")?.to_path_buf();
        if std::env::var_os("SAFEKEEPING_BENCH_NO_BUILD").is_none() {
            eprintln!("building the lab and the fake VDDK (release) ...");
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(Command::new(&cargo).current_dir(&workspace).args([
                "build",
                "--release",
                "-p",
                "safekeeping-lab",
                "-p",
                "fake-vixdisklib",
            ]))?;
        }
        let base = bin_dir.join("..").join(name);
        Ok(Self {
            lab_bin: bin_dir.join("safekeeping-lab"),
            lab_dir: base.join("lab"),
            base,
            sk,
        })
    }

    /// Runs `safekeeping-lab ARGS --dir LAB`.
    pub fn lab(&self, args: &[&str]) -> BoxResult<(f64, String)> {
        run(Command::new(&self.lab_bin)
            .args(args)
            .arg("--dir")
            .arg(&self.lab_dir))
    }

    /// Stops what an interrupted earlier run left (its S3 cluster and lab), empties the
    /// benchmark's folder and starts a new lab.
    pub fn start(&self) -> BoxResult<()> {
        if self.lab_dir.join("s3.json").exists() {
            let _ = self.lab(&["s3", "down"]);
        }
        if self.lab_dir.join("lab.json").exists() {
            let _ = self.lab(&["down"]);
        }
        let _ = fs::remove_dir_all(&self.base);
        fs::create_dir_all(&self.base)?;
        self.lab(&["up"])?;
        Ok(())
    }

    /// Stops the lab (errors ignored: the benchmark's own result is what counts).
    pub fn stop(&self) {
        let _ = self.lab(&["down"]);
    }
}
