//! Unit tests of `metis_verify::math`: extraction, the Hendrycks / Minerva / GSM8K reference
//! procedures, and equivalence by category.

use metis_verify::math::gsm8k::{self, Variant};
use metis_verify::math::*;

fn eq(g: &str, p: &str) -> Equivalence {
    equivalent(g, p)
}

#[test]
fn boxed_extraction() {
    assert_eq!(
        last_boxed_only_string("a \\boxed{\\frac{1}{2}} b"),
        Some("\\boxed{\\frac{1}{2}}")
    );
    assert_eq!(
        last_boxed_only_string("\\boxed{1} then \\boxed{{2}}"),
        Some("\\boxed{{2}}")
    );
    assert_eq!(last_boxed_only_string("\\fbox{7}"), Some("\\fbox{7}"));
    assert_eq!(last_boxed_only_string("\\boxed{1"), None);
    assert_eq!(last_boxed_only_string("none"), None);
    assert_eq!(remove_boxed("\\boxed{x+1}"), Some("x+1"));
    assert_eq!(remove_boxed("\\fbox{x}"), None);
    let e = extract_final_answer("so \\boxed{\\frac{\\sqrt{3}}{2}}.").unwrap();
    assert_eq!(
        (e.answer.as_str(), e.method),
        ("\\frac{\\sqrt{3}}{2}", ExtractMethod::Boxed)
    );
    assert_eq!(extract_final_answer("\\fbox{5}").unwrap().answer, "5");
    // Unbalanced braces: no box; the later rules (here the last number) apply.
    assert_eq!(
        extract_final_answer("\\boxed{1").map(|e| e.method),
        Some(ExtractMethod::LastNumber)
    );
}

#[test]
fn anchored_extraction() {
    let e = extract_final_answer(
        "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.",
    )
    .unwrap();
    assert_eq!(
        (e.answer.as_str(), e.method),
        ("\\frac{1}{2}", ExtractMethod::FinalAnswerIs)
    );
    let e = extract_final_answer("3 + 4 = 7. The answer is 42.").unwrap();
    assert_eq!(
        (e.answer.as_str(), e.method),
        ("42", ExtractMethod::AnswerIs)
    );
    let e = extract_final_answer("work\n#### 1,000").unwrap();
    assert_eq!(
        (e.answer.as_str(), e.method),
        ("1,000", ExtractMethod::Hashes)
    );
    let e = extract_final_answer("work\n$x^2+1$").unwrap();
    assert_eq!(
        (e.answer.as_str(), e.method),
        ("x^2+1", ExtractMethod::LastLine)
    );
    let e = extract_final_answer("so she pays 18 dollars in total.").unwrap();
    assert_eq!(
        (e.answer.as_str(), e.method),
        ("18", ExtractMethod::LastNumber)
    );
    assert_eq!(extract_final_answer("no idea"), None);
    assert_eq!(extract_final_answer(""), None);
}

#[test]
fn hendrycks_strip() {
    assert_eq!(hendrycks_strip_string("\\dfrac12"), "\\frac{1}{2}");
    assert_eq!(hendrycks_strip_string("0.5"), "\\frac{1}{2}");
    assert_eq!(hendrycks_strip_string("3/4"), "\\frac{3}{4}");
    assert_eq!(hendrycks_strip_string("03/4"), "03/4");
    assert_eq!(hendrycks_strip_string("x = 5"), "5");
    assert_eq!(hendrycks_strip_string("10\\text{ cm}"), "10");
    assert_eq!(hendrycks_strip_string("\\left( 1, 2 \\right)"), "(1,2)");
    assert_eq!(hendrycks_strip_string("50\\%"), "50");
    assert_eq!(hendrycks_strip_string(".5"), "\\frac{1}{2}");
    assert_eq!(hendrycks_strip_string("\\sqrt3"), "\\sqrt{3}");
    assert_eq!(hendrycks_strip_string("90^\\circ"), "90");
    assert_eq!(hendrycks_strip_string("\\$5"), "5");
    assert_eq!(
        strip_string_checked("a\\text{ b}\\text{ c}"),
        Err(StripError::TooManyTextUnits)
    );
    assert_eq!(
        strip_string_checked("2\\sqrt"),
        Err(StripError::DanglingSqrt)
    );
    assert_eq!(
        strip_string_checked("\\frac"),
        Err(StripError::DanglingFrac)
    );
    assert!(hendrycks_is_equiv("\\dfrac{1}{2}", "0.5"));
    assert!(hendrycks_is_equiv("2\\sqrt", "2\\sqrt"));
    assert!(!hendrycks_is_equiv("1", "2"));
}

#[test]
fn minerva() {
    assert_eq!(
        minerva_candidate("Final Answer: The final answer is $5$. I hope it is correct.")
            .as_deref(),
        Some("$5$")
    );
    // Upstream appends "I hope it is correct." with no space, so ". I hope" cannot match.
    assert_eq!(
        minerva_candidate("Final Answer: The final answer is 7"),
        None
    );
    assert_eq!(
        minerva_candidate("Final Answer: The final answer is 7. ").as_deref(),
        Some("7")
    );
    assert_eq!(minerva_candidate("the answer is 7"), None);
    assert_eq!(minerva_normalize("$5$"), "5");
    assert_eq!(minerva_normalize("x = \\frac12"), "\\frac{1}{2}");
    assert_eq!(minerva_normalize("10,000"), "10000");
    assert_eq!(minerva_normalize("\\text{(B)}"), "(B)");
    assert_eq!(minerva_normalize("5 \\text{ cm}"), "5");
    assert_eq!(minerva_normalize("\\boxed{\\sqrt2}"), "\\sqrt{2}");
    assert_eq!(minerva_normalize("90^\\circ"), "90");
    assert_eq!(minerva_normalize("1,2"), "12");
    // Substitutions act inside words: "a " disappears from "a banana".
    assert_eq!(minerva_normalize("a banana"), "banana");
}

#[test]
fn gsm8k_extraction() {
    assert_eq!(
        gsm8k::strict_extract("so #### 1,234", Variant::ZeroShot).as_deref(),
        Some("1,234")
    );
    assert_eq!(gsm8k::strict_extract("no hashes", Variant::ZeroShot), None);
    assert_eq!(
        gsm8k::strict_extract("The answer is 42.", Variant::CotEightShot).as_deref(),
        Some("42")
    );
    // The unescaped dot: at the very end of the text "42" loses its last digit.
    assert_eq!(
        gsm8k::strict_extract("The answer is 42", Variant::CotEightShot).as_deref(),
        Some("4")
    );
    assert_eq!(
        gsm8k::strict_extract("The answer is 5. The answer is 6.", Variant::CotEightShot)
            .as_deref(),
        Some("5.")
    );
    assert_eq!(
        gsm8k::flexible_extract("3 + 4 = 7, total $1,200.").as_deref(),
        Some("$1,200.")
    );
    assert_eq!(gsm8k::flexible_extract("it is 7").as_deref(), Some("7"));
    assert_eq!(gsm8k::flexible_extract("none"), None);
    assert!(gsm8k::exact_match("1,000", "1000"));
    assert!(!gsm8k::exact_match("1000.00", "1000"));
    assert!(gsm8k::exact_match("$18.", "18"));
    assert!(gsm8k::exact_match("work #### 72", "72"));
    assert_eq!(
        gsm8k::gold_answer("a\n#### 1,600").as_deref(),
        Some("1,600")
    );
    assert_eq!(gsm8k::gold_answer("none"), None);
    assert_eq!(gsm8k::COT_EXEMPLARS.len(), 8);
    assert!(gsm8k::COT_EXEMPLARS
        .iter()
        .all(|(_, a)| a.contains("The answer is")));
}

#[test]
fn equal_cases() {
    let cases = [
        ("18", "18"),
        ("18", "18.00"),
        ("1000", "1,000"),
        ("1000", "1{,}000"),
        ("18", "\\$18"),
        ("0.5", "\\frac{1}{2}"),
        ("\\frac12", "\\dfrac{1}{2}"),
        ("\\frac{3}{4}", "3/4"),
        ("\\frac{1}{3}", "0.333333"),
        ("0.5", "50\\%"),
        ("\\frac{\\sqrt{3}}{2}", "\\sqrt3/2"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("2\\pi", "\\pi \\cdot 2"),
        ("\\pi", "3.14159265"),
        ("2^{10}", "1024"),
        ("-3", "- 3"),
        ("5", "5 \\text{ cm}"),
        ("40", "40 meters"),
        ("30^\\circ", "30"),
        ("(1,2)", "\\left(1, 2\\right)"),
        ("[1,2)", "[1, 2)"),
        ("(-\\infty, 2]", "(-\\infty,2]"),
        ("\\{1,2,3\\}", "3,2,1"),
        ("1, -3", "-3 \\text{ and } 1"),
        ("x = 5", "5"),
        ("5", "x = 5"),
        ("2x+1", "1+2x"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\frac{x}{2}", "0.5x"),
        ("\\text{yes}", "Yes"),
        ("(B)", "B"),
        ("120", "5!"),
        ("\\infty", "\\infty"),
    ];
    for (g, p) in cases {
        assert_eq!(eq(g, p), Equivalence::Equal, "{g:?} vs {p:?}");
    }
}

#[test]
fn unequal_cases() {
    let cases = [
        ("18", "19"),
        ("50", "50\\%"),
        ("\\frac{1}{3}", "0.33"),
        ("2", "2.000001"),
        ("(1,2)", "(2,1)"),
        ("[1,2)", "(1,2]"),
        ("\\{1,2\\}", "\\{1,2,3\\}"),
        ("x = 5", "y = 5"),
        ("2x+1", "2x-1"),
        ("\\frac{\\pi}{4}", "45^\\circ"),
        ("\\text{yes}", "no"),
        ("(B)", "(C)"),
        ("\\infty", "-\\infty"),
        ("\\sqrt{2}", "1.41"),
    ];
    for (g, p) in cases {
        assert_eq!(eq(g, p), Equivalence::NotEqual, "{g:?} vs {p:?}");
    }
}

#[test]
fn unknown_cases() {
    assert!(matches!(
        eq("10^{10^{10}}", "1"),
        Equivalence::Unknown { .. }
    ));
    assert!(matches!(
        eq("1", &"1".repeat(10_000)),
        Equivalence::Unknown { .. }
    ));
    assert!(matches!(
        eq("1", &format!("{}1{}", "{".repeat(200), "}".repeat(200))),
        Equivalence::Unknown { .. }
    ));
    assert!(matches!(eq("\\pm 2", "2"), Equivalence::Unknown { .. }));
    // Unparseable but identical strings are equal.
    assert_eq!(eq("\\pm 2", "\\pm 2"), Equivalence::Equal);
}
