//! `tidings listen`: arrives with the client (issue 3).

use std::process::ExitCode;

/// Options of `tidings listen`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stream's URL.
    url: String,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("listen is not built yet ({})", args.url)
}
