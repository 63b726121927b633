//! Fuzz target `repo_blob`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("repo_blob")
        .expect("harness")
        .run)(data);
});
