//! Fuzz target `target_parser`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("target_parser")
        .expect("harness")
        .run)(data);
});
