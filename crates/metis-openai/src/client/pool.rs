//! The replicas of a [`Client`](super::Client): each [`Endpoint`] with its parsed URLs, its
//! `Authorization` header and a count of requests in flight, and the choice of the replica
//! for the next attempt (fewest in flight, ties broken round-robin).

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Url;

use super::error::ClientError;
use super::types::Endpoint;

/// One replica, ready to be sent requests.
pub(super) struct EndpointState {
    /// The base URL, trimmed of a trailing `/`.
    pub base_url: String,
    pub chat_url: Url,
    pub models_url: Url,
    pub completions_url: Url,
    pub load_lora_url: Url,
    pub unload_lora_url: Url,
    auth: Option<HeaderValue>,
    in_flight: AtomicUsize,
}

impl EndpointState {
    /// Checks the base URL (absolute `http(s)` with a host) and the API key (sendable as a
    /// header); [`ClientError::BadUrl`] otherwise.
    fn new(ep: Endpoint) -> Result<Self, ClientError> {
        let base = ep.base_url.trim().trim_end_matches('/').to_string();
        let parsed =
            Url::parse(&base).map_err(|e| ClientError::BadUrl(format!("{base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.cannot_be_a_base()
            || parsed.host_str().is_none()
        {
            return Err(ClientError::BadUrl(format!(
                "{base:?}: expected an absolute http(s) URL such as http://127.0.0.1:8000/v1"
            )));
        }
        let join = |suffix: &str| {
            Url::parse(&format!("{base}/{suffix}"))
                .map_err(|e| ClientError::BadUrl(format!("{base:?}: {e}")))
        };
        let auth = match ep.api_key.as_deref() {
            Some(key) if !key.is_empty() => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    ClientError::BadUrl(format!(
                        "{base:?}: API key contains characters not allowed in a header"
                    ))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        Ok(Self {
            chat_url: join("chat/completions")?,
            models_url: join("models")?,
            completions_url: join("completions")?,
            load_lora_url: join("load_lora_adapter")?,
            unload_lora_url: join("unload_lora_adapter")?,
            base_url: base,
            auth,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// `rb` with this endpoint's `Authorization` header, when it has a key.
    pub fn authorize(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(auth) => rb.header(AUTHORIZATION, auth.clone()),
            None => rb,
        }
    }

    /// Counts a request in flight until the returned guard is dropped (also when the request's
    /// future is cancelled).
    pub fn start_request(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(&self.in_flight)
    }
}

/// Decrements an endpoint's in-flight counter on drop.
pub(super) struct InFlightGuard<'a>(&'a AtomicUsize);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The replicas and the round-robin cursor that breaks ties between them.
pub(super) struct Pool {
    endpoints: Vec<EndpointState>,
    rr: AtomicUsize,
}

impl Pool {
    /// [`ClientError::NoEndpoints`] on an empty list, [`ClientError::BadUrl`] on a bad one.
    pub fn new(endpoints: Vec<Endpoint>) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let endpoints = endpoints
            .into_iter()
            .map(EndpointState::new)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            endpoints,
            rr: AtomicUsize::new(0),
        })
    }

    pub fn endpoints(&self) -> &[EndpointState] {
        &self.endpoints
    }

    pub fn get(&self, idx: usize) -> &EndpointState {
        &self.endpoints[idx]
    }

    /// Least in-flight endpoint, ties broken round-robin; `avoid` (the endpoint that just
    /// failed) is skipped when there is another one.
    pub fn pick(&self, avoid: Option<usize>) -> usize {
        let eps = &self.endpoints;
        let n = eps.len();
        if n == 1 {
            return 0;
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = usize::MAX;
        let mut best_load = usize::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            if Some(i) == avoid {
                continue;
            }
            let load = eps[i].in_flight.load(Ordering::Relaxed);
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool::new(
            (0..n)
                .map(|i| Endpoint::new(format!("http://127.0.0.1:{}/v1", 8000 + i)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn picks_the_least_loaded_and_avoids_the_one_that_failed() {
        let p = pool(3);
        let _busy0 = p.get(0).start_request();
        let busy1 = p.get(1).start_request();
        assert_eq!(p.pick(None), 2);
        // Even the idle replica is skipped when it just failed.
        assert_ne!(p.pick(Some(2)), 2);
        drop(busy1);
        assert_eq!(p.pick(Some(2)), 1);
    }

    #[test]
    fn ties_rotate_and_a_single_replica_is_always_chosen() {
        let p = pool(3);
        let picks: Vec<usize> = (0..3).map(|_| p.pick(None)).collect();
        let mut sorted = picks.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2], "{picks:?}");
        let one = pool(1);
        assert_eq!(one.pick(Some(0)), 0);
    }

    #[test]
    fn urls_are_joined_to_the_trimmed_base() {
        let p = Pool::new(vec![Endpoint::new(" http://h:1/v1/ ").with_api_key("k")]).unwrap();
        let ep = p.get(0);
        assert_eq!(ep.base_url, "http://h:1/v1");
        assert_eq!(ep.chat_url.as_str(), "http://h:1/v1/chat/completions");
        assert_eq!(
            ep.unload_lora_url.as_str(),
            "http://h:1/v1/unload_lora_adapter"
        );
        assert!(matches!(
            Pool::new(vec![Endpoint::new("http://h/v1").with_api_key("bad\nkey")]),
            Err(ClientError::BadUrl(_))
        ));
    }
}
