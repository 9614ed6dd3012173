//! The harness end to end against an in-process fake OpenAI server that scripts answers and
//! injects faults: the run completes, every item is accounted for, and the counts are exact.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use metis_eval::benchmarks::{self, DataSource};
use metis_eval::run::{self, RunConfig, Sampling};
use metis_eval::store::{Status, Store};
use metis_openai::fake_server::{FakeRequest, FakeServer, Fault, Responder, Scripted};
use metis_openai::{Client, Endpoint, RetryPolicy};
use metis_verify::Protocol;

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

fn answer(content: String) -> Scripted {
    Scripted {
        content,
        reasoning: None,
        finish_reason: "stop".into(),
        delay: Duration::ZERO,
    }
}

/// What the fake model does with item number `i` (by position in the benchmark).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Plan {
    Correct,
    /// Correct, with the reasoning in `reasoning_content` instead of the content.
    SeparateReasoning,
    Wrong,
    RateLimitedOnce,
    ServerErrorTwice,
    HangOnce,
    MalformedOnce,
    TruncatedThink,
    AlwaysFails,
}

fn plan(i: usize) -> Plan {
    match i % 10 {
        0 => Plan::RateLimitedOnce,
        1 => Plan::ServerErrorTwice,
        2 => Plan::HangOnce,
        3 => Plan::MalformedOnce,
        4 => Plan::TruncatedThink,
        5 => Plan::AlwaysFails,
        6 => Plan::Wrong,
        7 => Plan::SeparateReasoning,
        _ => Plan::Correct,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_every_item_is_accounted_for() {
    let data = DataSource::Dir(data_dir());
    let mut bench = benchmarks::load("mmlu-security", &data, Protocol::LastLine)
        .await
        .expect("benchmark");
    bench.items.truncate(30);
    let by_prompt: HashMap<String, (usize, String)> = bench
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.prompt.clone(), (i, it.gold.clone())))
        .collect();
    let by_prompt = Arc::new(by_prompt);

    let lookup = by_prompt.clone();
    let responder: Responder = Arc::new(move |req: &FakeRequest, attempt: u64| {
        let prompt = &req.messages.last().expect("user message").content;
        let (i, gold) = lookup.get(prompt).cloned().expect("known prompt");
        let wrong = if gold == "A" { "B" } else { "A" };
        let think =
            "<think>\nThe question asks about a security concept; recalling it.\n</think>\n";
        match (plan(i), attempt) {
            (Plan::RateLimitedOnce, 1) => Err(Fault::TooManyRequests { retry_after_s: 1 }),
            (Plan::ServerErrorTwice, 1 | 2) => Err(Fault::ServerError),
            (Plan::HangOnce, 1) => Err(Fault::Hang),
            (Plan::MalformedOnce, 1) => Err(Fault::MalformedJson),
            (Plan::TruncatedThink, _) => Err(Fault::TruncatedThink),
            (Plan::AlwaysFails, _) => Err(Fault::ServerError),
            (Plan::Wrong, _) => Ok(answer(format!("{think}Answer: {wrong}"))),
            (Plan::SeparateReasoning, _) => Ok(Scripted {
                content: format!("Answer: **{gold}**"),
                reasoning: Some("Thinking it through.".into()),
                finish_reason: "stop".into(),
                delay: Duration::ZERO,
            }),
            _ => Ok(answer(format!("{think}Answer: {gold}"))),
        }
    });
    let server = FakeServer::start(responder).await.expect("fake server");

    let dir = tempfile::tempdir().unwrap();
    let trials = 2u32;
    let config = RunConfig {
        benchmarks: vec!["mmlu-security".into()],
        model: "fake-model".into(),
        sampling: Sampling::reasoning(),
        trials,
        system_prompt: None,
        concurrency: 8,
        protocol: Protocol::LastLine,
        data: data.clone(),
        store: dir.path().join("store.sqlite"),
        limit: Some(30),
        progress: false,
    };
    let client = Client::new(
        vec![Endpoint {
            base_url: server.base_url.clone(),
            api_key: None,
        }],
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
            request_timeout: Duration::from_millis(500),
        },
    )
    .unwrap();
    let benches = vec![bench];
    let backend = run::Backend::from(client);
    let q = run::query(
        &config,
        &benches,
        &backend,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect("run completes");

    let n = benches[0].items.len();
    let count = |p: Plan| (0..n).filter(|&i| plan(i) == p).count() as u64 * u64::from(trials);
    assert_eq!(q.reused, 0);
    assert_eq!(q.failed, count(Plan::AlwaysFails));
    assert_eq!(q.answered + q.failed, n as u64 * u64::from(trials));

    // Every (item, trial) is in the store, failed ones marked as such.
    let store = Store::open(&config.store).unwrap();
    let records = store.records("mmlu-security", "fake-model", None).unwrap();
    assert_eq!(records.len(), n * trials as usize);
    let failed = records
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count() as u64;
    assert_eq!(failed, count(Plan::AlwaysFails));
    assert!(records
        .iter()
        .filter(|r| r.status == Status::Failed)
        .all(|r| r.error.as_deref().is_some_and(|e| !e.is_empty())));

    // Grading: correct = Correct + SeparateReasoning + the four retried-then-correct plans.
    let graded = run::grade(&benches[0], "fake-model", trials, records, |item, t, r| {
        r.key.params_hash == run::params_hash(None, &item.prompt, &config.sampling, t)
    });
    let row = run::summarize(&graded, "accuracy");
    assert_eq!(row.failed as u64, count(Plan::AlwaysFails));
    let correct = [
        Plan::Correct,
        Plan::SeparateReasoning,
        Plan::RateLimitedOnce,
        Plan::ServerErrorTwice,
        Plan::HangOnce,
        Plan::MalformedOnce,
    ]
    .iter()
    .map(|p| count(*p))
    .sum::<u64>();
    let total = n as f64 * f64::from(trials);
    let acc = row.metrics["accuracy"].mean;
    assert!(
        (acc - correct as f64 / total).abs() < 1e-12,
        "accuracy {acc}"
    );
    // Invalid = truncated + failed (graded as empty answers); wrong answers are valid.
    assert_eq!(
        row.invalid as u64,
        count(Plan::TruncatedThink) + count(Plan::AlwaysFails)
    );
    let truncated = row.metrics["truncated"].mean * total;
    assert!((truncated - count(Plan::TruncatedThink) as f64).abs() < 1e-9);
    assert_eq!(row.n_items, n);
    assert_eq!(row.n_trials, trials as usize);

    // Rerunning resumes: only the failed requests are sent again.
    let before = server.total_requests();
    let q2 = run::query(
        &config,
        &benches,
        &backend,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .unwrap();
    assert_eq!(
        q2.reused,
        n as u64 * u64::from(trials) - count(Plan::AlwaysFails)
    );
    assert_eq!(q2.failed, count(Plan::AlwaysFails));
    let resent = server.total_requests() - before;
    assert_eq!(
        resent,
        count(Plan::AlwaysFails) * 4,
        "4 attempts per failing request"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_responses_are_checked_and_graded() {
    let data = DataSource::Dir(data_dir());
    let bench = benchmarks::load("ctibench-rcm", &data, Protocol::LastLine)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.jsonl");
    let mut lines = Vec::new();
    for (i, item) in bench.items.iter().take(10).enumerate() {
        let answer = if i < 7 {
            item.gold.clone()
        } else {
            "CWE-1".into()
        };
        lines.push(serde_json::json!({"benchmark": "ctibench-rcm", "item": item.id, "trial": 0, "response": answer, "model": "m"}).to_string());
    }
    std::fs::write(&path, lines.join("\n")).unwrap();
    let map: HashMap<String, &benchmarks::Benchmark> =
        [("ctibench-rcm".to_owned(), &bench)].into_iter().collect();
    let (recs, skipped) = run::read_responses(&path, &map, "default").unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(recs.len(), 10);
    let mut small = benchmarks::load("ctibench-rcm", &data, Protocol::LastLine)
        .await
        .unwrap();
    small.items.truncate(10);
    let graded = run::grade(&small, "m", 1, recs, |_, _, _| true);
    let row = run::summarize(&graded, "accuracy");
    assert!((row.metrics["accuracy"].mean - 0.7).abs() < 1e-12);

    // A bad line names the file, the line and the field.
    std::fs::write(
        &path,
        format!(
            "{}\n{}\n",
            lines[0],
            r#"{"benchmark": "ctibench-rcm", "item": "no-such-item", "trial": 0, "response": "x"}"#
        ),
    )
    .unwrap();
    let err = run::read_responses(&path, &map, "default")
        .unwrap_err()
        .to_string();
    assert!(err.contains(":2:") && err.contains("field item"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_engine_backend_answers_and_stores_every_item() {
    let fixtures = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ));
    let local = metis_eval::local::LocalModel::load(
        &fixtures.join("llama31-tiny-v128k/f32"),
        Some(&fixtures.join("llama31-tokenizer")),
        &candle_core::Device::Cpu,
        None,
        true,
        4,
    )
    .expect("local model");
    let data = DataSource::Dir(data_dir());
    let mut bench = benchmarks::load("mmlu-security", &data, Protocol::LastLine)
        .await
        .unwrap();
    bench.items.truncate(3);
    let dir = tempfile::tempdir().unwrap();
    let config = RunConfig {
        benchmarks: vec!["mmlu-security".into()],
        model: "tiny".into(),
        sampling: Sampling {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 6,
            seed: 1,
        },
        trials: 2,
        system_prompt: None,
        concurrency: 4,
        protocol: Protocol::LastLine,
        data,
        store: dir.path().join("local.sqlite"),
        limit: Some(3),
        progress: false,
    };
    let benches = vec![bench];
    let backend = run::Backend::Local(local);
    let q = run::query(
        &config,
        &benches,
        &backend,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .unwrap();
    assert_eq!((q.answered, q.failed), (6, 0));
    let records = Store::open(&config.store)
        .unwrap()
        .records("mmlu-security", "tiny", None)
        .unwrap();
    assert_eq!(records.len(), 6);
    for r in &records {
        assert_eq!(r.completion_tokens, Some(6));
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        // The prefilled opening tag is restored, so a 6-token answer is truncated reasoning.
        assert!(r.response.as_deref().unwrap().starts_with("<think>\n"));
    }
    // Greedy decoding: both trials give the same text for an item.
    let t0: Vec<_> = records
        .iter()
        .filter(|r| r.key.trial == 0)
        .map(|r| &r.response)
        .collect();
    let t1: Vec<_> = records
        .iter()
        .filter(|r| r.key.trial == 1)
        .map(|r| &r.response)
        .collect();
    assert_eq!(t0, t1);
    let graded = run::grade(&benches[0], "tiny", 2, records, |_, _, _| true);
    let row = run::summarize(&graded, "accuracy");
    assert_eq!(row.invalid, 6);
    assert!((row.metrics["truncated"].mean - 1.0).abs() < 1e-12);
}

/// Per-subject accuracy and the unweighted mean over subjects (BBH's mean over its tasks),
/// computed by hand: subject `a` 1 of 2 right, subject `b` 1 of 1, over two identical trials.
#[test]
fn subject_breakdown_and_unweighted_subject_mean() {
    use metis_verify::{Task, VerifierFactory, VerifierSpec};
    let v = VerifierFactory::new(None)
        .build(&VerifierSpec::for_task(Task::Mcq))
        .unwrap();
    let verdict = |answer: &str| v.grade(&format!("<think>t</think>{answer}"), "A").unwrap();
    let trial = vec![verdict("A"), verdict("B"), verdict("A")];
    let graded = run::Graded {
        benchmark: "b".into(),
        model: "m".into(),
        item_ids: vec!["0".into(), "1".into(), "2".into()],
        subjects: vec![Some("a".into()), Some("a".into()), Some("b".into())],
        verdicts: vec![trial.clone(), trial],
        failed: 0,
        reasoning_chars: vec![vec![], vec![]],
    };
    let row = run::summarize(&graded, "accuracy");
    let m = |k: &str| row.metrics[k].mean;
    assert!((m("accuracy") - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(m("accuracy/a"), 0.5);
    assert_eq!(m("accuracy/b"), 1.0);
    assert_eq!(m("accuracy_subject_mean"), 0.75);
    let ci = &row.metrics["accuracy_subject_mean"];
    assert!(ci.ci_low <= 0.75 && 0.75 <= ci.ci_high, "{ci:?}");
    // One subject: no breakdown.
    let single = run::Graded {
        subjects: vec![Some("a".into()); 3],
        ..graded
    };
    assert!(!run::summarize(&single, "accuracy")
        .metrics
        .contains_key("accuracy_subject_mean"));
}

/// pass@k of a code benchmark from per-problem pass counts over trials, against the closed
/// form: 2 problems × 10 samples, passing 3 and 10 times. pass@1 = (0.3 + 1) / 2;
/// pass@10 = (1 + 1) / 2 (n − c < k for the first: 7 < 10); no pass@100 (n < 100).
#[test]
fn pass_at_k_from_trials_matches_the_closed_form() {
    use metis_verify::{Task, VerifierFactory, VerifierSpec};
    // A verdict with `passed` as the code verifier writes it, built without running code.
    let v = VerifierFactory::new(None)
        .build(&VerifierSpec::for_task(Task::Mcq))
        .unwrap();
    let verdict = |passed: bool| {
        let mut v = v.grade("<think>t</think>A", "A").unwrap();
        v.metrics
            .insert("passed".into(), f64::from(u8::from(passed)));
        v
    };
    let verdicts: Vec<Vec<_>> = (0..10)
        .map(|t| vec![verdict(t < 3), verdict(true)])
        .collect();
    let graded = run::Graded {
        benchmark: "humaneval".into(),
        model: "m".into(),
        item_ids: vec!["0".into(), "1".into()],
        subjects: vec![None, None],
        verdicts,
        failed: 0,
        reasoning_chars: vec![vec![]; 10],
    };
    let row = run::summarize(&graded, "pass@1");
    assert!((row.metrics["pass@1"].mean - 0.65).abs() < 1e-12);
    assert_eq!(row.metrics["pass@10"].mean, 1.0);
    assert!(!row.metrics.contains_key("pass@100"));
    // pass@5 of the first problem by the closed form 1 − C(7,5)/C(10,5) = 1 − 21/252.
    let p5 = metis_verify::code::pass_at_k::pass_at_k(10, 3, 5).unwrap();
    assert!((p5 - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
}
