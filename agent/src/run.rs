//! The agent's event loop: wires the pure [`Core`] to its shells — the tailer (discovery,
//! rotation, reads), the journal (durable state stores) and the sender (encode, produce).
//! One task owns the core; stores, encodes and sends run in their own tasks and report back
//! over bounded, typed channels.
//!
//! Backpressure: bytes read but not yet acknowledged are capped by `buffer_bytes_max`;
//! above it the agent stops reading — the files are the buffer — and drops nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ErrorCode;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::core::{AckOutcome, Connected, Core, Delivery, Settings, TopicPartition};
use crate::files;
use crate::journal;
use crate::sender;
use crate::state::StateError;
use crate::tailer::{DiskFiles, Tailer};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("collector: {0}")]
    Client(#[from] ClientError),
    #[error("cannot rebuild {0}")]
    Rebuild(#[from] crate::core::RebuildError),
    #[error("{0}")]
    Other(String),
}

struct Agent {
    cfg: Config,
    host: String,
    client: Arc<Client>,
    core: Core,
    tailer: Tailer,
    store_tx: mpsc::Sender<journal::Stored>,
    encoded_tx: mpsc::Sender<sender::Encoded>,
    /// Encodes running at once: one per core (more only costs memory: a zstd context each).
    encoders: Arc<tokio::sync::Semaphore>,
    acks_tx: mpsc::Sender<sender::Sent>,
    metrics: Arc<crate::metrics::AgentMetrics>,
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    mut reload: mpsc::Receiver<Config>,
    on_ready: impl FnOnce(),
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| AgentError::Other(format!("state_dir {}: {e}", cfg.state_dir.display())))?;
    let state = journal::load(&cfg.state_dir)?;
    let first_start = state.producer_id.is_none();
    let metrics = Arc::new(crate::metrics::AgentMetrics::new());
    let _metrics_server = match cfg.metrics_listen {
        Some(addr) => Some(
            crate::metrics::serve(addr, metrics.clone())
                .await
                .map_err(|e| AgentError::Other(format!("metrics_listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let client = Arc::new(Client::new(&cfg.output)?);
    let host = cfg
        .host
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let (acks_tx, mut acks_rx) = mpsc::channel(1024);
    let (store_tx, mut store_rx) = mpsc::channel(1);
    let (encoded_tx, mut encoded_rx) = mpsc::channel(256);
    let core = Core::new(
        state,
        Settings::from_config(&cfg, host.clone()),
        Instant::now(),
    );
    let mut agent = Agent {
        cfg,
        host,
        client,
        core,
        tailer: Tailer::new(first_start),
        store_tx,
        encoded_tx,
        encoders: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        )),
        acks_tx,
        metrics,
    };
    // The producer identity, partition counts and last sequences come from the collectors in
    // the background: the agent reads and journals meanwhile (the files are the buffer), so
    // it is ready — for systemd too — while no collector answers.
    let (connected_tx, mut connected_rx) = mpsc::channel(1);
    tokio::spawn(connect(
        agent.client.clone(),
        agent
            .core
            .state()
            .producer_id
            .map(|id| (id, agent.core.state().producer_epoch)),
        agent.missing_topics(),
        !agent.core.state().journal.is_empty(),
        connected_tx,
    ));
    agent.metrics.connected.set(0);
    agent.step(true)?;
    on_ready();
    // Wake-ups from inotify; the periodic rescan is the safety net for dropped events.
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let mut _watcher = agent.watch(wake_tx.clone());
    tokio::pin!(shutdown);
    // systemd watchdog: ping at half the configured interval while the loop runs.
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |d| {
            (d / 2).max(Duration::from_secs(1))
        }));
    let mut rescan = tokio::time::interval(agent.cfg.rescan_interval);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let linger = agent.next_deadline();
        // Whether the branch below already ran a step (then the one after the loop runs only
        // if acknowledgements or encodings arrived meanwhile).
        let mut stepped = false;
        tokio::select! {
            _ = &mut shutdown => break,
            Some(connected) = connected_rx.recv() => agent.on_connected(connected?)?,
            Some(ack) = acks_rx.recv() => agent.on_ack(ack),
            Some(done) = encoded_rx.recv() => agent.on_encoded(done),
            Some((generation, result)) = store_rx.recv() => agent.on_stored(generation, result)?,
            // File events: rediscover at most every 200 ms (writes alone only need a read).
            Some(()) = wake_rx.recv() => {
                let rescan = agent.tailer.last_discovery.elapsed() >= Duration::from_millis(200);
                agent.step(rescan)?;
                stepped = true;
            }
            _ = rescan.tick() => {
                agent.step(true)?;
                stepped = true;
            }
            Some(new) = reload.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                if agent.reload(new).await {
                    // Watch the new inputs' directories.
                    _watcher = agent.watch(wake_tx.clone());
                    agent.step(true)?;
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = tokio::time::sleep_until(linger.into()) => {}
        }
        // Drain whatever else is ready without waiting.
        let mut drained = false;
        while let Ok(ack) = acks_rx.try_recv() {
            agent.on_ack(ack);
            drained = true;
        }
        while let Ok(done) = encoded_rx.try_recv() {
            agent.on_encoded(done);
            drained = true;
        }
        if !stepped || drained {
            agent.step(false)?;
        }
    }
    // A store in progress lands before the final one (stores must not overtake each other).
    if agent.core.storing()
        && let Some((generation, result)) = store_rx.recv().await
    {
        agent.on_stored(generation, result)?;
    }
    tracing::info!("stopping: waiting up to 10 s for batches in flight");
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.core.any_in_flight() && Instant::now() < deadline {
        if let Ok(Some(ack)) =
            tokio::time::timeout(Duration::from_millis(200), acks_rx.recv()).await
        {
            agent.on_ack(ack);
        }
    }
    agent.core.state().store(&agent.cfg.state_dir)?;
    Ok(())
}

impl Agent {
    /// Applies a new configuration (SIGHUP). New inputs start with the next discovery; files
    /// no input matches any more stop being read — what was read is still sent and
    /// acknowledged. `state_dir` cannot change while running. Returns whether it applied.
    async fn reload(&mut self, mut new: Config) -> bool {
        if new.state_dir != self.cfg.state_dir {
            tracing::error!(
                old = %self.cfg.state_dir.display(),
                new = %new.state_dir.display(),
                "reload refused: state_dir cannot change while running; restart the agent"
            );
            return false;
        }
        // Partition counts of topics not seen before.
        let client = match Client::new(&new.output) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(error = %e, "reload refused: output");
                return false;
            }
        };
        let mut learnt = Vec::new();
        for input in &new.inputs {
            if self.core.topic_partitions().contains_key(&input.topic)
                || learnt.iter().any(|(t, _)| *t == input.topic)
            {
                continue;
            }
            let topic = input.topic.clone();
            let lookup = client.retry("topic metadata", || client.partitions(&topic));
            match tokio::time::timeout(Duration::from_secs(10), lookup).await {
                Ok(Ok(n)) => learnt.push((topic, n)),
                _ => {
                    tracing::error!(%topic, "reload refused: cannot learn the new topic's partitions from the collectors");
                    return false;
                }
            }
        }
        for (topic, n) in learnt {
            self.core.set_topic_partitions(topic, n);
        }
        new.state_dir = self.cfg.state_dir.clone();
        self.cfg = new;
        self.client = client;
        self.core
            .set_settings(Settings::from_config(&self.cfg, self.host.clone()));
        // Files follow the input that matches them now; unmatched ones stop being read.
        let mut unmatched = Vec::new();
        for (id, (_, st)) in self.core.files_mut().iter_mut() {
            match files::input_for(&self.cfg.inputs, std::path::Path::new(&st.last_path)) {
                Some(i) => st.input = i,
                None => unmatched.push(id.clone()),
            }
        }
        let stopped = unmatched
            .iter()
            .filter(|id| self.tailer.stop(&mut self.core, id))
            .count();
        tracing::info!(
            inputs = self.cfg.inputs.len(),
            stopped,
            "configuration reloaded"
        );
        true
    }

    /// Topics of the inputs whose partition count is not known yet.
    fn missing_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .cfg
            .inputs
            .iter()
            .map(|i| i.topic.clone())
            .filter(|t| !self.core.topic_partitions().contains_key(t))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The collectors answered: the core keeps the identity and partition counts and marks
    /// journaled batches the collector already has delivered. Then sending starts.
    fn on_connected(&mut self, c: Connected) -> Result<(), AgentError> {
        let had_identity = self.core.state().producer_id.is_some();
        let (delivered, resend) = self.core.on_connected(c);
        if !had_identity && let Some(id) = self.core.state().producer_id {
            tracing::info!(producer_id = id, "allocated producer id");
        }
        if delivered + resend > 0 {
            tracing::info!(delivered, resend, "recovered the batch journal");
        }
        self.metrics.connected.set(1);
        tracing::info!("connected to the collectors; shipping");
        // Files of topics whose partitions were unknown wait for this discovery.
        self.step(true)
    }

    fn watch(&self, wake: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opening or reading a file changes nothing to tail, and discovery itself opens
            // the watched directories: waking on access events would feed back into a
            // discovery every 200 ms while idle.
            if let Ok(ev) = &res
                && matches!(ev.kind, notify::EventKind::Access(_))
            {
                return;
            }
            let _ = wake.try_send(());
        })
        .map_err(
            |e| tracing::warn!(error = %e, "inotify unavailable; relying on the periodic rescan"),
        )
        .ok()?;
        for input in &self.cfg.inputs {
            for p in &input.paths {
                let root = files::watch_root(p.as_str());
                let mode = if p.as_str().contains("**") {
                    notify::RecursiveMode::Recursive
                } else {
                    notify::RecursiveMode::NonRecursive
                };
                if let Err(e) = w.watch(&root, mode) {
                    tracing::debug!(root = %root.display(), error = %e, "cannot watch (yet); the rescan covers it");
                }
            }
        }
        Some(w)
    }

    /// When the loop must wake on its own: a batch's linger, or a multiline record's timeout.
    fn next_deadline(&self) -> Instant {
        [
            self.core.next_deadline(),
            self.tailer.next_multiline_deadline(&self.core, &self.cfg),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// One round: (re)discover files, read, cut batches, store state if due, encode and
    /// send what the journal covers.
    fn step(&mut self, rescan: bool) -> Result<(), AgentError> {
        self.tailer
            .poll(&mut self.core, &self.cfg, &self.metrics, rescan);
        let now = Instant::now();
        self.core.cut_due(now);
        if let Some(job) = self.core.poll_store(now) {
            journal::spawn_store(job, self.cfg.state_dir.clone(), self.store_tx.clone());
        }
        self.send_ready(now)?;
        self.tailer.close_drained(&mut self.core);
        let m = &self.metrics;
        m.files_open.set(self.tailer.open_files() as i64);
        m.files_known.set(self.core.files().len() as i64);
        m.buffered_bytes.set(self.core.buffered() as i64);
        m.journal_batches
            .set(self.core.state().journal.len() as i64);
        Ok(())
    }

    fn on_stored(
        &mut self,
        generation: u64,
        result: Result<(), StateError>,
    ) -> Result<(), AgentError> {
        match result {
            Ok(()) => {
                self.core.on_stored(generation);
                Ok(())
            }
            Err(e) => {
                self.core.on_store_failed();
                Err(e.into())
            }
        }
    }

    /// Encodes journaled batches ahead and sends the oldest of every idle partition. The core
    /// releases nothing before the journal naming it is durable.
    fn send_ready(&mut self, now: Instant) -> Result<(), AgentError> {
        for job in self.core.poll_encode(&mut DiskFiles)? {
            sender::spawn_encode(
                job,
                self.cfg.output.zstd_level,
                self.encoders.clone(),
                self.encoded_tx.clone(),
            );
        }
        for job in self.core.poll_send(now) {
            self.metrics.batches_sent.inc();
            sender::spawn_send(
                job,
                self.client.clone(),
                self.cfg.output.acks.as_query(),
                self.acks_tx.clone(),
            );
        }
        Ok(())
    }

    fn on_encoded(&mut self, (tp, seq, result): sender::Encoded) {
        let batch = match result {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                // Not expected (the records were built here); rebuild from the files and
                // try again rather than lose the batch.
                tracing::error!(partition = %tp, seq, error = %e, "encoding a batch failed; retrying");
                None
            }
        };
        self.core.on_encoded(&tp, seq, batch);
    }

    fn on_ack(&mut self, (tp, seq, result): sender::Sent) {
        let delivery = match &result {
            Ok(()) => Delivery::Acked,
            Err(ClientError::Refused { code, .. })
                if code == ErrorCode::OutOfOrderSequence.as_str() =>
            {
                Delivery::OutOfOrder
            }
            Err(ClientError::Retriable(_)) => Delivery::Retry,
            Err(_) => Delivery::Refused,
        };
        match self.core.on_ack(&tp, seq, delivery, Instant::now()) {
            AckOutcome::Acked => {
                self.metrics.batches_acked.inc();
            }
            AckOutcome::Refused => {
                // Refused outright (not retriable): kept journaled and tried again later
                // rather than drop a line; the error is loud.
                if let Err(e) = result {
                    tracing::error!(partition = %tp, seq, error = %e, "batch refused by the collector; will retry in 5 s");
                }
                self.metrics.batches_refused.inc();
            }
            AckOutcome::Resend => {
                // Overtook a batch before it, or failed while one before it was in flight:
                // sent again right after that one.
                tracing::debug!(partition = %tp, seq, result = ?result.err(), "pipelined batch to be sent again in order");
                self.metrics.batches_resent.inc();
            }
            AckOutcome::Ignored => {
                tracing::debug!(partition = %tp, seq, "report for a batch no longer in flight; ignored");
            }
        }
    }
}

/// Asks the collectors (retrying with backoff until one answers) for a producer id when
/// there is none, the partition counts of `topics`, and, when the journal holds batches from
/// before this start, the producer's last sequences.
async fn connect(
    client: Arc<Client>,
    producer: Option<(i64, i16)>,
    topics: Vec<String>,
    check_journal: bool,
    tx: mpsc::Sender<Result<Connected, AgentError>>,
) {
    let result = async {
        let producer = match producer {
            Some(p) => p,
            None => {
                client
                    .retry("allocate producer id", || client.allocate_producer())
                    .await?
            }
        };
        let mut partitions = Vec::new();
        for topic in topics {
            let n = client
                .retry("topic metadata", || client.partitions(&topic))
                .await?;
            partitions.push((topic, n));
        }
        let last_sequences = if check_journal {
            let last: HashMap<(String, u32), (i16, i32)> = client
                .retry("producer state", || client.last_sequences(producer.0))
                .await?;
            Some(
                last.into_iter()
                    .map(|((t, p), v)| (TopicPartition::new(t, p), v))
                    .collect(),
            )
        } else {
            None
        };
        Ok(Connected {
            producer,
            partitions,
            last_sequences,
        })
    }
    .await;
    let _ = tx.send(result).await;
}
