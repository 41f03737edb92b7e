//! Integration tests of the hub over real sockets: each test starts a hub on
//! `127.0.0.1:0` and talks to it with reqwest, reading streams with `tidings_wire`.
//! `log` tests the history log on its own, across processes; `server` the server loop
//! under hostile peers; `app` the hub mounted in an application served by axum.

mod api;
mod app;
mod history;
mod lean;
mod lifecycle;
mod log;
mod observability;
mod private;
mod protocol;
mod redis_log;
mod resume;
mod selectors;
mod server;
mod slow;
mod storage;
mod support;
mod tls;
