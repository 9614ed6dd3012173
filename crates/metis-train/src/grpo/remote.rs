//! GRPO rollouts from an OpenAI-compatible server fleet (e.g. vLLM replicas) instead of the
//! local engine, with the current LoRA adapter hot-loaded on every replica: the remote
//! [`RolloutSource`].
//!
//! Each step, before sampling:
//! 1. the policy's adapter is saved in PEFT format to `adapter_dir/step-N` (N = optimizer
//!    steps done, i.e. the weights this step samples from);
//! 2. every replica loads it under the name `{adapter_prefix}-stepN` (vLLM's
//!    `/v1/load_lora_adapter`; names are unique per step because vLLM refuses to load a name
//!    twice);
//! 3. one token-level completions request per prompt asks for `num_generations` completions
//!    of the prompt's token ids, all prompts concurrently, routed to the least-loaded replica.
//!    The request seed is derived from the run seed, the step and the prompt's position in
//!    the step, so a resumed run asks exactly what the interrupted one asked;
//! 4. the previous step's adapter is unloaded everywhere and its directory removed (the
//!    current one stays until the next step; the run's end removes it too).
//!
//! The servers must read the adapter directory: `server_adapter_dir` is the same directory
//! as the servers see it (a shared filesystem mounted elsewhere), by default the same path.
//!
//! # Log-probabilities
//!
//! The server returns each sampled token's log-probability. vLLM computes it from the raw
//! logits unless it runs with `--logprobs-mode processed_logprobs`, which applies the
//! temperature (and top-p/top-k masking: use top-p 1 for a match). The trainer's importance
//! ratio needs the log-probability under the temperature-scaled logits, so by default
//! ([`RemoteRollouts::use_server_logprobs`] false) the "old" log-probabilities are the
//! policy's own, detached (TRL's on-policy default: ratio 1). With a server in processed mode,
//! `use_server_logprobs` makes the ratio measure the sampler/trainer mismatch as the local
//! engine's rollouts do. Either way, `rollout_logprob_gap` in the metrics (mean absolute
//! difference between the server's and the policy's log-probabilities) exposes an adapter
//! that did not load or a server that serves a different model.
//!
//! A vLLM fleet for this:
//!
//! ```sh
//! VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora --max-lora-rank 16 \
//!     --logprobs-mode processed_logprobs
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use metis_engine::tokenizer::Tokenizer;
use metis_openai::{
    Client, ClientError, Endpoint, RetryPolicy, TokenCompletion, TokenCompletionRequest,
};
use serde::{Deserialize, Serialize};

use super::rollout::{Policy, Rollout, RolloutRequest, RolloutSource};
use crate::model::{Result, TrainError};

/// Where rollouts come from when they come from servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteRollouts {
    /// Base URLs of the replicas with the API prefix, e.g. `http://10.0.0.5:8000/v1` (as for
    /// `metis eval`). Every replica gets every adapter; completions go to the least loaded.
    pub endpoints: Vec<String>,
    /// Sent as `Authorization: Bearer <key>`. Never written to `grpo_config.json`.
    #[serde(default, skip_serializing)]
    pub api_key: Option<String>,
    /// Adapters are loaded as `{adapter_prefix}-step{N}`.
    #[serde(default = "default_adapter_prefix")]
    pub adapter_prefix: String,
    /// Where the trainer writes the per-step adapters (default `<out>/rollout-adapters`).
    #[serde(default)]
    pub adapter_dir: Option<PathBuf>,
    /// `adapter_dir` as the servers see it (default: the same path, made absolute).
    #[serde(default)]
    pub server_adapter_dir: Option<PathBuf>,
    /// Seconds one request (one attempt) may take.
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: f64,
    /// Attempts per request, the first included, for transient failures (connection errors,
    /// 429, 5xx), with jittered exponential backoff.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Use the server's log-probabilities as the loss's "old" log-probabilities (needs a
    /// server whose log-probabilities are temperature-scaled: vLLM's
    /// `--logprobs-mode processed_logprobs`). Off: the policy's own, detached.
    #[serde(default)]
    pub use_server_logprobs: bool,
}

fn default_adapter_prefix() -> String {
    "metis-grpo".into()
}

fn default_request_timeout_s() -> f64 {
    600.0
}

fn default_max_attempts() -> u32 {
    6
}

impl RemoteRollouts {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            api_key: None,
            adapter_prefix: default_adapter_prefix(),
            adapter_dir: None,
            server_adapter_dir: None,
            request_timeout_s: default_request_timeout_s(),
            max_attempts: default_max_attempts(),
            use_server_logprobs: false,
        }
    }

    /// The served name of the adapter holding the weights after `step` optimizer steps.
    pub fn adapter_name(&self, step: u64) -> String {
        format!("{}-step{step}", self.adapter_prefix)
    }
}

/// A run's connection to the fleet: the client, a runtime to drive it, and the adapter
/// loaded for the last step.
pub(super) struct RemoteSampler {
    cfg: RemoteRollouts,
    client: Client,
    runtime: tokio::runtime::Runtime,
    adapter_dir: PathBuf,
    server_adapter_dir: PathBuf,
    /// Name and local directory of the adapter loaded for the last step.
    loaded: Option<(String, PathBuf)>,
}

fn remote_err(e: ClientError) -> TrainError {
    TrainError::RemoteRollout(e)
}

impl RemoteSampler {
    /// Checks the settings and builds the client; no request is sent yet.
    pub(super) fn connect(cfg: &RemoteRollouts, out: &Path) -> Result<Self> {
        if cfg.endpoints.is_empty() {
            return Err(TrainError::InvalidArgument(
                "remote rollouts need at least one server URL (--rollout-url)".into(),
            ));
        }
        let request_timeout = Duration::try_from_secs_f64(cfg.request_timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                TrainError::InvalidArgument(format!(
                    "remote rollouts: request timeout {} s is not a positive duration",
                    cfg.request_timeout_s
                ))
            })?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|url| Endpoint {
                base_url: url.clone(),
                api_key: cfg.api_key.clone(),
            })
            .collect();
        let client = Client::new(
            endpoints,
            RetryPolicy {
                max_attempts: cfg.max_attempts.max(1),
                request_timeout,
                ..RetryPolicy::default()
            },
        )
        .map_err(remote_err)?;
        let adapter_dir = cfg
            .adapter_dir
            .clone()
            .unwrap_or_else(|| out.join("rollout-adapters"));
        std::fs::create_dir_all(&adapter_dir).map_err(|e| TrainError::io(&adapter_dir, e))?;
        // The servers resolve a relative path against their own working directory.
        let adapter_dir =
            std::path::absolute(&adapter_dir).map_err(|e| TrainError::io(&adapter_dir, e))?;
        let server_adapter_dir = cfg
            .server_adapter_dir
            .clone()
            .unwrap_or_else(|| adapter_dir.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TrainError::io(&adapter_dir, e))?;
        Ok(Self {
            cfg: cfg.clone(),
            client,
            runtime,
            adapter_dir,
            server_adapter_dir,
            loaded: None,
        })
    }
}

impl RolloutSource for RemoteSampler {
    /// Publishes the policy's adapter, samples `request.n` completions of every prompt from
    /// the fleet and retires the previous step's adapter. Prompt `j` asks with seed
    /// `seed + j * n`, so the server seeds its completion `i` with `seed + j * n + i`: the
    /// local engine's layout of seeds.
    fn rollouts(
        &mut self,
        policy: &mut Policy,
        request: &RolloutRequest<'_>,
    ) -> Result<Vec<Rollout>> {
        let model = &policy.model;
        let step = request.step;
        let dir_name = format!("step-{step}");
        let dir = self.adapter_dir.join(&dir_name);
        crate::checkpoint::save_adapter(model, &dir)?;
        let name = self.cfg.adapter_name(step);
        let server_path = self.server_adapter_dir.join(&dir_name);
        let client = &self.client;
        self.runtime
            .block_on(client.load_lora_adapter(&name, &server_path.to_string_lossy()))
            .map_err(remote_err)?;
        let previous = self.loaded.replace((name.clone(), dir));

        // Seeds stay below 2^62 so that `seed + index` still fits the i64 vLLM accepts.
        let seed = request.seed & (u64::MAX >> 2);
        let requests: Vec<TokenCompletionRequest> = request
            .prompts
            .iter()
            .enumerate()
            .map(|(j, ids)| TokenCompletionRequest {
                model: name.clone(),
                prompt: ids.to_vec(),
                n: request.n,
                temperature: f64::from(request.temperature),
                top_p: f64::from(request.top_p),
                max_tokens: u32::try_from(request.max_tokens).unwrap_or(u32::MAX),
                seed: Some((seed + (j * request.n) as u64) & (u64::MAX >> 2)),
                stop_token_ids: request.stop_ids.to_vec(),
            })
            .collect();
        let responses = self
            .runtime
            .block_on(futures::future::join_all(
                requests.iter().map(|r| client.token_completions(r)),
            ))
            .into_iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(remote_err)?;

        let vocab = model.config().vocab_size;
        let mut rollouts = Vec::with_capacity(request.prompts.len() * request.n);
        for (j, response) in responses.into_iter().enumerate() {
            for (index, choice) in response.choices.into_iter().enumerate() {
                if let Some(&id) = choice.ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(remote_err(ClientError::BadCompletion {
                        endpoint: response.endpoint.clone(),
                        choice: index,
                        detail: format!(
                            "token id {id} is outside the policy's vocabulary ({vocab}): \
                             the server serves another model"
                        ),
                    }));
                }
                rollouts.push(rollout(j, choice, request.stop_ids, request.tokenizer)?);
            }
        }

        if let Some((old_name, old_dir)) = previous {
            self.runtime
                .block_on(client.unload_lora_adapter(&old_name))
                .map_err(remote_err)?;
            remove_adapter_dir(&old_dir)?;
        }
        Ok(rollouts)
    }

    /// The servers' log-probabilities are the old ones only when the servers compute them
    /// from temperature-scaled logits (see the module docs).
    fn logprobs_are_old(&self) -> bool {
        self.cfg.use_server_logprobs
    }

    /// Unloads the last adapter from every replica and removes its directory (and the
    /// adapter directory itself when nothing else is left in it).
    fn close(mut self: Box<Self>) -> Result<()> {
        if let Some((name, dir)) = self.loaded.take() {
            self.runtime
                .block_on(self.client.unload_lora_adapter(&name))
                .map_err(remote_err)?;
            remove_adapter_dir(&dir)?;
        }
        let _ = std::fs::remove_dir(&self.adapter_dir);
        Ok(())
    }
}

fn remove_adapter_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TrainError::io(dir, e)),
        _ => Ok(()),
    }
}

/// A server completion as a [`Rollout`] of prompt `prompt`, with its text for the reward.
///
/// Like the local engine's rollouts, the stop id that ended a completion stays in the ids
/// (ending the turn is part of what the policy chose) but not in the text, which is decoded
/// with special tokens skipped.
fn rollout(
    prompt: usize,
    choice: TokenCompletion,
    stop_ids: &[u32],
    tokenizer: &Tokenizer,
) -> Result<Rollout> {
    let truncated = choice.finish_reason.as_deref() == Some("length");
    let text_len = match choice.ids.last() {
        Some(last) if stop_ids.contains(last) => choice.ids.len() - 1,
        _ => choice.ids.len(),
    };
    let text = tokenizer
        .decode(&choice.ids[..text_len], true)
        .map_err(|e| TrainError::InvalidArgument(format!("decoding a rollout: {e}")))?;
    Ok(Rollout {
        prompt,
        ids: choice.ids,
        logprobs: choice.logprobs,
        truncated,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_configs_and_defaults() {
        let cfg: RemoteRollouts =
            serde_json::from_str(r#"{"endpoints": ["http://h:8000/v1"]}"#).unwrap();
        assert_eq!(cfg, RemoteRollouts::new(vec!["http://h:8000/v1".into()]));
        assert!(!cfg.use_server_logprobs);
        assert_eq!(cfg.adapter_name(7), "metis-grpo-step7");
    }

    #[test]
    fn api_key_is_not_written() {
        let mut cfg = RemoteRollouts::new(vec!["http://h:8000/v1".into()]);
        cfg.api_key = Some("sk-secret".into());
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(!text.contains("sk-secret"), "{text}");
    }
}
