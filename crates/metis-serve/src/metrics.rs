//! Prometheus metrics in the text exposition format, kept in atomics and rendered by hand:
//! requests by route and status, tokens, queue depth, running sequences, engine steps and a
//! request latency histogram. The engine's counters are the scheduler's own
//! [`SchedulerStats`], shared with the engine thread, so they are counted in one place.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metis_engine::scheduler::SchedulerStats;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Server-wide counters; shared by the routes and the engine thread.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Tokens, queue depth, running sequences and steps, written by the engine thread (give
    /// this to `Scheduler::start`).
    pub engine: Arc<SchedulerStats>,
    pub guard_blocks: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    /// Sum of latencies in microseconds.
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Records a finished HTTP request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        {
            let mut r = match self.requests.lock() {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            *r.entry((route.to_owned(), status)).or_insert(0) += 1;
        }
        for (b, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Count of requests seen for a route and status.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let r = match self.requests.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        r.get(&(route.to_owned(), status)).copied().unwrap_or(0)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP metis_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(s, "# TYPE metis_requests_total counter");
        {
            let r = match self.requests.lock() {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            for ((route, status), n) in r.iter() {
                let _ = writeln!(
                    s,
                    "metis_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    route.replace('\\', "\\\\").replace('"', "\\\"")
                );
            }
        }
        let e = &self.engine;
        let counters = [
            (
                "metis_prompt_tokens_total",
                "Prompt tokens prefilled.",
                e.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "metis_generated_tokens_total",
                "Tokens generated.",
                e.generated_tokens.load(Ordering::Relaxed),
            ),
            (
                "metis_prefills_total",
                "Prompt prefills run by the engine.",
                e.prefills.load(Ordering::Relaxed),
            ),
            (
                "metis_decode_steps_total",
                "Batched decode steps run by the engine.",
                e.decode_steps.load(Ordering::Relaxed),
            ),
            (
                "metis_guard_blocks_total",
                "Requests or answers blocked by the guardrail.",
                self.guard_blocks.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let gauges = [
            (
                "metis_queue_depth",
                "Requests waiting for a batch slot.",
                e.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "metis_running_sequences",
                "Sequences being decoded.",
                e.running.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let name = "metis_request_duration_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} HTTP request latency (to the end of the response body for streams)."
        );
        let _ = writeln!(s, "# TYPE {name} histogram");
        for (b, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                s,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "{name}_sum {sum}\n{name}_count {count}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.observe("/v1/chat/completions", 200, 0.02);
        m.observe("/v1/chat/completions", 429, 0.001);
        m.engine.generated_tokens.fetch_add(7, Ordering::Relaxed);
        let t = m.render();
        assert!(t.contains("metis_requests_total{route=\"/v1/chat/completions\",status=\"429\"} 1"));
        assert!(t.contains("metis_generated_tokens_total 7"));
        assert!(t.contains("metis_request_duration_seconds_bucket{le=\"0.025\"} 2"));
        assert!(t.contains("metis_request_duration_seconds_bucket{le=\"0.01\"} 1"));
        assert!(t.contains("metis_request_duration_seconds_count 2"));
        assert_eq!(m.requests("/v1/chat/completions", 200), 1);
    }
}
