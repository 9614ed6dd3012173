//! Completions (`POST {base}/completions`, no chat template): a string prompt answered with
//! text ([`Client::text_completion`], classifier judges and guards), and vLLM's token-level
//! form, prompt and completions as token ids with their log-probabilities
//! ([`Client::token_completions`], RL rollouts).

use std::borrow::Cow;
use std::time::Instant;

use super::error::{quote_start, AttemptError, ClientError};
use super::retry::Route;
use super::types::{
    TextCompletionRequest, TextCompletionResponse, TokenCompletion, TokenCompletionRequest,
    TokenCompletionResponse,
};
use super::{elapsed_ms, Client};
use crate::wire::{Completion, CompletionChoice, CompletionRequest, Prompt};

impl Client {
    /// POST `{base}/completions` with the prompt as token ids (vLLM's
    /// `return_tokens_as_token_ids`, `stop_token_ids`), with retries on the least-loaded
    /// replica. Every choice is parsed into ids and per-token log-probabilities; a token that
    /// is not `token_id:N`, or lists of different lengths, is [`ClientError::BadCompletion`].
    /// Errors name the URL ([`ClientError::At`]).
    pub async fn token_completions(
        &self,
        req: &TokenCompletionRequest,
    ) -> Result<TokenCompletionResponse, ClientError> {
        let start = Instant::now();
        let body = serde_json::to_vec(&token_body(req)).map_err(ClientError::serialising)?;
        let (body, n) = (body.as_slice(), req.n);
        let answered = self
            .with_retries(Route::Any, |ep| async move {
                let bytes = self.post(ep, &ep.completions_url, body).await?;
                parse_token_completions(&bytes, ep.completions_url.as_str(), n)
                    .map_err(AttemptError::from)
            })
            .await
            .map_err(|failed| failed.error.at(&failed.endpoint.completions_url))?;
        Ok(TokenCompletionResponse {
            choices: answered.value,
            attempts: answered.attempts,
            latency_ms: elapsed_ms(start),
            endpoint: answered.endpoint.base_url.clone(),
        })
    }

    /// POST `{base}/completions` with a string prompt and no chat template (a classifier
    /// judge's raw prompt), with retries; returns the first choice's text. Errors name the URL.
    pub async fn text_completion(
        &self,
        req: &TextCompletionRequest,
    ) -> Result<TextCompletionResponse, ClientError> {
        let start = Instant::now();
        let body = serde_json::to_vec(&text_body(req)).map_err(ClientError::serialising)?;
        let body = body.as_slice();
        let answered = self
            .with_retries(Route::Any, |ep| async move {
                let bytes = self.post(ep, &ep.completions_url, body).await?;
                parse_text_completion(&bytes).map_err(AttemptError::from)
            })
            .await
            .map_err(|failed| failed.error.at(&failed.endpoint.completions_url))?;
        let (text, finish_reason) = answered.value;
        Ok(TextCompletionResponse {
            text,
            finish_reason,
            attempts: answered.attempts,
            latency_ms: elapsed_ms(start),
            endpoint: answered.endpoint.base_url.clone(),
        })
    }
}

/// A string prompt with the judge's temperature and length, nothing else.
fn text_body(req: &TextCompletionRequest) -> CompletionRequest<'_> {
    CompletionRequest {
        model: req.model.clone(),
        prompt: Prompt::Text(Cow::Borrowed(&req.prompt)),
        n: None,
        temperature: Some(req.temperature),
        top_p: None,
        max_tokens: Some(req.max_tokens),
        seed: None,
        logprobs: None,
        return_tokens_as_token_ids: None,
        stop_token_ids: None,
        skip_special_tokens: None,
        stream: false,
    }
}

/// Token ids in and out: `logprobs: 1` for the sampled token's log-probability (the one
/// alternative it adds is ignored), tokens as `token_id:N`, special tokens kept.
fn token_body(req: &TokenCompletionRequest) -> CompletionRequest<'_> {
    CompletionRequest {
        model: req.model.clone(),
        prompt: Prompt::Tokens(Cow::Borrowed(&req.prompt)),
        n: Some(req.n),
        temperature: Some(req.temperature),
        top_p: Some(req.top_p),
        max_tokens: Some(req.max_tokens),
        seed: req.seed,
        logprobs: Some(1),
        return_tokens_as_token_ids: Some(true),
        stop_token_ids: Some(Cow::Borrowed(&req.stop_token_ids)),
        skip_special_tokens: Some(false),
        stream: false,
    }
}

/// Parses a completions body's choices, or [`ClientError::Malformed`].
fn parse_completion(bytes: &[u8]) -> Result<Vec<CompletionChoice>, ClientError> {
    let wire: Completion =
        serde_json::from_slice(bytes).map_err(|e| ClientError::malformed(&e, bytes))?;
    Ok(wire.choices)
}

/// Parses a text completions body: the first choice's `text` and `finish_reason`.
fn parse_text_completion(bytes: &[u8]) -> Result<(String, Option<String>), ClientError> {
    let choice = parse_completion(bytes)?.into_iter().next().ok_or_else(|| {
        ClientError::Malformed(format!(
            "no choices in completion; body starts: {}",
            quote_start(bytes)
        ))
    })?;
    Ok((choice.text, choice.finish_reason))
}

/// Parses a token-level completions body into `n` choices in `index` order (see
/// [`Client::token_completions`]); `endpoint` names the URL in errors.
fn parse_token_completions(
    bytes: &[u8],
    endpoint: &str,
    n: usize,
) -> Result<Vec<TokenCompletion>, ClientError> {
    let choices = parse_completion(bytes)?;
    if choices.len() != n {
        return Err(ClientError::Malformed(format!(
            "asked for {n} completions, got {} choices",
            choices.len()
        )));
    }
    let mut out: Vec<Option<TokenCompletion>> = vec![None; n];
    for (pos, choice) in choices.into_iter().enumerate() {
        let index = choice.index.unwrap_or(pos);
        let bad = |detail: String| ClientError::BadCompletion {
            endpoint: endpoint.to_string(),
            choice: index,
            detail,
        };
        if index >= n || out[index].is_some() {
            return Err(bad(format!(
                "index out of range or repeated (expected each of 0..{n} once)"
            )));
        }
        out[index] = Some(token_completion(choice, &bad)?);
    }
    Ok(out
        .into_iter()
        .map(|c| c.expect("every index seen once"))
        .collect())
}

/// One choice's `token_id:N` tokens and their log-probabilities; `bad` names the choice in
/// errors.
fn token_completion(
    choice: CompletionChoice,
    bad: &dyn Fn(String) -> ClientError,
) -> Result<TokenCompletion, ClientError> {
    let lp = choice
        .logprobs
        .ok_or_else(|| bad("no logprobs (the server ignored \"logprobs\": 1)".to_string()))?;
    if lp.tokens.len() != lp.token_logprobs.len() {
        return Err(bad(format!(
            "{} tokens but {} token_logprobs",
            lp.tokens.len(),
            lp.token_logprobs.len()
        )));
    }
    let mut ids = Vec::with_capacity(lp.tokens.len());
    let mut logprobs = Vec::with_capacity(lp.tokens.len());
    for (k, (token, logprob)) in lp.tokens.iter().zip(&lp.token_logprobs).enumerate() {
        let id = token
            .strip_prefix("token_id:")
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| {
                bad(format!(
                    "token {k} is {token:?}, expected \"token_id:N\" (a server without \
                     vLLM's return_tokens_as_token_ids)"
                ))
            })?;
        let logprob = logprob.ok_or_else(|| bad(format!("token {k} has no logprob")))?;
        ids.push(id);
        logprobs.push(logprob);
    }
    Ok(TokenCompletion {
        ids,
        logprobs,
        finish_reason: choice.finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_completions() {
        let body = br#"{"choices":[
            {"index":1,"text":"b","logprobs":{"tokens":["token_id:7","token_id:2"],"token_logprobs":[-0.5,-0.25]},"finish_reason":"stop"},
            {"index":0,"text":"a","logprobs":{"tokens":["token_id:5"],"token_logprobs":[-1.0]},"finish_reason":"length"}]}"#;
        let c = parse_token_completions(body, "http://h/v1/completions", 2).unwrap();
        assert_eq!(c[0].ids, vec![5]);
        assert_eq!(c[0].logprobs, vec![-1.0]);
        assert_eq!(c[0].finish_reason.as_deref(), Some("length"));
        assert_eq!(c[1].ids, vec![7, 2]);
        assert_eq!(c[1].logprobs, vec![-0.5, -0.25]);

        let text_tokens = br#"{"choices":[{"index":0,"logprobs":{"tokens":["hello"],"token_logprobs":[-1.0]},"finish_reason":"stop"}]}"#;
        let err = parse_token_completions(text_tokens, "http://h/v1/completions", 1).unwrap_err();
        assert!(
            matches!(err, ClientError::BadCompletion { choice: 0, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("http://h/v1/completions") && msg.contains("token_id:N"),
            "{msg}"
        );

        let uneven = br#"{"choices":[{"index":0,"logprobs":{"tokens":["token_id:1","token_id:2"],"token_logprobs":[-1.0]},"finish_reason":"stop"}]}"#;
        let err = parse_token_completions(uneven, "u", 1).unwrap_err();
        assert!(
            err.to_string().contains("2 tokens but 1 token_logprobs"),
            "{err}"
        );
        assert!(!err.is_retryable());

        let no_logprobs = br#"{"choices":[{"index":0,"text":"x","finish_reason":"stop"}]}"#;
        assert!(matches!(
            parse_token_completions(no_logprobs, "u", 1),
            Err(ClientError::BadCompletion { .. })
        ));
        assert!(matches!(
            parse_token_completions(body, "u", 3),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn missing_index_falls_back_to_position_and_repeats_are_refused() {
        let positional = br#"{"choices":[
            {"logprobs":{"tokens":["token_id:1"],"token_logprobs":[-0.1]}},
            {"logprobs":{"tokens":["token_id:2"],"token_logprobs":[-0.2]}}]}"#;
        let c = parse_token_completions(positional, "u", 2).unwrap();
        assert_eq!((c[0].ids[0], c[1].ids[0]), (1, 2));
        let repeated = br#"{"choices":[
            {"index":0,"logprobs":{"tokens":[],"token_logprobs":[]}},
            {"index":0,"logprobs":{"tokens":[],"token_logprobs":[]}}]}"#;
        assert!(matches!(
            parse_token_completions(repeated, "u", 2),
            Err(ClientError::BadCompletion { choice: 0, .. })
        ));
    }

    #[test]
    fn text_completion_reads_the_first_choice() {
        let (text, finish) = parse_text_completion(
            br#"{"choices":[{"index":0,"text":"safe","finish_reason":"stop","logprobs":null}]}"#,
        )
        .unwrap();
        assert_eq!((text.as_str(), finish.as_deref()), ("safe", Some("stop")));
        let (empty, _) = parse_text_completion(br#"{"choices":[{"text":null}]}"#).unwrap();
        assert_eq!(empty, "");
        assert!(matches!(
            parse_text_completion(br#"{"choices":[]}"#),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn bodies_send_what_each_endpoint_needs() {
        let text = serde_json::to_value(text_body(&TextCompletionRequest {
            model: "g".into(),
            prompt: "p".into(),
            temperature: 0.0,
            max_tokens: 20,
        }))
        .unwrap();
        assert_eq!(
            text,
            serde_json::json!({"model": "g", "prompt": "p", "temperature": 0, "max_tokens": 20,
                               "stream": false})
        );
        let tokens = serde_json::to_value(token_body(&TokenCompletionRequest {
            model: "a".into(),
            prompt: vec![1, 2],
            n: 4,
            temperature: 0.7,
            top_p: 1.0,
            max_tokens: 8,
            seed: None,
            stop_token_ids: vec![],
        }))
        .unwrap();
        assert_eq!(tokens["prompt"], serde_json::json!([1, 2]));
        assert_eq!(tokens["n"], 4);
        assert_eq!(tokens["logprobs"], 1);
        assert_eq!(tokens["return_tokens_as_token_ids"], true);
        assert_eq!(tokens["skip_special_tokens"], false);
        // An empty stop list is still sent (vLLM then stops on EOS only).
        assert_eq!(tokens["stop_token_ids"], serde_json::json!([]));
        assert!(tokens.get("seed").is_none());
    }
}
