//! The HumanEval verifier on the real problems (`shared/data/humaneval/HumanEval.jsonl.gz`):
//! every canonical solution, written as a reasoning model would answer (a think block, then a
//! fenced block), passes both as a body completion and as a whole function (pass@1 = 100 %);
//! `return None` bodies pass nowhere (0 %). The samples run on a few worker threads.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use metis_verify::verifier::aggregate;
use metis_verify::{Task, Verdict, Verifier, VerifierFactory, VerifierSpec};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/humaneval/HumanEval.jsonl.gz"
);

/// Workers grading side by side (each sample is one Python process).
const WORKERS: usize = 4;

struct Problem {
    task_id: String,
    prompt: String,
    canonical: String,
    entry_point: String,
    /// The gold as the verifier reads it.
    gold: String,
}

fn problems() -> Vec<Problem> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(DATA).expect("shared HumanEval data"))
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| row[k].as_str().unwrap().to_owned();
            let gold = serde_json::json!({
                "task_id": row["task_id"],
                "prompt": row["prompt"],
                "test": row["test"],
                "entry_point": row["entry_point"],
            });
            Problem {
                task_id: field("task_id"),
                prompt: field("prompt"),
                canonical: field("canonical_solution"),
                entry_point: field("entry_point"),
                gold: gold.to_string(),
            }
        })
        .collect()
}

/// The canonical solution as a whole function: the prompt from its `def` line on (signature
/// and docstring, without the imports before it), then the body.
fn whole_function(p: &Problem) -> String {
    let def = format!("def {}(", p.entry_point);
    let start = p
        .prompt
        .match_indices(&def)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || p.prompt[..i].ends_with('\n'))
        .unwrap_or_else(|| panic!("{}: no top-level def", p.task_id));
    format!("{}{}", &p.prompt[start..], p.canonical)
}

fn answer(code: &str) -> String {
    format!(
        "<think>\nLet me write the function.\n</think>\n\nHere it is:\n\n```python\n{code}```\n"
    )
}

/// Grades `(problem index, response)` pairs on [`WORKERS`] threads, in input order.
fn grade_all(
    verifier: &dyn Verifier,
    problems: &[Problem],
    jobs: &[(usize, String)],
) -> Vec<Verdict> {
    let next = AtomicUsize::new(0);
    let mut graded: Vec<(usize, Verdict)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((p, response)) = jobs.get(i) else {
                            return out;
                        };
                        let verdict = verifier
                            .grade(response, &problems[*p].gold)
                            .unwrap_or_else(|e| panic!("{}: {e}", problems[*p].task_id));
                        out.push((i, verdict));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    graded.sort_by_key(|(i, _)| *i);
    graded.into_iter().map(|(_, v)| v).collect()
}

#[test]
fn canonical_solutions_pass_and_empty_bodies_fail() {
    let problems = problems();
    assert_eq!(problems.len(), 164);
    let verifier = VerifierFactory::new(None)
        .build(&VerifierSpec::for_task(Task::Code))
        .unwrap_or_else(|e| panic!("this machine must support the sandbox: {e}"));
    let mut jobs = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        jobs.push((i, answer(&p.canonical)));
        jobs.push((i, answer(&whole_function(p))));
        jobs.push((i, answer("    return None\n")));
    }
    let started = Instant::now();
    let verdicts = grade_all(&*verifier, &problems, &jobs);
    eprintln!(
        "{} HumanEval samples graded in {:.1?} on {WORKERS} workers",
        jobs.len(),
        started.elapsed()
    );

    let (mut body, mut function, mut none) = (Vec::new(), Vec::new(), Vec::new());
    for (chunk, p) in verdicts.chunks(3).zip(&problems) {
        let [b, f, n] = chunk else { unreachable!() };
        assert!(b.correct, "{} body: {:?}", p.task_id, b.reasons);
        assert!(f.correct, "{} function: {:?}", p.task_id, f.reasons);
        assert!(
            !n.correct,
            "{} `return None` passed: {:?}",
            p.task_id, n.reasons
        );
        assert!(b.reasons.iter().any(|r| r.starts_with("interpreter: ")));
        assert!(
            n.reasons.iter().any(|r| r.starts_with("failed: ")),
            "{:?}",
            n.reasons
        );
        body.push(b.clone());
        function.push(f.clone());
        none.push(n.clone());
    }
    assert_eq!(
        aggregate(&body)["passed"],
        1.0,
        "pass@1 of canonical bodies"
    );
    assert_eq!(
        aggregate(&function)["passed"],
        1.0,
        "pass@1 of canonical functions"
    );
    assert_eq!(aggregate(&none)["passed"], 0.0, "pass@1 of `return None`");
    assert_eq!(aggregate(&none)["timed_out"], 0.0);
}
