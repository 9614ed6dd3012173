//! The retry policy and the loop every call goes through: one attempt on a replica, and on a
//! retryable failure a wait (the server's `Retry-After`, else capped, fully jittered
//! exponential backoff) and another attempt, preferring a replica other than the one that
//! just failed.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::error::{classify_reqwest, is_retryable_status, truncate_chars, AttemptError};
use super::error::{ClientError, ERROR_BODY_MAX_CHARS};
use super::pool::EndpointState;
use super::retry_after::retry_after;
use super::Client;

/// Hard cap on how long a server-provided `Retry-After` may make us wait.
pub const RETRY_AFTER_HARD_CAP: Duration = Duration::from_secs(120);

/// Retry and timeout policy.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts, the first included (0 is treated as 1).
    pub max_attempts: u32,
    /// Backoff before retry `k` is uniform in `[0, min(max_delay, base_delay * 2^(k-1))]`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Timeout of one attempt (connect + request + full response body).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before the retry that follows failed attempt
    /// `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.backoff_cap(attempt);
        if cap.is_zero() {
            return cap;
        }
        let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    fn backoff_cap(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        self.base_delay
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Delay honouring a server `Retry-After`: what the server asked for, but never more than
    /// `max(max_delay, 120 s)`.
    pub fn retry_after_delay(&self, asked: Duration) -> Duration {
        asked.min(self.max_delay.max(RETRY_AFTER_HARD_CAP))
    }

    /// The wait before the attempt after failed attempt `attempt`.
    fn delay(&self, attempt: u32, err: &AttemptError) -> Duration {
        match err.retry_after {
            Some(asked) => self.retry_after_delay(asked),
            None => self.backoff(attempt),
        }
    }
}

/// Which replicas a call may use.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route {
    /// The least loaded one, moving away from a replica that failed.
    Any,
    /// Always this one (admin calls: each replica must get its own).
    Pinned(usize),
}

/// A successful call: its result, the attempts it took and the replica that answered.
pub(super) struct Answered<'s, T> {
    pub value: T,
    pub attempts: u32,
    pub endpoint: &'s EndpointState,
}

/// A failed call: its error and the replica of the last attempt.
pub(super) struct Failed<'s> {
    pub error: ClientError,
    pub endpoint: &'s EndpointState,
}

impl Client {
    /// Attempts `attempt_fn` under the retry policy on the replicas `route` allows.
    pub(super) async fn with_retries<'s, T, F, Fut>(
        &'s self,
        route: Route,
        mut attempt_fn: F,
    ) -> Result<Answered<'s, T>, Failed<'s>>
    where
        F: FnMut(&'s EndpointState) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let policy = &self.inner.retry;
        let pool = &self.inner.pool;
        let max_attempts = policy.max_attempts.max(1);
        let mut avoid = None;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let idx = match route {
                Route::Any => pool.pick(avoid),
                Route::Pinned(idx) => idx,
            };
            let endpoint = pool.get(idx);
            let result = {
                let _in_flight = endpoint.start_request();
                attempt_fn(endpoint).await
            };
            let err = match result {
                Ok(value) => {
                    return Ok(Answered {
                        value,
                        attempts: attempt,
                        endpoint,
                    })
                }
                Err(e) => e,
            };
            if !err.error.is_retryable() {
                return Err(Failed {
                    error: err.error,
                    endpoint,
                });
            }
            if attempt >= max_attempts {
                return Err(Failed {
                    error: ClientError::GaveUp {
                        attempts: attempt,
                        last: Box::new(err.error),
                    },
                    endpoint,
                });
            }
            let delay = policy.delay(attempt, &err);
            tracing::debug!(
                endpoint = %endpoint.base_url,
                attempt,
                error = %err.error,
                delay_ms = delay.as_millis() as u64,
                "retrying request"
            );
            avoid = Some(idx);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// POSTs `body` to `url` of `endpoint` within the per-attempt timeout; the body of a 2xx
    /// response, else the classified error.
    pub(super) async fn post(
        &self,
        endpoint: &EndpointState,
        url: &reqwest::Url,
        body: &[u8],
    ) -> Result<Vec<u8>, AttemptError> {
        let rb = self
            .inner
            .http
            .post(url.clone())
            .timeout(self.inner.retry.request_timeout)
            .body(body.to_vec());
        send(endpoint.authorize(rb)).await
    }

    /// GETs `url` of `endpoint` within the per-attempt timeout (see [`Client::post`]).
    pub(super) async fn get(
        &self,
        endpoint: &EndpointState,
        url: &reqwest::Url,
    ) -> Result<Vec<u8>, AttemptError> {
        let rb = self
            .inner
            .http
            .get(url.clone())
            .timeout(self.inner.retry.request_timeout);
        send(endpoint.authorize(rb)).await
    }
}

/// Sends one request; returns the body of a 2xx response or the classified error.
async fn send(rb: reqwest::RequestBuilder) -> Result<Vec<u8>, AttemptError> {
    let resp = rb.send().await.map_err(classify_reqwest)?;
    let status = resp.status();
    if status.is_success() {
        let bytes = resp.bytes().await.map_err(classify_reqwest)?;
        return Ok(bytes.to_vec());
    }
    let retry_after = if is_retryable_status(status.as_u16()) {
        retry_after(resp.headers(), SystemTime::now())
    } else {
        None
    };
    // Best effort: a failure reading an error body still reports the status.
    let body = match resp.bytes().await {
        Ok(b) => truncate_chars(&String::from_utf8_lossy(&b), ERROR_BODY_MAX_CHARS),
        Err(e) => format!("<error body unreadable: {e}>"),
    };
    Err(AttemptError {
        error: ClientError::Http {
            status: status.as_u16(),
            body,
        },
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_retry_after_bounded() {
        let p = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(p.backoff_cap(1), Duration::from_millis(500));
        assert_eq!(p.backoff_cap(3), Duration::from_secs(2));
        assert_eq!(p.backoff_cap(60), Duration::from_secs(30));
        for k in 1..10 {
            assert!(p.backoff(k) <= p.backoff_cap(k));
        }
        assert_eq!(
            p.retry_after_delay(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(
            p.retry_after_delay(Duration::from_secs(1000)),
            RETRY_AFTER_HARD_CAP
        );
    }
}
