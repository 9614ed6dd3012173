//! Load bench of the server: 64 concurrent streaming chat clients on loopback for a fixed
//! time (60 s; `METIS_BENCH_SECS` overrides, `METIS_BENCH_CLIENTS` changes the count) against
//! a small random-init Llama model (≈17M parameters, the Llama 3 vocabulary and the fixture
//! tokenizer) that the bench writes to a temporary directory itself.
//!
//! Prints the error count (must be zero), time-to-first-token and total latency p50/p99,
//! aggregate generated tokens/s and the process's peak RSS.
//!
//! `cargo bench -p metis-serve --bench serve_load`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

const HIDDEN: usize = 64;
const LAYERS: usize = 4;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const INTER: usize = 256;
const VOCAB: usize = 128_256;
const MAX_TOKENS: usize = 32;

/// xorshift64*: deterministic weights without a dependency.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Writes config.json, generation_config.json and a random model.safetensors.
fn write_model(dir: &Path) -> usize {
    let head_dim = HIDDEN / HEADS;
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": head_dim,
        "vocab_size": VOCAB, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "float32",
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        json!({"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}).to_string(),
    )
    .unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN]),
        ("model.norm.weight".into(), vec![HIDDEN]),
        ("lm_head.weight".into(), vec![VOCAB, HIDDEN]),
    ];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![HEADS * head_dim, HIDDEN]),
            ("self_attn.k_proj.weight", vec![KV_HEADS * head_dim, HIDDEN]),
            ("self_attn.v_proj.weight", vec![KV_HEADS * head_dim, HIDDEN]),
            ("self_attn.o_proj.weight", vec![HIDDEN, HEADS * head_dim]),
            ("mlp.gate_proj.weight", vec![INTER, HIDDEN]),
            ("mlp.up_proj.weight", vec![INTER, HIDDEN]),
            ("mlp.down_proj.weight", vec![HIDDEN, INTER]),
            ("input_layernorm.weight", vec![HIDDEN]),
            ("post_attention_layernorm.weight", vec![HIDDEN]),
        ] {
            tensors.push((format!("{p}.{name}"), shape));
        }
    }
    // safetensors: u64 LE header length, JSON header, then the raw little-endian data.
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = Value::Object(header).to_string().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut params = 0;
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product();
        params += n;
        let fan_in = *shape.last().unwrap() as f32;
        for _ in 0..n {
            let v = if name.ends_with("norm.weight") {
                1.0
            } else if name.contains("embed") {
                rng.uniform() * 1.7
            } else {
                rng.uniform() * 1.7 / fan_in.sqrt()
            };
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(dir.join("model.safetensors"), out).unwrap();
    params
}

fn tokenizer_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/llama31-tokenizer"
    ))
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Default)]
struct ClientStats {
    ttft: Vec<f64>,
    total: Vec<f64>,
    tokens: u64,
    errors: Vec<String>,
}

/// One streaming request; returns (ttft s, total s, completion tokens).
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    i: u64,
) -> Result<(f64, f64, u64), String> {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": format!("Request {i}: explain CWE-{} briefly.", 20 + i % 900)}],
        "max_tokens": MAX_TOKENS, "temperature": 0.7, "seed": i, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let t0 = Instant::now();
    let resp = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut ttft = None;
    let mut tokens = None;
    let mut done = false;
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.map_err(|e| e.to_string())?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
            if v.get("error").is_some() {
                return Err(v.to_string());
            }
            let delta = &v["choices"][0]["delta"];
            let has_text = ["content", "reasoning_content"]
                .iter()
                .any(|k| delta[k].as_str().is_some_and(|s| !s.is_empty()));
            if has_text && ttft.is_none() {
                ttft = Some(t0.elapsed().as_secs_f64());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n);
            }
        }
    }
    let total = t0.elapsed().as_secs_f64();
    match (done, tokens) {
        (true, Some(n)) => Ok((ttft.unwrap_or(total), total, n)),
        _ => Err("stream ended without usage and [DONE]".into()),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let secs: u64 = std::env::var("METIS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let clients: u64 = std::env::var("METIS_BENCH_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    let params = write_model(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut config = metis_serve::ServeConfig::new(dir.path());
        config.tokenizer_dir = Some(tokenizer_dir());
        config.port = 0;
        config.served_model_name = Some("bench".into());
        config.max_batch = 64;
        config.max_queue = 256;
        config.audit_db = Some(dir.path().join("audit.sqlite"));
        let server = metis_serve::start(config).await.expect("server starts");
        let url = format!("http://{}/v1/chat/completions", server.addr);
        println!(
            "serve_load: {clients} streaming clients for {secs} s, model {:.1}M params (hidden {HIDDEN}, {LAYERS} layers, vocab {VOCAB}), max_tokens {MAX_TOKENS}",
            params as f64 / 1e6
        );
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let t0 = Instant::now();
        let url = Arc::new(url);
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let client = client.clone();
                let url = Arc::clone(&url);
                tokio::spawn(async move {
                    let mut stats = ClientStats::default();
                    let mut i = c * 1_000_000;
                    while Instant::now() < deadline {
                        match one_request(&client, &url, "bench", i).await {
                            Ok((ttft, total, n)) => {
                                stats.ttft.push(ttft);
                                stats.total.push(total);
                                stats.tokens += n;
                            }
                            Err(e) => stats.errors.push(e),
                        }
                        i += 1;
                    }
                    stats
                })
            })
            .collect();
        let mut all = ClientStats::default();
        for t in tasks {
            let s = t.await.unwrap();
            all.ttft.extend(s.ttft);
            all.total.extend(s.total);
            all.tokens += s.tokens;
            all.errors.extend(s.errors);
        }
        let wall = t0.elapsed().as_secs_f64();
        all.ttft.sort_by(f64::total_cmp);
        all.total.sort_by(f64::total_cmp);
        let m = &server.metrics().engine;
        println!("requests ok       {}", all.total.len());
        println!(
            "errors            {}{}",
            all.errors.len(),
            if all.errors.is_empty() { "  (zero-error check passed)" } else { "  (ZERO-ERROR CHECK FAILED)" }
        );
        for e in all.errors.iter().take(5) {
            println!("  error: {e}");
        }
        println!("ttft   p50/p99    {:.1} / {:.1} ms", percentile(&all.ttft, 0.5) * 1e3, percentile(&all.ttft, 0.99) * 1e3);
        println!("total  p50/p99    {:.1} / {:.1} ms", percentile(&all.total, 0.5) * 1e3, percentile(&all.total, 0.99) * 1e3);
        println!("tokens/s (aggr.)  {:.0}  ({} tokens in {wall:.1} s)", all.tokens as f64 / wall, all.tokens);
        let steps = m.decode_steps.load(std::sync::atomic::Ordering::Relaxed);
        let gen = m.generated_tokens.load(std::sync::atomic::Ordering::Relaxed);
        let prefills = m.prefills.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "engine            {steps} decode steps, {:.1} tokens/step (excluding the {prefills} first tokens from prefill)",
            (gen - prefills.min(gen)) as f64 / steps.max(1) as f64
        );
        match peak_rss_mib() {
            Some(mib) => println!("peak RSS          {mib:.0} MiB"),
            None => println!("peak RSS          n/a"),
        }
        server.shutdown().await.unwrap();
        if !all.errors.is_empty() {
            std::process::exit(1);
        }
    });
}
