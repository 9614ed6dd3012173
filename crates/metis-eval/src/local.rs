//! The local backend: the harness queries a model loaded in-process by `metis-engine` instead
//! of an HTTP endpoint. Requests are answered one at a time on a blocking thread (the engine
//! uses every core for one sequence), with the same response shape as the HTTP client, so the
//! store, grading and resumption are identical.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device};
use metis_engine::chat::{ChatTemplate, Message, RenderOptions};
use metis_engine::generate::{generate, GenerateOptions};
use metis_engine::loader::load_model;
use metis_engine::model::Model;
use metis_engine::sampling::SamplingParams;
use metis_engine::tokenizer::Tokenizer;
use metis_openai::{ChatRequest, ChatResponse, ClientError};

/// A model, its tokenizer and chat template, shared by the querying tasks.
pub struct LocalModel {
    model: Model,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
    /// Open the reasoning block after the generation prompt.
    prefill_think: bool,
    /// One generation at a time.
    busy: Mutex<()>,
}

impl LocalModel {
    /// Loads a model directory or `.gguf` file through the engine's loader; the tokenizer
    /// (with a chat template) comes from `tokenizer_dir` (a directory or `.gguf` file) or
    /// else from the model itself.
    pub fn load(
        model_dir: &Path,
        tokenizer_dir: Option<&Path>,
        dtype: Option<DType>,
        prefill_think: bool,
    ) -> Result<Arc<LocalModel>, String> {
        let loaded =
            load_model(model_dir, tokenizer_dir, &Device::Cpu, dtype).map_err(|e| e.to_string())?;
        let tokenizer = loaded
            .tokenizer
            .ok_or("the model has no tokenizer (give one with --tokenizer)")?;
        let template = loaded
            .template
            .ok_or("the tokenizer has no chat template")?;
        let (model, stop_ids) = (loaded.model, loaded.stop_ids);
        Ok(Arc::new(LocalModel {
            model,
            tokenizer,
            template,
            stop_ids,
            prefill_think,
            busy: Mutex::new(()),
        }))
    }

    /// Answers one chat request (blocking).
    pub fn chat_blocking(&self, req: &ChatRequest) -> Result<ChatResponse, ClientError> {
        let started = Instant::now();
        let messages: Vec<Message> = req
            .messages
            .iter()
            .map(|m| Message::new(m.role.clone(), m.content.clone()))
            .collect();
        let opts = RenderOptions {
            prefill_think: self.prefill_think,
            ..RenderOptions::generation()
        };
        let fail = |e: String| ClientError::Transport(format!("local engine: {e}"));
        let prompt = self
            .template
            .render(&messages, &opts)
            .map_err(|e| fail(e.to_string()))?;
        let ids = self
            .tokenizer
            .encode(&prompt, false)
            .map_err(|e| fail(e.to_string()))?;
        let gen_opts = GenerateOptions {
            max_tokens: req.params.max_tokens as usize,
            sampling: SamplingParams {
                temperature: req.params.temperature as f32,
                top_p: req.params.top_p as f32,
                top_k: 0,
                min_p: 0.0,
                seed: req.params.seed.unwrap_or(0),
            },
            stop_ids: self.stop_ids.clone(),
            stop_strings: Vec::new(),
            ignore_eos: false,
        };
        let _turn = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let g = generate(
            &self.model,
            Some(&self.tokenizer),
            &ids,
            &gen_opts,
            self.prefill_think && prompt.ends_with("<think>\n"),
            |_| std::ops::ControlFlow::Continue(()),
        )
        .map_err(|e| fail(e.to_string()))?;
        // Content as an OpenAI-compatible server without a reasoning parser returns it: the
        // raw text (with the prefilled opening tag restored), split later by the grader.
        let mut content = g.text.unwrap_or_default();
        if self.prefill_think && prompt.ends_with("<think>\n") {
            content = format!("<think>\n{content}");
        }
        Ok(ChatResponse {
            content,
            reasoning: None,
            finish_reason: Some(g.finish_reason.as_str().to_owned()),
            prompt_tokens: Some(ids.len() as u64),
            completion_tokens: Some(g.ids.len() as u64),
            attempts: 1,
            latency_ms: started.elapsed().as_millis() as u64,
            endpoint: "local".to_owned(),
            guard: Vec::new(),
        })
    }
}
