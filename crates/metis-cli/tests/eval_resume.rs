//! Crash safety of `metis eval`: a run SIGKILLed midway and then resumed loses no item, and
//! nothing that was committed before the kill is queried again.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metis_eval::benchmarks::{self, DataSource};
use metis_eval::store::{Status, Store};
use metis_openai::fake_server::{FakeRequest, FakeServer, Responder, Scripted};
use metis_verify::Protocol;

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

const ITEMS: usize = 60;
const TRIALS: u32 = 3;
const SEED: u64 = 1000;

fn eval_command(base_url: &str, store: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metis"));
    cmd.args([
        "eval",
        "--bench",
        "mmlu-security",
        "--model",
        "fake",
        "--json",
    ])
    .args(["--base-url", base_url])
    .args(["--trials", &TRIALS.to_string(), "--seed", &SEED.to_string()])
    .args(["--limit", &ITEMS.to_string(), "--concurrency", "4"])
    .arg("--store")
    .arg(store)
    .arg("--data-dir")
    .arg(data_dir())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_midway_then_resume_loses_nothing_and_repeats_nothing() {
    let bench = benchmarks::load(
        "mmlu-security",
        &DataSource::Dir(data_dir()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    let gold: HashMap<String, (String, String)> = bench
        .items
        .iter()
        .take(ITEMS)
        .map(|i| (i.prompt.clone(), (i.id.clone(), i.gold.clone())))
        .collect();
    let gold = Arc::new(gold);
    let g = gold.clone();
    // Slow enough that the run is still going when it is killed.
    let responder: Responder = Arc::new(move |req: &FakeRequest, _attempt: u64| {
        let prompt = &req.messages.last().unwrap().content;
        let (_, answer) = g.get(prompt).cloned().unwrap_or_default();
        Ok(Scripted {
            content: format!("<think>considering the options carefully</think>\nAnswer: {answer}"),
            reasoning: None,
            finish_reason: "stop".into(),
            delay: Duration::from_millis(25),
        })
    });
    let server = FakeServer::start(responder).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("eval.sqlite");

    // Start, wait until a good part of the work is done, then SIGKILL.
    let mut child = eval_command(&server.base_url, &store_path).spawn().unwrap();
    let total = ITEMS as u64 * u64::from(TRIALS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.total_requests() < total / 3 {
        assert!(Instant::now() < deadline, "the run made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let requests_before_kill = server.request_log().len();

    // What was committed before the kill.
    let committed: HashSet<(String, u32)> = Store::open(&store_path)
        .unwrap()
        .records("mmlu-security", "fake", None)
        .unwrap()
        .into_iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| (r.key.item, r.key.trial))
        .collect();
    assert!(
        !committed.is_empty(),
        "nothing was committed before the kill"
    );
    assert!(
        (committed.len() as u64) < total,
        "the run finished before the kill"
    );

    // Resume with the same command.
    let out = eval_command(&server.base_url, &store_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(row["n_items"], ITEMS);
    assert_eq!(row["n_trials"], TRIALS);
    assert_eq!(row["failed"], 0);
    assert_eq!(row["metrics"]["accuracy"]["mean"], 1.0);

    // Nothing committed before the kill was asked again.
    let log = server.request_log();
    for (req, _) in &log[requests_before_kill..] {
        let prompt = &req.messages.last().unwrap().content;
        let item = gold[prompt].0.clone();
        let trial = (req.seed.unwrap() - SEED) as u32;
        assert!(
            !committed.contains(&(item.clone(), trial)),
            "item {item} trial {trial} was committed before the kill but queried again"
        );
    }
    // Nothing lost: every (item, trial) answered exactly once in the store.
    let records = Store::open(&store_path)
        .unwrap()
        .records("mmlu-security", "fake", None)
        .unwrap();
    let keys: HashSet<(String, u32)> = records
        .iter()
        .map(|r| (r.key.item.clone(), r.key.trial))
        .collect();
    assert_eq!(records.len() as u64, total);
    assert_eq!(keys.len() as u64, total);
    assert!(records.iter().all(|r| r.status == Status::Ok));
    // Only requests in flight at the kill can have been sent twice.
    let queried: u64 = log.len() as u64;
    assert!(
        queried <= total + 4,
        "{queried} requests for {total} responses"
    );
    eprintln!(
        "killed after {requests_before_kill} requests with {} committed; resumed with {} more; {queried} requests in all for {total} responses",
        committed.len(),
        log.len() - requests_before_kill
    );
    server.shutdown().await;
}
