//! Fuzz target `vm_config_view`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("vm_config_view")
        .expect("harness")
        .run)(data);
});
