//! The agent's main loop: discover files, read whole records, cut batches per partition,
//! journal each batch durably before sending it, send (one batch in flight per partition),
//! advance file checkpoints on acknowledgement. One task owns all state; sends run in their
//! own tasks and report back over a bounded channel.
//!
//! Backpressure: bytes read but not yet acknowledged are capped by `buffer_bytes_max`;
//! above it the agent stops reading — the files are the buffer — and drops nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::{BatchBuilder, BatchEncoder, Compression, ProducerStamp};
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::config::{Config, StartAt};
use crate::files::{self, Found};
use crate::lines;
use crate::state::{
    AgentState, FileKey, FileState, JournalEntry, StateError, UNASSIGNED, file_id, partition_key,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("collector: {0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Other(String),
}

/// How long an unknown file whose first line equals a file being read waits before it is
/// taken for a different file (rather than the copy of a copy-truncate).
const TWIN_GRACE: Duration = Duration::from_secs(5);
/// A file no longer found at any matching path is closed after this long without growth.
const DRAIN_IDLE: Duration = Duration::from_secs(5);
/// How often input patterns that still match nothing are logged again.
const UNMATCHED_REPEAT: Duration = Duration::from_secs(300);
/// How often dirty state (acknowledgements) is written when nothing else writes it.
const STATE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Tailed {
    id: String,
    file: File,
    dev: u64,
    inode: u64,
    read_offset: u64,
    /// Size at the last discovery (a change makes discovery check the first line again).
    seen_size: u64,
    last_growth: Instant,
    /// Seen at a matching path in the last discovery.
    present: bool,
    /// Since when bytes after `read_offset` have waited for their record to end (a multiline
    /// record waits for its next line, at most the input's timeout).
    waiting_since: Option<Instant>,
}

#[derive(Debug)]
struct Pending {
    builder: BatchBuilder,
    /// File ranges in record order; a range's end always ends a record (rebuilding a
    /// multiline batch relies on it: a record ended by the timeout ends its range).
    ranges: Vec<(FileKey, u64, u64)>,
    /// The last range must not grow: its last record was ended by the multiline timeout.
    sealed: bool,
    started: Instant,
    timestamp_ms: i64,
}

/// A journaled batch on its way: encoded ahead (up to `in_flight_max` per partition, on the
/// blocking pool) while the one before it is in flight, sent in sequence order.
#[derive(Debug)]
struct Ready {
    entry: JournalEntry,
    /// The records; `None` after a restart (rebuilt from the files) or once encoding started.
    builder: Option<BatchBuilder>,
    /// The journal generation that must be durable before this batch leaves.
    generation: u64,
    encoded: Encoded,
    /// Journaled before this start: the collector may have it already (checked once the
    /// producer's last sequences are known).
    recovered: bool,
}

/// How reading one file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// At its end (or it cannot be read): its successors may be read.
    Drained,
    /// Unread bytes remain (an unfinished record still expected to end).
    More,
    /// `buffer_bytes_max` reached: nothing more is read this round.
    BufferFull,
}

#[derive(Debug)]
enum Encoded {
    No,
    Running,
    Done(Arc<Vec<u8>>),
}

#[derive(Debug, Default)]
struct PartitionQueue {
    pending: Option<Pending>,
    /// Journaled batches not yet acknowledged, oldest first; the front may be in flight.
    ready: VecDeque<Ready>,
    in_flight: bool,
    /// After a refused batch: do not resend before this.
    retry_after: Option<Instant>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn range_bytes(e: &JournalEntry) -> u64 {
    e.ranges.iter().map(|(_, s, t)| t - s).sum()
}

struct Agent {
    cfg: Config,
    host: String,
    client: Arc<Client>,
    state: AgentState,
    tailed: HashMap<String, Tailed>,
    queues: BTreeMap<String, PartitionQueue>,
    topic_partitions: HashMap<String, u32>,
    /// Unknown files that look like a twin of a tailed one, with when first seen.
    twins: HashMap<(u64, u64), Instant>,
    buffered: u64,
    dirty: bool,
    journal_dirty: bool,
    last_store: Instant,
    /// Bumped per cut batch; a batch is sent once a store covering its generation finished.
    journal_gen: u64,
    durable_gen: u64,
    /// A state store runs on the blocking pool (at most one at a time, so they land in order).
    storing: bool,
    store_tx: mpsc::Sender<(u64, Result<(), StateError>)>,
    encoded_tx: mpsc::Sender<(String, i32, Result<Vec<u8>, String>)>,
    /// Encodes running at once: one per core (more only costs memory: a zstd context each).
    encoders: Arc<tokio::sync::Semaphore>,
    acks_tx: mpsc::Sender<(String, i32, Result<(), String>)>,
    metrics: Arc<crate::metrics::AgentMetrics>,
    first_start: bool,
    /// A collector gave the producer identity, the topics' partitions and (after a restart)
    /// the producer's last sequences. Until then files are read and batches journaled, but
    /// nothing is encoded or sent.
    online: bool,
    /// The journal generation whose store holds the producer identity: nothing is sent
    /// before it is durable.
    identity_gen: u64,
    /// Input patterns that matched nothing at the last discovery, and when that was last
    /// logged.
    unmatched: Vec<String>,
    unmatched_warned: Option<Instant>,
    /// Whether the first discovery after start looked for known files renamed away.
    reclaimed: bool,
    /// The read buffer, reused across reads.
    read_buf: Vec<u8>,
    /// A read found a file changed under it (truncated): discover again before reading on.
    rediscover: bool,
    last_discovery: Instant,
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
    let state = AgentState::load(&cfg.state_dir)?;
    // Partition counts learnt before: a restart with no collector reachable reads on.
    let state_partitions: HashMap<String, u32> = state
        .topic_partitions
        .iter()
        .map(|(t, n)| (t.clone(), *n))
        .collect();
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
    let mut agent = Agent {
        cfg,
        host,
        client,
        state,
        tailed: HashMap::new(),
        queues: BTreeMap::new(),
        topic_partitions: state_partitions,
        twins: HashMap::new(),
        buffered: 0,
        dirty: false,
        journal_dirty: false,
        last_store: Instant::now(),
        journal_gen: 0,
        durable_gen: 0,
        storing: false,
        store_tx,
        encoded_tx,
        encoders: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        )),
        acks_tx,
        metrics,
        first_start,
        online: false,
        identity_gen: u64::MAX,
        unmatched: Vec::new(),
        unmatched_warned: None,
        reclaimed: false,
        read_buf: Vec::new(),
        rediscover: false,
        last_discovery: Instant::now(),
    };
    agent.recover_journal();
    // The producer identity, partition counts and last sequences come from the collectors in
    // the background: the agent reads and journals meanwhile (the files are the buffer), so
    // it is ready — for systemd too — while no collector answers.
    let (connected_tx, mut connected_rx) = mpsc::channel(1);
    tokio::spawn(connect(
        agent.client.clone(),
        agent
            .state
            .producer_id
            .map(|id| (id, agent.state.producer_epoch)),
        agent.missing_topics(),
        !agent.state.journal.is_empty(),
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
        let linger = agent.next_linger_deadline();
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
                let rescan = agent.last_discovery.elapsed() >= Duration::from_millis(200);
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
    if agent.storing
        && let Some((generation, result)) = store_rx.recv().await
    {
        agent.on_stored(generation, result)?;
    }
    tracing::info!("stopping: waiting up to 10 s for batches in flight");
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.queues.values().any(|q| q.in_flight) && Instant::now() < deadline {
        if let Ok(Some(ack)) =
            tokio::time::timeout(Duration::from_millis(200), acks_rx.recv()).await
        {
            agent.on_ack(ack);
        }
    }
    agent.state.store(&agent.cfg.state_dir)?;
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
        for input in &new.inputs {
            if self.topic_partitions.contains_key(&input.topic) {
                continue;
            }
            let topic = input.topic.clone();
            let lookup = client.retry("topic metadata", || client.partitions(&topic));
            match tokio::time::timeout(Duration::from_secs(10), lookup).await {
                Ok(Ok(n)) => {
                    self.topic_partitions.insert(topic, n);
                }
                _ => {
                    tracing::error!(%topic, "reload refused: cannot learn the new topic's partitions from the collectors");
                    return false;
                }
            }
        }
        new.state_dir = self.cfg.state_dir.clone();
        self.cfg = new;
        self.client = client;
        // Files follow the input that matches them now; unmatched ones stop being read.
        let ids: Vec<String> = self.state.files.keys().cloned().collect();
        let mut stopped = 0;
        for id in ids {
            let Some((_, st)) = self.state.files.get_mut(&id) else {
                continue;
            };
            match files::input_for(&self.cfg.inputs, std::path::Path::new(&st.last_path)) {
                Some(i) => st.input = i,
                None => {
                    if self.tailed.remove(&id).is_some() {
                        stopped += 1;
                    }
                }
            }
        }
        self.dirty = true;
        tracing::info!(
            inputs = self.cfg.inputs.len(),
            stopped,
            "configuration reloaded"
        );
        true
    }

    /// Queues the batches journaled before this start, in sequence order, ahead of anything
    /// read now. They are sent (or found delivered) once the collectors answer.
    fn recover_journal(&mut self) {
        for entry in self.state.journal.clone() {
            self.buffered += range_bytes(&entry);
            self.queues
                .entry(partition_key(&entry.topic, entry.partition))
                .or_default()
                .ready
                .push_back(Ready {
                    entry,
                    builder: None,
                    generation: 0,
                    encoded: Encoded::No,
                    recovered: true,
                });
        }
    }

    /// Topics of the inputs whose partition count is not known yet.
    fn missing_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .cfg
            .inputs
            .iter()
            .map(|i| i.topic.clone())
            .filter(|t| !self.topic_partitions.contains_key(t))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The collectors answered: keep the producer identity (durably, before anything is
    /// stamped with it), the partition counts, and mark journaled batches the collector
    /// already has delivered. Then sending starts.
    fn on_connected(&mut self, c: Connected) -> Result<(), AgentError> {
        if self.state.producer_id.is_none() {
            self.state.producer_id = Some(c.producer.0);
            self.state.producer_epoch = c.producer.1;
            tracing::info!(producer_id = c.producer.0, "allocated producer id");
        }
        for (topic, n) in c.partitions {
            self.state.topic_partitions.insert(topic.clone(), n);
            self.topic_partitions.insert(topic, n);
        }
        for (_, st) in self.state.files.values_mut() {
            if st.partition == UNASSIGNED
                && let Some(n) = self.topic_partitions.get(&st.topic)
            {
                st.partition = partition_for(&self.host, &st.path, *n);
            }
        }
        let mut delivered = 0;
        let mut resend = 0;
        if let Some(last) = c.last_sequences {
            let epoch = self.state.producer_epoch;
            let mut done = Vec::new();
            for q in self.queues.values_mut() {
                q.ready.retain(|r| {
                    if !r.recovered {
                        return true;
                    }
                    let e = &r.entry;
                    let end_seq = e.base_sequence + e.record_count as i32 - 1;
                    let have = last
                        .get(&(e.topic.clone(), e.partition))
                        .filter(|(ep, _)| *ep == epoch)
                        .is_some_and(|(_, s)| *s >= end_seq);
                    if have {
                        done.push(e.clone());
                    } else {
                        resend += 1;
                    }
                    !have
                });
            }
            for entry in done {
                self.buffered = self.buffered.saturating_sub(range_bytes(&entry));
                self.state.journal.retain(|e| {
                    !(e.topic == entry.topic
                        && e.partition == entry.partition
                        && e.base_sequence == entry.base_sequence)
                });
                self.apply_ack(&entry);
                delivered += 1;
            }
        }
        if delivered + resend > 0 {
            tracing::info!(delivered, resend, "recovered the batch journal");
        }
        // Durable before any batch carries the producer id: sending starts once a store
        // begun after this point has finished (stores run one at a time, in order; a store
        // written here directly could be overtaken by an older one still running).
        self.journal_gen += 1;
        self.journal_dirty = true;
        self.identity_gen = self.journal_gen;
        self.online = true;
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
    fn next_linger_deadline(&self) -> Instant {
        let linger = self
            .queues
            .values()
            .filter_map(|q| q.pending.as_ref())
            .map(|p| p.started + self.cfg.output.linger)
            .min();
        [linger, self.next_multiline_deadline()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// One round: (re)discover files, read, cut and send batches, store state if due.
    fn step(&mut self, rescan: bool) -> Result<(), AgentError> {
        if rescan {
            self.discover();
        }
        self.read_all();
        if std::mem::take(&mut self.rediscover) {
            self.discover();
            self.read_all();
        }
        self.cut_due_batches()?;
        self.maybe_store();
        self.send_ready()?;
        self.close_drained();
        let m = &self.metrics;
        m.files_open.set(self.tailed.len() as i64);
        m.files_known.set(self.state.files.len() as i64);
        m.buffered_bytes.set(self.buffered as i64);
        m.journal_batches.set(self.state.journal.len() as i64);
        Ok(())
    }

    /// Starts a store on the blocking pool when the journal grew (batches wait for it) or
    /// acknowledgements are due. Batches cut meanwhile share the next store: one fsync
    /// covers many batches, and reading goes on while it runs.
    fn maybe_store(&mut self) {
        if self.storing
            || !(self.journal_dirty
                || (self.dirty && self.last_store.elapsed() >= STATE_FLUSH_INTERVAL))
        {
            return;
        }
        let snapshot = self.state.clone();
        let generation = self.journal_gen;
        let dir = self.cfg.state_dir.clone();
        let tx = self.store_tx.clone();
        self.storing = true;
        self.dirty = false;
        self.journal_dirty = false;
        self.last_store = Instant::now();
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || snapshot.store(&dir))
                .await
                .unwrap_or_else(|e| {
                    Err(StateError::Write {
                        dir: PathBuf::new(),
                        source: std::io::Error::other(e.to_string()),
                    })
                });
            let _ = tx.send((generation, result)).await;
        });
    }

    fn on_stored(
        &mut self,
        generation: u64,
        result: Result<(), StateError>,
    ) -> Result<(), AgentError> {
        self.storing = false;
        result?;
        self.durable_gen = self.durable_gen.max(generation);
        Ok(())
    }

    fn discover(&mut self) {
        for t in self.tailed.values_mut() {
            t.present = false;
        }
        self.last_discovery = Instant::now();
        let files::Discovery { found, unmatched } = files::discover(&self.cfg.inputs);
        self.report_unmatched(unmatched);
        self.forget_gone(&found);
        // Files closed to stay under max_open_files, by inode, with what was acknowledged:
        // one whose size did not move has nothing new and is not reopened.
        let closed: HashMap<(u64, u64), u64> = self
            .state
            .files
            .iter()
            .filter(|(id, _)| !self.tailed.contains_key(*id))
            .map(|(_, (_, st))| ((st.dev, st.inode), st.acked_offset))
            .collect();
        let mut unknown = Vec::new();
        // Known inodes first: notice truncations before matching copies.
        for f in found {
            let known = self
                .tailed
                .values_mut()
                .find(|t| t.dev == f.dev && t.inode == f.inode)
                .map(|t| t.id.clone());
            match known {
                Some(id) => {
                    if self.truncated(&id, &f) {
                        // Copy-truncate: what was read so far lives on in the copy, which
                        // continues this identity exactly where reading stopped; this inode
                        // starts over as a new file.
                        tracing::info!(path = %f.path.display(), "file truncated; following the copy and the new content");
                        if let Some(t) = self.tailed.remove(&id) {
                            let unread = t.seen_size.saturating_sub(t.read_offset);
                            self.follow_copy(t.id, t.read_offset, unread, &f);
                        }
                        unknown.push(f);
                    } else if let Some(t) = self.tailed.get_mut(&id) {
                        t.present = true;
                        t.seen_size = f.size;
                        if let Some((_, st)) = self.state.files.get_mut(&id) {
                            st.last_path = f.path.to_string_lossy().into_owned();
                        }
                    }
                }
                None => {
                    if closed.get(&(f.dev, f.inode)) == Some(&f.size) {
                        continue;
                    }
                    unknown.push(f);
                }
            }
        }
        if !self.reclaimed {
            self.reclaimed = true;
            self.reclaim_renamed(&unknown);
        }
        for f in unknown {
            // A copy followed above is tailed already.
            if self
                .tailed
                .values()
                .any(|t| t.dev == f.dev && t.inode == f.inode)
            {
                continue;
            }
            if self.tailed.len() >= self.cfg.max_open_files {
                self.close_least_active(self.tailed.len() + 1 - self.cfg.max_open_files);
            }
            if self.tailed.len() >= self.cfg.max_open_files {
                tracing::debug!(path = %f.path.display(), limit = self.cfg.max_open_files, "max_open_files reached; the file waits for a busy one to go idle");
                continue;
            }
            self.adopt(f);
        }
        // `start_at` applies only to files present at the very first start.
        self.first_start = false;
    }

    /// Warns about input patterns that match no file: when that changes, and every
    /// [`UNMATCHED_REPEAT`] while it lasts. `/health` and `/metrics` show them too.
    fn report_unmatched(&mut self, unmatched: Vec<String>) {
        let due = self
            .unmatched_warned
            .is_none_or(|t| t.elapsed() >= UNMATCHED_REPEAT);
        if !unmatched.is_empty() && (unmatched != self.unmatched || due) {
            for p in &unmatched {
                let why =
                    files::pattern_problem(p).unwrap_or_else(|| format!("{p} matches no file"));
                tracing::warn!("input matches nothing: {why}");
            }
            self.unmatched_warned = Some(Instant::now());
        }
        if unmatched.is_empty() {
            self.unmatched_warned = None;
        }
        self.metrics.unmatched_patterns.set(unmatched.len() as i64);
        self.metrics.set_unmatched(&unmatched);
        self.unmatched = unmatched;
    }

    /// Marks known files found again as seen; forgets files no glob has found for
    /// `forget_files_after` that are neither open nor named by the journal.
    fn forget_gone(&mut self, found: &[Found]) {
        let now = now_ms();
        let here: std::collections::HashSet<(u64, u64)> =
            found.iter().map(|f| (f.dev, f.inode)).collect();
        let limit = self.cfg.forget_files_after.as_millis() as i64;
        let journaled: std::collections::HashSet<String> = self
            .state
            .journal
            .iter()
            .flat_map(|e| e.ranges.iter().map(|(k, _, _)| file_id(k)))
            .collect();
        let mut forgotten = 0;
        self.state.files.retain(|id, (_, st)| {
            if here.contains(&(st.dev, st.inode)) {
                st.last_seen_ms = now;
                return true;
            }
            let keep = self.tailed.contains_key(id)
                || journaled.contains(id)
                || now - st.last_seen_ms < limit;
            if !keep {
                forgotten += 1;
            }
            keep
        });
        if forgotten > 0 {
            tracing::info!(
                files = forgotten,
                "forgot files gone for longer than forget_files_after_ms"
            );
            self.dirty = true;
        }
    }

    /// Starts tailing a file not currently tailed: resumes a known identity or begins a new one.
    fn adopt(&mut self, f: Found) {
        let Ok(file) = File::open(&f.path) else {
            return;
        };
        let Ok(Some(fp)) = files::fingerprint(&file) else {
            return;
        };
        let tailed_fp: Vec<String> = self
            .tailed
            .keys()
            .filter(|id| {
                self.state
                    .files
                    .get(*id)
                    .is_some_and(|(k, _)| k.fingerprint == fp)
            })
            .cloned()
            .collect();
        // A known identity with this fingerprint, not being read, whose data fits the file.
        // It resumes where its lines were taken into batches (acknowledged, journaled or
        // still pending), never before: those lines are on their way already.
        let mut candidates: Vec<(String, u64, bool)> = self
            .state
            .files
            .iter()
            .filter(|(id, (k, _))| k.fingerprint == fp && !self.tailed.contains_key(*id))
            .map(|(id, (_, st))| {
                (
                    id.clone(),
                    self.taken_end(id),
                    st.dev == f.dev && st.inode == f.inode,
                )
            })
            .filter(|(_, offset, _)| *offset <= f.size)
            .collect();
        candidates.sort_by_key(|(_, off, same_inode)| (!*same_inode, std::cmp::Reverse(*off)));
        if let Some((id, offset, _)) = candidates.into_iter().next() {
            if let Some((_, st)) = self.state.files.get_mut(&id) {
                st.input = f.input;
            }
            tracing::info!(path = %f.path.display(), offset, "resuming file");
            self.resume(id, file, &f, offset, true);
            return;
        }
        if !tailed_fp.is_empty() {
            // Maybe the copy of a file about to be truncated: wait before calling it new.
            let since = *self
                .twins
                .entry((f.dev, f.inode))
                .or_insert_with(Instant::now);
            if since.elapsed() < TWIN_GRACE {
                return;
            }
        }
        self.twins.remove(&(f.dev, f.inode));
        let input = &self.cfg.inputs[f.input];
        let generation = self
            .state
            .files
            .values()
            .filter(|(k, _)| k.fingerprint == fp && k.dev == f.dev && k.inode == f.inode)
            .map(|(k, _)| k.generation + 1)
            .max()
            .unwrap_or(0);
        let key = FileKey {
            fingerprint: fp,
            dev: f.dev,
            inode: f.inode,
            generation,
        };
        let id = file_id(&key);
        let path = f.path.to_string_lossy().into_owned();
        // The partition comes from the topic's partition count, which the collectors give:
        // until they answer, the file is held open (a rotation cannot lose it) but not read.
        let partition = self
            .topic_partitions
            .get(&input.topic)
            .map_or(UNASSIGNED, |n| partition_for(&self.host, &path, *n));
        let start = if self.first_start && input.start_at == StartAt::End {
            f.size
        } else {
            0
        };
        tracing::info!(path = %path, partition, start, "new file");
        let seq = self.state.next_file_seq;
        self.state.next_file_seq += 1;
        self.state.files.insert(
            id.clone(),
            (
                key,
                FileState {
                    path: path.clone(),
                    input: f.input,
                    last_seen_ms: now_ms(),
                    topic: input.topic.clone(),
                    partition,
                    acked_offset: start,
                    last_path: path,
                    dev: f.dev,
                    inode: f.inode,
                    seq,
                },
            ),
        );
        self.resume(id, file, &f, start, true);
    }

    /// Whether a tailed file was truncated: it is shorter than what was read, or its first
    /// line changed (truncated and written past the old read position before this look).
    fn truncated(&self, id: &str, f: &Found) -> bool {
        let Some(t) = self.tailed.get(id) else {
            return false;
        };
        if f.size < t.read_offset {
            return true;
        }
        if f.size == t.seen_size {
            return false;
        }
        let known = self.state.files.get(id).map(|(k, _)| k.fingerprint);
        match files::fingerprint(&t.file) {
            Ok(fp) => fp != known,
            Err(_) => false,
        }
    }

    /// Where a file's lines stop being on their way: the furthest of its acknowledged
    /// offset, its journaled ranges and the ranges pending in unjournaled batches.
    fn taken_end(&self, id: &str) -> u64 {
        let acked = self
            .state
            .files
            .get(id)
            .map_or(0, |(_, st)| st.acked_offset);
        let journaled = self.state.journal.iter().flat_map(|e| e.ranges.iter());
        let pending = self
            .queues
            .values()
            .filter_map(|q| q.pending.as_ref())
            .flat_map(|p| p.ranges.iter());
        journaled
            .chain(pending)
            .filter(|(k, _, _)| file_id(k) == id)
            .map(|(_, _, end)| *end)
            .fold(acked, u64::max)
    }

    /// Tails `file` as the known identity `id` from `offset` (a rename, a copy, a restart).
    fn resume(&mut self, id: String, file: File, f: &Found, offset: u64, present: bool) {
        if let Some((_, st)) = self.state.files.get_mut(&id) {
            st.dev = f.dev;
            st.inode = f.inode;
            st.last_path = f.path.to_string_lossy().into_owned();
        }
        self.twins.remove(&(f.dev, f.inode));
        self.tailed.insert(
            id.clone(),
            Tailed {
                id,
                file,
                dev: f.dev,
                inode: f.inode,
                read_offset: offset,
                seen_size: f.size,
                last_growth: Instant::now(),
                present,
                waiting_since: None,
            },
        );
        self.dirty = true;
    }

    /// After `t`'s file was truncated: finds the copy its content was saved to (same first
    /// line, at least as long as what was read, in the same directory, not a file known
    /// otherwise; the newest if several) and continues `t`'s identity there at exactly the
    /// position reading had reached. Whether the copy's name matches a glob does not matter.
    fn follow_copy(&mut self, id: String, offset: u64, unread: u64, truncated: &Found) {
        let Some((key, st)) = self.state.files.get(&id) else {
            return;
        };
        let fp = key.fingerprint;
        let dir = truncated
            .path
            .parent()
            .map(std::path::Path::to_path_buf)
            .or_else(|| {
                PathBuf::from(&st.last_path)
                    .parent()
                    .map(|p| p.to_path_buf())
            });
        let known: std::collections::HashSet<(u64, u64)> = self
            .state
            .files
            .values()
            .map(|(_, st)| (st.dev, st.inode))
            .chain(self.tailed.values().map(|t| (t.dev, t.inode)))
            .chain([(truncated.dev, truncated.inode)])
            .collect();
        let mut best: Option<(std::time::SystemTime, Found, File)> = None;
        for path in dir
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
        {
            // Stat first: only a plausible copy is opened and its first line read.
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if !m.is_file() || m.len() < offset || known.contains(&(m.dev(), m.ino())) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let same = file
                .metadata()
                .is_ok_and(|o| (o.dev(), o.ino()) == (m.dev(), m.ino()));
            if !same || !matches!(files::fingerprint(&file), Ok(Some(x)) if x == fp) {
                continue;
            }
            let mtime = m.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
                let found = Found {
                    input: truncated.input,
                    path,
                    dev: m.dev(),
                    inode: m.ino(),
                    size: m.len(),
                };
                best = Some((mtime, found, file));
            }
        }
        match best {
            Some((_, found, file)) => {
                tracing::info!(copy = %found.path.display(), offset, "continuing a copy-truncated file in its copy");
                self.resume(id, file, &found, offset, true);
            }
            None if unread > 0 => {
                tracing::warn!(path = %truncated.path.display(), lost_bytes = unread, "file truncated before it was read to its end, and no copy of it was found: its unread bytes are gone");
            }
            None => {}
        }
    }

    /// At the first discovery after a start: known files that no glob finds any more (renamed
    /// to a name the inputs do not match while the agent was down) but that still exist by
    /// inode at their last path or in its directory, with lines not yet taken, are tailed
    /// again by handle and drained.
    fn reclaim_renamed(&mut self, unknown: &[Found]) {
        // Known files whose inode a glob found again, but with another first line or shorter
        // than what was taken: copy-truncated while the agent was down. Their identity goes
        // on in the copy (whatever its name), from where its lines were taken.
        let truncated: Vec<(String, Found)> = self
            .state
            .files
            .iter()
            .filter(|(id, _)| !self.tailed.contains_key(*id))
            .filter_map(|(id, (k, st))| {
                let f = unknown
                    .iter()
                    .find(|f| f.dev == st.dev && f.inode == st.inode)?;
                let fp = File::open(&f.path)
                    .ok()
                    .and_then(|h| files::fingerprint(&h).ok())?;
                (fp != Some(k.fingerprint) || f.size < self.taken_end(id))
                    .then(|| (id.clone(), f.clone()))
            })
            .collect();
        for (id, f) in truncated {
            let offset = self.taken_end(&id);
            self.follow_copy(id, offset, 0, &f);
        }
        let found_now: std::collections::HashSet<(u64, u64)> = unknown
            .iter()
            .map(|f| (f.dev, f.inode))
            .chain(self.tailed.values().map(|t| (t.dev, t.inode)))
            .collect();
        let lost: Vec<(String, FileState, u64)> = self
            .state
            .files
            .iter()
            .filter(|(id, (_, st))| {
                !self.tailed.contains_key(*id) && !found_now.contains(&(st.dev, st.inode))
            })
            .map(|(id, (k, st))| (id.clone(), st.clone(), k.fingerprint))
            .collect();
        // One directory listing per directory, however many files it had.
        let mut by_dir: HashMap<PathBuf, HashMap<(u64, u64), PathBuf>> = HashMap::new();
        for (id, st, fp) in lost {
            let offset = self.taken_end(&id);
            let Some(dir) = std::path::Path::new(&st.last_path).parent() else {
                continue;
            };
            let inodes = by_dir.entry(dir.to_path_buf()).or_insert_with(|| {
                std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let m = std::fs::metadata(e.path()).ok()?;
                        m.is_file().then(|| ((m.dev(), m.ino()), e.path()))
                    })
                    .collect()
            });
            let Some(path) = inodes.get(&(st.dev, st.inode)).cloned() else {
                continue;
            };
            let Some((file, m)) = File::open(&path)
                .ok()
                .and_then(|f| Some((f.metadata().ok()?, f)))
                .filter(|(m, _)| m.dev() == st.dev && m.ino() == st.inode)
                .map(|(m, f)| (f, m))
            else {
                continue;
            };
            if m.len() <= offset || !matches!(files::fingerprint(&file), Ok(Some(x)) if x == fp) {
                continue;
            }
            tracing::info!(path = %path.display(), offset, "resuming a file renamed while the agent was down");
            let f = Found {
                input: st.input,
                path,
                dev: m.dev(),
                inode: m.ino(),
                size: m.len(),
            };
            self.resume(id, file, &f, offset, false);
        }
    }

    /// Reads every tailed file as far as the buffer allows. Files sharing a `path` stream
    /// (a file and its successors after rotation: same topic, same `path` header) are read
    /// oldest first, and a successor only once its predecessor is read to its end (or has
    /// waited [`DRAIN_IDLE`] on an unfinished last record): a consumer of one path sees the
    /// rest of a rotated file before the first line of the new one.
    fn read_all(&mut self) {
        // (seq, stream, id): a stream is a hash of (topic, path), so a read pass does not copy
        // every file's strings (this runs on every wake-up, for every open file). A collision
        // could only delay a file behind an unrelated older one, never reorder a stream.
        let mut order: Vec<(u64, u64, String)> = self
            .tailed
            .keys()
            .filter_map(|id| {
                let (_, st) = self.state.files.get(id)?;
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&(&st.topic, &st.path), &mut h);
                Some((st.seq, std::hash::Hasher::finish(&h), id.clone()))
            })
            .collect();
        order.sort_unstable();
        let mut busy: std::collections::HashSet<u64> = Default::default();
        for (_, stream, id) in order {
            if busy.contains(&stream) {
                continue;
            }
            match self.read_file(&id) {
                Read::Drained => {}
                Read::More => {
                    busy.insert(stream);
                }
                Read::BufferFull => return,
            }
        }
    }

    /// Reads one file until its end, an unfinished record, or the buffer limit.
    fn read_file(&mut self, id: &str) -> Read {
        let chunk = self.cfg.read_chunk_bytes;
        // A record may be up to max_line_bytes: a chunk without one's end is read again larger.
        let most = chunk.max(self.cfg.max_line_bytes + 1);
        if self
            .state
            .files
            .get(id)
            .is_none_or(|(_, st)| st.partition == UNASSIGNED)
        {
            // Not read before its partition is known (the collectors have not answered).
            return Read::More;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let timeout = self
            .state
            .files
            .get(id)
            .and_then(|(_, st)| self.cfg.inputs.get(st.input))
            .and_then(|i| i.multiline.as_ref())
            .map(|m| m.timeout);
        let mut want = chunk;
        let mut checked = false;
        let result = loop {
            if self.buffered >= self.cfg.buffer_bytes_max as u64 {
                break Read::BufferFull;
            }
            let Some(t) = self.tailed.get(id) else {
                break Read::Drained;
            };
            let offset = t.read_offset;
            // The multiline timeout ends a record that waited long enough for its next line.
            let flush = match (timeout, t.waiting_since) {
                (Some(limit), Some(since)) => since.elapsed() >= limit,
                _ => false,
            };
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = match t.file.read_at(&mut buf[..want], offset) {
                Ok(n) => n,
                Err(e) => {
                    // Reported, and not holding its successors back.
                    tracing::warn!(file = %id, error = %e, "read failed");
                    break Read::Drained;
                }
            };
            if n == 0 {
                break Read::Drained;
            }
            if !checked {
                // Still the file that was being read? A copy-truncated file that was written
                // past this offset again before discovery noticed has another first line:
                // its bytes here are not the continuation of what was read.
                checked = true;
                let known = self.state.files.get(id).map(|(k, _)| k.fingerprint);
                if offset > 0 && !matches!(files::fingerprint(&t.file), Ok(fp) if fp == known) {
                    self.rediscover = true;
                    break Read::Drained;
                }
            }
            let consumed = self.take_records(id, &buf[..n], offset, flush);
            let Some(t) = self.tailed.get_mut(id) else {
                break Read::Drained;
            };
            if consumed == 0 {
                if n == want && want < most {
                    want = (want * 2).min(most);
                    continue;
                }
                // An incomplete record: wait for the rest (or the multiline timeout).
                // After a flush that found no whole line, the wait starts over (no spin).
                if flush {
                    t.waiting_since = Some(Instant::now());
                } else {
                    t.waiting_since.get_or_insert_with(Instant::now);
                }
                // An unfinished last record holds a successor back only for a while.
                break if t.last_growth.elapsed() >= DRAIN_IDLE {
                    Read::Drained
                } else {
                    Read::More
                };
            }
            t.read_offset += consumed as u64;
            t.last_growth = Instant::now();
            t.waiting_since = (consumed < n).then(Instant::now);
            want = chunk;
        };
        buf.truncate(chunk);
        self.read_buf = buf;
        result
    }

    /// The earliest moment a waiting multiline record times out, if any.
    fn next_multiline_deadline(&self) -> Option<Instant> {
        self.tailed
            .values()
            .filter_map(|t| {
                let since = t.waiting_since?;
                let (_, st) = self.state.files.get(&t.id)?;
                let m = self.cfg.inputs.get(st.input)?.multiline.as_ref()?;
                Some(since + m.timeout)
            })
            .min()
    }

    /// Cuts whole records from `data` (read at `offset`) into the file's partition batch.
    /// With `flush`, a record whose end is still unknown at the end of `data` ends there
    /// (the multiline timeout) and its range ends with it.
    fn take_records(&mut self, id: &str, data: &[u8], offset: u64, flush: bool) -> usize {
        let Some((key, st)) = self.state.files.get(id).cloned() else {
            return 0;
        };
        let qkey = partition_key(&st.topic, st.partition);
        let multiline = self
            .cfg
            .inputs
            .get(st.input)
            .and_then(|i| i.multiline.clone());
        let labels: Vec<(Vec<u8>, Vec<u8>)> = self
            .cfg
            .inputs
            .get(st.input)
            .map(|i| {
                i.labels
                    .iter()
                    .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                    .collect()
            })
            .unwrap_or_default();
        let host = self.host.clone();
        let mut headers: Vec<(&[u8], &[u8])> =
            vec![(b"host", host.as_bytes()), (b"path", st.path.as_bytes())];
        headers.extend(labels.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let (max_line, batch_max) = (self.cfg.max_line_bytes, self.cfg.output.batch_bytes_max);
        let mut pos = 0usize;
        // One queue lookup per batch, not per line: this loop is the agent's hot path.
        loop {
            let q = self.queues.entry(qkey.clone()).or_default();
            let p = q.pending.get_or_insert_with(|| Pending {
                builder: BatchBuilder::new(),
                ranges: Vec::new(),
                sealed: false,
                started: Instant::now(),
                timestamp_ms: now_ms(),
            });
            let mut full = false;
            while let Some((len, used)) = match &multiline {
                None => lines::next_record(&data[pos..], max_line),
                Some(m) => {
                    lines::next_multiline(&data[pos..], join_of(m), m.max_lines, max_line, flush)
                }
            } {
                if !p.builder.is_empty() && p.builder.block_bytes() + len + 256 > batch_max {
                    full = true;
                    break;
                }
                p.builder
                    .push(p.timestamp_ms, None, Some(&data[pos..pos + len]), &headers);
                let (start, end) = (offset + pos as u64, offset + (pos + used) as u64);
                match p.ranges.last_mut() {
                    Some((k, _, e)) if *k == key && *e == start && !p.sealed => *e = end,
                    _ => p.ranges.push((key.clone(), start, end)),
                }
                // A record ended by flushing (no next line to decide) ends its range, so
                // rebuilding the batch ends it in the same place.
                p.sealed = flush
                    && multiline.is_some()
                    && memchr::memchr(b'\n', &data[pos + used..]).is_none();
                self.buffered += used as u64;
                self.metrics.records_read.inc();
                self.metrics.bytes_read.inc_by(used as u64);
                if used == len && multiline.is_none() {
                    // A piece of a line longer than max_line_bytes (no newline consumed).
                    self.metrics.long_line_pieces.inc();
                }
                if p.sealed {
                    self.metrics.multiline_timeouts.inc();
                }
                pos += used;
            }
            if !full {
                break;
            }
            self.cut(&qkey);
        }
        pos
    }

    fn cut_due_batches(&mut self) -> Result<(), AgentError> {
        let linger = self.cfg.output.linger;
        let due: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.pending
                    .as_ref()
                    .is_some_and(|p| p.started.elapsed() >= linger)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.cut(&k);
        }
        Ok(())
    }

    /// Turns a partition's pending records into a journaled batch with the next sequences.
    fn cut(&mut self, qkey: &str) {
        let Some(q) = self.queues.get_mut(qkey) else {
            return;
        };
        let Some(p) = q.pending.take() else { return };
        if p.builder.is_empty() {
            // Nothing was added (the data held no whole record): no batch, no sequence.
            return;
        }
        let Some((topic, partition)) = qkey
            .rsplit_once('/')
            .and_then(|(t, p)| Some((t.to_owned(), p.parse::<u32>().ok()?)))
        else {
            return;
        };
        let seq = self.state.next_sequence.entry(qkey.to_owned()).or_insert(0);
        let entry = JournalEntry {
            topic,
            partition,
            base_sequence: *seq,
            record_count: p.builder.len() as u32,
            timestamp_ms: p.timestamp_ms,
            ranges: p.ranges,
        };
        *seq = seq.wrapping_add(entry.record_count as i32);
        if *seq < 0 {
            *seq = 0; // sequences wrap at i32::MAX to 0, as in Kafka
        }
        self.state.journal.push(entry.clone());
        self.journal_dirty = true;
        self.journal_gen += 1;
        q.ready.push_back(Ready {
            entry,
            builder: Some(p.builder),
            generation: self.journal_gen,
            encoded: Encoded::No,
            recovered: false,
        });
    }

    /// Encodes journaled batches ahead (at most `in_flight_max` per partition) and sends the
    /// oldest of every idle partition. Nothing leaves before the journal naming it is durable.
    fn send_ready(&mut self) -> Result<(), AgentError> {
        if !self.online || self.durable_gen < self.identity_gen {
            return Ok(());
        }
        let now = Instant::now();
        let durable = self.durable_gen;
        let ahead = self.cfg.output.in_flight_max.max(1);
        let stamp_of = |entry: &JournalEntry, state: &AgentState| ProducerStamp {
            producer_id: state.producer_id.unwrap_or(-1),
            producer_epoch: state.producer_epoch,
            base_sequence: entry.base_sequence,
        };
        let keys: Vec<String> = self.queues.keys().cloned().collect();
        for k in keys {
            // 1. Encode ahead.
            let to_encode: Vec<usize> = match self.queues.get(&k) {
                Some(q) => q
                    .ready
                    .iter()
                    .take(ahead)
                    .enumerate()
                    .filter(|(_, r)| r.generation <= durable && matches!(r.encoded, Encoded::No))
                    .map(|(i, _)| i)
                    .collect(),
                None => continue,
            };
            for i in to_encode {
                let Some(r) = self.queues.get_mut(&k).and_then(|q| q.ready.get_mut(i)) else {
                    continue;
                };
                let builder = match r.builder.take() {
                    Some(b) => b,
                    None => rebuild(&self.state, &r.entry, &self.host, &self.cfg).map_err(|e| {
                        AgentError::Other(format!(
                            "cannot rebuild journaled batch {k} seq {}: {e}",
                            r.entry.base_sequence
                        ))
                    })?,
                };
                r.encoded = Encoded::Running;
                let stamp = stamp_of(&r.entry, &self.state);
                let (tx, level, key, seq) = (
                    self.encoded_tx.clone(),
                    self.cfg.output.zstd_level,
                    k.clone(),
                    r.entry.base_sequence,
                );
                let encoders = self.encoders.clone();
                tokio::spawn(async move {
                    let _permit = encoders.acquire_owned().await;
                    let result =
                        tokio::task::spawn_blocking(move || encode(&builder, stamp, level))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r);
                    let _ = tx.send((key, seq, result)).await;
                });
            }
            // 2. Send the oldest when nothing of this partition is in flight.
            let Some(q) = self.queues.get_mut(&k) else {
                continue;
            };
            if q.in_flight || q.retry_after.is_some_and(|t| t > now) {
                continue;
            }
            let Some(Ready {
                entry,
                encoded: Encoded::Done(bytes),
                ..
            }) = q.ready.front()
            else {
                continue;
            };
            q.in_flight = true;
            self.metrics.batches_sent.inc();
            let (topic, partition, seq) =
                (entry.topic.clone(), entry.partition, entry.base_sequence);
            let (client, tx, acks, bytes) = (
                self.client.clone(),
                self.acks_tx.clone(),
                self.cfg.output.acks.as_query(),
                bytes.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client
                    .retry("produce", || {
                        client.produce(&topic, partition, acks, bytes.as_ref().clone())
                    })
                    .await
                    .map_err(|e| e.to_string());
                tracing::debug!(
                    partition = %partition_key(&topic, partition),
                    seq,
                    produce_ms = started.elapsed().as_secs_f64() * 1e3,
                    "batch sent"
                );
                let _ = tx
                    .send((partition_key(&topic, partition), seq, result))
                    .await;
            });
        }
        Ok(())
    }

    fn on_encoded(&mut self, (qkey, seq, result): (String, i32, Result<Vec<u8>, String>)) {
        let Some(r) = self
            .queues
            .get_mut(&qkey)
            .and_then(|q| q.ready.iter_mut().find(|r| r.entry.base_sequence == seq))
        else {
            return;
        };
        match result {
            Ok(bytes) => r.encoded = Encoded::Done(Arc::new(bytes)),
            Err(e) => {
                // Not expected (the records were built here); rebuild from the files and
                // try again rather than lose the batch.
                tracing::error!(partition = %qkey, seq, error = %e, "encoding a batch failed; retrying");
                r.encoded = Encoded::No;
            }
        }
    }

    fn on_ack(&mut self, (qkey, seq, result): (String, i32, Result<(), String>)) {
        let Some(q) = self.queues.get_mut(&qkey) else {
            return;
        };
        q.in_flight = false;
        if let Err(e) = result {
            // Refused outright (not retriable): keep it journaled and try again later rather
            // than drop a line; the error is loud.
            tracing::error!(partition = %qkey, seq, error = %e, "batch refused by the collector; will retry in 5 s");
            self.metrics.batches_refused.inc();
            q.retry_after = Some(Instant::now() + Duration::from_secs(5));
            return;
        }
        let Some(Ready { entry, .. }) = q.ready.pop_front() else {
            return;
        };
        if entry.base_sequence != seq {
            tracing::error!(partition = %qkey, seq, expected = entry.base_sequence, "acknowledgement out of order");
        }
        self.buffered = self.buffered.saturating_sub(range_bytes(&entry));
        self.metrics.batches_acked.inc();
        self.state.journal.retain(|e| {
            !(e.topic == entry.topic
                && e.partition == entry.partition
                && e.base_sequence == entry.base_sequence)
        });
        self.apply_ack(&entry);
        self.dirty = true;
    }

    fn apply_ack(&mut self, entry: &JournalEntry) {
        for (key, _, end) in &entry.ranges {
            if let Some((_, st)) = self.state.files.get_mut(&file_id(key)) {
                st.acked_offset = st.acked_offset.max(*end);
            }
        }
    }

    /// Closes up to `n` open files that are fully read and fully acknowledged, least recently
    /// active first. They are found again by the next discovery when they grow, and resume
    /// at their acknowledged offset (which is where reading stopped).
    fn close_least_active(&mut self, n: usize) {
        let mut idle: Vec<(Instant, String)> = self
            .tailed
            .values()
            .filter(|t| {
                let acked = self.state.files.get(&t.id).map(|(_, st)| st.acked_offset);
                acked == Some(t.read_offset)
                    && t.file
                        .metadata()
                        .map(|m| m.len() <= t.read_offset)
                        .unwrap_or(false)
            })
            .map(|t| (t.last_growth, t.id.clone()))
            .collect();
        idle.sort();
        for (_, id) in idle.into_iter().take(n) {
            tracing::debug!(file = %id, "closing the least recently active file (max_open_files)");
            self.tailed.remove(&id);
        }
    }

    /// Closes files that are gone from every matching path, fully read and idle.
    fn close_drained(&mut self) {
        let drained: Vec<String> = self
            .tailed
            .values()
            .filter(|t| !t.present && t.last_growth.elapsed() >= DRAIN_IDLE)
            .filter(|t| {
                t.file
                    .metadata()
                    .map(|m| m.len() <= t.read_offset)
                    .unwrap_or(true)
            })
            .map(|t| t.id.clone())
            .collect();
        for id in drained {
            tracing::info!(file = %id, "closing a drained file");
            self.tailed.remove(&id);
        }
    }
}

fn join_of(m: &crate::config::Multiline) -> lines::Join<'_> {
    match (&m.start, &m.continuation) {
        (Some(re), _) => lines::Join::Start(re),
        (None, Some(re)) => lines::Join::Continuation(re),
        // Config validation requires exactly one pattern; without one, every line is a record.
        (None, None) => lines::Join::Lines,
    }
}

thread_local! {
    /// One zstd context per blocking-pool thread, reused across batches.
    static ENCODER: std::cell::RefCell<Option<(i32, BatchEncoder)>> = const { std::cell::RefCell::new(None) };
}

fn encode(builder: &BatchBuilder, stamp: ProducerStamp, level: i32) -> Result<Vec<u8>, String> {
    ENCODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let e = BatchEncoder::new(Compression::Zstd, level).map_err(|e| e.to_string())?;
            *slot = Some((level, e));
        }
        match slot.as_mut() {
            Some((_, e)) => e.encode(builder, stamp).map_err(|e| e.to_string()),
            None => Err("no encoder".into()),
        }
    })
}

/// Rebuilds a journaled batch from the file bytes it names (after a restart).
fn rebuild(
    state: &AgentState,
    entry: &JournalEntry,
    host: &str,
    cfg: &Config,
) -> Result<BatchBuilder, String> {
    let mut b = BatchBuilder::new();
    for (key, start, end) in &entry.ranges {
        let id = file_id(key);
        let (_, st) = state
            .files
            .get(&id)
            .ok_or_else(|| format!("file {id} unknown"))?;
        let file = find_file(st, key)
            .ok_or_else(|| format!("file {} (last seen at {}) is gone", st.path, st.last_path))?;
        let mut data = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut data, *start)
            .map_err(|e| format!("{}: {e}", st.last_path))?;
        let labels: Vec<(Vec<u8>, Vec<u8>)> = cfg
            .inputs
            .get(st.input)
            .map(|i| {
                i.labels
                    .iter()
                    .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                    .collect()
            })
            .unwrap_or_default();
        let mut headers: Vec<(&[u8], &[u8])> =
            vec![(b"host", host.as_bytes()), (b"path", st.path.as_bytes())];
        headers.extend(labels.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let records = match cfg.inputs.get(st.input).and_then(|i| i.multiline.as_ref()) {
            None => lines::split_records(&data, cfg.max_line_bytes),
            Some(m) => lines::split_multiline(&data, join_of(m), m.max_lines, cfg.max_line_bytes),
        };
        for rec in records {
            b.push(entry.timestamp_ms, None, Some(rec), &headers);
        }
    }
    if b.len() as u32 != entry.record_count {
        return Err(format!(
            "rebuilt {} records, journal says {}",
            b.len(),
            entry.record_count
        ));
    }
    Ok(b)
}

/// Opens the file a state entry names: at its last path if the inode matches, else any file
/// matching its fingerprint among the candidates of its last directory.
fn find_file(st: &FileState, key: &FileKey) -> Option<File> {
    // First the same inode (renamed or not), then any file with the same first line
    // (a copy made by copy-truncate while the agent was down).
    let open_if = |p: &std::path::Path, same_inode: bool| -> Option<File> {
        let f = File::open(p).ok()?;
        let m = f.metadata().ok()?;
        let inode_ok = !same_inode || (m.dev() == st.dev && m.ino() == st.inode);
        (inode_ok && m.is_file() && files::fingerprint(&f).ok()? == Some(key.fingerprint))
            .then_some(f)
    };
    if let Some(f) = open_if(std::path::Path::new(&st.last_path), true) {
        return Some(f);
    }
    let dir = PathBuf::from(&st.last_path).parent()?.to_path_buf();
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    for same_inode in [true, false] {
        for p in &entries {
            if let Some(f) = open_if(p, same_inode) {
                return Some(f);
            }
        }
    }
    None
}

/// What the collectors told the agent when it connected.
#[derive(Debug)]
struct Connected {
    producer: (i64, i16),
    partitions: Vec<(String, u32)>,
    /// The producer's last persisted sequence per partition (when batches were journaled
    /// before this start).
    last_sequences: Option<HashMap<(String, u32), (i16, i32)>>,
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
            Some(
                client
                    .retry("producer state", || client.last_sequences(producer.0))
                    .await?,
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

/// The partition of a file's lines: by a hash of host and first path, so a file and its
/// successors at the same path share one partition (and its order).
fn partition_for(host: &str, path: &str, partitions: u32) -> u32 {
    crc32c::crc32c(format!("{host}\u{0}{path}").as_bytes()) % partitions.max(1)
}
