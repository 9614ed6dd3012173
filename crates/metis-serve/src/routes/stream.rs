//! The streaming path: SSE chunks as the output arrives, the answer held back for the output
//! guard when it is on; also the refusal of a blocked input, plain or as SSE.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use metis_engine::scheduler::GenEvent;
use metis_openai::wire::{self, Usage};
use metis_verify::reasoning::{Delimiters, StreamDelta, StreamSplitter};
use serde::Serialize;
use tokio::sync::mpsc;

use super::complete::final_response;
use super::prepare::{Endpoint, Job};
use super::run::{audit, check_output, final_split, token_usage};
use super::AppState;
use crate::error::ApiError;
use crate::guard;

pub(super) fn sse_response(rx: mpsc::Receiver<Event>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream).into_response()
}

/// Generated text split into reasoning and answer as it streams.
struct Pieces {
    splitter: Option<StreamSplitter>,
}

impl Pieces {
    fn new(endpoint: Endpoint, opens_reasoning: bool) -> Self {
        // Completions are raw text: no reasoning split.
        let splitter = (endpoint == Endpoint::Chat)
            .then(|| StreamSplitter::new(Delimiters::default(), opens_reasoning));
        Self { splitter }
    }

    fn push(&mut self, text: &str) -> Vec<StreamDelta> {
        match &mut self.splitter {
            Some(s) => s.push(text),
            None => vec![StreamDelta::Answer(text.to_owned())],
        }
    }

    fn finish(&mut self) -> Vec<StreamDelta> {
        self.splitter
            .as_mut()
            .map(|s| s.finish())
            .unwrap_or_default()
    }
}

/// Builds the SSE chunks of a job.
struct Chunker<'a> {
    job_id: &'a str,
    created: u64,
    model: &'a str,
    endpoint: Endpoint,
    include_usage: bool,
}

impl Chunker<'_> {
    fn event<T: Serialize>(value: &T) -> Event {
        Event::default().data(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
    }

    fn chat(&self, delta: wire::Delta, finish: Option<&'static str>) -> Event {
        Self::event(&wire::ChatCompletionChunk {
            id: self.job_id.to_owned(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.to_owned(),
            choices: vec![wire::ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(Into::into),
                logprobs: None,
            }],
            usage: self.include_usage.then_some(None),
        })
    }

    fn text(&self, text: String, finish: Option<&'static str>) -> Event {
        Self::event(&wire::Completion {
            id: self.job_id.to_owned(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.to_owned(),
            choices: vec![wire::CompletionChoice {
                index: Some(0),
                text,
                finish_reason: finish.map(Into::into),
                logprobs: None,
            }],
            usage: None,
        })
    }

    /// One classified piece of output as a chunk.
    fn piece(&self, d: StreamDelta) -> Event {
        match (self.endpoint, d) {
            (Endpoint::Completion, StreamDelta::Answer(t) | StreamDelta::Reasoning(t)) => {
                self.text(t, None)
            }
            (Endpoint::Chat, StreamDelta::Answer(t)) => self.chat(
                wire::Delta {
                    content: Some(t),
                    ..Default::default()
                },
                None,
            ),
            (Endpoint::Chat, StreamDelta::Reasoning(t)) => self.chat(
                wire::Delta {
                    reasoning_content: Some(t.clone()),
                    reasoning: Some(t),
                    ..Default::default()
                },
                None,
            ),
        }
    }

    fn start(&self) -> Option<Event> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.chat(
                wire::Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Default::default()
                },
                None,
            )
        })
    }

    fn end(&self, finish: &'static str) -> Event {
        match self.endpoint {
            Endpoint::Chat => self.chat(wire::Delta::default(), Some(finish)),
            Endpoint::Completion => self.text(String::new(), Some(finish)),
        }
    }

    /// The last chunk, with no choices and the token counts, when the client asked for them.
    fn usage(&self, usage: Usage) -> Option<Event> {
        if !self.include_usage {
            return None;
        }
        Some(match self.endpoint {
            Endpoint::Chat => Self::event(&wire::ChatCompletionChunk {
                id: self.job_id.to_owned(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.to_owned(),
                choices: Vec::new(),
                usage: Some(Some(usage)),
            }),
            Endpoint::Completion => Self::event(&wire::Completion {
                id: self.job_id.to_owned(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.to_owned(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
        })
    }
}

fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// An input the guard blocked: the refusal as the whole answer, finish `content_filter`.
pub(super) fn blocked_input(st: &AppState, mut job: Job) -> Response {
    let refusal = guard::refusal(job.verdicts.last().expect("a verdict was recorded"));
    job.record.answer = Some(refusal.clone());
    audit(st, &mut job, 200, "content_filter", true);
    let usage = token_usage(job.prompt_ids.len(), 0);
    if !job.params.stream {
        return final_response(st, &job, refusal, None, "content_filter", usage);
    }
    let c = Chunker {
        job_id: &job.id,
        created: job.created,
        model: &st.model_name,
        endpoint: job.endpoint,
        include_usage: job.params.include_usage,
    };
    let mut events: Vec<Event> = c.start().into_iter().collect();
    events.push(c.piece(StreamDelta::Answer(refusal)));
    events.push(c.end("content_filter"));
    events.extend(c.usage(usage));
    events.push(done_event());
    st.metrics
        .observe(job.endpoint.route(), 200, job.t0.elapsed().as_secs_f64());
    let stream = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
    Sse::new(stream).into_response()
}

/// Relays a streaming job's events as SSE chunks. With the output guard on, the answer is
/// held back until the guard has judged it (and the reasoning too when the guard sees it).
pub(super) async fn stream_job(
    st: Arc<AppState>,
    mut job: Job,
    mut rx: mpsc::UnboundedReceiver<GenEvent>,
    out: mpsc::Sender<Event>,
) {
    let model = st.model_name.clone();
    let job_id = job.id.clone();
    let c = Chunker {
        job_id: &job_id,
        created: job.created,
        model: &model,
        endpoint: job.endpoint,
        include_usage: job.params.include_usage,
    };
    let output_guard = st.guard.as_ref().filter(|g| g.check_output);
    let hold_answer = output_guard.is_some();
    let hold_reasoning = output_guard.is_some_and(|g| g.include_reasoning);
    let mut pieces = Pieces::new(job.endpoint, job.opens_reasoning);
    let mut held: Vec<StreamDelta> = Vec::new();
    let mut text = String::new();
    let route = job.endpoint.route();

    macro_rules! send {
        ($e:expr) => {
            if out.send($e).await.is_err() {
                // The client went away; dropping `rx` cancels the sequence in the engine.
                audit(&st, &mut job, 200, "cancelled", false);
                st.metrics
                    .observe(route, 200, job.t0.elapsed().as_secs_f64());
                return;
            }
        };
    }

    if let Some(e) = c.start() {
        send!(e);
    }
    let (finish, prompt_tokens, completion_tokens) = loop {
        // Watch the client too: while output is held back for the guard nothing is sent, and
        // a client that left must still stop its sequence.
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = out.closed() => {
                audit(&st, &mut job, 200, "cancelled", false);
                st.metrics.observe(route, 200, job.t0.elapsed().as_secs_f64());
                return;
            }
        };
        let deltas = match event {
            Some(GenEvent::Text(t)) => {
                text.push_str(&t);
                pieces.push(&t)
            }
            Some(GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                let rest = pieces.finish();
                for d in rest {
                    let hold = match d {
                        StreamDelta::Answer(_) => hold_answer,
                        StreamDelta::Reasoning(_) => hold_reasoning,
                    };
                    if hold {
                        held.push(d);
                    } else {
                        send!(c.piece(d));
                    }
                }
                break (finish.as_str(), prompt_tokens, completion_tokens);
            }
            other => {
                let msg = match other {
                    Some(GenEvent::Error(e)) => format!("generation failed: {e}"),
                    _ => "the engine stopped".to_owned(),
                };
                let err = ApiError::internal(msg);
                let _ = out.send(Event::default().data(err.body())).await;
                let _ = out.send(done_event()).await;
                audit(&st, &mut job, 500, err.kind, false);
                st.metrics
                    .observe(route, 500, job.t0.elapsed().as_secs_f64());
                return;
            }
        };
        for d in deltas {
            let hold = match d {
                StreamDelta::Answer(_) => hold_answer,
                StreamDelta::Reasoning(_) => hold_reasoning,
            };
            if hold {
                held.push(d);
            } else {
                send!(c.piece(d));
            }
        }
    };
    let (reasoning, answer) = final_split(&job, &text);
    job.record.completion_tokens = completion_tokens;
    job.record.reasoning = reasoning.clone();
    job.record.answer = Some(answer.clone());
    let mut finish = finish;
    let mut blocked = false;
    match check_output(&st, &mut job, &answer, reasoning.as_deref()).await {
        Ok(Some(v)) => {
            send!(c.piece(StreamDelta::Answer(guard::refusal(&v))));
            finish = "content_filter";
            blocked = true;
        }
        Ok(None) => {
            for d in held {
                send!(c.piece(d));
            }
        }
        Err(e) => {
            let _ = out.send(Event::default().data(e.body())).await;
            let _ = out.send(done_event()).await;
            audit(&st, &mut job, 500, e.kind, false);
            st.metrics
                .observe(route, 500, job.t0.elapsed().as_secs_f64());
            return;
        }
    }
    send!(c.end(finish));
    if let Some(e) = c.usage(token_usage(prompt_tokens, completion_tokens)) {
        send!(e);
    }
    send!(done_event());
    audit(&st, &mut job, 200, finish, blocked);
    st.metrics
        .observe(route, 200, job.t0.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted token stream through the streaming splitter: the reasoning/answer deltas
    /// come out as the chunks would carry them, whatever the chunk boundaries.
    #[test]
    fn scripted_stream_splits_reasoning() {
        let script = ["Let me ", "think.</th", "ink>\n\nThe ans", "wer is B."];
        for opens in [true, false] {
            let mut p = Pieces::new(Endpoint::Chat, opens);
            let mut reasoning = String::new();
            let mut answer = String::new();
            let mut feed: Vec<String> = script.iter().map(|s| s.to_string()).collect();
            if !opens {
                feed.insert(0, "<thi".into());
                feed.insert(1, "nk>".into());
            }
            let mut all: Vec<StreamDelta> = feed.iter().flat_map(|t| p.push(t)).collect();
            all.extend(p.finish());
            for d in all {
                match d {
                    StreamDelta::Reasoning(t) => reasoning.push_str(&t),
                    StreamDelta::Answer(t) => answer.push_str(&t),
                }
            }
            assert_eq!(reasoning, "Let me think.");
            assert_eq!(answer, "\n\nThe answer is B.");
        }
        // Completions are not split.
        let mut p = Pieces::new(Endpoint::Completion, true);
        assert_eq!(
            p.push("a</think>b"),
            vec![StreamDelta::Answer("a</think>b".into())]
        );
    }
}
