//! Fuzz target `config_toml`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("config_toml")
        .expect("harness")
        .run)(data);
});
