//! Building what the lab runs: the Go simulator (cached in `<target>/lab/`) and the fake
//! libvixDiskLib (a workspace cdylib).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use fs2::FileExt;

/// The Go sources of the simulator, in this package.
const VCSIM_SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vcsim");

/// The directory of this executable (`<target>/debug`), where cargo also puts the fake
/// VDDK library.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the safekeeping-lab executable")?;
    let dir = exe
        .parent()
        .context("the safekeeping-lab executable has no directory")?;
    // Test harnesses run from target/debug/deps.
    if dir.file_name().is_some_and(|n| n == "deps") {
        return Ok(dir.parent().unwrap_or(dir).to_path_buf());
    }
    Ok(dir.to_path_buf())
}

/// The cargo target directory (the parent of the profile directory).
pub fn target_dir() -> Result<PathBuf> {
    let profile = profile_dir()?;
    Ok(profile.parent().unwrap_or(&profile).to_path_buf())
}

fn newest_source(dir: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "go") {
            let m = entry.metadata()?.modified()?;
            if m > newest {
                newest = m;
            }
        }
    }
    Ok(newest)
}

/// Returns the simulator binary, building it with `go build` (GOPATH mode against
/// Debian's govmomi) when it is missing or older than its sources. Concurrent callers
/// wait for one build.
pub fn ensure_server() -> Result<PathBuf> {
    let out_dir = target_dir()?.join("lab");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let binary = out_dir.join("lab-vcsim");
    let sources = Path::new(VCSIM_SOURCES);
    if !sources.is_dir() {
        if binary.exists() {
            return Ok(binary);
        }
        bail!(
            "the simulator's Go sources ({}) are missing and {} was never built",
            sources.display(),
            binary.display()
        );
    }
    let lock = File::create(out_dir.join("build.lock"))?;
    lock.lock_exclusive()
        .context("waiting for another lab build")?;
    let newest = newest_source(sources)?;
    let fresh = fs::metadata(&binary)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built >= newest);
    if fresh {
        return Ok(binary);
    }
    let go = which("go").context(
        "the Go toolchain is needed to build the lab simulator: install golang-go \
         (bash scripts/setup.sh does)",
    )?;
    let govmomi = Path::new("/usr/share/gocode/src/github.com/vmware/govmomi/simulator");
    if !govmomi.is_dir() {
        bail!(
            "govmomi is missing ({}): install golang-github-vmware-govmomi-dev \
             (bash scripts/setup.sh does)",
            govmomi.display()
        );
    }
    let tmp = out_dir.join(format!("lab-vcsim.tmp{}", std::process::id()));
    let mut gopath = String::from("/usr/share/gocode");
    if let Ok(extra) = std::env::var("GOPATH") {
        if !extra.is_empty() {
            gopath = format!("{gopath}:{extra}");
        }
    }
    eprintln!("safekeeping-lab: building the simulator (go build, once)");
    let out = Command::new(go)
        .current_dir(sources)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", out_dir.join("gocache"))
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .arg("build")
        .arg("-o")
        .arg(&tmp)
        .arg(".")
        .output()
        .context("running go build")?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        bail!(
            "go build of the lab simulator failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::rename(&tmp, &binary).with_context(|| format!("installing {}", binary.display()))?;
    Ok(binary)
}

/// Finds the fake libvixDiskLib built by cargo (package fake-vixdisklib, library name
/// `vixDiskLib`), building it when it is missing.
pub fn ensure_fake_vddk() -> Result<PathBuf> {
    let lib = profile_dir()?.join("libvixDiskLib.so");
    if lib.exists() {
        return Ok(lib);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "safekeeping-lab: {} is missing; running cargo build -p fake-vixdisklib",
        lib.display()
    );
    let mut cmd = Command::new(cargo);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(["build", "-p", "fake-vixdisklib"]);
    if profile_dir()?.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo build -p fake-vixdisklib")?;
    if !status.success() || !lib.exists() {
        bail!(
            "the fake VDDK library {} is missing and `cargo build -p fake-vixdisklib` did not \
             produce it",
            lib.display()
        );
    }
    Ok(lib)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
