//! The agent's view of the collector API: the calls the agent makes, over the shared
//! `client::CollectorClient` (bootstrap from any configured collector, leader routing with a
//! metadata cache, the one retry policy). Retriable failures are retried forever by
//! [`Client::retry`], with capped exponential backoff and random jitter.

use std::collections::HashMap;

use api::{Acks, ErrorCode};
use client::{ClientConfig, CollectorClient, RetryPolicy};

use crate::config::Output;

/// First pause between retries (they double up to `output.retry_backoff_max_ms`).
const RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Worth retrying: connection failures, timeouts, 5xx, 421, 507.
    #[error("{0}")]
    Retriable(String),
    /// Not worth retrying as is (the request itself is refused).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
}

impl ClientError {
    fn is_retriable(&self) -> bool {
        matches!(self, ClientError::Retriable(_))
    }
}

impl From<client::ClientError> for ClientError {
    fn from(e: client::ClientError) -> Self {
        match e.api_error() {
            Some(body) if !e.retriable() => ClientError::Refused {
                code: body.code.as_str().to_owned(),
                message: body.message.clone(),
            },
            _ if !e.retriable() => ClientError::Refused {
                code: "client".into(),
                message: e.to_string(),
            },
            _ => ClientError::Retriable(e.to_string()),
        }
    }
}

#[derive(Debug)]
pub struct Client {
    api: CollectorClient,
}

impl Client {
    pub fn new(output: &Output) -> Result<Self, ClientError> {
        let config = ClientConfig {
            request_timeout: output.request_timeout,
            retry: RetryPolicy::new(RETRY_INITIAL, output.retry_backoff_max),
            tls: output.tls.clone(),
            token: output.token.clone(),
            ..ClientConfig::default()
        };
        Ok(Self {
            api: CollectorClient::new(&output.collectors, config)?,
        })
    }

    /// Retries `f` until it succeeds or is refused (the one retry policy, jittered).
    pub async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        self.api
            .config()
            .retry
            .run(what, f, ClientError::is_retriable)
            .await
    }

    pub async fn allocate_producer(&self) -> Result<(i64, i16), ClientError> {
        let p = self.api.allocate_producer().await?;
        Ok((p.producer_id, p.producer_epoch))
    }

    /// `(topic, partition) -> (epoch, last persisted sequence)` for a producer, asked of
    /// every live broker (each answers for the partitions it leads). A broker that cannot
    /// be asked leaves its partitions out: their journaled batches are resent, which the
    /// broker's idempotence makes harmless.
    pub async fn last_sequences(
        &self,
        producer_id: i64,
    ) -> Result<HashMap<(String, u32), (i16, i32)>, ClientError> {
        let meta = self.api.metadata().await?;
        let mut out = HashMap::new();
        for b in meta.brokers.iter().filter(|b| b.alive) {
            let base = self.api.config().base_url(&b.address);
            let state = match self.api.producer_state_at(&base, producer_id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(broker = %base, error = %e, "cannot read producer state; its batches will be resent");
                    continue;
                }
            };
            for p in state.partitions {
                out.insert((p.topic, p.partition), (p.producer_epoch, p.last_sequence));
            }
        }
        Ok(out)
    }

    /// Number of partitions of `topic`, creating it with the collector's defaults if needed.
    pub async fn partitions(&self, topic: &str) -> Result<u32, ClientError> {
        match self.api.topic(topic).await {
            Ok(t) if !t.partitions.is_empty() => Ok(t.partitions.len() as u32),
            Ok(_) => Err(ClientError::Retriable(format!(
                "topic {topic} has no partitions yet"
            ))),
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => {
                match self.api.create_topic(&api::CreateTopic::named(topic)).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(ErrorCode::TopicExists) => {}
                    Err(e) => return Err(e.into()),
                }
                Err(ClientError::Retriable(format!(
                    "topic {topic} created; reading its partitions"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends one batch to its partition's leader; a duplicate (already stored) counts as
    /// success.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: &str,
        batch: impl Into<bytes::Bytes>,
    ) -> Result<(), ClientError> {
        let acks: Acks = acks.parse().map_err(|message| ClientError::Refused {
            code: ErrorCode::InvalidAcks.as_str().to_owned(),
            message,
        })?;
        self.api
            .produce(topic, partition, acks, batch.into())
            .await
            .map(|_| ())
            .map_err(ClientError::from)
    }
}
