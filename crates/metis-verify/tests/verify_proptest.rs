//! Property tests: no input, however strange, makes the reasoning splitter, the extractors,
//! the format check or the verifiers panic, and their outputs keep their invariants.

use metis_verify::cvss::Version;
use metis_verify::extract::{self, normalize, Protocol};
use metis_verify::format::{self, FormatPolicy};
use metis_verify::mcq::{ChoiceSpec, LetterSet};
use metis_verify::reasoning::{split, Delimiters, StreamDelta, StreamSplitter};
use metis_verify::verifier::{aggregate, default_verifier, Task, VerifyOptions};
use proptest::prelude::*;

const CASES: u32 = 10_000;

/// Text that looks like model output: fragments of answers, tags and noise, mixed with
/// arbitrary Unicode.
fn model_like() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("<think>".to_owned()),
        Just("</think>".to_owned()),
        Just("\n".to_owned()),
        Just("Answer: ".to_owned()),
        Just("**".to_owned()),
        Just("CWE\u{2011}79".to_owned()),
        Just("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H".to_owned()),
        Just("AV:N/AC:H".to_owned()),
        Just("T1059.001, ".to_owned()),
        Just("(B)".to_owned()),
        Just(" and ".to_owned()),
        Just("\\boxed{".to_owned()),
        "[A-Ea-e,.;:()\\[\\] ]{0,6}",
        any::<String>(),
    ];
    prop::collection::vec(fragment, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn split_never_panics_and_answer_is_a_suffix(text in model_like()) {
        let parts = split(&text, &Delimiters::default());
        prop_assert!(text.ends_with(parts.answer));
        prop_assert!(!parts.answer.contains("</think>") || parts.status == metis_verify::ThinkStatus::Absent);
    }

    #[test]
    fn split_arbitrary_unicode(text in any::<String>(), open in "\\PC{1,4}", close in "\\PC{1,4}") {
        if let Some(d) = Delimiters::new(open, close) {
            let parts = split(&text, &d);
            prop_assert!(text.ends_with(parts.answer));
        }
    }

    #[test]
    fn streaming_split_is_independent_of_chunking(text in model_like(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        // Feeding the text in arbitrary pieces classifies every character exactly as feeding
        // it whole does, and loses nothing but the delimiters.
        fn collect(deltas: Vec<StreamDelta>) -> (String, String) {
            let (mut r, mut a) = (String::new(), String::new());
            for d in deltas {
                match d {
                    StreamDelta::Reasoning(t) => r.push_str(&t),
                    StreamDelta::Answer(t) => a.push_str(&t),
                }
            }
            (r, a)
        }
        let mut whole = StreamSplitter::new(Delimiters::default(), false);
        let mut deltas = whole.push(&text);
        deltas.extend(whole.finish());
        let expected = collect(deltas);

        let mut sp = StreamSplitter::new(Delimiters::default(), false);
        let mut bounds: Vec<usize> = cuts.iter().map(|i| i.index(text.len() + 1)).collect();
        bounds.retain(|&b| text.is_char_boundary(b));
        bounds.sort_unstable();
        let mut out = Vec::new();
        let mut prev = 0;
        for b in bounds.into_iter().chain([text.len()]) {
            out.extend(sp.push(&text[prev..b]));
            prev = b;
        }
        out.extend(sp.finish());
        let got = collect(out);
        prop_assert_eq!(&got, &expected);
        let kept = got.0.len() + got.1.len();
        prop_assert!(kept <= text.len());
    }

    #[test]
    fn extractors_never_panic(text in model_like()) {
        for p in [Protocol::LastLine, Protocol::Faith, Protocol::FaithStrict] {
            let single = extract::mcq(&text, p, &ChoiceSpec::SINGLE_ABCD);
            if let Some(v) = single.value() {
                prop_assert_eq!(v.len(), 1);
            }
            let _ = extract::mcq(&text, p, &ChoiceSpec::MULTI_ABCD);
            let _ = extract::cwe(&text, p);
            if let Some(v) = extract::cvss(&text, p, Version::V3_1).value() {
                prop_assert!((0.0..=10.0).contains(&v.base_score()));
            }
            let _ = extract::attack(&text, p);
        }
        let _ = normalize(&text);
    }

    #[test]
    fn extractors_arbitrary_unicode(text in any::<String>()) {
        for p in [Protocol::LastLine, Protocol::Faith, Protocol::FaithStrict] {
            let _ = extract::mcq(&text, p, &ChoiceSpec::MULTI_ABCD);
            let _ = extract::cwe(&text, p);
            let _ = extract::cvss(&text, p, Version::V3_1);
            let _ = extract::attack(&text, p);
        }
    }

    #[test]
    fn format_check_is_consistent(text in model_like()) {
        let r = format::check(&text, &FormatPolicy::default());
        prop_assert_eq!(r.is_ok(), r.penalty == 0.0);
        prop_assert!((0.0..=1.0).contains(&r.repeated_ngram_fraction));
        prop_assert!(r.compression_ratio > 0.0);
    }

    #[test]
    fn verifiers_score_in_unit_interval(text in model_like(), gold_pick in 0usize..4) {
        let golds = ["B", "CWE-79", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "T1059,T1071"];
        let task = Task::ALL[gold_pick];
        for protocol in [Protocol::LastLine, Protocol::Faith] {
            let v = default_verifier(task, VerifyOptions { protocol, ..VerifyOptions::default() });
            let verdict = v.grade(&text, golds[gold_pick]).expect("gold is valid");
            prop_assert!((0.0..=1.0).contains(&verdict.score));
            prop_assert!(verdict.correct || verdict.binary_reward() == 0.0);
            prop_assert!(verdict.is_valid() || !verdict.correct);
            let agg = aggregate(&[verdict]);
            prop_assert!(agg.values().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn gold_parsers_never_panic(text in any::<String>()) {
        for task in Task::ALL {
            let _ = default_verifier(task, VerifyOptions::default()).parse_gold(&text);
        }
        let _ = text.parse::<LetterSet>();
    }

    #[test]
    fn written_answers_are_found(letter in "[A-D]", noise in "[a-z ]{0,40}") {
        // A correct answer on the last line is always graded correct, whatever precedes it.
        let v = default_verifier(Task::Mcq, VerifyOptions::default());
        let response = format!("<think>{noise}</think>\n{noise}\nAnswer: {letter}");
        prop_assert!(v.grade(&response, &letter).unwrap().correct);
    }
}
