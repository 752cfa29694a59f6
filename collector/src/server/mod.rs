//! The HTTP front end: the router (one port for the client API, admin, metrics, and the
//! controller's internal routes), its middleware (metrics per route, JSON errors, the
//! in-flight request limit) and the handlers. The node's lifecycle is `crate::node`.
//!
//! Invariant: the only module of the collector that knows axum or HTTP statuses; handlers
//! translate `api` types to service calls and typed errors to statuses, nothing more.

pub mod body;
pub mod error;
pub mod handlers;
pub mod listener;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::metrics::{CodeLabels, RouteLabels, RouteOnly};
use error::ErrorTag;
pub use handlers::AppState;

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
    if let Some(ErrorTag(code)) = resp.extensions().get::<ErrorTag>() {
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
        || resp.extensions().get::<ErrorTag>().is_some()
    {
        return resp;
    }
    let (_, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    error::ApiError::with_status(status, message).into_response()
}

/// How often failed authentications are logged (they can come in floods).
const AUTH_FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Authentication, in front of every route: the caller's principal from its bearer token
/// or verified client certificate, attached to the request as a [`crate::auth::Caller`] the
/// handlers pass to the services (which authorize). Bad credentials, or none where ACLs are
/// enforced, get 401 (`/health` needs none, nor `/metrics` without ACLs); `/internal` routes accept only
/// brokers whenever brokers can prove who they are (the listener asks for certificates).
pub async fn authenticate(
    State(s): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    use crate::auth::{Caller, Principal, Unauthenticated};
    let peer = req.extensions().get::<listener::Peer>().cloned();
    let host = peer.as_ref().map_or_else(
        || "unknown".to_owned(),
        |p| p.addr.ip().to_canonical().to_string(),
    );
    let path = req.uri().path().to_owned();
    // `/health` is always open; `/metrics` names topics and groups, so with ACLs enforced it
    // needs credentials too (Prometheus can send a bearer token or a certificate).
    let open = path == api::routes::HEALTH
        || (path == api::routes::METRICS && !s.broker.security.authorizer.enforcing());
    let bearer = match req.headers().get(axum::http::header::AUTHORIZATION) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) => Some(t.trim().to_owned()),
            None => {
                return error::ApiError::new(
                    api::ErrorCode::Unauthenticated,
                    "the Authorization header must be `Bearer <token>`",
                )
                .into_response();
            }
        },
    };
    let security = &s.broker.security;
    let certificate = peer.as_ref().and_then(|p| p.certificate.clone());
    let principal =
        match security.authenticate(bearer.as_deref(), certificate.as_deref().map(Vec::as_slice)) {
            Ok(p) => p,
            Err(Unauthenticated::Missing) if open => Principal::anonymous(),
            Err(e) => {
                s.metrics.authentication_failures.inc();
                if s.auth_failures_log.allow(AUTH_FAILURE_LOG_EVERY) {
                    tracing::warn!(peer = %host, %path, reason = %e, "authentication failed");
                }
                return error::ApiError::new(api::ErrorCode::Unauthenticated, e.to_string())
                    .into_response();
            }
        };
    if path.starts_with("/internal/") && security.internal_brokers_only && !principal.is_broker() {
        return error::ApiError::new(
            api::ErrorCode::Forbidden,
            format!("{principal} may not call {path}: internal routes accept only brokers"),
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller { principal, host });
    next.run(req).await
}

/// The client and admin routes. The client API (`/v1/…`) shares one limit of
/// `max_in_flight_requests` requests handled at once (more wait); `/health`, `/metrics` and
/// the brokers' own replication routes stay outside it, so a saturated broker still answers
/// probes and keeps its followers fed.
pub fn router(state: Arc<AppState>) -> Router {
    let max_requests = state.broker.config.limits.max_in_flight_requests;
    // A follower's first session request lists every partition it follows here.
    let internal_body_max =
        usize::try_from(state.broker.config.limits.max_request_bytes).unwrap_or(usize::MAX);
    use api::routes as r;
    use handlers as h;
    // One semaphore for every client route (a per-route limit would multiply it).
    let client = Router::new()
        .route(r::METADATA, get(h::metadata))
        .route(r::CLUSTER, get(h::cluster))
        .route(r::TOPICS, get(h::list_topics).post(h::create_topic))
        .route(r::TOPIC, get(h::describe_topic).delete(h::delete_topic))
        .route(r::PRODUCERS, post(h::allocate_producer))
        .route(r::PRODUCER, get(h::producer_state))
        .route(r::BATCHES, post(h::produce).get(h::fetch))
        .route(r::RECORDS_PRODUCE, post(h::produce_json))
        .route(r::RECORDS_FETCH, get(h::fetch_json))
        .route(r::GROUPS, get(h::list_groups))
        .route(r::GROUP, get(h::describe_group))
        .route(r::GROUP_HEARTBEAT, post(h::heartbeat))
        .route(
            r::GROUP_OFFSETS,
            get(h::group_offsets).post(h::commit_offsets),
        )
        .route(r::GROUP_RESET, post(h::reset_offsets))
        .route(r::ACLS, get(h::list_acls).post(h::create_acls))
        .route(r::ACLS_DELETE, post(h::delete_acls))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max_requests))
        // Outside the limit: a request counts only once its body is in.
        .layer(middleware::from_fn_with_state(state.clone(), body::receive));
    Router::new()
        .route(r::HEALTH, get(h::health))
        .route(r::METRICS, get(h::metrics))
        .route(r::PARTITION_OFFSETS, get(h::partition_offsets))
        .route(
            r::REPLICA_FETCH,
            post(h::replica_fetch).layer(axum::extract::DefaultBodyLimit::max(internal_body_max)),
        )
        .route(
            r::REPLICA_EPOCH_ENDS,
            post(h::replica_epoch_ends)
                .layer(axum::extract::DefaultBodyLimit::max(internal_body_max)),
        )
        .route(r::REPLICA_CHECKSUM, get(h::replica_checksum))
        .merge(client)
        .fallback(|| async { error::ApiError::new(api::ErrorCode::NotFound, "no such route") })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}
