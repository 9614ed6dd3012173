//! Harness overhead: requests per second through the whole querying path (prompt building,
//! HTTP client, retries bookkeeping, SQLite commits) against an instant in-process fake
//! OpenAI server, at 64 requests in flight. Goal: ≥ 2,000 requests/s on a 2-core machine.
//!
//! Run: `cargo bench -p metis-eval --bench harness_overhead`

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metis_eval::benchmarks::{self, DataSource};
use metis_eval::run::{self, RunConfig, Sampling};
use metis_openai::fake_server::FakeServer;
use metis_openai::{Client, Endpoint, RetryPolicy};
use metis_verify::Protocol;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let data_dir = std::env::var_os("METIS_DATA_DIR").map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")),
            PathBuf::from,
        );
        let data = DataSource::Dir(data_dir);
        let bench = benchmarks::load("ctibench-mcqa", &data, Protocol::LastLine)
            .await
            .expect("benchmark");
        let server = FakeServer::start(FakeServer::instant("<think>ok</think>\nAnswer: A"))
            .await
            .expect("fake server");
        let client = Client::new(
            vec![Endpoint {
                base_url: server.base_url.clone(),
                api_key: None,
            }],
            RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(1),
                request_timeout: Duration::from_secs(30),
            },
        )
        .expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let trials = 8;
        let config = RunConfig {
            benchmarks: vec!["ctibench-mcqa".into()],
            model: "bench".into(),
            sampling: Sampling::reasoning(),
            trials,
            system_prompt: None,
            concurrency: 64,
            protocol: Protocol::LastLine,
            data,
            store: dir.path().join("bench.sqlite"),
            limit: None,
            progress: false,
        };
        let benches = vec![bench];
        let backend = run::Backend::from(client);
        let t0 = Instant::now();
        let stats = run::query(&config, &benches, &backend, Arc::new(AtomicBool::new(false)))
            .await
            .expect("run");
        let secs = t0.elapsed().as_secs_f64();
        let n = stats.answered + stats.failed;
        println!(
            "harness: {n} requests ({} failed) at 64 concurrent in {secs:.2} s = {:.0} requests/s   goal >= 2000",
            stats.failed,
            n as f64 / secs
        );
        // Resuming a finished run sends nothing.
        let t1 = Instant::now();
        let again = run::query(&config, &benches, &backend, Arc::new(AtomicBool::new(false)))
            .await
            .expect("resume");
        println!(
            "resume : {} responses found in the store, {} requests, in {:.2} s",
            again.reused,
            again.answered + again.failed,
            t1.elapsed().as_secs_f64()
        );
        server.shutdown().await;
    });
}
