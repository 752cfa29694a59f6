//! The one retry policy: capped exponential backoff with random jitter (`backon`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

/// Delays between attempts: from `initial`, doubling, at most `max`, each with a random
/// jitter of up to the delay itself. Retries go on until the operation succeeds or fails
/// with an error not worth retrying (`max_attempts` caps them when set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: Option<usize>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            max_attempts: None,
        }
    }

    fn builder(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_jitter();
        match self.max_attempts {
            Some(n) => b.with_max_times(n),
            None => b.without_max_times(),
        }
    }

    /// The delays to sleep between attempts, for loops that wait on other things too.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.builder().build()
    }

    /// Runs `f` until it succeeds or fails with an error `retriable` refuses.
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        f: F,
        retriable: fn(&E) -> bool,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempts = 0u64;
        f.retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(retriable)
            .notify(|e: &E, after: Duration| {
                attempts += 1;
                if attempts == 1 || attempts.is_power_of_two() {
                    tracing::warn!(what, attempts, error = %e, retry_in = ?after, "retrying");
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = p.delays().take(12).collect();
        assert_eq!(d.len(), 12, "no attempt limit by default");
        for x in &d {
            // Jitter adds at most the delay itself.
            assert!(
                *x >= Duration::from_millis(100) && *x <= Duration::from_secs(4),
                "{x:?}"
            );
        }
        assert!(d[11] >= Duration::from_secs(2), "reaches the cap: {d:?}");
        let distinct: std::collections::BTreeSet<_> = d.iter().collect();
        assert!(distinct.len() > 6, "jittered: {d:?}");
    }

    #[tokio::test]
    async fn runs_until_success_and_stops_on_a_final_error() {
        let p = RetryPolicy::new(Duration::from_millis(1), Duration::from_millis(5));
        let mut n = 0;
        let r: Result<u32, String> = p
            .run(
                "test",
                || {
                    n += 1;
                    let k = n;
                    async move {
                        if k < 4 {
                            Err("later".to_owned())
                        } else {
                            Ok(k)
                        }
                    }
                },
                |_| true,
            )
            .await;
        assert_eq!(r, Ok(4));
        let mut calls = 0;
        let r: Result<u32, String> = p
            .run(
                "test",
                || {
                    calls += 1;
                    async { Err("refused".to_owned()) }
                },
                |e: &String| e != "refused",
            )
            .await;
        assert_eq!(r.unwrap_err(), "refused");
        assert_eq!(calls, 1);
    }
}
