//! AlpacaEval 2 end to end on a fixture of ten instructions: the fake server plays the model
//! and, separately, a scripted logprob judge; the harness queries, judges, stores and
//! summarises, and the numbers are the ones computed by hand (raw) and by upstream's code
//! (LC, the `end_to_end` case of `tests/fixtures/alpacaeval_reference.json`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use metis_eval::benchmarks::{self, Benchmark, DataSource};
use metis_eval::judge::{self, GlmReference, Judge};
use metis_eval::run::{self, Backend, RunConfig, Sampling};
use metis_eval::store::{Status, Store};
use metis_openai::fake_server::{FakeRequest, FakeServer, LogprobResponder, Responder, Scripted};
use metis_openai::{Client, Endpoint, RetryPolicy};
use metis_verify::Protocol;

/// Lengths in characters of the references and of the answers the judge sees (the `end_to_end`
/// case of tools/reference/alpacaeval_lc.py).
const REFERENCE_CHARS: [usize; 10] = [120, 300, 80, 500, 250, 60, 410, 150, 90, 220];
const ANSWER_CHARS: [usize; 10] = [200, 90, 300, 480, 100, 400, 50, 0, 260, 210];
/// The probability the scripted judge gives the model's answer; `None`: the judge answers
/// without `m` or `M` among its top log-probabilities. Item 7's answer is truncated (its
/// reasoning never closes) and is never sent to the judge.
const MODEL_WINS: [Option<f64>; 10] = [
    Some(0.9),
    Some(0.35),
    Some(0.85),
    Some(0.7),
    None,
    Some(0.8),
    Some(0.6),
    None,
    Some(0.95),
    Some(0.75),
];
const TRUNCATED: usize = 7;
const JUDGE_INVALID: usize = 4;

fn instruction(k: usize) -> String {
    format!("Instruction number {k}: write something useful.")
}

/// A text of exactly `len` characters that names its item (so texts never contain each other).
fn text(tag: &str, k: usize, len: usize) -> String {
    let head = format!("{tag}{k:02}:");
    format!("{head}{}", "é".repeat(len - head.chars().count()))
}

fn reference(k: usize) -> String {
    text("reference", k, REFERENCE_CHARS[k])
}

fn answer(k: usize) -> String {
    text("answer", k, ANSWER_CHARS[k])
}

/// The data file in upstream's layout (`results/<model>/model_outputs.json`).
fn write_data(dir: &Path) {
    let rows: Vec<serde_json::Value> = (0..10)
        .map(|k| {
            serde_json::json!({
                "dataset": if k % 2 == 0 { "helpful_base" } else { "koala" },
                "instruction": instruction(k),
                "output": reference(k),
                "generator": "gpt4_1106_preview",
            })
        })
        .collect();
    let path = dir.join("alpacaeval/gpt4_1106_preview-model_outputs.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
}

async fn load(dir: &Path) -> Benchmark {
    benchmarks::load(
        "alpacaeval2",
        &DataSource::Dir(dir.to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap()
}

fn item_of(prompt: &str) -> usize {
    (0..10).find(|&k| prompt == instruction(k)).unwrap()
}

/// The model: thinks, then answers; item 7 never closes its reasoning.
fn model() -> Responder {
    Arc::new(|req: &FakeRequest, _| {
        let k = item_of(req.last_user());
        let content = if k == TRUNCATED {
            "<think>this one runs out of tokens".to_owned()
        } else {
            format!("<think>plan for {k}</think>\n\n{}\n", answer(k))
        };
        Ok(Scripted::text(content))
    })
}

/// The judge: finds the item and which output it shows first, and gives the model's answer
/// the scripted probability (as `M` when it is second, as `m` when it is first).
fn judge_responder(seen_swaps: Arc<Mutex<Vec<(usize, bool)>>>) -> LogprobResponder {
    Arc::new(move |req: &FakeRequest, _| {
        let user = req.last_user();
        let k = (0..10).find(|&k| user.contains(&instruction(k))).unwrap();
        let (at_answer, at_reference) = (
            user.find(&answer(k)).unwrap(),
            user.find(&reference(k)).unwrap(),
        );
        let model_first = at_answer < at_reference;
        seen_swaps.lock().unwrap().push((k, model_first));
        let top = match MODEL_WINS[k] {
            None => vec![("Both".to_owned(), -0.2), ("The".to_owned(), -1.9)],
            Some(q) => {
                let (first, second) = if model_first {
                    (q, 1.0 - q)
                } else {
                    (1.0 - q, q)
                };
                vec![("m".to_owned(), first.ln()), ("M".to_owned(), second.ln())]
            }
        };
        Ok((Scripted::text(top[0].0.clone()), top))
    })
}

fn client(url: &str) -> Client {
    Client::new(vec![Endpoint::new(url)], RetryPolicy::default()).unwrap()
}

fn config(dir: &Path, store: PathBuf) -> RunConfig {
    RunConfig {
        benchmarks: vec!["alpacaeval2".into()],
        model: "fake".into(),
        sampling: Sampling::reasoning(),
        trials: 1,
        system_prompt: None,
        concurrency: 4,
        protocol: Protocol::LastLine,
        data: DataSource::Dir(dir.to_owned()),
        store,
        limit: None,
        progress: false,
    }
}

#[tokio::test]
async fn loader_reads_upstream_outputs_and_names_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let b = load(dir.path()).await;
    assert_eq!(b.items.len(), 10);
    assert_eq!(b.items[3].id, "3");
    assert_eq!(b.items[3].prompt, instruction(3), "the instruction as is");
    assert_eq!(
        b.items[3].gold,
        reference(3),
        "the reference output verbatim"
    );
    assert_eq!(b.items[3].subject.as_deref(), Some("koala"));
    assert!(
        b.notes.iter().any(|n| n.contains("gpt4_1106_preview")),
        "{:?}",
        b.notes
    );
    assert!(
        b.notes.iter().any(|n| n.contains("not pinned by content")),
        "{:?}",
        b.notes
    );

    // A null output on the third element (which opens on line 14 of the pretty JSON).
    let path = dir
        .path()
        .join("alpacaeval/gpt4_1106_preview-model_outputs.json");
    let mut rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    rows[2]["output"] = serde_json::Value::Null;
    std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    let err = benchmarks::load(
        "alpacaeval2",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 14") && err.contains("\"output\"") && err.contains("null"),
        "{err}"
    );
}

#[tokio::test]
async fn scripted_judge_gives_the_hand_and_upstream_win_rates_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let bench = load(dir.path()).await;
    let store = dir.path().join("eval.sqlite");
    let model_server = FakeServer::start(model()).await.unwrap();
    let swaps = Arc::new(Mutex::new(Vec::new()));
    let judge_server = FakeServer::start_with_logprobs(judge_responder(swaps.clone()))
        .await
        .unwrap();
    let judge = Judge {
        model: "scripted-judge".into(),
        client: client(&judge_server.base_url),
    };
    let cfg = config(dir.path(), store.clone());
    let benches = vec![bench];
    let bench = &benches[0];
    let stop = Arc::new(AtomicBool::new(false));
    run::query(
        &cfg,
        &benches,
        &Backend::Http(client(&model_server.base_url)),
        stop.clone(),
    )
    .await
    .unwrap();

    let records = Store::open(&store)
        .unwrap()
        .records("alpacaeval2", "fake", None)
        .unwrap();
    let stats = judge::judge_pass(&store, bench, "fake", &records, &judge, 4, stop.clone())
        .await
        .unwrap();
    assert_eq!(stats.asked, 9, "{stats:?}");
    assert_eq!(stats.not_judged, 1, "the truncated answer is not sent");
    assert_eq!(stats.judge_invalid, 1);

    // What the judge saw: only post-</think> answers, the upstream request, the upstream order.
    for (req, _) in judge_server.request_log() {
        assert!(req.logprobs && req.top_logprobs == Some(5) && req.max_tokens == 1);
        assert_eq!(req.temperature, 1.0);
        assert!(!req.last_user().contains("<think>") && !req.last_user().contains("plan for"));
    }
    for (k, model_first) in swaps.lock().unwrap().iter() {
        let c = judge::alpaca::Comparison {
            instruction: &instruction(*k),
            reference: &reference(*k),
            answer: &answer(*k),
        };
        assert_eq!(*model_first, c.swapped(), "item {k}");
    }
    let swapped: Vec<bool> = swaps.lock().unwrap().iter().map(|s| s.1).collect();
    assert!(
        swapped.contains(&true) && swapped.contains(&false),
        "{swapped:?}"
    );

    // Stored judgments: preferences in the unswapped order, whatever the order shown.
    let judgments = Store::open(&store)
        .unwrap()
        .judgments("alpacaeval2", "fake")
        .unwrap();
    assert_eq!(judgments.len(), 9);
    assert!(judgments
        .iter()
        .all(|j| j.key.item != TRUNCATED.to_string()));
    for j in &judgments {
        let k: usize = j.key.item.parse().unwrap();
        assert_eq!(j.status, Status::Ok);
        assert_eq!(j.preference.is_none(), k == JUDGE_INVALID, "{j:?}");
        match MODEL_WINS[k] {
            Some(q) => assert!((j.preference.unwrap() - (1.0 + q)).abs() < 1e-12, "{j:?}"),
            None => assert_eq!(j.preference, None),
        }
    }

    let (row, report) = judge::grade_judged(
        bench,
        "fake",
        1,
        records.clone(),
        |_, _, _| true,
        &judgments,
        "scripted-judge",
        &GlmReference::Approximation,
    );
    // Raw win rate by hand: the nine preferences other than the judge-invalid one, minus 1:
    // 0.9, 0.35, 0.85, 0.7, 0.8, 0.6, 0 (the truncated answer, a loss), 0.95, 0.75;
    // sum 5.9 over 9 = 0.655 555… (upstream's get_winrate gives 65.5556 on the same input).
    let raw = row.metrics["win_rate"].mean;
    assert!((raw - 5.9 / 9.0).abs() < 1e-12, "{raw}");
    assert!((report.trials[0].win_rate.win_rate - 100.0 * 5.9 / 9.0).abs() < 1e-9);
    // Discrete: wins 0.9, 0.85, 0.7, 0.8, 0.6, 0.95, 0.75 → 7 of 9.
    assert!((row.metrics["discrete_win_rate"].mean - 7.0 / 9.0).abs() < 1e-12);
    // LC: upstream's glm_winrate (tol 1e−10) on these lengths and preferences gives
    // 67.142678 % (67.141638 % at liblinear's default tol); see the fixture.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/alpacaeval_reference.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let case = &fixture["cases"][3];
    assert_eq!(case["name"], "end_to_end");
    let want = case["expected"]["tight"]["length_controlled_winrate"]
        .as_f64()
        .unwrap();
    let lc = row.metrics["lc_win_rate"].mean * 100.0;
    assert!((lc - want).abs() < 1e-6, "LC {lc} vs upstream {want}");
    assert!((lc - 67.142_678).abs() < 1e-5);
    assert_eq!(row.primary_metric, "lc_win_rate");
    assert_eq!(
        (report.n_answered, report.n_judged, report.n_judge_invalid),
        (10, 9, 1)
    );
    assert_eq!((report.n_empty_answers, report.n_unjudged), (1, 0));
    assert_eq!(
        report.judge_identity(),
        format!("scripted-judge @ {}", judge_server.base_url)
    );
    // The judge-invalid item is neither a win nor a loss: it has no win_rate at all.
    assert_eq!(row.metrics["judge_invalid"].mean, 1.0 / 9.0);

    // Per-sample output carries each response's judgment (order shown, logprobs, preference).
    let mut out = Vec::new();
    let n =
        metis_eval::samples::write_samples(&Store::open(&store).unwrap(), bench, "fake", &mut out)
            .unwrap();
    assert_eq!(n, 10);
    for line in String::from_utf8(out).unwrap().lines() {
        let sample: serde_json::Value = serde_json::from_str(line).unwrap();
        let k: usize = sample["item"].as_str().unwrap().parse().unwrap();
        let judgments = sample["judgments"].as_array();
        if k == TRUNCATED {
            assert!(judgments.is_none(), "{sample}");
            continue;
        }
        let j = &judgments.unwrap()[0];
        assert_eq!(j["key"]["judge"], "scripted-judge");
        assert_eq!(j["top_logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(j["preference"].is_null(), k == JUDGE_INVALID, "{sample}");
    }

    // Resume: a second pass asks the judge nothing.
    let before = judge_server.total_requests();
    let again = judge::judge_pass(&store, bench, "fake", &records, &judge, 4, stop)
        .await
        .unwrap();
    assert_eq!((again.asked, again.reused), (0, 9), "{again:?}");
    assert_eq!(judge_server.total_requests(), before);

    // Another judge model's judgments are its own: nothing stored is reused for it.
    let (_, other) = judge::grade_judged(
        bench,
        "fake",
        1,
        records,
        |_, _, _| true,
        &judgments,
        "another-judge",
        &GlmReference::Approximation,
    );
    assert_eq!((other.n_judged, other.n_unjudged), (0, 9));
    model_server.shutdown().await;
    judge_server.shutdown().await;
}

#[tokio::test]
async fn failed_judge_requests_are_stored_as_failed_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let benches = vec![load(dir.path()).await];
    let store = dir.path().join("eval.sqlite");
    let model_server = FakeServer::start(model()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = config(dir.path(), store.clone());
    run::query(
        &cfg,
        &benches,
        &Backend::Http(client(&model_server.base_url)),
        stop.clone(),
    )
    .await
    .unwrap();
    let records = Store::open(&store)
        .unwrap()
        .records("alpacaeval2", "fake", None)
        .unwrap();
    // A judge that refuses item 0 (HTTP 400, not retried) and answers the rest.
    let swaps = Arc::new(Mutex::new(Vec::new()));
    let good = judge_responder(swaps);
    let refusing: LogprobResponder = Arc::new(move |req: &FakeRequest, attempt| {
        if req.last_user().contains(&instruction(0)) {
            return Err(metis_openai::fake_server::Fault::Http {
                status: 400,
                body: "no".into(),
            });
        }
        good(req, attempt)
    });
    let server = FakeServer::start_with_logprobs(refusing).await.unwrap();
    let judge = Judge {
        model: "scripted-judge".into(),
        client: client(&server.base_url),
    };
    let s = judge::judge_pass(
        &store,
        &benches[0],
        "fake",
        &records,
        &judge,
        2,
        stop.clone(),
    )
    .await
    .unwrap();
    assert_eq!((s.asked, s.failed), (8, 1), "{s:?}");
    let judgments = Store::open(&store)
        .unwrap()
        .judgments("alpacaeval2", "fake")
        .unwrap();
    let failed: Vec<_> = judgments
        .iter()
        .filter(|j| j.status == Status::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].error.as_deref().unwrap().contains("400"));
    let (_, report) = judge::grade_judged(
        &benches[0],
        "fake",
        1,
        records.clone(),
        |_, _, _| true,
        &judgments,
        "scripted-judge",
        &GlmReference::Approximation,
    );
    assert_eq!(report.n_unjudged, 1, "a failed judgment is not a verdict");
    // The next pass asks only for the failed one.
    let again = judge::judge_pass(&store, &benches[0], "fake", &records, &judge, 2, stop)
        .await
        .unwrap();
    assert_eq!((again.reused, again.failed, again.asked), (8, 1, 0));
    model_server.shutdown().await;
    server.shutdown().await;
}
