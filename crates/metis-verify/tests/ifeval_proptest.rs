//! Robustness of `ifeval::evaluate`: arbitrary Unicode, adversarial markdown and huge inputs
//! through every registered instruction id. No input may panic, and each call must finish
//! within a wall-clock bound (1 s in release builds for inputs up to 1 MB; debug builds get 20x).
//! Responses over `MAX_RESPONSE_BYTES` (256 KiB) follow nothing by rule, so the slowest inputs
//! are those just under the cap; both sizes are exercised.

use std::time::{Duration, Instant};

use metis_verify::ifeval::{evaluate, IfEvalGold, INSTRUCTION_IDS, MAX_RESPONSE_BYTES};
use proptest::prelude::*;
use serde_json::{json, Value};

/// One gold holding all 25 ids, with kwargs that exercise regex keywords, fallbacks to literal
/// matching and the custom postscript marker path.
fn all_ids_gold(variant: u8) -> IfEvalGold {
    let kwargs = |id: &str| -> Value {
        let rel = if variant.is_multiple_of(2) {
            "at least"
        } else {
            "less than"
        };
        match id {
            "keywords:existence" => json!({"keywords": ["war", "[a-z]+ing", "C++", "(?<=x)y"]}),
            "keywords:frequency" => json!({"keyword": "a", "frequency": 3, "relation": rel}),
            "keywords:forbidden_words" => json!({"forbidden_words": ["war", "a|b", "é"]}),
            "keywords:letter_frequency" => {
                json!({"letter": "e", "let_frequency": 5, "let_relation": rel})
            }
            "language:response_language" => json!({"language": "en"}),
            "length_constraints:number_sentences" => json!({"num_sentences": 3, "relation": rel}),
            "length_constraints:number_paragraphs" => json!({"num_paragraphs": 2}),
            "length_constraints:number_words" => json!({"num_words": 50, "relation": rel}),
            "length_constraints:nth_paragraph_first_word" => {
                json!({"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "the"})
            }
            "detectable_content:number_placeholders" => json!({"num_placeholders": 2}),
            "detectable_content:postscript" => {
                let marker = ["P.S.", "P.P.S", "Note:"][variant as usize % 3];
                json!({ "postscript_marker": marker })
            }
            "detectable_format:number_bullet_lists" => json!({"num_bullets": 3}),
            "detectable_format:number_highlighted_sections" => json!({"num_highlights": 2}),
            "detectable_format:multiple_sections" => {
                json!({"section_spliter": "Section", "num_sections": 2})
            }
            "combination:repeat_prompt" => json!({"prompt_to_repeat": "Write a story"}),
            "startend:end_checker" => json!({"end_phrase": "Any other questions?"}),
            "change_case:capital_word_frequency" => {
                json!({"capital_frequency": 4, "capital_relation": rel})
            }
            _ => json!({}),
        }
    };
    let ids: Vec<Value> = INSTRUCTION_IDS.iter().map(|i| json!(i)).collect();
    let kws: Vec<Value> = INSTRUCTION_IDS.iter().map(|i| kwargs(i)).collect();
    IfEvalGold::from_row(&Value::Array(ids), &Value::Array(kws)).expect("valid gold")
}

fn bound() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(1)
    }
}

fn check(gold: &IfEvalGold, text: &str) {
    let t0 = Instant::now();
    let f = evaluate(gold, text);
    let dt = t0.elapsed();
    assert_eq!(f.strict.len(), 25);
    assert_eq!(f.loose.len(), 25);
    for (s, l) in f.strict.iter().zip(&f.loose) {
        assert!(!s | l, "strict implies loose");
    }
    assert!(dt < bound(), "{} bytes took {dt:?}", text.len());
}

/// Markdown-ish pieces that drive every checker's special cases.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("**".to_string()),
        Just("***".to_string()),
        Just("******".to_string()),
        Just("\n".to_string()),
        Just("\n\n".to_string()),
        Just(" ".to_string()),
        Just("- ".to_string()),
        Just("---".to_string()),
        Just("<<".to_string()),
        Just(">>".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("```json".to_string()),
        Just("```".to_string()),
        Just("{\"a\": [NaN, ".to_string()),
        Just("P.S.".to_string()),
        Just("p. p. s".to_string()),
        Just("Section 1".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("Dr.".to_string()),
        Just("e.g.".to_string()),
        Just("...".to_string()),
        Just(". . .".to_string()),
        Just("--".to_string()),
        Just("CAN'T".to_string()),
        Just("My answer is yes.".to_string()),
        Just("Any other questions?".to_string()),
        Just("\u{1c}".to_string()),
        Just("\u{2028}".to_string()),
        Just("ǅ".to_string()),
        Just("İ".to_string()),
        Just("\u{301}".to_string()),
        "[a-zA-Z]{1,12}",
        "[0-9.,-]{1,6}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, ..ProptestConfig::default() })]

    #[test]
    fn ifeval_arbitrary_unicode_never_panics(text in any::<String>(), v in 0u8..6) {
        check(&all_ids_gold(v), &text);
    }

    #[test]
    fn ifeval_adversarial_markdown_never_panics(pieces in prop::collection::vec(piece(), 0..60), v in 0u8..6) {
        check(&all_ids_gold(v), &pieces.concat());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Inputs up to 1 MB: a random adversarial unit repeated to just under the cap (the
    /// slowest gradable size) or to 1 MB (over the cap: graded as following nothing).
    #[test]
    fn ifeval_huge_inputs_are_bounded(pieces in prop::collection::vec(piece(), 1..20), v in 0u8..6, big in any::<bool>()) {
        let unit = pieces.concat();
        if unit.is_empty() {
            return Ok(());
        }
        let target = if big { 1 << 20 } else { MAX_RESPONSE_BYTES };
        check(&all_ids_gold(v), &unit.repeat((target / unit.len()).max(1)));
    }
}

#[test]
fn ifeval_one_megabyte_worst_cases() {
    let gold = all_ids_gold(0);
    for unit in [
        "Dr. Smith *went* to the U.S. on Jan. 5. HE SAID \"NO.\" - item\n",
        "a.a.a.a.a.a.a.a.a.a",
        ". . . . . . ",
        "aaaaaaaaaa",
        "**x** [y] <<z>> Section 1\n\n***\n",
        "ÀÉÎ \u{301}\u{1c} ǅ İ ",
    ] {
        for target in [MAX_RESPONSE_BYTES, 1 << 20] {
            check(&gold, &unit.repeat(target / unit.len()));
        }
    }
    // just over the cap: follows nothing, immediately
    let over = "a ".repeat(MAX_RESPONSE_BYTES / 2 + 1);
    let f = evaluate(&gold, &over);
    assert!(f.strict.iter().chain(&f.loose).all(|b| !b));
}
