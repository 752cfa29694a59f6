//! `collector`: the Tributary broker. Parses arguments, loads the config, calls the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use collector::admin::{self, AdminClient, Output};
use collector::config::Config;
use collector::loadgen;
use collector::tail::{self, Format, StartFrom, TailOptions};

#[derive(Parser, Debug)]
#[command(
    name = "collector",
    version,
    about = "Tributary collector: replicated, segmented log storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which collectors a client command talks to.
#[derive(clap::Args, Debug, Clone)]
struct Target {
    /// Collector URLs, comma-separated or repeated; the first that answers is used (any
    /// node of a cluster serves the whole API).
    #[arg(
        long = "collector",
        global = true,
        env = "TRIBUTARY_COLLECTORS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7400"
    )]
    collectors: Vec<String>,
    /// CA certificates (PEM) to trust the collectors' TLS certificates with; turns TLS on
    /// (`https://` for addresses given without a scheme).
    #[arg(long, global = true, env = "TRIBUTARY_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for collectors that ask for one.
    #[arg(long, global = true, env = "TRIBUTARY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = "TRIBUTARY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Check the collectors' certificates against this name instead of each address's host.
    #[arg(long, global = true, env = "TRIBUTARY_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// A file holding a bearer token (`collector tokens create`) to authenticate with.
    #[arg(long, global = true, env = "TRIBUTARY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl Target {
    /// The client settings these flags ask for.
    fn client(&self) -> anyhow::Result<client::ClientConfig> {
        let tls = match &self.tls_ca {
            None => {
                if self.tls_cert.is_some() || self.tls_server_name.is_some() {
                    anyhow::bail!("--tls-cert and --tls-server-name need --tls-ca");
                }
                None
            }
            Some(ca) => Some(
                client::tls::client_config(&client::tls::TlsFiles {
                    ca_file: ca.clone(),
                    cert_file: self.tls_cert.clone(),
                    key_file: self.tls_key.clone(),
                    server_name: self.tls_server_name.clone(),
                })
                .context("TLS")?,
            ),
        };
        let token = match &self.token_file {
            Some(f) => Some(client::Token::from_file(f)?),
            None => None,
        };
        Ok(client::ClientConfig {
            tls,
            token,
            ..client::ClientConfig::default()
        })
    }

    /// The first collector that answers, and the client settings to talk to it with.
    async fn pick(&self) -> anyhow::Result<(String, client::ClientConfig)> {
        let config = self.client()?;
        Ok((admin::bootstrap(&self.collectors, &config).await?, config))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a collector. Without --config: one node, data in ./data, on 127.0.0.1:7400.
    Serve {
        /// The YAML config file (see config/collector.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit (0 when valid).
    CheckConfig {
        /// The config file (also accepted as `--config FILE`, as for `serve`).
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load tool: produce generated log lines, or consume a topic, and report figures.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
        #[command(flatten)]
        target: Target,
        /// table: for people; json: for scripts.
        #[arg(long, global = true, value_enum, default_value = "table")]
        output: Output,
    },
    /// Join a consumer group and print its share of a topic's records to stdout.
    Tail {
        /// The consumer group: its members share the topic's partitions.
        #[arg(long)]
        group: String,
        /// The topic to read.
        #[arg(long, default_value = "logs")]
        topic: String,
        /// Where to start on partitions the group has no committed offset for.
        #[arg(long, value_enum, default_value = "earliest")]
        from: StartFrom,
        /// raw: the record's value as a line; json: one object per record.
        #[arg(long = "output", alias = "format", value_enum, default_value = "raw")]
        format: Format,
        #[command(flatten)]
        target: Target,
        /// Exit once caught up with the high watermarks seen at start.
        #[arg(long)]
        no_follow: bool,
        /// Print throughput and lag to stderr every 5 s.
        #[arg(long)]
        stats: bool,
        /// How often printed positions are committed.
        #[arg(long, default_value_t = 1000)]
        commit_interval_ms: u64,
        /// Largest fetch reply asked for.
        #[arg(long, default_value_t = 4 << 20)]
        fetch_bytes: u64,
        /// Rendered chunks queued ahead of stdout.
        #[arg(long, default_value_t = 8)]
        queue_chunks: usize,
    },
    /// The cluster as a node sees it: controller (Raft) state and broker liveness.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        target: Target,
        /// table: for people; json: for scripts.
        #[arg(long, global = true, value_enum, default_value = "table")]
        output: Output,
    },
    /// Consumer-group admin over the HTTP API.
    Groups {
        #[command(subcommand)]
        command: GroupsCommand,
        #[command(flatten)]
        target: Target,
        /// table: for people; json: for scripts.
        #[arg(long, global = true, value_enum, default_value = "table")]
        output: Output,
    },
    /// Access control lists (Kafka's model), kept in the cluster metadata.
    Acls {
        #[command(subcommand)]
        command: AclsCommand,
        #[command(flatten)]
        target: Target,
        /// table: for people; json: for scripts.
        #[arg(long, global = true, value_enum, default_value = "table")]
        output: Output,
    },
    /// SASL users of the Kafka listener (PLAIN and SCRAM-SHA-256/512).
    SaslUsers {
        #[command(subcommand)]
        command: SaslUsersCommand,
    },
    /// Bearer tokens for clients.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Development certificates: a CA, node and client certificates for trying TLS (not
    /// a production CA: its key is a plain file).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Topic admin over the HTTP API.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
        #[command(flatten)]
        target: Target,
        /// table: for people; json: for scripts.
        #[arg(long, global = true, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand, Debug)]
enum SaslUsersCommand {
    /// Add NAME (principal User:NAME) with the password read from stdin's first line:
    /// SCRAM-SHA-256 and SCRAM-SHA-512 salted keys are appended to the file (created mode
    /// 0600); the password is not stored. Reload the collectors (SIGHUP).
    Add {
        name: String,
        /// The collectors' `sasl_users_file`.
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TokensCommand {
    /// Make a token for NAME (principal User:NAME): printed once on stdout; only its salted
    /// hash is appended to the token file (created mode 0600). Reload collectors (SIGHUP).
    Create {
        name: String,
        /// The collectors' `tokens_file`.
        #[arg(long)]
        file: PathBuf,
    },
}

/// Which resource an ACL command is about.
#[derive(clap::Args, Debug, Clone)]
struct AclSelector {
    /// `User:<name>`, `User:*` or `broker:<id>`.
    #[arg(long)]
    principal: Option<String>,
    /// A topic (name or, with --prefixed, prefix; `*` for all).
    #[arg(long, conflicts_with_all = ["group", "cluster"])]
    topic: Option<String>,
    /// A consumer group (name or prefix; `*` for all).
    #[arg(long, conflicts_with = "cluster")]
    group: Option<String>,
    /// The cluster (topic creation, ACL administration, idempotent writes).
    #[arg(long)]
    cluster: bool,
    /// The name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// Operations: read, write, create, delete, alter, describe, describe-configs,
    /// alter-configs, idempotent-write, cluster-action, all.
    #[arg(long = "operation", value_enum)]
    operations: Vec<AclOperation>,
    /// Deny instead of allow (a DENY wins over any ALLOW).
    #[arg(long)]
    deny: bool,
    /// The client IP the ACL applies to (default: any).
    #[arg(long)]
    host: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    ClusterAction,
}

impl From<AclOperation> for api::acls::Operation {
    fn from(o: AclOperation) -> Self {
        use api::acls::Operation as O;
        match o {
            AclOperation::All => O::All,
            AclOperation::Read => O::Read,
            AclOperation::Write => O::Write,
            AclOperation::Create => O::Create,
            AclOperation::Delete => O::Delete,
            AclOperation::Alter => O::Alter,
            AclOperation::Describe => O::Describe,
            AclOperation::DescribeConfigs => O::DescribeConfigs,
            AclOperation::AlterConfigs => O::AlterConfigs,
            AclOperation::IdempotentWrite => O::IdempotentWrite,
            AclOperation::ClusterAction => O::ClusterAction,
        }
    }
}

impl AclSelector {
    fn resource(&self) -> Option<(api::acls::ResourceType, String)> {
        use api::acls::ResourceType as R;
        if let Some(t) = &self.topic {
            Some((R::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((R::Group, g.clone()))
        } else if self.cluster {
            Some((R::Cluster, api::acls::CLUSTER_RESOURCE.to_owned()))
        } else {
            None
        }
    }

    fn pattern(&self) -> api::acls::PatternType {
        if self.prefixed {
            api::acls::PatternType::Prefixed
        } else {
            api::acls::PatternType::Literal
        }
    }

    fn permission(&self) -> api::acls::Permission {
        if self.deny {
            api::acls::Permission::Deny
        } else {
            api::acls::Permission::Allow
        }
    }

    /// The ACLs `add` creates: one per operation.
    fn acls(&self) -> anyhow::Result<Vec<api::acls::Acl>> {
        let Some(principal) = self.principal.clone() else {
            anyhow::bail!("--principal is required");
        };
        let Some((resource_type, resource_name)) = self.resource() else {
            anyhow::bail!("name a resource: --topic, --group or --cluster");
        };
        if self.operations.is_empty() {
            anyhow::bail!("name at least one --operation");
        }
        Ok(self
            .operations
            .iter()
            .map(|o| api::acls::Acl {
                principal: principal.clone(),
                host: self.host.clone().unwrap_or_else(|| "*".into()),
                resource_type,
                resource_name: resource_name.clone(),
                pattern_type: self.pattern(),
                operation: (*o).into(),
                permission: self.permission(),
            })
            .collect())
    }

    /// The filter `list` and `remove` use: every field given must match.
    fn filter(&self, operation: Option<AclOperation>) -> api::acls::AclFilter {
        let resource = self.resource();
        api::acls::AclFilter {
            principal: self.principal.clone(),
            host: self.host.clone(),
            resource_type: resource.as_ref().map(|r| r.0),
            resource_name: resource.map(|r| r.1),
            pattern_type: self.prefixed.then_some(api::acls::PatternType::Prefixed),
            operation: operation.map(Into::into),
            permission: self.deny.then_some(api::acls::Permission::Deny),
        }
    }
}

#[derive(Subcommand, Debug)]
enum AclsCommand {
    /// Add ALLOW (or, with --deny, DENY) ACLs: one per --operation.
    Add {
        #[command(flatten)]
        selector: AclSelector,
    },
    /// List the ACLs matching every selector given (all without selectors).
    List {
        #[command(flatten)]
        selector: AclSelector,
    },
    /// Remove the ACLs matching every selector given (at least one is required).
    Remove {
        #[command(flatten)]
        selector: AclSelector,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Make a CA (ca.pem, ca-key.pem), node<i>.pem/node<i>-key.pem for the i-th host
    /// (CN broker:<i>, also valid for localhost and 127.0.0.1), and a certificate per
    /// client name. Never overwrites.
    Init {
        /// Where the files go.
        #[arg(long)]
        dir: PathBuf,
        /// Host names or IPs of the nodes, in node-id order.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// Client certificate names (CN).
        #[arg(long, value_delimiter = ',', default_value = "client")]
        clients: Vec<String>,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Sign one more client certificate (<name>.pem, <name>-key.pem) with the CA in --dir.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// The certificate's CN: the principal it proves.
        #[arg(long)]
        name: String,
        /// Days valid; a negative number makes one that already expired (to try refusals).
        #[arg(long, default_value_t = 365, allow_hyphen_values = true)]
        days: i64,
    },
}

#[derive(Subcommand, Debug)]
enum TopicsCommand {
    /// List topics.
    List,
    /// Show a topic's partitions: leader, replicas, ISR, offsets.
    Describe {
        /// The topic.
        name: String,
    },
    /// Create a topic.
    Create {
        /// The topic: letters, digits, `.`, `_`, `-` (at most 249).
        name: String,
        /// Number of partitions (default: the cluster's topics.partitions).
        #[arg(long)]
        partitions: Option<u32>,
        /// Copies of each partition on different brokers (default: min(3, live brokers)).
        #[arg(long)]
        replication_factor: Option<u16>,
        /// Topic configs as key=value (retention_ms, retention_bytes, segment_bytes, segment_ms, min_insync_replicas).
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, i64)>,
    },
    /// Delete a topic and its data.
    Delete {
        /// The topic.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Controller leader, term, log position, and every broker's liveness.
    Status,
}

#[derive(Subcommand, Debug)]
enum GroupsCommand {
    /// List groups (with members or with committed offsets).
    List,
    /// Per partition: owner, committed offset, high watermark, lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's committed offsets (refused while it has members).
    ResetOffsets {
        /// The group.
        group: String,
        /// The topic whose offsets move.
        #[arg(long)]
        topic: String,
        /// earliest | latest | offset:N | timestamp:MS
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Produce idempotent zstd batches of realistic generated log lines.
    Produce {
        /// Topic to produce to (created if missing).
        #[arg(long, default_value = "bench")]
        topic: String,
        /// Partitions of the topic when it is created.
        #[arg(long, default_value_t = 3)]
        partitions: u32,
        /// Bytes per generated record.
        #[arg(long, default_value_t = 200)]
        record_bytes: usize,
        /// Uncompressed bytes per batch.
        #[arg(long, default_value_t = 1 << 20)]
        batch_bytes: usize,
        /// 0, 1 or all.
        #[arg(long, default_value = "all")]
        acks: String,
        /// Concurrent producers (each with its own producer id).
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// e.g. 30s, 2m
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Records per second over all producers (default: as fast as possible).
        #[arg(long)]
        rate: Option<u64>,
        /// zstd level of the batches (0: no compression).
        #[arg(long, default_value_t = 3)]
        zstd_level: i32,
        /// Send the batches over the Kafka protocol to this bootstrap host:port instead of
        /// HTTP (the topic is still created over HTTP).
        #[arg(long)]
        kafka: Option<String>,
    },
    /// Write generated log files (the agent benchmark's input) and exit.
    WriteLogs {
        /// Directory to write into (created).
        #[arg(long)]
        dir: PathBuf,
        /// Number of files.
        #[arg(long, default_value_t = 10)]
        files: usize,
        /// Total bytes, e.g. 1073741824.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Bytes per line.
        #[arg(long, default_value_t = 200)]
        line_bytes: usize,
    },
    /// Read a topic from the start to its high watermarks.
    Consume {
        /// Topic to read.
        #[arg(long, default_value = "bench")]
        topic: String,
        /// Fetch over the Kafka protocol from this bootstrap host:port instead of HTTP.
        #[arg(long)]
        kafka: Option<String>,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|e| format!("{s:?}: {e}"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        other => Err(format!("{s:?}: unknown unit {other:?} (ms, s, m)")),
    }
}

async fn bench(
    command: BenchCommand,
    (collector, client): (String, client::ClientConfig),
    output: Output,
) -> anyhow::Result<()> {
    let report = match command {
        BenchCommand::Produce {
            topic,
            partitions,
            record_bytes,
            batch_bytes,
            acks,
            producers,
            duration,
            rate,
            zstd_level,
            kafka,
        } => {
            let opts = loadgen::ProduceOptions {
                collector,
                client,
                topic,
                partitions,
                record_bytes,
                batch_bytes,
                acks,
                producers,
                duration,
                rate,
                zstd_level,
                kafka,
            };
            loadgen::produce(opts, output == Output::Table).await?
        }
        BenchCommand::Consume { topic, kafka } => {
            loadgen::consume(&collector, client, &topic, kafka.as_deref()).await?
        }
        BenchCommand::WriteLogs {
            dir,
            files,
            bytes,
            line_bytes,
        } => {
            let started = std::time::Instant::now();
            let (lines, written) = tokio::task::spawn_blocking(move || {
                loadgen::write_logs(&dir, files, bytes, line_bytes)
            })
            .await??;
            let v = serde_json::json!({"mode": "write-logs", "lines": lines, "bytes": written, "seconds": started.elapsed().as_secs_f64()});
            if output == Output::Json {
                println!("{v}");
            } else {
                println!("wrote {lines} lines, {written} bytes");
            }
            return Ok(());
        }
    };
    match output {
        Output::Json => println!("{report}"),
        Output::Table => println!("{}", loadgen::render(&report)),
    }
    Ok(())
}

fn parse_kv(s: &str) -> Result<(String, i64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected key=value"))?;
    let v = v.parse().map_err(|e| format!("{k}: {e}"))?;
    Ok((k.to_owned(), v))
}

/// Prints a reply as JSON or through its human rendering.
fn print<T: serde::Serialize>(
    output: Output,
    v: &T,
    human: fn(&T) -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Table => println!("{}", human(v)),
    }
    Ok(())
}

async fn topics(
    command: TopicsCommand,
    (collector, client): (String, client::ClientConfig),
    output: Output,
) -> anyhow::Result<()> {
    let c = AdminClient::new(&collector, client)?;
    match command {
        TopicsCommand::List => print(output, &c.topics_list().await?, admin::render_topics),
        TopicsCommand::Describe { name } => {
            print(output, &c.topic_describe(&name).await?, admin::render_topic)
        }
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let t = c
                .topic_create(&name, partitions, replication_factor, &configs)
                .await?;
            print(output, &t, admin::render_topic)
        }
        TopicsCommand::Delete { name } => {
            c.topic_delete(&name).await?;
            print(output, &serde_json::json!({"deleted": name}), |v| {
                format!("deleted {}", v["deleted"].as_str().unwrap_or_default())
            })
        }
    }
}

async fn groups(
    command: GroupsCommand,
    (collector, client): (String, client::ClientConfig),
    output: Output,
) -> anyhow::Result<()> {
    let c = AdminClient::new(&collector, client)?;
    match command {
        GroupsCommand::List => print(output, &c.groups_list().await?, admin::render_groups),
        GroupsCommand::Describe { group } => print(
            output,
            &c.group_describe(&group).await?,
            admin::render_group,
        ),
        GroupsCommand::ResetOffsets { group, topic, to } => print(
            output,
            &c.group_reset_offsets(&group, &topic, &to).await?,
            admin::render_reset,
        ),
    }
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    match config {
        Some(path) => Config::load(path).with_context(|| format!("config {}", path.display())),
        None => Ok(Config::single_node_default()?),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

fn main() -> std::process::ExitCode {
    shared::report::exit(run_cli())
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    use tracing_subscriber::prelude::*;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn".into());
    // openraft reports every vote or heartbeat a peer did not answer as an ERROR (events
    // with `target` and `error` fields in raft_core), which is normal while peers start or
    // restart; the network layer reports unreachable peers as a rate-limited WARN instead.
    let peer_noise = tracing_subscriber::filter::filter_fn(|m| {
        !(m.target() == "openraft::core::raft_core"
            && *m.level() == tracing::Level::ERROR
            && m.fields().field("target").is_some()
            && m.fields().field("error").is_some())
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(env)
                .with_filter(peer_noise),
        )
        .init();
    match cli.command {
        Command::SaslUsers {
            command: SaslUsersCommand::Add { name, file },
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            collector::kafka::sasl::add_user(&file, &name, password).map_err(anyhow::Error::msg)?;
            eprintln!(
                "added User:{name} to {} (reload the collectors)",
                file.display()
            );
            Ok(())
        }
        Command::Tokens {
            command: TokensCommand::Create { name, file },
        } => {
            let token = collector::auth::create_token(&file, &name)?;
            eprintln!(
                "token for User:{name} (shown once; its hash was appended to {}; reload the collectors):",
                file.display()
            );
            println!("{token}");
            Ok(())
        }
        Command::Acls {
            command,
            target,
            output,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (collector, client) = rt.block_on(target.pick())?;
            let c = AdminClient::new(&collector, client)?;
            let list = match command {
                AclsCommand::Add { selector } => rt.block_on(c.acls_add(selector.acls()?))?,
                AclsCommand::List { selector } => {
                    let ops = selector.operations.first().copied();
                    rt.block_on(c.acls_list(&selector.filter(ops)))?
                }
                AclsCommand::Remove { selector } => {
                    let filter = selector.filter(selector.operations.first().copied());
                    if filter == api::acls::AclFilter::default() {
                        anyhow::bail!(
                            "name what to remove: --principal, --topic, --group, --cluster or --operation"
                        );
                    }
                    rt.block_on(c.acls_remove(&filter))?
                }
            };
            print(output, &list, admin::render_acls)
        }
        Command::Certs { command } => {
            let files = match command {
                CertsCommand::Init {
                    dir,
                    hosts,
                    clients,
                    days,
                } => collector::certs::init(&dir, &hosts, &clients, days)?,
                CertsCommand::Issue { dir, name, days } => {
                    collector::certs::issue(&dir, &name, days)?
                }
            };
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::CheckConfig { file, config } => {
            let Some(file) = file.or(config) else {
                anyhow::bail!("name the config file: collector check-config FILE");
            };
            load(Some(&file))?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Tail {
            group,
            topic,
            from,
            format,
            target,
            no_follow,
            stats,
            commit_interval_ms,
            fetch_bytes,
            queue_chunks,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let (first, client) = rt.block_on(target.pick())?;
            // Every collector given, the one that answered first in front: with only that
            // one, a member whose node died kept calling it and its group fell apart.
            let mut collectors = vec![first.clone()];
            collectors.extend(
                target
                    .collectors
                    .iter()
                    .map(|c| c.trim())
                    .filter(|c| !c.is_empty())
                    .map(|c| client.base_url(c))
                    .filter(|c| *c != first),
            );
            rt.block_on(tail::run(TailOptions {
                collectors,
                client,
                group,
                topic,
                from,
                format,
                follow: !no_follow,
                stats,
                commit_interval: std::time::Duration::from_millis(commit_interval_ms.max(10)),
                fetch_bytes: fetch_bytes.max(1),
                fetch_wait: std::time::Duration::from_millis(1000),
                queue_chunks,
            }))?;
            Ok(())
        }
        Command::Cluster {
            command: ClusterCommand::Status,
            target,
            output,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (collector, client) = rt.block_on(target.pick())?;
            let v = rt.block_on(AdminClient::new(&collector, client)?.cluster_status())?;
            print(output, &v, admin::render_cluster)
        }
        Command::Groups {
            command,
            target,
            output,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let picked = rt.block_on(target.pick())?;
            rt.block_on(groups(command, picked, output))
        }
        Command::Topics {
            command,
            target,
            output,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let picked = rt.block_on(target.pick())?;
            rt.block_on(topics(command, picked, output))
        }
        Command::Bench {
            command,
            target,
            output,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let picked = match command {
                BenchCommand::WriteLogs { .. } => (String::new(), client::ClientConfig::default()),
                _ => rt.block_on(target.pick())?,
            };
            rt.block_on(bench(command, picked, output))
        }
        Command::Serve { config } => {
            let config = load(config.as_ref())?;
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(collector::node::run(config, shutdown_signal(), |addr| {
                println!("collector listening on {scheme}://{addr}");
            }))?;
            Ok(())
        }
    }
}
