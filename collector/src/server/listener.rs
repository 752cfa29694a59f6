//! The HTTP listener: accepts connections, enforces the connection caps (in total and per
//! client address), runs the TLS handshake when TLS is on, and serves HTTP/1.1 on each
//! connection with a header read timeout (which also closes idle keep-alive connections).
//!
//! Invariants: a connection over a cap is closed at once, before any byte is read; a
//! handshake or a request head that does not arrive in time closes the connection; every
//! request carries the [`Peer`] it came from (address, verified certificate).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::tls::NodeTls;
use crate::metrics::Metrics;

/// After a failed accept (out of file descriptors and the like), before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long a graceful stop waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Who sent a request: the TCP peer and, over TLS, what its certificate proved.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client certificate (DER), when one was shown.
    pub certificate: Option<Arc<Vec<u8>>>,
}

/// The listener's limits, each from the config.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    /// Time to send a request's head, and the longest idle time between requests.
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
}

/// Connections open per client address.
#[derive(Debug, Default)]
pub struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A place for one more connection from `ip`, if it has fewer than `max`.
    pub fn take(table: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut t = shared::sys::lock(&table.0);
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut t = shared::sys::lock(&self.table.0);
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Limits how often one kind of refusal is logged (it can come in floods).
#[derive(Debug, Default)]
pub struct RateLimitedLog(Mutex<Option<std::time::Instant>>);

impl RateLimitedLog {
    /// Whether to log now (at most once per `every`).
    pub fn allow(&self, every: Duration) -> bool {
        let mut last = shared::sys::lock(&self.0);
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets
/// open connections finish their requests (at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<NodeTls>>,
    limits: ListenerLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let total = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = Arc::new(PerAddress::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refusals = Arc::new(RateLimitedLog::default());
    let handshakes = Arc::new(RateLimitedLog::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP listener: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(slot) = total.clone().try_acquire_owned() else {
            metrics.connections_refused.inc();
            if refusals.allow(REFUSAL_LOG_EVERY) {
                tracing::warn!(peer = %addr, max = limits.connections_max, "connection refused: limits.connections_max open");
            }
            continue;
        };
        let Some(address_slot) =
            PerAddress::take(&per_address, addr.ip(), limits.connections_per_address_max)
        else {
            metrics.connections_refused.inc();
            if refusals.allow(REFUSAL_LOG_EVERY) {
                tracing::warn!(peer = %addr, max = limits.connections_per_address_max, "connection refused: limits.connections_per_address_max open from this address");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, tls, limits, metrics, handshakes) = (
            app.clone(),
            tls.clone(),
            limits.clone(),
            metrics.clone(),
            handshakes.clone(),
        );
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slots = (slot, address_slot);
            metrics.http_connections.inc();
            match tls {
                None => {
                    let peer = Peer {
                        addr,
                        certificate: None,
                    };
                    serve_connection(stream, peer, app, &limits, watcher).await;
                }
                Some(tls) => {
                    let accept = tls.acceptor().accept(stream);
                    match tokio::time::timeout(limits.tls_handshake_timeout, accept).await {
                        Ok(Ok(s)) => {
                            let certificate = s
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| Arc::new(c.as_ref().to_vec()));
                            let peer = Peer { addr, certificate };
                            serve_connection(s, peer, app, &limits, watcher).await;
                        }
                        Ok(Err(e)) => {
                            metrics.tls_handshake_failures.inc();
                            if handshakes.allow(REFUSAL_LOG_EVERY) {
                                tracing::warn!(peer = %addr, error = %e, "TLS handshake failed");
                            }
                        }
                        Err(_) => {
                            metrics.tls_handshake_failures.inc();
                            if handshakes.allow(REFUSAL_LOG_EVERY) {
                                tracing::warn!(peer = %addr, timeout = ?limits.tls_handshake_timeout, "TLS handshake timed out");
                            }
                        }
                    }
                }
            }
            metrics.http_connections.dec();
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {DRAIN_TIMEOUT:?} after stopping; closing them");
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: Peer,
    app: Router,
    limits: &ListenerLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
