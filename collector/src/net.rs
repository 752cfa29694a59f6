//! Describing network failures for people: what failed and its root cause.

/// "cannot connect: Connection refused (os error 111)", "timed out: …": the kind of failure
/// and the innermost cause, without the request URL (callers name the address).
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() || e.is_body() {
        "bad reply"
    } else {
        "request failed"
    };
    format!("{what}: {}", shared::report::root_cause(e))
}
