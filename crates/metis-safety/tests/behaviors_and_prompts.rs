//! HarmBench's behaviour files as Metis reads them, and the classifier prompts Metis sends
//! compared character for character with the official template in the reference note.

use std::path::{Path, PathBuf};

use metis_safety::behaviors::{self, BehaviorError, Functional, Split};
use metis_safety::classifier::{self, Label};
use metis_safety::judge::guard_label;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn split(s: Split) -> Vec<behaviors::Behavior> {
    behaviors::load(&shared().join("data/harmbench").join(s.file_name())).unwrap()
}

#[test]
fn splits_have_harmbench_counts() {
    let count =
        |bs: &[behaviors::Behavior], f: Functional| bs.iter().filter(|b| b.functional == f).count();
    for (s, n, std, ctx, cr) in [
        (Split::All, 400, 200, 100, 100),
        (Split::Test, 320, 159, 81, 80),
        (Split::Val, 80, 41, 19, 20),
    ] {
        let bs = split(s);
        assert_eq!(bs.len(), n);
        assert_eq!(count(&bs, Functional::Standard), std);
        assert_eq!(count(&bs, Functional::Contextual), ctx);
        assert_eq!(count(&bs, Functional::Copyright), cr);
    }
    let all = split(Split::All);
    assert!(all
        .iter()
        .filter(|b| b.functional == Functional::Copyright)
        .all(|b| b.copyright_kind().is_some()));
    // A contextual test case is the context, a rule, then the behaviour (direct_request.py).
    let c = all
        .iter()
        .find(|b| b.functional == Functional::Contextual)
        .unwrap();
    let ctx = c.context.as_deref().unwrap();
    assert_eq!(c.test_case(), format!("{ctx}\n\n---\n\n{}", c.behavior));
    let s = all
        .iter()
        .find(|b| b.functional == Functional::Standard)
        .unwrap();
    assert_eq!(s.test_case(), s.behavior);
}

#[test]
fn bad_files_name_file_line_and_field() {
    let p = Path::new("bad.csv");
    let e = behaviors::parse("Goal,Target\nx,y\n", p).unwrap_err();
    assert!(matches!(e, BehaviorError::Layout { .. }), "{e}");
    assert!(
        e.to_string().contains("unknown behaviour file layout"),
        "{e}"
    );
    let header = behaviors::COLUMNS.join(",");
    let e = behaviors::parse(
        &format!("{header}\nDo x,standard,illegal,,,a\nDo y,weird,illegal,,,b\n"),
        p,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad.csv:3: field FunctionalCategory: \"weird\" is not standard, contextual or copyright"
    );
    let e = behaviors::parse(
        &format!("{header}\nDo x,contextual,illegal,context,,a\n"),
        p,
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("bad.csv:2: field ContextString"),
        "{e}"
    );
    let e = behaviors::parse(
        &format!("{header}\nDo x,copyright,copyright,hash_check,,a\n"),
        p,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("bad.csv:2: field Tags"), "{e}");
    let e = behaviors::parse(
        &format!("{header}\nDo x,standard,illegal,,,a\nDo y,standard,illegal,,,a\n"),
        p,
    )
    .unwrap_err();
    assert!(e.to_string().contains("repeats the row of line 2"), "{e}");
}

/// The `LLAMA2_CLS_PROMPT["prompt"]` block of the reference note (the second fenced block
/// of §2.4, the one `evaluate_completions.py` uses).
fn reference_standard_template() -> String {
    let note = std::fs::read_to_string(shared().join("reference/safety-and-serving.md")).unwrap();
    let section = note.split("### 2.4 Classifier prompts").nth(1).unwrap();
    let block = section.split("```").nth(3).unwrap();
    block
        .strip_prefix('\n')
        .unwrap()
        .strip_suffix('\n')
        .unwrap()
        .to_owned()
}

#[test]
fn standard_prompt_equals_the_official_template() {
    let template = reference_standard_template();
    assert_eq!(classifier::STANDARD_PROMPT, template);
    let all = split(Split::All);
    let b = all
        .iter()
        .find(|b| b.functional == Functional::Standard)
        .unwrap();
    let generation = "Step 1: {not a field} and {behavior} stays literal";
    let sent = classifier::prompt(b, generation);
    let want =
        template
            .replacen("{behavior}", &b.behavior, 1)
            .replacen("{generation}", generation, 1);
    assert_eq!(sent, want);
}

#[test]
fn contextual_prompt_is_the_standard_one_with_the_notes_changes() {
    // The note describes prompt_contextual as the standard template with a [CONTEXT] block
    // before [BEHAVIOR], "the behavior given the context" in the first sentence and "the
    // behavior and context" in the first rule.
    let derived = reference_standard_template()
        .replacen(
            "an instance of the following behavior (subject",
            "an instance of the behavior given the context (subject",
            1,
        )
        .replacen("[BEHAVIOR]:", "[CONTEXT]:\n{context}\n\n[BEHAVIOR]:", 1)
        .replacen(
            "- Instances of the behavior should be",
            "- Instances of the behavior and context should be",
            1,
        );
    assert_eq!(classifier::CONTEXTUAL_PROMPT, derived);
    let all = split(Split::All);
    let b = all
        .iter()
        .find(|b| b.functional == Functional::Contextual)
        .unwrap();
    let sent = classifier::prompt(b, "gen");
    let want = derived
        .replacen("{context}", b.context.as_deref().unwrap(), 1)
        .replacen("{behavior}", &b.behavior, 1)
        .replacen("{generation}", "gen", 1);
    assert_eq!(sent, want);
}

#[test]
fn labels_parse_as_upstream() {
    assert_eq!(classifier::parse_label("Yes"), Label::Harmful);
    assert_eq!(classifier::parse_label(" no"), Label::NotHarmful);
    assert_eq!(classifier::parse_label("maybe"), Label::Invalid);
    assert_eq!(classifier::parse_label(""), Label::Invalid);
    assert_eq!(guard_label("unsafe\nS1"), Label::Harmful);
    assert_eq!(guard_label(" safe"), Label::NotHarmful);
    assert_eq!(guard_label("I cannot"), Label::Invalid);
}
