//! `collector topics …` and `collector groups …`: the admin CLI, a client of the same HTTP API users call.

use serde_json::{Value, json};

/// Output format of admin commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{url}: {}", crate::net::describe(.error))]
    Http { url: String, error: reqwest::Error },
    #[error("no collector answered: {0}")]
    Unreachable(String),
    #[error("{code}: {message}")]
    Api { code: String, message: String },
}

/// The first of `collectors` (URLs, `http://` assumed when missing) that answers: any node
/// of a cluster serves the whole API, so any one bootstraps. Fails naming each address and
/// why it did not answer.
pub async fn bootstrap(collectors: &[String]) -> Result<String, AdminError> {
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| AdminError::Unreachable(crate::net::describe(&e)))?;
    let mut why = Vec::new();
    for c in collectors
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
    {
        let base = if c.contains("://") {
            c.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", c.trim_end_matches('/'))
        };
        match http.get(format!("{base}/health")).send().await {
            Ok(_) => return Ok(base),
            Err(e) => why.push(format!("{base}: {}", crate::net::describe(&e))),
        }
    }
    if why.is_empty() {
        why.push("no collector given (--collector or TRIBUTARY_COLLECTORS)".into());
    }
    Err(AdminError::Unreachable(why.join("; ")))
}

/// A small client of the collector API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, AdminError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let http = |error| AdminError::Http {
            url: url.clone(),
            error,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let text = resp.text().await.map_err(http)?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            return Err(AdminError::Api {
                code: v["error"]["code"]
                    .as_str()
                    .unwrap_or("http_error")
                    .to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .map_or_else(|| format!("HTTP {status}"), str::to_owned),
            });
        }
        Ok(v)
    }

    pub async fn topics_list(&self) -> Result<Value, AdminError> {
        self.call(reqwest::Method::GET, "/v1/topics", None).await
    }

    pub async fn topic_describe(&self, name: &str) -> Result<Value, AdminError> {
        self.call(reqwest::Method::GET, &format!("/v1/topics/{name}"), None)
            .await
    }

    pub async fn topic_create(
        &self,
        name: &str,
        partitions: Option<u32>,
        replication_factor: Option<u16>,
        configs: Value,
    ) -> Result<Value, AdminError> {
        let mut body = json!({"name": name, "configs": configs});
        if let Some(p) = partitions {
            body["partitions"] = json!(p);
        }
        if let Some(r) = replication_factor {
            body["replication_factor"] = json!(r);
        }
        self.call(reqwest::Method::POST, "/v1/topics", Some(body))
            .await
    }

    pub async fn topic_delete(&self, name: &str) -> Result<Value, AdminError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/topics/{name}"), None)
            .await
    }

    /// The cluster as the active controller sees it (it alone knows heartbeats): asks this
    /// node, then the controller leader it names, if that is another node.
    pub async fn cluster_status(&self) -> Result<Value, AdminError> {
        let v = self.call(reqwest::Method::GET, "/v1/cluster", None).await?;
        let leader = v["controller"]["leader"].as_u64();
        if leader.is_none() || leader == v["node_id"].as_u64() {
            return Ok(v);
        }
        let address = v["brokers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["id"].as_u64() == leader)
            .and_then(|b| b["address"].as_str())
            .map(|a| format!("http://{a}"));
        match address {
            Some(a) => match AdminClient::new(&a)
                .call(reqwest::Method::GET, "/v1/cluster", None)
                .await
            {
                Ok(from_leader) => Ok(from_leader),
                // The leader does not answer: show what this node knows.
                Err(_) => Ok(v),
            },
            None => Ok(v),
        }
    }

    pub async fn groups_list(&self) -> Result<Value, AdminError> {
        self.call(reqwest::Method::GET, "/v1/groups", None).await
    }

    pub async fn group_describe(&self, group: &str) -> Result<Value, AdminError> {
        self.call(reqwest::Method::GET, &format!("/v1/groups/{group}"), None)
            .await
    }

    pub async fn group_reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: &str,
    ) -> Result<Value, AdminError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/groups/{group}/offsets/reset"),
            Some(json!({"topic": topic, "to": to})),
        )
        .await
    }
}

/// Human rendering of `groups list`.
pub fn render_groups(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| {
                    vec![
                        s(&g["group"]),
                        s(&g["state"]),
                        s(&g["members"]),
                        s(&g["partitions_committed"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &["GROUP", "STATE", "MEMBERS", "PARTITIONS_COMMITTED"],
        &rows,
    )
}

/// Human rendering of `groups describe` (like `kafka-consumer-groups --describe`).
pub fn render_group(v: &Value) -> String {
    let clients: std::collections::BTreeMap<String, String> = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| (s(&m["member_id"]), s(&m["client"])))
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = v["partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let owner = s(&p["owner"]);
                    let client = clients.get(&owner).cloned().unwrap_or_else(|| "-".into());
                    vec![
                        s(&p["topic"]),
                        s(&p["partition"]),
                        owner,
                        client,
                        s(&p["committed"]),
                        s(&p["high_watermark"]),
                        s(&p["lag"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "group {}  state {}  members {}\n{}",
        s(&v["group"]),
        s(&v["state"]),
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
pub fn render_reset(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["offsets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| vec![s(&o["topic"]), s(&o["partition"]), s(&o["offset"])])
                .collect()
        })
        .unwrap_or_default();
    format!(
        "group {}: offsets reset\n{}",
        s(&v["group"]),
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

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Human rendering of `topics list`.
pub fn render_topics(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["topics"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    vec![
                        s(&t["name"]),
                        s(&t["partitions"]),
                        s(&t["replication_factor"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["TOPIC", "PARTITIONS", "REPLICATION"], &rows)
}

/// Human rendering of `topics describe`.
pub fn render_topic(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    vec![
                        s(&p["partition"]),
                        s(&p["leader"]),
                        s(&p["leader_epoch"]),
                        s(&p["replicas"]),
                        s(&p["isr"]),
                        s(&p["log_start_offset"]),
                        s(&p["high_watermark"]),
                        s(&p["size_bytes"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "topic {}  replication {}  configs {}\n{}",
        s(&v["name"]),
        s(&v["replication_factor"]),
        v["configs"],
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
pub fn render_cluster(v: &Value) -> String {
    let c = &v["controller"];
    let rows: Vec<Vec<String>> = v["brokers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    let id = b["id"].as_u64();
                    let role = if id.is_some() && c["leader"].as_u64() == id {
                        "controller (leader)"
                    } else if b["voter"] == true {
                        "voter"
                    } else {
                        "broker"
                    };
                    let age = b["last_heartbeat_ms_ago"].as_u64();
                    // Silent for more than three heartbeat intervals: suspect, before the
                    // session runs out and it is fenced.
                    let suspect_after =
                        3 * v["broker_heartbeat_interval_ms"].as_u64().unwrap_or(1000);
                    let alive = match (b["alive"] == true, age) {
                        (false, _) => "NO (fenced)".to_owned(),
                        (true, Some(a)) if a > suspect_after => format!(
                            "suspect (fenced after {:.1} s of silence)",
                            v["broker_session_timeout_ms"].as_u64().unwrap_or(0) as f64 / 1e3
                        ),
                        (true, _) => "yes".to_owned(),
                    };
                    vec![
                        s(&b["id"]),
                        s(&b["address"]),
                        alive,
                        age.map_or_else(
                            || "?".to_owned(),
                            |a| format!("{:.1} s ago", a as f64 / 1e3),
                        ),
                        role.to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "asked node {}: raft {} term {} leader {} last log {} applied {}\n{}",
        s(&v["node_id"]),
        s(&c["state"]),
        s(&c["term"]),
        s(&c["leader"]),
        s(&c["last_log_index"]),
        s(&c["last_applied"]),
        table(&["ID", "ADDRESS", "ALIVE", "LAST HEARTBEAT", "ROLE"], &rows)
    )
}
