//! Integration tests of the codec: the conformance table and the property tests.

mod conformance;
mod harness;
mod properties;
