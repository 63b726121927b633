//! Fuzz target `cli_options`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("cli_options")
        .expect("harness")
        .run)(data);
});
