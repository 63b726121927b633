//! Finding and opening `libvixDiskLib.so` in a user-named directory.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::bindings::VixDiskLibApi;

/// Functions every supported VDDK (6.5 and newer) exports; loading fails without them.
pub const REQUIRED_SYMBOLS: &[&str] = &[
    "VixDiskLib_InitEx",
    "VixDiskLib_Exit",
    "VixDiskLib_ConnectEx",
    "VixDiskLib_Disconnect",
    "VixDiskLib_Open",
    "VixDiskLib_Close",
    "VixDiskLib_GetInfo",
    "VixDiskLib_FreeInfo",
    "VixDiskLib_Read",
    "VixDiskLib_Write",
    "VixDiskLib_ReadAsync",
    "VixDiskLib_WriteAsync",
    "VixDiskLib_Wait",
    "VixDiskLib_Flush",
    "VixDiskLib_Create",
    "VixDiskLib_GetTransportMode",
    "VixDiskLib_GetErrorText",
    "VixDiskLib_FreeErrorText",
    "VixDiskLib_FreeConnectParams",
];

/// Functions used when present (VDDK 6.7 and newer); callers check before calling.
pub const OPTIONAL_SYMBOLS: &[&str] = &[
    "VixDiskLib_QueryAllocatedBlocks",
    "VixDiskLib_FreeBlockList",
    "VixDiskLib_AllocateConnectParams",
    "VixDiskLib_PrepareForAccess",
    "VixDiskLib_EndAccess",
    "VixDiskLib_ListTransportModes",
    "VixDiskLib_Cleanup",
];

/// Sonames tried in each directory, newest first, with the VDDK version each stands for.
const SONAMES: &[(&str, VddkVersion)] = &[
    ("libvixDiskLib.so.8", VddkVersion { major: 8, minor: 0 }),
    ("libvixDiskLib.so.7", VddkVersion { major: 7, minor: 0 }),
    ("libvixDiskLib.so.6", VddkVersion { major: 6, minor: 5 }),
];

/// Older sonames that exist in the wild but are not supported.
const TOO_OLD: &[&str] = &[
    "libvixDiskLib.so.5",
    "libvixDiskLib.so.3",
    "libvixDiskLib.so.2",
    "libvixDiskLib.so.1",
];

/// The VDDK version a library implements, as far as its soname tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VddkVersion {
    /// Major version: 6, 7 or 8.
    pub major: u32,
    /// Minor version passed to `VixDiskLib_InitEx`.
    pub minor: u32,
}

impl VddkVersion {
    /// Whether `VixDiskLibInfo` and `VixDiskLibCreateParams` carry sector sizes (VDDK 7.0+).
    pub fn has_sector_sizes(self) -> bool {
        self.major >= 7
    }
}

impl fmt::Display for VddkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why VDDK could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory the user named does not exist or is not a directory.
    #[error("VDDK directory {libdir} does not exist or is not a directory")]
    DirectoryMissing {
        /// The directory given.
        libdir: PathBuf,
    },
    /// No supported soname was found.
    #[error("no libvixDiskLib.so.8, .7 or .6 found; looked for {}", display_paths(.searched))]
    NotFound {
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// Only a VDDK older than 6.5 was found.
    #[error("{path} is a VDDK older than 6.5, which safekeeping does not support ({reason})")]
    TooOld {
        /// The library found.
        path: PathBuf,
        /// What showed its age.
        reason: String,
    },
    /// `dlopen` failed (wrong architecture, missing dependency, not a shared object).
    #[error("cannot load {path}: {source}")]
    Open {
        /// The library tried.
        path: PathBuf,
        /// The loader's error.
        source: libloading::Error,
    },
    /// The library lacks functions every supported VDDK has.
    #[error("{path} is not a usable VixDiskLib: missing required symbols {}", .missing.join(", "))]
    MissingSymbols {
        /// The library loaded.
        path: PathBuf,
        /// Names of the absent functions.
        missing: Vec<&'static str>,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A loaded `libvixDiskLib.so` whose required functions are all present.
pub struct VddkLibrary {
    /// The resolved functions. Required ones are always `Ok`; check optional ones before use.
    pub api: VixDiskLibApi,
    path: PathBuf,
    version: VddkVersion,
}

impl fmt::Debug for VddkLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VddkLibrary")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl VddkLibrary {
    /// The paths [`load`](Self::load) tries, in order: `<libdir>/lib64` then `<libdir>`, each
    /// with `libvixDiskLib.so.8`, `.7` and `.6`.
    pub fn candidates(libdir: &Path) -> Vec<(PathBuf, VddkVersion)> {
        search_dirs(libdir)
            .iter()
            .flat_map(|dir| SONAMES.iter().map(move |(name, v)| (dir.join(name), *v)))
            .collect()
    }

    /// Finds and opens VDDK under `libdir` (the folder users unpack VDDK into, holding `lib64/`)
    /// and resolves its functions.
    ///
    /// # Errors
    /// A [`LoadError`] naming the directory, the files tried or the missing symbols.
    ///
    /// # Safety
    /// Loading runs the library's initialisers, and every function will later be called with
    /// the signatures of `include/vixDiskLib.h`: the file found must be a VixDiskLib (real or a
    /// faithful fake), which is what a user asserts by naming the directory.
    pub unsafe fn load(libdir: &Path) -> Result<Self, LoadError> {
        if !libdir.is_dir() {
            return Err(LoadError::DirectoryMissing {
                libdir: libdir.to_path_buf(),
            });
        }
        let candidates = Self::candidates(libdir);
        let Some((path, version)) = candidates.iter().find(|(p, _)| p.exists()).cloned() else {
            for dir in search_dirs(libdir) {
                for old in TOO_OLD {
                    let path = dir.join(old);
                    if path.exists() {
                        return Err(LoadError::TooOld {
                            path,
                            reason: format!("found {old}"),
                        });
                    }
                }
            }
            return Err(LoadError::NotFound {
                searched: candidates.into_iter().map(|(p, _)| p).collect(),
            });
        };
        // SAFETY: the caller guarantees the file is a VixDiskLib (see `# Safety`); RTLD_NOW makes
        // unresolvable dependencies fail here rather than at a later call.
        let library = unsafe {
            libloading::os::unix::Library::open(
                Some(&path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        }
        .map_err(|source| LoadError::Open {
            path: path.clone(),
            source,
        })?;
        // SAFETY: symbols are resolved with the header's signatures; same guarantee as above.
        let api =
            unsafe { VixDiskLibApi::from_library(library) }.map_err(|source| LoadError::Open {
                path: path.clone(),
                source,
            })?;
        let present = symbol_presence(&api);
        let missing: Vec<&'static str> = REQUIRED_SYMBOLS
            .iter()
            .copied()
            .filter(|name| !present.iter().any(|(n, ok)| n == name && *ok))
            .collect();
        if !missing.is_empty() {
            // A 6.0 library has the 6.0 soname but lacks VixDiskLib_Wait (added in 6.5).
            if version.major == 6 && missing == ["VixDiskLib_Wait"] {
                return Err(LoadError::TooOld {
                    path,
                    reason: "VixDiskLib_Wait, added in 6.5, is missing".into(),
                });
            }
            return Err(LoadError::MissingSymbols { path, missing });
        }
        Ok(Self { api, path, version })
    }

    /// The file that was loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the loaded file (the one VDDK's plugins live in).
    pub fn lib_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The version the soname stands for.
    pub fn version(&self) -> VddkVersion {
        self.version
    }

    /// Whether the optional function `name` (one of [`OPTIONAL_SYMBOLS`]) is present.
    pub fn has(&self, name: &str) -> bool {
        symbol_presence(&self.api)
            .iter()
            .any(|(n, ok)| *n == name && *ok)
    }
}

fn search_dirs(libdir: &Path) -> [PathBuf; 2] {
    [libdir.join("lib64"), libdir.to_path_buf()]
}

fn symbol_presence(api: &VixDiskLibApi) -> Vec<(&'static str, bool)> {
    vec![
        ("VixDiskLib_InitEx", api.VixDiskLib_InitEx.is_ok()),
        ("VixDiskLib_Exit", api.VixDiskLib_Exit.is_ok()),
        ("VixDiskLib_ConnectEx", api.VixDiskLib_ConnectEx.is_ok()),
        ("VixDiskLib_Disconnect", api.VixDiskLib_Disconnect.is_ok()),
        ("VixDiskLib_Open", api.VixDiskLib_Open.is_ok()),
        ("VixDiskLib_Close", api.VixDiskLib_Close.is_ok()),
        ("VixDiskLib_GetInfo", api.VixDiskLib_GetInfo.is_ok()),
        ("VixDiskLib_FreeInfo", api.VixDiskLib_FreeInfo.is_ok()),
        ("VixDiskLib_Read", api.VixDiskLib_Read.is_ok()),
        ("VixDiskLib_Write", api.VixDiskLib_Write.is_ok()),
        ("VixDiskLib_ReadAsync", api.VixDiskLib_ReadAsync.is_ok()),
        ("VixDiskLib_WriteAsync", api.VixDiskLib_WriteAsync.is_ok()),
        ("VixDiskLib_Wait", api.VixDiskLib_Wait.is_ok()),
        ("VixDiskLib_Flush", api.VixDiskLib_Flush.is_ok()),
        ("VixDiskLib_Create", api.VixDiskLib_Create.is_ok()),
        (
            "VixDiskLib_GetTransportMode",
            api.VixDiskLib_GetTransportMode.is_ok(),
        ),
        (
            "VixDiskLib_GetErrorText",
            api.VixDiskLib_GetErrorText.is_ok(),
        ),
        (
            "VixDiskLib_FreeErrorText",
            api.VixDiskLib_FreeErrorText.is_ok(),
        ),
        (
            "VixDiskLib_FreeConnectParams",
            api.VixDiskLib_FreeConnectParams.is_ok(),
        ),
        (
            "VixDiskLib_QueryAllocatedBlocks",
            api.VixDiskLib_QueryAllocatedBlocks.is_ok(),
        ),
        (
            "VixDiskLib_FreeBlockList",
            api.VixDiskLib_FreeBlockList.is_ok(),
        ),
        (
            "VixDiskLib_AllocateConnectParams",
            api.VixDiskLib_AllocateConnectParams.is_ok(),
        ),
        (
            "VixDiskLib_PrepareForAccess",
            api.VixDiskLib_PrepareForAccess.is_ok(),
        ),
        ("VixDiskLib_EndAccess", api.VixDiskLib_EndAccess.is_ok()),
        (
            "VixDiskLib_ListTransportModes",
            api.VixDiskLib_ListTransportModes.is_ok(),
        ),
        ("VixDiskLib_Cleanup", api.VixDiskLib_Cleanup.is_ok()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_symbol_is_classified_once() {
        let mut all: Vec<&str> = REQUIRED_SYMBOLS
            .iter()
            .chain(OPTIONAL_SYMBOLS)
            .copied()
            .collect();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        assert_eq!(before, all.len());
        assert_eq!(all.len(), 26);
    }

    #[test]
    fn candidates_prefer_lib64_and_newest() {
        let c = VddkLibrary::candidates(Path::new("/opt/vddk"));
        assert_eq!(c[0].0, Path::new("/opt/vddk/lib64/libvixDiskLib.so.8"));
        assert_eq!(c[2].0, Path::new("/opt/vddk/lib64/libvixDiskLib.so.6"));
        assert_eq!(c[3].0, Path::new("/opt/vddk/libvixDiskLib.so.8"));
        assert_eq!(c[2].1, VddkVersion { major: 6, minor: 5 });
    }

    #[test]
    fn missing_directory_is_named() {
        // SAFETY: the directory does not exist, so nothing is loaded.
        let err = unsafe { VddkLibrary::load(Path::new("/nonexistent/vddk-dir")) }.unwrap_err();
        assert!(matches!(err, LoadError::DirectoryMissing { .. }));
        assert!(err.to_string().contains("/nonexistent/vddk-dir"));
    }

    #[test]
    fn empty_directory_lists_what_was_searched() {
        let dir = std::env::temp_dir().join(format!("vddk-sys-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: the directory is empty, so nothing is loaded.
        let err = unsafe { VddkLibrary::load(&dir) }.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("lib64/libvixDiskLib.so.8"), "{text}");
        assert!(text.contains("libvixDiskLib.so.6"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_old_vddk_is_reported_as_too_old() {
        let dir = std::env::temp_dir().join(format!("vddk-sys-old-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib64")).unwrap();
        std::fs::write(dir.join("lib64/libvixDiskLib.so.5"), b"not loaded").unwrap();
        // SAFETY: only a .so.5 exists, which is reported and never opened.
        let err = unsafe { VddkLibrary::load(&dir) }.unwrap_err();
        assert!(matches!(err, LoadError::TooOld { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
