//! The sender shell: encodes the batches the core releases (one zstd context per blocking
//! pool thread, at most one encode per core at once) and sends them with
//! [`Client::produce`], reporting results back to the loop over typed channels.

use std::sync::Arc;
use std::time::Instant;

use shared::{BatchBuilder, BatchEncoder, BatchError, Compression, ProducerStamp};
use tokio::sync::{Semaphore, mpsc};

use crate::client::{Client, ClientError};
use crate::core::{EncodeJob, SendJob, TopicPartition};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Codec(#[from] BatchError),
    #[error("encoding task failed: {0}")]
    Task(String),
}

/// An encode finished: the batch bytes, shared by every send of it.
pub type Encoded = (TopicPartition, i32, Result<bytes::Bytes, EncodeError>);
/// A send finished (after the client's own retries of retriable errors).
pub type Sent = (TopicPartition, i32, Result<(), ClientError>);

thread_local! {
    /// One zstd context per blocking-pool thread, reused across batches.
    static ENCODER: std::cell::RefCell<Option<(i32, BatchEncoder)>> = const { std::cell::RefCell::new(None) };
}

/// Encodes one batch with this thread's zstd context.
pub fn encode(
    builder: &BatchBuilder,
    stamp: ProducerStamp,
    level: i32,
) -> Result<Vec<u8>, EncodeError> {
    ENCODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let encoder = match slot.take() {
            Some((l, e)) if l == level => e,
            _ => BatchEncoder::new(Compression::Zstd, level)?,
        };
        let (_, encoder) = slot.insert((level, encoder));
        Ok(encoder.encode(builder, stamp)?)
    })
}

/// Encodes on the blocking pool, at most `encoders` at once.
pub fn spawn_encode(
    job: EncodeJob,
    level: i32,
    encoders: Arc<Semaphore>,
    done: mpsc::Sender<Encoded>,
) {
    tokio::spawn(async move {
        let _permit = encoders.acquire_owned().await;
        let EncodeJob {
            tp,
            base_sequence,
            builder,
            stamp,
        } = job;
        let result = tokio::task::spawn_blocking(move || encode(&builder, stamp, level))
            .await
            .map_err(|e| EncodeError::Task(e.to_string()))
            .and_then(|r| r)
            .map(bytes::Bytes::from);
        let _ = done.send((tp, base_sequence, result)).await;
    });
}

/// Sends one batch; the oldest of its partition retries retriable errors (the collector
/// deduplicates resends).
pub fn spawn_send(job: SendJob, client: Arc<Client>, acks: &'static str, done: mpsc::Sender<Sent>) {
    tokio::spawn(async move {
        let started = Instant::now();
        let SendJob {
            tp,
            base_sequence,
            batch,
            pipelined,
        } = job;
        // Every attempt sends the same shared buffer (a `Bytes` clone copies nothing). A
        // pipelined batch is tried once: the core resends it in order after the ones before
        // it; the oldest batch of a partition retries here, with backoff, until it is in.
        let result = if pipelined {
            client
                .produce(&tp.topic, tp.partition, acks, batch.clone())
                .await
        } else {
            client
                .retry("produce", || {
                    client.produce(&tp.topic, tp.partition, acks, batch.clone())
                })
                .await
        };
        tracing::debug!(
            partition = %tp,
            seq = base_sequence,
            produce_ms = started.elapsed().as_secs_f64() * 1e3,
            "batch sent"
        );
        let _ = done.send((tp, base_sequence, result)).await;
    });
}
