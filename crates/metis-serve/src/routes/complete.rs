//! The non-streaming path: collect the whole output, judge it, answer with one JSON body.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use metis_engine::scheduler::GenEvent;
use metis_openai::wire::{self, GuardCheck, Usage};
use tokio::sync::mpsc;

use super::prepare::{Endpoint, Job};
use super::run::{audit, check_output, fail, final_split, token_usage};
use super::AppState;
use crate::error::ApiError;
use crate::guard::{self, Verdict};

pub(super) async fn complete_job(
    st: Arc<AppState>,
    mut job: Job,
    mut rx: mpsc::UnboundedReceiver<GenEvent>,
) -> Response {
    let mut text = String::new();
    let (finish, prompt_tokens, completion_tokens) = loop {
        match rx.recv().await {
            Some(GenEvent::Text(t)) => text.push_str(&t),
            Some(GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => break (finish.as_str(), prompt_tokens, completion_tokens),
            Some(GenEvent::Error(e)) => {
                return fail(
                    &st,
                    &mut job,
                    ApiError::internal(format!("generation failed: {e}")),
                )
            }
            None => return fail(&st, &mut job, ApiError::internal("the engine stopped")),
        }
    };
    let (mut reasoning, mut answer) = final_split(&job, &text);
    job.record.completion_tokens = completion_tokens;
    job.record.reasoning = reasoning.clone();
    job.record.answer = Some(answer.clone());
    let mut finish = finish;
    let blocked = match check_output(&st, &mut job, &answer, reasoning.as_deref()).await {
        Ok(Some(v)) => {
            answer = guard::refusal(&v);
            // The reasoning led to a blocked answer: do not hand it out either.
            reasoning = None;
            finish = "content_filter";
            true
        }
        Ok(None) => false,
        Err(e) => return fail(&st, &mut job, e),
    };
    audit(&st, &mut job, 200, finish, blocked);
    let usage = token_usage(prompt_tokens, completion_tokens);
    final_response(&st, &job, answer, reasoning, finish, usage)
}

/// The guard's verdicts as the `metis_guard` checks a client reads.
fn guard_checks(verdicts: &[Verdict]) -> Vec<GuardCheck> {
    verdicts.iter().map(GuardCheck::from).collect()
}

/// The whole (non-streamed) response of a job: a chat completion with the reasoning apart
/// from the answer and the guard's checks, or a text completion.
pub(super) fn final_response(
    st: &AppState,
    job: &Job,
    answer: String,
    reasoning: Option<String>,
    finish: &str,
    usage: Usage,
) -> Response {
    match job.endpoint {
        Endpoint::Chat => Json(wire::ChatCompletion {
            id: job.id.clone(),
            object: "chat.completion".into(),
            created: job.created,
            model: st.model_name.clone(),
            choices: vec![wire::ChatChoice {
                index: 0,
                message: wire::ResponseMessage {
                    role: "assistant".into(),
                    // As vLLM: an empty answer after reasoning (cut off) is null.
                    content: (!(answer.is_empty() && reasoning.is_some())).then_some(answer),
                    reasoning_content: reasoning.clone(),
                    reasoning,
                },
                finish_reason: Some(finish.into()),
                logprobs: None,
            }],
            usage: Some(usage),
            metis_guard: guard_checks(&job.verdicts),
        })
        .into_response(),
        Endpoint::Completion => Json(wire::Completion {
            id: job.id.clone(),
            object: "text_completion".into(),
            created: job.created,
            model: st.model_name.clone(),
            choices: vec![wire::CompletionChoice {
                index: Some(0),
                text: answer,
                finish_reason: Some(finish.into()),
                logprobs: None,
            }],
            usage: Some(usage),
        })
        .into_response(),
    }
}
