//! Fuzz target `soap_response`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("soap_response")
        .expect("harness")
        .run)(data);
});
