//! Replays every saved fuzzing input under `fuzz/regressions/<target>/` through its harness.
//! A folder named after no harness is an error (a renamed target must move its inputs).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use decoder_regressions::harness;

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions")
}

/// Runs `run` on every file of `dir`, returning `file: panic message` for each failure.
fn replay(dir: &Path, run: fn(&[u8])) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).expect("read regression input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&bytes))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", f.display()));
        }
    }
    failures
}

/// Replays one target's saved inputs, failing with every broken one listed.
fn replay_target(name: &str) {
    let h = harness(name).unwrap_or_else(|| panic!("no harness {name}"));
    let dir = regressions_dir().join(name);
    if !dir.is_dir() {
        return;
    }
    let failures = replay(&dir, h.run);
    assert!(
        failures.is_empty(),
        "{} regression(s) fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_regression_folder_names_a_harness() {
    let Ok(entries) = std::fs::read_dir(regressions_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            assert!(
                harness(&name).is_some(),
                "fuzz/regressions/{name} names no harness"
            );
        }
    }
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay_target(stringify!($name));
            }
        )*
    };
}

replay_tests!(
    repo_blob,
    repo_fixed_index,
    repo_manifest,
    repo_config,
    repo_key_file,
    vmdk_descriptor,
    nbd_request,
    guest_disk,
    soap_response,
    vm_config_view,
    target_parser,
    cli_options,
    config_toml,
    vmx_edit,
);

#[test]
fn every_harness_has_a_replay_test() {
    // Keeps the macro list above in step with HARNESSES.
    let listed = [
        "repo_blob",
        "repo_fixed_index",
        "repo_manifest",
        "repo_config",
        "repo_key_file",
        "vmdk_descriptor",
        "nbd_request",
        "guest_disk",
        "soap_response",
        "vm_config_view",
        "target_parser",
        "cli_options",
        "config_toml",
        "vmx_edit",
    ];
    let names: Vec<&str> = decoder_regressions::HARNESSES
        .iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, listed);
}

/// `DECODER_REGRESSIONS_CORPUS=fuzz/corpus cargo test -p decoder-regressions --test replay`
/// replays a whole corpus (one folder per target) in a test build, where overflow checks and
/// debug assertions are on.
#[test]
fn corpus_from_the_environment() {
    let Some(dir) = std::env::var_os("DECODER_REGRESSIONS_CORPUS") else {
        return;
    };
    let mut failures = Vec::new();
    for h in decoder_regressions::HARNESSES {
        let d = Path::new(&dir).join(h.name);
        if d.is_dir() {
            failures.extend(replay(&d, h.run));
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
