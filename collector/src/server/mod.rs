//! The HTTP server: one port for the client API, admin, metrics, and the internal routes of
//! the controller. Only this module knows axum and JSON.
//!
//! Start order: recover storage, start the controller, register this broker, then serve.
//! Shutdown: stop accepting, finish in-flight requests, flush and checkpoint, close every
//! log and write the clean-shutdown markers, stop the controller.

pub mod api;
pub mod error;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use crate::broker::Broker;
use crate::config::Config;
use crate::controller::state::{CommandResult, MetadataCommand};
use crate::controller::{Controller, ControllerConfig};
use crate::groups::GroupService;
use crate::metrics::{CodeLabels, Metrics, RouteLabels, RouteOnly};
use crate::storage::{FlushPolicy, LogManager};
use api::AppState;
use error::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("controller: {0}")]
    Controller(#[from] crate::controller::ControllerError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

async fn track(
    State(s): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .requests
        .get_or_create(&RouteLabels {
            route: route.clone(),
            status: resp.status().as_u16(),
        })
        .inc();
    s.metrics
        .latency
        .get_or_create(&RouteOnly { route })
        .observe(start.elapsed().as_secs_f64());
    if let Some(ErrorCode(code)) = resp.extensions().get::<ErrorCode>() {
        s.metrics
            .errors
            .get_or_create(&CodeLabels {
                code: (*code).to_owned(),
            })
            .inc();
    }
    resp
}

/// Every error reply is JSON (DESIGN §4), including the ones axum produces itself (a query
/// or path that does not parse, an unknown route, a wrong method).
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.extensions().get::<ErrorCode>().is_some()
    {
        return resp;
    }
    let (_, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status {
        axum::http::StatusCode::NOT_FOUND => "not_found",
        axum::http::StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    error::ApiError::new(status, code, message).into_response()
}

/// The client and admin routes.
pub fn router(state: Arc<AppState>) -> Router {
    let max_requests = state.broker.config.limits.max_in_flight_requests;
    Router::new()
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/v1/metadata", get(api::metadata))
        .route("/v1/cluster", get(api::cluster))
        .route("/internal/partition-offsets", get(api::partition_offsets))
        .route("/internal/replica/fetch", get(api::replica_fetch))
        .route("/internal/replica/epoch-end", get(api::replica_epoch_end))
        .route("/internal/replica/checksum", get(api::replica_checksum))
        .route("/v1/topics", get(api::list_topics).post(api::create_topic))
        .route(
            "/v1/topics/{topic}",
            get(api::describe_topic).delete(api::delete_topic),
        )
        .route("/v1/producers", post(api::allocate_producer))
        .route("/v1/producers/{id}", get(api::producer_state))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/batches",
            post(api::produce).get(api::fetch),
        )
        .route("/v1/topics/{topic}/records", post(api::produce_json))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/records",
            get(api::fetch_json),
        )
        .route("/v1/groups", get(api::list_groups))
        .route("/v1/groups/{group}", get(api::describe_group))
        .route("/v1/groups/{group}/heartbeat", post(api::heartbeat))
        .route(
            "/v1/groups/{group}/offsets",
            get(api::group_offsets).post(api::commit_offsets),
        )
        .route("/v1/groups/{group}/offsets/reset", post(api::reset_offsets))
        .fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            )
        })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(tower::limit::ConcurrencyLimitLayer::new(max_requests))
        .with_state(state)
}

/// Runs a collector until `shutdown` resolves. `on_listening` is called with the bound
/// address (useful with port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send,
) -> Result<(), ServerError> {
    // 1. Recover storage.
    let dirs = config.data_dirs.clone();
    let log_config = config.log.clone();
    let open_files = config.limits.open_segment_files_max;
    let create = config.create_data_dirs;
    let logs = tokio::task::spawn_blocking(move || {
        crate::storage::disk::prepare_data_dirs(&dirs, create)?;
        LogManager::open(&dirs, log_config, open_files)
    })
    .await
    .map_err(|e| ServerError::Other(e.to_string()))??;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut config = config;
    if config.listen.port() == 0 {
        // Port chosen by the OS: advertise what was bound.
        config.advertise = local.to_string();
        if config.voters.len() == 1 && config.voters[0].0 == config.node_id {
            config.voters[0].1 = local.to_string();
        }
    }
    // 2. Start the controller (its Raft log lives beside the first data directory's data).
    let controller = Controller::start(ControllerConfig {
        node_id: config.node_id,
        advertise: config.advertise.clone(),
        voters: config.voters.clone(),
        dir: config.data_dirs[0].join("__controller"),
        broker_session_timeout: config.broker_session_timeout,
    })
    .await?;
    let broker = Arc::new(Broker::new(config.clone(), logs, controller.clone()));
    let groups = Arc::new(GroupService::new(broker.clone()));
    let state = Arc::new(AppState {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ServerError::Other(e.to_string()))?,
        broker: broker.clone(),
        groups: groups.clone(),
        metrics: Arc::new(Metrics::new()),
        inflight_bytes: Arc::new(Semaphore::new(
            config
                .limits
                .max_in_flight_bytes
                .min(u64::from(u32::MAX) / 2) as usize,
        )),
        spread: AtomicU32::new(0),
        registered: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    });
    let registered = state.registered.clone();
    let app = router(state).merge(controller.router());
    // Background work: flush timer, checkpoints, retention.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Heartbeats stop first on shutdown, so they do not undo the controlled shutdown.
    let (hb_stop_tx, hb_stop_rx) = tokio::sync::watch::channel(false);
    // Registration needs a controller quorum, which in a cluster needs the other nodes'
    // Raft routes: serve first, register in the background (`/health` says "starting").
    let membership = tokio::spawn(membership(
        controller.clone(),
        config.clone(),
        registered,
        hb_stop_rx,
    ));
    let background = tokio::spawn(background(broker.clone(), groups, stop_rx.clone()));
    let replicas = tokio::spawn(crate::broker::replica::run(broker.clone(), stop_rx.clone()));
    // 3. Serve.
    tracing::info!(%local, node_id = config.node_id, "collector listening");
    on_listening(local);
    // Controlled shutdown: before it stops serving, the broker hands its leaderships to
    // other ISR members, so clients only see `not_leader` and follow the metadata.
    let controlled = {
        let (controller, node_id) = (controller.clone(), config.node_id);
        async move {
            shutdown.await;
            let _ = hb_stop_tx.send(true);
            controlled_shutdown(&controller, node_id).await;
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(controlled)
        .await
        .map_err(|e| ServerError::Other(format!("server: {e}")))?;
    tracing::info!("stopping: flushing and closing logs");
    let _ = stop_tx.send(true);
    let _ = background.await;
    let _ = membership.await;
    let _ = replicas.await;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close())
        .await
        .map_err(|e| ServerError::Other(e.to_string()))??;
    controller.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Asks the controller to move this broker's leaderships (the same transition as fencing:
/// a new leader from the rest of each ISR, with a new leader epoch) and waits, at most 15 s,
/// until the metadata shows it leads nothing that has another in-sync replica.
async fn controlled_shutdown(controller: &Controller, node_id: u64) {
    let others = controller.metadata().brokers.len() > 1;
    if !others {
        return;
    }
    tracing::info!("controlled shutdown: moving leaderships to other in-sync replicas");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    match tokio::time::timeout_at(
        deadline,
        controller.propose(MetadataCommand::FenceBroker { id: node_id }),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "controlled shutdown: the controller refused; stopping anyway");
            return;
        }
        Err(_) => {
            tracing::warn!("controlled shutdown: the controller did not answer; stopping anyway");
            return;
        }
    }
    let mut meta = controller.subscribe();
    loop {
        let still_leading = meta.borrow().topics.values().any(|t| {
            t.partitions
                .iter()
                .any(|p| p.leader == node_id && p.isr.len() > 1)
        });
        if !still_leading {
            tracing::info!("controlled shutdown: leaderships moved");
            return;
        }
        if tokio::time::timeout_at(deadline, meta.changed())
            .await
            .is_err()
        {
            tracing::warn!("controlled shutdown: leaderships did not all move within 15 s");
            return;
        }
    }
}

/// Registers this broker, retrying with backoff until the controller has a quorum.
async fn membership(
    controller: Arc<Controller>,
    config: Config,
    registered: Arc<std::sync::atomic::AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = std::time::Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        match register(&controller, &config).await {
            Ok(()) => {
                registered.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(node_id = config.node_id, "registered with the controller");
                break;
            }
            Err(e) => {
                attempts += 1;
                if attempts == 1 || attempts.is_power_of_two() {
                    tracing::warn!(error = %e, attempts, "cannot register with the controller yet; retrying");
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
    }
    // Heartbeats keep this broker alive (unfenced) in the active controller's eyes.
    let mut tick = tokio::time::interval(config.broker_heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                if let Err(e) = controller.broker_heartbeat(config.node_id).await {
                    tracing::debug!(error = %e, "broker heartbeat failed");
                }
            }
        }
    }
}

/// Registers this broker with the controller (idempotent; updates a changed address).
async fn register(controller: &Controller, config: &Config) -> Result<(), ServerError> {
    // A broker that is not a voter first joins the metadata log as a learner.
    let voter = config.voters.iter().any(|(id, _)| *id == config.node_id);
    if !voter && !controller.is_member() {
        controller
            .join_as_learner(&config.voters, &config.advertise)
            .await?;
        // Wait for the metadata log to reach this node before proposing through it.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while controller.leader().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let known = controller
        .metadata()
        .brokers
        .get(&config.node_id)
        .map(|b| b.address.clone());
    if known.as_deref() != Some(config.advertise.as_str()) {
        let r = controller
            .propose(MetadataCommand::RegisterBroker {
                id: config.node_id,
                address: config.advertise.clone(),
            })
            .await?;
        if let CommandResult::Refused(e) = r {
            return Err(ServerError::Other(format!("registering broker: {e}")));
        }
    }
    Ok(())
}

async fn background(
    broker: Arc<Broker>,
    groups: Arc<GroupService>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = broker.config.clone();
    let flush_every = match cfg.log.flush {
        FlushPolicy::Interval(d) => Some(d),
        _ => None,
    };
    let mut flush_tick =
        tokio::time::interval(flush_every.unwrap_or(std::time::Duration::from_secs(3600)));
    let mut checkpoint_tick = tokio::time::interval(cfg.recovery_point_interval);
    let mut retention_tick = tokio::time::interval(cfg.retention_check_interval);
    // Session expiry is checked this often (a tenth of the session timeout, at least 100 ms).
    let mut groups_tick = tokio::time::interval(std::time::Duration::from_millis(
        (cfg.groups.session_timeout_ms / 10).max(100),
    ));
    for t in [
        &mut flush_tick,
        &mut checkpoint_tick,
        &mut retention_tick,
        &mut groups_tick,
    ] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = flush_tick.tick(), if flush_every.is_some() => {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for p in b.open_partitions() {
                        if let Err(e) = p.flush_now() {
                            tracing::warn!(partition = %p.tp.dir_name(), error = %e, "flush failed");
                            b.logs.report_error(&p.tp, &e);
                        }
                    }
                }).await;
            }
            _ = groups_tick.tick() => groups.sweep().await,
            _ = checkpoint_tick.tick() => {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || b.checkpoint_all()).await;
            }
            _ = retention_tick.tick() => {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let n = b.logs.apply_retention(crate::broker::partition::now_ms());
                    if n > 0 {
                        tracing::info!(segments = n, "retention deleted segments");
                    }
                }).await;
            }
        }
    }
}
