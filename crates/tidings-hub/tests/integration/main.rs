//! Integration tests of the hub over real sockets.

mod log;
