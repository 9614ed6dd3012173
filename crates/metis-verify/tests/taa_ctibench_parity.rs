//! Parity with CTIBench's own CTI-TAA scoring on CTIBench's own published answers.
//!
//! `tests/fixtures/ctibench_taa_parity.json` holds, for the five models of
//! `xashru/cti-bench` @ cb79d156 `evaluation/responses/cti-taa-responses.tsv`, every row's
//! prediction (the model column verbatim: CTIBench publishes extracted names, `X` = no answer)
//! and the verdict of the notebook's `threat_actor_connection` (`evaluation/evaluation.ipynb`),
//! computed by `tools/reference/ctibench_taa.py`. Licence CC BY-NC-SA 4.0 (Alam et al.,
//! CTIBench, NeurIPS 2024 D&B).
//!
//! Checked: [`ActorCatalog::judge`] under [`TaaRule::Ctibench`] (catalog from the shared
//! dictionaries) gives CTIBench's verdict on every row, and so CTIBench's correct and
//! correct + plausible counts; the same through the public verifier (`VerifierFactory`, spec
//! `taa` with `taa_rule: ctibench`, metrics `ctibench_accuracy` and
//! `ctibench_plausible_accuracy`). The fixed rule's counts are pinned and every row where it
//! differs from CTIBench's is printed with its cause.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use metis_verify::taa::{
    normalize_actor, ActorCatalog, Attribution, TaaRule, ALIAS_FILE, RELATED_FILE,
};
use metis_verify::{Task, VerifierFactory, VerifierSpec};
use serde::Deserialize;

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

fn fixture_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ctibench_taa_parity.json"
    ))
}

#[derive(Debug, Deserialize)]
struct Fixture {
    provenance: Provenance,
    gold: Vec<String>,
    models: Vec<Model>,
}

#[derive(Debug, Deserialize)]
struct Provenance {
    repo: String,
    commit: String,
    responses: String,
    license: String,
}

#[derive(Debug, Deserialize)]
struct Model {
    model: String,
    rows: Vec<Row>,
    correct: usize,
    correct_plus_plausible: usize,
    total: usize,
}

#[derive(Debug, Deserialize)]
struct Row {
    prediction: String,
    verdict: Attribution,
}

fn load() -> Fixture {
    let text = std::fs::read_to_string(fixture_path()).expect("fixture");
    let f: Fixture = serde_json::from_str(&text).expect("fixture parses");
    assert_eq!(f.provenance.repo, "xashru/cti-bench");
    assert_eq!(
        f.provenance.commit,
        "cb79d156821c63754af50311789d4006905b6aea"
    );
    assert_eq!(
        f.provenance.responses,
        "evaluation/responses/cti-taa-responses.tsv"
    );
    assert!(f.provenance.license.starts_with("CC BY-NC-SA 4.0"));
    assert_eq!(f.gold.len(), 50);
    let names: Vec<&str> = f.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(
        names,
        [
            "ChatGPT-3.5",
            "ChatGPT-4",
            "Gemini-1.5",
            "LLAMA3-70B",
            "LLAMA3-8B"
        ]
    );
    for m in &f.models {
        assert_eq!(m.rows.len(), f.gold.len(), "{}", m.model);
        assert_eq!(m.total, f.gold.len(), "{}", m.model);
    }
    f
}

fn catalog(dir: &Path) -> ActorCatalog {
    ActorCatalog::from_data_dir(dir).expect("CTIBench-TAA dictionaries load")
}

/// (correct, correct + plausible).
fn counts(verdicts: impl IntoIterator<Item = Attribution>) -> (usize, usize) {
    verdicts.into_iter().fold((0, 0), |(c, p), v| match v {
        Attribution::Correct => (c + 1, p + 1),
        Attribution::Plausible => (c, p + 1),
        Attribution::Incorrect => (c, p),
    })
}

#[test]
fn ctibench_rule_reproduces_ctibench_verdicts_and_counts() {
    let f = load();
    let c = catalog(&data_dir());
    let mut mismatches = Vec::new();
    for m in &f.models {
        let got: Vec<Attribution> = m
            .rows
            .iter()
            .zip(&f.gold)
            .map(|(r, g)| c.judge(&r.prediction, g, TaaRule::Ctibench))
            .collect();
        for (i, ((r, g), v)) in m.rows.iter().zip(&f.gold).zip(&got).enumerate() {
            if *v != r.verdict {
                mismatches.push(format!(
                    "{} row {}: prediction {:?}, gold {:?}: CTIBench {:?}, Metis {:?}",
                    m.model,
                    i + 1,
                    r.prediction,
                    g,
                    r.verdict,
                    v
                ));
            }
        }
        let expected = counts(m.rows.iter().map(|r| r.verdict));
        assert_eq!(
            expected,
            (m.correct, m.correct_plus_plausible),
            "{}: fixture totals disagree with its own rows",
            m.model
        );
        eprintln!(
            "{:12} CTIBench correct {:2} correct+plausible {:2} | Metis ctibench rule {:2} {:2}",
            m.model,
            m.correct,
            m.correct_plus_plausible,
            counts(got.iter().copied()).0,
            counts(got.iter().copied()).1
        );
        assert_eq!(
            counts(got),
            (m.correct, m.correct_plus_plausible),
            "{}: (correct, correct+plausible) totals",
            m.model
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} verdicts differ from CTIBench:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // The notebook's own printed output for ChatGPT-4: (52.0, 86.0) of 50.
    let gpt4 = f.models.iter().find(|m| m.model == "ChatGPT-4").unwrap();
    assert_eq!((gpt4.correct, gpt4.correct_plus_plausible), (26, 43));
}

/// The verifier's `ctibench_*` metrics, given CTIBench's own (already extracted) predictions
/// as the response. At the time of writing this fails on ChatGPT-4 rows 8 and 9 (`APT-C-36`
/// against gold `APT-C-36`, CTIBench: correct): `extract_actor` returns the *normalised* name
/// `apt c 36`, and CTIBench's rule then looks that spelling up in its dictionaries, which
/// spell the actor `apt-c-36`. [`ActorCatalog::judge`] itself agrees on every row (above).
#[test]
fn ctibench_metrics_of_the_taa_verifier_match_ctibench() {
    let f = load();
    let dir = data_dir();
    let mut factory = VerifierFactory::new(Some(&dir));
    let spec = VerifierSpec {
        task: Some(Task::Taa),
        taa_rule: Some(TaaRule::Ctibench),
        ..VerifierSpec::default()
    };
    let verifier = factory.build(&spec).expect("taa verifier");
    let mut mismatches = Vec::new();
    for m in &f.models {
        let (mut correct, mut plausible) = (0usize, 0usize);
        for (i, (r, g)) in m.rows.iter().zip(&f.gold).enumerate() {
            let v = verifier.grade(&r.prediction, g).expect("gold parses");
            let acc = v.metrics["ctibench_accuracy"];
            let pl = v.metrics["ctibench_plausible_accuracy"];
            correct += usize::from(acc == 1.0);
            plausible += usize::from(pl == 1.0);
            let want = (
                r.verdict == Attribution::Correct,
                r.verdict != Attribution::Incorrect,
            );
            if (acc == 1.0, pl == 1.0) != want {
                mismatches.push(format!(
                    "{} row {}: prediction {:?} (extracted {:?}), gold {:?}: CTIBench {:?}, \
                     verifier ctibench_accuracy {acc} ctibench_plausible_accuracy {pl}",
                    m.model,
                    i + 1,
                    r.prediction,
                    v.extracted,
                    g,
                    r.verdict
                ));
            }
        }
        eprintln!(
            "{:12} verifier ctibench metrics: correct {correct:2} correct+plausible {plausible:2}",
            m.model
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} verifier verdicts differ from CTIBench:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// The shared dictionaries with every `"nan"` placeholder dropped.
fn catalog_without_nan(dir: &Path) -> ActorCatalog {
    let read = |file: &str| -> String {
        let text = std::fs::read_to_string(dir.join(file)).expect("dictionary");
        let mut d: BTreeMap<String, Vec<String>> = serde_json::from_str(&text).expect("json");
        d.values_mut()
            .for_each(|v| v.retain(|n| n.trim().to_lowercase() != "nan"));
        serde_json::to_string(&d).expect("json")
    };
    ActorCatalog::from_json(&read(ALIAS_FILE), &read(RELATED_FILE)).expect("catalog")
}

/// Metis's default (fixed) rule on the same rows: its counts, and every row where it differs
/// from CTIBench's with the cause. Both rules lower-case and strip, so case and trailing
/// spaces (`APT36 `, gold `APT19  `, `lazarus`/`Lazarus`) never make a difference here; the
/// equality rule changes nothing either (every gold a model named exactly has an alias entry).
/// What differs is CTIBench's `"nan"` placeholder, which it treats as a name: related groups
/// that both list `"nan"` ("none") become connected, so three answers count as plausible
/// upstream only through that node.
#[test]
fn fixed_rule_differs_only_through_nan_links() {
    let f = load();
    let dir = data_dir();
    let (c, no_nan) = (catalog(&dir), catalog_without_nan(&dir));
    let mut unexplained = Vec::new();
    let mut got = Vec::new();
    for m in &f.models {
        let mut fixed = Vec::new();
        for (i, (r, g)) in m.rows.iter().zip(&f.gold).enumerate() {
            let fx = c.judge(&r.prediction, g, TaaRule::Fixed);
            let up = c.judge(&r.prediction, g, TaaRule::Ctibench);
            fixed.push(fx);
            if fx == up {
                continue;
            }
            let why = if no_nan.judge(&r.prediction, g, TaaRule::Ctibench) == fx {
                "reached only through the \"nan\" placeholder"
            } else if r.prediction.trim().to_lowercase() == g.trim().to_lowercase() {
                "equal names (CTIBench's neighbour-only search)"
            } else if normalize_actor(&r.prediction) != r.prediction.trim().to_lowercase()
                || normalize_actor(g) != g.trim().to_lowercase()
            {
                "Metis's '-'/'_'/spacing normalisation"
            } else {
                unexplained.push(format!("{} row {}", m.model, i + 1));
                "unexplained"
            };
            eprintln!(
                "  {} row {}: prediction {:?}, gold {:?}: CTIBench {up:?}, fixed {fx:?}: {why}",
                m.model,
                i + 1,
                r.prediction,
                g
            );
        }
        let (fc, fp) = counts(fixed);
        eprintln!(
            "{:12} fixed rule correct {fc:2} correct+plausible {fp:2} | CTIBench {:2} {:2}",
            m.model, m.correct, m.correct_plus_plausible
        );
        got.push((m.model.as_str(), fc, fp));
    }
    assert!(unexplained.is_empty(), "unexplained: {unexplained:?}");
    assert_eq!(
        got,
        [
            ("ChatGPT-3.5", 22, 31),
            ("ChatGPT-4", 26, 42),
            ("Gemini-1.5", 19, 36),
            ("LLAMA3-70B", 26, 39),
            ("LLAMA3-8B", 14, 18),
        ],
        "fixed-rule (correct, correct+plausible) per model"
    );
}
