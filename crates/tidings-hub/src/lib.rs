//! # tidings-hub
//!
//! A Mercure-compatible Server-Sent Events hub as a library.

pub mod auth;
pub mod log;
pub mod topic;
pub mod web;
