//! Names that become file names: validated here, once, so nothing else has to.

/// Longest topic name (Kafka's limit: the directory name adds `-<partition>`).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is {len} bytes long (max {TOPIC_NAME_BYTES_MAX})")]
    TooLong { len: usize },
    #[error("topic name may not be {0:?}")]
    Reserved(&'static str),
    #[error("topic name has character {ch:?} at {at}: only A-Z a-z 0-9 . _ - are allowed")]
    BadChar { ch: char, at: usize },
}

/// Checks a topic name: `[A-Za-z0-9._-]{1,249}`, and not `.` or `..`.
pub fn validate_topic(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(TopicNameError::TooLong { len: name.len() });
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Reserved(if name == "." {
            "."
        } else {
            ".."
        }));
    }
    if let Some((at, ch)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicNameError::BadChar { ch, at });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_topic("logs").is_ok());
        assert!(validate_topic("a.b_c-D9").is_ok());
        assert!(validate_topic(&"x".repeat(249)).is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "a b", "é", "%2F"] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic(&"x".repeat(250)).is_err());
    }
}

/// A partition of a topic: the unit of storage, replication, batching and ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }

    /// The partition's directory name, `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Parses a directory name; the topic is everything before the last `-`.
    pub fn parse_dir_name(name: &str) -> Option<Self> {
        let (topic, p) = name.rsplit_once('-')?;
        validate_topic(topic).ok()?;
        Some(Self::new(topic, p.parse().ok()?))
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
