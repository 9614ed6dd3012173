//! Flags shared by the commands that ask a model (`metis eval`, `metis safety`): where the
//! model is (endpoints or the local engine), where a local model runs and in what dtype
//! (also `generate`, `chat`, `serve`), how endpoint requests are retried, and the overrides
//! of a run's sampling defaults. Each is a clap struct flattened into the command's own
//! flags, with the one conversion to the library type beside it.

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{DType, Device};
use metis_engine::device::ComputeDevice;
use metis_eval::local::LocalModel;
use metis_eval::run::{Backend, Sampling};
use metis_openai::{Client, Endpoint, RetryPolicy};

/// The model asked: OpenAI-compatible endpoints, or a local model run by the Metis engine.
#[derive(clap::Args, Debug)]
pub struct ModelSourceArgs {
    /// Base URL of an OpenAI-compatible API (e.g. http://127.0.0.1:8000/v1); repeat or
    /// separate with commas for data-parallel replicas.
    #[arg(long = "base-url", env = "OPENAI_BASE_URL", value_delimiter = ',')]
    pub base_urls: Vec<String>,
    /// Run a local model (HF directory or .gguf) in-process with the Metis engine instead of
    /// asking an endpoint.
    #[arg(long, conflicts_with = "base_urls")]
    pub local_model: Option<PathBuf>,
    /// Tokenizer directory for --local-model (default: the model's own).
    #[arg(long, requires = "local_model")]
    pub tokenizer: Option<PathBuf>,
    /// For --local-model: open the reasoning block (`<think>\n`) after the generation prompt.
    #[arg(long, requires = "local_model")]
    pub think: bool,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Environment variable holding the endpoints' API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
}

impl ModelSourceArgs {
    /// The local engine (decoding up to `max_batch` requests as one batch) or a client of the
    /// endpoints; `None` when neither is given.
    pub fn backend(&self, retry: &RetryArgs, max_batch: usize) -> anyhow::Result<Option<Backend>> {
        if let Some(dir) = &self.local_model {
            let (device, dtype) = self.placement.open()?;
            let tokenizer = self.tokenizer.as_deref();
            let local = LocalModel::load(dir, tokenizer, &device, dtype, self.think, max_batch)
                .map_err(|e| anyhow::anyhow!("--local-model {}: {e}", dir.display()))?;
            return Ok(Some(Backend::Local(local)));
        }
        if self.base_urls.is_empty() {
            return Ok(None);
        }
        Ok(Some(Backend::Http(
            retry.client(&self.base_urls, &self.api_key_env)?,
        )))
    }
}

/// Where a local model runs (`--device`) and in what dtype (`--dtype`).
#[derive(clap::Args, Debug, Clone)]
pub struct PlacementArgs {
    /// Where local models run: cpu, cuda or cuda:N (cuda needs a build with the `cuda`
    /// feature).
    #[arg(long, default_value_t = ComputeDevice::Cpu)]
    pub device: ComputeDevice,
    /// Compute dtype of local models (default: bf16 on a GPU, the checkpoint's on the CPU;
    /// GGUF files compute in f32).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
}

/// The compute dtypes a local model can run in.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeArg {
    F32,
    Bf16,
    F16,
}

impl PlacementArgs {
    /// The opened device and the dtype asked for (`None`: the engine's default there).
    pub fn open(&self) -> anyhow::Result<(Device, Option<DType>)> {
        Ok((self.device.open()?, self.dtype.map(DType::from)))
    }
}

impl From<DtypeArg> for DType {
    fn from(d: DtypeArg) -> DType {
        match d {
            DtypeArg::F32 => DType::F32,
            DtypeArg::Bf16 => DType::BF16,
            DtypeArg::F16 => DType::F16,
        }
    }
}

/// How requests to an endpoint are timed out and retried.
#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Attempts per request (retries back off exponentially, honouring Retry-After).
    #[arg(long, default_value_t = 6)]
    pub max_attempts: u32,
}

impl RetryArgs {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(self.timeout.max(1)),
        }
    }

    /// A client of `urls` (replicas), authenticated by the key in environment variable
    /// `key_env` when it is set.
    pub fn client(&self, urls: &[String], key_env: &str) -> anyhow::Result<Client> {
        let api_key = std::env::var(key_env).ok().filter(|k| !k.is_empty());
        let endpoints = urls
            .iter()
            .map(|u| Endpoint {
                base_url: u.clone(),
                api_key: api_key.clone(),
            })
            .collect();
        Ok(Client::new(endpoints, self.policy())?)
    }
}

/// Overrides of a run's sampling defaults.
#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Base seed; trial t uses seed + t.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// `defaults` with the flags given.
    pub fn over(&self, defaults: Sampling) -> Sampling {
        Sampling {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            seed: self.seed.unwrap_or(defaults.seed),
        }
    }
}
