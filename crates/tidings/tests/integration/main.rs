//! Tests of the `tidings` binary as a process: its subcommands, configuration, and a
//! hub that is killed and restarted.

mod cli;
mod crash;
mod process;
