//! Where a request carries its token, and verifying it: no forged token is accepted,
//! the genuine one is wherever it is put, and refusals are one line that shows neither
//! the key nor the token. The invariants are in `tidings_hub::fuzzing::token`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whether the input went the interesting way matters only to the stable tests.
    let _ = tidings_hub::fuzzing::token(data);
});
