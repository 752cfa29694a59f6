//! `agent`: the Tributary log shipper. Parses arguments and calls the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agent",
    version,
    about = "Tributary agent: tail log files, ship every line exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (tailing and shipping are not available in this build yet).
    Run {
        #[arg(long, default_value = "/etc/tributary/agent.yaml")]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 when valid).
    CheckConfig { file: PathBuf },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            agent::config::Config::load(&file)
                .with_context(|| format!("config {}", file.display()))?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Run { config } => {
            agent::config::Config::load(&config)
                .with_context(|| format!("config {}", config.display()))?;
            anyhow::bail!(
                "agent run is not available in this build yet: the config is valid, but the \
                 tailer and shipper are still being built"
            )
        }
    }
}
