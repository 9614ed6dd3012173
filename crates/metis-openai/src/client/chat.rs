//! Chat completions: `POST {base}/chat/completions`, non-streaming, optionally with the top
//! log-probabilities of each generated token, read into a [`ChatResponse`].

use std::borrow::Cow;
use std::time::Instant;

use super::error::{quote_start, AttemptError, ClientError};
use super::retry::Route;
use super::types::{ChatLogprobsResponse, ChatRequest, ChatResponse};
use super::{elapsed_ms, Client};
use crate::wire::{ChatCompletion, ChatCompletionRequest, ResponseMessage};

impl Client {
    /// POST `{base}/chat/completions` (non-streaming) with retries.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ClientError> {
        Ok(self.post_chat(req, None).await?.chat)
    }

    /// [`Client::chat`] asking for the log-probabilities of the generated tokens and the
    /// `top_logprobs` most likely alternatives at each position (OpenAI's chat `logprobs`,
    /// `top_logprobs`; vLLM and llama.cpp serve the same fields). A logprob judge reads its
    /// verdict from them.
    pub async fn chat_logprobs(
        &self,
        req: &ChatRequest,
        top_logprobs: u32,
    ) -> Result<ChatLogprobsResponse, ClientError> {
        self.post_chat(req, Some(top_logprobs)).await
    }

    /// One chat-completions request with retries; `top_logprobs` asks for token logprobs.
    async fn post_chat(
        &self,
        req: &ChatRequest,
        top_logprobs: Option<u32>,
    ) -> Result<ChatLogprobsResponse, ClientError> {
        let start = Instant::now();
        let body =
            serde_json::to_vec(&chat_body(req, top_logprobs)).map_err(ClientError::serialising)?;
        let body = body.as_slice();
        let answered = self
            .with_retries(Route::Any, |ep| async move {
                let bytes = self.post(ep, &ep.chat_url, body).await?;
                parse_chat_body(&bytes).map_err(AttemptError::from)
            })
            .await
            .map_err(|failed| failed.error)?;
        let mut resp = answered.value;
        resp.chat.attempts = answered.attempts;
        resp.chat.latency_ms = elapsed_ms(start);
        resp.chat.endpoint = answered.endpoint.base_url.clone();
        Ok(resp)
    }
}

/// The request body: the caller's messages (borrowed) and sampling parameters, not streamed.
fn chat_body(req: &ChatRequest, top_logprobs: Option<u32>) -> ChatCompletionRequest<'_> {
    ChatCompletionRequest {
        model: req.model.clone(),
        messages: Cow::Borrowed(&req.messages),
        temperature: Some(req.params.temperature),
        top_p: Some(req.params.top_p),
        max_tokens: Some(req.params.max_tokens),
        seed: req.params.seed,
        stream: false,
        logprobs: top_logprobs.map(|_| true),
        top_logprobs,
    }
}

/// Parses a chat-completions body, with the token logprobs when it carries them (empty
/// otherwise). The bookkeeping fields are left for the caller to fill in.
fn parse_chat_body(bytes: &[u8]) -> Result<ChatLogprobsResponse, ClientError> {
    let wire: ChatCompletion =
        serde_json::from_slice(bytes).map_err(|e| ClientError::malformed(&e, bytes))?;
    let choice = wire.choices.into_iter().next().ok_or_else(|| {
        ClientError::Malformed(format!(
            "no choices in response; body starts: {}",
            quote_start(bytes)
        ))
    })?;
    let ResponseMessage {
        content,
        reasoning_content,
        reasoning,
        ..
    } = choice.message;
    let reasoning = reasoning_content
        .filter(|s| !s.is_empty())
        .or(reasoning.filter(|s| !s.is_empty()));
    let usage = wire.usage.unwrap_or_default();
    let chat = ChatResponse {
        content: content.unwrap_or_default(),
        reasoning,
        finish_reason: choice.finish_reason,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        attempts: 0,
        latency_ms: 0,
        endpoint: String::new(),
        guard: wire.metis_guard,
    };
    let tokens = choice.logprobs.and_then(|l| l.content).unwrap_or_default();
    Ok(ChatLogprobsResponse { chat, tokens })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::GenParams;
    use crate::wire::ChatMessage;

    /// The chat part of a parsed body (the plain chat path's view).
    fn parse_chat_body(bytes: &[u8]) -> Result<ChatResponse, ClientError> {
        super::parse_chat_body(bytes).map(|r| r.chat)
    }

    /// A parsed body with its token logprobs (the judge's view).
    fn parse_chat_logprobs_body(bytes: &[u8]) -> Result<ChatLogprobsResponse, ClientError> {
        super::parse_chat_body(bytes)
    }

    #[test]
    fn parses_reasoning_fields() {
        let a = parse_chat_body(
            br#"{"choices":[{"message":{"content":"x","reasoning_content":"rc","reasoning":"r"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(a.reasoning.as_deref(), Some("rc"));
        assert_eq!((a.prompt_tokens, a.completion_tokens), (Some(3), Some(4)));
        let b = parse_chat_body(
            br#"{"choices":[{"message":{"content":null,"reasoning_content":null,"reasoning":"r"},"finish_reason":"length"}]}"#,
        )
        .unwrap();
        assert_eq!(b.content, "");
        assert_eq!(b.reasoning.as_deref(), Some("r"));
        assert_eq!(b.finish_reason.as_deref(), Some("length"));
        assert!(matches!(
            parse_chat_body(br#"{"choices":[]}"#),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_chat_body(b"{not json"),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn parses_chat_logprobs() {
        // The shape OpenAI returns (alpaca_eval's `logprob_parser` docstring shows the same).
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"M"},"finish_reason":"length","logprobs":{"content":[{"token":"M","bytes":[77],"logprob":-0.0176,"top_logprobs":[{"token":"M","bytes":[77],"logprob":-0.0176},{"token":"m","bytes":[109],"logprob":-4.0488}]}]}}]}"#;
        let r = parse_chat_logprobs_body(body).unwrap();
        assert_eq!(r.chat.content, "M");
        assert_eq!(r.tokens.len(), 1);
        assert_eq!(r.tokens[0].top_logprobs[1].token, "m");
        assert_eq!(r.tokens[0].top_logprobs[1].logprob, -4.0488);
        let none = parse_chat_logprobs_body(
            br#"{"choices":[{"message":{"content":"m"},"logprobs":null}]}"#,
        )
        .unwrap();
        assert!(none.tokens.is_empty() && none.chat.content == "m");
    }

    #[test]
    fn guard_checks_are_read_from_metis_guard() {
        let r = parse_chat_body(
            br#"{"choices":[{"message":{"content":"no"},"finish_reason":"content_filter"}],"metis_guard":[{"stage":"input","safe":false,"categories":["S2"],"raw":"unsafe\nS2"}]}"#,
        )
        .unwrap();
        assert_eq!(r.guard.len(), 1);
        assert_eq!(r.guard[0].stage, "input");
        assert!(!r.guard[0].safe);
        assert_eq!(r.guard[0].categories, vec!["S2".to_string()]);
    }

    #[test]
    fn body_asks_for_logprobs_only_when_told() {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user("q")],
            params: GenParams {
                temperature: 0.0,
                top_p: 0.95,
                max_tokens: 1,
                seed: None,
            },
        };
        let plain = serde_json::to_value(chat_body(&req, None)).unwrap();
        assert!(plain.get("logprobs").is_none() && plain.get("top_logprobs").is_none());
        assert!(plain.get("seed").is_none());
        assert_eq!(plain["stream"], serde_json::json!(false));
        let judged = serde_json::to_value(chat_body(&req, Some(5))).unwrap();
        assert_eq!(judged["logprobs"], serde_json::json!(true));
        assert_eq!(judged["top_logprobs"], serde_json::json!(5));
    }
}
