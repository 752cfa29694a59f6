//! `CollectorClient`: the one client of a collector cluster, used by the agent, `collector
//! tail`, the admin commands, `collector bench`, and the brokers' calls to each other.
//!
//! - bootstrap from several addresses (the next one on a dead connection or `not_leader`);
//! - a metadata cache routing partition requests to their leader, dropped on `not_leader`
//!   or a failed connection;
//! - typed errors ([`ClientError`]) saying whether a retry may help;
//! - one retry policy ([`RetryPolicy`], exponential with random jitter, via `backon`);
//! - every timeout named in [`ClientConfig`].
//!
//! Invariant: request and reply bodies are `api` types; no JSON is built or read by hand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use api::{Acks, ErrorBody, ErrorCode};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

mod retry;
pub mod tls;
pub use retry::RetryPolicy;
/// The TLS library's types, for crates that hold a [`ClientConfig::tls`].
pub use rustls;

/// Timeouts and retry settings of a client, each named (no literals at call sites).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Whole request, from sending to the last byte of the reply (long polls add their
    /// wait to it).
    pub request_timeout: Duration,
    /// Establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Between attempts of a retried call.
    pub retry: RetryPolicy,
    /// TLS to the collectors (`https://`); `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// A bearer token sent with every request (`Authorization: Bearer …`).
    pub token: Option<Token>,
    /// Addresses dialled instead of others (`host:port` → `host:port`): a node reaches a
    /// peer that advertises the key at the value (a private interface, a relay).
    pub dial_overrides: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

/// A bearer token. Its `Debug` never shows it (configs and errors get printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Reads a token from a file (the first line, trimmed).
    pub fn from_file(path: &std::path::Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Setup(format!("{}: {e}", path.display())))?;
        let t = text.lines().next().unwrap_or("").trim();
        if t.is_empty() {
            return Err(ClientError::Setup(format!(
                "{}: no token in the file",
                path.display()
            )));
        }
        Ok(Self(t.to_owned()))
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl ClientConfig {
    /// `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `host:port` as a base URL of this client's scheme (a URL is kept as given), after
    /// [`ClientConfig::dial_overrides`].
    pub fn base_url(&self, address: &str) -> String {
        base_url(self.dial(address), self.tls.is_some())
    }

    /// The address to connect to for `address`: its override, or itself.
    pub fn dial<'a>(&'a self, address: &'a str) -> &'a str {
        self.dial_overrides
            .get(address.trim_end_matches('/'))
            .map_or(address, String::as_str)
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            tls: None,
            token: None,
            dial_overrides: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply: the connection failed or timed out.
    #[error("{address}: {message}")]
    Transport {
        address: String,
        message: String,
        timed_out: bool,
    },
    /// The collector answered with an error.
    #[error("{address}: {}: {}", .error.code, .error.message)]
    Api {
        address: String,
        status: u16,
        error: ErrorBody,
    },
    /// A reply that is not what the API says (a proxy, a different program, a bug).
    #[error("{address}: bad reply: {message}")]
    Decode { address: String, message: String },
    /// The client could not be built (TLS backend, bad address).
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// Whether the same request may succeed later: transport failures, bad replies, and API
    /// errors the collector marks retriable (unavailable, moved, disk full).
    pub fn retriable(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Decode { .. } => true,
            ClientError::Api { error, .. } => error.retriable,
            ClientError::Setup(_) => false,
        }
    }

    /// The API error code, when the collector answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// The API error body, when the collector answered with one.
    pub fn api_error(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// "cannot connect: Connection refused (os error 111)", "timed out: …": the kind of failure
/// and the innermost cause, without the request URL (callers name the address).
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() || e.is_body() {
        "bad reply"
    } else {
        "request failed"
    };
    format!("{what}: {}", shared::report::root_cause(e))
}

/// `host:port` or `http(s)://host:port` (a trailing `/` dropped) as a base URL; a bare
/// address gets `https://` when `tls`.
pub fn base_url(address: &str, tls: bool) -> String {
    let a = address.trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_owned()
    } else if tls {
        format!("https://{a}")
    } else {
        format!("http://{a}")
    }
}

/// How long a pooled connection may sit idle before the client drops it: under the
/// collector's smallest idle timeout, so a request never goes out on a connection the
/// server is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A `reqwest` client with this configuration's timeouts and TLS (for callers that need
/// raw HTTP, e.g. the controller's Raft RPCs).
pub fn http_client(config: &ClientConfig) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);
    if let Some(tls) = &config.tls {
        b = b.use_preconfigured_tls((**tls).clone()).https_only(true);
    }
    b.build()
        .map_err(|e| ClientError::Setup(format!("building the HTTP client: {e}")))
}

/// A binary fetch reply: whole batches, and the partition's offsets.
#[derive(Debug, Clone)]
pub struct FetchReply {
    pub bytes: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// A session fetch reply: the header, and each listed partition's batches.
#[derive(Debug, Clone)]
pub struct SessionFetch {
    pub header: api::SessionFetchReply,
    /// One slice per entry of `header.partitions`.
    pub data: Vec<Bytes>,
}

impl SessionFetch {
    /// Splits a reply body: `u32` header length, JSON header, the partitions' bytes.
    pub fn parse(body: Bytes) -> Result<Self, String> {
        let len = body
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("a session fetch reply shorter than its length prefix")?;
        let json = body
            .get(4..4 + len)
            .ok_or("a session fetch reply shorter than its header")?;
        let header: api::SessionFetchReply =
            serde_json::from_slice(json).map_err(|e| format!("session fetch header: {e}"))?;
        let mut at = 4 + len;
        let mut data = Vec::with_capacity(header.partitions.len());
        for p in &header.partitions {
            let n = usize::try_from(p.bytes).map_err(|_| "partition length out of range")?;
            let end = at
                .checked_add(n)
                .filter(|e| *e <= body.len())
                .ok_or_else(|| {
                    format!(
                        "a session fetch reply ends before {}-{}'s {n} bytes",
                        p.topic, p.partition
                    )
                })?;
            data.push(body.slice(at..end));
            at = end;
        }
        if at != body.len() {
            return Err(format!(
                "a session fetch reply has {} bytes after its partitions",
                body.len() - at
            ));
        }
        Ok(Self { header, data })
    }

    /// The body for `header` and `data` (the leader's side of [`SessionFetch::parse`]).
    pub fn encode(
        header: &api::SessionFetchReply,
        data: &[Vec<u8>],
    ) -> Result<Vec<u8>, serde_json::Error> {
        let json = serde_json::to_vec(header)?;
        let total: usize = data.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(4 + json.len() + total);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        for d in data {
            out.extend_from_slice(d);
        }
        Ok(out)
    }
}

/// One request to send.
#[derive(Debug)]
struct Call<'a> {
    method: reqwest::Method,
    path: String,
    json: Option<Vec<u8>>,
    batches: Option<Bytes>,
    forwarded: bool,
    timeout: Option<Duration>,
    _life: std::marker::PhantomData<&'a ()>,
}

impl Call<'_> {
    fn new(method: reqwest::Method, path: String) -> Self {
        Self {
            method,
            path,
            json: None,
            batches: None,
            forwarded: false,
            timeout: None,
            _life: std::marker::PhantomData,
        }
    }

    fn json<T: Serialize>(mut self, body: &T) -> Result<Self, ClientError> {
        self.json = Some(
            serde_json::to_vec(body).map_err(|e| ClientError::Setup(format!("encoding: {e}")))?,
        );
        Ok(self)
    }
}

#[derive(Debug)]
pub struct CollectorClient {
    http: reqwest::Client,
    config: ClientConfig,
    /// Base URLs to bootstrap from.
    bootstrap: Vec<String>,
    current: AtomicUsize,
    /// `(topic, partition)` -> base URL of its leader, from metadata.
    leaders: Mutex<HashMap<(String, u32), String>>,
}

impl CollectorClient {
    /// A client of the collectors at `addresses` (`host:port` or URLs; at least one).
    pub fn new(addresses: &[String], config: ClientConfig) -> Result<Self, ClientError> {
        if addresses.is_empty() {
            return Err(ClientError::Setup("no collector address given".into()));
        }
        let http = http_client(&config)?;
        Ok(Self {
            http,
            bootstrap: addresses.iter().map(|a| config.base_url(a)).collect(),
            config,
            current: AtomicUsize::new(0),
            leaders: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The bootstrap address requests without a leader go to now.
    pub fn bootstrap_base(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.bootstrap.len();
        &self.bootstrap[i]
    }

    fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    fn leaders(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), String>> {
        shared::sys::lock(&self.leaders)
    }

    /// Sends `call` to `at` (a base URL), or to the current bootstrap collector (moving to
    /// the next one on a dead connection or `not_leader`).
    async fn send(
        &self,
        at: Option<&str>,
        call: Call<'_>,
    ) -> Result<reqwest::Response, ClientError> {
        let base = at.map_or_else(|| self.bootstrap_base().to_owned(), str::to_owned);
        let address = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        let mut req = self
            .http
            .request(call.method, format!("{base}{}", call.path));
        if let Some(t) = call.timeout {
            req = req.timeout(t);
        }
        if call.forwarded {
            req = req.header(api::FORWARDED_HEADER, "1");
        }
        if let Some(t) = &self.config.token {
            req = req.bearer_auth(t.secret());
        }
        if let Some(j) = call.json {
            req = req.header("content-type", "application/json").body(j);
        }
        if let Some(b) = call.batches {
            req = req
                .header("content-type", api::BATCHES_CONTENT_TYPE)
                .body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if at.is_none() {
                    self.rotate();
                }
                return Err(ClientError::Transport {
                    address,
                    message: describe(&e),
                    timed_out: e.is_timeout(),
                });
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.bytes().await.map_err(|e| ClientError::Transport {
            address: address.clone(),
            message: describe(&e),
            timed_out: e.is_timeout(),
        })?;
        let error = match serde_json::from_slice::<api::ErrorEnvelope>(&text) {
            Ok(env) => env.error,
            Err(_) => {
                let code = ErrorCode::for_status(status.as_u16());
                ErrorBody {
                    code,
                    message: format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&text[..text.len().min(200)])
                    ),
                    retriable: status.is_server_error(),
                    leader: None,
                }
            }
        };
        if error.code == ErrorCode::NotLeader && at.is_none() {
            self.rotate();
        }
        Err(ClientError::Api {
            address,
            status: status.as_u16(),
            error,
        })
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
        let address = resp
            .url()
            .host_str()
            .map(|h| format!("{h}:{}", resp.url().port_or_known_default().unwrap_or(0)))
            .unwrap_or_default();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            address: address.clone(),
            message: describe(&e),
            timed_out: e.is_timeout(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            address,
            message: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        at: Option<&str>,
        path: String,
    ) -> Result<T, ClientError> {
        Self::decode(self.send(at, Call::new(reqwest::Method::GET, path)).await?).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        at: Option<&str>,
        path: String,
        body: &B,
        forwarded: bool,
    ) -> Result<T, ClientError> {
        let mut call = Call::new(reqwest::Method::POST, path).json(body)?;
        call.forwarded = forwarded;
        Self::decode(self.send(at, call).await?).await
    }

    /// Retries `f` with the client's policy while its error is retriable; `what` names the
    /// operation in the warnings (logged on the 1st, 2nd, 4th, 8th ... failure).
    pub async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        self.config.retry.run(what, f, ClientError::retriable).await
    }

    // ---- metadata and routing ----

    pub async fn metadata(&self) -> Result<api::Metadata, ClientError> {
        self.get(None, api::routes::METADATA.to_owned()).await
    }

    /// Fills the leader cache from `meta`.
    fn learn_leaders(&self, meta: &api::Metadata) {
        let mut cache = self.leaders();
        for (topic, p, addr) in meta.leaders() {
            cache.insert((topic.to_owned(), p), self.config.base_url(addr));
        }
    }

    /// The base URL of a partition's leader (from metadata, cached).
    pub async fn leader_of(&self, topic: &str, partition: u32) -> Result<String, ClientError> {
        let key = (topic.to_owned(), partition);
        if let Some(b) = self.leaders().get(&key) {
            return Ok(b.clone());
        }
        let meta = self.metadata().await?;
        self.learn_leaders(&meta);
        self.leaders()
            .get(&key)
            .cloned()
            .ok_or_else(|| ClientError::Api {
                address: self.bootstrap_base().to_owned(),
                status: ErrorCode::NotLeader.status(),
                error: ErrorBody {
                    code: if meta.topic(topic).is_some() {
                        ErrorCode::NotLeader
                    } else {
                        ErrorCode::UnknownTopic
                    },
                    message: format!("no known leader for {topic}-{partition}"),
                    retriable: meta.topic(topic).is_some(),
                    leader: None,
                },
            })
    }

    /// `partition -> leader base URL` of every partition of `topic` with a known leader.
    pub async fn topic_leaders(
        &self,
        topic: &str,
    ) -> Result<std::collections::BTreeMap<u32, String>, ClientError> {
        let meta = self.metadata().await?;
        self.learn_leaders(&meta);
        let t = meta.topic(topic).ok_or_else(|| ClientError::Api {
            address: self.bootstrap_base().to_owned(),
            status: ErrorCode::UnknownTopic.status(),
            error: ErrorBody {
                code: ErrorCode::UnknownTopic,
                message: format!("topic {topic} does not exist"),
                retriable: false,
                leader: None,
            },
        })?;
        Ok(t.partitions
            .iter()
            .filter_map(|p| {
                Some((
                    p.partition,
                    self.config.base_url(&meta.broker(p.leader)?.address),
                ))
            })
            .collect())
    }

    /// `partition -> offsets` of every partition of `topic` with a known leader, each as its
    /// leader sees it (public routes only: each leader describes the topic, and its own
    /// partitions are taken from its answer).
    pub async fn log_offsets(
        &self,
        topic: &str,
    ) -> Result<std::collections::BTreeMap<u32, api::PartitionOffsets>, ClientError> {
        let meta = self.metadata().await?;
        self.learn_leaders(&meta);
        let t = meta.topic(topic).ok_or_else(|| ClientError::Api {
            address: self.bootstrap_base().to_owned(),
            status: ErrorCode::UnknownTopic.status(),
            error: ErrorBody {
                code: ErrorCode::UnknownTopic,
                message: format!("topic {topic} does not exist"),
                retriable: false,
                leader: None,
            },
        })?;
        let leaders: std::collections::BTreeSet<u64> =
            t.partitions.iter().map(|p| p.leader).collect();
        let mut out = std::collections::BTreeMap::new();
        for id in leaders {
            let Some(b) = meta.broker(id) else { continue };
            let d: api::TopicDescription = self
                .get(
                    Some(&self.config.base_url(&b.address)),
                    api::routes::topic(topic),
                )
                .await?;
            for p in d.partitions.iter().filter(|p| p.leader == id) {
                out.insert(
                    p.partition,
                    api::PartitionOffsets {
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Drops a partition's cached leader when `result` says it may have moved.
    fn forget_leader_on<T>(&self, topic: &str, partition: u32, result: &Result<T, ClientError>) {
        if let Err(e) = result
            && (e.retriable() || e.code() == Some(ErrorCode::UnknownPartition))
        {
            self.leaders().remove(&(topic.to_owned(), partition));
        }
    }

    // ---- produce and fetch ----

    /// Sends batches to the partition's leader.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batches: Bytes,
    ) -> Result<api::ProduceReply, ClientError> {
        let leader = self.leader_of(topic, partition).await;
        let leader = match leader {
            Ok(l) => Some(l),
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => None,
            Err(e) => return Err(e),
        };
        let path = format!(
            "{}{}",
            api::routes::batches(topic, partition),
            api::routes::query(&api::ProduceQuery::new(acks))
        );
        let mut call = Call::new(reqwest::Method::POST, path);
        call.batches = Some(batches);
        let r = match self.send(leader.as_deref(), call).await {
            Ok(resp) => Self::decode(resp).await,
            Err(e) => Err(e),
        };
        self.forget_leader_on(topic, partition, &r);
        r
    }

    /// A fetch from the partition's leader (a long poll with `max_wait_ms`).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        q: &api::FetchQuery,
    ) -> Result<FetchReply, ClientError> {
        let leader = self.leader_of(topic, partition).await?;
        let r = self.fetch_at(&leader, topic, partition, q).await;
        self.forget_leader_on(topic, partition, &r);
        r
    }

    /// A fetch from `base` (a base URL) directly.
    pub async fn fetch_at(
        &self,
        base: &str,
        topic: &str,
        partition: u32,
        q: &api::FetchQuery,
    ) -> Result<FetchReply, ClientError> {
        let path = format!(
            "{}{}",
            api::routes::batches(topic, partition),
            api::routes::query(q)
        );
        let mut call = Call::new(reqwest::Method::GET, path);
        call.timeout = q
            .max_wait_ms
            .map(|w| self.config.request_timeout + Duration::from_millis(w));
        let resp = self.send(Some(base), call).await?;
        Self::batches_reply(resp).await
    }

    async fn batches_reply(resp: reqwest::Response) -> Result<FetchReply, ClientError> {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let high_watermark = header(api::HW_HEADER).unwrap_or(0);
        let log_start_offset = header(api::LOG_START_HEADER).unwrap_or(0);
        let address = resp.url().authority().to_owned();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            address,
            message: describe(&e),
            timed_out: e.is_timeout(),
        })?;
        Ok(FetchReply {
            bytes,
            high_watermark,
            log_start_offset,
        })
    }

    /// JSON produce, sent to `at` (a base URL) or the bootstrap collector.
    pub async fn produce_json(
        &self,
        at: Option<&str>,
        topic: &str,
        acks: Acks,
        body: &api::JsonProduce,
        forwarded: bool,
    ) -> Result<api::JsonProduceReply, ClientError> {
        let path = format!(
            "{}{}",
            api::routes::records_produce(topic),
            api::routes::query(&api::ProduceQuery::new(acks))
        );
        self.post(at, path, body, forwarded).await
    }

    // ---- producers ----

    pub async fn allocate_producer(&self) -> Result<api::ProducerId, ClientError> {
        self.post(
            None,
            api::routes::PRODUCERS.to_owned(),
            &serde_json::Map::new(),
            false,
        )
        .await
    }

    /// A producer's state on the broker at `base` (the partitions that broker leads).
    pub async fn producer_state_at(
        &self,
        base: &str,
        producer_id: i64,
    ) -> Result<api::ProducerState, ClientError> {
        self.get(Some(base), api::routes::producer(producer_id))
            .await
    }

    // ---- topics and cluster ----

    pub async fn topics(&self) -> Result<api::TopicList, ClientError> {
        self.get(None, api::routes::TOPICS.to_owned()).await
    }

    pub async fn topic(&self, name: &str) -> Result<api::TopicDescription, ClientError> {
        self.get(None, api::routes::topic(name)).await
    }

    pub async fn create_topic(
        &self,
        req: &api::CreateTopic,
    ) -> Result<api::TopicDescription, ClientError> {
        self.post(None, api::routes::TOPICS.to_owned(), req, false)
            .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.send(
            None,
            Call::new(reqwest::Method::DELETE, api::routes::topic(name)),
        )
        .await
        .map(|_| ())
    }

    pub async fn cluster(&self) -> Result<api::ClusterStatus, ClientError> {
        self.get(None, api::routes::CLUSTER.to_owned()).await
    }

    pub async fn cluster_at(&self, base: &str) -> Result<api::ClusterStatus, ClientError> {
        self.get(Some(base), api::routes::CLUSTER.to_owned()).await
    }

    /// `/health` of the collector at `base` (a 503 "starting" reply is an `Api` error).
    pub async fn health_at(&self, base: &str) -> Result<api::Health, ClientError> {
        self.get(Some(base), api::routes::HEALTH.to_owned()).await
    }

    // ---- groups (any node; `at` names one, e.g. the coordinator a relay goes to) ----

    pub async fn heartbeat(
        &self,
        at: Option<&str>,
        group: &str,
        req: &api::HeartbeatRequest,
        forwarded: bool,
    ) -> Result<api::HeartbeatReply, ClientError> {
        self.post(at, api::routes::group_heartbeat(group), req, forwarded)
            .await
    }

    pub async fn commit(
        &self,
        at: Option<&str>,
        group: &str,
        req: &api::CommitRequest,
        forwarded: bool,
    ) -> Result<api::CommitReply, ClientError> {
        self.post(at, api::routes::group_offsets(group), req, forwarded)
            .await
    }

    /// A group's committed offsets, as its coordinator has them (`forwarded`: this is a
    /// relay from another collector, not to be relayed again).
    pub async fn group_offsets(
        &self,
        at: Option<&str>,
        group: &str,
        forwarded: bool,
    ) -> Result<api::GroupOffsetsReply, ClientError> {
        let mut call = Call::new(reqwest::Method::GET, api::routes::group_offsets(group));
        call.forwarded = forwarded;
        Self::decode(self.send(at, call).await?).await
    }

    pub async fn reset_offsets(
        &self,
        at: Option<&str>,
        group: &str,
        req: &api::ResetRequest,
        forwarded: bool,
    ) -> Result<api::GroupOffsetsReply, ClientError> {
        self.post(at, api::routes::group_reset(group), req, forwarded)
            .await
    }

    /// `GET /v1/acls`: the ACLs the filter matches.
    pub async fn acls(
        &self,
        filter: &api::acls::AclFilter,
    ) -> Result<api::acls::AclList, ClientError> {
        self.get(
            None,
            format!("{}{}", api::routes::ACLS, api::routes::query(filter)),
        )
        .await
    }

    /// `POST /v1/acls`.
    pub async fn create_acls(
        &self,
        acls: Vec<api::acls::Acl>,
    ) -> Result<api::acls::AclList, ClientError> {
        self.post(
            None,
            api::routes::ACLS.to_owned(),
            &api::acls::CreateAcls { acls },
            false,
        )
        .await
    }

    /// `POST /v1/acls/delete`: removes what the filter matches; returns what was removed.
    pub async fn delete_acls(
        &self,
        filter: &api::acls::AclFilter,
    ) -> Result<api::acls::AclList, ClientError> {
        self.post(None, api::routes::ACLS_DELETE.to_owned(), filter, false)
            .await
    }

    pub async fn list_groups(
        &self,
        at: Option<&str>,
        forwarded: bool,
    ) -> Result<api::GroupList, ClientError> {
        let mut call = Call::new(reqwest::Method::GET, api::routes::GROUPS.to_owned());
        call.forwarded = forwarded;
        Self::decode(self.send(at, call).await?).await
    }

    pub async fn describe_group(
        &self,
        at: Option<&str>,
        group: &str,
        forwarded: bool,
    ) -> Result<api::GroupView, ClientError> {
        let mut call = Call::new(reqwest::Method::GET, api::routes::group(group));
        call.forwarded = forwarded;
        Self::decode(self.send(at, call).await?).await
    }

    // ---- between brokers ----

    /// High watermark and log start of a partition, asked of the broker at `base`.
    pub async fn partition_offsets_at(
        &self,
        base: &str,
        topic: &str,
        partition: u32,
    ) -> Result<api::PartitionOffsets, ClientError> {
        let q = api::PartitionQuery {
            topic: topic.to_owned(),
            partition,
        };
        self.get(
            Some(base),
            format!(
                "{}{}",
                api::routes::PARTITION_OFFSETS,
                api::routes::query(&q)
            ),
        )
        .await
    }

    /// High watermark and log start of a partition, asked of its leader.
    pub async fn partition_offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<api::PartitionOffsets, ClientError> {
        let leader = self.leader_of(topic, partition).await?;
        let r = self.partition_offsets_at(&leader, topic, partition).await;
        self.forget_leader_on(topic, partition, &r);
        r
    }

    /// A follower's session fetch from the leader at `base`: the reply's header and, for
    /// each partition it lists, that partition's batches (in list order).
    /// `open_timeout`: the wait for a reply to a request opening a session (the leader may
    /// first open every listed partition); other requests wait the request timeout plus
    /// their long poll.
    pub async fn session_fetch_at(
        &self,
        base: &str,
        q: &api::SessionFetchRequest,
        open_timeout: Duration,
    ) -> Result<SessionFetch, ClientError> {
        let mut call =
            Call::new(reqwest::Method::POST, api::routes::REPLICA_FETCH.to_owned()).json(q)?;
        let poll = self.config.request_timeout + Duration::from_millis(q.max_wait_ms);
        call.timeout = Some(if q.session_id == 0 {
            poll.max(open_timeout)
        } else {
            poll
        });
        let resp = self.send(Some(base), call).await?;
        let address = resp.url().authority().to_owned();
        let body = resp.bytes().await.map_err(|e| ClientError::Transport {
            address: address.clone(),
            message: describe(&e),
            timed_out: e.is_timeout(),
        })?;
        SessionFetch::parse(body).map_err(|message| ClientError::Decode { address, message })
    }

    /// Where the leader at `base` ends each asked partition's epoch (KIP-279).
    pub async fn epoch_ends_at(
        &self,
        base: &str,
        q: &api::EpochEndsRequest,
    ) -> Result<api::EpochEndsReply, ClientError> {
        self.post(
            Some(base),
            api::routes::REPLICA_EPOCH_ENDS.to_owned(),
            q,
            false,
        )
        .await
    }

    pub async fn checksum_at(
        &self,
        base: &str,
        q: &api::ChecksumQuery,
    ) -> Result<api::Checksum, ClientError> {
        self.get(
            Some(base),
            format!("{}{}", api::routes::REPLICA_CHECKSUM, api::routes::query(q)),
        )
        .await
    }
}
