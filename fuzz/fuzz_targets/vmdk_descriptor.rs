//! Fuzz target `vmdk_descriptor`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("vmdk_descriptor")
        .expect("harness")
        .run)(data);
});
