//! Fuzz target `repo_key_file`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("repo_key_file")
        .expect("harness")
        .run)(data);
});
