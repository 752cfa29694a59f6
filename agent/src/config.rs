//! The agent's YAML configuration (DESIGN §4), parsed strictly — unknown keys fail with their
//! path — and validated once into [`Config`], with errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

/// `p` itself when absolute, else under the current directory (`./` dropped).
fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let rel = p.strip_prefix(".").unwrap_or(p);
    Ok(std::env::current_dir()?.join(rel))
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMultiline {
    /// A line matching this starts a new record; others continue the previous one.
    pub start_pattern: Option<String>,
    /// A line matching this continues the previous record.
    pub continuation_pattern: Option<String>,
    #[serde(default = "default_multiline_lines")]
    pub max_lines: usize,
    #[serde(default = "default_multiline_timeout")]
    pub timeout_ms: u64,
}

fn default_multiline_lines() -> usize {
    500
}
fn default_multiline_timeout() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub paths: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub multiline: Option<RawMultiline>,
    /// `beginning` (default) or `end`: where to start in files present at first start.
    #[serde(default = "default_start_at")]
    pub start_at: String,
}

fn default_topic() -> String {
    "logs".into()
}
fn default_start_at() -> String {
    "beginning".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutput {
    pub collectors: Vec<String>,
    /// `0`, `1` or `all`.
    pub acks: serde_yaml::Value,
    pub linger_ms: u64,
    pub batch_bytes_max: usize,
    pub zstd_level: i32,
    pub in_flight_max: usize,
    pub request_timeout_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// TLS to the collectors (their addresses then use `https://`).
    pub tls: Option<client::tls::TlsFiles>,
    /// A file holding a bearer token (`collector tokens create`) sent with every request.
    pub token_file: Option<PathBuf>,
}

impl Default for RawOutput {
    fn default() -> Self {
        Self {
            collectors: vec!["http://127.0.0.1:7400".into()],
            acks: serde_yaml::Value::String("all".into()),
            linger_ms: 100,
            batch_bytes_max: 1 << 20,
            zstd_level: 3,
            in_flight_max: 5,
            request_timeout_ms: 30_000,
            retry_backoff_max_ms: 30_000,
            tls: None,
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub state_dir: PathBuf,
    pub inputs: Vec<RawInput>,
    pub output: RawOutput,
    /// Where `/metrics` and `/health` listen; unset = no listener.
    pub metrics_listen: Option<String>,
    /// Host name put in every record's `host` header (default: the machine's).
    pub host: Option<String>,
    pub max_line_bytes: usize,
    pub max_open_files: usize,
    pub read_chunk_bytes: usize,
    pub rescan_interval_ms: u64,
    /// Bytes read but not yet acknowledged, across all files; reading pauses above it.
    pub buffer_bytes_max: usize,
    /// A file no glob has matched for this long (deleted, or moved away) is forgotten: its
    /// checkpoint leaves the state file, which so stays small across rotations.
    pub forget_files_after_ms: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/tributary/agent"),
            inputs: Vec::new(),
            output: RawOutput::default(),
            metrics_listen: None,
            host: None,
            max_line_bytes: 256 << 10,
            max_open_files: 1024,
            read_chunk_bytes: 64 << 10,
            rescan_interval_ms: 1000,
            buffer_bytes_max: 8 << 20,
            forget_files_after_ms: 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    Zero,
    One,
    All,
}

impl Acks {
    pub fn as_query(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::One => "1",
            Acks::All => "all",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone)]
pub struct Multiline {
    pub start: Option<regex::bytes::Regex>,
    pub continuation: Option<regex::bytes::Regex>,
    pub max_lines: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub paths: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
    pub topic: String,
    pub labels: BTreeMap<String, String>,
    pub multiline: Option<Multiline>,
    pub start_at: StartAt,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub collectors: Vec<String>,
    pub acks: Acks,
    pub linger: Duration,
    pub batch_bytes_max: usize,
    pub zstd_level: i32,
    pub in_flight_max: usize,
    pub request_timeout: Duration,
    pub retry_backoff_max: Duration,
    /// Loaded from `output.tls` (files read at validation, so `check-config` sees them).
    pub tls: Option<std::sync::Arc<client::rustls::ClientConfig>>,
    /// Read from `output.token_file` at validation.
    pub token: Option<client::Token>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub inputs: Vec<Input>,
    pub output: Output,
    pub metrics_listen: Option<SocketAddr>,
    pub host: Option<String>,
    pub max_line_bytes: usize,
    pub max_open_files: usize,
    pub read_chunk_bytes: usize,
    pub rescan_interval: Duration,
    pub buffer_bytes_max: usize,
    pub forget_files_after: Duration,
}

/// Kafka's limit on in-flight requests per partition for idempotent producers.
pub const IN_FLIGHT_MAX_LIMIT: usize = 5;

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

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

    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.inputs.is_empty() {
            return Err(invalid("inputs", "at least one input is needed"));
        }
        let mut inputs = Vec::new();
        for (i, r) in raw.inputs.iter().enumerate() {
            let key = |k: &str| format!("inputs[{i}].{k}");
            if r.paths.is_empty() {
                return Err(invalid(key("paths"), "at least one glob is needed"));
            }
            let pattern = |k: &str, p: &str| {
                // A relative input path is taken from the directory the agent starts in (for
                // trying it out; a service names absolute paths).
                let p = if k == "paths" && !p.starts_with('/') {
                    absolute(std::path::Path::new(p))
                        .map_err(|e| invalid(key(k), format!("{p}: {e}")))?
                        .to_string_lossy()
                        .into_owned()
                } else {
                    p.to_owned()
                };
                glob::Pattern::new(&p).map_err(|e| invalid(key(k), format!("{p}: {e}")))
            };
            let paths = r
                .paths
                .iter()
                .map(|p| pattern("paths", p))
                .collect::<Result<Vec<_>, _>>()?;
            let exclude = r
                .exclude
                .iter()
                .map(|p| pattern("exclude", p))
                .collect::<Result<Vec<_>, _>>()?;
            shared::names::validate_topic(&r.topic)
                .map_err(|e| invalid(key("topic"), e.to_string()))?;
            for (k, v) in &r.labels {
                if k.is_empty() || k == "host" || k == "path" {
                    return Err(invalid(
                        key("labels"),
                        format!(
                            "label {k:?} is empty or reserved (host and path are set by the agent)"
                        ),
                    ));
                }
                if v.len() > 4096 {
                    return Err(invalid(
                        key("labels"),
                        format!("label {k:?} is longer than 4096 bytes"),
                    ));
                }
            }
            let start_at = match r.start_at.as_str() {
                "beginning" => StartAt::Beginning,
                "end" => StartAt::End,
                other => {
                    return Err(invalid(
                        key("start_at"),
                        format!("{other:?}: use beginning or end"),
                    ));
                }
            };
            let multiline = match &r.multiline {
                None => None,
                Some(m) => {
                    let re = |k: &str, p: &Option<String>| {
                        p.as_deref()
                            .map(regex::bytes::Regex::new)
                            .transpose()
                            .map_err(|e| invalid(key(&format!("multiline.{k}")), e.to_string()))
                    };
                    let start = re("start_pattern", &m.start_pattern)?;
                    let continuation = re("continuation_pattern", &m.continuation_pattern)?;
                    if start.is_none() == continuation.is_none() {
                        return Err(invalid(
                            key("multiline"),
                            "give exactly one of start_pattern and continuation_pattern",
                        ));
                    }
                    if m.max_lines == 0 || m.timeout_ms == 0 {
                        return Err(invalid(
                            key("multiline"),
                            "max_lines and timeout_ms must be positive",
                        ));
                    }
                    Some(Multiline {
                        start,
                        continuation,
                        max_lines: m.max_lines,
                        timeout: Duration::from_millis(m.timeout_ms),
                    })
                }
            };
            inputs.push(Input {
                paths,
                exclude,
                topic: r.topic.clone(),
                labels: r.labels.clone(),
                multiline,
                start_at,
            });
        }
        let o = &raw.output;
        if o.collectors.is_empty() {
            return Err(invalid(
                "output.collectors",
                "at least one collector URL is needed",
            ));
        }
        for c in &o.collectors {
            let u = reqwest::Url::parse(c)
                .map_err(|e| invalid("output.collectors", format!("{c:?}: {e}")))?;
            if u.scheme() != "http" && u.scheme() != "https" {
                return Err(invalid(
                    "output.collectors",
                    format!("{c:?}: use http:// or https://"),
                ));
            }
            if (u.scheme() == "https") != o.tls.is_some() {
                return Err(invalid(
                    "output.collectors",
                    format!(
                        "{c:?}: https:// goes with an output.tls section (ca_file: the CA \
                         that signed the collectors' certificates), http:// without one"
                    ),
                ));
            }
        }
        let tls = match &o.tls {
            Some(files) => Some(
                client::tls::client_config(files)
                    .map_err(|e| invalid("output.tls", e.to_string()))?,
            ),
            None => None,
        };
        let token = match &o.token_file {
            Some(f) => Some(
                client::Token::from_file(f)
                    .map_err(|e| invalid("output.token_file", e.to_string()))?,
            ),
            None => None,
        };
        let acks = match &o.acks {
            serde_yaml::Value::Number(n) if n.as_i64() == Some(0) => Acks::Zero,
            serde_yaml::Value::Number(n) if n.as_i64() == Some(1) => Acks::One,
            serde_yaml::Value::String(s) if s == "all" => Acks::All,
            serde_yaml::Value::String(s) if s == "0" => Acks::Zero,
            serde_yaml::Value::String(s) if s == "1" => Acks::One,
            other => {
                return Err(invalid(
                    "output.acks",
                    format!("{other:?}: use 0, 1 or all"),
                ));
            }
        };
        if o.batch_bytes_max < 1024 || o.batch_bytes_max > 16 << 20 {
            return Err(invalid("output.batch_bytes_max", "must be 1 KiB..=16 MiB"));
        }
        if !(1..=22).contains(&o.zstd_level) {
            return Err(invalid(
                "output.zstd_level",
                format!("{} is outside 1..=22", o.zstd_level),
            ));
        }
        if o.in_flight_max == 0 || o.in_flight_max > IN_FLIGHT_MAX_LIMIT {
            return Err(invalid(
                "output.in_flight_max",
                format!("{} is outside 1..={IN_FLIGHT_MAX_LIMIT}", o.in_flight_max),
            ));
        }
        if o.request_timeout_ms == 0 || o.retry_backoff_max_ms == 0 {
            return Err(invalid(
                "output.request_timeout_ms",
                "timeouts must be positive",
            ));
        }
        let metrics_listen = raw
            .metrics_listen
            .as_deref()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|e| invalid("metrics_listen", format!("{a:?}: {e}")))
            })
            .transpose()?;
        if raw.max_line_bytes < 64 {
            return Err(invalid("max_line_bytes", "must be at least 64"));
        }
        if raw.forget_files_after_ms < raw.rescan_interval_ms {
            return Err(invalid(
                "forget_files_after_ms",
                "must be at least rescan_interval_ms",
            ));
        }
        if raw.max_open_files == 0 || raw.read_chunk_bytes < 4096 || raw.rescan_interval_ms == 0 {
            return Err(invalid(
                "max_open_files",
                "max_open_files, read_chunk_bytes (>= 4096) and rescan_interval_ms must be positive",
            ));
        }
        if raw.buffer_bytes_max < o.batch_bytes_max * 2 {
            return Err(invalid(
                "buffer_bytes_max",
                "must hold at least two batches (2 × output.batch_bytes_max)",
            ));
        }
        if raw.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "must be set"));
        }
        Ok(Self {
            state_dir: absolute(&raw.state_dir)
                .map_err(|e| invalid("state_dir", format!("{}: {e}", raw.state_dir.display())))?,
            inputs,
            output: Output {
                collectors: o
                    .collectors
                    .iter()
                    .map(|c| c.trim_end_matches('/').to_owned())
                    .collect(),
                acks,
                linger: Duration::from_millis(o.linger_ms),
                batch_bytes_max: o.batch_bytes_max,
                zstd_level: o.zstd_level,
                in_flight_max: o.in_flight_max,
                request_timeout: Duration::from_millis(o.request_timeout_ms),
                retry_backoff_max: Duration::from_millis(o.retry_backoff_max_ms),
                tls,
                token,
            },
            metrics_listen,
            host: raw.host,
            max_line_bytes: raw.max_line_bytes,
            max_open_files: raw.max_open_files,
            read_chunk_bytes: raw.read_chunk_bytes,
            rescan_interval: Duration::from_millis(raw.rescan_interval_ms),
            buffer_bytes_max: raw.buffer_bytes_max,
            forget_files_after: Duration::from_millis(raw.forget_files_after_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
state_dir: /var/lib/tributary/agent
inputs:
  - paths: ["/var/log/nginx/*.log", "/var/log/app/**/*.log"]
    exclude: ["*.gz"]
    topic: logs
    labels: {service: web}
output:
  collectors: ["http://10.0.0.5:7400", "http://10.0.0.6:7400"]
  acks: all
  linger_ms: 100
  batch_bytes_max: 1048576
  zstd_level: 3
"#;

    #[test]
    fn design_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.inputs[0].topic, "logs");
        assert_eq!(c.output.acks, Acks::All);
        assert_eq!(c.output.collectors.len(), 2);
        assert!(c.inputs[0].paths[1].matches("/var/log/app/a/b/c.log"));
    }

    #[test]
    fn relative_paths_are_taken_from_the_current_directory() {
        let text = EXAMPLE
            .replace("\"/var/log/nginx/*.log\"", "\"./logs/*.log\"")
            .replace(
                "state_dir: /var/lib/tributary/agent",
                "state_dir: ./agent-state",
            );
        let cfg = Config::parse(&text).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(cfg.state_dir, cwd.join("agent-state"));
        assert_eq!(
            cfg.inputs[0].paths[0].as_str(),
            cwd.join("logs/*.log").to_str().unwrap()
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (EXAMPLE.replace("acks: all", "acks: most"), "output.acks"),
            (
                EXAMPLE.replace("zstd_level: 3", "zstd_level: 40"),
                "output.zstd_level",
            ),
            (
                EXAMPLE.replace("topic: logs", "topic: ../x"),
                "inputs[0].topic",
            ),
            (
                EXAMPLE.replace("linger_ms: 100", "linger_ms: 100\n  bogus: 1"),
                "bogus",
            ),
            (
                EXAMPLE.replace("\"/var/log/nginx/*.log\"", "\"/var/log/[*.log\""),
                "inputs[0].paths",
            ),
        ];
        for (text, key) in cases {
            let e = Config::parse(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
