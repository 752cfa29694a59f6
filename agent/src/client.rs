//! The agent's client of the collector API: bootstraps from any configured collector,
//! moves to the next one on connection errors, and retries retriable failures forever with
//! capped exponential backoff and jitter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::config::Output;

/// "cannot connect: Connection refused (os error 111)": the kind of failure and its cause.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{what}: {}", shared::report::root_cause(e))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Worth retrying: connection failures, timeouts, 5xx, 421, 507.
    #[error("{0}")]
    Retriable(String),
    /// Not worth retrying as is (the request itself is refused).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
}

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    collectors: Vec<String>,
    current: AtomicUsize,
    backoff_max: Duration,
    /// `(topic, partition)` -> base URL of its leader, from metadata; dropped on
    /// `not_leader` or a failed connection.
    leaders: std::sync::Mutex<HashMap<(String, u32), String>>,
}

impl Client {
    pub fn new(output: &Output) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(output.request_timeout)
            .build()
            .map_err(|e| ClientError::Retriable(e.to_string()))?;
        Ok(Self {
            http,
            collectors: output.collectors.clone(),
            current: AtomicUsize::new(0),
            backoff_max: output.retry_backoff_max,
            leaders: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn base(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.collectors.len().max(1);
        self.collectors.get(i).map_or("", String::as_str)
    }

    fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        json: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.call_at(None, method, path, body, json).await
    }

    /// A call to `at`, or to the current bootstrap collector (rotating on failure).
    async fn call_at(
        &self,
        at: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        json: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{}", at.unwrap_or_else(|| self.base()), path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/vnd.tributary.batches")
                .body(b);
        }
        if let Some(j) = json {
            req = req.json(&j);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if at.is_none() {
                    self.rotate();
                }
                return Err(ClientError::Retriable(format!("{url}: {}", describe(&e))));
            }
        };
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Retriable(format!("{url}: {}", describe(&e))))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or("http_error")
            .to_owned();
        let message = v["error"]["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_owned);
        let retriable = v["error"]["retriable"]
            .as_bool()
            .unwrap_or(status.is_server_error());
        if status.as_u16() == 421 && at.is_none() {
            self.rotate();
        }
        if retriable {
            Err(ClientError::Retriable(format!("{code}: {message}")))
        } else {
            Err(ClientError::Refused { code, message })
        }
    }

    /// Retries `f` until it succeeds or is refused, sleeping with capped exponential
    /// backoff and full jitter between attempts.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u64;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(ClientError::Retriable(msg)) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(what, attempts, error = %msg, "retrying");
                    }
                    let jitter = (std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos()) as u64)
                        % (backoff.as_millis() as u64 + 1);
                    tokio::time::sleep(Duration::from_millis(jitter.max(10))).await;
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn allocate_producer(&self) -> Result<(i64, i16), ClientError> {
        let v = self
            .call(reqwest::Method::POST, "/v1/producers", None, None)
            .await?;
        match (v["producer_id"].as_i64(), v["producer_epoch"].as_i64()) {
            (Some(id), Some(epoch)) => Ok((id, epoch as i16)),
            _ => Err(ClientError::Retriable(format!("bad producer reply {v}"))),
        }
    }

    /// `(topic, partition) -> (epoch, last persisted sequence)` for a producer, asked of
    /// every live broker (each answers for the partitions it leads). A broker that cannot
    /// be asked leaves its partitions out: their journaled batches are resent, which the
    /// broker's idempotence makes harmless.
    pub async fn last_sequences(
        &self,
        producer_id: i64,
    ) -> Result<HashMap<(String, u32), (i16, i32)>, ClientError> {
        let meta = self
            .call(reqwest::Method::GET, "/v1/metadata", None, None)
            .await?;
        let brokers: Vec<String> = meta["brokers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["alive"] != false)
            .filter_map(|b| b["address"].as_str().map(|a| format!("http://{a}")))
            .collect();
        let mut out = HashMap::new();
        let path = format!("/v1/producers/{producer_id}");
        for base in &brokers {
            let v = match self
                .call_at(Some(base), reqwest::Method::GET, &path, None, None)
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(broker = %base, error = %e, "cannot read producer state; its batches will be resent");
                    continue;
                }
            };
            for p in v["partitions"].as_array().into_iter().flatten() {
                if let (Some(t), Some(part), Some(e), Some(s)) = (
                    p["topic"].as_str(),
                    p["partition"].as_u64(),
                    p["producer_epoch"].as_i64(),
                    p["last_sequence"].as_i64(),
                ) {
                    out.insert((t.to_owned(), part as u32), (e as i16, s as i32));
                }
            }
        }
        Ok(out)
    }

    /// The base URL of a partition's leader (from metadata, cached).
    async fn leader_base(&self, topic: &str, partition: u32) -> Option<String> {
        let key = (topic.to_owned(), partition);
        if let Some(b) = self.leaders.lock().ok()?.get(&key) {
            return Some(b.clone());
        }
        let meta = self
            .call(reqwest::Method::GET, "/v1/metadata", None, None)
            .await
            .ok()?;
        let addresses: HashMap<u64, String> = meta["brokers"]
            .as_array()?
            .iter()
            .filter_map(|b| Some((b["id"].as_u64()?, b["address"].as_str()?.to_owned())))
            .collect();
        let mut cache = self.leaders.lock().ok()?;
        for t in meta["topics"].as_array()? {
            let Some(name) = t["name"].as_str() else {
                continue;
            };
            for p in t["partitions"].as_array().into_iter().flatten() {
                if let (Some(part), Some(addr)) = (
                    p["partition"].as_u64(),
                    p["leader"].as_u64().and_then(|l| addresses.get(&l)),
                ) {
                    cache.insert((name.to_owned(), part as u32), format!("http://{addr}"));
                }
            }
        }
        cache.get(&key).cloned()
    }

    /// Number of partitions of `topic`, creating it with the collector's defaults if needed.
    pub async fn partitions(&self, topic: &str) -> Result<u32, ClientError> {
        match self
            .call(
                reqwest::Method::GET,
                &format!("/v1/topics/{topic}"),
                None,
                None,
            )
            .await
        {
            Ok(v) => v["partitions"]
                .as_array()
                .map(|a| a.len() as u32)
                .filter(|n| *n > 0)
                .ok_or_else(|| ClientError::Retriable(format!("bad topic reply {v}"))),
            Err(ClientError::Refused { code, .. }) if code == "unknown_topic" => {
                match self
                    .call(
                        reqwest::Method::POST,
                        "/v1/topics",
                        None,
                        Some(serde_json::json!({"name": topic})),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(ClientError::Refused { code, .. }) if code == "topic_exists" => {}
                    Err(e) => return Err(e),
                }
                Err(ClientError::Retriable(format!(
                    "topic {topic} created; reading its partitions"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one batch; a duplicate (already stored) counts as success.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: &str,
        batch: Vec<u8>,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/topics/{topic}/partitions/{partition}/batches?acks={acks}");
        let leader = self.leader_base(topic, partition).await;
        let r = self
            .call_at(
                leader.as_deref(),
                reqwest::Method::POST,
                &path,
                Some(batch),
                None,
            )
            .await
            .map(|_| ());
        if r.is_err()
            && let Ok(mut cache) = self.leaders.lock()
        {
            // Leadership may have moved, or the broker is gone: ask the metadata next time.
            cache.remove(&(topic.to_owned(), partition));
        }
        r
    }
}
