//! The agent's exactly-once core, as a state machine without I/O.
//!
//! It owns the durable [`AgentState`] (producer identity, sequences, file checkpoints, the
//! batch journal) and everything derived from it: which records a read produced, which batch
//! they belong to, when a batch is cut, which journal generation must be durable before a
//! batch leaves, which batch of a partition is in flight, and what an acknowledgement
//! advances. The shells around it do the I/O: the tailer (`tailer.rs`: discovery, rotation,
//! reads) feeds it bytes, the journal (`journal.rs`) stores the snapshots it hands out, the
//! sender (`sender.rs`) encodes and sends the batches it releases and reports back.
//!
//! Nothing here reads a file, a socket or the clock: time comes in as arguments (`now` for
//! durations, `wall_ms` for record timestamps), file bytes come in as slices, and rebuilding
//! a journaled batch reads through a [`FileSource`] the caller provides.
//!
//! Records are made by one function, [`RecordMaker`], for first sends ([`Core::take`]) and
//! for batches rebuilt from the journal after a restart ([`Core::rebuild`]): the same bytes
//! always give the same records with the same headers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use shared::{BatchBuilder, ProducerStamp};

use crate::config::{Config, Multiline};
use crate::lines;
use crate::state::{AgentState, FileKey, FileState, JournalEntry, UNASSIGNED, file_id};

/// A refused batch is not sent again before this.
pub const REFUSED_RETRY: Duration = Duration::from_secs(5);
/// How often dirty state (acknowledgements) is written when nothing else writes it.
pub const STATE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

pub use shared::names::TopicPartition;

/// The partition a journal entry belongs to.
pub fn partition_of(e: &JournalEntry) -> TopicPartition {
    TopicPartition::new(e.topic.clone(), e.partition)
}

/// The key of `AgentState::next_sequence` (the on-disk format keeps `topic/partition`).
fn state_key(tp: &TopicPartition) -> String {
    format!("{}/{}", tp.topic, tp.partition)
}

/// What the core needs of one input: its topic, labels and multiline rule.
#[derive(Debug, Clone)]
pub struct InputRules {
    pub topic: String,
    pub labels: Vec<(Vec<u8>, Vec<u8>)>,
    pub multiline: Option<Multiline>,
}

/// The parts of the configuration the core decides with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `host` header, and part of the partition hash.
    pub host: String,
    pub inputs: Vec<InputRules>,
    pub max_line_bytes: usize,
    pub batch_bytes_max: usize,
    pub linger: Duration,
    /// Batches encoded ahead per partition.
    pub in_flight_max: usize,
}

impl Settings {
    pub fn from_config(cfg: &Config, host: String) -> Self {
        Self {
            host,
            inputs: cfg
                .inputs
                .iter()
                .map(|i| InputRules {
                    topic: i.topic.clone(),
                    labels: i
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                        .collect(),
                    multiline: i.multiline.clone(),
                })
                .collect(),
            max_line_bytes: cfg.max_line_bytes,
            batch_bytes_max: cfg.output.batch_bytes_max,
            linger: cfg.output.linger,
            in_flight_max: cfg.output.in_flight_max.max(1),
        }
    }
}

pub fn join_of(m: &Multiline) -> lines::Join<'_> {
    match (&m.start, &m.continuation) {
        (Some(re), _) => lines::Join::Start(re),
        (None, Some(re)) => lines::Join::Continuation(re),
        // Config validation requires exactly one pattern; without one, every line is a record.
        (None, None) => lines::Join::Lines,
    }
}

/// The one function deciding a file's records and their headers: used when bytes are taken
/// while tailing and when a journaled batch is rebuilt from the same bytes.
#[derive(Debug)]
pub struct RecordMaker<'a> {
    headers: Vec<(&'a [u8], &'a [u8])>,
    multiline: Option<&'a Multiline>,
    max_line: usize,
}

impl<'a> RecordMaker<'a> {
    pub fn new(settings: &'a Settings, st: &'a FileState) -> Self {
        let input = settings.inputs.get(st.input);
        let mut headers: Vec<(&[u8], &[u8])> = vec![
            (b"host", settings.host.as_bytes()),
            (b"path", st.path.as_bytes()),
        ];
        if let Some(i) = input {
            headers.extend(i.labels.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        }
        Self {
            headers,
            multiline: input.and_then(|i| i.multiline.as_ref()),
            max_line: settings.max_line_bytes,
        }
    }

    fn is_multiline(&self) -> bool {
        self.multiline.is_some()
    }

    /// Where the next record in `data` ends: `(record_len, consumed)`, or `None` while that
    /// is not known. `flush`: the multiline timeout ends a record at the end of `data`.
    /// `range_end`: `data` is a journaled range, whose end always ends a record (a piece of an
    /// over-long line cut there while tailing, or a record ended by the timeout).
    pub fn next(&self, data: &[u8], flush: bool, range_end: bool) -> Option<(usize, usize)> {
        let found = match self.multiline {
            None => lines::next_record(data, self.max_line),
            Some(m) => lines::next_multiline(
                data,
                join_of(m),
                m.max_lines,
                self.max_line,
                flush || range_end,
            ),
        };
        match found {
            None if range_end && !data.is_empty() => Some((data.len(), data.len())),
            f => f,
        }
    }

    pub fn push(&self, b: &mut BatchBuilder, timestamp_ms: i64, record: &[u8]) {
        b.push(timestamp_ms, None, Some(record), &self.headers);
    }
}

/// Reads journaled byte ranges back when a batch is rebuilt after a restart (the I/O the
/// core does not do itself).
pub trait FileSource {
    fn read_range(
        &mut self,
        key: &FileKey,
        st: &FileState,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("journaled batch {tp} seq {seq}: file {file} unknown")]
    UnknownFile {
        tp: TopicPartition,
        seq: i32,
        file: String,
    },
    #[error("journaled batch {tp} seq {seq}: {detail}")]
    Read {
        tp: TopicPartition,
        seq: i32,
        detail: String,
    },
    #[error("journaled batch {tp} seq {seq}: rebuilt {rebuilt} records, journal says {journal}")]
    Count {
        tp: TopicPartition,
        seq: i32,
        rebuilt: usize,
        journal: u32,
    },
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

#[derive(Debug)]
enum Encoded {
    No,
    Running,
    Done(bytes::Bytes),
}

/// A journaled batch on its way: encoded ahead while the one before it is in flight, sent in
/// sequence order.
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
    flight: Flight,
}

/// Where a journaled batch is in its sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    /// Not sent yet.
    Idle,
    /// A send is running; `behind`: batches before it were in flight when it left, so the
    /// collector may see it first and answer `out_of_order_sequence`.
    Sending { behind: bool },
    /// Sent, but it overtook a batch before it (or was refused): sent again only once every
    /// batch before it is acknowledged, so retries keep sequence order.
    Resend,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    pending: Option<Pending>,
    /// Journaled batches not yet acknowledged, oldest first. Up to `in_flight_max` of the
    /// oldest are in flight at once (sent in sequence order; see [`Flight`]).
    ready: VecDeque<Ready>,
    /// After a refused batch: do not resend before this.
    retry_after: Option<Instant>,
    /// The collector holds this producer's state for the partition: a batch was just
    /// acknowledged and the queue has not run empty since. Only then do several batches go
    /// at once. A producer the collector has no state for (new, or expired after a long
    /// silence) may start at any sequence, so a later batch overtaking the first would be
    /// taken as the start and the earlier one refused for good: the first batch after a
    /// quiet spell, a refusal or a failure goes alone.
    confirmed: bool,
}

impl PartitionQueue {
    fn in_flight(&self) -> usize {
        self.ready
            .iter()
            .filter(|r| matches!(r.flight, Flight::Sending { .. }))
            .count()
    }
}

/// What one [`Core::take`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Took {
    /// Bytes of the data consumed (whole records); the read position moves by this much.
    pub consumed: usize,
    pub records: u64,
    /// Pieces of lines longer than `max_line_bytes`.
    pub long_pieces: u64,
    /// Records ended by the multiline timeout.
    pub timeouts: u64,
}

/// A snapshot of the state to store; batches cut up to `generation` are in it.
#[derive(Debug)]
pub struct StoreJob {
    pub generation: u64,
    pub state: AgentState,
}

/// A batch to encode (its records and producer stamp).
#[derive(Debug)]
pub struct EncodeJob {
    pub tp: TopicPartition,
    pub base_sequence: i32,
    pub builder: BatchBuilder,
    pub stamp: ProducerStamp,
}

/// An encoded batch to send; the bytes are shared, not copied, across resends.
#[derive(Debug, Clone)]
pub struct SendJob {
    pub tp: TopicPartition,
    pub base_sequence: i32,
    pub batch: bytes::Bytes,
    /// Batches before it are in flight: the sender tries it once and reports a retriable
    /// failure as [`Delivery::Retry`] (the core resends it in order), rather than retry on
    /// its own while the ones before it may be failing too.
    pub pipelined: bool,
}

/// How a send ended, as the sender saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The collector stored it (or had it already).
    Acked,
    /// Refused (not retriable): sent again after [`REFUSED_RETRY`].
    Refused,
    /// `out_of_order_sequence`: the collector lacks a batch before it. When batches before
    /// it were in flight, it overtook them and is sent again right after them; otherwise the
    /// gap is real and it is treated as refused.
    OutOfOrder,
    /// A pipelined send failed in a way worth retrying: sent again in order.
    Retry,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    Acked,
    Refused,
    /// It overtook a batch before it in flight, or a pipelined send failed: sent again, in
    /// order, once every batch before it is in.
    Resend,
    /// Not for a batch in flight (a duplicate, or stale): ignored.
    Ignored,
}

/// What the collectors told the agent when it connected.
#[derive(Debug, Clone)]
pub struct Connected {
    pub producer: (i64, i16),
    pub partitions: Vec<(String, u32)>,
    /// The producer's last persisted `(epoch, sequence)` per partition, when batches were
    /// journaled before this start.
    pub last_sequences: Option<HashMap<TopicPartition, (i16, i32)>>,
}

/// The exactly-once state machine. See the module documentation.
#[derive(Debug)]
pub struct Core {
    settings: Settings,
    state: AgentState,
    queues: BTreeMap<TopicPartition, PartitionQueue>,
    topic_partitions: HashMap<String, u32>,
    /// Read positions of the files being tailed (by id): where the next bytes taken start.
    /// Not durable: after a restart a file resumes at its `taken_end`.
    reading: HashMap<String, u64>,
    /// Bytes taken but not acknowledged.
    buffered: u64,
    /// State changed (acknowledgements, files) since the last store began.
    dirty: bool,
    /// The journal grew since the last store began (batches wait for a store).
    journal_dirty: bool,
    last_store: Instant,
    /// Bumped per cut batch; a batch is sent once a store covering its generation finished.
    journal_gen: u64,
    durable_gen: u64,
    /// A store is running (at most one at a time, so they land in order).
    storing: bool,
    /// The collectors answered: producer identity and partition counts are known.
    online: bool,
    /// The journal generation whose store holds the producer identity: nothing is sent
    /// before it is durable.
    identity_gen: u64,
}

fn range_bytes(e: &JournalEntry) -> u64 {
    e.ranges.iter().map(|(_, s, t)| t - s).sum()
}

/// The partition of a file's lines: by a hash of host and first path, so a file and its
/// successors at the same path share one partition (and its order).
pub fn partition_for(host: &str, path: &str, partitions: u32) -> u32 {
    crc32c::crc32c(format!("{host}\u{0}{path}").as_bytes()) % partitions.max(1)
}

impl Core {
    /// A core over a loaded state: batches journaled before this start are queued, in
    /// sequence order, ahead of anything read now; they are sent (or found delivered) once
    /// the collectors answer.
    pub fn new(state: AgentState, settings: Settings, now: Instant) -> Self {
        let topic_partitions = state
            .topic_partitions
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        let mut core = Self {
            settings,
            state,
            queues: BTreeMap::new(),
            topic_partitions,
            reading: HashMap::new(),
            buffered: 0,
            dirty: false,
            journal_dirty: false,
            last_store: now,
            journal_gen: 0,
            durable_gen: 0,
            storing: false,
            online: false,
            identity_gen: u64::MAX,
        };
        for entry in core.state.journal.clone() {
            core.buffered += range_bytes(&entry);
            core.queues
                .entry(partition_of(&entry))
                .or_default()
                .ready
                .push_back(Ready {
                    entry,
                    builder: None,
                    generation: 0,
                    encoded: Encoded::No,
                    recovered: true,
                    flight: Flight::Idle,
                });
        }
        core
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A new configuration (reload): new inputs, limits and labels apply to what is read
    /// from now on.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
        self.dirty = true;
    }

    pub fn state(&self) -> &AgentState {
        &self.state
    }

    pub fn is_online(&self) -> bool {
        self.online
    }

    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    pub fn topic_partitions(&self) -> &HashMap<String, u32> {
        &self.topic_partitions
    }

    /// A topic's partition count learnt outside [`Core::on_connected`] (a reload).
    pub fn set_topic_partitions(&mut self, topic: String, n: u32) {
        self.topic_partitions.insert(topic, n);
    }

    pub fn any_in_flight(&self) -> bool {
        self.queues.values().any(|q| q.in_flight() > 0)
    }

    // ---- Files: pure bookkeeping of identities and checkpoints. ----

    pub fn file(&self, id: &str) -> Option<&(FileKey, FileState)> {
        self.state.files.get(id)
    }

    pub fn files(&self) -> &BTreeMap<String, (FileKey, FileState)> {
        &self.state.files
    }

    /// Known files, to change their bookkeeping (paths, inputs); marks the state dirty.
    pub fn files_mut(&mut self) -> &mut BTreeMap<String, (FileKey, FileState)> {
        self.dirty = true;
        &mut self.state.files
    }

    /// Whether a file's partition is known (it is not read before).
    pub fn readable(&self, id: &str) -> bool {
        self.state
            .files
            .get(id)
            .is_some_and(|(_, st)| st.partition != UNASSIGNED)
    }

    /// Where a file's lines stop being on their way: the furthest of its acknowledged
    /// offset, its journaled ranges and the ranges pending in unjournaled batches. A file
    /// identity picked up again continues here, never before.
    pub fn taken_end(&self, id: &str) -> u64 {
        let Some((key, st)) = self.state.files.get(id) else {
            return 0;
        };
        let acked = st.acked_offset;
        let journaled = self.state.journal.iter().flat_map(|e| e.ranges.iter());
        let pending = self
            .queues
            .values()
            .filter_map(|q| q.pending.as_ref())
            .flat_map(|p| p.ranges.iter());
        journaled
            .chain(pending)
            .filter(|(k, _, _)| k == key)
            .map(|(_, _, end)| *end)
            .fold(acked, u64::max)
    }

    /// The known identity a found file (first line `fingerprint`, `size` bytes) continues,
    /// with where: one with this fingerprint, not being read, whose lines taken so far fit
    /// the file — the same inode first, then the one taken furthest. It resumes at its
    /// `taken_end` (acknowledged, journaled or still pending), never before: those lines
    /// are on their way already.
    pub fn resume_candidate(
        &self,
        fingerprint: u64,
        dev: u64,
        inode: u64,
        size: u64,
    ) -> Option<(String, u64)> {
        self.state
            .files
            .iter()
            .filter(|(id, (k, _))| k.fingerprint == fingerprint && !self.reading.contains_key(*id))
            .map(|(id, (_, st))| {
                let same_inode = st.dev == dev && st.inode == inode;
                (id, self.taken_end(id), same_inode)
            })
            .filter(|(_, offset, _)| *offset <= size)
            .min_by_key(|(_, off, same_inode)| (!*same_inode, std::cmp::Reverse(*off)))
            .map(|(id, offset, _)| (id.clone(), offset))
    }

    /// Registers a newly found file: a new identity (the next generation of this inode with
    /// this first line), its partition if the topic's count is known, its discovery order.
    /// Returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn add_file(
        &mut self,
        fingerprint: u64,
        dev: u64,
        inode: u64,
        path: String,
        input: usize,
        start: u64,
        wall_ms: i64,
    ) -> String {
        let generation = self
            .state
            .files
            .values()
            .filter(|(k, _)| k.fingerprint == fingerprint && k.dev == dev && k.inode == inode)
            .map(|(k, _)| k.generation + 1)
            .max()
            .unwrap_or(0);
        let key = FileKey {
            fingerprint,
            dev,
            inode,
            generation,
        };
        let id = file_id(&key);
        let topic = self
            .settings
            .inputs
            .get(input)
            .map(|i| i.topic.clone())
            .unwrap_or_default();
        let partition = self.topic_partitions.get(&topic).map_or(UNASSIGNED, |n| {
            partition_for(&self.settings.host, &path, *n)
        });
        let seq = self.state.next_file_seq;
        self.state.next_file_seq += 1;
        self.state.files.insert(
            id.clone(),
            (
                key,
                FileState {
                    path: path.clone(),
                    input,
                    last_seen_ms: wall_ms,
                    topic,
                    partition,
                    acked_offset: start,
                    last_path: path,
                    dev,
                    inode,
                    seq,
                },
            ),
        );
        self.dirty = true;
        id
    }

    /// A known identity is tailed (again) through `(dev, inode)` at `path`, reading from
    /// `offset`: its `taken_end` when it is picked up again (a rename, a restart), the exact
    /// read position when it moves to the copy of a copy-truncate, its start when new.
    pub fn open_file(&mut self, id: &str, dev: u64, inode: u64, path: String, offset: u64) {
        let Some((_, st)) = self.state.files.get_mut(id) else {
            return;
        };
        st.dev = dev;
        st.inode = inode;
        st.last_path = path;
        self.reading.insert(id.to_owned(), offset);
        self.dirty = true;
    }

    /// A file stops being tailed (closed, drained, truncated, no longer matched).
    pub fn close_file(&mut self, id: &str) {
        self.reading.remove(id);
    }

    /// Where the next bytes taken from a tailed file start.
    pub fn read_offset(&self, id: &str) -> Option<u64> {
        self.reading.get(id).copied()
    }

    /// Whether a file is being tailed.
    pub fn is_open(&self, id: &str) -> bool {
        self.reading.contains_key(id)
    }

    /// Marks known files found again (by inode) as seen at `wall_ms`; forgets files not
    /// found for `limit_ms` that are neither open nor named by the journal. Returns how
    /// many were forgotten.
    pub fn forget_gone(
        &mut self,
        here: &HashSet<(u64, u64)>,
        wall_ms: i64,
        limit_ms: i64,
    ) -> usize {
        let journaled: HashSet<String> = self
            .state
            .journal
            .iter()
            .flat_map(|e| e.ranges.iter().map(|(k, _, _)| file_id(k)))
            .collect();
        let mut forgotten = 0;
        self.state.files.retain(|id, (_, st)| {
            if here.contains(&(st.dev, st.inode)) {
                st.last_seen_ms = wall_ms;
                return true;
            }
            let keep = self.reading.contains_key(id)
                || journaled.contains(id)
                || wall_ms - st.last_seen_ms < limit_ms;
            if !keep {
                forgotten += 1;
            }
            keep
        });
        if forgotten > 0 {
            self.dirty = true;
        }
        forgotten
    }

    // ---- Records and batches. ----

    /// Takes the whole records of `data`, read from the tailed file `id` at its
    /// [`Core::read_offset`], into the file's partition batch (cutting it when full), and
    /// moves the read position past them. With `flush`, a multiline record whose end is
    /// still unknown at the end of `data` ends there (the timeout) and its range ends with
    /// it. Returns how much was consumed.
    pub fn take(&mut self, id: &str, data: &[u8], flush: bool, now: Instant, wall_ms: i64) -> Took {
        let mut took = Took::default();
        let Some(offset) = self.reading.get(id).copied() else {
            return took;
        };
        let Some((key, st)) = self.state.files.get(id) else {
            return took;
        };
        if st.partition == UNASSIGNED {
            return took;
        }
        let tp = TopicPartition::new(st.topic.clone(), st.partition);
        let maker = RecordMaker::new(&self.settings, st);
        let batch_max = self.settings.batch_bytes_max;
        let mut pos = 0usize;
        let mut full_batches = Vec::new();
        let q = self.queues.entry(tp.clone()).or_default();
        loop {
            let p = q.pending.get_or_insert_with(|| Pending {
                builder: BatchBuilder::new(),
                ranges: Vec::new(),
                sealed: false,
                started: now,
                timestamp_ms: wall_ms,
            });
            let mut full = false;
            while let Some((len, used)) = maker.next(&data[pos..], flush, false) {
                if !p.builder.is_empty() && p.builder.block_bytes() + len + 256 > batch_max {
                    full = true;
                    break;
                }
                maker.push(&mut p.builder, p.timestamp_ms, &data[pos..pos + len]);
                let (start, end) = (offset + pos as u64, offset + (pos + used) as u64);
                match p.ranges.last_mut() {
                    Some((k, _, e)) if k == key && *e == start && !p.sealed => *e = end,
                    _ => p.ranges.push((key.clone(), start, end)),
                }
                // A record ended by flushing (no next line to decide) ends its range, so
                // rebuilding the batch ends it in the same place.
                p.sealed = flush
                    && maker.is_multiline()
                    && memchr::memchr(b'\n', &data[pos + used..]).is_none();
                self.buffered += used as u64;
                took.records += 1;
                if used == len && !maker.is_multiline() {
                    // A piece of a line longer than max_line_bytes (no newline consumed).
                    took.long_pieces += 1;
                }
                if p.sealed {
                    took.timeouts += 1;
                }
                pos += used;
            }
            if !full {
                break;
            }
            full_batches.push(q.pending.take());
        }
        took.consumed = pos;
        if let Some(read) = self.reading.get_mut(id) {
            *read = offset + pos as u64;
        }
        for p in full_batches.into_iter().flatten() {
            self.journal_batch(&tp, p);
        }
        took
    }

    /// The earliest linger deadline of a pending batch.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.pending.as_ref())
            .map(|p| p.started + self.settings.linger)
            .min()
    }

    /// Cuts every pending batch that lingered long enough.
    pub fn cut_due(&mut self, now: Instant) {
        let linger = self.settings.linger;
        let due: Vec<TopicPartition> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.pending
                    .as_ref()
                    .is_some_and(|p| now.saturating_duration_since(p.started) >= linger)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for tp in due {
            if let Some(p) = self.queues.get_mut(&tp).and_then(|q| q.pending.take()) {
                self.journal_batch(&tp, p);
            }
        }
    }

    /// Turns a partition's pending records into a journaled batch with the next sequences.
    fn journal_batch(&mut self, tp: &TopicPartition, p: Pending) {
        if p.builder.is_empty() {
            // Nothing was added (the data held no whole record): no batch, no sequence.
            return;
        }
        let seq = self.state.next_sequence.entry(state_key(tp)).or_insert(0);
        let entry = JournalEntry {
            topic: tp.topic.clone(),
            partition: tp.partition,
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
        self.queues
            .entry(tp.clone())
            .or_default()
            .ready
            .push_back(Ready {
                entry,
                builder: Some(p.builder),
                generation: self.journal_gen,
                encoded: Encoded::No,
                recovered: false,
                flight: Flight::Idle,
            });
    }

    /// Rebuilds a journaled batch from the file bytes it names, with the same
    /// [`RecordMaker`] that made it.
    pub fn rebuild(
        &self,
        entry: &JournalEntry,
        source: &mut dyn FileSource,
    ) -> Result<BatchBuilder, RebuildError> {
        let tp = || partition_of(entry);
        let mut b = BatchBuilder::new();
        for (key, start, end) in &entry.ranges {
            let id = file_id(key);
            let (_, st) = self
                .state
                .files
                .get(&id)
                .ok_or_else(|| RebuildError::UnknownFile {
                    tp: tp(),
                    seq: entry.base_sequence,
                    file: id.clone(),
                })?;
            let data =
                source
                    .read_range(key, st, *start, *end)
                    .map_err(|detail| RebuildError::Read {
                        tp: tp(),
                        seq: entry.base_sequence,
                        detail,
                    })?;
            let maker = RecordMaker::new(&self.settings, st);
            let mut pos = 0;
            while let Some((len, used)) = maker.next(&data[pos..], false, true) {
                maker.push(&mut b, entry.timestamp_ms, &data[pos..pos + len]);
                pos += used;
            }
        }
        if b.len() as u32 != entry.record_count {
            return Err(RebuildError::Count {
                tp: tp(),
                seq: entry.base_sequence,
                rebuilt: b.len(),
                journal: entry.record_count,
            });
        }
        Ok(b)
    }

    // ---- The journal. ----

    /// A snapshot to store when the journal grew (batches wait for it) or acknowledgements
    /// are due, and no store is running. Batches cut meanwhile share the next store.
    pub fn poll_store(&mut self, now: Instant) -> Option<StoreJob> {
        let due = self.journal_dirty
            || (self.dirty
                && now.saturating_duration_since(self.last_store) >= STATE_FLUSH_INTERVAL);
        if self.storing || !due {
            return None;
        }
        self.storing = true;
        self.dirty = false;
        self.journal_dirty = false;
        self.last_store = now;
        Some(StoreJob {
            generation: self.journal_gen,
            state: self.state.clone(),
        })
    }

    /// Whether a store is running.
    pub fn storing(&self) -> bool {
        self.storing
    }

    /// A store handed out by [`Core::poll_store`] finished: batches up to its generation may
    /// be sent.
    pub fn on_stored(&mut self, generation: u64) {
        self.storing = false;
        self.durable_gen = self.durable_gen.max(generation);
    }

    /// A store failed: nothing it covered becomes sendable.
    pub fn on_store_failed(&mut self) {
        self.storing = false;
        self.journal_dirty = true;
    }

    // ---- The collectors. ----

    /// The collectors answered: keep the producer identity (durably, before anything is
    /// stamped with it), the partition counts, and mark journaled batches the collector
    /// already has delivered. Returns `(delivered, to resend)`.
    pub fn on_connected(&mut self, c: Connected) -> (usize, usize) {
        if self.state.producer_id.is_none() {
            self.state.producer_id = Some(c.producer.0);
            self.state.producer_epoch = c.producer.1;
        }
        for (topic, n) in c.partitions {
            self.state.topic_partitions.insert(topic.clone(), n);
            self.topic_partitions.insert(topic, n);
        }
        let host = &self.settings.host;
        for (_, st) in self.state.files.values_mut() {
            if st.partition == UNASSIGNED
                && let Some(n) = self.topic_partitions.get(&st.topic)
            {
                st.partition = partition_for(host, &st.path, *n);
            }
        }
        let mut delivered = 0;
        let mut resend = 0;
        if let Some(last) = c.last_sequences {
            let epoch = self.state.producer_epoch;
            let mut done = Vec::new();
            for (tp, q) in &mut self.queues {
                q.ready.retain(|r| {
                    if !r.recovered {
                        return true;
                    }
                    let e = &r.entry;
                    let end_seq = e.base_sequence + e.record_count as i32 - 1;
                    let have = last
                        .get(tp)
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
                self.complete(&entry);
                delivered += 1;
            }
        }
        // Durable before any batch carries the producer id: sending starts once a store
        // begun after this point has finished (stores run one at a time, in order).
        self.journal_gen += 1;
        self.journal_dirty = true;
        self.identity_gen = self.journal_gen;
        self.online = true;
        (delivered, resend)
    }

    fn sending(&self) -> bool {
        self.online && self.durable_gen >= self.identity_gen
    }

    /// Batches to encode now: journaled durably, at most `in_flight_max` ahead per
    /// partition. Batches journaled before this start are rebuilt from `source`.
    pub fn poll_encode(
        &mut self,
        source: &mut dyn FileSource,
    ) -> Result<Vec<EncodeJob>, RebuildError> {
        let mut jobs = Vec::new();
        if !self.sending() {
            return Ok(jobs);
        }
        let durable = self.durable_gen;
        let ahead = self.settings.in_flight_max;
        let stamp = |e: &JournalEntry, s: &AgentState| ProducerStamp {
            producer_id: s.producer_id.unwrap_or(-1),
            producer_epoch: s.producer_epoch,
            base_sequence: e.base_sequence,
        };
        let tps: Vec<TopicPartition> = self.queues.keys().cloned().collect();
        for tp in tps {
            for i in 0..ahead {
                let Some(r) = self.queues.get(&tp).and_then(|q| q.ready.get(i)) else {
                    break;
                };
                if r.generation > durable || !matches!(r.encoded, Encoded::No) {
                    continue;
                }
                let builder = match r.builder {
                    Some(_) => None,
                    None => Some(self.rebuild(&r.entry, source)?),
                };
                let Some(r) = self.queues.get_mut(&tp).and_then(|q| q.ready.get_mut(i)) else {
                    break;
                };
                let Some(builder) = builder.or_else(|| r.builder.take()) else {
                    continue;
                };
                r.encoded = Encoded::Running;
                jobs.push(EncodeJob {
                    tp: tp.clone(),
                    base_sequence: r.entry.base_sequence,
                    builder,
                    stamp: stamp(&r.entry, &self.state),
                });
            }
        }
        Ok(jobs)
    }

    /// An encode handed out by [`Core::poll_encode`] finished; `None`: it failed (not
    /// expected), and the batch is rebuilt from the files and encoded again.
    pub fn on_encoded(&mut self, tp: &TopicPartition, seq: i32, batch: Option<bytes::Bytes>) {
        let Some(r) = self
            .queues
            .get_mut(tp)
            .and_then(|q| q.ready.iter_mut().find(|r| r.entry.base_sequence == seq))
        else {
            return;
        };
        if !matches!(r.encoded, Encoded::Running) {
            return;
        }
        r.encoded = match batch {
            Some(b) => Encoded::Done(b),
            None => Encoded::No,
        };
    }

    /// Batches to send now: per partition, the oldest encoded batches not in flight, in
    /// sequence order, while fewer than `in_flight_max` are (and not waiting after a
    /// refusal). A batch to be sent again goes only once it is the oldest unacknowledged one,
    /// and nothing after it goes before it. Each stays in flight until [`Core::on_ack`].
    pub fn poll_send(&mut self, now: Instant) -> Vec<SendJob> {
        let mut jobs = Vec::new();
        if !self.sending() {
            return jobs;
        }
        for (tp, q) in &mut self.queues {
            if q.retry_after.is_some_and(|t| t > now) {
                continue;
            }
            let max = if q.confirmed {
                self.settings.in_flight_max
            } else {
                1
            };
            let mut flying = q.in_flight();
            for (i, r) in q.ready.iter_mut().enumerate() {
                if flying >= max {
                    break;
                }
                match r.flight {
                    Flight::Sending { .. } => continue,
                    Flight::Resend if i > 0 => break,
                    Flight::Resend | Flight::Idle => {}
                }
                let Encoded::Done(bytes) = &r.encoded else {
                    break;
                };
                r.flight = Flight::Sending { behind: i > 0 };
                flying += 1;
                jobs.push(SendJob {
                    tp: tp.clone(),
                    base_sequence: r.entry.base_sequence,
                    batch: bytes.clone(),
                    pipelined: i > 0,
                });
            }
        }
        jobs
    }

    /// How the send of `(tp, seq)` ended. Only a batch in flight is affected: a duplicated
    /// or stale report is ignored. An acknowledgement also completes every batch before it
    /// (the collector stores a producer's batches only in sequence order).
    pub fn on_ack(
        &mut self,
        tp: &TopicPartition,
        seq: i32,
        delivery: Delivery,
        now: Instant,
    ) -> AckOutcome {
        let Some(q) = self.queues.get_mut(tp) else {
            return AckOutcome::Ignored;
        };
        let Some(i) = q.ready.iter().position(|r| r.entry.base_sequence == seq) else {
            return AckOutcome::Ignored;
        };
        let Flight::Sending { behind } = q.ready[i].flight else {
            return AckOutcome::Ignored;
        };
        match delivery {
            Delivery::Acked => {
                q.retry_after = None;
                let done: Vec<JournalEntry> = q.ready.drain(..=i).map(|r| r.entry).collect();
                q.confirmed = !q.ready.is_empty();
                for entry in &done {
                    self.complete(entry);
                }
                AckOutcome::Acked
            }
            Delivery::OutOfOrder | Delivery::Retry if behind => {
                q.ready[i].flight = Flight::Resend;
                q.confirmed = false;
                AckOutcome::Resend
            }
            Delivery::Refused | Delivery::OutOfOrder | Delivery::Retry => {
                // Kept journaled and sent again later rather than drop a line.
                q.ready[i].flight = Flight::Resend;
                q.confirmed = false;
                q.retry_after = Some(now + REFUSED_RETRY);
                AckOutcome::Refused
            }
        }
    }

    /// A batch is known stored by the collector: out of the journal, its files' checkpoints
    /// advance.
    fn complete(&mut self, entry: &JournalEntry) {
        self.buffered = self.buffered.saturating_sub(range_bytes(entry));
        self.state.journal.retain(|e| {
            !(e.topic == entry.topic
                && e.partition == entry.partition
                && e.base_sequence == entry.base_sequence)
        });
        for (key, _, end) in &entry.ranges {
            if let Some((_, st)) = self.state.files.get_mut(&file_id(key)) {
                st.acked_offset = st.acked_offset.max(*end);
            }
        }
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes(Vec<u8>);

    impl FileSource for Bytes {
        fn read_range(
            &mut self,
            _key: &FileKey,
            _st: &FileState,
            start: u64,
            end: u64,
        ) -> Result<Vec<u8>, String> {
            Ok(self.0[start as usize..end as usize].to_vec())
        }
    }

    fn settings(multiline: bool) -> Settings {
        Settings {
            host: "h".into(),
            inputs: vec![InputRules {
                topic: "t".into(),
                labels: vec![(b"k".to_vec(), b"v".to_vec())],
                multiline: multiline.then(|| Multiline {
                    start: Some(regex::bytes::Regex::new("^[a-z]").expect("regex")),
                    continuation: None,
                    max_lines: 10,
                    timeout: Duration::from_millis(100),
                }),
            }],
            max_line_bytes: 8,
            batch_bytes_max: 1 << 20,
            linger: Duration::from_millis(10),
            in_flight_max: 5,
        }
    }

    fn online(settings: Settings, t0: Instant) -> (Core, String) {
        let mut core = Core::new(AgentState::default(), settings, t0);
        core.on_connected(Connected {
            producer: (1, 0),
            partitions: vec![("t".into(), 1)],
            last_sequences: None,
        });
        let id = core.add_file(9, 1, 2, "/p".into(), 0, 0, 0);
        core.open_file(&id, 1, 2, "/p".into(), 0);
        (core, id)
    }

    fn encoded(b: &BatchBuilder) -> Vec<u8> {
        let stamp = ProducerStamp {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: 0,
        };
        shared::BatchEncoder::new(shared::Compression::None, 0)
            .and_then(|mut e| e.encode(b, stamp))
            .expect("encode")
    }

    /// A batch rebuilt from the journal is the batch first sent, byte for byte: a range that
    /// ends after a long-line piece, and a multiline record ended by the timeout.
    #[test]
    fn rebuilt_batches_equal_first_sends() {
        for (multiline, data) in [
            (false, &b"short\nABCDEFGHIJKLMNOP"[..]),
            (true, &b"a\n b\n c\nd\n e\n"[..]),
        ] {
            let t0 = Instant::now();
            let (mut core, id) = online(settings(multiline), t0);
            let took = core.take(&id, data, multiline, t0, 5);
            assert!(took.consumed > 0);
            let rest = &data[took.consumed..];
            let more = core.take(&id, rest, true, t0, 5);
            assert_eq!(
                core.read_offset(&id),
                Some((took.consumed + more.consumed) as u64)
            );
            core.cut_due(t0 + Duration::from_secs(1));
            let job = core.poll_store(t0).expect("store");
            core.on_stored(job.generation);
            let mut jobs = core.poll_encode(&mut Bytes(data.to_vec())).expect("encode");
            assert_eq!(jobs.len(), 1);
            let first = jobs.remove(0);
            let entry = core.state().journal[0].clone();
            let rebuilt = core
                .rebuild(&entry, &mut Bytes(data.to_vec()))
                .expect("rebuild");
            assert_eq!(encoded(&first.builder), encoded(&rebuilt));
        }
    }

    /// A state file written before the core existed loads and goes on: sequences keyed
    /// `topic/partition`, journaled batches queued ahead of new ones.
    #[test]
    fn an_existing_state_file_loads_and_continues() {
        let fp = 9u64;
        let id = file_id(&FileKey {
            fingerprint: fp,
            dev: 1,
            inode: 2,
            generation: 0,
        });
        let json = format!(
            r#"{{"version":1,"producer_id":3,"producer_epoch":0,"next_sequence":{{"t/0":7}},
            "files":{{"{id}":[{{"fingerprint":{fp},"dev":1,"inode":2,"generation":0}},
            {{"path":"/p","input":0,"last_seen_ms":1,"topic":"t","partition":0,"acked_offset":4,
            "last_path":"/p","dev":1,"inode":2,"seq":0}}]}},
            "journal":[{{"topic":"t","partition":0,"base_sequence":5,"record_count":2,
            "timestamp_ms":1,"ranges":[[{{"fingerprint":{fp},"dev":1,"inode":2,"generation":0}},4,12]]}}],
            "topic_partitions":{{"t":1}},"next_file_seq":1}}"#
        );
        let state: AgentState = serde_json::from_str(&json).expect("old state parses");
        let t0 = Instant::now();
        let mut core = Core::new(state, settings(false), t0);
        assert_eq!(core.taken_end(&id), 12);
        assert_eq!(core.resume_candidate(fp, 1, 2, 20), Some((id.clone(), 12)));
        core.open_file(&id, 1, 2, "/p".into(), 12);
        core.take(&id, b"three\n", false, t0, 5);
        core.cut_due(t0 + Duration::from_secs(1));
        let journal = &core.state().journal;
        assert_eq!(journal.len(), 2);
        assert_eq!((journal[1].base_sequence, journal[1].record_count), (7, 1));
        assert_eq!(core.state().next_sequence.get("t/0"), Some(&8));
        core.on_connected(Connected {
            producer: (3, 0),
            partitions: vec![],
            last_sequences: Some(HashMap::from([(TopicPartition::new("t", 0), (0, 6))])),
        });
        // The journaled batch is delivered already; the new one is next.
        assert_eq!(core.state().journal.len(), 1);
        assert_eq!(core.files()[&id].1.acked_offset, 12);
    }

    /// `n` one-record batches of partition t/0, journaled durably and encoded.
    fn batches(n: usize, in_flight_max: usize, t0: Instant) -> (Core, String) {
        let mut s = settings(false);
        s.batch_bytes_max = 1;
        s.in_flight_max = in_flight_max;
        let (mut core, id) = online(s, t0);
        let data: Vec<u8> = (0..n)
            .flat_map(|i| format!("l{i}\n").into_bytes())
            .collect();
        core.take(&id, &data, false, t0, 5);
        core.cut_due(t0 + Duration::from_secs(1));
        let job = core.poll_store(t0).expect("store");
        core.on_stored(job.generation);
        assert_eq!(core.state().journal.len(), n);
        // Encoding runs `in_flight_max` batches ahead.
        for j in core.poll_encode(&mut Bytes(Vec::new())).expect("encode") {
            core.on_encoded(
                &j.tp,
                j.base_sequence,
                Some(bytes::Bytes::from_static(b"x")),
            );
        }
        (core, id)
    }

    fn seqs(jobs: &[SendJob]) -> Vec<i32> {
        jobs.iter().map(|j| j.base_sequence).collect()
    }

    fn encode_more(core: &mut Core) {
        for j in core.poll_encode(&mut Bytes(Vec::new())).expect("encode") {
            core.on_encoded(
                &j.tp,
                j.base_sequence,
                Some(bytes::Bytes::from_static(b"x")),
            );
        }
    }

    /// A duplicated acknowledgement does not take the next batch with it.
    #[test]
    fn a_duplicated_ack_is_ignored() {
        let t0 = Instant::now();
        let (mut core, id) = batches(2, 5, t0);
        let sent = core.poll_send(t0);
        assert_eq!(seqs(&sent), vec![0]);
        let tp = sent[0].tp.clone();
        assert_eq!(core.on_ack(&tp, 0, Delivery::Acked, t0), AckOutcome::Acked);
        assert_eq!(
            core.on_ack(&tp, 0, Delivery::Acked, t0),
            AckOutcome::Ignored
        );
        assert_eq!(
            core.state().journal.len(),
            1,
            "the second batch is still journaled"
        );
        assert_eq!(core.files()[&id].1.acked_offset, 3);
        assert_eq!(state_key(&tp), "t/0", "the on-disk sequence key");
    }

    /// The first batch of a partition goes alone (the collector may have no state for the
    /// producer and would take any sequence as its start); once it is acknowledged, up to
    /// `in_flight_max` are in flight, in sequence order, and the next leaves as one is
    /// acknowledged. A queue that runs empty starts alone again.
    #[test]
    fn in_flight_max_batches_leave_in_order_after_a_first_one_alone() {
        let t0 = Instant::now();
        let (mut core, id) = batches(5, 3, t0);
        let sent = core.poll_send(t0);
        assert_eq!(seqs(&sent), vec![0], "alone until acknowledged");
        assert!(!sent[0].pipelined);
        assert!(core.poll_send(t0).is_empty());
        let tp = sent[0].tp.clone();
        assert_eq!(core.on_ack(&tp, 0, Delivery::Acked, t0), AckOutcome::Acked);
        encode_more(&mut core);
        let sent = core.poll_send(t0);
        assert_eq!(seqs(&sent), vec![1, 2, 3]);
        assert_eq!(
            sent.iter().map(|j| j.pipelined).collect::<Vec<_>>(),
            vec![false, true, true]
        );
        assert!(core.poll_send(t0).is_empty(), "the window is full");
        assert_eq!(core.on_ack(&tp, 1, Delivery::Acked, t0), AckOutcome::Acked);
        encode_more(&mut core);
        assert_eq!(seqs(&core.poll_send(t0)), vec![4]);
        assert_eq!(core.on_ack(&tp, 4, Delivery::Acked, t0), AckOutcome::Acked);
        assert!(core.state().journal.is_empty());
        // Empty: the next batch starts alone again.
        core.take(&id, b"x\ny\n", false, t0, 5);
        core.cut_due(t0 + Duration::from_secs(1));
        let job = core.poll_store(t0).expect("store");
        core.on_stored(job.generation);
        encode_more(&mut core);
        assert_eq!(core.poll_send(t0).len(), 1);
    }

    /// A batch that reached the collector before the one ahead of it (`out_of_order_sequence`
    /// while that one was in flight), or failed while it was, is sent again only after it,
    /// and nothing after it overtakes it; an acknowledgement of a later batch completes the
    /// earlier ones.
    #[test]
    fn an_overtaking_batch_is_resent_after_the_one_before_it() {
        let t0 = Instant::now();
        let (mut core, id) = batches(6, 4, t0);
        assert_eq!(seqs(&core.poll_send(t0)), vec![0]);
        let tp = TopicPartition::new("t", 0);
        assert_eq!(core.on_ack(&tp, 0, Delivery::Acked, t0), AckOutcome::Acked);
        encode_more(&mut core);
        assert_eq!(seqs(&core.poll_send(t0)), vec![1, 2, 3, 4]);
        assert_eq!(
            core.on_ack(&tp, 3, Delivery::OutOfOrder, t0),
            AckOutcome::Resend
        );
        assert_eq!(core.on_ack(&tp, 2, Delivery::Retry, t0), AckOutcome::Resend);
        assert!(
            core.poll_send(t0).is_empty(),
            "not before batch 1 is acknowledged"
        );
        assert_eq!(core.on_ack(&tp, 1, Delivery::Acked, t0), AckOutcome::Acked);
        assert_eq!(
            seqs(&core.poll_send(t0)),
            vec![2],
            "2 first, alone; 3 waits"
        );
        assert_eq!(core.on_ack(&tp, 2, Delivery::Acked, t0), AckOutcome::Acked);
        assert_eq!(seqs(&core.poll_send(t0)), vec![3]);
        // Batch 4 (still in flight from the first round) landed after 3: its acknowledgement
        // completes 3 as well, and 3's own report is then ignored.
        assert_eq!(core.on_ack(&tp, 4, Delivery::Acked, t0), AckOutcome::Acked);
        assert_eq!(
            core.on_ack(&tp, 3, Delivery::Acked, t0),
            AckOutcome::Ignored
        );
        assert_eq!(core.state().journal.len(), 1);
        assert_eq!(core.files()[&id].1.acked_offset, 15);
        assert!(!core.any_in_flight());
    }

    /// `out_of_order_sequence` for a batch sent with nothing ahead of it is a real gap, not a
    /// race: refused, kept, and tried again only after the refusal pause.
    #[test]
    fn out_of_order_with_nothing_ahead_is_a_refusal() {
        let t0 = Instant::now();
        let (mut core, _) = batches(2, 1, t0);
        let sent = core.poll_send(t0);
        assert_eq!(seqs(&sent), vec![0]);
        let tp = sent[0].tp.clone();
        assert_eq!(
            core.on_ack(&tp, 0, Delivery::OutOfOrder, t0),
            AckOutcome::Refused
        );
        assert!(core.poll_send(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(seqs(&core.poll_send(t0 + REFUSED_RETRY)), vec![0]);
        assert_eq!(core.state().journal.len(), 2);
    }
}
