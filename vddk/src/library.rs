//! The loaded library and its once-per-process initialisation.

use std::ffi::{c_char, CStr, CString};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use vddk_sys::VddkLibrary;

use crate::error::{Error, Result, VixError};
use crate::logging;

/// VDDK requires ConnectEx, Disconnect, Open, Close (and PrepareForAccess/EndAccess) never to
/// run concurrently within a process; every such call holds this lock.
static SERIAL: Mutex<()> = Mutex::new(());

/// The library file whose InitEx succeeded in this process, if any. It stays set after
/// VixDiskLib_Exit: VMware documents InitEx as once per process, and a library that ran Exit
/// is never initialised (nor unloaded) again.
static INITIALISED_LIBRARY: Mutex<Option<InitialisedLibrary>> = Mutex::new(None);

/// Async requests given up on (their buffers leaked) in this process: VDDK may still be
/// working on them, so VixDiskLib_Exit is skipped once there are any.
static ABANDONED_REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// The library this process initialised, and whether it has since run VixDiskLib_Exit.
#[derive(Debug)]
struct InitialisedLibrary {
    path: PathBuf,
    exited: bool,
}

/// Records async requests that were abandoned while VDDK might still complete them.
pub(crate) fn note_abandoned(n: usize) {
    ABANDONED_REQUESTS.fetch_add(n, Ordering::SeqCst);
}

/// Takes the process-wide lock for open/close/connect/disconnect.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether any `Vddk` has been initialised in this process.
pub(crate) fn any_initialised() -> bool {
    INITIALISED_LIBRARY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some()
}

/// The settings InitEx ran with.
#[derive(Debug)]
struct InitRecord {
    config_file: Option<PathBuf>,
}

/// Shared by every handle derived from one [`Vddk`]; calls VixDiskLib_Exit when the last one
/// goes away.
pub(crate) struct LibraryState {
    /// Never unloaded once initialised: VDDK threads (and completions of abandoned async
    /// requests) may outlive Exit, and unmapping their code under them would crash the process.
    pub(crate) lib: ManuallyDrop<VddkLibrary>,
    libdir: PathBuf,
    init: OnceLock<InitRecord>,
    init_lock: Mutex<()>,
    /// Access prepared for VMs, shared by every connection to the same VM.
    pub(crate) access: crate::access::AccessRegistry,
}

impl LibraryState {
    /// Turns a VixError into `Ok` or an [`Error::Vix`] with the library's text.
    pub(crate) fn check(&self, operation: &'static str, raw: u64) -> Result<()> {
        if raw == u64::from(vddk_sys::VIX_OK) {
            Ok(())
        } else {
            Err(self.vix_error(operation, raw).into())
        }
    }

    pub(crate) fn vix_error(&self, operation: &'static str, raw: u64) -> VixError {
        VixError {
            operation,
            code: (raw & 0xFFFF) as u32,
            raw,
            text: self.error_text(raw),
        }
    }

    /// VDDK's description of `raw`, freed with FreeErrorText.
    fn error_text(&self, raw: u64) -> String {
        let api = &self.lib.api;
        // SAFETY: both functions are required symbols (checked at load); GetErrorText returns
        // NULL or a string that FreeErrorText releases, and it is copied before being freed.
        unsafe {
            let p = api.VixDiskLib_GetErrorText(raw, std::ptr::null());
            if p.is_null() {
                return "no description".into();
            }
            let text = CStr::from_ptr(p).to_string_lossy().into_owned();
            api.VixDiskLib_FreeErrorText(p);
            text
        }
    }

    pub(crate) fn ensure_initialised(&self) -> Result<()> {
        if self.init.get().is_some() {
            Ok(())
        } else {
            Err(Error::NotInitialised)
        }
    }

    pub(crate) fn unsupported(&self, function: &'static str) -> Error {
        Error::Unsupported {
            function,
            version: self.lib.version().to_string(),
        }
    }
}

impl Drop for LibraryState {
    fn drop(&mut self) {
        if self.init.get().is_none() {
            // Never initialised: nothing of VDDK ran, so the library may be unloaded.
            // SAFETY: dropped exactly once, here; no handle refers to it any more.
            unsafe { ManuallyDrop::drop(&mut self.lib) };
            return;
        }
        let _g = serial();
        let abandoned = ABANDONED_REQUESTS.load(Ordering::SeqCst);
        if abandoned == 0 {
            // SAFETY: InitEx succeeded and no connection or disk remains (they hold this
            // state); no async request is outstanding.
            unsafe { self.lib.api.VixDiskLib_Exit() };
            tracing::debug!(target: "vddk", "VixDiskLib_Exit done");
        } else {
            tracing::warn!(target: "vddk", abandoned,
                "not calling VixDiskLib_Exit: abandoned async requests may still be running");
        }
        if let Some(rec) = INITIALISED_LIBRARY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            rec.exited = true;
        }
        // The library stays mapped (ManuallyDrop, never dropped) for the rest of the process.
    }
}

/// A loaded VixDiskLib. Cheap to clone; connections and disks keep it alive.
#[derive(Clone)]
pub struct Vddk {
    pub(crate) state: Arc<LibraryState>,
}

impl std::fmt::Debug for Vddk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vddk")
            .field("path", &self.state.lib.path())
            .field("version", &self.state.lib.version())
            .field("initialised", &self.state.init.get().is_some())
            .finish()
    }
}

impl Vddk {
    /// Loads `libvixDiskLib.so.8`, `.7` or `.6` from `<libdir>/lib64` or `<libdir>`.
    ///
    /// `libdir` is the folder VDDK was unpacked into (e.g. `/opt/vmware-vix-disklib-distrib`).
    /// Call [`crate::ensure_library_path`] first when using a real VDDK.
    ///
    /// # Errors
    /// [`Error::Load`] when the directory is missing, no library is found (the error lists every
    /// path tried), the library is older than 6.5 or lacks a required function.
    pub fn load(libdir: &Path) -> Result<Vddk> {
        // SAFETY: the user named this directory as their VDDK install; loading it and calling
        // its functions with the documented signatures is the purpose of this crate.
        let lib = unsafe { VddkLibrary::load(libdir) }?;
        tracing::debug!(target: "vddk", path = %lib.path().display(), version = %lib.version(), "loaded VixDiskLib");
        Ok(Vddk {
            state: Arc::new(LibraryState {
                lib: ManuallyDrop::new(lib),
                libdir: libdir.to_path_buf(),
                init: OnceLock::new(),
                init_lock: Mutex::new(()),
                access: crate::access::AccessRegistry::default(),
            }),
        })
    }

    /// Initialises VDDK (VixDiskLib_InitEx) with the user's VDDK config file; logs go to
    /// `tracing` under target `vddk`. Calling it again with the same file does nothing.
    ///
    /// VDDK is initialised once per process, as VMware documents: after the last handle of an
    /// initialised library is dropped (which runs VixDiskLib_Exit), no handle can initialise
    /// it again, and the library is never unloaded. Keep one [`Vddk`] for the whole run.
    ///
    /// Never fork after this: VDDK's threads do not survive it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the config file does not exist;
    /// [`Error::AlreadyInitialised`] when this or another `Vddk` was initialised in this process
    /// with a different config file or library, or VDDK already ran VixDiskLib_Exit in this
    /// process; [`Error::Vix`] when InitEx fails.
    pub fn init(&self, config_file: Option<&Path>) -> Result<()> {
        let _l = self
            .state
            .init_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = self.state.init.get() {
            return if rec.config_file.as_deref() == config_file {
                Ok(())
            } else {
                Err(Error::AlreadyInitialised {
                    detail: format!(
                        "config file {:?}, now asked for {:?}",
                        rec.config_file, config_file
                    ),
                })
            };
        }
        let mut active = INITIALISED_LIBRARY
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(other) = active.as_ref() {
            let detail = if other.exited {
                format!(
                    "{} was initialised and has run VixDiskLib_Exit; VDDK is initialised once \
                     per process",
                    other.path.display()
                )
            } else {
                format!("by another handle on {}", other.path.display())
            };
            return Err(Error::AlreadyInitialised { detail });
        }
        if let Some(p) = config_file {
            if !p.is_file() {
                return Err(Error::InvalidArgument(format!(
                    "VDDK config file {} does not exist or is not a file",
                    p.display()
                )));
            }
        }
        let libdir = path_cstring(&self.state.libdir, "libdir")?;
        let config = config_file
            .map(|p| path_cstring(p, "config file"))
            .transpose()?;
        let version = self.state.lib.version();
        let raw = {
            let _g = serial();
            // SAFETY: InitEx is a required symbol; the strings outlive the call; the callbacks
            // have the GenericLogFunc signature and never unwind.
            unsafe {
                self.state.lib.api.VixDiskLib_InitEx(
                    version.major,
                    version.minor,
                    Some(logging::log_callback),
                    Some(logging::warn_callback),
                    Some(logging::panic_callback),
                    libdir.as_ptr(),
                    config.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                )
            }
        };
        self.state.check("InitEx", raw)?;
        *active = Some(InitialisedLibrary {
            path: self.state.lib.path().to_path_buf(),
            exited: false,
        });
        let _ = self.state.init.set(InitRecord {
            config_file: config_file.map(Path::to_path_buf),
        });
        tracing::info!(target: "vddk", path = %self.state.lib.path().display(), %version, "VixDiskLib initialised");
        Ok(())
    }

    /// The loaded library file.
    pub fn library_path(&self) -> &Path {
        self.state.lib.path()
    }

    /// The VDDK version (from the soname).
    pub fn version(&self) -> vddk_sys::VddkVersion {
        self.state.lib.version()
    }

    /// Transport modes the library supports, e.g. `["file", "san", "hotadd", "nbdssl", "nbd"]`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when ListTransportModes is absent.
    pub fn list_transport_modes(&self) -> Result<Vec<String>> {
        let api = &self.state.lib.api;
        if api.VixDiskLib_ListTransportModes.is_err() {
            return Err(self.state.unsupported("VixDiskLib_ListTransportModes"));
        }
        // SAFETY: present (checked above); returns NULL or a static string owned by VDDK.
        let p: *const c_char = unsafe { api.VixDiskLib_ListTransportModes() };
        if p.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: non-null, NUL-terminated, owned by the library.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
        Ok(s.split(':')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect())
    }
}

pub(crate) fn path_cstring(p: &Path, what: &str) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{what} {} contains a NUL byte", p.display())))
}

pub(crate) fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte")))
}
