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
    let mut relay = Relay::new(&st, &mut job, &out, &c);
    // A stream that stopped early has been recorded already; returning drops `rx`, which
    // cancels the sequence in the engine.
    let _: Result<(), Stopped> = relay.run(&mut rx).await;
}

/// The stream ended before its last chunk: the job has been audited and counted already.
struct Stopped;

/// What generation produced, once the engine is done.
struct Generated {
    text: String,
    finish: &'static str,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// One streaming job on its way to the client: the chunks sent, the deltas held back for the
/// output guard, and the audit and metrics however the stream ends.
struct Relay<'a> {
    st: &'a AppState,
    job: &'a mut Job,
    out: &'a mpsc::Sender<Event>,
    c: &'a Chunker<'a>,
    route: &'static str,
    hold_answer: bool,
    hold_reasoning: bool,
    held: Vec<StreamDelta>,
}

impl<'a> Relay<'a> {
    fn new(
        st: &'a AppState,
        job: &'a mut Job,
        out: &'a mpsc::Sender<Event>,
        c: &'a Chunker<'a>,
    ) -> Self {
        let output_guard = st.guard.as_ref().filter(|g| g.check_output);
        let route = job.endpoint.route();
        Self {
            st,
            job,
            out,
            c,
            route,
            hold_answer: output_guard.is_some(),
            hold_reasoning: output_guard.is_some_and(|g| g.include_reasoning),
            held: Vec::new(),
        }
    }

    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<GenEvent>) -> Result<(), Stopped> {
        if let Some(e) = self.c.start() {
            self.send(e).await?;
        }
        let generated = self.relay_generation(rx).await?;
        let (finish, blocked) = self.release_checked_output(&generated).await?;
        self.send(self.c.end(finish)).await?;
        let usage = token_usage(generated.prompt_tokens, generated.completion_tokens);
        if let Some(e) = self.c.usage(usage) {
            self.send(e).await?;
        }
        self.send(done_event()).await?;
        self.record(200, finish, blocked);
        Ok(())
    }

    /// Passes the engine's output on (or holds it back) until the engine is done.
    async fn relay_generation(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<GenEvent>,
    ) -> Result<Generated, Stopped> {
        let mut pieces = Pieces::new(self.job.endpoint, self.job.opens_reasoning);
        let mut text = String::new();
        loop {
            let deltas = match self.next_event(rx).await? {
                Some(GenEvent::Text(t)) => {
                    text.push_str(&t);
                    pieces.push(&t)
                }
                Some(GenEvent::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    self.pass_or_hold(pieces.finish()).await?;
                    return Ok(Generated {
                        text,
                        finish: finish.as_str(),
                        prompt_tokens,
                        completion_tokens,
                    });
                }
                other => {
                    let msg = match other {
                        Some(GenEvent::Error(e)) => format!("generation failed: {e}"),
                        _ => "the engine stopped".to_owned(),
                    };
                    return Err(self.fail(ApiError::internal(msg)).await);
                }
            };
            self.pass_or_hold(deltas).await?;
        }
    }

    /// The engine's next event, or `Stopped` when the client has left.
    async fn next_event(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<GenEvent>,
    ) -> Result<Option<GenEvent>, Stopped> {
        // Watch the client too: while output is held back for the guard nothing is sent, and
        // a client that left must still stop its sequence.
        tokio::select! {
            e = rx.recv() => Ok(e),
            _ = self.out.closed() => {
                self.record(200, "cancelled", false);
                Err(Stopped)
            }
        }
    }

    async fn pass_or_hold(&mut self, deltas: Vec<StreamDelta>) -> Result<(), Stopped> {
        for d in deltas {
            let hold = match d {
                StreamDelta::Answer(_) => self.hold_answer,
                StreamDelta::Reasoning(_) => self.hold_reasoning,
            };
            if hold {
                self.held.push(d);
            } else {
                self.send(self.c.piece(d)).await?;
            }
        }
        Ok(())
    }

    /// Records the output on the job, has the guard judge it, then sends the held-back
    /// deltas, or the refusal in their place. Returns the finish reason and whether the guard
    /// blocked the output.
    async fn release_checked_output(
        &mut self,
        generated: &Generated,
    ) -> Result<(&'static str, bool), Stopped> {
        let (reasoning, answer) = final_split(self.job, &generated.text);
        self.job.record.completion_tokens = generated.completion_tokens;
        self.job.record.reasoning = reasoning.clone();
        self.job.record.answer = Some(answer.clone());
        match check_output(self.st, self.job, &answer, reasoning.as_deref()).await {
            Ok(Some(v)) => {
                self.send(self.c.piece(StreamDelta::Answer(guard::refusal(&v))))
                    .await?;
                Ok(("content_filter", true))
            }
            Ok(None) => {
                for d in std::mem::take(&mut self.held) {
                    self.send(self.c.piece(d)).await?;
                }
                Ok((generated.finish, false))
            }
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn send(&mut self, e: Event) -> Result<(), Stopped> {
        if self.out.send(e).await.is_err() {
            // The client went away; dropping `rx` cancels the sequence in the engine.
            self.record(200, "cancelled", false);
            return Err(Stopped);
        }
        Ok(())
    }

    /// Ends the stream with `err` as its last chunk.
    async fn fail(&mut self, err: ApiError) -> Stopped {
        let _ = self.out.send(Event::default().data(err.body())).await;
        let _ = self.out.send(done_event()).await;
        self.record(500, err.kind, false);
        Stopped
    }

    fn record(&mut self, status: u16, finish: &str, blocked: bool) {
        audit(self.st, self.job, status, finish, blocked);
        self.st
            .metrics
            .observe(self.route, status, self.job.t0.elapsed().as_secs_f64());
    }
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
