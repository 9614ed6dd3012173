//! Loaders of the general benchmarks whose data is fetched (MMLU, GPQA, LongBench's HotpotQA
//! and 2WikiMultihopQA), on fixtures written here in the data layout: items, ids, prompts as
//! lm-eval builds them, gold answers, grading of answers written the way models write them,
//! errors that name file, line and field, the gated-dataset message and content pinning.

use std::path::Path;

use metis_eval::benchmarks::{load, spec, BenchmarkError, DataSource};
use metis_verify::verifier::aggregate;
use metis_verify::Protocol;
use serde_json::json;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn mmlu_fixture() -> String {
    let mut lines = Vec::new();
    for subject in ["anatomy", "college_physics"] {
        for k in 0..5 {
            lines.push(json!({"subject": subject, "split": "dev", "question": format!("{subject} dev {k}?"),
                "choices": ["w", "x", "y", "z"], "answer": "ABCDA".chars().nth(k).unwrap().to_string()}));
        }
        for (k, answer) in ["B", "D"].iter().enumerate() {
            lines.push(json!({"subject": subject, "split": "test", "question": format!("{subject} test {k}?"),
                "choices": ["w", "x", "y", "z"], "answer": answer}));
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect::<String>()
}

#[tokio::test]
async fn mmlu_five_shot_items_prompts_and_grading() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mmlu/mmlu-dev-test.jsonl", &mmlu_fixture());
    let b = load(
        "mmlu",
        &DataSource::Dir(dir.path().into()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    let ids: Vec<&str> = b.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "anatomy/0",
            "anatomy/1",
            "college_physics/0",
            "college_physics/1"
        ]
    );
    let item = &b.items[2];
    assert_eq!(item.subject.as_deref(), Some("college_physics"));
    assert!(item.prompt.starts_with(
        "The following are multiple choice questions (with answers) about college physics.\n\n\
         college_physics dev 0?\nA. w\nB. x\nC. y\nD. z\nAnswer: A\n\n"
    ));
    assert!(item
        .prompt
        .ends_with("\n\ncollege_physics test 0?\nA. w\nB. x\nC. y\nD. z\nAnswer:"));
    assert_eq!(item.prompt.matches("Answer: ").count(), 5);
    assert!(b.notes.iter().any(|n| n.contains("not pinned by content")));

    // Gold answers as models write them: 100 %; one wrong and one invalid answer out of four.
    let styles = [
        "<think>Recall the options.</think>B",
        "<think>…</think>The answer is **D**.",
        "<think>x</think>Answer: (B)",
        "<think>x</think>Reasoning first.\n\nAnswer: D",
    ];
    let verdicts: Vec<_> = b
        .items
        .iter()
        .zip(styles)
        .map(|(item, r)| b.verifier(item).grade(r, &item.gold).unwrap())
        .collect();
    assert!(verdicts.iter().all(|v| v.correct), "{verdicts:#?}");
    let mixed = [
        "<think>x</think>B",
        "<think>x</think>Answer: A",
        "<think>x</think>I cannot tell.",
        "<think>x</think>D",
    ];
    let verdicts: Vec<_> = b
        .items
        .iter()
        .zip(mixed)
        .map(|(item, r)| b.verifier(item).grade(r, &item.gold).unwrap())
        .collect();
    assert_eq!(aggregate(&verdicts)["accuracy"], 0.5);
    assert_eq!(verdicts.iter().filter(|v| !v.is_valid()).count(), 1);
}

#[tokio::test]
async fn mmlu_errors_name_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = mmlu_fixture();
    text.push_str("{\"subject\": \"anatomy\", \"split\": \"test\", \"question\": \"q\", \"choices\": [\"a\", \"b\", \"c\", \"d\"], \"answer\": \"E\"}\n");
    write(dir.path(), "mmlu/mmlu-dev-test.jsonl", &text);
    let err = load(
        "mmlu",
        &DataSource::Dir(dir.path().into()),
        Protocol::LastLine,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, BenchmarkError::Parse { line: 15, field: Some(f), .. } if f == "answer"),
        "{err}"
    );
    // A subject with fewer than five dev rows cannot make a 5-shot prompt.
    let short: String = mmlu_fixture()
        .lines()
        .filter(|l| !l.contains("anatomy dev 4"))
        .map(|l| format!("{l}\n"))
        .collect();
    write(dir.path(), "mmlu/mmlu-dev-test.jsonl", &short);
    let err = load(
        "mmlu",
        &DataSource::Dir(dir.path().into()),
        Protocol::LastLine,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("has 4 dev rows"), "{err}");
}

const GPQA_CSV: &str = "Pre-Revision Question,Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Record ID,High-level domain\n\
x,\"Which particle\nmediates it?\",gluon [title] boson,photon,\"W  boson\",Z boson,recA1,Physics\n\
x,What is 2+2?,4,3,5,22,recB2,Math\n";

#[tokio::test]
async fn gpqa_fixed_shuffle_prompt_and_grading() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "gpqa/gpqa_diamond.csv", GPQA_CSV);
    let source = DataSource::Dir(dir.path().into());
    let b = load("gpqa-diamond", &source, Protocol::LastLine)
        .await
        .unwrap();
    assert_eq!(b.items.len(), 2);
    let item = &b.items[0];
    assert_eq!(item.id, "recA1");
    assert_eq!(item.subject.as_deref(), Some("Physics"));
    assert!(item.prompt.starts_with(
        "What is the correct answer to this question:Which particle\nmediates it?\nChoices:\n(A) "
    ));
    assert!(item.prompt.ends_with("\nLet's think step by step: "));
    // The gold letter points at the (cleaned) correct answer, and the order is stable.
    let line = format!("({}) gluon. boson", item.gold);
    assert!(item.prompt.contains(&line), "{}", item.prompt);
    assert!(
        item.prompt.contains(") W boson"),
        "double space made single"
    );
    let again = load("gpqa-diamond", &source, Protocol::LastLine)
        .await
        .unwrap();
    assert_eq!(again.items, b.items);

    let wrong = |gold: &str| if gold == "A" { "B" } else { "A" };
    for item in &b.items {
        let v = b.verifier(item);
        for response in [
            format!("<think>Let's think.</think>The answer is ({}).", item.gold),
            format!("<think>…</think>**Answer: {}**", item.gold),
        ] {
            assert!(
                v.grade(&response, &item.gold).unwrap().correct,
                "{response}"
            );
        }
        let bad = format!("<think>…</think>The answer is ({}).", wrong(&item.gold));
        assert!(!v.grade(&bad, &item.gold).unwrap().correct);
    }
}

#[tokio::test]
async fn gpqa_is_never_downloaded_and_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(
        "gpqa-main",
        &DataSource::Cache(dir.path().into()),
        Protocol::LastLine,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("gated"), "{err}");
    assert!(err.contains("gpqa_main.csv"), "{err}");
    assert!(
        err.contains("huggingface.co/datasets/Idavidrein/gpqa"),
        "{err}"
    );
}

fn longbench_fixture() -> String {
    [
        json!({"input": "Which film came out first?", "context": "Passage 1:\nTitanic (1997)\nPassage 2:\nAvatar (2009)",
               "answers": ["Titanic"], "length": 9, "dataset": "hotpotqa", "language": "en", "all_classes": null, "_id": "h1"}),
        json!({"input": "Are both directors American?", "context": "…", "answers": ["yes"], "_id": "h2"}),
        json!({"input": "Who directed it?", "context": "…", "answers": ["John Christopher Depp", "Johnny Depp"], "_id": "h3"}),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect()
}

#[tokio::test]
async fn longbench_qa_prompt_and_f1_grading() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "longbench/hotpotqa.jsonl", &longbench_fixture());
    write(dir.path(), "longbench/2wikimqa.jsonl", &longbench_fixture());
    let source = DataSource::Dir(dir.path().into());
    for id in ["hotpotqa", "2wikimultihopqa"] {
        let b = load(id, &source, Protocol::LastLine).await.unwrap();
        assert_eq!(b.items.len(), 3, "{id}");
        let p = &b.items[0].prompt;
        assert!(p.starts_with("Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\nPassage 1:\nTitanic (1997)"));
        assert!(p.ends_with("\n\nQuestion: Which film came out first?\nAnswer:"));
        assert_eq!(b.spec.primary_metric, "f1");

        let grade = |i: usize, r: &str| {
            let item = &b.items[i];
            b.verifier(item).grade(r, &item.gold).unwrap()
        };
        // Gold answers as models write them.
        assert_eq!(
            grade(0, "<think>Titanic is from 1997.</think>Titanic").score,
            1.0
        );
        assert_eq!(grade(1, "<think>both are</think>Yes.").score, 1.0);
        assert_eq!(
            grade(2, "<think>…</think>Answer: **Johnny Depp**").score,
            1.0
        );
        // Known-wrong: the official yes/no rule gives 0; F1 over the best alias is 2/3.
        assert_eq!(grade(1, "<think>x</think>no").score, 0.0);
        let depp = grade(2, "<think>x</think>Depp");
        assert!((depp.score - 2.0 / 3.0).abs() < 1e-12, "{depp:?}");
        assert!(!depp.correct);
        // No answer after the reasoning: invalid, not silently wrong.
        assert!(!grade(0, "<think>I ran out of").is_valid());
    }
}

#[tokio::test]
async fn unpinned_files_are_checked_against_the_hash_recorded_at_download() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("longbench/hotpotqa.jsonl");
    write(dir.path(), "longbench/hotpotqa.jsonl", &longbench_fixture());
    std::fs::write(
        file.with_file_name("hotpotqa.jsonl.sha256"),
        "0000000000000000000000000000000000000000000000000000000000000000\n",
    )
    .unwrap();
    let b = load(
        "hotpotqa",
        &DataSource::Cache(dir.path().into()),
        Protocol::LastLine,
    )
    .await
    .unwrap();
    assert!(
        b.notes
            .iter()
            .any(|n| n.contains("differs from the pinned revision")),
        "{:?}",
        b.notes
    );
    let spec = spec("hotpotqa").unwrap();
    assert!(spec
        .source
        .describe()
        .contains("THUDM/LongBench@313939aaa709"));
}
