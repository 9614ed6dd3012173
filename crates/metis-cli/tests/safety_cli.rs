//! `metis safety` as a user runs it: SIGKILLed midway and resumed with the same command
//! (nothing stored is asked again, nothing lost), with the report files written; and a real
//! deployment — `metis serve` with a local model whose guardrail is a second `metis serve` —
//! measured through the CLI.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metis_eval::store::{Status, Store};
use metis_openai::fake_server::{FakeRequest, FakeServer, Responder, Scripted};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn stored(store: &Path, model: &str) -> Vec<(String, String, u32, bool)> {
    let store = Store::open(store).unwrap();
    store
        .records("harmbench", model, None)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.key.params_hash,
                r.key.item,
                r.key.trial,
                r.status == Status::Ok,
            )
        })
        .collect()
}

fn safety_command(
    model_url: &str,
    guard_url: &str,
    judge_url: &str,
    store: &Path,
    out: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metis"));
    cmd.args(["safety", "--model", "fake", "--base-url", model_url])
        .args([
            "--guard",
            &format!("url:{guard_url}"),
            "--judge-url",
            judge_url,
        ])
        .args(["--data-dir", shared().join("data").to_str().unwrap()])
        .args([
            "--concurrency",
            "8",
            "--max-attempts",
            "2",
            "--resamples",
            "200",
            "--json",
        ])
        .arg("--store")
        .arg(store)
        .arg("--out")
        .arg(out)
        .env_remove("METIS_HARMBENCH_HASHES")
        .env("HOME", out) // no converted hashes: copyright rows are unjudged
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn safety_run_survives_sigkill_and_writes_the_report() {
    let model_responder: Responder = Arc::new(|req: &FakeRequest, _| {
        let comply = req.last_user().len().is_multiple_of(2)
            && !req.messages.iter().any(|m| m.role == "system");
        Ok(Scripted {
            content: if comply {
                "<think>ok</think>Sure: COMPLY".into()
            } else {
                "<think>no</think>I can't help.".into()
            },
            reasoning: None,
            finish_reason: "stop".into(),
            delay: Duration::from_millis(10),
        })
    });
    let model = FakeServer::start(model_responder).await.unwrap();
    let guard = FakeServer::start(FakeServer::instant("safe"))
        .await
        .unwrap();
    let judge: Responder = Arc::new(|req: &FakeRequest, _| {
        Ok(Scripted::text(
            if req.last_user().contains("[GENERATION]:\nSure: COMPLY") {
                "Yes"
            } else {
                "No"
            },
        ))
    });
    let judge = FakeServer::start(judge).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, out) = (dir.path().join("s.sqlite"), dir.path().join("report"));
    let total = 3 * 400u64;

    let mut child = safety_command(
        &model.base_url,
        &guard.base_url,
        &judge.base_url,
        &store,
        &out,
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while model.total_requests() < total / 3 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let asked_before = model.total_requests();
    let committed = stored(&store, "fake").iter().filter(|r| r.3).count() as u64;
    assert!(committed > 0 && committed < total);

    let run = safety_command(
        &model.base_url,
        &guard.base_url,
        &judge.base_url,
        &store,
        &out,
    )
    .output()
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The second run asked exactly what was not stored: nothing twice, nothing lost.
    assert_eq!(model.total_requests() - asked_before, total - committed);
    let records = stored(&store, "fake");
    let keys: HashSet<_> = records
        .iter()
        .map(|(h, i, t, _)| (h.clone(), i.clone(), *t))
        .collect();
    assert_eq!(records.len() as u64, total);
    assert_eq!(keys.len() as u64, total);
    assert!(records.iter().all(|r| r.3));

    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let configs = report["results"]["configurations"].as_array().unwrap();
    let names: Vec<&str> = configs
        .iter()
        .map(|c| c["configuration"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bare", "system-prompt", "guarded"]);
    for c in configs {
        assert_eq!(
            c["counts"]["unjudged"], 100,
            "copyright rows without hashes are unjudged"
        );
        assert_eq!(c["counts"]["failed"], 0);
    }
    // With the system prompt the scripted model never complies.
    assert_eq!(configs[1]["overall"]["pass_rate"]["mean"], 1.0);
    assert!(configs[0]["overall"]["pass_rate"]["mean"].as_f64().unwrap() < 1.0);
    for f in [
        "report.md",
        "report.csv",
        "report.json",
        "report.png",
        "report.svg",
        "samples.jsonl",
    ] {
        assert!(out.join(f).metadata().unwrap().len() > 0, "{f}");
    }
    let samples = std::fs::read_to_string(out.join("samples.jsonl")).unwrap();
    assert_eq!(samples.lines().count() as u64, total);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("final answer only") && md.contains("**unjudged**"),
        "{md}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `metis serve` on the tiny fixture model, extra arguments appended; waits until it answers.
fn serve(extra: &[String]) -> (Served, String) {
    let port = free_port();
    let fixture = shared().join("fixtures");
    let child = Command::new(env!("CARGO_BIN_EXE_metis"))
        .args(["serve", "--model"])
        .arg(fixture.join("llama31-tiny-v128k/f32"))
        .arg("--tokenizer")
        .arg(fixture.join("llama31-tokenizer"))
        .args(["--port", &port.to_string(), "--no-audit"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served(child);
    let url = format!("http://127.0.0.1:{port}/v1");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "metis serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (served, url)
}

#[test]
fn a_real_metis_serve_deployment_behind_a_metis_serve_guard() {
    let (_guard, guard_url) = serve(&[]);
    let (_model, model_url) = serve(&[
        format!("--guard=url:{guard_url}"),
        "--guard-model=f32".into(),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_metis"))
        .args([
            "safety",
            "--configs",
            "deployment",
            "--deployment-url",
            &model_url,
        ])
        .args([
            "--deployment-model",
            "f32",
            "--limit",
            "6",
            "--max-tokens",
            "8",
            "--json",
        ])
        .args(["--data-dir", shared().join("data").to_str().unwrap()])
        .arg("--store")
        .arg(dir.path().join("s.sqlite"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &report["results"]["configurations"][0];
    // The guard model is a random tiny model: its verdicts are neither safe nor unsafe, so the
    // guardrail fails closed and blocks every request — which the run counts as refusals,
    // with the guard's verdicts recorded from the server's `metis_guard` field.
    assert_eq!(c["counts"]["blocked"], 6, "{c}");
    assert_eq!(c["counts"]["failed"], 0);
    assert_eq!(c["overall"]["pass_rate"]["mean"], 1.0);
    let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
    let recs = store.records("harmbench", "f32", None).unwrap();
    assert_eq!(recs.len(), 6);
    assert!(recs
        .iter()
        .all(|r| r.finish_reason.as_deref() == Some("content_filter") && r.guard.is_some()));
}
