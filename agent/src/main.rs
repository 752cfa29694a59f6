//! `agent`: the Tributary log shipper. Tailing and shipping land with the agent issue; until
//! then the binary says so plainly instead of pretending to run.

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
    /// Run the agent (not available in this build yet).
    Run {
        #[arg(long, default_value = "/etc/tributary/agent.yaml")]
        config: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => anyhow::bail!(
            "agent run is not available in this build yet (config {} not read): \
             the tailer and shipper are still being built",
            config.display()
        ),
    }
}
