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

pub mod cli;
pub mod descriptor;
pub mod input;
pub mod repository;
mod scratch;
pub mod soap;

/// One decoder harness: its fuzz target name and the function that checks one input.
#[derive(Debug, Clone, Copy)]
pub struct Harness {
    /// Fuzz target name; also the folder name under `fuzz/regressions/` and `fuzz/corpus/`.
    pub name: &'static str,
    /// Runs the decoder on one input; panics when a property is broken.
    pub run: fn(&[u8]),
}

/// Every harness, in the order `scripts/fuzz.sh` runs them.
pub const HARNESSES: &[Harness] = &[
    Harness {
        name: "repo_blob",
        run: repository::blob,
    },
    Harness {
        name: "repo_fixed_index",
        run: repository::fixed_index,
    },
    Harness {
        name: "repo_manifest",
        run: repository::manifest,
    },
    Harness {
        name: "repo_config",
        run: repository::config,
    },
    Harness {
        name: "soap_response",
        run: soap::response,
    },
    Harness {
        name: "vm_config_view",
        run: soap::vm_config_view,
    },
    Harness {
        name: "vmdk_descriptor",
        run: descriptor::vmdk_descriptor,
    },
    Harness {
        name: "target_parser",
        run: cli::target_parser,
    },
    Harness {
        name: "cli_options",
        run: cli::cli_options,
    },
    Harness {
        name: "config_toml",
        run: cli::config_toml,
    },
    Harness {
        name: "vmx_edit",
        run: cli::vmx_edit,
    },
];

/// The harness named `name`.
pub fn harness(name: &str) -> Option<&'static Harness> {
    HARNESSES.iter().find(|h| h.name == name)
}
