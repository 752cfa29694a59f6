//! The node: a collector's lifecycle around its broker and front ends.
//!
//! Start order: recover storage, start the controller, build the broker and group
//! services, serve the HTTP front end, register this broker in the background (`/health`
//! says `starting` until then), then heartbeat. Shutdown: stop heartbeating, move
//! leaderships away (controlled shutdown), stop accepting, finish in-flight requests, flush
//! and checkpoint, close every log and write the clean-shutdown markers, stop the
//! controller. Timers: flush interval, checkpoints, retention, group session expiry.
//!
//! Invariant: owns no request handling; it wires the services to the front ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Semaphore;

use crate::broker::Broker;
use crate::config::Config;
use crate::controller::state::{CommandResult, MetadataCommand};
use crate::controller::{Controller, ControllerConfig};
use crate::groups::GroupService;
use crate::metrics::Metrics;
use crate::server::AppState;
use crate::server::listener::ListenerLimits;
use crate::server::tls::NodeTls;
use crate::storage::{FlushPolicy, LogManager};

/// How long a node that stops itself (a failed fsync, its Raft core gone) may take to hand
/// off its leaderships and close before it exits regardless.
const FATAL_STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(25);

/// How long a controlled shutdown waits for its leaderships to move.
const CONTROLLED_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long a new learner waits to see a controller leader before proposing through it.
const LEARNER_CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often that wait looks.
const LEARNER_CATCH_UP_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// Pauses between registration attempts while the controller has no quorum.
const REGISTER_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(100);
const REGISTER_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// The flush timer's period when the flush policy has no interval (it then never fires).
const NO_FLUSH_TIMER: std::time::Duration = std::time::Duration::from_secs(3600);

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

/// Runs a collector until `shutdown` resolves. `on_listening` is called with the bound
/// address (useful with port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send,
) -> Result<(), ServerError> {
    raise_open_files_limit();
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
    let tls = match &config.tls {
        Some(section) => Some(Arc::new(
            NodeTls::load(section.clone()).map_err(|e| ServerError::Other(format!("tls: {e}")))?,
        )),
        None => None,
    };
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
    // The Kafka listener binds now too, so a port in use fails the start, and a port chosen
    // by the OS is known before registering.
    let kafka_listener = match &mut config.kafka {
        Some(k) => {
            let l = tokio::net::TcpListener::bind(k.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: k.listen,
                    source,
                })?;
            let bound = l.local_addr().map_err(|source| ServerError::Bind {
                addr: k.listen,
                source,
            })?;
            if k.advertise.is_none() {
                k.advertise = Some(bound.to_string());
            }
            tracing::info!(%bound, "Kafka listener bound");
            Some(l)
        }
        None => None,
    };
    // 2. Start the controller (its Raft log lives beside the first data directory's data).
    let controller = Controller::start(ControllerConfig {
        node_id: config.node_id,
        advertise: config.advertise.clone(),
        voters: config.voters.clone(),
        dir: config.data_dirs[0].join("__controller"),
        broker_session_timeout: config.broker_session_timeout,
        broker_heartbeat_interval: config.broker_heartbeat_interval,
        tls: tls.as_ref().map(|t| t.client_config()),
        dial_overrides: config.dial_overrides.clone(),
    })
    .await?;
    let security = Arc::new(
        crate::auth::Security::from_config(&config)
            .map_err(|e| ServerError::Other(format!("tokens_file: {e}")))?,
    );
    let sasl_users = match &config.sasl_users_file {
        Some(f) => Some(Arc::new(
            crate::kafka::sasl::SaslUsers::load(f)
                .map_err(|e| ServerError::Other(format!("sasl_users_file: {e}")))?,
        )),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let broker = Arc::new(
        Broker::new(
            config.clone(),
            logs,
            controller.clone(),
            metrics.clone(),
            tls.as_ref().map(|t| t.client_config()),
            security.clone(),
        )
        .map_err(|e| ServerError::Other(e.to_string()))?,
    );
    let groups = Arc::new(GroupService::new(broker.clone()));
    let state = Arc::new(AppState {
        broker: broker.clone(),
        groups: groups.clone(),
        metrics: metrics.clone(),
        inflight_bytes: Arc::new(Semaphore::new(
            config
                .limits
                .max_in_flight_bytes
                .min(u64::from(u32::MAX) / 2) as usize,
        )),
        registered: Arc::new(AtomicBool::new(false)),
        auth_failures_log: Default::default(),
    });
    let registered = state.registered.clone();
    let app = crate::server::router(state.clone())
        .merge(controller.router())
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::server::authenticate,
        ));
    // Background work: flush timer, checkpoints, retention.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Heartbeats stop first on shutdown, so they do not undo the controlled shutdown.
    let (hb_stop_tx, hb_stop_rx) = tokio::sync::watch::channel(false);
    // Registration needs a controller quorum, which in a cluster needs the other nodes'
    // Raft routes: serve first, register in the background (`/health` says "starting").
    let membership = tokio::spawn(membership(
        controller.clone(),
        config.clone(),
        broker.incarnation,
        registered,
        hb_stop_rx,
    ));
    let background = tokio::spawn(background(broker.clone(), groups.clone(), stop_rx.clone()));
    let replicas = tokio::spawn(crate::broker::replica::run(broker.clone(), stop_rx.clone()));
    let kafka = match (kafka_listener, config.kafka.clone()) {
        (Some(l), Some(k)) => {
            let server = Arc::new(crate::kafka::KafkaServer {
                broker: broker.clone(),
                groups: groups.clone(),
                config: k,
                tls: tls.clone(),
                sasl: sasl_users.clone(),
            });
            Some(tokio::spawn(crate::kafka::serve(
                l,
                server,
                stop_rx.clone(),
            )))
        }
        _ => None,
    };
    let watch_signals = tokio::spawn(signals_and_warnings(
        tls.clone(),
        security.clone(),
        sasl_users.clone(),
        config.exposed_plaintext,
        stop_rx.clone(),
    ));
    // 3. Serve.
    tracing::info!(%local, node_id = config.node_id, tls = tls.is_some(), "collector listening");
    on_listening(local);
    // Controlled shutdown: before it stops serving, the broker hands its leaderships to
    // other ISR members, so clients only see `not_leader` and follow the metadata.
    //
    // A node also stops itself when it cannot go on safely: its Raft core stopped (a failed
    // fsync of the metadata log), an fsync of a partition failed (after which no later
    // fsync proves anything about the pages the kernel may have dropped, and what the node
    // holds in memory may describe them), or every data directory is offline. It hands
    // its leaderships off first, like any controlled shutdown, then exits with an error so
    // the service manager restarts it, and recovery trusts only what is on disk.
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let controlled = {
        let (controller, node_id) = (controller.clone(), config.node_id);
        let storage = broker.logs.failures();
        let fatal = fatal.clone();
        async move {
            let reason = tokio::select! {
                () = shutdown => None,
                r = controller.failed() => Some(format!("the controller stopped: {r}")),
                r = storage_failure(storage) => Some(r),
            };
            let failing = reason.is_some();
            if let Some(r) = reason {
                tracing::error!(reason = %r, "stopping: this node cannot go on safely; it hands off its leaderships and exits with an error (restart it: recovery trusts only what is on disk)");
                *shared::sys::lock(&fatal) = Some(r);
                // The orderly stop is best effort: a node that cannot go on must not linger
                // (a wedged request, a hung disk). A plain thread, outside the runtime.
                std::thread::spawn(|| {
                    std::thread::sleep(FATAL_STOP_DEADLINE);
                    tracing::error!(
                        "stopping: not stopped {FATAL_STOP_DEADLINE:?} after it began; exiting now"
                    );
                    std::process::exit(1);
                });
            }
            let _ = hb_stop_tx.send(true);
            controlled_shutdown(&controller, node_id).await;
            if failing {
                tracing::warn!("stopping: controlled shutdown over; finishing open requests");
            }
        }
    };
    let l = &config.limits;
    let limits = ListenerLimits {
        connections_max: l.connections_max,
        connections_per_address_max: l.connections_per_address_max,
        header_read_timeout: std::time::Duration::from_millis(l.header_read_timeout_ms),
        tls_handshake_timeout: std::time::Duration::from_millis(l.tls_handshake_timeout_ms),
    };
    crate::server::listener::serve(listener, app, tls, limits, metrics, controlled).await;
    if shared::sys::lock(&fatal).is_some() {
        tracing::warn!("stopping: requests finished; closing the logs");
    } else {
        tracing::info!("stopping: flushing and closing logs");
    }
    let _ = stop_tx.send(true);
    let _ = watch_signals.await;
    let _ = background.await;
    let _ = membership.await;
    let _ = replicas.await;
    if let Some(k) = kafka {
        let _ = k.await;
    }
    let b = broker.clone();
    let closed = tokio::task::spawn_blocking(move || b.close())
        .await
        .map_err(|e| ServerError::Other(e.to_string()))?;
    controller.shutdown().await;
    if let Some(reason) = shared::sys::lock(&fatal).take() {
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the logs");
        }
        return Err(ServerError::Other(format!("stopped: {reason}")));
    }
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Resolves with what happened once the storage says the node cannot go on.
async fn storage_failure(mut failures: tokio::sync::watch::Receiver<Option<String>>) -> String {
    let failure = match failures.wait_for(Option::is_some).await {
        Ok(f) => f.clone(),
        // The storage is gone with the broker: nothing more will be reported.
        Err(_) => None,
    };
    match failure {
        Some(f) => f,
        None => std::future::pending().await,
    }
}

/// Raises the open-files soft limit to the hard one: every connection (up to
/// `limits.connections_max` plus the Kafka listener's) and every open segment file is a
/// descriptor, and a soft limit of 1024 would refuse connections long before the caps.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (l.current, l.maximum) else {
        return;
    };
    if soft >= hard {
        return;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    ) {
        Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files limit"),
        Err(e) => tracing::warn!(limit = soft, error = %e, "cannot raise the open-files limit"),
    }
}

/// How often a node serving plaintext beyond loopback says so again.
const PLAINTEXT_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Reloads the TLS files and the token file on SIGHUP; warns at start and every hour while a listener serves
/// plaintext beyond loopback (`insecure_plaintext`).
async fn signals_and_warnings(
    tls: Option<Arc<NodeTls>>,
    security: Arc<crate::auth::Security>,
    sasl_users: Option<Arc<crate::kafka::sasl::SaslUsers>>,
    exposed_plaintext: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; certificates will not be reloaded");
            None
        }
    };
    let mut warn = tokio::time::interval(PLAINTEXT_WARNING_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = warn.tick(), if exposed_plaintext => {
                tracing::warn!("insecure_plaintext: serving a non-loopback address without TLS; anyone who can reach it can read and write every topic");
            }
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                match &tls {
                    Some(t) => match t.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: TLS files not reloaded; still serving the previous certificate"),
                    },
                    None => tracing::info!("SIGHUP: no tls section; no certificate to reload"),
                }
                if let Some(users) = &sasl_users {
                    match users.reload() {
                        Ok(n) => tracing::info!(credentials = n, "SIGHUP: sasl_users_file reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: sasl_users_file not reloaded; still accepting the previous credentials"),
                    }
                }
                if let Some(tokens) = &security.tokens {
                    match tokens.reload() {
                        Ok(n) => tracing::info!(tokens = n, "SIGHUP: tokens_file reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: tokens_file not reloaded; still accepting the previous tokens"),
                    }
                }
            }
        }
    }
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
    let deadline = tokio::time::Instant::now() + CONTROLLED_SHUTDOWN_TIMEOUT;
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
        match tokio::time::timeout_at(deadline, meta.changed()).await {
            Ok(Ok(())) => {}
            // The Raft core stopped (a failed fsync of its log): no more metadata will come.
            // (Taking this for a change spun here forever: found by the campaign's failing
            // fsyncs.)
            Ok(Err(_)) => {
                tracing::warn!(
                    "controlled shutdown: this node's controller stopped; stopping anyway"
                );
                return;
            }
            Err(_) => {
                tracing::warn!("controlled shutdown: leaderships did not all move within 15 s");
                return;
            }
        }
    }
}

/// Registers this broker, retrying with backoff until the controller has a quorum.
async fn membership(
    controller: Arc<Controller>,
    config: Config,
    incarnation: u64,
    registered: Arc<AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut delays = client::RetryPolicy::new(REGISTER_RETRY_INITIAL, REGISTER_RETRY_MAX).delays();
    let mut attempts = 0u32;
    loop {
        match register(&controller, &config, incarnation).await {
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
        let delay = delays.next().unwrap_or(REGISTER_RETRY_MAX);
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(delay) => {}
        }
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
async fn register(
    controller: &Controller,
    config: &Config,
    incarnation: u64,
) -> Result<(), ServerError> {
    // A broker that is not a voter first joins the metadata log as a learner.
    let voter = config.voters.iter().any(|(id, _)| *id == config.node_id);
    if !voter && !controller.is_member() {
        controller
            .join_as_learner(&config.voters, &config.advertise)
            .await?;
        // Wait for the metadata log to reach this node before proposing through it.
        let deadline = tokio::time::Instant::now() + LEARNER_CATCH_UP_TIMEOUT;
        while controller.leader().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(LEARNER_CATCH_UP_POLL).await;
        }
    }
    let kafka_address = config.kafka.as_ref().and_then(|k| k.advertise.clone());
    // Registered at every start: the new incarnation is how this broker later knows its
    // metadata has caught up with what was decided while it was down.
    let known = controller
        .metadata()
        .brokers
        .get(&config.node_id)
        .map(|b| (b.address.clone(), b.kafka_address.clone(), b.incarnation));
    if known != Some((config.advertise.clone(), kafka_address.clone(), incarnation)) {
        let r = controller
            .propose(MetadataCommand::RegisterBroker {
                id: config.node_id,
                address: config.advertise.clone(),
                kafka_address,
                incarnation,
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
    let mut flush_tick = tokio::time::interval(flush_every.unwrap_or(NO_FLUSH_TIMER));
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
                    // A forward step of the wall clock must not delete that much data at once.
                    let n = b.logs.apply_retention(shared::sys::expiry_now_ms());
                    if n > 0 {
                        tracing::info!(segments = n, "retention deleted segments");
                    }
                }).await;
            }
        }
    }
}
