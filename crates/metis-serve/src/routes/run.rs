//! Running a prepared [`Job`]: the input guard, submission to the scheduler, and the
//! helpers both response paths share (reasoning split, output guard, audit, usage).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use metis_engine::sampling::SamplingParams;
use metis_engine::scheduler::{EventSink, GenEvent, GenRequest, SubmitError};
use metis_openai::wire::Usage;
use metis_verify::reasoning::{self, Delimiters};
use serde_json::Value;
use tokio::sync::mpsc;

use super::complete::complete_job;
use super::prepare::{Endpoint, Job};
use super::stream::{blocked_input, sse_response, stream_job};
use super::AppState;
use crate::error::ApiError;
use crate::guard::Verdict;

/// Finishes the audit record of `job` and queues it.
pub(super) fn audit(st: &AppState, job: &mut Job, status: u16, finish: &str, blocked: bool) {
    if blocked {
        st.metrics.guard_blocks.fetch_add(1, Ordering::Relaxed);
    }
    let Some(log) = &st.audit else { return };
    let mut r = std::mem::take(&mut job.record);
    r.guard = serde_json::to_value(&job.verdicts).unwrap_or(Value::Null);
    r.blocked = blocked;
    r.status = status;
    r.finish_reason = Some(finish.to_owned());
    r.latency_ms = job.t0.elapsed().as_millis() as u64;
    log.log(r);
}

pub(super) fn fail(st: &AppState, job: &mut Job, err: ApiError) -> Response {
    audit(st, job, err.status.as_u16(), err.kind, false);
    err.into_response()
}

/// Runs a prepared job: input guard, generation, output guard, response.
pub(super) async fn run(st: Arc<AppState>, mut job: Job) -> Response {
    if let Some(g) = st.guard.as_ref().filter(|g| g.check_input) {
        match g.moderate_input(&job.conversation).await {
            Ok(v) => {
                let safe = v.safe;
                job.verdicts.push(v);
                if !safe {
                    return blocked_input(&st, job);
                }
            }
            Err(e) => {
                let err = ApiError::internal(format!("guardrail unavailable: {e}"))
                    .with_code("guard_unavailable");
                return fail(&st, &mut job, err);
            }
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let p = &job.params;
    let request = GenRequest {
        prompt_ids: job.prompt_ids.clone(),
        max_tokens: p.max_tokens,
        sampling: SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            min_p: p.min_p,
            seed: p.seed,
        },
        stop_strings: p.stop.clone(),
        ignore_eos: p.ignore_eos,
        events: Box::new(ChannelSink(tx)),
    };
    if let Err(e) = st.scheduler.submit(request) {
        let err = match e {
            SubmitError::QueueFull => ApiError::too_many(
                "the server is at capacity (request queue full); retry later",
                "queue_full",
            ),
            SubmitError::Stopped => ApiError::internal("the engine has stopped"),
        };
        return fail(&st, &mut job, err);
    }
    if job.params.stream {
        let (sse_tx, sse_rx) = mpsc::channel::<Event>(64);
        tokio::spawn(stream_job(st, job, rx, sse_tx));
        sse_response(sse_rx)
    } else {
        complete_job(st, job, rx).await
    }
}

/// A request's events on a tokio channel, read by the handler that streams or collects them.
/// The handler dropping its receiver (a client that went away) cancels the sequence.
struct ChannelSink(mpsc::UnboundedSender<GenEvent>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: GenEvent) -> bool {
        self.0.send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Final reasoning and answer of a whole output (FAITH's split, trimmed), as the
/// non-streaming response and the audit log report them.
pub(super) fn final_split(job: &Job, text: &str) -> (Option<String>, String) {
    if job.endpoint == Endpoint::Completion {
        return (None, text.to_owned());
    }
    let full = if job.opens_reasoning {
        format!("<think>{text}")
    } else {
        text.to_owned()
    };
    let parts = reasoning::split(&full, &Delimiters::default());
    let r = (!parts.reasoning.is_empty()).then(|| parts.reasoning.clone());
    (r, parts.answer.trim().to_owned())
}

/// The output-guard verdict on an answer; Err is the guard failing (fail closed).
pub(super) async fn check_output(
    st: &AppState,
    job: &mut Job,
    answer: &str,
    reasoning: Option<&str>,
) -> Result<Option<Verdict>, ApiError> {
    let Some(g) = st.guard.as_ref().filter(|g| g.check_output) else {
        return Ok(None);
    };
    let v = g
        .moderate_output(&job.conversation, answer, reasoning)
        .await
        .map_err(|e| {
            ApiError::internal(format!("guardrail unavailable: {e}")).with_code("guard_unavailable")
        })?;
    job.verdicts.push(v.clone());
    Ok((!v.safe).then_some(v))
}

/// The token counts of a response.
pub(super) fn token_usage(prompt_tokens: usize, completion_tokens: usize) -> Usage {
    Usage::new(prompt_tokens as u64, completion_tokens as u64)
}
