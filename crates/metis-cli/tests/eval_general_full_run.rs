//! A full `metis eval` run of the general benchmarks (and CTIBench-TAA) against the in-process
//! fake OpenAI server: SIGKILLed midway, resumed with the same command, then exported. Every
//! (benchmark, item, trial) is stored exactly once, nothing committed before the kill is asked
//! again, and `metis eval samples` exports one graded line per stored response.
//!
//! The data directory is `shared/data` for the benchmarks it holds, plus fixtures written here
//! in the data layout for those fetched at run time (MATH, MMLU, GPQA, LongBench).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metis_eval::benchmarks::{self, DataSource};
use metis_eval::store::{Status, Store};
use metis_openai::fake_server::{FakeRequest, FakeServer, Responder, Scripted};
use metis_verify::Protocol;
use serde_json::json;

fn shared_data() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

/// The benchmarks of the run.
/// (`math-500` is left out: its prompts are the first of `math`, and the fake model is keyed
/// by prompt.)
const BENCHMARKS: [&str; 12] = [
    "ifeval",
    "gsm8k",
    "gsm8k-cot",
    "math",
    "mmlu",
    "gpqa-diamond",
    "gpqa-main",
    "hotpotqa",
    "2wikimultihopqa",
    "ctibench-taa",
    "bbh",
    "humaneval",
];
/// Shared data folders the run reads.
const SHARED: [&str; 7] = [
    "ifeval",
    "gsm8k",
    "ctibench",
    "attack",
    "cwe",
    "bbh",
    "humaneval",
];
const LIMIT: usize = 12;
const TRIALS: u32 = 2;
const SEED: u64 = 7;
const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn jsonl(rows: impl IntoIterator<Item = serde_json::Value>) -> String {
    rows.into_iter().map(|r| format!("{r}\n")).collect()
}

/// A data directory: links to the shared folders, fixtures for the fetched benchmarks.
fn data_dir(root: &Path) {
    for folder in SHARED {
        std::os::unix::fs::symlink(shared_data().join(folder), root.join(folder)).unwrap();
    }
    let math_row = |k: usize, split: &str| {
        json!({"problem": format!("What is ${k}+{k}$?"), "solution": format!("It is $\\boxed{{{}}}$.", 2 * k),
               "answer": (2 * k).to_string(), "subject": "Algebra", "level": 1,
               "unique_id": format!("{split}/algebra/{k}.json")})
    };
    write(
        root,
        "math/math-500-test.jsonl",
        &jsonl((0..8).map(|k| math_row(k, "test"))),
    );
    write(
        root,
        "math/prm800k-math-train.jsonl",
        &jsonl((100..110).map(|k| math_row(k, if k % 2 == 0 { "test" } else { "train" }))),
    );
    let mut mmlu = Vec::new();
    for subject in ["anatomy", "virology", "astronomy"] {
        for (split, n) in [("dev", 5), ("test", 6)] {
            for k in 0..n {
                mmlu.push(json!({"subject": subject, "split": split, "question": format!("{subject} {split} {k}?"),
                                 "choices": ["a", "b", "c", "d"], "answer": LETTERS[k % 4]}));
            }
        }
    }
    write(root, "mmlu/mmlu-dev-test.jsonl", &jsonl(mmlu));
    for (file, set) in [("gpqa_diamond.csv", "diamond"), ("gpqa_main.csv", "main")] {
        let mut gpqa = String::from(
            "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Record ID,High-level domain\n",
        );
        for k in 0..15 {
            gpqa.push_str(&format!(
                "\"{set} question {k}?\",right {k},wrong {k}a,wrong {k}b,wrong {k}c,rec{k},Physics\n"
            ));
        }
        write(root, &format!("gpqa/{file}"), &gpqa);
    }
    for set in ["hotpotqa", "2wikimqa"] {
        let qa = jsonl((0..15).map(|k| {
            json!({"input": format!("{set} question {k}?"), "context": format!("Passage {k}"),
                   "answers": [format!("answer {k}")], "_id": format!("q{k}")})
        }));
        write(root, &format!("longbench/{set}.jsonl"), &qa);
    }
}

fn eval_command(base_url: &str, store: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metis"));
    cmd.args([
        "eval",
        "--bench",
        &BENCHMARKS.join(","),
        "--model",
        "fake",
        "--json",
    ])
    .args(["--base-url", base_url])
    .args(["--trials", &TRIALS.to_string(), "--seed", &SEED.to_string()])
    .args(["--limit", &LIMIT.to_string(), "--concurrency", "4"])
    .arg("--store")
    .arg(store)
    .arg("--data-dir")
    .arg(data)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Every prompt of the run → (benchmark, item id, gold), from the loaders themselves.
async fn prompts(data: &Path) -> HashMap<String, (String, String, String)> {
    let mut out = HashMap::new();
    for id in BENCHMARKS {
        let b = benchmarks::load(id, &DataSource::Dir(data.into()), Protocol::LastLine)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        for item in b.items.iter().take(LIMIT) {
            out.insert(
                item.prompt.clone(),
                (id.to_owned(), item.id.clone(), item.gold.clone()),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_benchmarks_full_run_survives_sigkill_and_exports_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    data_dir(&data);
    let prompts = Arc::new(prompts(&data).await);
    // Every (benchmark, item) has its own prompt, so the fake model knows what it is asked.
    let total_items: usize = prompts.len();
    assert_eq!(total_items, BENCHMARKS.len() * LIMIT);
    let total = total_items as u64 * u64::from(TRIALS);

    let p = prompts.clone();
    let responder: Responder = Arc::new(move |req: &FakeRequest, _attempt: u64| {
        let prompt = &req.messages.last().unwrap().content;
        let gold = p.get(prompt).map(|(_, _, g)| g.clone()).unwrap_or_default();
        Ok(Scripted {
            content: format!("<think>Working through the question step by step.</think>\n{gold}"),
            reasoning: None,
            finish_reason: "stop".into(),
            delay: Duration::from_millis(10),
        })
    });
    let server = FakeServer::start(responder).await.unwrap();
    let store = dir.path().join("eval.sqlite");

    let mut child = eval_command(&server.base_url, &store, &data)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.total_requests() < total / 3 {
        assert!(Instant::now() < deadline, "the run made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before_kill = server.request_log().len();
    let committed: HashSet<(String, String, u32)> = stored(&store)
        .into_iter()
        .filter(|(_, _, _, ok)| *ok)
        .map(|(b, i, t, _)| (b, i, t))
        .collect();
    assert!(!committed.is_empty() && (committed.len() as u64) < total);

    let out = eval_command(&server.base_url, &store, &data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), BENCHMARKS.len());
    for row in &rows {
        assert_eq!(row["failed"], 0, "{row}");
        assert_eq!(row["n_trials"], TRIALS);
        let primary = row["primary_metric"].as_str().unwrap();
        assert!(
            row["metrics"][primary]["mean"].is_number(),
            "{}: {primary} is not a number",
            row["benchmark"]
        );
    }

    // Nothing committed before the kill asked again; nothing lost; nothing stored twice.
    for (req, _) in &server.request_log()[before_kill..] {
        let (bench, item, _) = &prompts[&req.messages.last().unwrap().content];
        let trial = (req.seed.unwrap() - SEED) as u32;
        assert!(
            !committed.contains(&(bench.clone(), item.clone(), trial)),
            "{bench} {item} trial {trial} asked again"
        );
    }
    let records = stored(&store);
    let keys: HashSet<(String, String, u32)> = records
        .iter()
        .map(|(b, i, t, _)| (b.clone(), i.clone(), *t))
        .collect();
    assert_eq!(records.len() as u64, total);
    assert_eq!(keys.len() as u64, total);
    assert!(records.iter().all(|(_, _, _, ok)| *ok));

    // The per-sample export has one graded line per stored response.
    for id in BENCHMARKS {
        let out = Command::new(env!("CARGO_BIN_EXE_metis"))
            .args(["eval", "samples", id, "--model", "fake"])
            .arg("--store")
            .arg(&store)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let expected = keys.iter().filter(|(b, _, _)| b == id).count();
        assert_eq!(lines.len(), expected, "{id}");
        assert!(lines.iter().all(|l| l["response"].is_string()), "{id}");
    }
    eprintln!(
        "{} benchmarks, {total} responses: killed after {before_kill} requests ({} committed), {} requests in all",
        BENCHMARKS.len(),
        committed.len(),
        server.request_log().len()
    );
    server.shutdown().await;
}

/// (benchmark, item, trial, answered) of every stored record of the run.
fn stored(store: &Path) -> Vec<(String, String, u32, bool)> {
    let store = Store::open(store).unwrap();
    let mut out = Vec::new();
    for id in BENCHMARKS {
        for r in store.records(id, "fake", None).unwrap() {
            out.push((
                id.to_owned(),
                r.key.item,
                r.key.trial,
                r.status == Status::Ok,
            ));
        }
    }
    out
}
