//! Prometheus metrics (prometheus-client). Request metrics are recorded by a middleware;
//! storage gauges are computed when `/metrics` is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KafkaLabels {
    /// The API's name (`Produce`, `Fetch`, …).
    pub api: String,
    pub version: i16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KafkaErrorLabels {
    pub api: String,
    /// Kafka's error name (`NotLeaderOrFollower`, …).
    pub error: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub errors: Family<CodeLabels, Counter>,
    pub latency: Family<RouteOnly, Histogram>,
    pub produced_bytes: Counter,
    pub produced_records: Counter,
    pub duplicate_batches: Counter,
    pub fetched_bytes: Counter,
    pub partitions: Gauge,
    pub log_bytes: Gauge,
    /// fsyncs issued for the logs of the partitions open now (set on scrape).
    pub log_fsyncs: Gauge,
    pub producers: Gauge,
    pub data_dirs_offline: Gauge,
    /// High watermark minus committed offset, per group and partition (set on scrape).
    pub group_lag: Family<LagLabels, Gauge>,
    /// Kafka requests by API and version.
    pub kafka_requests: Family<KafkaLabels, Counter>,
    /// Kafka error codes answered, by API and error.
    pub kafka_errors: Family<KafkaErrorLabels, Counter>,
    /// Kafka client connections open now.
    pub kafka_connections: Gauge,
    /// HTTP connections open now.
    pub http_connections: Gauge,
    /// Connections closed on arrival: a connection cap was reached.
    pub connections_refused: Counter,
    /// TLS handshakes that failed or timed out (bad or missing certificate, plaintext
    /// client, another CA).
    pub tls_handshake_failures: Counter,
    /// Requests refused for missing or bad credentials.
    pub authentication_failures: Counter,
    /// Requests whose body did not arrive in time (408).
    pub body_timeouts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tributary");
        let requests = Family::<RouteLabels, Counter>::default();
        let errors = Family::<CodeLabels, Counter>::default();
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~100 s
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        let m = Self {
            requests,
            errors,
            latency,
            produced_bytes: Counter::default(),
            produced_records: Counter::default(),
            duplicate_batches: Counter::default(),
            fetched_bytes: Counter::default(),
            partitions: Gauge::default(),
            log_bytes: Gauge::default(),
            log_fsyncs: Gauge::default(),
            producers: Gauge::default(),
            data_dirs_offline: Gauge::default(),
            group_lag: Family::default(),
            kafka_requests: Family::default(),
            kafka_errors: Family::default(),
            kafka_connections: Gauge::default(),
            http_connections: Gauge::default(),
            connections_refused: Counter::default(),
            tls_handshake_failures: Counter::default(),
            authentication_failures: Counter::default(),
            body_timeouts: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "http_errors",
            "Error replies by error code",
            m.errors.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Request latency by route",
            m.latency.clone(),
        );
        registry.register(
            "produced_bytes",
            "Batch bytes appended",
            m.produced_bytes.clone(),
        );
        registry.register(
            "produced_records",
            "Records appended",
            m.produced_records.clone(),
        );
        registry.register(
            "duplicate_batches",
            "Retried batches answered without writing",
            m.duplicate_batches.clone(),
        );
        registry.register(
            "fetched_bytes",
            "Batch bytes served to fetches",
            m.fetched_bytes.clone(),
        );
        registry.register(
            "partitions",
            "Partitions held by this broker",
            m.partitions.clone(),
        );
        registry.register(
            "log_bytes",
            "Bytes of segment data held",
            m.log_bytes.clone(),
        );
        registry.register(
            "log_fsyncs",
            "fsyncs issued for the logs of the partitions open now (flush policy: per acknowledged write with always, per interval with interval, none with never)",
            m.log_fsyncs.clone(),
        );
        registry.register(
            "producers",
            "Idempotent producers tracked",
            m.producers.clone(),
        );
        registry.register(
            "data_dirs_offline",
            "Data directories offline after I/O errors",
            m.data_dirs_offline.clone(),
        );
        registry.register(
            "kafka_requests",
            "Kafka protocol requests by API and version",
            m.kafka_requests.clone(),
        );
        registry.register(
            "kafka_errors",
            "Kafka protocol error codes answered, by API and error",
            m.kafka_errors.clone(),
        );
        registry.register(
            "kafka_connections",
            "Kafka client connections open",
            m.kafka_connections.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections open",
            m.http_connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed on arrival because a connection cap was reached",
            m.connections_refused.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "authentication_failures",
            "Requests refused for missing or bad credentials",
            m.authentication_failures.clone(),
        );
        registry.register(
            "body_timeouts",
            "Requests whose body did not arrive in time",
            m.body_timeouts.clone(),
        );
        registry.register(
            "group_lag_records",
            "Records between a group's committed offset and the high watermark",
            m.group_lag.clone(),
        );
        Self { registry, ..m }
    }

    /// Sets the gauges that are read from state at scrape time (partitions, log bytes,
    /// producers, offline directories, group lag; lag gauges are rebuilt, so deleted groups
    /// disappear).
    pub fn refresh(&self, broker: &crate::broker::Broker, groups: &crate::groups::GroupService) {
        let parts = broker.logs.partitions();
        self.partitions.set(parts.len() as i64);
        let bytes: u64 = parts
            .iter()
            .filter_map(|(tp, _)| broker.logs.get(tp))
            .map(|log| shared::sys::lock(&log).size_bytes())
            .sum();
        self.log_bytes.set(bytes as i64);
        let open = broker.open_partitions();
        let producers: usize = open.iter().map(|p| p.producer_count()).sum();
        let fsyncs: u64 = open.iter().map(|p| p.fsyncs()).sum();
        self.log_fsyncs
            .set(i64::try_from(fsyncs).unwrap_or(i64::MAX));
        self.producers.set(producers as i64);
        self.data_dirs_offline.set(broker.offline_dirs() as i64);
        self.group_lag.clear();
        for (group, topic, partition, lag) in groups.lags() {
            self.group_lag
                .get_or_create(&LagLabels {
                    group,
                    topic,
                    partition,
                })
                .set(lag as i64);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
