//! The Kafka protocol front end: existing Kafka clients produce to and consume from the
//! collector. A second listener over the same broker services as the HTTP API — it
//! translates Kafka requests to service calls and `BrokerError`s to Kafka error codes, and
//! never re-implements a service. Record batches pass through as the bytes clients sent
//! and the bytes stored (no re-encoding).
//!
//! - [`serve`]: the accept loop (at most `kafka_connections_max` connections) and one task
//!   per connection: size-prefixed frames of at most `kafka_request_bytes_max`, handled one
//!   at a time, so replies leave in request order (as Kafka brokers do).
//! - [`versions`]: the APIs and versions served, advertised by ApiVersions.
//! - [`request`]: a frame checked (key, version) and decoded into a typed request, with no
//!   server at hand (what the fuzz target drives).
//! - [`handlers`]: one function per API.
//! - [`sasl`]: SaslHandshake / SaslAuthenticate (PLAIN, SCRAM-SHA-256/512) against the
//!   users file; `security`: those two and DescribeAcls / CreateAcls / DeleteAcls over the ACL service.
//! - [`consumer_groups`]: KIP-848 ConsumerGroupHeartbeat / ConsumerGroupDescribe over the
//!   server-side group coordinator `collector tail` members use.
//!
//! Invariant: a frame that cannot be decoded, an unknown API key or an unsupported version
//! closes the connection with a log line naming it (ApiVersions excepted: a too-new
//! version is answered in v0 framing, as clients expect); nothing here panics on bytes
//! from the network.

mod consumer_groups;
mod errors;
mod handlers;
pub mod request;
pub mod sasl;
mod security;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::broker::Broker;
use crate::config::KafkaConfig;
use crate::groups::GroupService;
use crate::metrics::{KafkaErrorLabels, KafkaLabels};

/// What the Kafka front end needs: the services, and its own address for Metadata.
#[derive(Debug)]
pub struct KafkaServer {
    pub broker: Arc<Broker>,
    pub groups: Arc<GroupService>,
    pub config: KafkaConfig,
    /// TLS (Kafka's SSL listener), when the node has a `tls:` section.
    pub tls: Option<Arc<crate::server::tls::NodeTls>>,
    /// SASL users (`sasl_users_file`): when set, a connection without a client
    /// certificate must authenticate before anything but ApiVersions and SASL.
    pub sasl: Option<Arc<sasl::SaslUsers>>,
}

/// One connection's identity: its principal (from its certificate, then SASL) and its SASL
/// exchange so far.
#[derive(Debug)]
pub struct Conn {
    pub principal: crate::auth::Principal,
    /// Authenticated by certificate or SASL.
    pub authenticated: bool,
    pub sasl: sasl::Exchange,
    /// Close once the reply is sent (after a failed authentication, as Kafka does).
    pub close_after_reply: bool,
}

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    #[error("frame of {0} bytes is shorter than a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownKey(i16),
    #[error("API {0:?} is not served")]
    NotServed(ApiKey),
    #[error("{key:?} version {version} is not served (served: {min}..={max})")]
    Version {
        key: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("cannot decode {key:?} v{version}: {message}")]
    Decode {
        key: ApiKey,
        version: i16,
        message: String,
    },
    #[error("cannot encode the {key:?} v{version} reply: {message}")]
    Encode {
        key: ApiKey,
        version: i16,
        message: String,
    },
    #[error("{0:?} before SASL authentication (this listener requires it)")]
    NotAuthenticated(ApiKey),
    #[error("SASL authentication failed")]
    AuthenticationFailed,
}

/// A decoded request's context.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

/// Who sent a request: the client id from its header and the address it came from (shown
/// for group members).
#[derive(Debug, Clone)]
pub struct Who {
    pub client_id: String,
    pub host: String,
    /// The connection's principal (certificate or SASL) and address, for the services.
    pub caller: crate::auth::Caller,
}

impl Req {
    /// Encodes `body` as this request's reply frame (header + body).
    pub fn reply<R: Encodable>(&self, body: &R) -> Result<Bytes, Close> {
        encode_reply(
            self.correlation_id,
            self.key.response_header_version(self.version),
            body,
            self.version,
        )
        .map_err(|message| Close::Encode {
            key: self.key,
            version: self.version,
            message,
        })
    }

    pub fn decode<T: Decodable>(&self, buf: &mut Bytes) -> Result<T, Close> {
        T::decode(buf, self.version).map_err(|e| Close::Decode {
            key: self.key,
            version: self.version,
            message: e.to_string(),
        })
    }
}

fn encode_reply<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &R,
    version: i16,
) -> Result<Bytes, String> {
    // Sized once: a fetch reply carries megabytes of record batches.
    let size = body.compute_size(version).map_err(|e| e.to_string())?;
    let mut out = BytesMut::with_capacity(size + 16);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, header_version)
        .map_err(|e| e.to_string())?;
    body.encode(&mut out, version).map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

impl KafkaServer {
    /// Counts an error code answered for `api`.
    pub fn count_error(&self, api: ApiKey, code: i16) {
        if code == 0 {
            return;
        }
        let error = kafka_protocol::error::ResponseError::try_from_code(code)
            .map_or_else(|| code.to_string(), |e| format!("{e:?}"));
        self.broker
            .metrics
            .kafka_errors
            .get_or_create(&KafkaErrorLabels {
                api: format!("{api:?}"),
                error,
            })
            .inc();
    }

    /// Handles one frame: `Ok(Some(reply))`, `Ok(None)` (acks=0 produce: no reply), or a
    /// reason to close the connection.
    async fn handle(
        &self,
        frame: Bytes,
        peer: SocketAddr,
        conn: &mut Conn,
    ) -> Result<Option<Bytes>, Close> {
        let (req, client_id, body) = match request::decode_frame(frame)? {
            request::Frame::TooNewApiVersions { correlation_id } => {
                return encode_reply(correlation_id, 0, &versions::unsupported_reply(), 0)
                    .map(Some)
                    .map_err(|message| Close::Encode {
                        key: ApiKey::ApiVersions,
                        version: 0,
                        message,
                    });
            }
            request::Frame::Request {
                req,
                client_id,
                body,
            } => (req, client_id, body),
        };
        self.broker
            .metrics
            .kafka_requests
            .get_or_create(&KafkaLabels {
                api: format!("{:?}", req.key),
                version: req.version,
            })
            .inc();
        let who = Who {
            client_id,
            host: peer.ip().to_canonical().to_string(),
            caller: crate::auth::Caller {
                principal: conn.principal.clone(),
                host: peer.ip().to_canonical().to_string(),
            },
        };
        if (self.sasl.is_some() || self.broker.security.authorizer.enforcing())
            && !conn.authenticated
            && !matches!(
                req.key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
        {
            return Err(Close::NotAuthenticated(req.key));
        }
        handlers::dispatch(self, req, &who, *body, conn).await
    }
}

/// Serves Kafka clients on `listener` until `stop` changes.
pub async fn serve(
    listener: TcpListener,
    server: Arc<KafkaServer>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(server.config.connections_max));
    let per_address = Arc::new(crate::server::listener::PerAddress::default());
    let per_address_max = server.broker.config.limits.connections_per_address_max;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                // One address may not take every slot (`connections_per_address_max`).
                let Some(address_slot) = crate::server::listener::PerAddress::take(
                    &per_address,
                    peer.ip(),
                    per_address_max,
                ) else {
                    server.broker.metrics.connections_refused.inc();
                    tracing::debug!(%peer, "Kafka connection refused: connections_per_address_max open from this address");
                    continue;
                };
                let (server, stop) = (server.clone(), stop.clone());
                let _ = stream.set_nodelay(true);
                conns.spawn(async move {
                    let _slots = (permit, address_slot);
                    match server.tls.clone() {
                        None => {
                            let conn = Conn {
                                principal: crate::auth::Principal::anonymous(),
                                authenticated: false,
                                sasl: sasl::Exchange::default(),
                                close_after_reply: false,
                            };
                            connection(stream, peer, &server, stop, conn).await;
                        }
                        Some(tls) => {
                            let accept = tls.acceptor().accept(stream);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                                Ok(Ok(s)) => {
                                    // The certificate's principal; without one the
                                    // connection is anonymous (until SASL, when offered).
                                    let principal = s
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|c| c.first())
                                        .and_then(|c| {
                                            crate::auth::certificate_principal(
                                                c.as_ref(),
                                                server.broker.security.certificate_name,
                                            )
                                        });
                                    let conn = Conn {
                                        authenticated: principal.is_some(),
                                        principal: principal
                                            .unwrap_or_else(crate::auth::Principal::anonymous),
                                        sasl: sasl::Exchange::default(),
                                        close_after_reply: false,
                                    };
                                    connection(s, peer, &server, stop, conn).await;
                                }
                                Ok(Err(e)) => {
                                    server.broker.metrics.tls_handshake_failures.inc();
                                    tracing::debug!(%peer, error = %e, "Kafka TLS handshake failed");
                                }
                                Err(_) => {
                                    server.broker.metrics.tls_handshake_failures.inc();
                                    tracing::debug!(%peer, "Kafka TLS handshake timed out");
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: report, pause, go on.
                tracing::warn!(error = %e, "Kafka listener: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

/// After a failed accept, before the next.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// A connection silent this long between requests is closed (Kafka's
/// `connections.max.idle.ms` default), so dead clients do not hold connection slots.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// Longest time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    server: &KafkaServer,
    mut stop: watch::Receiver<bool>,
    mut conn: Conn,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let gauge = &server.broker.metrics.kafka_connections;
    gauge.inc();
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut wr = BufWriter::new(wr);
    let max = server.config.request_bytes_max;
    loop {
        let size = tokio::select! {
            _ = stop.changed() => break,
            r = tokio::time::timeout(IDLE_TIMEOUT, rd.read_i32()) => match r {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => break, // closed by the client
                Err(_) => {
                    tracing::debug!(%peer, "Kafka connection idle past {IDLE_TIMEOUT:?}; closing");
                    break;
                }
            },
        };
        if size < 0 || size as u64 > max {
            tracing::warn!(%peer, size, max, "Kafka frame size out of range (kafka_request_bytes_max); closing the connection");
            break;
        }
        // Read as the bytes arrive: a length prefix alone reserves nothing.
        let mut frame = Vec::new();
        let mut body = (&mut rd).take(size as u64);
        // As for HTTP bodies: a grace, then a minimum rate.
        let limits = &server.broker.config.limits;
        let frame_timeout = std::time::Duration::from_millis(limits.body_read_timeout_ms)
            + std::time::Duration::from_secs_f64(
                size as f64 / limits.body_min_bytes_per_sec.max(1) as f64,
            );
        match tokio::time::timeout(frame_timeout, body.read_to_end(&mut frame)).await {
            Ok(Ok(n)) if n == size as usize => {}
            _ => {
                tracing::debug!(%peer, size, "Kafka connection closed mid-frame");
                break;
            }
        }
        match server.handle(Bytes::from(frame), peer, &mut conn).await {
            Ok(Some(reply)) => {
                let len = i32::try_from(reply.len()).unwrap_or(i32::MAX);
                let sent = async {
                    wr.write_i32(len).await?;
                    wr.write_all(&reply).await?;
                    wr.flush().await
                };
                if sent.await.is_err() || conn.close_after_reply {
                    break;
                }
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(%peer, reason = %why, "closing Kafka connection");
                break;
            }
        }
    }
    gauge.dec();
}
