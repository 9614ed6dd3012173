//! The local backend: the harness queries a model loaded in-process by `metis-engine` instead
//! of an HTTP endpoint, with the same response shape as the HTTP client, so the store, grading
//! and resumption are identical.
//!
//! Requests go to the engine's continuous-batching [`Scheduler`] (the one `metis serve`
//! uses): every request in flight joins the running batch, and each decode step runs them all
//! at once, reading the weights once per step instead of once per request. The runner's
//! `--concurrency` is therefore the batch size: `run_jobs` keeps that many requests in
//! flight, and the scheduler decodes up to `max_batch` of them together.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use metis_engine::chat::{ChatTemplate, Message, RenderOptions};
use metis_engine::generate::FinishReason;
use metis_engine::loader::{load_model, LoadError};
use metis_engine::sampling::SamplingParams;
use metis_engine::scheduler::{
    EventSink, GenEvent, GenRequest, Scheduler, SchedulerConfig, SchedulerStats,
};
use metis_engine::tokenizer::Tokenizer;
use metis_openai::{ChatRequest, ChatResponse, ClientError};
use tokio::sync::oneshot;

/// Why a local model could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the model has no tokenizer (give one with --tokenizer)")]
    NoTokenizer,
    #[error("the tokenizer has no chat template")]
    NoTemplate,
    #[error("starting the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A model on its engine thread, with the tokenizer and chat template that turn chat
/// requests into prompts; shared by the querying tasks.
pub struct LocalModel {
    scheduler: Scheduler,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    /// Open the reasoning block after the generation prompt.
    prefill_think: bool,
}

impl LocalModel {
    /// Loads a model directory or `.gguf` file through the engine's loader onto `device` (in
    /// `dtype`, or the engine's default there) and starts its
    /// engine thread, which decodes up to `max_batch` requests together (give the run's
    /// concurrency). The tokenizer (with a chat template) comes from `tokenizer_dir` (a
    /// directory or `.gguf` file) or else from the model itself.
    pub fn load(
        model_dir: &Path,
        tokenizer_dir: Option<&Path>,
        device: &Device,
        dtype: Option<DType>,
        prefill_think: bool,
        max_batch: usize,
    ) -> Result<Arc<LocalModel>, LocalError> {
        let loaded = load_model(model_dir, tokenizer_dir, device, dtype)?;
        let tokenizer = Arc::new(loaded.tokenizer.ok_or(LocalError::NoTokenizer)?);
        let template = loaded.template.ok_or(LocalError::NoTemplate)?;
        let scheduler = Scheduler::start(
            loaded.model,
            Arc::clone(&tokenizer),
            loaded.stop_ids,
            SchedulerConfig {
                max_batch: max_batch.max(1),
                // The runner bounds the requests in flight; none is ever refused here.
                max_queue: usize::MAX,
            },
            Arc::new(SchedulerStats::default()),
        )?;
        Ok(Arc::new(LocalModel {
            scheduler,
            tokenizer,
            template,
            prefill_think,
        }))
    }

    /// The engine thread's counters: decode steps, tokens, and the largest batch reached.
    pub fn stats(&self) -> &SchedulerStats {
        self.scheduler.stats()
    }

    /// Answers one chat request once the engine has finished it. Dropping the future cancels
    /// the request in the engine at its next step.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ClientError> {
        let started = Instant::now();
        let fail = |e: String| ClientError::Transport(format!("local engine: {e}"));
        let messages: Vec<Message> = req
            .messages
            .iter()
            .map(|m| Message::new(m.role.clone(), m.content.clone()))
            .collect();
        let opts = RenderOptions {
            prefill_think: self.prefill_think,
            ..RenderOptions::generation()
        };
        let prompt = self
            .template
            .render(&messages, &opts)
            .map_err(|e| fail(e.to_string()))?;
        let prompt_ids = self
            .tokenizer
            .encode(&prompt, false)
            .map_err(|e| fail(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        let request = GenRequest {
            prompt_ids,
            max_tokens: req.params.max_tokens as usize,
            sampling: SamplingParams {
                temperature: req.params.temperature as f32,
                top_p: req.params.top_p as f32,
                top_k: 0,
                min_p: 0.0,
                seed: req.params.seed.unwrap_or(0),
            },
            stop_strings: Vec::new(),
            ignore_eos: false,
            events: Box::new(Collector {
                text: String::new(),
                done: Some(tx),
            }),
        };
        self.scheduler
            .submit(request)
            .map_err(|e| fail(e.to_string()))?;
        let completion = rx
            .await
            .map_err(|_| fail("the engine stopped".to_owned()))?
            .map_err(fail)?;
        // Content as an OpenAI-compatible server without a reasoning parser returns it: the
        // raw text (with the prefilled opening tag restored), split later by the grader.
        let mut content = completion.text;
        if self.prefill_think && prompt.ends_with("<think>\n") {
            content = format!("<think>\n{content}");
        }
        Ok(ChatResponse {
            content,
            reasoning: None,
            finish_reason: Some(completion.finish.as_str().to_owned()),
            prompt_tokens: Some(completion.prompt_tokens as u64),
            completion_tokens: Some(completion.completion_tokens as u64),
            attempts: 1,
            latency_ms: started.elapsed().as_millis() as u64,
            endpoint: "local".to_owned(),
            guard: Vec::new(),
        })
    }
}

/// A finished generation.
struct Completion {
    text: String,
    finish: FinishReason,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// Gathers a request's streamed text on the engine thread and hands the whole completion
/// (or the engine's error) to the waiting task once, at the end: evaluation has no use for
/// the pieces, and one wake-up per request instead of one per token keeps the async side
/// out of the decode loop.
struct Collector {
    text: String,
    done: Option<oneshot::Sender<Result<Completion, String>>>,
}

impl EventSink for Collector {
    fn send(&mut self, event: GenEvent) -> bool {
        let result = match event {
            GenEvent::Text(t) => {
                self.text.push_str(&t);
                return !self.is_closed();
            }
            GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => Ok(Completion {
                text: std::mem::take(&mut self.text),
                finish,
                prompt_tokens,
                completion_tokens,
            }),
            GenEvent::Error(e) => Err(e),
        };
        self.done.take().is_some_and(|tx| tx.send(result).is_ok())
    }

    fn is_closed(&self) -> bool {
        self.done.as_ref().is_none_or(|tx| tx.is_closed())
    }
}
