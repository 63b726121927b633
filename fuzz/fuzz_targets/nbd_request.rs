//! Fuzz target `nbd_request`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("nbd_request")
        .expect("harness")
        .run)(data);
});
