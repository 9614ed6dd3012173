//! GSM8K answer handling exactly as lm-eval's `gsm8k` and `gsm8k_cot` tasks
//! (`lm_eval/tasks/gsm8k/`, task version 3.0): strict-match and flexible-extract filters,
//! `exact_match` with the task's `regexes_to_ignore`, the gold target and the 8 fixed CoT
//! exemplars (Wei et al. 2022) from `gsm8k-cot.yaml`.
//!
//! The strict CoT regex `The answer is (\-?[0-9\.\,]+).` ends in an unescaped `.`, so
//! "The answer is 42" at the very end of a text extracts "4": the regex backtracks so that the
//! any-char can take the "2". [`Variant::CotEightShot`] reproduces that, as the scores to
//! compare with were computed with it.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::minerva::py_strip;

/// Which lm-eval GSM8K task's strict-match filter to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// `gsm8k`: `#### (\-?[0-9\.\,]+)`, first match.
    ZeroShot,
    /// `gsm8k_cot`: `The answer is (\-?[0-9\.\,]+).`, first match, unescaped dot included.
    CotEightShot,
}

static STRICT_ZERO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"#### (\-?[0-9\.\,]+)").expect("static regex"));
static STRICT_COT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"The answer is (\-?[0-9\.\,]+).").expect("static regex"));
static FLEXIBLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").expect("static regex"));
static UPTO_HASHES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s).*#### ").expect("static regex"));

/// lm-eval's strict-match: group 1 of the first match, stripped; `None` where lm-eval gives
/// `[invalid]`.
pub fn strict_extract(text: &str, variant: Variant) -> Option<String> {
    let re = match variant {
        Variant::ZeroShot => &*STRICT_ZERO,
        Variant::CotEightShot => &*STRICT_COT,
    };
    let caps = re.captures(text)?;
    Some(py_strip(caps.get(1)?.as_str()).to_string())
}

/// lm-eval's flexible-extract: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`, its first
/// non-empty group, stripped.
pub fn flexible_extract(text: &str) -> Option<String> {
    let caps = FLEXIBLE.captures_iter(text).last()?;
    let group = caps
        .iter()
        .skip(1)
        .flatten()
        .map(|m| m.as_str())
        .find(|g| !g.is_empty())?;
    Some(py_strip(group).to_string())
}

/// `exact_match_hf_evaluate` with gsm8k's `regexes_to_ignore` (`,`, `\$`, `(?s).*#### `,
/// `\.$`) and `ignore_case`; no number parsing, so "1000.00" ≠ "1000".
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    em_normalize(prediction) == em_normalize(reference)
}

fn em_normalize(s: &str) -> String {
    let s = s.replace([',', '$'], "");
    let s = UPTO_HASHES.replace(&s, "").into_owned();
    // Python's `$` (no MULTILINE) matches at the end and before a final "\n".
    let s = if let Some(head) = s.strip_suffix(".\n") {
        format!("{head}\n")
    } else if let Some(head) = s.strip_suffix('.') {
        head.to_string()
    } else {
        s
    };
    s.to_lowercase()
}

/// The gold target: the text after the last `####`, stripped (`gsm8k_cot`'s
/// `doc_to_target`); `None` without `####`.
pub fn gold_answer(solution: &str) -> Option<String> {
    let (_, tail) = solution.rsplit_once("####")?;
    Some(py_strip(tail).to_string())
}

/// The 8 fixed CoT exemplars of lm-eval's `gsm8k_cot` (`gsm8k-cot.yaml`, lm-eval 0.4.13).
pub const COT_EXEMPLARS: [(&str, &str); 8] = [
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
];
