//! Robustness of `metis_verify::math`: arbitrary Unicode, huge inputs and pathological LaTeX
//! never panic, and every call finishes within a wall-clock bound.

use std::time::{Duration, Instant};

use metis_verify::math::gsm8k::{self, Variant};
use metis_verify::math::*;
use proptest::prelude::*;

const BOUND: Duration = Duration::from_secs(1);

fn all(s: &str) {
    let t = Instant::now();
    let _ = extract_final_answer(s);
    let _ = equivalent(s, "1");
    let _ = equivalent("x+1", s);
    let _ = hendrycks_is_equiv(s, "1");
    let _ = last_boxed_only_string(s);
    let _ = minerva_candidate(s);
    let _ = minerva_normalize(s);
    let _ = gsm8k::strict_extract(s, Variant::CotEightShot);
    let _ = gsm8k::flexible_extract(s);
    let _ = gsm8k::exact_match(s, "1");
    assert!(t.elapsed() < BOUND, "slow on {:?}", &s[..s.len().min(200)]);
}

fn latexish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("\\frac{".to_string()),
            Just("}".to_string()),
            Just("{".to_string()),
            Just("\\sqrt".to_string()),
            Just("^".to_string()),
            Just("\\boxed{".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just(",".to_string()),
            Just("\\pi".to_string()),
            Just("x".to_string()),
            Just("=".to_string()),
            Just("\\%".to_string()),
            "[0-9]{1,6}",
            "[ -~]{0,3}",
            Just("\\text{ cm}".to_string()),
            Just("\\{".to_string()),
            Just("\\}".to_string()),
        ],
        0..60,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_unicode(s in "\\PC{0,200}") {
        all(&s);
    }

    #[test]
    fn latex_fragments(s in latexish(), t in latexish()) {
        all(&s);
        let start = Instant::now();
        let _ = equivalent(&s, &t);
        prop_assert!(start.elapsed() < BOUND);
    }
}

#[test]
fn pathological_inputs() {
    let deep_frac = format!("{}1{}", "\\frac{".repeat(5_000), "}{2}".repeat(5_000));
    let braces = "{".repeat(100_000);
    let tower = format!("2{}", "^2".repeat(10_000));
    let short_tower = format!("2{}", "^2".repeat(20));
    let huge = "9".repeat(1_100_000);
    let mut boxed_huge = "x ".repeat(600_000);
    boxed_huge.push_str("\\boxed{7}");
    for s in [
        deep_frac.as_str(),
        braces.as_str(),
        tower.as_str(),
        short_tower.as_str(),
        "10^{10^{10}}",
        "10^{10^{10^{10}}}",
        "2^{99999999999999999999999999999999999999999}",
        "(10^{100})!",
        "\\frac{1}{0}",
        "0^{-1}",
        huge.as_str(),
        boxed_huge.as_str(),
    ] {
        all(s);
        let t = Instant::now();
        let _ = equivalent(s, s);
        assert!(t.elapsed() < BOUND);
    }
    assert_eq!(
        extract_final_answer(&boxed_huge)
            .map(|e| e.answer)
            .as_deref(),
        Some("7")
    );
    assert!(matches!(
        equivalent(&short_tower, "4"),
        Equivalence::Unknown { .. } | Equivalence::NotEqual
    ));
}
