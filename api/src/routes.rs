//! Route paths: the patterns the server registers (`{name}` captures) and the functions
//! clients build concrete paths with. A path and its pattern sit side by side.

pub const HEALTH: &str = "/health";
pub const METRICS: &str = "/metrics";
pub const METADATA: &str = "/v1/metadata";
pub const CLUSTER: &str = "/v1/cluster";
pub const TOPICS: &str = "/v1/topics";
pub const TOPIC: &str = "/v1/topics/{topic}";
pub const PRODUCERS: &str = "/v1/producers";
pub const PRODUCER: &str = "/v1/producers/{id}";
pub const BATCHES: &str = "/v1/topics/{topic}/partitions/{partition}/batches";
pub const RECORDS_PRODUCE: &str = "/v1/topics/{topic}/records";
pub const RECORDS_FETCH: &str = "/v1/topics/{topic}/partitions/{partition}/records";
pub const GROUPS: &str = "/v1/groups";
pub const ACLS: &str = "/v1/acls";
pub const ACLS_DELETE: &str = "/v1/acls/delete";
pub const GROUP: &str = "/v1/groups/{group}";
pub const GROUP_HEARTBEAT: &str = "/v1/groups/{group}/heartbeat";
pub const GROUP_OFFSETS: &str = "/v1/groups/{group}/offsets";
pub const GROUP_RESET: &str = "/v1/groups/{group}/offsets/reset";

pub const PARTITION_OFFSETS: &str = "/internal/partition-offsets";
pub const REPLICA_FETCH: &str = "/internal/replica/fetch";
pub const REPLICA_EPOCH_ENDS: &str = "/internal/replica/epoch-ends";
pub const REPLICA_CHECKSUM: &str = "/internal/replica/checksum";
pub const RAFT_APPEND: &str = "/internal/raft/append";
pub const RAFT_VOTE: &str = "/internal/raft/vote";
pub const RAFT_SNAPSHOT: &str = "/internal/raft/snapshot";
pub const CONTROLLER_PROPOSE: &str = "/internal/controller/propose";
pub const CONTROLLER_ADD_LEARNER: &str = "/internal/controller/add-learner";
pub const CONTROLLER_HEARTBEAT: &str = "/internal/controller/heartbeat";

pub fn topic(topic: &str) -> String {
    format!("/v1/topics/{topic}")
}

pub fn producer(id: i64) -> String {
    format!("/v1/producers/{id}")
}

pub fn batches(topic: &str, partition: u32) -> String {
    format!("/v1/topics/{topic}/partitions/{partition}/batches")
}

pub fn records_produce(topic: &str) -> String {
    format!("/v1/topics/{topic}/records")
}

pub fn records_fetch(topic: &str, partition: u32) -> String {
    format!("/v1/topics/{topic}/partitions/{partition}/records")
}

pub fn group(group: &str) -> String {
    format!("/v1/groups/{group}")
}

pub fn group_heartbeat(group: &str) -> String {
    format!("/v1/groups/{group}/heartbeat")
}

pub fn group_offsets(group: &str) -> String {
    format!("/v1/groups/{group}/offsets")
}

pub fn group_reset(group: &str) -> String {
    format!("/v1/groups/{group}/offsets/reset")
}

/// Renders a query struct as `?a=1&b=x` (values are numbers, names and `acks`, none of which
/// need escaping beyond what `escape` does).
pub fn query<T: serde::Serialize>(q: &T) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(q) else {
        return String::new();
    };
    let mut out = String::new();
    for (k, v) in map {
        let v = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(&k);
        out.push('=');
        out.push_str(&escape(&v));
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_paths_agree() {
        let fill = |p: &str| {
            p.replace("{topic}", "logs")
                .replace("{partition}", "3")
                .replace("{group}", "search")
                .replace("{id}", "7")
        };
        assert_eq!(fill(TOPIC), topic("logs"));
        assert_eq!(fill(PRODUCER), producer(7));
        assert_eq!(fill(BATCHES), batches("logs", 3));
        assert_eq!(fill(RECORDS_PRODUCE), records_produce("logs"));
        assert_eq!(fill(RECORDS_FETCH), records_fetch("logs", 3));
        assert_eq!(fill(GROUP), group("search"));
        assert_eq!(fill(GROUP_HEARTBEAT), group_heartbeat("search"));
        assert_eq!(fill(GROUP_OFFSETS), group_offsets("search"));
        assert_eq!(fill(GROUP_RESET), group_reset("search"));
    }

    #[test]
    fn queries_render_and_escape() {
        let q = crate::FetchQuery {
            offset: 5,
            max_bytes: None,
            max_wait_ms: Some(100),
        };
        let mut parts: Vec<String> = query(&q)[1..].split('&').map(str::to_owned).collect();
        parts.sort();
        assert_eq!(parts, ["max_wait_ms=100", "offset=5"]);
        let q = crate::PartitionQuery {
            topic: "a b".into(),
            partition: 1,
        };
        let q = query(&q);
        assert!(
            q.contains("topic=a%20b") && q.contains("partition=1"),
            "{q}"
        );
    }
}
