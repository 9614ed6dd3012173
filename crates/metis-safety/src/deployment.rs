//! The systems under test. A [`Configuration`] is one way of deploying a model — bare, with a
//! system prompt, behind a guardrail Metis applies, or an endpoint that is already a deployment
//! (a `metis serve` URL with its own policy and guard) — named in every result.
//!
//! A guardrail Metis applies goes through [`GuardedBackend`], which moderates the request and
//! the answer with `metis-serve`'s [`Guard`] exactly as `metis serve` does (same prompt, same
//! parsing, same refusal), so a guarded configuration measures what the server would do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use metis_engine::chat::Message;
use metis_eval::run::ChatBackend;
use metis_openai::{ChatRequest, ChatResponse, ClientError, GuardCheck};
use metis_serve::guard::{self, Guard, Verdict};
use metis_verify::reasoning::{self, Delimiters};

/// One system under test.
#[derive(Clone)]
pub struct Configuration {
    /// The name results are reported under (`bare`, `system-prompt`, `guarded`, ...).
    pub name: String,
    /// Model name sent with each request (and part of each response's key).
    pub model: String,
    /// The system prompt sent before each behaviour, if any.
    pub system_prompt: Option<String>,
    /// What answers: an endpoint, the local engine, or a [`GuardedBackend`] around either.
    pub backend: Arc<dyn ChatBackend>,
    /// What distinguishes this deployment beyond model and system prompt (the guard, or the
    /// endpoint URL of an external deployment); part of each response's key, so changing it
    /// asks again instead of reusing answers obtained without it.
    pub deployment: Option<String>,
    /// Set by a [`GuardedBackend`] whose guard failed: the configuration stops, and nothing it
    /// did not answer counts as refused.
    pub guard_failed: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Configuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configuration")
            .field("name", &self.name)
            .field("model", &self.model)
            .field(
                "system_prompt",
                &self.system_prompt.as_ref().map(|s| s.len()),
            )
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

/// A model endpoint behind a Llama Guard 3 guardrail applied by Metis: the request is
/// moderated before it is sent, the answer before it is returned; a block returns
/// `metis serve`'s refusal with finish reason `content_filter`, and every verdict travels
/// with the response ([`ChatResponse::guard`]).
pub struct GuardedBackend {
    inner: Arc<dyn ChatBackend>,
    guard: Guard,
    failed: Arc<AtomicBool>,
}

impl GuardedBackend {
    pub fn new(inner: Arc<dyn ChatBackend>, guard: Guard) -> Self {
        Self {
            inner,
            guard,
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once the guard has failed (unreachable, erroring): the run stops the configuration.
    pub fn failed_flag(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }

    /// A description of the guard's settings for the response key.
    pub fn describe(guard: &Guard, guard_id: &str) -> String {
        let codes: Vec<&str> = guard.categories.iter().map(|c| c.code).collect();
        format!(
            "guard={guard_id};input={};output={};reasoning={};categories={}",
            guard.check_input,
            guard.check_output,
            guard.include_reasoning,
            codes.join(",")
        )
    }

    fn guard_error(&self, e: impl std::fmt::Display) -> ClientError {
        self.failed.store(true, Ordering::SeqCst);
        ClientError::Transport(format!("guardrail unavailable: {e}"))
    }

    async fn answer(&self, req: &ChatRequest) -> Result<ChatResponse, ClientError> {
        let conversation: Vec<Message> = req
            .messages
            .iter()
            .map(|m| Message::new(m.role.clone(), m.content.clone()))
            .collect();
        let mut checks = Vec::with_capacity(2);
        if self.guard.check_input {
            let v = self
                .guard
                .moderate_input(&conversation)
                .await
                .map_err(|e| self.guard_error(e))?;
            checks.push(check(&v));
            if !v.safe {
                return Ok(blocked(&v, checks, 0));
            }
        }
        let mut response = self.inner.chat(req).await?;
        if self.guard.check_output {
            let (reasoning, answer) = split_answer(&response);
            let v = self
                .guard
                .moderate_output(&conversation, &answer, reasoning.as_deref())
                .await
                .map_err(|e| self.guard_error(e))?;
            checks.push(check(&v));
            if !v.safe {
                return Ok(blocked(&v, checks, response.latency_ms));
            }
        }
        response.guard = checks;
        Ok(response)
    }
}

impl ChatBackend for GuardedBackend {
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ClientError>> {
        Box::pin(self.answer(req))
    }
}

/// The reasoning and the final answer of a response, reasoning given in its own field or
/// inline in `<think>` (as `metis serve` splits it before its output guard).
pub fn split_answer(r: &ChatResponse) -> (Option<String>, String) {
    split_reasoning(&r.content, r.reasoning.as_deref())
}

/// The reasoning (the separate field if given, else the inline `<think>` blocks) and the
/// trimmed final answer of `content`.
pub fn split_reasoning(content: &str, reasoning: Option<&str>) -> (Option<String>, String) {
    let parts = reasoning::split(content, &Delimiters::default());
    let reasoning = reasoning
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or_else(|| (!parts.reasoning.is_empty()).then(|| parts.reasoning.clone()));
    (reasoning, parts.answer.trim().to_owned())
}

fn check(v: &Verdict) -> GuardCheck {
    GuardCheck {
        stage: match v.stage {
            guard::Stage::Input => "input".into(),
            guard::Stage::Output => "output".into(),
        },
        safe: v.safe,
        categories: v.categories.clone(),
        raw: v.raw.clone(),
    }
}

/// The response of a blocked request or answer: `metis serve`'s refusal, no reasoning.
fn blocked(v: &Verdict, guard: Vec<GuardCheck>, latency_ms: u64) -> ChatResponse {
    ChatResponse {
        content: guard::refusal(v),
        reasoning: None,
        finish_reason: Some("content_filter".into()),
        prompt_tokens: None,
        completion_tokens: None,
        attempts: 1,
        latency_ms,
        endpoint: "guardrail".into(),
        guard,
    }
}
