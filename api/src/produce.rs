//! Produce and fetch of binary batches, and producer ids.

use serde::{Deserialize, Serialize};

/// How many replicas must have a batch before a produce is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// No acknowledgement: the reply (empty) says nothing of the outcome and does not wait
    /// for any replica; the leader still appends before taking the connection's next
    /// request (backpressure, and one partition's batches keep their order).
    None,
    /// The leader has it (and, with flush `always`, fsynced it).
    Leader,
    /// Every in-sync replica has it (on a single node: as `Leader`).
    #[default]
    All,
}

impl Acks {
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("acks must be 0, 1 or all, got {other:?}")),
        }
    }
}

impl Serialize for Acks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Acks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accepts "0", "1", "all", "-1" and the numbers 0, 1, -1 (YAML configs write both).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Number(n) => n.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `?acks=` of a produce (binary or JSON); absent means `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<String>,
}

impl ProduceQuery {
    pub fn new(acks: Acks) -> Self {
        Self {
            acks: Some(acks.as_str().to_owned()),
        }
    }

    /// The acks asked for; the text is kept so a bad value is refused with `invalid_acks`.
    pub fn acks(&self) -> Result<Acks, String> {
        self.acks.as_deref().map_or(Ok(Acks::All), str::parse)
    }
}

/// Outcome of one batch of a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_append_time_ms: i64,
    /// The batch was a retry of one already in the log; nothing was written.
    pub duplicate: bool,
}

/// Reply to a binary produce: one entry per batch (empty with `acks=0`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceReply {
    pub batches: Vec<BatchAck>,
}

/// `GET .../batches?offset=O&max_bytes=B&max_wait_ms=W`: where to read and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchQuery {
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

/// `POST /v1/producers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerId {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// One partition of `GET /v1/producers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerPartition {
    pub topic: String,
    pub partition: u32,
    pub producer_epoch: i16,
    /// The last sequence whose batch is durable and below the high watermark.
    pub last_sequence: i32,
    pub last_offset: u64,
}

/// `GET /v1/producers/{id}`: the partitions this broker leads that hold the producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub producer_id: i64,
    pub partitions: Vec<ProducerPartition>,
}
