//! The fault campaign's history checker.
//!
//! Workloads record every operation they run against the cluster as an [`Op`]: when it was
//! invoked, when it completed (or that its outcome is unknown: a timeout, a dropped
//! connection), what it asked and what it was told. After the faults are healed and the
//! partitions drained by final reads, [`History::check`] reads the whole history and reports
//! every [`Anomaly`] with the operations that show it:
//!
//! - an acknowledged `acks=all` record missing from the log ([`Kind::LostWrite`]);
//! - a record at two offsets ([`Kind::Duplicate`]), or one no producer wrote ([`Kind::Phantom`]),
//!   or one whose produce definitely failed ([`Kind::FailedWriteVisible`]);
//! - a producer's records out of its sequence order ([`Kind::ProducerOrder`]), or an
//!   acknowledged base offset that does not hold the batch's first record ([`Kind::WrongOffset`]);
//! - two reads disagreeing about the record at an offset ([`Kind::Divergence`]);
//! - a committed offset read lower than one committed or read before it
//!   ([`Kind::CommitBackwards`]), or past the partition's end ([`Kind::CommitPastEnd`]);
//! - a group member reading a partition it was not assigned in that generation
//!   ([`Kind::NotOwner`]);
//! - topic creations, deletions and existence checks with no linearization
//!   ([`Kind::NonLinearizable`]).
//!
//! Separate checks cover what is not an operation: [`check_replicas`] (replica logs
//! byte-identical up to the high watermark) and [`check_lines`] (agent lines exactly once, in
//! file order). Records are identified by their values, which workloads make unique.
//! `acks=1` records lost are counted ([`Report::lost_acks_one`]), not held to zero.
//!
//! Times are any monotonic clock (milliseconds since the campaign started, say); only their
//! order matters: `a` precedes `b` when `a.complete < b.invoke`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// A topic partition.
pub type Tp = (String, u32);

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The cluster said no: the operation did not take effect (the error code, e.g.
    /// `topic_exists`, is kept; metadata checks read it as an observation).
    Failed(String),
    /// No answer (timeout, connection lost): it may or may not have taken effect, at any
    /// time after its invocation.
    Unknown,
}

/// What an operation asked, and what a successful one was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// One idempotent batch of `values` (in order) from `producer`, first sequence `seq`.
    /// `offset`: the base offset the acknowledgement gave.
    Produce {
        tp: Tp,
        producer: i64,
        seq: i64,
        acks_all: bool,
        values: Vec<String>,
        offset: Option<u64>,
    },
    /// Records read from `tp` (offset, value), by a group member when `member` is set.
    Read {
        tp: Tp,
        records: Vec<(u64, String)>,
        member: Option<Member>,
    },
    /// An offset commit.
    Commit {
        group: String,
        tp: Tp,
        offset: u64,
    },
    /// A read of the committed offset (`None`: nothing committed).
    Committed {
        group: String,
        tp: Tp,
        offset: Option<u64>,
    },
    /// A partition's high watermark as read.
    HighWatermark {
        tp: Tp,
        hw: u64,
    },
    /// A member's assignment, as the group coordinator gave it.
    Assigned {
        member: Member,
        partitions: Vec<Tp>,
    },
    CreateTopic {
        topic: String,
    },
    DeleteTopic {
        topic: String,
    },
    /// Whether a topic exists, as metadata said.
    TopicExists {
        topic: String,
        exists: bool,
    },
}

/// A consumer group member in one generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub group: String,
    pub member: String,
    pub generation: i32,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Its index in the history (set by [`History::push`]).
    pub id: usize,
    /// The client (worker) that ran it.
    pub process: u32,
    pub invoke: u64,
    /// `None` while the outcome is unknown (it never completed).
    pub complete: Option<u64>,
    pub call: Call,
    pub outcome: Outcome,
}

impl Op {
    fn end(&self) -> u64 {
        match self.outcome {
            Outcome::Unknown => u64::MAX,
            _ => self.complete.unwrap_or(u64::MAX),
        }
    }

    /// `self` completed before `other` was invoked.
    fn precedes(&self, other: &Op) -> bool {
        self.end() < other.invoke
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match self.complete {
            Some(c) if self.outcome != Outcome::Unknown => c.to_string(),
            _ => "?".into(),
        };
        write!(
            f,
            "#{} p{} [{}..{}] {:?} -> {:?}",
            self.id, self.process, self.invoke, end, self.call, self.outcome
        )
    }
}

/// The anomaly kinds the checker finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    LostWrite,
    Duplicate,
    Phantom,
    FailedWriteVisible,
    ProducerOrder,
    WrongOffset,
    Divergence,
    CommitBackwards,
    CommitPastEnd,
    NotOwner,
    NonLinearizable,
    ReplicaMismatch,
    LineMissing,
    LineTwice,
    LineOrder,
}

/// One anomaly and the smallest part of the history that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: Kind,
    pub detail: String,
    pub ops: Vec<Op>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?}: {}", self.kind, self.detail)?;
        for op in &self.ops {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// What a check found, with counts of what it looked at.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub anomalies: Vec<Anomaly>,
    pub operations: usize,
    /// Records of acknowledged `acks=all` produces (each must be in the log).
    pub acked_all_records: usize,
    /// Records of acknowledged `acks=1` produces missing from the log (measured, allowed).
    pub lost_acks_one: usize,
    pub acked_one_records: usize,
    /// Distinct (partition, offset) pairs read.
    pub offsets_read: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    pub fn kinds(&self) -> Vec<Kind> {
        let mut k: Vec<Kind> = self.anomalies.iter().map(|a| a.kind).collect();
        k.sort();
        k.dedup();
        k
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} operations, {} acks=all records, {} acks=1 records ({} lost), {} offsets read, {} anomalies",
            self.operations,
            self.acked_all_records,
            self.acked_one_records,
            self.lost_acks_one,
            self.offsets_read,
            self.anomalies.len()
        )?;
        for a in &self.anomalies {
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// A history of operations, in the order they were recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    ops: Vec<Op>,
}

/// Where a produced value came from.
struct Source {
    op: usize,
    producer: i64,
    seq: i64,
    index: usize,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an operation; returns its id.
    pub fn push(
        &mut self,
        process: u32,
        invoke: u64,
        complete: Option<u64>,
        call: Call,
        outcome: Outcome,
    ) -> usize {
        let id = self.ops.len();
        self.ops.push(Op {
            id,
            process,
            invoke,
            complete,
            call,
            outcome,
        });
        id
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Runs every check over the history. Call it after the final reads of every partition.
    pub fn check(&self) -> Report {
        let mut r = Report {
            operations: self.ops.len(),
            ..Report::default()
        };
        let sources = self.sources(&mut r);
        let placed = self.check_reads(&sources, &mut r);
        self.check_writes(&sources, &placed, &mut r);
        self.check_commits(&placed, &mut r);
        self.check_owners(&mut r);
        self.check_topics(&mut r);
        r
    }

    fn op(&self, id: usize) -> Op {
        self.ops[id].clone()
    }

    fn anomaly(&self, r: &mut Report, kind: Kind, detail: String, ops: &[usize]) {
        let mut ids = ops.to_vec();
        ids.sort_unstable();
        ids.dedup();
        r.anomalies.push(Anomaly {
            kind,
            detail,
            ops: ids.into_iter().map(|i| self.op(i)).collect(),
        });
    }

    /// Every produced value and where it came from (values must be unique across the run).
    fn sources(&self, r: &mut Report) -> HashMap<(Tp, String), Source> {
        let mut out: HashMap<(Tp, String), Source> = HashMap::new();
        for op in &self.ops {
            let Call::Produce {
                tp,
                producer,
                seq,
                values,
                ..
            } = &op.call
            else {
                continue;
            };
            for (i, v) in values.iter().enumerate() {
                if let Some(prev) = out.get(&(tp.clone(), v.clone()))
                    && prev.op != op.id
                {
                    // A resend of the same batch (same producer, same sequence) is expected;
                    // anything else makes the value ambiguous: a workload bug, reported.
                    let same = matches!(&self.ops[prev.op].call,
                        Call::Produce { producer: p, seq: s, .. } if p == producer && s == seq);
                    if !same {
                        self.anomaly(
                            r,
                            Kind::Duplicate,
                            format!("value {v:?} produced by two different batches"),
                            &[prev.op, op.id],
                        );
                    }
                    continue;
                }
                out.insert(
                    (tp.clone(), v.clone()),
                    Source {
                        op: op.id,
                        producer: *producer,
                        seq: *seq,
                        index: i,
                    },
                );
            }
        }
        out
    }

    /// Divergence, duplicates and phantoms from the reads; returns, per partition, each
    /// value's offset and the read that first saw it.
    fn check_reads(
        &self,
        sources: &HashMap<(Tp, String), Source>,
        r: &mut Report,
    ) -> HashMap<Tp, BTreeMap<u64, (String, usize)>> {
        let mut at: HashMap<Tp, BTreeMap<u64, (String, usize)>> = HashMap::new();
        for op in &self.ops {
            let Call::Read { tp, records, .. } = &op.call else {
                continue;
            };
            if op.outcome != Outcome::Ok {
                continue;
            }
            let log = at.entry(tp.clone()).or_default();
            for (offset, value) in records {
                match log.get(offset) {
                    Some((seen, first)) if seen != value => {
                        let detail = format!(
                            "{}-{} offset {offset}: read {seen:?}, later {value:?}",
                            tp.0, tp.1
                        );
                        let first = *first;
                        self.anomaly(r, Kind::Divergence, detail, &[first, op.id]);
                    }
                    Some(_) => {}
                    None => {
                        log.insert(*offset, (value.clone(), op.id));
                    }
                }
            }
        }
        for (tp, log) in &at {
            r.offsets_read += log.len();
            let mut where_: HashMap<&str, (u64, usize)> = HashMap::new();
            for (offset, (value, read)) in log {
                if let Some((other, other_read)) = where_.insert(value, (*offset, *read)) {
                    let detail = format!(
                        "{}-{}: {value:?} at offsets {other} and {offset}",
                        tp.0, tp.1
                    );
                    let mut ops = vec![other_read, *read];
                    if let Some(s) = sources.get(&(tp.clone(), value.clone())) {
                        ops.push(s.op);
                    }
                    self.anomaly(r, Kind::Duplicate, detail, &ops);
                }
                match sources.get(&(tp.clone(), value.clone())) {
                    None => {
                        let detail = format!(
                            "{}-{} offset {offset}: {value:?} was never produced",
                            tp.0, tp.1
                        );
                        self.anomaly(r, Kind::Phantom, detail, &[*read]);
                    }
                    Some(s) if matches!(self.ops[s.op].outcome, Outcome::Failed(_)) => {
                        let detail = format!(
                            "{}-{} offset {offset}: {value:?} is from a produce that failed",
                            tp.0, tp.1
                        );
                        self.anomaly(r, Kind::FailedWriteVisible, detail, &[s.op, *read]);
                    }
                    Some(_) => {}
                }
            }
        }
        at
    }

    /// Lost acknowledged writes, acknowledged offsets, and each producer's order.
    fn check_writes(
        &self,
        sources: &HashMap<(Tp, String), Source>,
        placed: &HashMap<Tp, BTreeMap<u64, (String, usize)>>,
        r: &mut Report,
    ) {
        // Each value's first offset (a later copy is reported as a duplicate, once).
        let mut offset_of: HashMap<(&Tp, &str), u64> = HashMap::new();
        for (tp, log) in placed {
            for (o, (v, _)) in log {
                offset_of.entry((tp, v.as_str())).or_insert(*o);
            }
        }
        for op in &self.ops {
            let Call::Produce {
                tp,
                acks_all,
                values,
                offset,
                ..
            } = &op.call
            else {
                continue;
            };
            if op.outcome != Outcome::Ok {
                continue;
            }
            if *acks_all {
                r.acked_all_records += values.len();
            } else {
                r.acked_one_records += values.len();
            }
            let missing: Vec<&String> = values
                .iter()
                .filter(|v| !offset_of.contains_key(&(tp, v.as_str())))
                .collect();
            if !missing.is_empty() {
                if *acks_all {
                    let detail = format!(
                        "{}-{}: {} of {} acknowledged records missing, first {:?}",
                        tp.0,
                        tp.1,
                        missing.len(),
                        values.len(),
                        missing[0]
                    );
                    self.anomaly(r, Kind::LostWrite, detail, &[op.id]);
                } else {
                    r.lost_acks_one += missing.len();
                }
            }
            if let (Some(base), Some(first)) = (offset, values.first())
                && let Some(found) = offset_of.get(&(tp, first.as_str()))
                && found != base
            {
                let detail = format!(
                    "{}-{}: acknowledged at offset {base}, its first record {first:?} is at {found}",
                    tp.0, tp.1
                );
                self.anomaly(r, Kind::WrongOffset, detail, &[op.id]);
            }
        }
        // Each producer's records, in offset order, must be in (sequence, index) order.
        for (tp, log) in placed {
            let mut last: HashMap<i64, (i64, usize, u64, usize)> = HashMap::new();
            for (offset, (value, read)) in log {
                let Some(s) = sources.get(&(tp.clone(), value.clone())) else {
                    continue;
                };
                if offset_of.get(&(tp, value.as_str())) != Some(offset) {
                    continue; // a duplicate copy, reported already
                }
                let key = (s.seq, s.index);
                if let Some((pseq, pidx, poff, pread)) = last.get(&s.producer)
                    && (*pseq, *pidx) > key
                {
                    let detail = format!(
                        "{}-{}: producer {} sequence {}+{} at offset {offset}, after {}+{} at offset {poff}",
                        tp.0, tp.1, s.producer, s.seq, s.index, pseq, pidx
                    );
                    self.anomaly(r, Kind::ProducerOrder, detail, &[*pread, *read, s.op]);
                }
                last.insert(s.producer, (key.0, key.1, *offset, *read));
            }
        }
    }

    /// Committed offsets: never lower than one committed or read before, never past the end.
    fn check_commits(&self, placed: &HashMap<Tp, BTreeMap<u64, (String, usize)>>, r: &mut Report) {
        let mut end: HashMap<Tp, u64> = HashMap::new();
        for (tp, log) in placed {
            if let Some((o, _)) = log.last_key_value() {
                end.insert(tp.clone(), o + 1);
            }
        }
        for op in &self.ops {
            if let Call::HighWatermark { tp, hw } = &op.call {
                let e = end.entry(tp.clone()).or_default();
                *e = (*e).max(*hw);
            }
        }
        // (group, tp) -> observations: (op, offset) of ok commits and committed reads.
        let mut seen: HashMap<(String, Tp), Vec<(usize, u64)>> = HashMap::new();
        for op in &self.ops {
            if op.outcome != Outcome::Ok {
                continue;
            }
            let (group, tp, offset) = match &op.call {
                Call::Commit { group, tp, offset } => (group, tp, *offset),
                Call::Committed {
                    group,
                    tp,
                    offset: Some(offset),
                } => (group, tp, *offset),
                _ => continue,
            };
            let limit = end.get(tp).copied().unwrap_or(0);
            if offset > limit {
                let detail = format!(
                    "group {group} {}-{}: committed offset {offset} past the partition's end {limit}",
                    tp.0, tp.1
                );
                self.anomaly(r, Kind::CommitPastEnd, detail, &[op.id]);
            }
            seen.entry((group.clone(), tp.clone()))
                .or_default()
                .push((op.id, offset));
        }
        for ((group, tp), obs) in &seen {
            for (a, oa) in obs {
                for (b, ob) in obs {
                    // A later read lower than something that completed before it.
                    let later_is_read = matches!(self.ops[*b].call, Call::Committed { .. });
                    if later_is_read && ob < oa && self.ops[*a].precedes(&self.ops[*b]) {
                        let detail = format!(
                            "group {group} {}-{}: committed offset read as {ob} after {oa}",
                            tp.0, tp.1
                        );
                        self.anomaly(r, Kind::CommitBackwards, detail, &[*a, *b]);
                    }
                }
            }
        }
    }

    /// A member reads only partitions it was assigned in that generation.
    fn check_owners(&self, r: &mut Report) {
        let mut owned: HashMap<&Member, (HashSet<&Tp>, usize)> = HashMap::new();
        for op in &self.ops {
            if let (Call::Assigned { member, partitions }, Outcome::Ok) = (&op.call, &op.outcome) {
                owned.insert(member, (partitions.iter().collect(), op.id));
            }
        }
        for op in &self.ops {
            let Call::Read {
                tp,
                member: Some(m),
                records,
            } = &op.call
            else {
                continue;
            };
            if op.outcome != Outcome::Ok || records.is_empty() {
                continue;
            }
            match owned.get(m) {
                Some((tps, _)) if tps.contains(tp) => {}
                found => {
                    let detail = format!(
                        "member {} of {} (generation {}) read {}-{} it was not assigned",
                        m.member, m.group, m.generation, tp.0, tp.1
                    );
                    let mut ops = vec![op.id];
                    ops.extend(found.map(|(_, id)| *id));
                    self.anomaly(r, Kind::NotOwner, detail, &ops);
                }
            }
        }
    }

    /// Topic creation, deletion and existence, per topic, must have a linearization.
    fn check_topics(&self, r: &mut Report) {
        let mut per_topic: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for op in &self.ops {
            let topic = match &op.call {
                Call::CreateTopic { topic }
                | Call::DeleteTopic { topic }
                | Call::TopicExists { topic, .. } => topic,
                _ => continue,
            };
            per_topic.entry(topic).or_default().push(op.id);
        }
        for (topic, ids) in per_topic {
            let ops: Vec<&Op> = ids.iter().map(|i| &self.ops[*i]).collect();
            if ops.len() > 64 {
                let detail = format!(
                    "topic {topic}: {} operations, more than the 64 the search takes; split the workload's topics",
                    ops.len()
                );
                self.anomaly(r, Kind::NonLinearizable, detail, &[]);
                continue;
            }
            match linearizable(&ops) {
                Some(true) => {}
                Some(false) => {
                    let detail = format!(
                        "topic {topic}: no order of these operations explains what they saw"
                    );
                    self.anomaly(r, Kind::NonLinearizable, detail, &ids);
                }
                None => {
                    let detail = format!(
                        "topic {topic}: undecided after {SEARCH_STATES_MAX} states; split the workload's topics"
                    );
                    self.anomaly(r, Kind::NonLinearizable, detail, &[]);
                }
            }
        }
    }
}

/// What a topic operation does to "exists", if it may take effect in state `s`: `None`
/// when it cannot happen there.
fn apply(op: &Op, s: bool) -> Option<bool> {
    let failed = |code: &str| matches!(&op.outcome, Outcome::Failed(c) if c == code);
    match (&op.call, &op.outcome) {
        (Call::CreateTopic { .. }, Outcome::Ok | Outcome::Unknown) => (!s).then_some(true),
        (Call::CreateTopic { .. }, _) if failed("topic_exists") => s.then_some(s),
        (Call::DeleteTopic { .. }, Outcome::Ok | Outcome::Unknown) => s.then_some(false),
        (Call::DeleteTopic { .. }, _) if failed("unknown_topic") => (!s).then_some(s),
        (Call::TopicExists { exists, .. }, Outcome::Ok) => (s == *exists).then_some(s),
        // Other failures took no effect and observed nothing.
        _ => Some(s),
    }
}

/// Wing & Gong's search with memoisation: is there an order of `ops`, consistent with real
/// time, in which each (but unknown-outcome ones, which may also never happen) takes effect
/// at one instant between its invocation and completion? The topic starts absent.
/// `None`: the search went past [`SEARCH_STATES_MAX`] states without an answer.
fn linearizable(ops: &[&Op]) -> Option<bool> {
    let n = ops.len();
    let must: u64 = (0..n)
        .filter(|i| ops[*i].outcome != Outcome::Unknown)
        .fold(0, |m, i| m | (1 << i));
    let mut seen: HashSet<(u64, bool)> = HashSet::new();
    let mut stack = vec![(0u64, false)];
    while let Some((done, state)) = stack.pop() {
        if done & must == must {
            return Some(true);
        }
        if !seen.insert((done, state)) {
            continue;
        }
        if seen.len() > SEARCH_STATES_MAX {
            return None;
        }
        // The earliest completion among the ops not yet placed bounds what can go next.
        let bound = (0..n)
            .filter(|i| done & (1 << i) == 0)
            .map(|i| ops[i].end())
            .min()
            .unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if done & (1 << i) != 0 || op.invoke > bound {
                continue;
            }
            if let Some(next) = apply(op, state) {
                stack.push((done | (1 << i), next));
            }
            // An op with an unknown outcome may also never take effect.
            if op.outcome == Outcome::Unknown {
                stack.push((done | (1 << i), state));
            }
        }
    }
    Some(false)
}

/// States the linearizability search visits at most per topic before giving up (and
/// reporting that it could not decide, which fails the check).
pub const SEARCH_STATES_MAX: usize = 2_000_000;

/// Replica logs of one partition, up to its high watermark: every replica's bytes must be
/// the same (`replicas`: broker id and its bytes up to the high watermark).
pub fn check_replicas(tp: &Tp, replicas: &[(u32, Vec<u8>)]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let Some((first, reference)) = replicas.first() else {
        return out;
    };
    for (broker, bytes) in &replicas[1..] {
        if bytes != reference {
            let at = bytes
                .iter()
                .zip(reference)
                .position(|(a, b)| a != b)
                .unwrap_or(bytes.len().min(reference.len()));
            out.push(Anomaly {
                kind: Kind::ReplicaMismatch,
                detail: format!(
                    "{}-{}: broker {broker} ({} bytes) differs from broker {first} ({} bytes) at byte {at}",
                    tp.0,
                    tp.1,
                    bytes.len(),
                    reference.len()
                ),
                ops: Vec::new(),
            });
        }
    }
    out
}

/// Agent delivery: every line of every file exactly once, in file order (`files`: each
/// file's path and complete lines; `logged`: (path header, line) in log order, partitions
/// concatenated in any order — order is checked per path).
pub fn check_lines(files: &[(String, Vec<String>)], logged: &[(String, String)]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut per_path: HashMap<&str, Vec<&str>> = HashMap::new();
    for (path, line) in logged {
        per_path.entry(path).or_default().push(line);
    }
    for (path, lines) in files {
        let got = per_path.remove(path.as_str()).unwrap_or_default();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for l in &got {
            *count.entry(l).or_default() += 1;
        }
        for (i, l) in lines.iter().enumerate() {
            match count.get(l.as_str()).copied().unwrap_or(0) {
                0 => out.push(line_anomaly(Kind::LineMissing, path, i, l)),
                1 => {}
                n => out.push(line_anomaly(
                    Kind::LineTwice,
                    path,
                    i,
                    &format!("{l} ({n} times)"),
                )),
            }
        }
        // Order: the logged lines, duplicates dropped, must follow the file's order.
        let index: HashMap<&str, usize> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let mut last: Option<usize> = None;
        for l in &got {
            let Some(&i) = index.get(l) else {
                out.push(line_anomaly(
                    Kind::LineTwice,
                    path,
                    usize::MAX,
                    &format!("{l} (not in the file)"),
                ));
                continue;
            };
            if last.is_some_and(|p| i < p) {
                out.push(line_anomaly(Kind::LineOrder, path, i, l));
            }
            last = Some(last.map_or(i, |p| p.max(i)));
        }
    }
    for (path, got) in per_path {
        out.push(line_anomaly(
            Kind::LineTwice,
            path,
            usize::MAX,
            &format!("{} lines from a file never written", got.len()),
        ));
    }
    out
}

/// Agent delivery of one writer's lines across rotations, when the agent may label lines
/// with the rotated names (a file it first found under its rotated name): `written` in
/// write order, `logged` as (path header, line) in log order. Every line exactly once, and
/// within each path stream in write order (streams of different paths may interleave).
pub fn check_rotated_lines(written: &[String], logged: &[(String, String)]) -> Vec<Anomaly> {
    const ALL: &str = "(all files)";
    let merged: Vec<(String, String)> = logged
        .iter()
        .map(|(_, l)| (ALL.to_owned(), l.clone()))
        .collect();
    let mut out: Vec<Anomaly> = check_lines(&[(ALL.to_owned(), written.to_vec())], &merged)
        .into_iter()
        .filter(|a| a.kind != Kind::LineOrder)
        .collect();
    let index: HashMap<&str, usize> = written
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (path, l) in logged {
        let Some(&i) = index.get(l.as_str()) else {
            continue;
        };
        match last.get(path.as_str()) {
            Some(&p) if i < p => out.push(line_anomaly(Kind::LineOrder, path, i, l)),
            _ => {
                last.insert(path, i);
            }
        }
    }
    out
}

fn line_anomaly(kind: Kind, path: &str, line: usize, text: &str) -> Anomaly {
    let at = if line == usize::MAX {
        String::new()
    } else {
        format!(" line {}", line + 1)
    };
    Anomaly {
        kind,
        detail: format!("{path}{at}: {text:?}"),
        ops: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: u32) -> Tp {
        ("t".into(), p)
    }

    fn vals(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    fn produce(
        h: &mut History,
        t: (u64, u64),
        p: u32,
        producer: i64,
        seq: i64,
        values: &[String],
        offset: u64,
    ) -> usize {
        h.push(
            1,
            t.0,
            Some(t.1),
            Call::Produce {
                tp: tp(p),
                producer,
                seq,
                acks_all: true,
                values: values.to_vec(),
                offset: Some(offset),
            },
            Outcome::Ok,
        )
    }

    fn read(h: &mut History, t: (u64, u64), p: u32, records: &[(u64, &str)]) -> usize {
        h.push(
            2,
            t.0,
            Some(t.1),
            Call::Read {
                tp: tp(p),
                records: records.iter().map(|(o, v)| (*o, (*v).to_owned())).collect(),
                member: None,
            },
            Outcome::Ok,
        )
    }

    /// Two producers, two batches each, read back in full: nothing to report.
    fn clean() -> History {
        let mut h = History::new();
        let a = vals("a", 2);
        let b = vals("b", 2);
        produce(&mut h, (0, 1), 0, 1, 0, &a, 0);
        produce(&mut h, (0, 2), 0, 2, 0, &b, 2);
        produce(&mut h, (3, 4), 0, 1, 2, &vals("a2", 1), 4);
        read(
            &mut h,
            (5, 6),
            0,
            &[(0, "a-0"), (1, "a-1"), (2, "b-0"), (3, "b-1"), (4, "a2-0")],
        );
        read(&mut h, (7, 8), 0, &[(2, "b-0"), (3, "b-1")]);
        h
    }

    fn only(h: &History, kind: Kind) {
        let r = h.check();
        assert_eq!(r.kinds(), vec![kind], "{r}");
        // Every anomaly names the operations that show it (or says what it compared).
        assert!(r.anomalies.iter().all(|a| !a.detail.is_empty()));
        eprintln!("{r}");
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let r = clean().check();
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.acked_all_records, 5);
        assert_eq!(r.offsets_read, 5);
    }

    #[test]
    fn a_lost_acknowledged_write_is_found() {
        let mut h = clean();
        let id = produce(&mut h, (9, 10), 1, 1, 0, &vals("lost", 3), 0);
        read(&mut h, (11, 12), 1, &[(0, "lost-0")]);
        let r = h.check();
        assert_eq!(r.kinds(), vec![Kind::LostWrite], "{r}");
        assert_eq!(r.anomalies[0].ops[0].id, id);
    }

    #[test]
    fn acks_one_losses_are_counted_not_anomalies() {
        let mut h = clean();
        h.push(
            1,
            9,
            Some(10),
            Call::Produce {
                tp: tp(1),
                producer: 3,
                seq: 0,
                acks_all: false,
                values: vals("one", 2),
                offset: Some(0),
            },
            Outcome::Ok,
        );
        let r = h.check();
        assert!(r.is_clean(), "{r}");
        assert_eq!((r.acked_one_records, r.lost_acks_one), (2, 2));
    }

    #[test]
    fn a_record_at_two_offsets_is_a_duplicate() {
        let mut h = clean();
        read(&mut h, (9, 10), 0, &[(5, "a-0")]);
        only(&h, Kind::Duplicate);
    }

    #[test]
    fn a_record_never_produced_is_a_phantom() {
        let mut h = clean();
        read(&mut h, (9, 10), 0, &[(5, "ghost")]);
        only(&h, Kind::Phantom);
    }

    #[test]
    fn a_failed_produce_must_not_be_visible() {
        let mut h = clean();
        h.push(
            1,
            9,
            Some(10),
            Call::Produce {
                tp: tp(0),
                producer: 5,
                seq: 0,
                acks_all: true,
                values: vec!["refused".into()],
                offset: None,
            },
            Outcome::Failed("invalid_batch".into()),
        );
        read(&mut h, (11, 12), 0, &[(5, "refused")]);
        only(&h, Kind::FailedWriteVisible);
        // With an unknown outcome it may be there.
        let mut h = clean();
        h.push(
            1,
            9,
            None,
            Call::Produce {
                tp: tp(0),
                producer: 5,
                seq: 0,
                acks_all: true,
                values: vec!["maybe".into()],
                offset: None,
            },
            Outcome::Unknown,
        );
        read(&mut h, (11, 12), 0, &[(5, "maybe")]);
        assert!(h.check().is_clean());
    }

    #[test]
    fn a_producer_out_of_sequence_order_is_found() {
        let mut h = History::new();
        produce(&mut h, (0, 1), 0, 1, 0, &vals("x", 1), 0);
        produce(&mut h, (2, 3), 0, 1, 1, &vals("y", 1), 1);
        read(&mut h, (4, 5), 0, &[(0, "y-0"), (1, "x-0")]);
        let r = h.check();
        assert!(r.kinds().contains(&Kind::ProducerOrder), "{r}");
    }

    #[test]
    fn an_acknowledged_offset_must_hold_the_batch() {
        let mut h = History::new();
        produce(&mut h, (0, 1), 0, 1, 0, &vals("x", 1), 7);
        read(&mut h, (4, 5), 0, &[(0, "x-0")]);
        only(&h, Kind::WrongOffset);
    }

    #[test]
    fn two_reads_disagreeing_about_an_offset_diverge() {
        let mut h = clean();
        produce(&mut h, (9, 10), 0, 3, 0, &vals("c", 1), 4);
        // Offset 4 read as a2-0 before; a reader after a failover sees c-0 there.
        read(&mut h, (11, 12), 0, &[(4, "c-0")]);
        let r = h.check();
        assert!(r.kinds().contains(&Kind::Divergence), "{r}");
    }

    #[test]
    fn committed_offsets_going_backwards_are_found() {
        let g = || "g".to_owned();
        let mut h = clean();
        h.push(
            3,
            9,
            Some(10),
            Call::Commit {
                group: g(),
                tp: tp(0),
                offset: 4,
            },
            Outcome::Ok,
        );
        h.push(
            3,
            11,
            Some(12),
            Call::Committed {
                group: g(),
                tp: tp(0),
                offset: Some(4),
            },
            Outcome::Ok,
        );
        assert!(h.check().is_clean());
        h.push(
            4,
            13,
            Some(14),
            Call::Committed {
                group: g(),
                tp: tp(0),
                offset: Some(2),
            },
            Outcome::Ok,
        );
        only(&h, Kind::CommitBackwards);
        // Concurrent with the commit, an older value is fine.
        let mut h = clean();
        h.push(
            3,
            9,
            Some(12),
            Call::Commit {
                group: g(),
                tp: tp(0),
                offset: 4,
            },
            Outcome::Ok,
        );
        h.push(
            4,
            10,
            Some(11),
            Call::Committed {
                group: g(),
                tp: tp(0),
                offset: Some(2),
            },
            Outcome::Ok,
        );
        assert!(h.check().is_clean());
    }

    #[test]
    fn a_commit_past_the_end_is_found() {
        let mut h = clean();
        h.push(
            3,
            9,
            Some(10),
            Call::HighWatermark { tp: tp(0), hw: 5 },
            Outcome::Ok,
        );
        h.push(
            3,
            11,
            Some(12),
            Call::Commit {
                group: "g".into(),
                tp: tp(0),
                offset: 5,
            },
            Outcome::Ok,
        );
        assert!(h.check().is_clean());
        h.push(
            3,
            13,
            Some(14),
            Call::Commit {
                group: "g".into(),
                tp: tp(0),
                offset: 9,
            },
            Outcome::Ok,
        );
        only(&h, Kind::CommitPastEnd);
    }

    #[test]
    fn a_member_reading_a_partition_it_does_not_own_is_found() {
        let m = |generation| Member {
            group: "g".into(),
            member: "m1".into(),
            generation,
        };
        let mut h = clean();
        h.push(
            3,
            9,
            Some(10),
            Call::Assigned {
                member: m(1),
                partitions: vec![tp(0)],
            },
            Outcome::Ok,
        );
        h.push(
            3,
            11,
            Some(12),
            Call::Read {
                tp: tp(0),
                records: vec![(0, "a-0".into())],
                member: Some(m(1)),
            },
            Outcome::Ok,
        );
        assert!(h.check().is_clean());
        h.push(
            3,
            13,
            Some(14),
            Call::Assigned {
                member: m(2),
                partitions: vec![tp(1)],
            },
            Outcome::Ok,
        );
        h.push(
            3,
            15,
            Some(16),
            Call::Read {
                tp: tp(0),
                records: vec![(1, "a-1".into())],
                member: Some(m(2)),
            },
            Outcome::Ok,
        );
        only(&h, Kind::NotOwner);
    }

    fn topic_op(h: &mut History, t: (u64, Option<u64>), call: Call, outcome: Outcome) {
        h.push(5, t.0, t.1, call, outcome);
    }

    #[test]
    fn topic_operations_must_be_linearizable() {
        let create = || Call::CreateTopic { topic: "x".into() };
        let delete = || Call::DeleteTopic { topic: "x".into() };
        let exists = |e| Call::TopicExists {
            topic: "x".into(),
            exists: e,
        };
        // Created, seen, deleted, seen gone; a concurrent check may see either.
        let mut h = History::new();
        topic_op(&mut h, (0, Some(2)), create(), Outcome::Ok);
        topic_op(&mut h, (3, Some(4)), exists(true), Outcome::Ok);
        topic_op(&mut h, (5, Some(8)), delete(), Outcome::Ok);
        topic_op(&mut h, (6, Some(7)), exists(true), Outcome::Ok);
        topic_op(&mut h, (9, Some(10)), exists(false), Outcome::Ok);
        topic_op(
            &mut h,
            (11, Some(12)),
            create(),
            Outcome::Failed("timeout_refused".into()),
        );
        topic_op(&mut h, (13, None), create(), Outcome::Unknown);
        assert!(h.check().is_clean(), "{}", h.check());
        // Seen gone after a create completed, with no delete: not linearizable.
        let mut h = History::new();
        topic_op(&mut h, (0, Some(1)), create(), Outcome::Ok);
        topic_op(&mut h, (2, Some(3)), exists(false), Outcome::Ok);
        only(&h, Kind::NonLinearizable);
        // "Already exists" for a topic never created.
        let mut h = History::new();
        topic_op(
            &mut h,
            (0, Some(1)),
            create(),
            Outcome::Failed("topic_exists".into()),
        );
        only(&h, Kind::NonLinearizable);
        // An unknown create explains a later "exists".
        let mut h = History::new();
        topic_op(&mut h, (0, None), create(), Outcome::Unknown);
        topic_op(&mut h, (5, Some(6)), exists(true), Outcome::Ok);
        topic_op(&mut h, (7, Some(8)), exists(true), Outcome::Ok);
        assert!(h.check().is_clean());
        // But "exists, gone, exists" with only one create and no delete is not.
        topic_op(&mut h, (9, Some(10)), exists(false), Outcome::Ok);
        only(&h, Kind::NonLinearizable);
    }

    #[test]
    fn replicas_must_be_identical() {
        let t = tp(0);
        assert!(check_replicas(&t, &[(1, vec![1, 2, 3]), (2, vec![1, 2, 3])]).is_empty());
        let a = check_replicas(
            &t,
            &[(1, vec![1, 2, 3]), (2, vec![1, 9, 3]), (3, vec![1, 2])],
        );
        assert_eq!(a.len(), 2);
        assert!(a[0].detail.contains("at byte 1"), "{}", a[0]);
        assert!(a[1].detail.contains("at byte 2"), "{}", a[1]);
    }

    #[test]
    fn agent_lines_exactly_once_in_file_order() {
        let files = vec![
            (
                "/a".to_owned(),
                vec!["1".to_owned(), "2".into(), "3".into()],
            ),
            ("/b".to_owned(), vec!["x".to_owned()]),
        ];
        let l = |p: &str, s: &str| (p.to_owned(), s.to_owned());
        let good = vec![l("/a", "1"), l("/b", "x"), l("/a", "2"), l("/a", "3")];
        assert!(check_lines(&files, &good).is_empty());
        let kinds = |logged: &[(String, String)]| {
            let mut k: Vec<Kind> = check_lines(&files, logged).iter().map(|a| a.kind).collect();
            k.dedup();
            k
        };
        assert_eq!(
            kinds(&[l("/a", "1"), l("/a", "3"), l("/b", "x")]),
            vec![Kind::LineMissing]
        );
        assert_eq!(
            kinds(&[
                l("/a", "1"),
                l("/a", "2"),
                l("/a", "2"),
                l("/a", "3"),
                l("/b", "x")
            ]),
            vec![Kind::LineTwice]
        );
        assert_eq!(
            kinds(&[l("/a", "2"), l("/a", "1"), l("/a", "3"), l("/b", "x")]),
            vec![Kind::LineOrder]
        );
    }

    #[test]
    fn rotated_lines_may_interleave_across_paths_but_not_within_one() {
        let written = vals("l", 6);
        let at = |p: &str, i: usize| (p.to_owned(), written[i].clone());
        // l0-l2 under app.log, l3-l5 first found as app.log.1: interleaved, each in order.
        let good = vec![
            at("a", 0),
            at("b", 3),
            at("a", 1),
            at("b", 4),
            at("a", 2),
            at("b", 5),
        ];
        assert!(check_rotated_lines(&written, &good).is_empty());
        let kinds = |logged: &[(String, String)]| -> Vec<Kind> {
            check_rotated_lines(&written, logged)
                .iter()
                .map(|a| a.kind)
                .collect()
        };
        let missing = vec![at("a", 0), at("a", 1), at("a", 2), at("b", 3), at("b", 5)];
        assert_eq!(kinds(&missing), vec![Kind::LineMissing]);
        let twice = vec![
            at("a", 0),
            at("a", 1),
            at("a", 2),
            at("b", 3),
            at("b", 4),
            at("b", 5),
            at("a", 2),
        ];
        assert!(kinds(&twice).contains(&Kind::LineTwice));
        let order = vec![
            at("a", 1),
            at("a", 0),
            at("a", 2),
            at("b", 3),
            at("b", 4),
            at("b", 5),
        ];
        assert_eq!(kinds(&order), vec![Kind::LineOrder]);
    }
}
