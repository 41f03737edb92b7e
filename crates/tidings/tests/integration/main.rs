//! Integration tests of the `tidings` binary, run as a process against real servers on
//! 127.0.0.1:0. One module per subcommand.

mod listen;
