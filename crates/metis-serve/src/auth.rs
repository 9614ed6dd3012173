//! API keys and per-key rate limits.
//!
//! Keys are held only as sha256 hex digests. A key file has one key per line, `id:key` (the
//! key is hashed on load) or `id:sha256:HEX` (already hashed); blank lines and `#` comments
//! are skipped. `METIS_API_KEYS` holds the same entries separated by commas or newlines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ServeError;
use crate::system_prompt::sha256_hex;

/// The configured keys: (id, sha256 hex of the key).
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    entries: Vec<(String, String)>,
}

impl ApiKeys {
    /// Parses key entries (see module docs); `source` names the origin in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, ServeError> {
        let mut entries = Vec::new();
        for (n, line) in text
            .split(['\n', ','])
            .map(str::trim)
            .enumerate()
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        {
            let bad = |why: &str| ServeError::Config(format!("{source}: entry {}: {why}", n + 1));
            let (id, rest) = line.split_once(':').ok_or_else(|| bad("expected id:key"))?;
            let (id, rest) = (id.trim(), rest.trim());
            if id.is_empty() || rest.is_empty() {
                return Err(bad("empty id or key"));
            }
            let hash = match rest.strip_prefix("sha256:") {
                Some(hex) => {
                    let hex = hex.trim().to_ascii_lowercase();
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad("sha256 digest must be 64 hex digits"));
                    }
                    hex
                }
                None => sha256_hex(rest.as_bytes()),
            };
            entries.push((id.to_owned(), hash));
        }
        Ok(Self { entries })
    }

    /// Adds the entries of another set.
    pub fn extend(&mut self, other: ApiKeys) {
        self.entries.extend(other.entries);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The id of the key whose hash matches `key`. Every entry is compared in constant time
    /// so the timing does not reveal how much of a digest matched.
    pub fn verify(&self, key: &str) -> Option<&str> {
        let digest = sha256_hex(key.as_bytes());
        let mut found = None;
        for (id, hash) in &self.entries {
            let same = digest
                .bytes()
                .zip(hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if same && found.is_none() {
                found = Some(id.as_str());
            }
        }
        found
    }
}

/// Token-bucket rate limiter per key id: `per_minute` requests, refilled continuously, with a
/// burst of `per_minute`.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` 0 disables limiting.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `id`'s bucket; false when it is empty.
    pub fn allow(&self, id: &str) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let cap = f64::from(self.per_minute);
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let (tokens, last) = buckets.entry(id.to_owned()).or_insert((cap, now));
        let refill = now.duration_since(*last).as_secs_f64() * cap / 60.0;
        *tokens = (*tokens + refill).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether `host` is a loopback address or name.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_verify() {
        let hashed = sha256_hex(b"s3cret");
        let keys = ApiKeys::parse(
            &format!(
                "# comment\nalice:abc\n\nbob:sha256:{}\n",
                hashed.to_uppercase()
            ),
            "test",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.verify("abc"), Some("alice"));
        assert_eq!(keys.verify("s3cret"), Some("bob"));
        assert_eq!(keys.verify("nope"), None);
        assert!(ApiKeys::parse("nocolon", "t").is_err());
        assert!(ApiKeys::parse("a:sha256:zz", "t").is_err());
        assert_eq!(ApiKeys::parse("a:1,b:2", "env").unwrap().len(), 2);
    }

    #[test]
    fn bucket_limits() {
        let r = RateLimiter::new(2);
        assert!(r.allow("a") && r.allow("a"));
        assert!(!r.allow("a"));
        assert!(r.allow("b"));
        assert!(RateLimiter::new(0).allow("x"));
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("192.168.1.2"));
    }
}
