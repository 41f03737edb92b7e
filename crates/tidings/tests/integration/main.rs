//! Integration tests of the `tidings` binary as a process, against real servers on
//! 127.0.0.1:0: one module per subcommand, its configuration, and a hub that is killed
//! and restarted; `shutdown` ends one with SIGTERM while a peer never reads; `readme` runs
//! the README's first screen verbatim with bash; `bench` runs the load generator against a hub;
//! `nginx` runs Debian's nginx in front of a hub with the documented configuration.

mod bench;
mod cli;
mod cluster;
mod crash;
mod listen;
mod mistakes;
mod nginx;
mod observability;
mod process;
mod readme;
mod shutdown;
mod tls;
