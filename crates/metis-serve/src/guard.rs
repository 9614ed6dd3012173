//! Llama Guard 3 guardrail: the model's exact prompt (its Hugging Face chat template, rendered
//! here by hand), the S1–S14 hazard categories, parsing of its `safe` / `unsafe\nS2,...`
//! verdicts, and the backends that answer it (a local `metis-engine` model or a remote
//! OpenAI-compatible `/v1/completions` endpoint, queried through `metis-openai`'s client, with
//! its retries).
//!
//! The prompt is built here and sent as a raw completion, never as a chat message, so it is
//! not wrapped in a second template. The guard sees only user/assistant turns: the template
//! rejects system messages and requires strict user/assistant alternation.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metis_engine::chat::Message;
use metis_openai::wire::GuardCheck;
use metis_openai::{Client, ClientError, Endpoint, RetryPolicy, TextCompletionRequest};
use serde::Serialize;

/// Errors of a guard check. The server fails closed on them.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("unknown guard category {0:?} (S1..S14)")]
    UnknownCategory(String),
    #[error("guard backend request failed: {0}")]
    Backend(#[from] ClientError),
    #[error("guard model: {0}")]
    Local(String),
}

/// A Llama Guard 3 hazard category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    pub code: &'static str,
    /// The name as printed in the prompt (without the trailing period).
    pub name: &'static str,
}

/// S1–S14 in the order and wording of the Llama Guard 3 prompt.
pub const CATEGORIES: [Category; 14] = [
    Category {
        code: "S1",
        name: "Violent Crimes",
    },
    Category {
        code: "S2",
        name: "Non-Violent Crimes",
    },
    Category {
        code: "S3",
        name: "Sex Crimes",
    },
    Category {
        code: "S4",
        name: "Child Exploitation",
    },
    Category {
        code: "S5",
        name: "Defamation",
    },
    Category {
        code: "S6",
        name: "Specialized Advice",
    },
    Category {
        code: "S7",
        name: "Privacy",
    },
    Category {
        code: "S8",
        name: "Intellectual Property",
    },
    Category {
        code: "S9",
        name: "Indiscriminate Weapons",
    },
    Category {
        code: "S10",
        name: "Hate",
    },
    Category {
        code: "S11",
        name: "Self-Harm",
    },
    Category {
        code: "S12",
        name: "Sexual Content",
    },
    Category {
        code: "S13",
        name: "Elections",
    },
    Category {
        code: "S14",
        name: "Code Interpreter Abuse",
    },
];

/// Looks up a category by code (`S2`, case-insensitive).
pub fn category(code: &str) -> Option<Category> {
    CATEGORIES
        .iter()
        .copied()
        .find(|c| c.code.eq_ignore_ascii_case(code.trim()))
}

/// Parses `S1,S2,...` (an empty list is refused).
pub fn parse_categories(list: &str) -> Result<Vec<Category>, GuardError> {
    let mut out: Vec<Category> = Vec::new();
    for code in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let c = category(code).ok_or_else(|| GuardError::UnknownCategory(code.to_owned()))?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(GuardError::UnknownCategory(list.to_owned()));
    }
    // Keep the prompt's canonical order whatever order the flag gave.
    out.sort_by_key(|c| CATEGORIES.iter().position(|k| k == c));
    Ok(out)
}

/// One conversation turn as the guard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub user: bool,
    pub text: String,
}

/// Renders the Llama Guard 3 prompt for `turns` (alternating, starting with a user turn) with
/// the given categories, exactly as the model's Hugging Face chat template does: an odd
/// number of turns asks about the last `User` message (input check), an even number about the
/// last `Agent` message (output check). With all 14 categories the text is the template's
/// own; a subset keeps the original codes (as llama-stack does) instead of renumbering.
pub fn render_prompt(turns: &[Turn], categories: &[Category]) -> String {
    let role = if turns.len().is_multiple_of(2) {
        "Agent"
    } else {
        "User"
    };
    let mut s = String::with_capacity(1024);
    s.push_str(" <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTask: Check if there is unsafe content in '");
    s.push_str(role);
    s.push_str("' messages in conversations according our safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n");
    for c in categories {
        s.push_str(c.code);
        s.push_str(": ");
        s.push_str(c.name);
        s.push_str(".\n");
    }
    s.push_str("<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n");
    for t in turns {
        s.push_str(if t.user { "User: " } else { "Agent: " });
        s.push_str(t.text.trim());
        s.push_str("\n\n");
    }
    s.push_str("<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST ");
    s.push_str(role);
    s.push_str(" message in the above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line must include a comma-separated list of violated categories.<|eot_id|><|start_header_id|>assistant<|end_header_id|>");
    s
}

/// Which text a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Input,
    Output,
}

/// The outcome of one guard check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub stage: Stage,
    pub safe: bool,
    /// Violated categories among the selected ones (codes, e.g. `S2`).
    pub categories: Vec<String>,
    /// The guard model's raw output.
    pub raw: String,
}

impl From<&Verdict> for GuardCheck {
    /// The verdict as `metis serve` reports it to clients (`metis_guard`).
    fn from(v: &Verdict) -> Self {
        let stage = match v.stage {
            Stage::Input => "input",
            Stage::Output => "output",
        };
        GuardCheck {
            stage: stage.to_owned(),
            safe: v.safe,
            categories: v.categories.clone(),
            raw: v.raw.clone(),
        }
    }
}

/// Parses a guard answer: trimmed, first line `safe` allows, `unsafe` blocks with the `S<n>`
/// codes found after it. Codes outside `selected` are ignored, and an `unsafe` whose codes
/// are all unselected counts as safe (llama-stack's rule). Anything else fails closed.
pub fn parse_verdict(stage: Stage, raw: &str, selected: &[Category]) -> Verdict {
    let text = raw.trim();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").trim().to_ascii_lowercase();
    let (safe, categories) = if first == "safe" {
        (true, Vec::new())
    } else if first == "unsafe" {
        let rest: String = lines.collect::<Vec<_>>().join(",");
        let codes: Vec<String> = rest
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(category)
            .map(|c| c.code.to_owned())
            .collect();
        if codes.is_empty() {
            // No codes given: block without naming one.
            (false, Vec::new())
        } else {
            let kept: Vec<String> = codes
                .into_iter()
                .filter(|c| selected.iter().any(|s| s.code == c))
                .fold(Vec::new(), |mut v, c| {
                    if !v.contains(&c) {
                        v.push(c);
                    }
                    v
                });
            (kept.is_empty(), kept)
        }
    } else {
        (false, Vec::new())
    };
    Verdict {
        stage,
        safe,
        categories,
        raw: raw.to_owned(),
    }
}

/// The refusal returned in place of a blocked request or answer.
pub fn refusal(verdict: &Verdict) -> String {
    let named: Vec<String> = verdict
        .categories
        .iter()
        .filter_map(|c| category(c))
        .map(|c| format!("{}: {}", c.code, c.name))
        .collect();
    let what = if named.is_empty() {
        "unspecified category".to_owned()
    } else {
        named.join(", ")
    };
    format!("I can't help with that: blocked by the guardrail ({what}).")
}

/// Something that completes a raw Llama Guard prompt.
pub trait GuardBackend: Send + Sync {
    /// The guard model's greedy completion of `prompt`.
    fn complete<'a>(
        &'a self,
        prompt: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, GuardError>> + Send + 'a>>;
}

/// A remote OpenAI-compatible `/v1/completions` endpoint serving Llama Guard 3, asked for a
/// greedy completion of at most 20 tokens (the verdict and its categories).
pub struct RemoteGuard {
    client: Client,
    model: String,
}

/// Attempts (the first included) of one guard check. A check sits on the path of a request,
/// so a transient failure is retried briefly rather than with the harness's long backoff;
/// after the last one the server fails closed.
const GUARD_ATTEMPTS: u32 = 3;
/// The longest one guard attempt may take.
const GUARD_TIMEOUT: Duration = Duration::from_secs(60);

impl RemoteGuard {
    /// `base_url` like `http://host:8001/v1`; a URL that is not absolute `http(s)` (or a key
    /// that cannot be sent as a header) is refused here.
    pub fn new(base_url: &str, model: &str, api_key: Option<String>) -> Result<Self, GuardError> {
        let mut endpoint = Endpoint::new(base_url);
        endpoint.api_key = api_key;
        let retry = RetryPolicy {
            max_attempts: GUARD_ATTEMPTS,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            request_timeout: GUARD_TIMEOUT,
        };
        Ok(Self {
            client: Client::new(vec![endpoint], retry)?,
            model: model.to_owned(),
        })
    }
}

impl GuardBackend for RemoteGuard {
    fn complete<'a>(
        &'a self,
        prompt: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, GuardError>> + Send + 'a>> {
        Box::pin(async move {
            let req = TextCompletionRequest {
                model: self.model.clone(),
                prompt: prompt.to_owned(),
                temperature: 0.0,
                max_tokens: 20,
            };
            Ok(self.client.text_completion(&req).await?.text)
        })
    }
}

/// A Llama Guard model run in-process (greedy, up to 20 tokens, one check at a time).
pub struct LocalGuard {
    inner: Arc<Mutex<LocalInner>>,
}

struct LocalInner {
    model: metis_engine::model::Model,
    tokenizer: metis_engine::tokenizer::Tokenizer,
    stop_ids: Vec<u32>,
}

impl LocalGuard {
    /// A guard from a loaded model and tokenizer; it stops where the engine's loader would
    /// (`metis_engine::loader::stop_ids`, with the model's end-of-sequence ids).
    pub fn new(
        model: metis_engine::model::Model,
        tokenizer: metis_engine::tokenizer::Tokenizer,
    ) -> Self {
        let stop_ids = metis_engine::loader::stop_ids(&tokenizer, &model.config().eos_token_ids);
        Self::with_stop_ids(model, tokenizer, stop_ids)
    }

    fn with_stop_ids(
        model: metis_engine::model::Model,
        tokenizer: metis_engine::tokenizer::Tokenizer,
        stop_ids: Vec<u32>,
    ) -> Self {
        Self {
            inner: Arc::new(Mutex::new(LocalInner {
                model,
                tokenizer,
                stop_ids,
            })),
        }
    }

    /// Loads the guard from a Hugging Face model directory or a `.gguf` file, with its own
    /// tokenizer, through the engine's loader, onto `device` (bf16 on a GPU).
    pub fn load(
        path: &std::path::Path,
        device: &candle_core::Device,
    ) -> Result<Self, crate::error::ServeError> {
        let loaded = metis_engine::loader::load_model(path, None, device, None)?;
        let tokenizer = loaded.tokenizer.ok_or_else(|| {
            crate::error::ServeError::Config(format!("guard {} has no tokenizer", path.display()))
        })?;
        Ok(Self::with_stop_ids(
            loaded.model,
            tokenizer,
            loaded.stop_ids,
        ))
    }
}

impl GuardBackend for LocalGuard {
    fn complete<'a>(
        &'a self,
        prompt: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, GuardError>> + Send + 'a>> {
        let inner = Arc::clone(&self.inner);
        let prompt = prompt.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let g = inner
                    .lock()
                    .map_err(|_| GuardError::Local("guard model lock poisoned".into()))?;
                // The prompt carries <|begin_of_text|> itself: no second BOS.
                let ids = g
                    .tokenizer
                    .encode(&prompt, false)
                    .map_err(|e| GuardError::Local(e.to_string()))?;
                let opts = metis_engine::generate::GenerateOptions {
                    max_tokens: 20,
                    stop_ids: g.stop_ids.clone(),
                    ..Default::default()
                };
                let out = metis_engine::generate::generate(
                    &g.model,
                    Some(&g.tokenizer),
                    &ids,
                    &opts,
                    false,
                    |_| std::ops::ControlFlow::Continue(()),
                )
                .map_err(|e| GuardError::Local(e.to_string()))?;
                Ok(out.text.unwrap_or_default())
            })
            .await
            .map_err(|e| GuardError::Local(e.to_string()))?
        })
    }
}

/// The guardrail of a deployment: a backend plus what to check.
#[derive(Clone)]
pub struct Guard {
    pub backend: Arc<dyn GuardBackend>,
    pub categories: Vec<Category>,
    /// Moderate the user input before generation.
    pub check_input: bool,
    /// Moderate the final answer before returning it.
    pub check_output: bool,
    /// Show the guard the reasoning as well as the answer.
    pub include_reasoning: bool,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("categories", &self.categories)
            .field("check_input", &self.check_input)
            .field("check_output", &self.check_output)
            .field("include_reasoning", &self.include_reasoning)
            .finish_non_exhaustive()
    }
}

/// The user/assistant turns of a chat in the alternating form the guard template needs:
/// system and other roles dropped, consecutive same-role messages merged, leading assistant
/// turns and trailing assistant turns (a prefilled answer) removed.
pub fn input_turns(messages: &[Message]) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::new();
    for m in messages {
        let user = match m.role.as_str() {
            "user" => true,
            "assistant" => false,
            _ => continue,
        };
        if turns.is_empty() && !user {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.user == user => {
                last.text.push_str("\n\n");
                last.text.push_str(&m.content);
            }
            _ => turns.push(Turn {
                user,
                text: m.content.clone(),
            }),
        }
    }
    while turns.last().is_some_and(|t| !t.user) {
        turns.pop();
    }
    turns
}

impl Guard {
    /// Checks the user input (the conversation up to its last user turn).
    pub async fn moderate_input(&self, messages: &[Message]) -> Result<Verdict, GuardError> {
        let turns = input_turns(messages);
        if turns.is_empty() {
            return Ok(Verdict {
                stage: Stage::Input,
                safe: true,
                categories: Vec::new(),
                raw: String::new(),
            });
        }
        let raw = self
            .backend
            .complete(&render_prompt(&turns, &self.categories))
            .await?;
        Ok(parse_verdict(Stage::Input, &raw, &self.categories))
    }

    /// Checks the model's answer in the context of the conversation.
    pub async fn moderate_output(
        &self,
        messages: &[Message],
        answer: &str,
        reasoning: Option<&str>,
    ) -> Result<Verdict, GuardError> {
        let mut turns = input_turns(messages);
        if turns.is_empty() {
            turns.push(Turn {
                user: true,
                text: String::new(),
            });
        }
        let text = match reasoning.filter(|r| self.include_reasoning && !r.is_empty()) {
            Some(r) => format!("<think>\n{r}\n</think>\n\n{answer}"),
            None => answer.to_owned(),
        };
        turns.push(Turn { user: false, text });
        let raw = self
            .backend
            .complete(&render_prompt(&turns, &self.categories))
            .await?;
        Ok(parse_verdict(Stage::Output, &raw, &self.categories))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_parsing() {
        let all = CATEGORIES.to_vec();
        let v = parse_verdict(Stage::Input, "\n\nsafe", &all);
        assert!(v.safe);
        let v = parse_verdict(Stage::Input, " unsafe\nS1,S9", &all);
        assert_eq!(
            (v.safe, v.categories.clone()),
            (false, vec!["S1".into(), "S9".into()])
        );
        assert_eq!(
            refusal(&v),
            "I can't help with that: blocked by the guardrail (S1: Violent Crimes, S9: Indiscriminate Weapons)."
        );
        // Unselected categories do not block.
        let some = parse_categories("S1,S2").unwrap();
        assert!(parse_verdict(Stage::Output, "unsafe\nS6", &some).safe);
        // Garbage fails closed.
        assert!(!parse_verdict(Stage::Output, "maybe", &all).safe);
        assert!(!parse_verdict(Stage::Output, "unsafe", &all).safe);
        assert!(parse_categories("S15").is_err());
        assert_eq!(parse_categories("s2, S1").unwrap()[0].code, "S1");
    }

    #[test]
    fn verdicts_are_reported_as_guard_checks() {
        let all = CATEGORIES.to_vec();
        let blocked = parse_verdict(Stage::Output, "unsafe\nS9", &all);
        assert_eq!(
            GuardCheck::from(&blocked),
            GuardCheck {
                stage: "output".into(),
                safe: false,
                categories: vec!["S9".into()],
                raw: "unsafe\nS9".into(),
            }
        );
        // The stage is written as the audit log writes it (serde's snake_case).
        let passed = parse_verdict(Stage::Input, "safe", &all);
        let check = GuardCheck::from(&passed);
        assert_eq!(
            serde_json::to_value(&passed).unwrap()["stage"],
            check.stage.as_str()
        );
        assert!(check.safe && check.categories.is_empty());
    }

    #[test]
    fn turns_alternate() {
        let m = vec![
            Message::system("sys"),
            Message::assistant("hello"),
            Message::user("a"),
            Message::user("b"),
            Message::assistant("c"),
            Message::user("d"),
            Message::assistant("prefill"),
        ];
        let t = input_turns(&m);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].text, "a\n\nb");
        assert!(t[2].user);
    }
}
