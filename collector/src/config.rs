//! The collector's YAML configuration: parsed strictly (unknown keys fail with their path),
//! then validated once into values the rest of the collector trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::controller::state::NodeId;
use crate::storage::{FlushPolicy, LogConfig};

/// Why a configuration was refused. The key path says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid {key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoterConfig {
    pub id: NodeId,
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    #[serde(default)]
    pub voters: Vec<VoterConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicDefaults {
    /// Create a topic on first produce.
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    /// Unset: min(3, live brokers).
    pub default_replication_factor: Option<u16>,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u64,
    pub segment_index_bytes: u64,
    /// `-1` keeps data forever.
    pub retention_ms: i64,
    /// `-1` = no size limit.
    pub retention_bytes: i64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            auto_create_topics: true,
            default_partitions: 3,
            default_replication_factor: None,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            index_interval_bytes: log.index_interval_bytes,
            segment_index_bytes: log.segment_index_bytes,
            retention_ms: log.retention_ms.unwrap_or(-1),
            retention_bytes: -1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlushSection {
    /// `always` (group commit before acknowledging), `interval` or `never`.
    pub policy: String,
    pub interval_ms: u64,
}

impl Default for FlushSection {
    fn default() -> Self {
        Self {
            policy: "always".into(),
            interval_ms: 1000,
        }
    }
}

/// Upper bound of `limits.sequence_gap_wait_ms` (a waiting batch holds a request slot).
pub const SEQUENCE_GAP_WAIT_MS_MAX: u64 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (produce); larger ones get 413 without being buffered.
    pub max_request_bytes: u64,
    /// Client API (`/v1`) requests handled at once, all routes together; more wait.
    /// `/health`, `/metrics` and broker-to-broker replication are not counted.
    pub max_in_flight_requests: usize,
    /// Request body bytes held in memory at once across all requests.
    pub max_in_flight_bytes: u64,
    /// Largest records block a batch may decompress to (the decompression-bomb guard).
    pub max_uncompressed_batch_bytes: u64,
    /// Longest long-poll a fetch may ask for.
    pub max_fetch_wait_ms: u64,
    /// Largest fetch reply.
    pub max_fetch_bytes: u64,
    /// Open read handles kept for closed segments.
    pub open_segment_files_max: usize,
    /// Records one JSON produce may carry.
    pub max_json_records: usize,
    /// HTTP connections open at once; more are closed on arrival.
    pub connections_max: usize,
    /// HTTP connections open at once from one client address.
    pub connections_per_address_max: usize,
    /// Time a client has to send a request's head; also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout_ms: u64,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout_ms: u64,
    /// Longest pause between two pieces of a request body.
    pub body_read_timeout_ms: u64,
    /// After that grace, a body must arrive at least this fast (a slower one gets 408).
    pub body_min_bytes_per_sec: u64,
    /// Longest wait of an idempotent batch that arrives ahead of its producer's next
    /// sequence for the batch before it (0: refuse it at once). Clients with several
    /// batches of a partition in flight on different connections (the agent) need it.
    pub sequence_gap_wait_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_in_flight_requests: 512,
            max_in_flight_bytes: 256 << 20,
            max_uncompressed_batch_bytes: 256 << 20,
            max_fetch_wait_ms: 30_000,
            max_fetch_bytes: 64 << 20,
            open_segment_files_max: crate::storage::file_cache::OPEN_SEGMENT_FILES_MAX_DEFAULT,
            max_json_records: 10_000,
            connections_max: 10_000,
            connections_per_address_max: 1_000,
            header_read_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            body_min_bytes_per_sec: 64 * 1024,
            sequence_gap_wait_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsSection {
    /// A member silent for this long is removed and its partitions move.
    pub session_timeout_ms: u64,
    /// How often members are asked to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Committed offsets of a group with no members are kept this long.
    pub offsets_retention_ms: i64,
    pub max_members_per_group: usize,
    pub max_groups: usize,
}

impl Default for GroupsSection {
    fn default() -> Self {
        Self {
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            max_members_per_group: 1_000,
            max_groups: 10_000,
        }
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub node_id: NodeId,
    pub listen: String,
    /// Address other nodes and clients use to reach this one (default: `listen`).
    pub advertise: Option<String>,
    /// Serving a non-loopback address without TLS must be asked for explicitly (the
    /// collector then warns at start and every hour). `allow_non_loopback` is the old name.
    #[serde(alias = "allow_non_loopback")]
    pub insecure_plaintext: bool,
    /// TLS on the HTTP and Kafka listeners, and on this node's calls to other brokers.
    pub tls: Option<crate::server::tls::TlsSection>,
    /// `none` (everyone may do everything) or `acls` (Kafka's ACL model).
    pub authorization: crate::auth::Mode,
    /// Principals allowed everything (`User:admin`).
    pub superusers: Vec<String>,
    /// Bearer tokens accepted (salted hashes, one per line; `collector tokens create`).
    pub tokens_file: Option<PathBuf>,
    /// Which part of a client certificate names its principal: `cn` or `san`.
    pub principal_from_certificate: crate::auth::CertificateName,
    /// SASL users of the Kafka listener (SCRAM salted keys; `collector sasl-users add`).
    /// When set, Kafka connections without a client certificate must authenticate.
    pub sasl_users_file: Option<PathBuf>,
    /// The Kafka protocol listener (`null` turns it off).
    pub kafka_listen: Option<String>,
    /// `host:port` Kafka clients are told to use for this broker (default: `kafka_listen`).
    pub kafka_advertise: Option<String>,
    /// Largest Kafka request frame accepted; a larger one closes the connection.
    pub kafka_request_bytes_max: u64,
    /// Kafka client connections served at once; more wait to be accepted.
    pub kafka_connections_max: usize,
    pub data_dirs: Vec<PathBuf>,
    /// Create data directories that do not exist. Off by default when `data_dirs` is set:
    /// a missing directory usually means a disk that is not mounted, and creating it would
    /// put the data on the root filesystem. (The default `./data` is always created.)
    pub create_data_dirs: Option<bool>,
    pub controller: ControllerSection,
    pub topics: TopicDefaults,
    pub flush: FlushSection,
    pub limits: Limits,
    pub groups: GroupsSection,
    /// Forget idle producers' deduplication state after this long.
    pub producer_id_expiration_ms: i64,
    /// A broker the active controller has not heard from for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// A follower not caught up for this long leaves the ISR.
    pub replica_lag_max_ms: u64,
    /// Electing a leader from outside the ISR (losing data) is not supported; must be false.
    pub unclean_leader_election: bool,
    /// How often a broker heartbeats to the active controller.
    pub broker_heartbeat_interval_ms: u64,
    /// How often retention runs.
    pub retention_check_interval_ms: u64,
    /// How often recovery points are checkpointed (bounds crash-recovery work).
    pub recovery_point_interval_ms: u64,
    /// Peer addresses this node dials elsewhere (`advertised host:port` → `host:port`):
    /// a private interface between brokers, or a relay. Raft, replication and forwarded
    /// requests all follow it; clients are told the advertised addresses as before.
    pub dial_overrides: std::collections::BTreeMap<String, String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: "127.0.0.1:7400".into(),
            advertise: None,
            insecure_plaintext: false,
            tls: None,
            authorization: crate::auth::Mode::None,
            superusers: Vec::new(),
            tokens_file: None,
            principal_from_certificate: crate::auth::CertificateName::Cn,
            sasl_users_file: None,
            kafka_listen: Some("127.0.0.1:9092".into()),
            kafka_advertise: None,
            kafka_request_bytes_max: 100 << 20,
            kafka_connections_max: 1_000,
            data_dirs: vec![PathBuf::from("./data")],
            create_data_dirs: None,
            controller: ControllerSection::default(),
            topics: TopicDefaults::default(),
            flush: FlushSection::default(),
            limits: Limits::default(),
            groups: GroupsSection::default(),
            producer_id_expiration_ms: 7 * 24 * 3600 * 1000,
            broker_session_timeout_ms: 6_000,
            replica_lag_max_ms: 10_000,
            unclean_leader_election: false,
            broker_heartbeat_interval_ms: 1_000,
            retention_check_interval_ms: 60_000,
            recovery_point_interval_ms: 10_000,
            dial_overrides: Default::default(),
        }
    }
}

/// The Kafka listener's settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub listen: SocketAddr,
    /// What Metadata tells clients; `None`: the bound address.
    pub advertise: Option<String>,
    pub request_bytes_max: u64,
    pub connections_max: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub listen: SocketAddr,
    pub advertise: String,
    /// The Kafka listener, when on.
    pub kafka: Option<KafkaConfig>,
    /// TLS on both listeners and on calls to other brokers.
    pub tls: Option<crate::server::tls::TlsSection>,
    /// A listener serves a non-loopback address without TLS (`insecure_plaintext`).
    pub exposed_plaintext: bool,
    pub authorization: crate::auth::Mode,
    pub superusers: Vec<String>,
    pub tokens_file: Option<PathBuf>,
    pub principal_from_certificate: crate::auth::CertificateName,
    pub sasl_users_file: Option<PathBuf>,
    pub data_dirs: Vec<PathBuf>,
    /// Whether missing data directories are created (else the collector refuses to start).
    pub create_data_dirs: bool,
    /// `(id, address)`; a single-node default when the file names none.
    pub voters: Vec<(NodeId, String)>,
    pub topics: TopicDefaults,
    /// Storage settings of a topic that sets nothing itself.
    pub log: LogConfig,
    pub limits: Limits,
    pub groups: GroupsSection,
    pub producer_id_expiration_ms: i64,
    pub broker_session_timeout: Duration,
    pub broker_heartbeat_interval: Duration,
    pub replica_lag_max: Duration,
    pub retention_check_interval: Duration,
    pub recovery_point_interval: Duration,
    /// See [`RawConfig::dial_overrides`].
    pub dial_overrides: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

impl Config {
    /// Reads, parses and validates a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                path: e.path().to_string(),
                message: shared::report::config_message(
                    &e.path().to_string(),
                    &e.inner().to_string(),
                ),
            })?;
        Self::validate(raw)
    }

    /// The configuration of `collector serve` without `--config`.
    pub fn single_node_default() -> Result<Self, ConfigError> {
        Self::validate(RawConfig::default())
    }

    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen: SocketAddr = raw
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("{:?} is not host:port: {e}", raw.listen)))?;
        let plaintext = raw.tls.is_none();
        if plaintext && !listen.ip().is_loopback() && !raw.insecure_plaintext {
            return Err(invalid(
                "listen",
                format!(
                    "{listen} is not a loopback address and there is no tls: section: anyone \
                     on the network could read and write every topic. Configure tls \
                     (cert_file, key_file, ca_file; `collector certs init` makes a \
                     development set), or set insecure_plaintext: true to serve plaintext on \
                     purpose"
                ),
            ));
        }
        let mut exposed_plaintext = plaintext && !listen.ip().is_loopback();
        let advertise = raw.advertise.clone().unwrap_or_else(|| listen.to_string());
        let kafka = match &raw.kafka_listen {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|e| {
                    invalid("kafka_listen", format!("{text:?} is not host:port: {e}"))
                })?;
                if plaintext && !addr.ip().is_loopback() && !raw.insecure_plaintext {
                    return Err(invalid(
                        "kafka_listen",
                        format!(
                            "{addr} is not a loopback address and there is no tls: section. \
                             Configure tls, or set insecure_plaintext: true to serve \
                             plaintext Kafka on purpose"
                        ),
                    ));
                }
                exposed_plaintext |= plaintext && !addr.ip().is_loopback();
                if raw.kafka_request_bytes_max < 1024 {
                    return Err(invalid("kafka_request_bytes_max", "at least 1024"));
                }
                if raw.kafka_connections_max == 0 {
                    return Err(invalid("kafka_connections_max", "at least 1"));
                }
                Some(KafkaConfig {
                    listen: addr,
                    advertise: raw.kafka_advertise.clone(),
                    request_bytes_max: raw.kafka_request_bytes_max,
                    connections_max: raw.kafka_connections_max,
                })
            }
        };
        if raw.authorization == crate::auth::Mode::Acls {
            let certs = raw
                .tls
                .as_ref()
                .is_some_and(|t| t.client_auth != crate::server::tls::ClientAuth::None);
            if !certs {
                return Err(invalid(
                    "authorization",
                    "acls needs tls with client_auth optional or required: brokers prove who \
                     they are to each other with their certificates (clients may use \
                     certificates or bearer tokens from tokens_file)",
                ));
            }
        }
        for u in &raw.superusers {
            if !(u.starts_with("User:") || u.starts_with("broker:")) || u.len() < 6 {
                return Err(invalid(
                    "superusers",
                    format!("{u:?}: a principal is User:<name> (or broker:<id>)"),
                ));
            }
        }
        if raw.data_dirs.is_empty() {
            return Err(invalid("data_dirs", "at least one directory is needed"));
        }
        let voters: Vec<(NodeId, String)> = if raw.controller.voters.is_empty() {
            vec![(raw.node_id, advertise.clone())]
        } else {
            raw.controller
                .voters
                .iter()
                .map(|v| (v.id, v.address.clone()))
                .collect()
        };
        if ![1, 3, 5].contains(&voters.len()) {
            return Err(invalid(
                "controller.voters",
                format!("{} voters: use 1, 3 or 5", voters.len()),
            ));
        }
        let t = &raw.topics;
        if t.default_partitions == 0 {
            return Err(invalid("topics.default_partitions", "must be positive"));
        }
        if t.default_replication_factor == Some(0) {
            return Err(invalid(
                "topics.default_replication_factor",
                "must be positive (or unset: min(3, live brokers))",
            ));
        }
        let flush = match raw.flush.policy.as_str() {
            "always" => FlushPolicy::Always,
            "never" => FlushPolicy::Never,
            "interval" => FlushPolicy::Interval(Duration::from_millis(raw.flush.interval_ms)),
            other => {
                return Err(invalid(
                    "flush.policy",
                    format!("{other:?}: use always, interval or never"),
                ));
            }
        };
        let log = LogConfig {
            segment_bytes: t.segment_bytes,
            segment_ms: t.segment_ms,
            index_interval_bytes: t.index_interval_bytes,
            segment_index_bytes: t.segment_index_bytes,
            retention_ms: (t.retention_ms >= 0).then_some(t.retention_ms),
            retention_bytes: u64::try_from(t.retention_bytes).ok(),
            flush,
        };
        log.validate().map_err(|e| match e {
            crate::storage::StorageError::Config { key, reason } => {
                invalid(&format!("topics.{key}"), reason)
            }
            other => invalid("topics", other.to_string()),
        })?;
        let l = &raw.limits;
        if l.max_request_bytes < 1024
            || l.max_request_bytes as usize > crate::storage::segment::BATCH_BYTES_MAX_ON_DISK
        {
            return Err(invalid(
                "limits.max_request_bytes",
                format!(
                    "must be 1 KiB..={} bytes",
                    crate::storage::segment::BATCH_BYTES_MAX_ON_DISK
                ),
            ));
        }
        if l.max_in_flight_bytes < l.max_request_bytes {
            return Err(invalid(
                "limits.max_in_flight_bytes",
                "must be at least max_request_bytes",
            ));
        }
        if l.max_in_flight_requests == 0
            || l.connections_max == 0
            || l.connections_per_address_max == 0
            || l.header_read_timeout_ms == 0
            || l.tls_handshake_timeout_ms == 0
            || l.body_read_timeout_ms == 0
            || l.body_min_bytes_per_sec == 0
            || l.open_segment_files_max == 0
            || l.max_fetch_bytes == 0
            || l.max_json_records == 0
        {
            return Err(invalid("limits", "every limit must be positive"));
        }
        if l.sequence_gap_wait_ms > SEQUENCE_GAP_WAIT_MS_MAX {
            return Err(invalid(
                "limits.sequence_gap_wait_ms",
                format!("must be at most {SEQUENCE_GAP_WAIT_MS_MAX}"),
            ));
        }
        let g = &raw.groups;
        if g.heartbeat_interval_ms == 0 || g.session_timeout_ms < 2 * g.heartbeat_interval_ms {
            return Err(invalid(
                "groups.session_timeout_ms",
                "must be at least twice groups.heartbeat_interval_ms, which must be positive",
            ));
        }
        if g.offsets_retention_ms <= 0 || g.max_members_per_group == 0 || g.max_groups == 0 {
            return Err(invalid("groups", "every limit must be positive"));
        }
        if raw.broker_heartbeat_interval_ms == 0
            || raw.broker_session_timeout_ms < 2 * raw.broker_heartbeat_interval_ms
        {
            return Err(invalid(
                "broker_session_timeout_ms",
                "must be at least twice broker_heartbeat_interval_ms, which must be positive",
            ));
        }
        if raw.unclean_leader_election {
            return Err(invalid(
                "unclean_leader_election",
                "true is not supported: a leader is only ever elected from the ISR",
            ));
        }
        if raw.replica_lag_max_ms == 0 {
            return Err(invalid("replica_lag_max_ms", "must be positive"));
        }
        if raw.producer_id_expiration_ms <= 0 {
            return Err(invalid("producer_id_expiration_ms", "must be positive"));
        }
        if raw.retention_check_interval_ms == 0 || raw.recovery_point_interval_ms == 0 {
            return Err(invalid(
                "retention_check_interval_ms",
                "intervals must be positive",
            ));
        }
        for (from, to) in &raw.dial_overrides {
            for a in [from, to] {
                if a.is_empty() || a.contains('/') || !a.contains(':') {
                    return Err(invalid(
                        "dial_overrides",
                        format!("{a:?} is not a host:port address"),
                    ));
                }
            }
        }
        Ok(Self {
            node_id: raw.node_id,
            listen,
            advertise,
            kafka,
            tls: raw.tls,
            exposed_plaintext,
            authorization: raw.authorization,
            superusers: raw.superusers,
            tokens_file: raw.tokens_file,
            principal_from_certificate: raw.principal_from_certificate,
            sasl_users_file: raw.sasl_users_file,
            create_data_dirs: raw
                .create_data_dirs
                .unwrap_or(raw.data_dirs == [PathBuf::from("./data")]),
            data_dirs: raw.data_dirs,
            voters,
            topics: raw.topics,
            log,
            limits: raw.limits,
            groups: raw.groups,
            producer_id_expiration_ms: raw.producer_id_expiration_ms,
            broker_session_timeout: Duration::from_millis(raw.broker_session_timeout_ms),
            broker_heartbeat_interval: Duration::from_millis(raw.broker_heartbeat_interval_ms),
            replica_lag_max: Duration::from_millis(raw.replica_lag_max_ms),
            retention_check_interval: Duration::from_millis(raw.retention_check_interval_ms),
            recovery_point_interval: Duration::from_millis(raw.recovery_point_interval_ms),
            dial_overrides: std::sync::Arc::new(raw.dial_overrides),
        })
    }

    /// Batch limits the API enforces.
    pub fn batch_limits(&self) -> shared::BatchLimits {
        shared::BatchLimits {
            batch_bytes_max: self.limits.max_request_bytes as usize,
            uncompressed_bytes_max: self.limits.max_uncompressed_batch_bytes as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_their_path() {
        let e = Config::parse("limits:\n  max_requst_bytes: 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits"), "{e}");
        assert!(e.contains("max_requst_bytes"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let e = Config::parse("flush:\n  policy: sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush.policy"), "{e}");
        let e = Config::parse("listen: 0.0.0.0:7400\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("insecure_plaintext"), "{e}");
        let c = Config::parse("listen: 0.0.0.0:7400\ninsecure_plaintext: true\n").unwrap();
        assert!(c.exposed_plaintext);
        // The old name still reads.
        assert!(Config::parse("listen: 0.0.0.0:7400\nallow_non_loopback: true\n").is_ok());
        // With TLS, no flag is needed.
        let c =
            Config::parse("listen: 0.0.0.0:7400\ntls: {cert_file: c, key_file: k, ca_file: a}\n")
                .unwrap();
        assert!(!c.exposed_plaintext);
        let e = Config::parse("kafka_listen: 0.0.0.0:9092\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kafka_listen") && e.contains("insecure_plaintext"),
            "{e}"
        );
        let e = Config::parse("topics:\n  segment_bytes: 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("topics.segment_bytes"), "{e}");
        let e = Config::parse("limits:\n  sequence_gap_wait_ms: 600000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.sequence_gap_wait_ms"), "{e}");
        assert!(Config::parse("limits:\n  sequence_gap_wait_ms: 0\n").is_ok());
    }

    #[test]
    fn empty_file_is_the_single_node_default() {
        let c = Config::parse("{}").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.voters, vec![(1, "127.0.0.1:7400".to_string())]);
    }

    #[test]
    fn dial_overrides_take_host_port_pairs_only() {
        let c =
            Config::parse("dial_overrides:\n  \"10.0.0.6:7400\": \"192.168.1.6:7400\"\n").unwrap();
        let client = client::ClientConfig {
            dial_overrides: c.dial_overrides.clone(),
            ..client::ClientConfig::default()
        };
        assert_eq!(client.base_url("10.0.0.6:7400"), "http://192.168.1.6:7400");
        assert_eq!(client.base_url("10.0.0.7:7400"), "http://10.0.0.7:7400");
        let e = Config::parse("dial_overrides:\n  \"10.0.0.6:7400\": \"http://x/\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dial_overrides"), "{e}");
    }
}
