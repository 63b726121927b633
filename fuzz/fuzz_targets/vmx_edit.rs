//! Fuzz target `vmx_edit`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("vmx_edit")
        .expect("harness")
        .run)(data);
});
