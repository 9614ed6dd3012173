//! Deployment settings of a server.

use std::path::PathBuf;

use candle_core::{DType, Device};

use crate::auth::ApiKeys;
use crate::guard::Guard;
use crate::system_prompt::{SystemPromptPolicy, DEFAULT_SYSTEM_PROMPT};

/// Everything [`crate::start`] needs; [`ServeConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Hugging Face model directory (or `.gguf` file).
    pub model_dir: PathBuf,
    /// Tokenizer to use instead of the model's own: a directory with `tokenizer.json` (and the
    /// chat template) or a `.gguf` file.
    pub tokenizer_dir: Option<PathBuf>,
    /// Where the model (and a local guard) runs; the CPU by default.
    pub device: Device,
    /// Compute dtype (default: bf16 on a GPU, the checkpoint's on the CPU).
    pub dtype: Option<DType>,
    /// Address to bind; anything but loopback needs API keys.
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Model id in `/v1/models` and requests; the model directory's name by default.
    pub served_model_name: Option<String>,
    /// The deployment's system prompt.
    pub system_prompt: String,
    pub system_prompt_policy: SystemPromptPolicy,
    /// Open the reasoning block (`<think>\n`) after the generation prompt when the chat
    /// template does not, so everything before `</think>` is reasoning.
    pub prefill_think: bool,
    pub guard: Option<Guard>,
    pub api_keys: ApiKeys,
    /// Requests per minute per API key (0 = unlimited).
    pub rate_limit_per_min: u32,
    /// SQLite audit database; None disables auditing.
    pub audit_db: Option<PathBuf>,
    /// Requests waiting for a batch slot before new ones get 429.
    pub max_queue: usize,
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_cap: usize,
    /// `max_tokens` of a request that gives none.
    pub default_max_tokens: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
}

impl ServeConfig {
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            tokenizer_dir: None,
            device: Device::Cpu,
            dtype: None,
            host: "127.0.0.1".into(),
            port: 8000,
            served_model_name: None,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_owned(),
            system_prompt_policy: SystemPromptPolicy::default(),
            prefill_think: true,
            guard: None,
            api_keys: ApiKeys::default(),
            rate_limit_per_min: 0,
            audit_db: None,
            max_queue: 256,
            max_batch: 16,
            max_tokens_cap: 8192,
            default_max_tokens: 1024,
            max_messages: 256,
            max_body_bytes: 2 * 1024 * 1024,
        }
    }

    /// The id clients use: `served_model_name`, else the model directory's name.
    pub fn model_name(&self) -> String {
        self.served_model_name.clone().unwrap_or_else(|| {
            self.model_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "metis".into())
        })
    }
}
