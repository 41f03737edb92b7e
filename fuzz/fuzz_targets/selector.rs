//! Topic selectors against topics: `*`, exact and URI-template selectors match what
//! they should, and templates match their own expansions. The invariants are in
//! `tidings_hub::fuzzing::selector`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whether the input went the interesting way matters only to the stable tests.
    let _ = tidings_hub::fuzzing::selector(data);
});
