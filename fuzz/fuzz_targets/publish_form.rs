//! A publish request's form body: parsed and validated as the hub does, refusals are
//! one-line 400s, and an accepted update reaches a subscriber's decoder intact. The
//! invariants are in `tidings_hub::fuzzing::publish_form`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whether the input went the interesting way matters only to the stable tests.
    let _ = tidings_hub::fuzzing::publish_form(data);
});
