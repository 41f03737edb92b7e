//! Integration tests of `tidings-client` against a real HTTP server on 127.0.0.1:0, one
//! module per group of rules of the EventSource standard.

mod reconnect;
mod request;
mod response;
mod restart;
mod server;
mod stream;
