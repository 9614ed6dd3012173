//! Prompt-file benchmarks (`metis eval --prompts`): a GRPO prompt file read as a benchmark
//! grades each item with its record's verifier spec, exported benchmark prompts read back
//! grade like the benchmark, and bad files are refused with file, line and field.

use std::path::{Path, PathBuf};

use metis_eval::benchmarks::prompt_file::{load_prompt_file, prompt_file_id};
use metis_eval::benchmarks::{self, BenchmarkError, DataSource};
use metis_eval::samples::export_prompts;
use metis_verify::Protocol;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

fn write(dir: &Path, lines: &[serde_json::Value]) -> PathBuf {
    let path = dir.join("prompts.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn load_err(lines: &[serde_json::Value]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), lines);
    match load_prompt_file("mine", &path, None, Protocol::LastLine) {
        Ok(_) => panic!("loaded a bad file"),
        Err(e) => e.to_string().replace(&path.display().to_string(), "FILE"),
    }
}

#[test]
fn records_are_graded_by_their_own_verifier_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        &[
            serde_json::json!({"id": "a", "task": "mcq", "gold": "B",
                "messages": [{"role": "user", "content": "Pick one. A) x B) y"}]}),
            // FAITH extraction for this record only.
            serde_json::json!({"id": 7, "task": "mcq", "gold": "C", "verifier": {"protocol": "faith"},
                "messages": [{"role": "user", "content": "Pick again."}]}),
            serde_json::json!({"task": "mcq", "gold": ["A", "C"], "verifier": {"multi": true},
                "messages": [{"role": "user", "content": "Pick all."}]}),
        ],
    );
    let b = load_prompt_file("mine", &path, None, Protocol::LastLine).unwrap();
    assert_eq!(b.id(), "mine");
    assert_eq!(b.spec.primary_metric, "accuracy");
    let ids: Vec<&str> = b.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a", "7", "line-3"]);
    assert_eq!(b.items[0].prompt, "Pick one. A) x B) y");
    assert_eq!(b.verifier_spec(&b.items[1]).protocol, Some(Protocol::Faith));
    assert_eq!(
        b.verifier_spec(&b.items[0]).protocol,
        Some(Protocol::LastLine)
    );

    let grade = |i: usize, response: &str| {
        let item = &b.items[i];
        b.verifier(item)
            .grade(response, &item.gold)
            .unwrap()
            .correct
    };
    assert!(grade(0, "reasoning\nAnswer: B"));
    assert!(!grade(0, "Answer: A"));
    assert!(grade(1, "The correct answer is (C)."));
    assert!(grade(2, "Answer: A, C"));
    assert!(!grade(2, "Answer: A"));
    assert_eq!(b.data_sha256.len(), 64);
}

#[test]
fn a_benchmarks_exported_prompts_grade_like_the_benchmark() {
    if !data_dir().join("cybermetric").is_dir() {
        eprintln!("skipped: no shared data");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = DataSource::Dir(data_dir());
    let bench = rt
        .block_on(benchmarks::load(
            "cybermetric-80",
            &data,
            Protocol::LastLine,
        ))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cm80.jsonl");
    export_prompts(&bench, std::fs::File::create(&path).unwrap()).unwrap();
    let back = load_prompt_file("cm80", &path, Some(&data_dir()), Protocol::LastLine).unwrap();
    assert_eq!(back.items.len(), bench.items.len());
    for (a, b) in bench.items.iter().zip(&back.items) {
        assert_eq!(format!("cybermetric-80/{}", a.id), b.id);
        assert_eq!(a.prompt, b.prompt);
        assert_eq!(bench.verifier_spec(a), back.verifier_spec(b));
        for response in [
            format!("Answer: {}", a.gold),
            "Answer: Z".to_owned(),
            "no answer".to_owned(),
        ] {
            let x = bench.verifier(a).grade(&response, &a.gold).unwrap();
            let y = back.verifier(b).grade(&response, &b.gold).unwrap();
            assert_eq!((x.correct, x.score), (y.correct, y.score), "{response}");
        }
    }
}

#[test]
fn bad_files_are_refused_with_file_line_and_field() {
    let user = serde_json::json!([{"role": "user", "content": "q"}]);
    assert_eq!(
        load_err(&[
            serde_json::json!({"task": "mcq", "gold": "B", "messages": user}),
            serde_json::json!({"task": "mcq", "messages": user})
        ]),
        "FILE line 2, field \"gold\": missing"
    );
    assert_eq!(
        load_err(&[serde_json::json!({"task": "mcq", "gold": "B", "messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "q"}]})]),
        "FILE line 1, field \"messages\": must be exactly one {\"role\": \"user\", \"content\": string} message (a system prompt is set for the whole run with --system-prompt)"
    );
    let mixed = load_err(&[
        serde_json::json!({"task": "mcq", "gold": "B", "messages": user}),
        serde_json::json!({"task": "cwe", "gold": "CWE-79", "messages": user}),
    ]);
    assert!(
        mixed.starts_with("FILE line 2, field \"task\": cwe differs"),
        "{mixed}"
    );
    let dup = load_err(&[
        serde_json::json!({"id": "x", "task": "mcq", "gold": "B", "messages": user}),
        serde_json::json!({"id": "x", "task": "mcq", "gold": "C", "messages": user}),
    ]);
    assert!(dup.contains("duplicate item id \"x\""), "{dup}");
    assert_eq!(load_err(&[]), "FILE: no prompt records");

    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        &[serde_json::json!({"task": "mcq", "gold": "B", "messages": user})],
    );
    let builtin = load_prompt_file("cybermetric-80", &path, None, Protocol::LastLine);
    assert!(matches!(builtin, Err(BenchmarkError::Parse { .. })));
}

#[test]
fn names_come_from_the_argument_or_the_file_stem() {
    assert_eq!(
        prompt_file_id("held=out/dir/x.jsonl"),
        ("held".to_owned(), PathBuf::from("out/dir/x.jsonl"))
    );
    assert_eq!(
        prompt_file_id("out/dir/heldout.jsonl"),
        ("heldout".to_owned(), PathBuf::from("out/dir/heldout.jsonl"))
    );
}
