//! Property tests of the BBH extractions: no text makes them panic, whatever the fixed
//! extraction reads is a gold it would match again (its canonical form round-trips), and the
//! upstream extraction gives back exactly the stripped text between "the answer is " and a
//! final character.

use metis_verify::bbh::{self, BbhAnswer};
use proptest::prelude::*;

const CASES: u32 = 5_000;

/// Text shaped like a BBH answer part: answer phrases, option letters, booleans, numbers,
/// brackets, words, Markdown and arbitrary Unicode.
fn bbh_like() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("So the answer is ".to_owned()),
        Just("The final answer: ".to_owned()),
        Just("the answer isn't ".to_owned()),
        Just("\n".to_owned()),
        Just("**".to_owned()),
        Just("(B)".to_owned()),
        Just("True".to_owned()),
        Just("no".to_owned()),
        Just("invalid".to_owned()),
        Just("-11,520".to_owned()),
        Just("] ] >".to_owned()),
        Just("Monsters, Inc. ".to_owned()),
        "[A-Za-z0-9,.;:()\\[\\]{}<>' -]{0,8}",
        any::<String>(),
    ];
    prop::collection::vec(fragment, 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn fixed_reading_round_trips(text in bbh_like()) {
        for answer in BbhAnswer::ALL {
            let ex = bbh::extract_fixed(&text, answer);
            if let Some(value) = ex.value() {
                let gold = bbh::parse_gold(&value.to_string(), answer);
                prop_assert!(gold.is_ok(), "{answer}: {value:?} is no gold: {gold:?}");
                let gold = gold.unwrap();
                prop_assert!(bbh::matches(value, &gold), "{answer}: {value:?} vs {gold:?}");
            }
            let _ = bbh::parse_gold(&text, answer);
        }
    }

    #[test]
    fn upstream_takes_the_line_minus_its_last_character(
        before in "[a-zA-Z .\n]{0,20}",
        answer in "[a-zA-Z0-9 ()\\[\\]<>,.-]{1,30}",
    ) {
        let text = format!("{before}the answer is {answer}");
        let want: String = {
            let chars: Vec<char> = answer.chars().collect();
            chars[..chars.len() - 1].iter().collect()
        };
        let first_lead = text.find("the answer is ").unwrap();
        // Only when our lead is the first one on a line with text after it.
        if first_lead == before.len() {
            prop_assert_eq!(bbh::extract_upstream(&text), Some(want.trim().to_owned()));
        }
        let _ = bbh::extract_upstream(&format!("{text}\n{before}"));
    }
}
