//! Benchmark declarations against the real data in `shared/data`: loading, item counts, ids,
//! gold answers, prompts, and grading test data (known-correct answers in realistic formats
//! score 100%, known-wrong answers the exact expected score).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use metis_eval::benchmarks::Item;
use metis_eval::benchmarks::{
    self, fetch::apply_transform, load, remote_url, spec, specs, Benchmark, BenchmarkError,
    DataSource, RemoteSource, Transform,
};
use metis_verify::bbh::{self, BbhAnswer, BbhExtraction};
use metis_verify::cvss::Vector;
use metis_verify::cwe::{CweCatalog, View};
use metis_verify::verifier::aggregate;
use metis_verify::{InvalidReason, Protocol, Verdict, VerifierFactory, VerifierSpec};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn data_dir() -> PathBuf {
    PathBuf::from(DATA)
}

async fn bench(id: &str) -> Benchmark {
    load(id, &DataSource::Dir(data_dir()), Protocol::LastLine)
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"))
}

const EXPECTED: [(&str, usize); 11] = [
    ("ctibench-mcqa", 2500),
    ("ctibench-rcm", 1000),
    ("ctibench-rcm-2021", 1000),
    ("ctibench-vsp", 1000),
    ("ctibench-ate", 60),
    ("cybermetric-80", 80),
    ("cybermetric-500", 500),
    ("cybermetric-2000", 2000),
    ("mmlu-security", 100),
    // 661 English rows − 9 multi-letter labels.
    ("secbench-mcqa-eng", 652),
    // 2189 rows − 7 empty answers − 2 "AA".
    ("seceval", 2180),
];

/// The general benchmarks whose data `shared/data` holds (MATH-500 is loaded from its
/// pinned source; its loader is tested on a fixture below).
const GENERAL: [(&str, usize); 3] = [("ifeval", 541), ("gsm8k", 1319), ("gsm8k-cot", 1319)];
const FETCHED_ONLY: [&str; 8] = [
    "math-500",
    "math",
    "mmlu",
    "gpqa-diamond",
    "gpqa-main",
    "hotpotqa",
    "2wikimultihopqa",
    "alpacaeval2",
];
/// Benchmarks with several data files (their fingerprint covers all of them).
const MULTI_FILE: [(&str, usize); 2] = [("ctibench-taa", 50), ("bbh", 6511)];
/// Benchmarks graded by running code (their loader builds the sandbox).
const CODE: [(&str, usize); 1] = [("humaneval", 164)];

#[tokio::test]
async fn ctibench_taa_pairs_reports_with_gold_actors_and_grades_aliases() {
    let (id, count) = MULTI_FILE[0];
    let b = bench(id).await;
    assert_eq!(b.items.len(), count);
    assert_eq!(b.spec.files().len(), 2);
    assert_eq!(b.items[0].gold, "SideCopy");
    assert!(b.items[0].prompt.contains("[PLACEHOLDER]"));
    assert!(b.items[0].prompt.to_lowercase().contains("last line"));
    assert!(b
        .catalog_sha256
        .contains_key("ctibench/taa-alias-dict.json"));
    let v = b.verifier(&b.items[0]);
    let grade = |answer: &str| {
        v.grade(
            &format!("<think>TTPs point to it</think>{answer}"),
            &b.items[0].gold,
        )
        .unwrap()
    };
    assert!(grade("Threat actor: SideCopy").correct);
    assert!(!grade("Threat actor: Lazarus Group").correct);
    // A related group (SideCopy's parent, Transparent Tribe) is plausible, not correct.
    let related = grade("Transparent Tribe");
    assert!(!related.correct, "{related:?}");
    assert_eq!(related.metrics["plausible_accuracy"], 1.0, "{related:?}");
    // Every gold, written as a model would, is correct under the fixed rule.
    for item in &b.items {
        let r = v
            .grade(
                &format!("<think>x</think>**Threat actor:** {}.", item.gold.trim()),
                &item.gold,
            )
            .unwrap();
        assert!(r.correct, "{}: {r:?}", item.id);
    }
    // A report file whose gold rows do not line up is refused, naming the file and line.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ctibench")).unwrap();
    let data = PathBuf::from(DATA);
    std::fs::copy(
        data.join("ctibench/cti-taa.tsv"),
        dir.path().join("ctibench/cti-taa.tsv"),
    )
    .unwrap();
    let gold = std::fs::read_to_string(data.join("ctibench/cti-taa-gold.tsv")).unwrap();
    let swapped = gold.replacen("https://", "https://x.", 2);
    std::fs::write(dir.path().join("ctibench/cti-taa-gold.tsv"), swapped).unwrap();
    let err = load(
        id,
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cti-taa-gold.tsv line 2") && err.contains("URL"),
        "{err}"
    );
}

#[tokio::test]
async fn general_benchmarks_load_with_expected_items() {
    for (id, count) in GENERAL {
        let b = bench(id).await;
        assert_eq!(b.items.len(), count, "{id}");
        assert_eq!(
            b.spec.items, count,
            "{id}: the count `metis eval list` shows"
        );
        assert_eq!(b.data_sha256, b.spec.data_file().sha256, "{id} pinned sha");
        for item in &b.items {
            let v = b.verifier(item);
            assert_eq!(v.task(), b.spec.task);
            v.parse_gold(&item.gold)
                .unwrap_or_else(|e| panic!("{id} {}: {e}", item.id));
            assert!(
                item.prompt.contains(item.question.trim()),
                "{id} {}",
                item.id
            );
        }
    }
    let cot = bench("gsm8k-cot").await;
    let first = &cot.items[0];
    assert_eq!(first.gold, "18");
    assert!(first.prompt.ends_with("\nA:"), "{}", first.prompt);
    assert!(
        first.prompt.matches("Q: ").count() >= 9,
        "8 exemplars then the question"
    );
    let spec = cot.verifier_spec(first);
    assert_eq!(
        spec.math_extraction,
        Some(metis_verify::spec::MathExtraction::Gsm8kCotStrict)
    );
}

#[tokio::test]
async fn math_500_loader_reads_boxed_and_answer_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("math")).unwrap();
    std::fs::write(
        dir.path().join("math/math-500-test.jsonl"),
        concat!(
            r#"{"problem": "What is $1+1$?", "solution": "So $\\boxed{2}$.", "answer": "2", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"}"#,
            "\n",
            r#"{"problem": "Simplify $\\frac{2}{4}$.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "subject": "Algebra", "level": 2, "unique_id": "test/algebra/2.json"}"#,
            "\n"
        ),
    )
    .unwrap();
    let b = load(
        "math-500",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    assert_eq!(b.items.len(), 2);
    assert_eq!(b.items[0].gold, "2");
    assert_eq!(b.items[1].gold, "\\frac{1}{2}");
    assert_eq!(b.items[1].id, "test/algebra/2.json");
    assert_eq!(b.items[1].subject.as_deref(), Some("Algebra"));
    assert!(b
        .notes
        .iter()
        .any(|n| n.contains("differs from the pinned revision")));
    let bad = dir.path().join("math/math-500-test.jsonl");
    std::fs::write(&bad, "{\"problem\": \"x\", \"solution\": \"no box\"}\n").unwrap();
    let err = load(
        "math-500",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 1") && err.contains("solution"), "{err}");
}

/// `math`: MATH-500 plus the original test problems PRM800K moved into its train split.
#[tokio::test]
async fn math_full_test_joins_both_prm800k_splits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("math")).unwrap();
    let row = |id: &str, answer: &str| {
        format!(
            r#"{{"problem": "Problem {id}", "solution": "So $\boxed{{{answer}}}$.", "answer": "{answer}", "subject": "Algebra", "level": 1, "unique_id": "{id}"}}"#
        ) + "\n"
    };
    std::fs::write(
        dir.path().join("math/math-500-test.jsonl"),
        row("test/algebra/1.json", "2"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("math/prm800k-math-train.jsonl"),
        row("train/algebra/5.json", "3")
            + &row("test/geometry/7.json", "\\\\pi")
            + &row("train/x/1.json", "1"),
    )
    .unwrap();
    let b = load(
        "math",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    let ids: Vec<&str> = b.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["test/algebra/1.json", "test/geometry/7.json"]);
    assert_eq!(b.items[1].gold, "\\pi");
    assert!(
        b.notes.iter().any(|n| n.contains("1 of the 3 rows")),
        "{:?}",
        b.notes
    );
    assert!(
        b.notes.iter().any(|n| n.contains("expected 5,000")),
        "{:?}",
        b.notes
    );
    let v = b.verifier(&b.items[1]);
    assert!(
        v.grade("<think>area</think>\\boxed{\\pi}", &b.items[1].gold)
            .unwrap()
            .correct
    );
}

#[tokio::test]
async fn every_benchmark_loads_with_expected_items() {
    assert_eq!(
        specs().len(),
        EXPECTED.len() + GENERAL.len() + FETCHED_ONLY.len() + MULTI_FILE.len() + CODE.len()
    );
    for (id, count) in EXPECTED {
        let b = bench(id).await;
        assert_eq!(b.items.len(), count, "{id}");
        assert_eq!(
            b.spec.items, count,
            "{id}: the count `metis eval list` shows"
        );
        assert_eq!(b.data_sha256, b.spec.data_file().sha256, "{id} pinned sha");
        let ids: HashSet<&str> = b.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), count, "{id}: ids unique");
        for item in &b.items {
            assert!(b.item(&item.id).is_some_and(|i| i == item));
            let v = b.verifier(item);
            assert_eq!(v.task(), b.spec.task);
            v.parse_gold(&item.gold)
                .unwrap_or_else(|e| panic!("{id} {}: {e}", item.id));
            assert!(!item.prompt.trim().is_empty());
            assert!(!item.question.is_empty());
            // CTIBench quotes one Description CSV-style (cti-rcm-2021): compare without quotes.
            let unquote = |s: &str| s.replace('"', "");
            assert!(
                unquote(&item.prompt).contains(&unquote(&item.question)),
                "{id} {}: prompt lacks the question",
                item.id
            );
            let lower = item.prompt.to_lowercase();
            assert!(
                lower.contains("last line") || lower.contains("final line"),
                "{id} {}: no last-line instruction",
                item.id
            );
        }
    }
}

#[tokio::test]
async fn loader_notes_and_ids() {
    let sb = bench("secbench-mcqa-eng").await;
    assert!(
        sb.notes.iter().any(|n| n.contains("dropped 9 row(s)")),
        "{:?}",
        sb.notes
    );
    let se = bench("seceval").await;
    assert!(
        se.notes.iter().any(|n| n.contains("dropped 9 row(s)")),
        "{:?}",
        se.notes
    );
    let first = se.item("282cd7f6-86f9-4174-95c2-df26b2b6395e").unwrap();
    assert_eq!(first.gold, "B");
    assert!(first
        .prompt
        .contains("\nA. The storage must contain the original identifiers"));
    assert!(first.prompt.contains("'Answer: $LETTERS'"));

    let mcq = bench("ctibench-mcqa").await;
    assert_eq!(mcq.items[0].id, "0");
    assert_eq!(mcq.items[0].gold, "B");
    assert_eq!(mcq.items[0].subject.as_deref(), Some("ATT&CK"));
    // The one lower-case GT ('b') is upper-cased.
    assert!(mcq.items.iter().all(|i| i.gold.len() == 1));

    let rcm = bench("ctibench-rcm").await;
    assert_eq!(rcm.items[0].id, "CVE-2024-23848");
    assert_eq!(rcm.items[0].gold, "CWE-416");
    assert!(rcm.catalog_sha256.contains_key("cwe/cwe-weaknesses.tsv"));

    let ate = bench("ctibench-ate").await;
    assert_eq!(ate.items[0].id, "S0066");
    let platforms: BTreeMap<&str, usize> = ate.items.iter().fold(BTreeMap::new(), |mut m, i| {
        *m.entry(i.subject.as_deref().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        platforms,
        BTreeMap::from([("Enterprise", 47), ("Mobile", 13)])
    );
    assert_eq!(ate.catalog_sha256.len(), 4);

    let mmlu = bench("mmlu-security").await;
    assert!(mmlu.items[0].prompt.starts_with(
        "Given the following question and four candidate answers (A, B, C and D), choose the best answer."
    ));
    assert!(mmlu.items[0]
        .prompt
        .ends_with("\n\nA. Generational\nB. Blackbox\nC. Whitebox\nD. Mutation-based"));
}

#[tokio::test]
async fn unknown_benchmark_lists_valid_ids() {
    let err = spec("nope").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BenchmarkError::UnknownBenchmark { .. }));
    for (id, _) in EXPECTED {
        assert!(msg.contains(id), "{msg}");
    }
    assert!(
        load("nope", &DataSource::Dir(data_dir()), Protocol::LastLine)
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Grading test data

fn grade_all(b: &Benchmark, answer: impl Fn(usize, &str) -> String) -> BTreeMap<String, f64> {
    let verdicts: Vec<Verdict> = b
        .items
        .iter()
        .enumerate()
        .map(|(k, item)| {
            let v = b.verifier(item);
            let gold = v.parse_gold(&item.gold).unwrap();
            v.verify(&answer(k, &item.gold), &gold)
        })
        .collect();
    aggregate(&verdicts)
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 1e-9, "{what}: got {got}, want {want}");
}

/// `B` → `C`, `D` → `A`; every letter of a set shifted.
fn shift_letters(gold: &str) -> String {
    gold.chars()
        .map(|c| (b'A' + (c as u8 - b'A' + 1) % 4) as char)
        .collect()
}

fn letters_list(gold: &str) -> String {
    gold.chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(", ")
}

const MCQ_IDS: [&str; 7] = [
    "ctibench-mcqa",
    "cybermetric-80",
    "cybermetric-500",
    "cybermetric-2000",
    "mmlu-security",
    "secbench-mcqa-eng",
    "seceval",
];

#[tokio::test]
async fn mcq_correct_answers_score_full_marks() {
    for protocol in [Protocol::LastLine, Protocol::Faith] {
        for id in MCQ_IDS {
            let b = load(id, &DataSource::Dir(data_dir()), protocol)
                .await
                .unwrap();
            let formats: [fn(&str) -> String; 4] = [
                |g| {
                    format!(
                        "<think>Let me weigh the options.</think>\nAnswer: {}",
                        letters_list(g)
                    )
                },
                |g| format!("Reasoning first.\n\nAnswer: **{}**", letters_list(g)),
                |g| {
                    format!(
                        "The correct answer is ({}).",
                        g.chars()
                            .map(String::from)
                            .collect::<Vec<_>>()
                            .join(") and (")
                    )
                },
                |g| {
                    format!(
                        "<think>\nhmm\n</think>\n\nFinal answer: {}",
                        letters_list(g)
                    )
                },
            ];
            for (f, format) in formats.iter().enumerate() {
                // FAITH's "answer is (X)" pattern reads one letter only: not for multi-answer.
                if f == 2 && id == "seceval" && protocol == Protocol::Faith {
                    continue;
                }
                let m = grade_all(&b, |_, g| format(g));
                assert_close(m["accuracy"], 1.0, &format!("{id} {protocol:?} format {f}"));
                assert_close(
                    m["invalid_rate"],
                    0.0,
                    &format!("{id} {protocol:?} format {f}"),
                );
            }
        }
    }
}

#[tokio::test]
async fn mcq_wrong_answers_score_exactly() {
    for id in MCQ_IDS {
        let b = bench(id).await;
        // Every answer shifted by one letter: all wrong, except a SecEval "ABCD" (its shift
        // is the same set).
        let m = grade_all(&b, |_, g| {
            format!("Answer: {}", letters_list(&shift_letters(g)))
        });
        let unchanged = b.items.iter().filter(|i| i.gold == "ABCD").count();
        assert_close(m["accuracy"], unchanged as f64 / b.items.len() as f64, id);
        // Even items right, odd items wrong.
        let m = grade_all(&b, |k, g| {
            let g = if k % 2 == 0 {
                g.to_owned()
            } else {
                shift_letters(g)
            };
            format!("<think>x</think>\nAnswer: {}", letters_list(&g))
        });
        let right = b
            .items
            .iter()
            .enumerate()
            .filter(|(k, i)| k % 2 == 0 || i.gold == "ABCD")
            .count();
        assert_close(m["accuracy"], right as f64 / b.items.len() as f64, id);
    }
    // SecEval: a strict subset of a multi-answer gold is wrong.
    let b = bench("seceval").await;
    let m = grade_all(&b, |_, g| format!("Answer: {}", &g[..1]));
    let single = b.items.iter().filter(|i| i.gold.len() == 1).count();
    assert_close(
        m["accuracy"],
        single as f64 / b.items.len() as f64,
        "seceval subset",
    );
}

#[tokio::test]
async fn cwe_correct_and_wrong_answers() {
    let catalog = CweCatalog::from_data_dir(&data_dir()).unwrap();
    for id in ["ctibench-rcm", "ctibench-rcm-2021"] {
        let b = bench(id).await;
        let formats: [fn(&str) -> String; 4] = [
            |g| format!("<think>memory bug</think>\nThe flaw is a use-after-free.\n{g}"),
            |g| format!("Justification: ...\n\n{}", g.replace('-', "\u{2011}")),
            |g| format!("Justification.\n**{g}**"),
            |g| format!("The description maps to:\nCWE ID: {g}"),
        ];
        for (f, format) in formats.iter().enumerate() {
            let m = grade_all(&b, |_, g| format(g));
            assert_close(m["accuracy"], 1.0, &format!("{id} format {f}"));
            assert_close(m["hierarchy_accuracy"], 1.0, &format!("{id} format {f}"));
        }
        // A different, unrelated CWE: nothing.
        let m = grade_all(&b, |_, _| "CWE-999999".to_owned());
        assert_close(m["accuracy"], 0.0, id);
        assert_close(m["hierarchy_accuracy"], 0.0, id);
        // The gold's parent in view 1000 where it has one: wrong, but hierarchy credit.
        let parent = |g: &str| {
            catalog
                .parents(g.parse().unwrap(), View::ResearchConcepts)
                .first()
                .copied()
        };
        let with_parent = b.items.iter().filter(|i| parent(&i.gold).is_some()).count();
        let m = grade_all(&b, |_, g| {
            parent(g).map_or_else(|| "CWE-999999".to_owned(), |p| format!("Answer:\n{p}"))
        });
        assert_close(m["accuracy"], 0.0, id);
        assert_close(
            m["hierarchy_accuracy"],
            with_parent as f64 / b.items.len() as f64,
            id,
        );
    }
}

/// Changes one base metric of a CVSS v3.1 vector (AV, cycling N → A → L → P → N).
fn change_av(gold: &str) -> String {
    let next = |v: &str| match v {
        "N" => "A",
        "A" => "L",
        "L" => "P",
        _ => "N",
    };
    gold.split('/')
        .map(|part| match part.strip_prefix("AV:") {
            Some(v) => format!("AV:{}", next(v)),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn cvss_correct_and_wrong_answers() {
    let b = bench("ctibench-vsp").await;
    let formats: [fn(&str) -> String; 4] = [
        |g| format!("<think>network, no auth</think>\n{g}"),
        |g| format!("AV is Network...\n{}", g.trim_start_matches("CVSS:3.1/")),
        |g| format!("Final vector:\n**{g}**"),
        |g| format!("Summary.\n`{g}`"),
    ];
    for (f, format) in formats.iter().enumerate() {
        let m = grade_all(&b, |_, g| format(g));
        assert_close(m["cvss_score"], 1.0, &format!("format {f}"));
        assert_close(m["mad"], 0.0, &format!("format {f}"));
        assert_close(m["exact_vector"], 1.0, &format!("format {f}"));
    }
    // One metric changed: the score follows the base scores of the two vectors.
    let mut expected_score = 0.0;
    let mut expected_mad = 0.0;
    for item in &b.items {
        let g = Vector::parse(&item.gold).unwrap().base_score();
        let p = Vector::parse(&change_av(&item.gold)).unwrap().base_score();
        let err = ((p - g).abs() * 10.0).round() / 10.0;
        expected_score += 1.0 - err / 10.0;
        expected_mad += err;
    }
    let n = b.items.len() as f64;
    let m = grade_all(&b, |_, g| change_av(g));
    assert_close(m["cvss_score"], expected_score / n, "cvss_score");
    assert_close(m["mad"], expected_mad / n, "mad");
    assert_close(m["exact_vector"], 0.0, "exact_vector");
    assert!(m["cvss_score"] < 1.0);
}

fn gold_ids(gold: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for id in gold.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    }
    ids
}

#[tokio::test]
async fn attack_correct_and_wrong_answers() {
    for protocol in [Protocol::LastLine, Protocol::Faith] {
        let b = load("ctibench-ate", &DataSource::Dir(data_dir()), protocol)
            .await
            .unwrap();
        let formats: [fn(&str) -> String; 3] = [
            |g| {
                format!(
                    "<think>C2 over HTTP</think>\nAnswer: {}",
                    gold_ids(g).join(", ")
                )
            },
            // Sub-techniques of the gold parents, in markdown.
            |g| {
                let subs: Vec<String> =
                    gold_ids(g).iter().map(|t| format!("**{t}.001**")).collect();
                format!("- web protocols\n\nAnswer: {}", subs.join(", "))
            },
            |g| format!("Techniques found.\nAnswer: `{}`", gold_ids(g).join("`, `")),
        ];
        for (f, format) in formats.iter().enumerate() {
            let m = grade_all(&b, |_, g| format(g));
            let what = format!("{protocol:?} format {f}");
            assert_close(m["micro_f1"], 1.0, &what);
            assert_close(m["exact_set"], 1.0, &what);
            assert_close(m["jaccard"], 1.0, &what);
        }
    }
    // One technique dropped (where gold has several): recall falls, precision stays 1.
    let b = bench("ctibench-ate").await;
    let (mut tp, mut fn_, mut exact, mut jaccard) = (0usize, 0usize, 0usize, 0.0);
    for item in &b.items {
        let ids = gold_ids(&item.gold);
        if ids.len() > 1 {
            tp += ids.len() - 1;
            fn_ += 1;
            jaccard += (ids.len() - 1) as f64 / ids.len() as f64;
        } else {
            tp += 1;
            exact += 1;
            jaccard += 1.0;
        }
    }
    let m = grade_all(&b, |_, g| {
        let ids = gold_ids(g);
        let keep = if ids.len() > 1 {
            &ids[..ids.len() - 1]
        } else {
            &ids[..]
        };
        format!("Answer: {}", keep.join(", "))
    });
    let recall = tp as f64 / (tp + fn_) as f64;
    let n = b.items.len() as f64;
    assert_close(m["micro_precision"], 1.0, "precision");
    assert_close(m["micro_recall"], recall, "recall");
    assert_close(m["micro_f1"], 2.0 * recall / (1.0 + recall), "micro_f1");
    assert_close(m["exact_set"], exact as f64 / n, "exact_set");
    assert_close(m["jaccard"], jaccard / n, "jaccard");
    assert!(fn_ > 0);
}

// ---------------------------------------------------------------------------------------------
// Malformed data

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

async fn parse_error(
    id: &str,
    rel: &str,
    content: &str,
) -> (PathBuf, usize, Option<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), rel, content);
    match load(
        id,
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    {
        Err(BenchmarkError::Parse {
            path,
            line,
            field,
            detail,
        }) => {
            assert!(path.ends_with(rel), "{}", path.display());
            (path, line, field, detail)
        }
        other => panic!("{id}: expected a parse error, got {other:?}"),
    }
}

const SECEVAL_ROW: &str = r#"{"id": "x1", "source": "cwe", "question": "Q?", "choices": ["A: a", "B: b", "C: c", "D: d"], "answer": "AC", "topics": [], "keyword": "k"}"#;

#[tokio::test]
async fn malformed_jsonl_names_file_and_line() {
    let rel = "seceval/seceval-questions.jsonl";
    let (_, line, _, detail) =
        parse_error("seceval", rel, &format!("{SECEVAL_ROW}\n{{not json\n")).await;
    assert_eq!(line, 2);
    assert!(detail.contains("invalid JSON"), "{detail}");
    let row3 = SECEVAL_ROW.replace(
        r#""choices": ["A: a", "B: b", "C: c", "D: d"]"#,
        r#""choices": ["A: a"]"#,
    );
    let (_, line, field, _) = parse_error(
        "seceval",
        rel,
        &format!("{}\n\n{row3}\n", SECEVAL_ROW.replace("x1", "x0")),
    )
    .await;
    assert_eq!((line, field.as_deref()), (3, Some("choices")));
    // Duplicate ids are refused.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), rel, &format!("{SECEVAL_ROW}\n{SECEVAL_ROW}\n"));
    let err = load(
        "seceval",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, BenchmarkError::DuplicateId { id, first_line: 1, line: 2, .. } if id == "x1"),
        "{err}"
    );
    // A valid file loads, with the "A: " prefixes removed.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), rel, &format!("{SECEVAL_ROW}\n"));
    let b = load(
        "seceval",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    assert!(b.items[0].prompt.ends_with("Q?\n\nA. a\nB. b\nC. c\nD. d"));
    assert_eq!(
        b.data_sha256,
        benchmarks::sha256_hex(format!("{SECEVAL_ROW}\n").as_bytes())
    );
    assert!(b
        .notes
        .iter()
        .any(|n| n.contains("differs from the pinned revision")));
}

#[tokio::test]
async fn malformed_tsv_names_file_line_and_field() {
    let rel = "ctibench/cti-rcm.tsv";
    let header = "URL\tDescription\tPrompt\tGT\r\n";
    let good = "https://nvd.nist.gov/vuln/detail/CVE-2024-1\tA bug.\tMap it. The last line has the CWE. A bug.\tCWE-79\r\n";
    // Missing column on line 3.
    let short = "https://nvd.nist.gov/vuln/detail/CVE-2024-2\tA bug.\tCWE-79\r\n";
    let (_, line, _, detail) =
        parse_error("ctibench-rcm", rel, &format!("{header}{good}{short}")).await;
    assert_eq!(line, 3, "{detail}");
    // A bad gold answer names the GT column.
    let bad = good
        .replace("CVE-2024-1", "CVE-2024-3")
        .replace("CWE-79", "XSS");
    let (_, line, field, _) =
        parse_error("ctibench-rcm", rel, &format!("{header}{good}{bad}")).await;
    assert_eq!((line, field.as_deref()), (3, Some("GT")));
    // A missing header column.
    let (_, line, field, _) = parse_error(
        "ctibench-rcm",
        rel,
        "URL\tDescription\tPrompt\r\nx\ty\tz\r\n",
    )
    .await;
    assert_eq!((line, field.as_deref()), (1, Some("GT")));
    // An MCQ letter outside A–D.
    let mcq = "URL\tQuestion\tOption A\tOption B\tOption C\tOption D\tPrompt\tGT\r\nManual\tQ?\ta\tb\tc\td\tQ? last line: letter\tE\r\n";
    let (_, line, field, _) = parse_error("ctibench-mcqa", "ctibench/cti-mcq.tsv", mcq).await;
    assert_eq!((line, field.as_deref()), (2, Some("GT")));
    // Display names file, line and field.
    let err = BenchmarkError::Parse {
        path: PathBuf::from("d/ctibench/cti-mcq.tsv"),
        line: 2,
        field: Some("GT".into()),
        detail: "bad".into(),
    };
    assert_eq!(
        err.to_string(),
        "d/ctibench/cti-mcq.tsv line 2, field \"GT\": bad"
    );
}

#[tokio::test]
async fn malformed_json_and_csv() {
    let rel = "cybermetric/CyberMetric-80-v1.json";
    let q = |a: &str| {
        format!("{{\"question\": \"Q?\",\n \"answers\": {{{a}}},\n \"solution\": \"A\"}}")
    };
    let ok = q(r#""A": "a", "B": "b", "C": "c", "D": "d""#);
    let bad = q(r#""A": "a", "B": "b", "C": "c""#);
    let (_, line, field, _) = parse_error(
        "cybermetric-80",
        rel,
        &format!("{{\n\"questions\": [\n{ok},\n{bad}\n]}}"),
    )
    .await;
    assert_eq!((line, field.as_deref()), (6, Some("answers")));
    let (_, line, _, _) = parse_error(
        "cybermetric-80",
        rel,
        "{\n\"questions\": [\n{\"question\": 1}]}",
    )
    .await;
    assert_eq!(line, 3);
    let rel = "mmlu-security/computer_security_test.csv";
    let (_, line, _, _) = parse_error(
        "mmlu-security",
        rel,
        "\"Multi\nline?\",a,b,c,d,A\nQ2,a,b,c,B\n",
    )
    .await;
    assert_eq!(line, 3);
}

// ---------------------------------------------------------------------------------------------
// Sources

#[test]
fn remote_urls_are_pinned() {
    let url = |id: &str| remote_url(spec(id).unwrap(), spec(id).unwrap().data_file());
    assert_eq!(
        url("ctibench-mcqa"),
        "https://raw.githubusercontent.com/xashru/cti-bench/57ce8c246e5fc66a16c6cef743f3a983831b90f0/data/cti-mcq.tsv"
    );
    assert_eq!(
        url("ctibench-rcm-2021"),
        "https://raw.githubusercontent.com/xashru/cti-bench/57ce8c246e5fc66a16c6cef743f3a983831b90f0/data/cti-rcm-2021.tsv"
    );
    assert_eq!(
        url("cybermetric-2000"),
        "https://raw.githubusercontent.com/cybermetric/CyberMetric/2f5818bd2c19350cd6cfae028b75499ebe4ffd29/CyberMetric-2000-v1.json"
    );
    assert_eq!(
        url("mmlu-security"),
        "https://raw.githubusercontent.com/gavinluc/ITEC4020/c6e4c3e6e78bd541f98b4929f20c8ee55e052aee/computer_security_test.csv"
    );
    assert_eq!(
        url("secbench-mcqa-eng"),
        "https://raw.githubusercontent.com/secbench-git/SecBench/3a148abb6383c8e6be7863dd5c65b57ee2d59436/data/MCQs_2730.jsonl"
    );
    assert_eq!(
        url("seceval"),
        "https://raw.githubusercontent.com/XuanwuAI/SecEval/7aef3176a1a095b40bbfa806a7a2d6c5e203d5b7/docs/javascript/questions-data.js"
    );
    let hf = RemoteSource::HuggingFace {
        repo: "AI4Sec/cti-bench",
        revision: "0123abc",
    };
    assert_eq!(
        hf.url("cti-mcq/test.tsv"),
        "https://huggingface.co/datasets/AI4Sec/cti-bench/resolve/0123abc/cti-mcq/test.tsv"
    );
    for s in specs() {
        for f in s.files() {
            let u = remote_url(s, f);
            assert!(u.starts_with("https://") && !u.contains("//data//"), "{u}");
            // Files no copy of which could be checked when they were added are pinned by the
            // hash recorded at first download; each is listed here on purpose.
            if f.sha256 == benchmarks::UNPINNED {
                const UNPINNED_FILES: [&str; 6] = [
                    "mmlu/mmlu-dev-test.jsonl",
                    "gpqa/gpqa_diamond.csv",
                    "gpqa/gpqa_main.csv",
                    "longbench/hotpotqa.jsonl",
                    "longbench/2wikimqa.jsonl",
                    "alpacaeval/gpt4_1106_preview-model_outputs.json",
                ];
                assert!(UNPINNED_FILES.contains(&f.path), "{}: {}", s.id, f.path);
            } else {
                assert_eq!(f.sha256.len(), 64);
            }
        }
    }
}

#[test]
fn data_source_resolution() {
    let p = |s: &str| Some(PathBuf::from(s));
    assert_eq!(
        DataSource::resolve_from(p("/cli"), p("/env"), p("/xdg"), p("/home/u")),
        DataSource::Dir(PathBuf::from("/cli"))
    );
    assert_eq!(
        DataSource::resolve_from(None, p("/env"), p("/xdg"), p("/home/u")),
        DataSource::Dir(PathBuf::from("/env"))
    );
    assert_eq!(
        DataSource::resolve_from(None, p(""), p("/xdg"), p("/home/u")),
        DataSource::Cache(PathBuf::from("/xdg/metis/data"))
    );
    assert_eq!(
        DataSource::resolve_from(None, None, None, p("/home/u")),
        DataSource::Cache(PathBuf::from("/home/u/.cache/metis/data"))
    );
    assert_eq!(DataSource::Dir(PathBuf::from("/d")).root(), Path::new("/d"));
}

#[tokio::test]
async fn cache_uses_present_files_without_fetching() {
    // A cache that already holds the file loads it without any network access.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "seceval/seceval-questions.jsonl",
        &format!("{SECEVAL_ROW}\n"),
    );
    let b = load(
        "seceval",
        &DataSource::Cache(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    assert_eq!(b.items.len(), 1);
}

#[test]
fn transforms_rebuild_the_data_layout_files() {
    // SecBench: the English rows of the full upstream file, byte for byte.
    let full = std::fs::read(data_dir().join("secbench/MCQs_2730.jsonl")).unwrap();
    let english = apply_transform(Transform::SecBenchEnglish, &full).unwrap();
    let want = spec("secbench-mcqa-eng").unwrap().data_file().sha256;
    assert_eq!(benchmarks::sha256_hex(&english), want);
    // SecEval: the JS assignment becomes JSON lines.
    let js = format!(
        "problem_data = [{SECEVAL_ROW},\n{}];\n",
        SECEVAL_ROW.replace("x1", "x2")
    );
    let lines = apply_transform(Transform::SecEvalJsArray, js.as_bytes()).unwrap();
    let lines = String::from_utf8(lines).unwrap();
    assert_eq!(lines.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["answer"], "AC");
    // MMLU: header row and 7th column dropped, quoting kept.
    let csv =
        "Question,A,B,C,D,Answer,ChatGPT Response\n\"Multi\nline, q\",a,b,c,d,A,\"It is A\"\n";
    let out = apply_transform(Transform::MmluDropHeaderAndExtraColumn, csv.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\"Multi\nline, q\",a,b,c,d,A\n"
    );
    assert!(Transform::None.is_exact() && !Transform::SecEvalJsArray.is_exact());
}

// ---------------------------------------------------------------------------------------------
// BIG-Bench Hard

/// Examples per task, as `shared/data/bbh/SOURCES.md` counts them.
fn bbh_expected_count(task: &str) -> usize {
    match task {
        "causal_judgement" => 187,
        "penguins_in_a_table" => 146,
        "snarks" => 178,
        _ => 250,
    }
}

/// The item's 0-based index within its task (`<task>/<index>`).
fn bbh_index(item: &Item) -> usize {
    item.id.rsplit('/').next().unwrap().parse().unwrap()
}

fn bbh_answer(item: &Item) -> BbhAnswer {
    bbh::answer_type(item.subject.as_deref().unwrap()).unwrap()
}

/// The text of option `gold` (`(B)`) in the question: its `\n(B) …` line.
fn option_text<'q>(question: &'q str, gold: &str) -> &'q str {
    let start = question.find(&format!("\n{gold} ")).unwrap() + gold.len() + 2;
    question[start..].lines().next().unwrap()
}

/// `11520` → `11,520`, `-1234` → `-1,234`.
fn with_thousands(n: &str) -> String {
    let (sign, digits) = n.split_at(usize::from(n.starts_with('-')));
    let grouped: Vec<String> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    format!("{sign}{}", grouped.join(","))
}

/// The gold written the ways models write it.
fn bbh_correct_styles(item: &Item) -> Vec<String> {
    let g = item.gold.as_str();
    let mut styles = vec![
        format!("<think>Work through it step by step.</think>\nSo the answer is {g}."),
        format!("**The answer is {g}**"),
        format!("Let me check the steps once more.\nThe answer is: {g}"),
        format!("<think>\nhmm\n</think>\n\nTherefore, the final answer is **{g}**."),
        format!("So the answer is {g}. I double-checked each step, and nothing else fits."),
        format!("the answer is {}.", g.to_lowercase()),
        format!("Final answer:\n\n{g}"),
    ];
    let letter = g.len() == 3 && g.starts_with('(');
    match bbh_answer(item) {
        BbhAnswer::MultipleChoice if letter => {
            styles.push(format!(
                "So the answer is {g} {}.",
                option_text(&item.question, g)
            ));
            styles.push(format!("Some reasoning.\n\n{g}"));
            styles.push(format!("The answer is {}", &g[1..2]));
        }
        BbhAnswer::Integer => styles.push(format!("The answer is {}.", with_thousands(g))),
        BbhAnswer::Dyck => styles.push(format!("The answer is `{}`", g.replace(' ', ""))),
        BbhAnswer::SortedWords => styles.push(format!("The answer is: {}.", g.replace(' ', ", "))),
        BbhAnswer::Boolean | BbhAnswer::YesNo | BbhAnswer::Validity => {
            styles.push(format!("So the answer is {}", g.to_uppercase()));
            styles.push(format!("Reasoning done.\n{g}"));
        }
        _ => {}
    }
    styles
}

/// A valid answer that is certainly wrong: another option, the negated boolean, the number
/// plus one, one more bracket or word, a letter for a text target.
fn bbh_wrong(item: &Item) -> String {
    let g = item.gold.as_str();
    let answer = match bbh_answer(item) {
        BbhAnswer::MultipleChoice if g == "(A)" => "(B)".to_owned(),
        BbhAnswer::MultipleChoice => "(A)".to_owned(),
        BbhAnswer::Boolean => if g == "True" { "False" } else { "True" }.to_owned(),
        BbhAnswer::YesNo => if g.eq_ignore_ascii_case("yes") {
            "No"
        } else {
            "Yes"
        }
        .to_owned(),
        BbhAnswer::Validity => if g == "valid" { "invalid" } else { "valid" }.to_owned(),
        BbhAnswer::Integer => (g.parse::<i64>().unwrap() + 1).to_string(),
        BbhAnswer::Dyck => format!("{g} )"),
        BbhAnswer::SortedWords | BbhAnswer::FreeText => format!("{g} zebra"),
    };
    format!("<think>A quick guess.</think>\nSo the answer is {answer}.")
}

fn bbh_grade(b: &Benchmark, item: &Item, response: &str) -> Verdict {
    let v = b.verifier(item);
    v.verify(response, &v.parse_gold(&item.gold).unwrap())
}

#[tokio::test]
async fn bbh_loads_27_tasks_with_cot_prompts() {
    let b = bench("bbh").await;
    assert_eq!(b.items.len(), 6511);
    assert_eq!(b.spec.files().len(), 54);
    let mut per_task: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &b.items {
        *per_task
            .entry(item.subject.as_deref().unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_task.len(), 27);
    for (task, _) in bbh::TASKS {
        assert_eq!(per_task[task], bbh_expected_count(task), "{task}");
    }
    // Every file is the pinned one; the fingerprint covers all 54.
    for f in b.spec.files() {
        let bytes = std::fs::read(data_dir().join(f.path)).unwrap();
        assert_eq!(benchmarks::sha256_hex(&bytes), f.sha256, "{}", f.path);
    }
    assert!(
        b.notes.iter().all(|n| !n.contains("differs")),
        "{:?}",
        b.notes
    );
    assert_ne!(b.data_sha256, b.spec.data_file().sha256);
    // The quirks stay as the dataset writes them.
    assert_eq!(
        b.item("movie_recommendation/163").unwrap().gold,
        "Monsters, Inc"
    );
    assert_eq!(
        b.item("ruin_names/99").unwrap().gold,
        "dearth, wind, & fire"
    );
    // The prompt: the CoT file without canary and `-----`, then the question (lm-eval).
    let cot = std::fs::read_to_string(data_dir().join("bbh/cot-prompts/boolean_expressions.txt"))
        .unwrap();
    let exemplars = cot.splitn(3, '\n').nth(2).unwrap();
    let first = b.item("boolean_expressions/0").unwrap();
    assert_eq!(
        first.prompt,
        format!("{exemplars}\n\nQ: not ( True ) and ( True ) is\nA: Let's think step by step.\n")
    );
    assert!(first
        .prompt
        .starts_with("Evaluate the result of a random Boolean expression.\n\nQ: "));
    for item in &b.items {
        let task = item.subject.as_deref().unwrap();
        assert_eq!(item.id, format!("{task}/{}", bbh_index(item)));
        assert!(!item.prompt.contains("canary"), "{}", item.id);
        assert_eq!(
            item.prompt.matches("A: Let's think step by step.").count(),
            4
        );
        assert!(item.prompt.ends_with(&format!(
            "\n\nQ: {}\nA: Let's think step by step.\n",
            item.question
        )));
        let spec = b.verifier_spec(item);
        assert_eq!(spec.bbh_answer, bbh::answer_type(task), "{}", item.id);
        assert_eq!(spec.bbh_extraction, Some(BbhExtraction::Fixed));
    }
}

#[tokio::test]
async fn bbh_golds_written_as_models_write_them_score_full_marks() {
    let b = bench("bbh").await;
    let mut responses = 0;
    for item in &b.items {
        for (s, response) in bbh_correct_styles(item).iter().enumerate() {
            let r = bbh_grade(&b, item, response);
            assert!(
                r.correct && r.is_valid(),
                "{} style {s}: {response:?} → {r:?}",
                item.id
            );
            responses += 1;
        }
        // lm-eval's own format ("So the answer is X.") is what the upstream regex expects.
        let lm_eval = bbh_grade(&b, item, &format!("So the answer is {}.", item.gold));
        assert_eq!(lm_eval.metrics["upstream_match"], 1.0, "{}", item.id);
    }
    assert!(responses > 6511 * 8, "{responses}");
}

#[tokio::test]
async fn bbh_wrong_answers_score_exactly() {
    let b = bench("bbh").await;
    let all_wrong: Vec<Verdict> = b
        .items
        .iter()
        .map(|i| bbh_grade(&b, i, &bbh_wrong(i)))
        .collect();
    let m = aggregate(&all_wrong);
    assert_close(m["accuracy"], 0.0, "all wrong");
    assert_close(m["invalid_rate"], 0.0, "wrong answers are valid");
    assert_close(m["upstream_match"], 0.0, "all wrong upstream");
    // Every third item of each task wrong: the pooled mean and the unweighted task mean are
    // known exactly.
    let mixed: Vec<(String, Verdict)> = b
        .items
        .iter()
        .map(|i| {
            let response = if bbh_index(i).is_multiple_of(3) {
                bbh_wrong(i)
            } else {
                format!("So the answer is {}.", i.gold)
            };
            (i.subject.clone().unwrap(), bbh_grade(&b, i, &response))
        })
        .collect();
    let verdicts: Vec<Verdict> = mixed.iter().map(|(_, v)| v.clone()).collect();
    let right = |n: usize| n - n.div_ceil(3);
    let counts: Vec<usize> = bbh::TASKS
        .iter()
        .map(|(t, _)| bbh_expected_count(t))
        .collect();
    let pooled = counts.iter().map(|&n| right(n)).sum::<usize>() as f64 / 6511.0;
    assert_close(aggregate(&verdicts)["accuracy"], pooled, "pooled accuracy");
    let task_mean = counts
        .iter()
        .map(|&n| right(n) as f64 / n as f64)
        .sum::<f64>()
        / 27.0;
    // The harness's summary reports it as `accuracy_subject_mean` (one trial here).
    let graded = metis_eval::run::Graded {
        benchmark: "bbh".into(),
        model: "m".into(),
        item_ids: b.items.iter().map(|i| i.id.clone()).collect(),
        subjects: mixed.iter().map(|(t, _)| Some(t.clone())).collect(),
        verdicts: vec![verdicts.clone()],
        failed: 0,
        reasoning_chars: vec![vec![]],
    };
    let row = metis_eval::run::summarize(&graded, "accuracy");
    assert_close(
        row.metrics["accuracy_subject_mean"].mean,
        task_mean,
        "unweighted task mean",
    );
    assert_close(
        row.metrics["accuracy/word_sorting"].mean,
        right(250) as f64 / 250.0,
        "per-task accuracy",
    );
    assert!((pooled - task_mean).abs() > 1e-6, "the two means differ");
}

#[tokio::test]
async fn bbh_responses_without_an_answer_are_invalid() {
    let b = bench("bbh").await;
    for item in &b.items {
        let mut empty = vec![
            "<think>Let me think about the expression".to_owned(),
            "<think>All reasoning, no answer.</think>\n\n".to_owned(),
        ];
        // A free-text line is a word list; for every other type it is no answer.
        if bbh_answer(item) != BbhAnswer::SortedWords {
            empty.push("<think>x</think>\nI am not able to determine this.".to_owned());
        }
        for response in &empty {
            let r = bbh_grade(&b, item, response);
            assert!(
                !r.is_valid() && !r.correct,
                "{} {response:?}: {r:?}",
                item.id
            );
        }
    }
}

#[tokio::test]
async fn bbh_upstream_protocol_reproduces_lm_eval() {
    let b = bench("bbh").await;
    let mut upstream = VerifierFactory::new(None);
    for item in &b.items {
        let spec = VerifierSpec {
            bbh_extraction: Some(BbhExtraction::Upstream),
            ..b.verifier_spec(item)
        };
        let v = upstream.build(&spec).unwrap();
        let gold = v.parse_gold(&item.gold).unwrap();
        let g = &item.gold;
        // lm-eval's format scores.
        let ok = v.verify(&format!("<think>x</think>So the answer is {g}."), &gold);
        assert!(ok.correct, "{}: {ok:?}", item.id);
        // No final period: the regex drops the answer's last character ("Tru").
        let cut = v.verify(&format!("So the answer is {g}"), &gold);
        assert!(!cut.correct, "{}", item.id);
        let chars: Vec<char> = g.chars().collect();
        let dropped: String = chars[..chars.len() - 1].iter().collect();
        // A one-character target leaves nothing: an empty answer.
        let want = Some(dropped.trim()).filter(|d| !d.is_empty());
        assert_eq!(cut.extracted.as_deref(), want, "{}", item.id);
        assert_eq!(
            cut.metrics["fixed_match"], 1.0,
            "{}: the fixed reading is right",
            item.id
        );
        // Capital "The answer is" is not seen; markdown is not removed.
        let capital = v.verify(&format!("The answer is {g}."), &gold);
        assert_eq!(capital.invalid, Some(InvalidReason::NoMatch), "{}", item.id);
        let bold = v.verify(&format!("So the answer is **{g}**."), &gold);
        assert!(
            !bold.correct && bold.metrics["fixed_match"] == 1.0,
            "{}",
            item.id
        );
    }
}

/// A copy of the BBH data in a temporary data directory, with `rel` replaced by `content`.
fn bbh_copy_with(rel: &str, content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in spec("bbh").unwrap().files() {
        let to = dir.path().join(f.path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(data_dir().join(f.path), to).unwrap();
    }
    write(dir.path(), rel, content);
    dir
}

async fn bbh_parse_error(rel: &str, content: &str) -> (usize, Option<String>, String) {
    let dir = bbh_copy_with(rel, content);
    match load(
        "bbh",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    {
        Err(BenchmarkError::Parse {
            path,
            line,
            field,
            detail,
        }) => {
            assert!(path.ends_with(rel), "{}", path.display());
            (line, field, detail)
        }
        other => panic!("{rel}: expected a parse error, got {other:?}"),
    }
}

#[tokio::test]
async fn bbh_broken_files_name_file_line_and_field() {
    let task_file = |second: &str| {
        format!(
            "{{\n\"canary\": \"c\",\n\"examples\": [\n{{\"input\": \"List: b a\", \"target\": \"a b\"}},\n{second}\n]}}"
        )
    };
    // A missing target: the example's own line and the field.
    let rel = "bbh/bbh/word_sorting.json";
    let (line, field, detail) = bbh_parse_error(rel, &task_file(r#"{"input": "List: d c"}"#)).await;
    assert_eq!((line, field.as_deref()), (5, Some("target")), "{detail}");
    assert!(detail.contains("example 1"), "{detail}");
    // A target that is not of the task's type, in another task's file.
    let rel = "bbh/bbh/boolean_expressions.json";
    let content = task_file(r#"{"input": "True is", "target": "Maybe"}"#).replace("a b", "True");
    let (line, field, detail) = bbh_parse_error(rel, &content).await;
    assert_eq!((line, field.as_deref()), (5, Some("target")), "{detail}");
    assert!(detail.contains("boolean"), "{detail}");
    // Broken JSON: serde's line.
    let (line, _, _) = bbh_parse_error("bbh/bbh/navigate.json", "{\n\"examples\": [\n{,]}").await;
    assert_eq!(line, 3);
    // No examples array.
    let (line, field, _) = bbh_parse_error("bbh/bbh/snarks.json", "{\"canary\": \"c\"}").await;
    assert_eq!((line, field.as_deref()), (1, Some("examples")));
    // A CoT prompt file without its `-----` line.
    let (line, _, detail) =
        bbh_parse_error("bbh/cot-prompts/navigate.txt", "canary\nQ: x\nA: y").await;
    assert_eq!(line, 2, "{detail}");
    // The intact copy loads.
    let dir = bbh_copy_with("bbh/unused.txt", "");
    let ok = load(
        "bbh",
        &DataSource::Dir(dir.path().to_owned()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    assert_eq!(ok.items.len(), 6511);
}

// ---------------------------------------------------------------------------------------------
// HumanEval

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

/// The canonical solutions of the shared HumanEval file, by task id.
fn canonical_solutions() -> BTreeMap<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(data_dir().join("humaneval/HumanEval.jsonl.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                row["task_id"].as_str().unwrap().to_owned(),
                row["canonical_solution"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn humaneval_loads_its_164_problems_and_grades_by_running_them() {
    let (id, count) = CODE[0];
    let b = bench(id).await;
    assert_eq!(b.items.len(), count);
    assert_eq!(
        b.data_sha256,
        b.spec.data_file().sha256,
        "pinned sha of the .gz"
    );
    assert_eq!(b.spec.primary_metric, "pass@1");
    for (i, item) in b.items.iter().enumerate() {
        assert_eq!(item.id, format!("HumanEval/{i}"));
        assert!(
            item.prompt.contains(item.question.trim_end()),
            "{}",
            item.id
        );
        assert!(item.prompt.contains("```python\n") && item.prompt.contains("passes the tests"));
        let v = b.verifier(item);
        assert_eq!(v.task(), metis_verify::Task::Code);
        v.parse_gold(&item.gold).unwrap();
    }
    assert_eq!(b.verifier_spec(&b.items[0]).code_timeout_ms, Some(3000));
    // Grading runs the code: canonical solutions pass, a wrong body fails.
    let canonical = canonical_solutions();
    let verdicts: Vec<Verdict> = b.items[..4]
        .iter()
        .flat_map(|item| {
            let v = b.verifier(item);
            let right = format!("<think>ok</think>```python\n{}```", canonical[&item.id]);
            let wrong = "<think>ok</think>```python\n    return None\n```";
            [
                v.grade(&right, &item.gold).unwrap(),
                v.grade(wrong, &item.gold).unwrap(),
            ]
        })
        .collect();
    let passed: Vec<bool> = verdicts.iter().map(|v| v.correct).collect();
    assert_eq!(passed, [true, false].repeat(4), "{verdicts:#?}");
    assert_eq!(aggregate(&verdicts)["passed"], 0.5);
}

#[tokio::test]
async fn humaneval_errors_name_file_line_and_field() {
    let rel = "humaneval/HumanEval.jsonl.gz";
    let row = |id: &str, entry: &str| {
        serde_json::json!({
            "task_id": id,
            "prompt": "def f(x):\n    \"\"\"Doc.\"\"\"\n",
            "canonical_solution": "    return x\n",
            "test": "def check(candidate):\n    assert candidate(1) == 1\n",
            "entry_point": entry,
        })
        .to_string()
    };
    let load_bytes = |bytes: Vec<u8>| async move {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("humaneval")).unwrap();
        std::fs::write(dir.path().join(rel), bytes).unwrap();
        load(
            "humaneval",
            &DataSource::Dir(dir.path().to_owned()),
            Protocol::LastLine,
        )
        .await
    };
    let parse = |r: Result<Benchmark, BenchmarkError>| match r {
        Err(BenchmarkError::Parse {
            line,
            field,
            detail,
            ..
        }) => (line, field, detail),
        other => panic!("expected a parse error, got {other:?}"),
    };
    let missing = format!(
        "{}\n{}\n",
        row("T/0", "f"),
        row("T/1", "f").replace("entry_point", "entry")
    );
    let (line, field, _) = parse(load_bytes(gzip(&missing)).await);
    assert_eq!((line, field.as_deref()), (2, Some("entry_point")));
    let not_in_prompt = format!("{}\n{}\n", row("T/0", "f"), row("T/1", "g"));
    let (line, field, detail) = parse(load_bytes(gzip(&not_in_prompt)).await);
    assert_eq!((line, field.as_deref()), (2, Some("prompt")), "{detail}");
    assert!(
        detail.contains("does not define the entry point"),
        "{detail}"
    );
    let bad_name = format!("{}\n", row("T/0", "f(x)"));
    let (line, field, _) = parse(load_bytes(gzip(&bad_name)).await);
    assert_eq!((line, field.as_deref()), (1, Some("entry_point")));
    let (line, _, detail) = parse(load_bytes(row("T/0", "f").into_bytes()).await);
    assert_eq!(line, 0);
    assert!(detail.contains("not a gzip file"), "{detail}");
    let ok = load_bytes(gzip(&format!("{}\n", row("T/0", "f"))))
        .await
        .unwrap();
    assert_eq!(ok.items[0].id, "T/0");
    assert!(ok
        .notes
        .iter()
        .any(|n| n.contains("differs from the pinned revision")));
}

#[test]
fn humaneval_source_is_pinned() {
    let s = spec("humaneval").unwrap();
    assert_eq!(
        remote_url(s, s.data_file()),
        "https://raw.githubusercontent.com/openai/human-eval/6d43fb980f9fee3c892a914eda09951f772ad10d/data/HumanEval.jsonl.gz"
    );
}
