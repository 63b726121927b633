//! Replays fuzzing corpora and crash regressions through every decoder of safekeeping.
//!
//! Each decoder that reads bytes from outside the process (repository files, SOAP responses,
//! disk descriptors, the configuration file, the command line, saved `.vmx` files) has a
//! *harness* here: a function taking arbitrary bytes that runs the decoder and **panics when a
//! property is broken** — a panic inside the decoder, a round trip that does not give the same
//! value back, or an accepted value that breaks the decoder's own invariants. Bad input must
//! come back as `Err`, never as a panic.
//!
//! The same functions are the cargo-fuzz targets in `fuzz/` (one target per [`Harness`], named
//! alike) and are replayed by this crate's tests over `fuzz/regressions/<target>/*` and over
//! hand-made hostile inputs, so every crash the fuzzer ever found stays fixed.
//!
//! Harnesses read a leading *mode byte* where a decoder sits behind a checksum: the fuzzer can
//! then reach the decoder proper (the harness wraps the rest of the input in a valid envelope)
//! as well as the envelope checks.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod descriptor;
pub mod guest;
pub mod input;
pub mod nbd;
pub mod repository;
mod scratch;
#[cfg(feature = "vim")]
pub mod soap;

/// One decoder harness: its fuzz target name and the function that checks one input.
#[derive(Debug, Clone, Copy)]
pub struct Harness {
    /// Fuzz target name; also the folder name under `fuzz/regressions/` and `fuzz/corpus/`.
    pub name: &'static str,
    /// Runs the decoder on one input; panics when a property is broken.
    pub run: fn(&[u8]),
}

/// Every harness compiled in (features `vim` and `cli` add theirs).
pub const HARNESSES: &[Harness] = &[
    h("repo_blob", repository::blob),
    h("repo_fixed_index", repository::fixed_index),
    h("repo_manifest", repository::manifest),
    h("repo_config", repository::config),
    h("repo_key_file", repository::key_file),
    h("vmdk_descriptor", descriptor::vmdk_descriptor),
    h("nbd_request", nbd::nbd_request),
    h("guest_disk", guest::guest_disk),
    #[cfg(feature = "vim")]
    h("soap_response", soap::response),
    #[cfg(feature = "vim")]
    h("vm_config_view", soap::vm_config_view),
    #[cfg(feature = "cli")]
    h("target_parser", cli::target_parser),
    #[cfg(feature = "cli")]
    h("cli_options", cli::cli_options),
    #[cfg(feature = "cli")]
    h("config_toml", cli::config_toml),
    #[cfg(feature = "cli")]
    h("vmx_edit", cli::vmx_edit),
];

const fn h(name: &'static str, run: fn(&[u8])) -> Harness {
    Harness { name, run }
}

/// The harness named `name`.
pub fn harness(name: &str) -> Option<&'static Harness> {
    HARNESSES.iter().find(|h| h.name == name)
}
