//! GRPO with rollouts from OpenAI-compatible servers, against in-process fake vLLM replicas
//! that really serve the policy: `load_lora_adapter` merges the PEFT adapter it is given into
//! the base model (with metis-train's own merge) and `/v1/completions` samples from the
//! result with the engine, answering in vLLM's shape (`token_id:N` tokens, temperature-scaled
//! log-probabilities as with `--logprobs-mode processed_logprobs`).
//!
//! `cargo test --release -p metis-train --test grpo_remote`

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use candle_core::{DType, Device};
use common::tiny_demo;
use metis_engine::generate::{generate_batch, GenerateOptions};
use metis_engine::model::Model;
use metis_engine::sampling::SamplingParams;
use metis_train::checkpoint::merge_lora;
use metis_train::demo::DemoPaths;
use metis_train::grpo::trainer::{run_grpo, GrpoConfig};
use metis_train::grpo::RemoteRollouts;
use metis_train::lora::LoraConfig;
use metis_train::model::TrainError;
use serde_json::{json, Value};

/// The demo model SFT-ed until its rollouts often follow the answer format, so that they
/// differ in reward and every GRPO step moves the policy.
fn sft_model(dir: &Path, demo: &DemoPaths) -> PathBuf {
    common::sft(demo, dir, 150)
}

fn config(model: &Path, demo: &DemoPaths, out: &Path, urls: &[String]) -> GrpoConfig {
    let mut cfg = GrpoConfig::new(model.to_path_buf(), demo.prompts.clone(), out.to_path_buf());
    cfg.num_generations = 3;
    cfg.prompts_per_step = 4;
    cfg.max_steps = 3;
    cfg.max_completion_len = 48;
    cfg.micro_batch = 6;
    cfg.temperature = 0.9;
    cfg.lr = 1e-2;
    cfg.save_every = 2;
    cfg.seed = 3;
    cfg.lora = Some(LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        ..LoraConfig::default()
    });
    let mut remote = RemoteRollouts::new(urls.to_vec());
    remote.max_attempts = 2;
    remote.request_timeout_s = 60.0;
    cfg.remote = Some(remote);
    cfg
}

/// What a replica was asked, in order.
#[derive(Clone, Debug, PartialEq)]
enum Event {
    Load(String),
    Unload(String),
    /// A completions request for this model name.
    Complete(String),
}

/// One fake vLLM replica.
struct Replica {
    base_dir: PathBuf,
    /// Merged models are written here.
    scratch: PathBuf,
    base: Arc<Model>,
    /// The control: sample from the base model whatever adapter is named.
    ignore_adapters: bool,
    adapters: Mutex<HashMap<String, Arc<Model>>>,
    events: Mutex<Vec<Event>>,
    merges: AtomicU64,
}

impl Replica {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The base with the PEFT adapter at `adapter` merged in, as an engine model.
    fn merged(&self, adapter: &Path) -> Result<Model, TrainError> {
        let n = self.merges.fetch_add(1, Ordering::SeqCst);
        let out = self.scratch.join(format!("merged-{n}"));
        merge_lora(&self.base_dir, adapter, &out)?;
        let model = Model::load(&out, Some(DType::F32), &Device::Cpu)?;
        let _ = std::fs::remove_dir_all(&out);
        Ok(model)
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({"object": "error", "message": message, "code": status.as_u16()})),
    )
        .into_response()
}

async fn load_lora(State(r): State<Arc<Replica>>, Json(body): Json<Value>) -> Response {
    let (Some(name), Some(path)) = (body["lora_name"].as_str(), body["lora_path"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, format!("bad request {body}"));
    };
    if r.adapters.lock().unwrap().contains_key(name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("The lora adapter '{name}' has already been loaded."),
        );
    }
    let (name, path) = (name.to_string(), PathBuf::from(path));
    let replica = r.clone();
    let merged = tokio::task::spawn_blocking(move || replica.merged(&path))
        .await
        .unwrap();
    match merged {
        Ok(model) => {
            r.adapters
                .lock()
                .unwrap()
                .insert(name.clone(), Arc::new(model));
            r.events.lock().unwrap().push(Event::Load(name.clone()));
            format!("Success: LoRA adapter '{name}' added successfully.").into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("loading {name}: {e}")),
    }
}

async fn unload_lora(State(r): State<Arc<Replica>>, Json(body): Json<Value>) -> Response {
    let name = body["lora_name"].as_str().unwrap_or_default().to_string();
    if r.adapters.lock().unwrap().remove(&name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("The lora adapter '{name}' cannot be found."),
        );
    }
    r.events.lock().unwrap().push(Event::Unload(name.clone()));
    format!("Success: LoRA adapter '{name}' removed successfully.").into_response()
}

async fn completions(State(r): State<Arc<Replica>>, Json(req): Json<Value>) -> Response {
    let name = req["model"].as_str().unwrap_or_default().to_string();
    let Some(adapter) = r.adapters.lock().unwrap().get(&name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("The model `{name}` does not exist."),
        );
    };
    r.events.lock().unwrap().push(Event::Complete(name.clone()));
    if req["logprobs"] != json!(1) || req["return_tokens_as_token_ids"] != json!(true) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("expected token-id logprobs: {req}"),
        );
    }
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .unwrap_or_default()
    };
    let prompt = ids(&req["prompt"]);
    let n = req["n"].as_u64().unwrap_or(1) as usize;
    let opts = GenerateOptions {
        max_tokens: req["max_tokens"].as_u64().unwrap() as usize,
        sampling: SamplingParams {
            temperature: req["temperature"].as_f64().unwrap() as f32,
            top_p: req["top_p"].as_f64().unwrap() as f32,
            seed: req["seed"].as_u64().unwrap(),
            ..SamplingParams::default()
        },
        stop_ids: ids(&req["stop_token_ids"]),
        ..GenerateOptions::default()
    };
    let model = if r.ignore_adapters {
        r.base.clone()
    } else {
        adapter
    };
    // Completion i is seeded seed + i, as vLLM seeds the n children of a request.
    let gens = tokio::task::spawn_blocking(move || {
        generate_batch(&model, None, &vec![prompt; n], &opts, false).unwrap()
    })
    .await
    .unwrap();
    let choices: Vec<Value> = gens
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            // vLLM keeps the stop id that ended a completion in its tokens.
            let mut tokens = g.ids;
            let mut logprobs = g.logprobs;
            if let Some((id, lp)) = g.stop_token {
                tokens.push(id);
                logprobs.push(lp);
            }
            json!({
                "index": i,
                "text": "",
                "logprobs": {
                    "tokens": tokens.iter().map(|t| format!("token_id:{t}")).collect::<Vec<_>>(),
                    "token_logprobs": logprobs,
                    "top_logprobs": null,
                    "text_offset": [],
                },
                "finish_reason": g.finish_reason.as_str(),
                "stop_reason": null,
            })
        })
        .collect();
    Json(json!({
        "id": "cmpl-fake",
        "object": "text_completion",
        "model": name,
        "choices": choices,
    }))
    .into_response()
}

/// Fake replicas on one runtime (the trainer drives its own client runtime).
struct Fleet {
    runtime: tokio::runtime::Runtime,
    replicas: Vec<Arc<Replica>>,
    urls: Vec<String>,
}

impl Fleet {
    fn start(base_dir: &Path, scratch: &Path, count: usize, ignore_adapters: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let base = Arc::new(Model::load(base_dir, Some(DType::F32), &Device::Cpu).unwrap());
        let mut replicas = Vec::new();
        let mut urls = Vec::new();
        for i in 0..count {
            let scratch = scratch.join(format!("replica-{i}"));
            std::fs::create_dir_all(&scratch).unwrap();
            let replica = Arc::new(Replica {
                base_dir: base_dir.to_path_buf(),
                scratch,
                base: base.clone(),
                ignore_adapters,
                adapters: Mutex::new(HashMap::new()),
                events: Mutex::new(Vec::new()),
                merges: AtomicU64::new(0),
            });
            let app = Router::new()
                .route("/v1/load_lora_adapter", post(load_lora))
                .route("/v1/unload_lora_adapter", post(unload_lora))
                .route("/v1/completions", post(completions))
                .with_state(replica.clone());
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            urls.push(format!("http://{}/v1", listener.local_addr().unwrap()));
            runtime.spawn(async move { axum::serve(listener, app).await });
            replicas.push(replica);
        }
        Self {
            runtime,
            replicas,
            urls,
        }
    }
}

/// Metrics lines without the wall-clock fields.
fn metrics(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            for k in ["tokens_per_s", "generation_s", "step_s"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

fn gaps(lines: &[Value]) -> Vec<f64> {
    lines
        .iter()
        .map(|m| m["rollout_logprob_gap"].as_f64().unwrap())
        .collect()
}

#[test]
fn remote_rollouts_serve_the_trained_policy_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tiny_demo(tmp.path(), 1);
    let model = sft_model(tmp.path(), &demo);
    let fleet = Fleet::start(&model, &tmp.path().join("fleet"), 2, false);
    let names: Vec<String> = (0..3).map(|s| format!("metis-grpo-step{s}")).collect();

    // Uninterrupted, with the servers' log-probabilities as the old ones.
    let full = tmp.path().join("full");
    let mut cfg = config(&model, &demo, &full, &fleet.urls);
    cfg.remote.as_mut().unwrap().use_server_logprobs = true;
    let outcome = run_grpo(&cfg, false).unwrap();
    assert_eq!(outcome.steps, 3);
    let lines = metrics(&full);
    assert_eq!(lines.len(), 3);
    assert!(
        lines[..2]
            .iter()
            .any(|m| m["grad_norm"].as_f64().unwrap() > 0.0),
        "the policy never moved, so the served adapters prove nothing: {lines:?}"
    );
    // The served adapter is the policy being trained: server and trainer agree to float noise.
    for (step, gap) in gaps(&lines).into_iter().enumerate() {
        assert!(gap < 1e-3, "step {}: rollout_logprob_gap {gap}", step + 1);
    }
    let mut completions = 0;
    for replica in &fleet.replicas {
        let events = replica.events();
        // One load per step on every replica; each superseded adapter is unloaded once the
        // next one is in, the last one at the end of the run.
        let admin: Vec<Event> = events
            .iter()
            .filter(|e| !matches!(e, Event::Complete(_)))
            .cloned()
            .collect();
        let (load, unload) = (
            |s: usize| Event::Load(names[s].clone()),
            |s: usize| Event::Unload(names[s].clone()),
        );
        assert_eq!(
            admin,
            vec![load(0), load(1), unload(0), load(2), unload(1), unload(2)],
            "{events:?}"
        );
        let mut current = None;
        for e in &events {
            match e {
                Event::Load(n) => current = Some(n),
                Event::Complete(m) => {
                    completions += 1;
                    assert_eq!(
                        Some(m),
                        current,
                        "completion with a stale adapter: {events:?}"
                    );
                }
                Event::Unload(_) => {}
            }
        }
    }
    assert_eq!(completions, 3 * cfg.prompts_per_step);
    assert!(
        !full.join("rollout-adapters").exists(),
        "adapter directories left behind"
    );

    // Interrupted after 2 steps (a checkpoint at 2), then resumed. The replicas still hold a
    // stale adapter under the name the resumed step loads (as after a crash): it is replaced.
    let parts = tmp.path().join("parts");
    let mut cfg = config(&model, &demo, &parts, &fleet.urls);
    cfg.remote.as_mut().unwrap().use_server_logprobs = true;
    cfg.stop_after_steps = Some(2);
    assert_eq!(run_grpo(&cfg, false).unwrap().steps, 2);
    let seen: Vec<usize> = fleet.replicas.iter().map(|r| r.events().len()).collect();
    for replica in &fleet.replicas {
        let stale = replica.merged(&full.join("final")).unwrap();
        replica
            .adapters
            .lock()
            .unwrap()
            .insert(names[2].clone(), Arc::new(stale));
    }
    cfg.stop_after_steps = None;
    let resumed = run_grpo(&cfg, true).unwrap();
    assert_eq!(resumed.steps, 3);
    assert_eq!(metrics(&full), metrics(&parts));
    assert_eq!(
        std::fs::read(full.join("final/adapter_model.safetensors")).unwrap(),
        std::fs::read(parts.join("final/adapter_model.safetensors")).unwrap()
    );
    for (replica, from) in fleet.replicas.iter().zip(seen) {
        let events = replica.events()[from..].to_vec();
        let n = events.len();
        // The stale adapter out, the fresh one in, completions from it, and out at the end.
        assert!(n >= 3, "{events:?}");
        assert_eq!(events[0], Event::Unload(names[2].clone()), "{events:?}");
        assert_eq!(events[1], Event::Load(names[2].clone()), "{events:?}");
        assert_eq!(events[n - 1], Event::Unload(names[2].clone()), "{events:?}");
        assert!(
            events[2..n - 1]
                .iter()
                .all(|e| e == &Event::Complete(names[2].clone())),
            "{events:?}"
        );
        assert!(replica.adapters.lock().unwrap().is_empty(), "{events:?}");
    }

    // The control: servers that ignore the adapter. The first step samples from the starting
    // weights (the adapter's B is zero), the later ones from a policy that has moved on.
    let control_fleet = Fleet::start(&model, &tmp.path().join("control-fleet"), 1, true);
    let control = tmp.path().join("control");
    let cfg = config(&model, &demo, &control, &control_fleet.urls);
    run_grpo(&cfg, false).unwrap();
    let control_lines = metrics(&control);
    let served = gaps(&lines);
    let ignored = gaps(&control_lines);
    eprintln!(
        "rollout_logprob_gap per step: adapter served {served:?}, adapter ignored {ignored:?}"
    );
    assert!(ignored[0] < 1e-3, "{ignored:?}");
    let worst_served = served.iter().copied().fold(0.0, f64::max);
    for gap in &ignored[1..] {
        assert!(
            *gap > 1e-2 && *gap > 20.0 * worst_served,
            "an ignored adapter went unnoticed: served {served:?}, ignored {ignored:?}"
        );
    }
    // Old log-probabilities are the policy's own by default: the ratio is exactly 1.
    for m in &control_lines {
        assert_eq!(m["clip_frac"].as_f64().unwrap(), 0.0, "{m}");
    }
    drop(fleet.runtime);
    drop(control_fleet.runtime);
}

#[test]
fn remote_rollouts_need_lora() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = GrpoConfig::new(
        tmp.path().join("model"),
        tmp.path().join("prompts.jsonl"),
        tmp.path().join("out"),
    );
    cfg.remote = Some(RemoteRollouts::new(vec!["http://127.0.0.1:9/v1".into()]));
    let err = run_grpo(&cfg, false).unwrap_err();
    assert!(matches!(err, TrainError::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string()
            .contains("remote rollouts hot-load a LoRA adapter; add --lora-rank"),
        "{err}"
    );
}

#[test]
fn an_unreachable_server_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tiny_demo(tmp.path(), 1);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let out = tmp.path().join("out");
    let cfg = config(&demo.model, &demo, &out, std::slice::from_ref(&url));
    let err = run_grpo(&cfg, false).unwrap_err();
    assert!(matches!(err, TrainError::RemoteRollout(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{url}/load_lora_adapter")), "{msg}");
    // Nothing of a step was written.
    assert!(!out.join("checkpoint-1").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        ""
    );
}
