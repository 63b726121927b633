//! Fuzz target `guest_disk`: see `decoder_regressions::HARNESSES` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (decoder_regressions::harness("guest_disk")
        .expect("harness")
        .run)(data);
});
