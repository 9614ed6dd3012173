//! AlpacaEval 2's judge, as upstream runs it (`tatsu-lab/alpaca_eval@cd543a14`, annotator
//! `weighted_alpaca_eval_gpt4_turbo`): one chat request per (instruction, reference output,
//! judged output) asking which of two outputs, labelled `m` and `M`, is better, and a
//! preference in [1, 2] read from the log-probabilities of those two tokens.
//!
//! Upstream pieces reproduced here, each cited where it is used:
//! - the prompt `evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`, filled as
//!   `utils.make_prompts` fills it and split into chat messages as `utils.prompt_to_chatml`
//!   splits it;
//! - the request of `evaluators_configs/weighted_alpaca_eval_gpt4_turbo/configs.yaml`
//!   (`max_tokens` 1, `temperature` 1, `logprobs`, `top_logprobs` 5; `top_p` 1 is the default of
//!   `decoders/openai.py: _openai_completion_helper`);
//! - the output order, randomised per instruction by `processors.py:
//!   RandomSwitchTwoColumnsProcessor` as `annotators/pairwise_evaluator.py:
//!   SinglePairwiseAnnotator` configures it (seed columns `["instruction"]`, switch column
//!   `is_switched_outputs`, annotator seed 123), reproduced bit for bit with CPython's
//!   generator ([`super::pyrandom`]); a swapped preference `p` becomes `3 − p`;
//! - the parser `completion_parsers.py: logprob_parser` with `numerator_token` `m`,
//!   `denominator_tokens` `[m, M]`, `is_binarize` false.
//!
//! Output 1 is always the reference (the baseline `gpt4_1106_preview`), output 2 the judged
//! model's answer, so a preference of 2 means the judged model wins.

use metis_openai::{ChatMessage, ChatRequest, GenParams, TopLogprob};
use sha2::{Digest, Sha256};

use super::pyrandom::PyRandom;

/// Where the judge configuration comes from, recorded with every result.
pub const UPSTREAM: &str =
    "tatsu-lab/alpaca_eval@cd543a149df89434d8a54582c0151c0b945c3d20 weighted_alpaca_eval_gpt4_turbo";

/// `alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt` at the pinned commit, verbatim (Apache-2.0,
/// © 2023 the AlpacaEval authors); the file has no final newline.
pub const TEMPLATE: &str = r#"<|im_start|>system
You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on the quality of their responses to a given instruction. This process will be used to create a leaderboard reflecting the most accurate and human-preferred answers.
<|im_end|>
<|im_start|>user
I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{instruction}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{output_1}"""
    },
    {
        "model_identifier": "M",
        "output": """{output_2}"""
    }
}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier
<|im_end|>"#;

/// The judge's sampling settings (`configs.yaml`; `top_p` from the decoder's default).
pub const MAX_TOKENS: u32 = 1;
pub const TEMPERATURE: f64 = 1.0;
pub const TOP_P: f64 = 1.0;
pub const TOP_LOGPROBS: u32 = 5;

/// The token naming the first output (the parser's numerator) and the second.
pub const FIRST_TOKEN: &str = "m";
pub const SECOND_TOKEN: &str = "M";

/// `SinglePairwiseAnnotator`'s switch column name and the annotator's default seed, which
/// together with the instruction make the per-instruction seed string.
const SWITCH_COLUMN: &str = "is_switched_outputs";
const ANNOTATOR_SEED: u32 = 123;

/// One comparison to judge: output 1 is the reference, output 2 the judged answer.
#[derive(Debug, Clone, Copy)]
pub struct Comparison<'a> {
    pub instruction: &'a str,
    pub reference: &'a str,
    pub answer: &'a str,
}

/// A judge request ready to send, with the order it presents the outputs in.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    pub request: ChatRequest,
    /// True when the judged answer is shown first (as `m`).
    pub swapped: bool,
    /// Hash of the judge model, messages and parameters (the judgment's store key).
    pub hash: String,
}

impl Comparison<'_> {
    /// Whether upstream shows this instruction's outputs in swapped order: CPython's
    /// `random.Random("is_switched_outputs" + instruction + "123").choices([False, True])[0]`.
    pub fn swapped(&self) -> bool {
        let seed = format!("{SWITCH_COLUMN}{}{ANNOTATOR_SEED}", self.instruction);
        *PyRandom::from_str_seed(&seed).choice(&[false, true])
    }

    /// The judge request for `judge_model`: the template filled with the instruction and the
    /// two outputs in the order [`Comparison::swapped`] decides, as chat messages.
    pub fn request(&self, judge_model: &str) -> JudgeRequest {
        let swapped = self.swapped();
        let (first, second) = if swapped {
            (self.answer, self.reference)
        } else {
            (self.reference, self.answer)
        };
        let prompt = fill_template(self.instruction, first, second);
        let request = ChatRequest {
            model: judge_model.to_owned(),
            messages: prompt_to_chat(&prompt),
            params: GenParams {
                temperature: TEMPERATURE,
                top_p: TOP_P,
                max_tokens: MAX_TOKENS,
                seed: None,
            },
        };
        let hash = request_hash(&request);
        JudgeRequest {
            request,
            swapped,
            hash,
        }
    }
}

/// `utils.make_prompts` with batch size 1: each placeholder, in the order they first appear in
/// the template, replaced once, first occurrence in the text so far (so a placeholder written
/// inside an earlier value is the one replaced, as upstream does).
pub fn fill_template(instruction: &str, output_1: &str, output_2: &str) -> String {
    [
        ("{instruction}", instruction),
        ("{output_1}", output_1),
        ("{output_2}", output_2),
    ]
    .iter()
    .fold(TEMPLATE.to_owned(), |text, (placeholder, value)| {
        text.replacen(placeholder, value, 1)
    })
}

/// `utils.prompt_to_chatml` after the decoder's `strip`: each `<|im_start|>` opens a message
/// whose role is its first line and whose content is the rest up to `<|im_end|>`, stripped.
/// A role `system name=…` (a named system example upstream) is sent as `system`: the wire
/// type has no `name`. Text that itself contains these markers is split as upstream splits it.
pub fn prompt_to_chat(prompt: &str) -> Vec<ChatMessage> {
    const START: &str = "<|im_start|>";
    const END: &str = "<|im_end|>";
    prompt
        .trim()
        .split(START)
        .skip(1)
        .map(|piece| {
            let (role, rest) = piece.split_once('\n').unwrap_or((piece, ""));
            let content = rest.split(END).next().unwrap_or("").trim();
            let role = role.trim();
            let role = if role.starts_with("system") {
                "system"
            } else {
                role
            };
            ChatMessage::new(role, content)
        })
        .collect()
}

/// Hex SHA-256 (first 16 bytes) of the judge model, messages and sampling parameters.
fn request_hash(request: &ChatRequest) -> String {
    let fields = serde_json::json!({
        "model": request.model,
        "messages": request.messages,
        "params": request.params,
        "top_logprobs": TOP_LOGPROBS,
    });
    let digest = Sha256::digest(fields.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `logprob_parser` (`is_binarize: false`) on the top log-probabilities of the judge's first
/// token: `2 − P(m) / (P(m) + P(M))`, a token missing from the list counting as probability 0.
/// `None` (upstream's NaN, judge-invalid) when neither token is listed. Tokens must match
/// exactly (`" m"` is another token); a token listed twice counts with its last value, as
/// upstream's dict comprehension keeps it.
pub fn parse_preference(top: &[TopLogprob]) -> Option<f64> {
    let last = |token: &str| top.iter().rev().find(|t| t.token == token);
    let (m, big_m) = (last(FIRST_TOKEN), last(SECOND_TOKEN));
    if m.is_none() && big_m.is_none() {
        return None;
    }
    let lp = |t: Option<&TopLogprob>| t.map_or(f64::NEG_INFINITY, |t| t.logprob);
    let (lp_m, lp_big_m) = (lp(m), lp(big_m));
    let hi = lp_m.max(lp_big_m);
    let denominator = hi + ((lp_m - hi).exp() + (lp_big_m - hi).exp()).ln();
    Some(2.0 - (lp_m - denominator).exp())
}

/// The preference in the unswapped order (reference first): a swapped `p` is `3 − p`.
pub fn unswap(preference: f64, swapped: bool) -> f64 {
    if swapped {
        3.0 - preference
    } else {
        preference
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(pairs: &[(&str, f64)]) -> Vec<TopLogprob> {
        pairs
            .iter()
            .map(|(t, lp)| TopLogprob {
                token: (*t).to_owned(),
                logprob: *lp,
            })
            .collect()
    }

    #[test]
    fn preference_from_logprobs() {
        // The example in logprob_parser's docstring: M −0.017597131, m −4.048847.
        let p = parse_preference(&top(&[("M", -0.017_597_131), ("m", -4.048_847)])).unwrap();
        let pm = (-4.048_847f64).exp() / ((-4.048_847f64).exp() + (-0.017_597_131f64).exp());
        assert!((p - (2.0 - pm)).abs() < 1e-15, "{p}");
        assert!(p > 1.9 && p < 2.0);
        assert_eq!(
            parse_preference(&top(&[("m", -0.1), ("Both", -3.0)])),
            Some(1.0)
        );
        assert_eq!(parse_preference(&top(&[("M", -2.0)])), Some(2.0));
        assert_eq!(
            parse_preference(&top(&[("m", -1.0), ("M", -1.0)])),
            Some(1.5)
        );
        assert_eq!(parse_preference(&top(&[(" m", -0.1), ("The", -1.0)])), None);
        assert_eq!(parse_preference(&[]), None);
        assert_eq!(unswap(1.2, true), 1.8);
        assert_eq!(unswap(1.2, false), 1.2);
    }

    #[test]
    fn chat_messages_follow_prompt_to_chatml() {
        let msgs = prompt_to_chat(&fill_template("Say hi.", "Hi!", "Hello."));
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, "system");
        assert!(msgs[0]
            .content
            .starts_with("You are a highly efficient assistant"));
        assert!(msgs[0].content.ends_with("human-preferred answers."));
        assert_eq!(msgs[1].role, "user");
        assert!(msgs[1].content.starts_with("I require a leaderboard"));
        assert!(msgs[1].content.ends_with("## Best Model Identifier"));
        assert!(msgs[1]
            .content
            .contains("\"instruction\": \"\"\"Say hi.\"\"\","));
    }

    #[test]
    fn placeholders_are_replaced_once_in_order_like_make_prompts() {
        // An instruction quoting a placeholder: upstream replaces that occurrence next.
        let filled = fill_template("Echo {output_1}", "A", "B");
        assert!(filled.contains(r#""instruction": """Echo A""","#));
        assert!(filled.contains(r#""output": """{output_1}""""#));
        assert!(filled.contains(r#""output": """B""""#));
    }
}
