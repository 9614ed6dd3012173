//! Unit tests: one block per registered checker, with the upstream pitfalls.

use serde_json::json;

use super::*;

fn gold(id: &str, kwargs: Value) -> IfEvalGold {
    IfEvalGold::from_row(&json!([id]), &json!([kwargs])).expect("valid gold")
}

fn strict(id: &str, kwargs: Value, text: &str) -> bool {
    evaluate(&gold(id, kwargs), text).strict[0]
}

fn loose(id: &str, kwargs: Value, text: &str) -> bool {
    evaluate(&gold(id, kwargs), text).loose[0]
}

#[test]
fn all_ids_have_a_schema() {
    for id in INSTRUCTION_IDS {
        assert!(schema(id).is_some(), "{id}");
    }
    let mut sorted = INSTRUCTION_IDS.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25);
}

#[test]
fn keywords_existence_is_a_raw_case_insensitive_search() {
    let kw = json!({"keywords": ["Hello", "w.rld"]});
    assert!(strict(
        "keywords:existence",
        kw.clone(),
        "say HELLO to the world"
    ));
    assert!(!strict("keywords:existence", kw.clone(), "say HELLO"));
    // substrings count: no \b
    assert!(strict(
        "keywords:existence",
        json!({"keywords": ["war"]}),
        "forward"
    ));
    // invalid Rust regex falls back to a literal
    assert!(strict(
        "keywords:existence",
        json!({"keywords": ["C++"]}),
        "I like c++"
    ));
}

#[test]
fn keywords_frequency_counts_substrings_non_overlapping() {
    let kw = |n, rel| json!({"keyword": " war ", "frequency": n, "relation": rel});
    assert!(strict(
        "keywords:frequency",
        kw(2, "at least"),
        "forward WAR"
    ));
    assert!(!strict(
        "keywords:frequency",
        kw(2, "less than"),
        "forward WAR"
    ));
    let aa = json!({"keyword": "aa", "frequency": 2, "relation": "at least"});
    assert!(!strict("keywords:frequency", aa.clone(), "aaa"));
    assert!(strict("keywords:frequency", aa, "aaaa"));
}

#[test]
fn forbidden_words_use_python_word_boundaries() {
    let kw = json!({"forbidden_words": ["war"]});
    assert!(strict(
        "keywords:forbidden_words",
        kw.clone(),
        "forward software"
    ));
    assert!(!strict(
        "keywords:forbidden_words",
        kw.clone(),
        "no WAR here"
    ));
    assert!(!strict(
        "keywords:forbidden_words",
        kw.clone(),
        "war_time? no: war."
    ));
    // Python re: '²' is a word character, so "war²" has no boundary after "war"
    assert!(strict("keywords:forbidden_words", kw.clone(), "war²"));
    // a combining mark is not a Python word character
    assert!(!strict("keywords:forbidden_words", kw, "war\u{301}"));
}

#[test]
fn letter_frequency_lowercases_the_response() {
    let kw = |n, rel| json!({"letter": "A", "let_frequency": n, "let_relation": rel});
    assert!(strict(
        "keywords:letter_frequency",
        kw(3, "at least"),
        "Aa a"
    ));
    assert!(!strict(
        "keywords:letter_frequency",
        kw(3, "less than"),
        "Aa a"
    ));
    // non-letters (upstream: random letter) are counted literally
    let bang = json!({"letter": "!", "let_frequency": 2, "let_relation": "at least"});
    assert!(strict("keywords:letter_frequency", bang, "hi!!"));
}

#[test]
fn response_language_passes_when_langdetect_raises() {
    let kw = json!({"language": "de"});
    assert!(strict(
        "language:response_language",
        kw.clone(),
        "Dies ist ein kurzer Text auf Deutsch. Wir lesen jeden Tag gerne Bücher."
    ));
    assert!(!strict(
        "language:response_language",
        kw.clone(),
        "This is a short text written in English. We like to read books every day."
    ));
    // no features: langdetect raises, upstream counts it as followed
    assert!(strict("language:response_language", kw, "12345 !!!"));
}

#[test]
fn number_sentences_uses_punkt() {
    let kw = |n, rel| json!({"num_sentences": n, "relation": rel});
    let text = "Dr. Smith arrived at 3 p.m. today. He met Mr. Jones! Did they talk? Yes.";
    assert_eq!(punkt::count_sentences(text), 4);
    assert!(strict(
        "length_constraints:number_sentences",
        kw(4, "at least"),
        text
    ));
    assert!(!strict(
        "length_constraints:number_sentences",
        kw(4, "less than"),
        text
    ));
    // NLTK splits after "e.g." here (verified against NLTK 3.10)
    assert_eq!(punkt::count_sentences("e.g. this one. And U.S. that."), 3);
}

#[test]
fn number_paragraphs_splits_on_triple_asterisks() {
    let kw = |n| json!({"num_paragraphs": n});
    let id = "length_constraints:number_paragraphs";
    assert!(strict(id, kw(2), "one\n***\ntwo"));
    assert!(strict(id, kw(2), "***\none *** two\n***"));
    assert!(
        !strict(id, kw(3), "one\n***\n \n***\ntwo"),
        "blank middle fails"
    );
    assert!(!strict(id, kw(1), "one\n***\ntwo"));
}

#[test]
fn number_words_counts_unicode_word_runs() {
    let kw = |n, rel| json!({"num_words": n, "relation": rel});
    let id = "length_constraints:number_words";
    assert!(strict(id, kw(5, "at least"), "it's a e-mail x_y"));
    assert!(strict(id, kw(7, "less than"), "it's a e-mail x_y"));
    assert!(!strict(id, kw(6, "less than"), "it's a e-mail x_y"));
    // regex-module \w: the Devanagari vowel sign joins the word; ² is not a word char
    assert!(strict(id, kw(2, "less than"), "हिन्दी ²"));
}

#[test]
fn nth_paragraph_uses_the_raw_split_list() {
    let id = "length_constraints:nth_paragraph_first_word";
    let kw = json!({"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Second"});
    assert!(strict(id, kw.clone(), "First para.\n\n\"Second, para."));
    // a blank piece is not counted, but indexing uses the raw list: pieces[1] is blank
    assert!(!strict(id, kw.clone(), "First para.\n\n\n\nsecond para."));
    assert!(!strict(id, kw, "First para.\n\nThird para."));
}

#[test]
fn placeholders_must_lie_on_one_line() {
    let id = "detectable_content:number_placeholders";
    assert!(strict(id, json!({"num_placeholders": 2}), "[a] and [b]"));
    assert!(!strict(id, json!({"num_placeholders": 2}), "[a] and [b\n]"));
}

#[test]
fn postscript_markers() {
    let id = "detectable_content:postscript";
    assert!(strict(
        id,
        json!({"postscript_marker": "P.P.S"}),
        "Hi\np. p. s. bye"
    ));
    assert!(strict(
        id,
        json!({"postscript_marker": "P.P.S"}),
        "Hi\nP.P.S bye"
    ));
    assert!(!strict(
        id,
        json!({"postscript_marker": "P.P.S"}),
        "Hi\nP.S. bye"
    ));
    assert!(strict(
        id,
        json!({"postscript_marker": "P.S."}),
        "text P.S. anywhere"
    ));
    assert!(!strict(id, json!({"postscript_marker": "P.S."}), "PS bye"));
}

#[test]
fn bullets_count_exactly_including_rules_and_negatives() {
    let id = "detectable_format:number_bullet_lists";
    assert!(strict(id, json!({"num_bullets": 2}), "* one\n* two"));
    assert!(strict(id, json!({"num_bullets": 3}), "* one\n- two\n---"));
    assert!(strict(id, json!({"num_bullets": 1}), "-5 degrees"));
    assert!(!strict(id, json!({"num_bullets": 1}), "**bold**"));
    assert!(!strict(id, json!({"num_bullets": 1}), "* one\n* two"));
}

#[test]
fn constrained_response_is_a_substring_test() {
    let id = "detectable_format:constrained_response";
    assert!(strict(id, json!({}), "Well... My answer is maybe. ok"));
    assert!(!strict(id, json!({}), "my answer is yes."));
}

#[test]
fn highlights_count_bold_once() {
    let id = "detectable_format:number_highlighted_sections";
    assert!(strict(id, json!({"num_highlights": 1}), "**bold**"));
    assert!(!strict(id, json!({"num_highlights": 2}), "**bold**"));
    assert!(strict(id, json!({"num_highlights": 2}), "*a* and *b*"));
    assert!(!strict(id, json!({"num_highlights": 1}), "* * and **  **"));
}

#[test]
fn sections_split_on_splitter_and_number() {
    let id = "detectable_format:multiple_sections";
    let kw = json!({"section_spliter": "Section", "num_sections": 2});
    assert!(strict(id, kw.clone(), "Section 1\na\nSection 2\nb"));
    assert!(
        !strict(id, kw.clone(), "SECTION 1\na\nSECTION 2\nb"),
        "case-sensitive"
    );
    assert!(strict(id, kw, "Section1 a Section2 b"));
}

#[test]
fn json_format_follows_python_json() {
    let id = "detectable_format:json_format";
    assert!(strict(id, json!({}), "```json\n{\"a\": NaN}\n```"));
    assert!(strict(id, json!({}), "```JSON\n[1, Infinity]\n```"));
    assert!(strict(id, json!({}), " 42 "));
    assert!(!strict(id, json!({}), "Here: {\"a\": 1}"));
    assert!(!strict(id, json!({}), "{\"a\": 1,}"));
    assert!(loose(id, json!({}), "Here is the JSON:\n{\"a\": 1}"));
}

#[test]
fn title_needs_non_blank_content() {
    let id = "detectable_format:title";
    assert!(strict(id, json!({}), "<<My Title>>\nbody"));
    assert!(!strict(id, json!({}), "<<  >>"));
    // greedy: one match "<<  >> and <<>>" whose inside is not blank
    assert!(strict(id, json!({}), "<<  >> and <<>>"));
    assert!(!strict(id, json!({}), "<<multi\nline>>"));
}

#[test]
fn two_responses() {
    let id = "combination:two_responses";
    assert!(strict(id, json!({}), "A\n******\nB"));
    assert!(strict(id, json!({}), "******\nA\n******\nB\n******"));
    assert!(!strict(id, json!({}), "A\n******\n\n******\nB"));
    assert!(!strict(id, json!({}), "A\n******\n A "));
}

#[test]
fn repeat_prompt_and_end_checker() {
    let kw = json!({"prompt_to_repeat": " Write a poem. "});
    assert!(strict(
        "combination:repeat_prompt",
        kw.clone(),
        "\nWRITE A POEM. Here it is."
    ));
    assert!(!strict(
        "combination:repeat_prompt",
        kw,
        "Here: Write a poem."
    ));
    let end = json!({"end_phrase": "Any other questions?"});
    assert!(strict(
        "startend:end_checker",
        end.clone(),
        "Done. any other questions?\"  "
    ));
    assert!(!strict(
        "startend:end_checker",
        end,
        "Any other questions? Thanks"
    ));
}

#[test]
fn quotation() {
    assert!(strict("startend:quotation", json!({}), "  \"quoted\" \n"));
    assert!(!strict("startend:quotation", json!({}), "\""));
    assert!(!strict("startend:quotation", json!({}), "\"open"));
}

#[test]
fn capital_word_frequency_uses_nltk_tokens() {
    let id = "change_case:capital_word_frequency";
    let kw = |n, rel| json!({"capital_frequency": n, "capital_relation": rel});
    // CAN'T -> CA N'T (2), CANNOT -> CAN NOT (2), HELLO,WORLD -> HELLO , WORLD (2), I (1)
    assert!(strict(
        id,
        kw(7, "at least"),
        "I CAN'T. CANNOT. HELLO,WORLD."
    ));
    assert!(!strict(
        id,
        kw(8, "at least"),
        "I CAN'T. CANNOT. HELLO,WORLD."
    ));
    assert!(strict(id, kw(1, "less than"), "e-MAIL-x 123"));
}

#[test]
fn english_case_checkers() {
    let text = "THIS IS A SHORT TEXT WRITTEN IN ENGLISH. WE LIKE TO READ BOOKS EVERY DAY.";
    assert!(strict("change_case:english_capital", json!({}), text));
    assert!(!strict(
        "change_case:english_capital",
        json!({}),
        "THIS is mixed"
    ));
    let low = "this is a short text written in english. we like to read books every day.";
    assert!(strict("change_case:english_lowercase", json!({}), low));
    assert!(!strict("change_case:english_lowercase", json!({}), text));
    // no cased character: isupper() is false, langdetect is never asked
    assert!(!strict("change_case:english_capital", json!({}), "123"));
}

#[test]
fn no_comma_only_ascii() {
    assert!(strict("punctuation:no_comma", json!({}), "a，b"));
    assert!(!strict("punctuation:no_comma", json!({}), "a, b"));
}

#[test]
fn strict_needs_non_blank_and_loose_drops_lines() {
    assert!(!strict("punctuation:no_comma", json!({}), " \n\t"));
    let id = "startend:quotation";
    let text = "Sure, here it is:\n\"quoted\"\nHope this helps!";
    assert!(!strict(id, json!({}), text));
    assert!(loose(id, json!({}), text));
    // asterisks removed in loose mode
    let hl = "detectable_format:title";
    assert!(loose(hl, json!({}), "**<<Title>>**"));
}

#[test]
fn gold_validation_and_round_trip() {
    let g = IfEvalGold::from_row(
        &json!(["keywords:frequency", "punctuation:no_comma"]),
        &json!([{"keyword": "x", "frequency": 2, "relation": "at least", "num_words": null}, {}]),
    )
    .unwrap();
    assert_eq!(g.instructions[0].kwargs.len(), 3, "falsy kwargs dropped");
    assert_eq!(IfEvalGold::from_json(&g.to_json()).unwrap(), g);
    let s = Value::String(g.to_json().to_string());
    assert_eq!(IfEvalGold::from_json(&s).unwrap(), g);

    let err = IfEvalGold::from_row(
        &json!(["keywords:frequency"]),
        &json!([{"keyword": "x", "relation": "at least"}]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        IfEvalError::MissingKwarg {
            id: "keywords:frequency".into(),
            kwarg: "frequency".into()
        }
    );
    let err = IfEvalGold::from_row(
        &json!(["keywords:frequency"]),
        &json!([{"keyword": "x", "frequency": "2", "relation": "at least"}]),
    )
    .unwrap_err();
    assert!(matches!(err, IfEvalError::WrongType { ref kwarg, .. } if kwarg == "frequency"));
    let err = IfEvalGold::from_row(
        &json!(["keywords:frequency"]),
        &json!([{"keyword": "x", "frequency": 2, "relation": "more"}]),
    )
    .unwrap_err();
    assert!(matches!(err, IfEvalError::BadValue { .. }));
    assert!(matches!(
        IfEvalGold::from_row(&json!(["nope"]), &json!([{}])).unwrap_err(),
        IfEvalError::UnknownId { .. }
    ));
    assert!(matches!(
        IfEvalGold::from_row(&json!(["punctuation:no_comma"]), &json!([{"x": 1}])).unwrap_err(),
        IfEvalError::UnexpectedKwarg { .. }
    ));
    assert!(matches!(
        IfEvalGold::from_row(&json!(["a", "b"]), &json!([{}])).unwrap_err(),
        IfEvalError::LengthMismatch { .. }
    ));
}

#[test]
fn oversized_responses_follow_nothing() {
    let g = gold("punctuation:no_comma", json!({}));
    let big = "a".repeat(MAX_RESPONSE_BYTES + 1);
    assert_eq!(
        evaluate(&g, &big),
        Followed {
            strict: vec![false],
            loose: vec![false]
        }
    );
}

#[test]
fn invalid_gold_built_by_hand_is_never_followed() {
    let g = IfEvalGold {
        instructions: vec![Instruction {
            id: "keywords:frequency".into(),
            kwargs: Map::new(),
        }],
    };
    assert_eq!(
        evaluate(&g, "text"),
        Followed {
            strict: vec![false],
            loose: vec![false]
        }
    );
}
