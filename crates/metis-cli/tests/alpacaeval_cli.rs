//! `metis eval --bench alpacaeval2`: without a judge it refuses before querying anything; with
//! one, a run SIGKILLed while judging resumes without asking the judge again about anything it
//! had stored, and the report names the judge next to the length-controlled win rate.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metis_eval::store::{Status, Store};
use metis_openai::fake_server::{FakeRequest, FakeServer, LogprobResponder, Responder, Scripted};

const ITEMS: usize = 40;
const TRIALS: u32 = 2;
const SEED: u64 = 500;
const JUDGE: &str = "scripted-judge";

fn instruction(k: usize) -> String {
    format!("Instruction {k}: explain something.")
}

/// Upstream's layout for the baseline outputs, with reference lengths that vary.
fn write_data(dir: &Path) {
    let rows: Vec<serde_json::Value> = (0..ITEMS)
        .map(|k| {
            serde_json::json!({
                "instruction": instruction(k),
                "output": format!("reference {k} {}", "r".repeat(40 + 37 * (k % 9))),
                "generator": "gpt4_1106_preview",
                "dataset": "helpful_base",
            })
        })
        .collect();
    let path = dir.join("alpacaeval/gpt4_1106_preview-model_outputs.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
}

fn item_of(text: &str) -> usize {
    (0..ITEMS)
        .find(|&k| {
            text.contains(&format!("\"\"\"{}\"\"\"", instruction(k))) || text == instruction(k)
        })
        .unwrap()
}

/// The model's answer names its item and trial (seed), so the judge's requests say which
/// response they judge.
fn model() -> Responder {
    Arc::new(|req: &FakeRequest, _| {
        let k = item_of(req.last_user());
        let trial = req.seed.unwrap() - SEED;
        Ok(Scripted::text(format!(
            "<think>thinking</think>answer item={k} trial={trial} {}",
            "a".repeat(20 + 53 * ((k + trial as usize) % 7))
        )))
    })
}

/// (item, trial) of a judge request, from the answer it shows.
fn judged(req: &FakeRequest) -> (String, u32) {
    let user = req.last_user();
    let at = user.find("answer item=").unwrap();
    let rest = &user[at + "answer item=".len()..];
    let (item, rest) = rest.split_once(" trial=").unwrap();
    let trial = rest.split_whitespace().next().unwrap().parse().unwrap();
    (item.to_owned(), trial)
}

/// A slow judge preferring whichever output it is shown second, more or less by item.
fn judge() -> LogprobResponder {
    Arc::new(|req: &FakeRequest, _| {
        let (item, _) = judged(req);
        let q = 0.2 + 0.6 * (item.parse::<f64>().unwrap() / ITEMS as f64);
        let mut answer = Scripted::text("M");
        answer.delay = Duration::from_millis(30);
        Ok((
            answer,
            vec![("M".to_owned(), q.ln()), ("m".to_owned(), (1.0 - q).ln())],
        ))
    })
}

fn eval(data: &Path, store: &Path, model_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metis"));
    cmd.args(["eval", "--bench", "alpacaeval2", "--model", "fake"])
        .args(["--base-url", model_url])
        .args(["--trials", &TRIALS.to_string(), "--seed", &SEED.to_string()])
        .args(["--concurrency", "4"])
        .arg("--store")
        .arg(store)
        .arg("--data-dir")
        .arg(data)
        .env_remove("METIS_JUDGE_URL")
        .env_remove("METIS_JUDGE_MODEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_judge_alpacaeval_is_refused_before_any_query() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let server = FakeServer::start(model()).await.unwrap();
    let out = eval(dir.path(), &dir.path().join("s.sqlite"), &server.base_url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alpacaeval2 is graded by a judge model") && err.contains("--judge-url"),
        "{err}"
    );
    assert_eq!(server.total_requests(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_judging_then_resume_asks_nothing_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let store = dir.path().join("eval.sqlite");
    let model_server = FakeServer::start(model()).await.unwrap();
    let judge_server = FakeServer::start_with_logprobs(judge()).await.unwrap();
    let with_judge = |cmd: &mut Command| {
        cmd.args([
            "--judge-url",
            &judge_server.base_url,
            "--judge-model",
            JUDGE,
        ]);
    };

    let mut first = eval(dir.path(), &store, &model_server.base_url);
    with_judge(&mut first);
    let mut child = first.spawn().unwrap();
    let total = ITEMS as u64 * u64::from(TRIALS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while judge_server.total_requests() < total / 3 {
        assert!(Instant::now() < deadline, "the judge pass made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let asked_before_kill = judge_server.request_log().len();
    let stored: HashSet<(String, u32)> = Store::open(&store)
        .unwrap()
        .judgments("alpacaeval2", "fake")
        .unwrap()
        .into_iter()
        .filter(|j| j.status == Status::Ok)
        .map(|j| (j.key.item, j.key.trial))
        .collect();
    assert!(
        !stored.is_empty() && (stored.len() as u64) < total,
        "{}",
        stored.len()
    );

    let mut resume = eval(dir.path(), &store, &model_server.base_url);
    with_judge(&mut resume);
    let out = resume.arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (req, _) in &judge_server.request_log()[asked_before_kill..] {
        let key = judged(req);
        assert!(
            !stored.contains(&key),
            "{key:?} was stored before the kill but asked again"
        );
    }
    let row: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(row["primary_metric"], "lc_win_rate");
    assert_eq!(row["judge"]["judge"], JUDGE);
    assert_eq!(row["judge"]["n_judged"], total);
    let lc = row["metrics"]["lc_win_rate"]["mean"].as_f64().unwrap();
    assert!(lc > 0.0 && lc < 1.0, "{row}");
    let judgments = Store::open(&store)
        .unwrap()
        .judgments("alpacaeval2", "fake")
        .unwrap();
    assert_eq!(
        judgments.len() as u64,
        total,
        "one judgment per (item, trial)"
    );

    // Reporting the stored judgments needs only the judge's name, and asks nothing.
    let asked = judge_server.total_requests();
    let out = eval(dir.path(), &store, &model_server.base_url)
        .args(["--rescore", "--judge-model", JUDGE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = format!("LC win rate (judge: {JUDGE} @ {})", judge_server.base_url);
    assert!(text.contains(&line), "{text}");
    assert!(
        text.contains("differ from the official leaderboard"),
        "{text}"
    );
    assert_eq!(judge_server.total_requests(), asked);
    model_server.shutdown().await;
    judge_server.shutdown().await;
}
