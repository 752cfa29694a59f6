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
    /// Run the agent: tail the configured files and ship every line exactly once.
    Run {
        /// The YAML config file.
        #[arg(long, default_value = "/etc/tributary/agent.yaml")]
        config: PathBuf,
        /// Forget all state (checkpoints, journal, producer id) and start over. Lines
        /// already shipped may be shipped again.
        #[arg(long)]
        reset_state: bool,
    },
    /// Validate a config file and exit (0 when valid). Input patterns that match no file
    /// are reported as warnings.
    CheckConfig {
        /// The config file (also accepted as `--config FILE`, as for `run`).
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Registered now, not when the future is first polled: a SIGTERM arriving while the
    // agent starts (its metrics may already answer) must stop it cleanly, not kill it.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let mut term = match term {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
}

/// SIGHUP (systemd's ExecReload): re-read the config file; a valid one is handed to the
/// running agent, an invalid one is reported and the agent goes on with the old.
fn watch_reload(path: PathBuf) -> tokio::sync::mpsc::Receiver<agent::config::Config> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot watch SIGHUP; config reload is unavailable");
            return;
        };
        while hup.recv().await.is_some() {
            match agent::config::Config::load(&path) {
                Ok(cfg) => {
                    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
                    if tx.send(cfg).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(
                    config = %path.display(),
                    error = %e,
                    "SIGHUP: the new configuration is invalid; keeping the running one"
                ),
            }
        }
    });
    rx
}

fn main() -> std::process::ExitCode {
    shared::report::exit(run_cli())
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::CheckConfig { file, config } => {
            let Some(file) = file.or(config) else {
                anyhow::bail!("name the config file: agent check-config FILE");
            };
            let cfg = agent::config::Config::load(&file)
                .with_context(|| format!("config {}", file.display()))?;
            for input in &cfg.inputs {
                for p in &input.paths {
                    if let Some(why) = agent::files::pattern_problem(p.as_str()) {
                        eprintln!("warning: input matches nothing: {why}");
                    }
                }
            }
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Run {
            config,
            reset_state,
        } => {
            let cfg = agent::config::Config::load(&config)
                .with_context(|| format!("config {}", config.display()))?;
            if reset_state {
                let path = cfg.state_dir.join(agent::state::STATE_FILE);
                match std::fs::remove_file(&path) {
                    Ok(()) => eprintln!("removed {}", path.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", path.display()));
                    }
                }
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let reload = watch_reload(config.clone());
                agent::run::run(cfg, shutdown_signal(), reload, || {
                    // systemd Type=notify: state loaded, tailing started (collectors may
                    // still be down: they are reached in the background).
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                    println!("agent ready");
                })
                .await
            })?;
            Ok(())
        }
    }
}
