//! History records: decoding arbitrary bytes never panics and is stable, and updates
//! built from the input survive encoding. The invariants are in
//! `tidings_hub::fuzzing::record`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whether the input went the interesting way matters only to the stable tests.
    let _ = tidings_hub::fuzzing::record(data);
});
