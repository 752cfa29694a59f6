//! The agent's `/metrics` (Prometheus text) and `/health`, served on `metrics_listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    pub records_read: Counter,
    pub bytes_read: Counter,
    /// Pieces a line longer than `max_line_bytes` was cut into, past the first.
    pub long_line_pieces: Counter,
    /// Multiline records ended by the timeout rather than by the next line.
    pub multiline_timeouts: Counter,
    pub batches_sent: Counter,
    pub batches_acked: Counter,
    pub batches_refused: Counter,
    /// Pipelined batches sent again in order (they overtook an earlier one in flight, or
    /// failed while one was).
    pub batches_resent: Counter,
    pub files_open: Gauge,
    pub files_known: Gauge,
    pub buffered_bytes: Gauge,
    pub journal_batches: Gauge,
    /// 1 once a collector gave the producer identity and partitions; 0 while waiting.
    pub connected: Gauge,
    /// Input path patterns that match no file.
    pub unmatched_patterns: Gauge,
    unmatched: std::sync::Mutex<Vec<String>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::default(),
            records_read: Counter::default(),
            bytes_read: Counter::default(),
            long_line_pieces: Counter::default(),
            multiline_timeouts: Counter::default(),
            batches_sent: Counter::default(),
            batches_acked: Counter::default(),
            batches_refused: Counter::default(),
            batches_resent: Counter::default(),
            files_open: Gauge::default(),
            files_known: Gauge::default(),
            buffered_bytes: Gauge::default(),
            journal_batches: Gauge::default(),
            connected: Gauge::default(),
            unmatched_patterns: Gauge::default(),
            unmatched: std::sync::Mutex::new(Vec::new()),
        };
        let mut registry = Registry::with_prefix("tributary_agent");
        registry.register(
            "records_read",
            "Records cut from files",
            m.records_read.clone(),
        );
        registry.register(
            "bytes_read",
            "File bytes turned into records",
            m.bytes_read.clone(),
        );
        registry.register(
            "long_line_pieces",
            "Extra records made by cutting lines longer than max_line_bytes",
            m.long_line_pieces.clone(),
        );
        registry.register(
            "multiline_timeouts",
            "Multiline records ended by their timeout",
            m.multiline_timeouts.clone(),
        );
        registry.register(
            "batches_sent",
            "Produce requests started",
            m.batches_sent.clone(),
        );
        registry.register(
            "batches_acked",
            "Batches acknowledged",
            m.batches_acked.clone(),
        );
        registry.register(
            "batches_refused",
            "Batches refused by the collector (kept and retried)",
            m.batches_refused.clone(),
        );
        registry.register(
            "batches_resent",
            "Pipelined batches sent again in order (they overtook an earlier one in flight, or failed while one was)",
            m.batches_resent.clone(),
        );
        registry.register("files_open", "Files open for reading", m.files_open.clone());
        registry.register("files_known", "Files in the state", m.files_known.clone());
        registry.register(
            "buffered_bytes",
            "Bytes read but not yet acknowledged",
            m.buffered_bytes.clone(),
        );
        registry.register(
            "journal_batches",
            "Journaled batches not yet acknowledged",
            m.journal_batches.clone(),
        );
        registry.register(
            "connected",
            "1 once a collector answered (producer id, partitions); 0 while waiting for collectors",
            m.connected.clone(),
        );
        registry.register(
            "unmatched_patterns",
            "Input path patterns that match no file",
            m.unmatched_patterns.clone(),
        );
        Self { registry, ..m }
    }

    /// Records the input patterns that match no file (shown by `/health`).
    pub fn set_unmatched(&self, patterns: &[String]) {
        let mut g = shared::sys::lock(&self.unmatched);
        if *g != patterns {
            *g = patterns.to_vec();
        }
    }

    fn unmatched(&self) -> Vec<String> {
        shared::sys::lock(&self.unmatched).clone()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn metrics(State(m): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn health(State(m): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    let status = if m.connected.get() == 0 {
        "waiting for collectors"
    } else {
        "ok"
    };
    axum::Json(serde_json::json!({
        "status": status,
        "collectors_connected": m.connected.get() == 1,
        "inputs_matching_nothing": m.unmatched(),
        "files_open": m.files_open.get(),
        "buffered_bytes": m.buffered_bytes.get(),
        "journal_batches": m.journal_batches.get(),
    }))
}

/// Serves `/metrics` and `/health` until the process ends. A listener that cannot bind is
/// an error at startup (a typo in `metrics_listen` should not go unnoticed).
pub async fn serve(
    addr: SocketAddr,
    m: Arc<AgentMetrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(m);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    }))
}
