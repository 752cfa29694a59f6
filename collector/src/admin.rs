//! `collector topics …` and `collector groups …`: the admin CLI, a client of the same HTTP API users call.

use std::time::Duration;

use client::{ClientConfig, ClientError, CollectorClient};

/// Output format of admin commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no collector answered: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Invalid(String),
}

/// Timeouts of the bootstrap probe: short, since it only asks whether a node answers.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PROBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The first of `collectors` (URLs, `http://` assumed when missing) that answers: any node
/// of a cluster serves the whole API, so any one bootstraps. Fails naming each address and
/// why it did not answer.
pub async fn bootstrap(collectors: &[String], config: &ClientConfig) -> Result<String, AdminError> {
    let given: Vec<String> = collectors
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .map(|c| config.base_url(c))
        .collect();
    if given.is_empty() {
        return Err(AdminError::Unreachable(
            "no collector given (--collector or TRIBUTARY_COLLECTORS)".into(),
        ));
    }
    let probe = CollectorClient::new(
        &given,
        ClientConfig {
            connect_timeout: PROBE_CONNECT_TIMEOUT,
            request_timeout: PROBE_REQUEST_TIMEOUT,
            ..config.clone()
        },
    )?;
    let mut why = Vec::new();
    for base in given {
        match probe.health_at(&base).await {
            // Any reply from the API (even 503 while starting) means a collector is there.
            Ok(_) | Err(ClientError::Api { .. }) => return Ok(base),
            Err(e) => why.push(format!("{base}: {e}")),
        }
    }
    Err(AdminError::Unreachable(why.join("; ")))
}

/// The admin commands' client: one collector, the typed API.
#[derive(Debug)]
pub struct AdminClient {
    api: CollectorClient,
}

impl AdminClient {
    pub fn new(base: &str, config: ClientConfig) -> Result<Self, AdminError> {
        Ok(Self {
            api: CollectorClient::new(&[base.to_owned()], config)?,
        })
    }

    pub async fn topics_list(&self) -> Result<api::TopicList, AdminError> {
        Ok(self.api.topics().await?)
    }

    pub async fn topic_describe(&self, name: &str) -> Result<api::TopicDescription, AdminError> {
        Ok(self.api.topic(name).await?)
    }

    /// Creates a topic; `configs` are `name=value` settings (unknown names are refused).
    pub async fn topic_create(
        &self,
        name: &str,
        partitions: Option<u32>,
        replication_factor: Option<u16>,
        configs: &[(String, i64)],
    ) -> Result<api::TopicDescription, AdminError> {
        let map: serde_json::Map<String, serde_json::Value> = configs
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let parsed: api::TopicConfigs = serde_json::from_value(map.clone().into())
            .map_err(|e| AdminError::Invalid(format!("topic configs: {e}")))?;
        let known = serde_json::to_value(&parsed)
            .map_err(|e| AdminError::Invalid(format!("topic configs: {e}")))?;
        if let Some(k) = map.keys().find(|k| known.get(k.as_str()).is_none()) {
            return Err(AdminError::Invalid(format!(
                "unknown topic config {k:?} (known: retention_ms, retention_bytes, \
                 segment_bytes, segment_ms, min_insync_replicas)"
            )));
        }
        let req = api::CreateTopic {
            name: name.to_owned(),
            partitions,
            replication_factor,
            configs: parsed,
        };
        Ok(self.api.create_topic(&req).await?)
    }

    pub async fn topic_delete(&self, name: &str) -> Result<(), AdminError> {
        Ok(self.api.delete_topic(name).await?)
    }

    /// The cluster as the active controller sees it (it alone knows heartbeats): asks this
    /// node, then the controller leader it names, if that is another node.
    pub async fn cluster_status(&self) -> Result<api::ClusterStatus, AdminError> {
        let v = self.api.cluster().await?;
        let Some(leader) = v.controller.leader.filter(|l| *l != v.node_id) else {
            return Ok(v);
        };
        match v.brokers.iter().find(|b| b.id == leader) {
            Some(b) => match self
                .api
                .cluster_at(&self.api.config().base_url(&b.address))
                .await
            {
                Ok(from_leader) => Ok(from_leader),
                // The leader does not answer: show what this node knows.
                Err(_) => Ok(v),
            },
            None => Ok(v),
        }
    }

    pub async fn acls_list(
        &self,
        filter: &api::acls::AclFilter,
    ) -> Result<api::acls::AclList, AdminError> {
        Ok(self.api.acls(filter).await?)
    }

    pub async fn acls_add(
        &self,
        acls: Vec<api::acls::Acl>,
    ) -> Result<api::acls::AclList, AdminError> {
        Ok(self.api.create_acls(acls).await?)
    }

    pub async fn acls_remove(
        &self,
        filter: &api::acls::AclFilter,
    ) -> Result<api::acls::AclList, AdminError> {
        Ok(self.api.delete_acls(filter).await?)
    }

    pub async fn groups_list(&self) -> Result<api::GroupList, AdminError> {
        Ok(self.api.list_groups(None, false).await?)
    }

    pub async fn group_describe(&self, group: &str) -> Result<api::GroupView, AdminError> {
        Ok(self.api.describe_group(None, group, false).await?)
    }

    pub async fn group_reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: &str,
    ) -> Result<api::GroupOffsetsReply, AdminError> {
        let req = api::ResetRequest {
            topic: topic.to_owned(),
            to: to.to_owned(),
            partitions: None,
        };
        Ok(self.api.reset_offsets(None, group, &req, false).await?)
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn ids(v: &[u64]) -> String {
    format!(
        "[{}]",
        v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    )
}

/// Human rendering of `groups list`.
pub fn render_groups(v: &api::GroupList) -> String {
    let rows: Vec<Vec<String>> = v
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.state.clone(),
                g.members.to_string(),
                g.partitions_committed.to_string(),
            ]
        })
        .collect();
    table(
        &["GROUP", "STATE", "MEMBERS", "PARTITIONS_COMMITTED"],
        &rows,
    )
}

/// Human rendering of an ACL list (Kafka's `kafka-acls --list` columns).
pub fn render_acls(v: &api::acls::AclList) -> String {
    let name = |x: &dyn std::fmt::Debug| format!("{x:?}").to_uppercase();
    let rows: Vec<Vec<String>> = v
        .acls
        .iter()
        .map(|a| {
            vec![
                a.principal.clone(),
                a.host.clone(),
                name(&a.resource_type),
                a.resource_name.clone(),
                name(&a.pattern_type),
                name(&a.operation),
                name(&a.permission),
            ]
        })
        .collect();
    table(
        &[
            "PRINCIPAL",
            "HOST",
            "RESOURCE",
            "NAME",
            "PATTERN",
            "OPERATION",
            "PERMISSION",
        ],
        &rows,
    )
}

/// Human rendering of `groups describe` (like `kafka-consumer-groups --describe`).
pub fn render_group(v: &api::GroupView) -> String {
    let clients: std::collections::BTreeMap<&str, &str> = v
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), m.client.as_str()))
        .collect();
    let rows: Vec<Vec<String>> = v
        .partitions
        .iter()
        .map(|p| {
            let client = p
                .owner
                .as_deref()
                .and_then(|o| clients.get(o))
                .map_or("-", |c| *c);
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                opt(p.owner.as_deref()),
                client.to_owned(),
                opt(p.committed),
                p.high_watermark.to_string(),
                p.lag.to_string(),
            ]
        })
        .collect();
    format!(
        "group {}  state {}  members {}\n{}",
        v.group,
        v.state,
        clients.len(),
        table(
            &[
                "TOPIC",
                "PARTITION",
                "OWNER",
                "CLIENT",
                "COMMITTED",
                "HIGH_WATERMARK",
                "LAG"
            ],
            &rows
        )
    )
}

/// Human rendering of `groups reset-offsets`.
pub fn render_reset(v: &api::GroupOffsetsReply) -> String {
    let rows: Vec<Vec<String>> = v
        .offsets
        .iter()
        .map(|o| {
            vec![
                o.topic.clone(),
                o.partition.to_string(),
                o.offset.to_string(),
            ]
        })
        .collect();
    format!(
        "group {}: offsets reset\n{}",
        v.group,
        table(&["TOPIC", "PARTITION", "OFFSET"], &rows)
    )
}

/// Renders rows as an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

/// Human rendering of `topics list`.
pub fn render_topics(v: &api::TopicList) -> String {
    let rows: Vec<Vec<String>> = v
        .topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
            ]
        })
        .collect();
    table(&["TOPIC", "PARTITIONS", "REPLICATION"], &rows)
}

/// Human rendering of `topics describe`.
pub fn render_topic(v: &api::TopicDescription) -> String {
    let rows: Vec<Vec<String>> = v
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.leader.to_string(),
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                p.log_start_offset.to_string(),
                p.high_watermark.to_string(),
                p.size_bytes.to_string(),
            ]
        })
        .collect();
    format!(
        "topic {}  replication {}  configs {}\n{}",
        v.name,
        v.replication_factor,
        serde_json::to_string(&v.configs).unwrap_or_default(),
        table(
            &[
                "PARTITION",
                "LEADER",
                "EPOCH",
                "REPLICAS",
                "ISR",
                "LOG_START",
                "HIGH_WATERMARK",
                "BYTES"
            ],
            &rows
        )
    )
}

/// Human rendering of `cluster status`.
pub fn render_cluster(v: &api::ClusterStatus) -> String {
    let c = &v.controller;
    let rows: Vec<Vec<String>> = v
        .brokers
        .iter()
        .map(|b| {
            let role = if c.leader == Some(b.id) {
                "controller (leader)"
            } else if b.voter {
                "voter"
            } else {
                "broker"
            };
            let age = b.last_heartbeat_ms_ago;
            // Silent for more than two heartbeat intervals: suspect. The active controller
            // probes its port then: fenced at once if the port refuses connections (the
            // process is gone), else when the session runs out (paused, unreachable).
            let suspect_after = 2 * v.broker_heartbeat_interval_ms;
            let alive = match (b.alive, age) {
                (false, _) => "NO (fenced)".to_owned(),
                (true, Some(a)) if a > suspect_after => format!(
                    "suspect (fenced after {:.1} s of silence, sooner if its port refuses connections)",
                    v.broker_session_timeout_ms as f64 / 1e3
                ),
                (true, _) => "yes".to_owned(),
            };
            vec![
                b.id.to_string(),
                b.address.clone(),
                alive,
                age.map_or_else(
                    || "?".to_owned(),
                    |a| format!("{:.1} s ago", a as f64 / 1e3),
                ),
                role.to_owned(),
            ]
        })
        .collect();
    format!(
        "asked node {}: raft {} term {} leader {} last log {} applied {}\n{}",
        v.node_id,
        c.state,
        c.term,
        opt(c.leader),
        opt(c.last_log_index),
        opt(c.last_applied),
        table(&["ID", "ADDRESS", "ALIVE", "LAST HEARTBEAT", "ROLE"], &rows)
    )
}
