//! Short-answer QA scoring as the multi-hop QA benchmarks grade it (HotpotQA, 2WikiMultihopQA):
//! SQuAD-style answer normalisation, exact match and token F1 (with precision and recall), the
//! best over several gold answers (a gold and its aliases), under one of two rules:
//!
//! - [`QaRule::Official`], the official HotpotQA and 2Wiki evaluation scripts: when either
//!   normalised answer is `yes`, `no` or `noanswer` and the two differ, every score is 0 (a
//!   "yes" shares no credit with "no, because …");
//! - [`QaRule::LongBench`], lm-eval's `longbench_*` `qa_f1_score`: the same normalisation and F1
//!   without that rule.
//!
//! Normalisation, in the scripts' order: lower case, delete the 32 ASCII punctuation characters
//! (Unicode quotes and dashes stay), replace the words `a`, `an`, `the` by a space, collapse
//! whitespace.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Which multi-hop QA scoring rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QaRule {
    /// The official HotpotQA / 2Wiki scripts (yes/no/noanswer rule).
    #[default]
    Official,
    /// lm-eval's LongBench `qa_f1_score` (no yes/no rule).
    LongBench,
}

/// Scores of one prediction against one gold.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct QaScores {
    pub exact_match: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
}

static ARTICLES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(a|an|the)\b").expect("regex"));

/// SQuAD answer normalisation (lower, no ASCII punctuation, no articles, single spaces).
pub fn normalize_answer(s: &str) -> String {
    let lowered = s.to_lowercase();
    let no_punct: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let no_articles = ARTICLES.replace_all(&no_punct, " ");
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

const SPECIAL: [&str; 3] = ["yes", "no", "noanswer"];

/// Exact match and token F1 of `prediction` against one `gold`.
pub fn score(prediction: &str, gold: &str, rule: QaRule) -> QaScores {
    let (p, g) = (normalize_answer(prediction), normalize_answer(gold));
    let exact_match = f64::from(u8::from(p == g));
    let zero = QaScores {
        exact_match,
        ..QaScores::default()
    };
    if rule == QaRule::Official
        && p != g
        && (SPECIAL.contains(&p.as_str()) || SPECIAL.contains(&g.as_str()))
    {
        return zero;
    }
    let (pt, gt): (Vec<&str>, Vec<&str>) = (
        p.split_whitespace().collect(),
        g.split_whitespace().collect(),
    );
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &gt {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0usize;
    for t in &pt {
        if let Some(c) = counts.get_mut(t).filter(|c| **c > 0) {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return zero;
    }
    let precision = common as f64 / pt.len() as f64;
    let recall = common as f64 / gt.len() as f64;
    QaScores {
        exact_match,
        f1: 2.0 * precision * recall / (precision + recall),
        precision,
        recall,
    }
}

/// The best of each score over several golds (2Wiki takes each maximum separately).
pub fn best_score(prediction: &str, golds: &[String], rule: QaRule) -> QaScores {
    golds
        .iter()
        .map(|g| score(prediction, g, rule))
        .fold(QaScores::default(), |a, b| QaScores {
            exact_match: a.exact_match.max(b.exact_match),
            f1: a.f1.max(b.f1),
            precision: a.precision.max(b.precision),
            recall: a.recall.max(b.recall),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_squad() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(
            normalize_answer("A cat, an owl and the dog."),
            "cat owl and dog"
        );
        assert_eq!(
            normalize_answer("“Quoted”"),
            "“quoted”",
            "Unicode quotes stay"
        );
        assert_eq!(
            normalize_answer("theater"),
            "theater",
            "articles only as words"
        );
    }

    #[test]
    fn f1_by_hand() {
        // pred tokens [barack, obama, jr], gold [barack, obama]: P 2/3, R 1, F1 0.8.
        let s = score("Barack Obama Jr.", "barack obama", QaRule::Official);
        assert_eq!(s.exact_match, 0.0);
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.recall - 1.0).abs() < 1e-12);
        assert!((s.f1 - 0.8).abs() < 1e-12);
        // Repeated tokens count as a multiset.
        let s = score("new new york", "new york", QaRule::Official);
        assert!((s.f1 - 0.8).abs() < 1e-12, "{s:?}");
        assert_eq!(
            score("The answer", "answer", QaRule::Official).exact_match,
            1.0
        );
        assert_eq!(
            score("", "", QaRule::Official).f1,
            0.0,
            "EM 1, F1 0 on two empties"
        );
    }

    #[test]
    fn yes_no_rule_only_in_the_official_scripts() {
        let official = score("no, it is not", "no", QaRule::Official);
        assert_eq!(official.f1, 0.0);
        let longbench = score("no, it is not", "no", QaRule::LongBench);
        assert!((longbench.f1 - 0.4).abs() < 1e-12, "{longbench:?}");
        assert_eq!(score("Yes", "yes", QaRule::Official).f1, 1.0);
        let best = best_score(
            "Johnny Depp",
            &["John Christopher Depp".into(), "Johnny Depp".into()],
            QaRule::Official,
        );
        assert_eq!(best.exact_match, 1.0);
    }
}
