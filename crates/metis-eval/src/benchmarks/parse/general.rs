//! Parsers of the general-ability benchmarks whose data is not vendored: MMLU (57 subjects,
//! 5-shot generative), GPQA (0-shot CoT, choices shuffled once per question) and LongBench's
//! multi-hop QA sets (HotpotQA, 2WikiMultihopQA). Their prompts follow lm-eval's task YAMLs
//! (`general-benchmarks-and-rewards.md` §3, §4.2, §4.3); the grading is Metis's own (letters
//! by the MCQ verifier, answers by the QA verifier), after the `<think>` split.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{json_str, jsonl, perr, Item, Parsed, Row, Tsv};
use crate::benchmarks::BenchmarkError;

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// Exemplars per MMLU prompt (lm-eval `mmlu_generative`: `num_fewshot` 5 from `dev`, first_n).
pub(crate) const MMLU_SHOTS: usize = 5;

/// One MMLU row of the data-layout file (see `Transform::MmluTar`).
struct MmluRow {
    line: usize,
    question: String,
    choices: Vec<String>,
    answer: String,
}

/// MMLU's question block, as lm-eval's `doc_to_text` writes it:
/// `{question.strip()}\nA. …\nB. …\nC. …\nD. …\nAnswer:`.
fn mmlu_block(question: &str, choices: &[String]) -> String {
    let mut s = question.trim().to_owned();
    for (letter, choice) in LETTERS.iter().zip(choices) {
        s.push_str(&format!("\n{letter}. {choice}"));
    }
    s.push_str("\nAnswer:");
    s
}

/// The 5-shot generative prompt: the subject's description, then each `dev` exemplar with its
/// target after a space (lm-eval's `target_delimiter`), exemplars separated by a blank line
/// (`fewshot_delimiter`), then the question block.
fn mmlu_prompt(subject: &str, shots: &[MmluRow], row: &MmluRow) -> String {
    let mut prompt = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.replace('_', " ")
    );
    for shot in shots {
        prompt.push_str(&mmlu_block(&shot.question, &shot.choices));
        prompt.push(' ');
        prompt.push_str(&shot.answer);
        prompt.push_str("\n\n");
    }
    prompt.push_str(&mmlu_block(&row.question, &row.choices));
    prompt
}

/// MMLU in the data layout: one JSON object per line, `{"subject", "split": "dev"|"test",
/// "question", "choices": [4 strings], "answer": "A".."D"}`. Items are the `test` rows, id
/// `<subject>/<index within the subject's test file>`; each prompt carries the first five
/// `dev` rows of its subject.
pub(crate) fn mmlu_five_shot(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut dev: BTreeMap<String, Vec<MmluRow>> = BTreeMap::new();
    let mut test: Vec<(String, MmluRow)> = Vec::new();
    for (_, line, obj) in jsonl(text, path)? {
        let subject = json_str(&obj, "subject", path, line)?.trim().to_owned();
        if subject.is_empty() {
            return Err(perr(path, line, Some("subject"), "empty value"));
        }
        let row = mmlu_row(&obj, path, line)?;
        match json_str(&obj, "split", path, line)? {
            "dev" => dev.entry(subject).or_default().push(row),
            "test" => test.push((subject, row)),
            other => {
                return Err(perr(
                    path,
                    line,
                    Some("split"),
                    format!("{other:?}, expected \"dev\" or \"test\""),
                ))
            }
        }
    }
    let mut out = Parsed::default();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (subject, row) in test {
        let shots = dev.get(&subject).map(Vec::as_slice).unwrap_or_default();
        if shots.len() < MMLU_SHOTS {
            return Err(perr(
                path,
                row.line,
                Some("subject"),
                format!(
                    "subject {subject:?} has {} dev rows; the 5-shot prompt needs {MMLU_SHOTS}",
                    shots.len()
                ),
            ));
        }
        let i = index.entry(subject.clone()).or_default();
        out.rows.push(Row {
            item: Item {
                id: format!("{subject}/{i}"),
                prompt: mmlu_prompt(&subject, &shots[..MMLU_SHOTS], &row),
                gold: row.answer.clone(),
                subject: Some(subject),
                question: row.question.clone(),
            },
            line: row.line,
            gold_field: "answer",
        });
        *i += 1;
    }
    Ok(out)
}

fn mmlu_row(
    obj: &serde_json::Map<String, Value>,
    path: &Path,
    line: usize,
) -> Result<MmluRow, BenchmarkError> {
    let question = json_str(obj, "question", path, line)?.to_owned();
    let choices = match obj.get("choices") {
        Some(Value::Array(a)) if a.len() == 4 => a
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| perr(path, line, Some("choices"), "choices must be strings"))?,
        _ => return Err(perr(path, line, Some("choices"), "expected 4 strings")),
    };
    let answer = json_str(obj, "answer", path, line)?
        .trim()
        .to_ascii_uppercase();
    if !LETTERS.contains(&answer.as_str()) {
        return Err(perr(
            path,
            line,
            Some("answer"),
            format!("{answer:?}, expected A-D"),
        ));
    }
    Ok(MmluRow {
        line,
        question,
        choices,
        answer,
    })
}

/// lm-eval's GPQA `preprocess`: strip, ` [title]` → `. `, bracketed spans removed (within a
/// line: Python's `.` does not match a newline), then each double space made single.
pub(crate) fn gpqa_clean(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find([']', '\n']) {
            Some(close) if after.as_bytes()[close] == b']' => {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// The fixed order of a GPQA question's four choices: a Fisher–Yates shuffle of
/// `[incorrect 1, incorrect 2, incorrect 3, correct]` (lm-eval's order before its shuffle)
/// driven by SplitMix64 seeded with the first 8 bytes of SHA-256(`gpqa:` + Record ID). lm-eval
/// shuffles with Python's global `random`, whose state depends on which tasks were loaded
/// before, so its order cannot be reproduced; this one is the same on every run and machine.
pub(crate) fn gpqa_order(record_id: &str) -> [usize; 4] {
    let digest = Sha256::digest(format!("gpqa:{record_id}").as_bytes());
    let mut seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order = [0, 1, 2, 3];
    for i in (1..4).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// lm-eval `gpqa_*_cot_zeroshot`'s prompt (no space after the colon, as upstream).
fn gpqa_prompt(question: &str, choices: &[String; 4]) -> String {
    let mut prompt = format!("What is the correct answer to this question:{question}\nChoices:");
    for (letter, choice) in LETTERS.iter().zip(choices) {
        prompt.push_str(&format!("\n({letter}) {choice}"));
    }
    prompt.push_str("\nLet's think step by step: ");
    prompt
}

/// GPQA's CSV (`gpqa_diamond.csv`, `gpqa_main.csv` from the gated `Idavidrein/gpqa`): one item
/// per row, id = `Record ID`, subject = `High-level domain`, the choices cleaned and put in
/// [`gpqa_order`], gold = the letter the correct answer landed on.
pub(crate) fn gpqa(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    const COLUMNS: [&str; 6] = [
        "Question",
        "Correct Answer",
        "Incorrect Answer 1",
        "Incorrect Answer 2",
        "Incorrect Answer 3",
        "Record ID",
    ];
    let table = Tsv::read_delimited(text, path, &COLUMNS, b',')?;
    let mut out = Parsed::default();
    for (_, line, record) in &table.rows {
        let line = *line;
        let question = table.get(record, "Question", path, line)?;
        let id = table.get(record, "Record ID", path, line)?;
        let unshuffled = [
            table.get(record, "Incorrect Answer 1", path, line)?,
            table.get(record, "Incorrect Answer 2", path, line)?,
            table.get(record, "Incorrect Answer 3", path, line)?,
            table.get(record, "Correct Answer", path, line)?,
        ]
        .map(gpqa_clean);
        let order = gpqa_order(id);
        let choices = order.map(|k| unshuffled[k].clone());
        let correct = order
            .iter()
            .position(|&k| k == 3)
            .expect("a permutation of 0..4 contains 3");
        let subject = table
            .columns
            .get("High-level domain")
            .and_then(|&c| record.get(c))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        out.rows.push(Row {
            item: Item {
                id: id.to_owned(),
                prompt: gpqa_prompt(question, &choices),
                gold: LETTERS[correct].to_owned(),
                subject,
                question: question.to_owned(),
            },
            line,
            gold_field: "Correct Answer",
        });
    }
    Ok(out)
}

/// LongBench's prompt for `hotpotqa` and `2wikimqa` (`config/dataset2prompt.json`).
fn longbench_prompt(context: &str, question: &str) -> String {
    const ASK: &str = "Answer the question based on the given passages. Only give me the \
                       answer and do not output any other words.";
    format!(
        "{ASK}\n\nThe following are given passages.\n{context}\n\n{ASK}\n\nQuestion: {question}\nAnswer:"
    )
}

/// A LongBench QA file (`hotpotqa.jsonl`, `2wikimqa.jsonl`): `{"input", "context",
/// "answers": [..], "_id", ...}` per line; the gold is the answer list as JSON (the QA verifier
/// takes the best score over it).
pub(crate) fn longbench_qa(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut out = Parsed::default();
    for (i, line, obj) in jsonl(text, path)? {
        let question = json_str(&obj, "input", path, line)?;
        let context = json_str(&obj, "context", path, line)?;
        let answers: Vec<&str> = match obj.get("answers") {
            Some(Value::Array(a)) => a
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(|| perr(path, line, Some("answers"), "answers must be strings"))?,
            _ => return Err(perr(path, line, Some("answers"), "expected an array")),
        };
        let id = match obj.get("_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => i.to_string(),
        };
        out.rows.push(Row {
            item: Item {
                id,
                prompt: longbench_prompt(context, question),
                gold: serde_json::to_string(&answers).expect("strings serialise"),
                subject: None,
                question: question.to_owned(),
            },
            line,
            gold_field: "answers",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpqa_clean_matches_lm_eval_preprocess() {
        // Python: preprocess("  A [title] b [x] c  [y]\n[z\n] d ") with lm-eval's function.
        assert_eq!(gpqa_clean("  A [title] b [x] c  [y]"), "A. b c ");
        assert_eq!(gpqa_clean("x [un\nclosed] y"), "x [un\nclosed] y");
        assert_eq!(
            gpqa_clean("a   b"),
            "a  b",
            "one pass of replace, as str.replace"
        );
    }

    #[test]
    fn gpqa_order_is_a_fixed_permutation() {
        let a = gpqa_order("rec123");
        assert_eq!(a, gpqa_order("rec123"));
        let mut sorted = a;
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3]);
        // Over many ids the correct answer (index 3) lands on every letter.
        let mut seen = [0usize; 4];
        for k in 0..400 {
            let order = gpqa_order(&format!("rec{k}"));
            seen[order.iter().position(|&i| i == 3).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
    }

    #[test]
    fn mmlu_prompt_has_five_shots_and_the_question() {
        let row = |q: &str, a: &str| MmluRow {
            line: 1,
            question: q.into(),
            choices: vec!["w".into(), "x".into(), "y".into(), "z".into()],
            answer: a.into(),
        };
        let shots: Vec<MmluRow> = (0..5).map(|k| row(&format!("S{k}?"), "B")).collect();
        let p = mmlu_prompt("high_school_physics", &shots, &row(" Q? ", "C"));
        assert!(p.starts_with(
            "The following are multiple choice questions (with answers) about high school physics.\n\nS0?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\nS1?"
        ));
        assert!(p.ends_with("\n\nQ?\nA. w\nB. x\nC. y\nD. z\nAnswer:"));
        assert_eq!(p.matches("Answer: B").count(), 5);
    }
}
