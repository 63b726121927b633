//! Putting VDDK's library directory on `LD_LIBRARY_PATH` by re-executing the program once.
//!
//! VDDK loads its own plugins and bundled libraries (OpenSSL, libcurl, ...) by name, so the
//! dynamic loader must find them in `<libdir>/lib64`. `LD_LIBRARY_PATH` is read only when a
//! process starts, so the program re-executes itself with the directory added, before any
//! thread or runtime starts and before VDDK is initialised. Arguments are passed unchanged
//! (they never contain secrets: passwords come from files or the environment).

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Set in the re-executed process so a failed attempt cannot loop.
pub const REEXEC_GUARD: &str = "SAFEKEEPING_VDDK_REEXECED";

/// The directory VDDK's libraries live in: `<libdir>/lib64` if it exists, else `libdir`.
pub fn library_dir(libdir: &Path) -> PathBuf {
    let lib64 = libdir.join("lib64");
    if lib64.is_dir() {
        lib64
    } else {
        libdir.to_path_buf()
    }
}

/// Whether `dir` is one of the entries of the path list `value`.
fn path_list_contains(value: Option<&OsStr>, dir: &Path) -> bool {
    value.is_some_and(|v| std::env::split_paths(v).any(|p| p == dir))
}

/// The new `LD_LIBRARY_PATH`: `dir` first, then the old entries.
fn extended(value: Option<&OsStr>, dir: &Path) -> Result<OsString> {
    let mut entries = vec![dir.to_path_buf()];
    if let Some(v) = value {
        entries.extend(std::env::split_paths(v).filter(|p| !p.as_os_str().is_empty()));
    }
    std::env::join_paths(entries).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot put {} on LD_LIBRARY_PATH: {e}",
            dir.display()
        ))
    })
}

/// Makes sure `<libdir>/lib64` is on `LD_LIBRARY_PATH`, re-executing the current program (same
/// arguments, same environment plus the extended path and [`REEXEC_GUARD`]) when it is not.
/// Returns `Ok(())` when nothing needs doing; on re-execution it does not return.
///
/// Call it first thing in `main`, before starting threads or a tokio runtime and before
/// [`crate::Vddk::init`]. If the re-executed process still lacks the directory (something
/// strips the variable), it logs a warning and returns `Ok(())` instead of looping.
///
/// # Errors
/// [`Error::Reexec`] when the executable cannot be found or executed;
/// [`Error::InvalidArgument`] after VDDK was initialised in this process or for a path that
/// cannot be put in the variable.
pub fn ensure_library_path(libdir: &Path) -> Result<()> {
    let dir = library_dir(libdir);
    let current = std::env::var_os("LD_LIBRARY_PATH");
    if path_list_contains(current.as_deref(), &dir) {
        return Ok(());
    }
    if std::env::var_os(REEXEC_GUARD).is_some() {
        tracing::warn!(target: "vddk", dir = %dir.display(),
            "re-executed once but {} is still not on LD_LIBRARY_PATH; continuing", dir.display());
        return Ok(());
    }
    if crate::library::any_initialised() {
        return Err(Error::InvalidArgument(
            "ensure_library_path must run before VDDK is initialised".into(),
        ));
    }
    let value = extended(current.as_deref(), &dir)?;
    let exe = std::env::current_exe().map_err(|source| Error::Reexec {
        exe: PathBuf::from("/proc/self/exe"),
        dir: dir.clone(),
        source,
    })?;
    tracing::debug!(target: "vddk", exe = %exe.display(), dir = %dir.display(), "re-executing with VDDK on LD_LIBRARY_PATH");
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(&exe);
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    let source = cmd
        .args(args)
        .env("LD_LIBRARY_PATH", value)
        .env(REEXEC_GUARD, "1")
        .exec();
    Err(Error::Reexec { exe, dir, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_directory_among_entries() {
        let dir = Path::new("/opt/vddk/lib64");
        assert!(path_list_contains(
            Some(OsStr::new("/a:/opt/vddk/lib64:/b")),
            dir
        ));
        assert!(!path_list_contains(
            Some(OsStr::new("/a:/opt/vddk/lib64x")),
            dir
        ));
        assert!(!path_list_contains(None, dir));
    }

    #[test]
    fn extends_with_the_directory_first() {
        let v = extended(Some(OsStr::new("/a:/b")), Path::new("/opt/vddk/lib64")).unwrap();
        assert_eq!(v, OsString::from("/opt/vddk/lib64:/a:/b"));
        let v = extended(None, Path::new("/opt/vddk/lib64")).unwrap();
        assert_eq!(v, OsString::from("/opt/vddk/lib64"));
        assert!(extended(None, Path::new("/bad:dir")).is_err());
    }
}
