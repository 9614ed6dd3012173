//! The Llama Guard 3 flags shared by `metis serve` (its guardrail) and `metis safety` (a
//! guardrail applied around any endpoint): one set of flags, one way to build a [`Guard`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use candle_core::Device;
use metis_serve::guard::{self, Guard, GuardBackend, LocalGuard, RemoteGuard};

#[derive(clap::Args, Debug, Clone)]
pub struct GuardArgs {
    /// Llama Guard 3 guardrail: `local:PATH` (model directory with tokenizer, or .gguf file) or
    /// `url:http://host:port/v1` (OpenAI-compatible /v1/completions).
    #[arg(long)]
    pub guard: Option<String>,
    /// Model name sent to a remote guard.
    #[arg(long, default_value = "meta-llama/Llama-Guard-3-8B")]
    pub guard_model: String,
    /// Environment variable holding the remote guard's API key, if it needs one.
    #[arg(long)]
    pub guard_api_key_env: Option<String>,
    /// Hazard categories to enforce (default: all, S1..S14).
    #[arg(long, default_value = "S1,S2,S3,S4,S5,S6,S7,S8,S9,S10,S11,S12,S13,S14")]
    pub guard_categories: String,
    /// Do not moderate user input.
    #[arg(long)]
    pub no_guard_input: bool,
    /// Do not moderate the model's answer.
    #[arg(long)]
    pub no_guard_output: bool,
    /// Show the guard the reasoning too, not only the final answer.
    #[arg(long)]
    pub guard_include_reasoning: bool,
}

impl GuardArgs {
    /// The guardrail the flags describe (`None` without `--guard`); a local guard model runs
    /// on `device`.
    pub fn build(&self, device: &Device) -> anyhow::Result<Option<Guard>> {
        let Some(spec) = &self.guard else {
            return Ok(None);
        };
        let key = match &self.guard_api_key_env {
            Some(var) => Some(std::env::var(var).with_context(|| format!("${var} is not set"))?),
            None => None,
        };
        Ok(Some(Guard {
            backend: guard_backend(spec, &self.guard_model, key, device)?,
            categories: guard::parse_categories(&self.guard_categories)?,
            check_input: !self.no_guard_input,
            check_output: !self.no_guard_output,
            include_reasoning: self.guard_include_reasoning,
        }))
    }
}

/// A Llama Guard backend from `local:PATH` or `url:BASE` (`model` names the remote model).
pub fn guard_backend(
    spec: &str,
    model: &str,
    api_key: Option<String>,
    device: &Device,
) -> anyhow::Result<Arc<dyn GuardBackend>> {
    if let Some(dir) = spec.strip_prefix("local:") {
        Ok(Arc::new(
            LocalGuard::load(Path::new(dir), device)
                .with_context(|| format!("loading guard {dir}"))?,
        ))
    } else if let Some(url) = spec.strip_prefix("url:") {
        Ok(Arc::new(RemoteGuard::new(url, model, api_key)?))
    } else {
        bail!("a guard is local:DIR or url:http://host:port/v1, got {spec:?}");
    }
}
