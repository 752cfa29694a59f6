//! Request bodies are received before a request enters the in-flight request budget, so
//! clients that stall mid-body hold a connection, never a request slot.
//!
//! Each body is read here, in front of `max_in_flight_requests`: a declared length over
//! `max_request_bytes` is refused before a byte is read; bytes are counted against
//! `max_in_flight_bytes` as they arrive (a stalled body holds only what it sent); each
//! chunk must come within `body_read_timeout_ms` of the previous one and the whole body at
//! `body_min_bytes_per_sec` or better after that grace, else the request gets 408 and the
//! connection is closed. The handler then gets the body whole, and the bytes stay counted
//! until its reply is ready.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::AppState;
use super::error::ApiError;

/// Whether a request carries a body to receive.
fn has_body(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The most a body buffer reserves before bytes arrive.
const BUF_START: u64 = 64 * 1024;

fn timed_out(what: &str) -> Response {
    let mut r = ApiError::new(api::ErrorCode::BodyTimeout, what.to_owned()).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

pub async fn receive(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !has_body(&req) {
        return next.run(req).await;
    }
    let limits = &s.broker.config.limits;
    let max = limits.max_request_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > max
    {
        return ApiError::new(
            api::ErrorCode::RequestTooLarge,
            format!("request body of {n} bytes exceeds max_request_bytes {max}"),
        )
        .into_response();
    }
    let idle = Duration::from_millis(limits.body_read_timeout_ms);
    let min_rate = limits.body_min_bytes_per_sec.max(1);
    let expected = declared.unwrap_or(max);
    let deadline = tokio::time::Instant::now()
        + idle
        + Duration::from_secs_f64(expected as f64 / min_rate as f64);
    let (parts, mut body) = req.into_parts();
    // Grown as bytes arrive (and are counted), not reserved for a declared length.
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(BUF_START) as usize);
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    loop {
        let wait = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + idle),
            body.frame(),
        );
        let frame = match wait.await {
            Err(_) => {
                s.metrics.body_timeouts.inc();
                return timed_out(&format!(
                    "the request body did not arrive in time ({} of {} bytes; body_read_timeout_ms {}, body_min_bytes_per_sec {min_rate})",
                    buf.len(),
                    declared.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                    limits.body_read_timeout_ms
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return ApiError::new(
                    api::ErrorCode::BadBody,
                    format!("reading the request body failed: {e}"),
                )
                .into_response();
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if (buf.len() + data.len()) as u64 > max {
            return ApiError::new(
                api::ErrorCode::RequestTooLarge,
                format!("request body of more than {max} bytes exceeds max_request_bytes"),
            )
            .into_response();
        }
        // Counted as it arrives; waiting for budget counts against the deadline too.
        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
        if n > 0 {
            let acquire = s.inflight_bytes.clone().acquire_many_owned(n);
            let permit = match tokio::time::timeout_at(deadline, acquire).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => {
                    return ApiError::from(crate::broker::BrokerError::ShuttingDown)
                        .into_response();
                }
                Err(_) => {
                    s.metrics.body_timeouts.inc();
                    return timed_out(
                        "no in-flight byte budget (max_in_flight_bytes) for the body in time",
                    );
                }
            };
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        buf.extend_from_slice(&data);
    }
    let req = Request::from_parts(parts, Body::from(buf));
    let resp = next.run(req).await;
    drop(held);
    resp
}
