//! Error text for people: what the binaries print and the config errors they show.

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose
/// text the line already holds (a wrapper that repeats its source's message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// A binary's exit: success, or the error on one line (`error: …`, each cause once, no
/// backtrace — it is for the operator) and a failure status.
pub fn exit<E>(result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The innermost cause of an error (e.g. `Connection refused (os error 111)` under a
/// client library's generic "error sending request").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// A YAML error message at `path` without a leading copy of the path's parent that the
/// YAML library puts there (`output: unknown field …` at `output.lingr_ms`).
pub fn config_message(path: &str, message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && path.starts_with(head) => rest.to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("storage: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("invalid setting data_dirs: /mnt/x does not exist")]
    struct Inner;

    #[test]
    fn repeated_causes_are_left_out() {
        assert_eq!(
            error_chain(&Outer(Inner)),
            "storage: invalid setting data_dirs: /mnt/x does not exist"
        );
    }

    #[test]
    fn parent_path_is_not_repeated() {
        assert_eq!(
            config_message("output.lingr_ms", "output: unknown field `lingr_ms`"),
            "unknown field `lingr_ms`"
        );
        assert_eq!(
            config_message("listen", "invalid type: map"),
            "invalid type: map"
        );
    }
}
