//! `collector`: the Tributary broker. Parses arguments and calls the library.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "collector", version, about = "Tributary collector: replicated, segmented log storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (not available in this build yet).
    Serve {
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { .. } => anyhow::bail!(
            "collector serve is not available in this build yet: the storage layer is built, \
             the HTTP server is the next step"
        ),
    }
}
