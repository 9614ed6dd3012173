//! GRPO rewards (verifier + format penalty, parallel with timeouts) and the prompt mixture.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metis_train::grpo::prompts::LoadOptions;
use metis_train::grpo::{
    compute_reward, compute_rewards, PromptMixture, PromptSampler, RewardConfig, RewardJob,
    RewardKind, TaskWeights,
};
use metis_verify::cvss::Version;
use metis_verify::format::FormatPolicy;
use metis_verify::verifier::default_verifier;
use metis_verify::{Gold, GoldError, Task, ThinkStatus, Verdict, Verifier, VerifyOptions};

const REASONING: &str = "The description mentions a crafted URL parameter reflected into the \
    page without encoding, which is the classic reflected cross-site scripting pattern.";

fn good(answer: &str) -> String {
    format!("<think>\n{REASONING}\n</think>\n\n{answer}")
}

fn job(task: Task, gold: &str, kind: RewardKind, completion: &str) -> RewardJob {
    let verifier: Arc<dyn Verifier> = Arc::from(default_verifier(task, VerifyOptions::default()));
    let gold = Arc::new(verifier.parse_gold(gold).unwrap());
    RewardJob {
        verifier,
        gold,
        kind,
        completion: completion.to_owned(),
    }
}

#[test]
fn breakdown_reports_each_part() {
    let fmt = FormatPolicy::default();
    let ok = compute_reward(
        &job(Task::Mcq, "C", RewardKind::Binary, &good("Answer: C")),
        &fmt,
    );
    assert_eq!((ok.verifier, ok.format_penalty, ok.total), (1.0, 0.0, 1.0));
    assert!(ok.correct && !ok.invalid && !ok.format_violation && !ok.timed_out);

    // Right answer, no reasoning: the format penalty takes the reward away.
    let lazy = compute_reward(&job(Task::Mcq, "C", RewardKind::Binary, "Answer: C"), &fmt);
    assert_eq!(
        (lazy.verifier, lazy.format_penalty, lazy.total),
        (1.0, 1.0, 0.0)
    );
    assert!(lazy.format_violation && !lazy.invalid);
    assert!(lazy.format_reasons[0].contains("no reasoning block"));

    let wrong = compute_reward(
        &job(Task::Mcq, "C", RewardKind::Binary, &good("Answer: B")),
        &fmt,
    );
    assert_eq!(wrong.total, 0.0);
    assert!(!wrong.correct && !wrong.invalid);

    let cut = compute_reward(
        &job(Task::Mcq, "C", RewardKind::Binary, "<think>never ends"),
        &fmt,
    );
    assert!(cut.invalid && cut.format_violation);
    assert_eq!(cut.total, -1.0);

    // Graded CVSS: 8.8 against 9.8 scores 0.9; binary would be 0.
    let gold = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
    let near = good("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H");
    let graded = compute_reward(&job(Task::Cvss, gold, RewardKind::Graded, &near), &fmt);
    assert!((graded.verifier - 0.9).abs() < 1e-12 && !graded.correct);
    let binary = compute_reward(&job(Task::Cvss, gold, RewardKind::Binary, &near), &fmt);
    assert_eq!(binary.verifier, 0.0);

    // No format penalty configured: only the verifier counts.
    let off = FormatPolicy {
        penalty: 0.0,
        ..FormatPolicy::default()
    };
    let lazy = compute_reward(&job(Task::Mcq, "C", RewardKind::Binary, "Answer: C"), &off);
    assert_eq!(lazy.total, 1.0);
    assert!(lazy.format_violation);
}

#[test]
fn prefilled_think_is_graded_as_written() {
    let fmt = FormatPolicy {
        prefilled_open: true,
        ..FormatPolicy::default()
    };
    let completion = format!("{REASONING}\n</think>\n\nCWE-79");
    let r = compute_reward(
        &job(Task::Cwe, "CWE-79", RewardKind::Binary, &completion),
        &fmt,
    );
    assert_eq!((r.verifier, r.format_penalty, r.total), (1.0, 0.0, 1.0));
}

#[test]
fn parallel_batch_equals_sequential() {
    let cfg = RewardConfig {
        workers: 3,
        ..RewardConfig::default()
    };
    let jobs: Vec<RewardJob> = (0..10)
        .map(|i| {
            let letter = ["A", "B", "C", "D"][i % 4];
            let completion = if i % 3 == 0 {
                format!("Answer: {letter}")
            } else {
                good(&format!("Answer: {letter}"))
            };
            job(Task::Mcq, "B", RewardKind::Binary, &completion)
        })
        .collect();
    let summary = compute_rewards(&jobs, &cfg);
    assert_eq!(summary.rewards.len(), jobs.len());
    assert_eq!((summary.timed_out, summary.failed), (0, 0));
    for (j, r) in jobs.iter().zip(&summary.rewards) {
        assert_eq!(*r, compute_reward(j, &cfg.format));
    }
    assert_eq!(summary.totals()[1], 1.0);
    assert!(compute_rewards(&[], &cfg).rewards.is_empty());
}

/// An MCQ verifier that takes `delay` on answers containing "SLOW" and panics on "BOOM".
struct Pathological {
    inner: Box<dyn Verifier>,
    delay: Duration,
}

impl Verifier for Pathological {
    fn task(&self) -> Task {
        self.inner.task()
    }
    fn options(&self) -> &VerifyOptions {
        self.inner.options()
    }
    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        self.inner.parse_gold(gold)
    }
    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        if answer.contains("SLOW") {
            std::thread::sleep(self.delay);
        }
        if answer.contains("BOOM") {
            panic!("regex exploded");
        }
        self.inner.verify_answer(answer, think, gold)
    }
}

fn pathological_jobs(completions: &[String]) -> Vec<RewardJob> {
    let verifier: Arc<dyn Verifier> = Arc::new(Pathological {
        inner: default_verifier(Task::Mcq, VerifyOptions::default()),
        delay: Duration::from_secs(5),
    });
    let gold = Arc::new(verifier.parse_gold("B").unwrap());
    completions
        .iter()
        .map(|c| RewardJob {
            verifier: Arc::clone(&verifier),
            gold: Arc::clone(&gold),
            kind: RewardKind::Binary,
            completion: c.clone(),
        })
        .collect()
}

#[test]
fn slow_verifier_calls_time_out_and_the_step_returns_on_time() {
    let jobs = pathological_jobs(&[
        good("Answer: B"),
        good("SLOW\nAnswer: B"),
        good("Answer: A"),
        good("SLOW\nAnswer: B"),
        good("Answer: B"),
        good("SLOW\nAnswer: B"),
        good("Answer: B"),
    ]);
    let cfg = RewardConfig {
        timeout: Duration::from_millis(300),
        workers: 2,
        ..RewardConfig::default()
    };
    let start = Instant::now();
    let summary = compute_rewards(&jobs, &cfg);
    let elapsed = start.elapsed();
    // Three 5 s calls, two at a time: about two timeouts, nowhere near the 15 s they take.
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    assert_eq!((summary.timed_out, summary.failed), (3, 0));
    assert!(summary.abandoned >= 1, "abandoned calls are still sleeping");
    assert_eq!(summary.totals(), vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    for i in [1, 3, 5] {
        let r = &summary.rewards[i];
        assert!(r.timed_out && r.invalid && r.error.is_none(), "{i}: {r:?}");
        assert_eq!((r.verifier, r.format_penalty, r.total), (0.0, 0.0, 0.0));
    }
    assert!(!summary.rewards[2].timed_out && !summary.rewards[2].correct);
}

#[test]
fn panicking_verifier_is_reported_not_fatal() {
    let jobs = pathological_jobs(&[good("Answer: B"), good("BOOM\nAnswer: B")]);
    let cfg = RewardConfig {
        timeout: Duration::from_secs(30),
        ..RewardConfig::default()
    };
    let summary = compute_rewards(&jobs, &cfg);
    assert_eq!((summary.timed_out, summary.failed), (0, 1));
    assert_eq!(summary.totals(), vec![1.0, 0.0]);
    let boom = &summary.rewards[1];
    assert!(boom.invalid && !boom.timed_out);
    assert!(boom.error.as_deref().unwrap().contains("regex exploded"));
}

// ---------------------------------------------------------------------------------------------

const MIXTURE: &str = r#"{"id": "m1", "task": "mcq", "gold": "B", "messages": [{"role": "user", "content": "Q1? A) x B) y C) z D) w"}]}
{"id": "m2", "task": "mcq", "gold": ["A", "C"], "verifier": {"multi": true, "choices": 5}, "messages": [{"role": "user", "content": "Q2"}]}

{"id": "v1", "task": "cvss", "gold": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "messages": [{"role": "system", "content": "You score CVEs."}, {"role": "user", "content": "CVE-1"}], "source": "ctibench"}
{"id": 7, "task": "cwe", "gold": "CWE-79", "verifier": {"protocol": "faith", "reward": "binary"}, "messages": [{"role": "user", "content": "CVE-2"}]}
{"task": "attack", "gold": ["T1059", "T1071"], "messages": [{"role": "user", "content": "report"}]}
{"id": "v2", "task": "cvss", "gold": "AV:N/AC:L/Au:N/C:P/I:P/A:P", "verifier": {"cvss_version": "2.0", "reward": "binary"}, "messages": [{"role": "user", "content": "CVE-3"}]}
"#;

fn load(text: &str) -> Result<PromptMixture, metis_train::grpo::PromptError> {
    let opts = LoadOptions {
        rewards: BTreeMap::from([(Task::Cvss, RewardKind::Graded)]),
        ..LoadOptions::default()
    };
    PromptMixture::from_reader("mix.jsonl", Cursor::new(text), &opts)
}

#[test]
fn mixture_loads_records_with_their_verifiers() {
    let mix = load(MIXTURE).unwrap();
    assert_eq!(mix.len(), 6);
    let ids: Vec<&str> = mix.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "v1", "7", "line-6", "v2"]);
    let counts = mix.task_counts();
    assert_eq!(counts[&Task::Mcq], 2);
    assert_eq!(counts[&Task::Cvss], 2);
    let v1 = &mix.records[2];
    assert_eq!(v1.line, 4);
    assert_eq!(v1.messages.len(), 2);
    assert_eq!(v1.reward, RewardKind::Graded, "per-task default");
    assert_eq!(mix.records[5].reward, RewardKind::Binary, "record override");

    // Multi-answer MCQ with five options: the record's verifier grades the exact set.
    let m2 = &mix.records[1];
    let fmt = FormatPolicy::default();
    let r = compute_reward(&m2.reward_job(good("Answer: A, C")), &fmt);
    assert_eq!(r.total, 1.0);
    // CVSS v2 record: its unprefixed gold is read as v2 (the default verifier reads v3.1).
    let v2 = &mix.records[5];
    assert!(matches!(&*v2.gold, Gold::Cvss(v) if v.version() == Version::V2_0));
    let r = compute_reward(&mix.records[4].reward_job(good("T1071, T1059")), &fmt);
    assert!(r.correct);
}

#[test]
fn bad_records_name_file_line_and_field() {
    let msg = |text: &str| load(text).unwrap_err().to_string();
    let user = r#""messages": [{"role": "user", "content": "q"}]"#;
    let ok = format!(r#"{{"task": "mcq", "gold": "A", {user}}}"#);

    let e = msg(&format!("{ok}\n{{\"task\": \"mcq\", \"gold\": \"A\"\n"));
    assert!(e.starts_with("mix.jsonl:2: bad JSON"), "{e}");
    let e = msg(&format!("{ok}\n\n{{\"task\": \"mcq\", \"gold\": \"A\"}}"));
    assert_eq!(e, "mix.jsonl:3: field \"messages\": missing");
    let e = msg(r#"{"task": "mcq", "gold": "A", "messages": []}"#);
    assert_eq!(e, "mix.jsonl:1: field \"messages\": must not be empty");
    let e = msg(r#"{"task": "mcq", "gold": "A", "messages": [{"role": "user"}]}"#);
    assert!(
        e.starts_with("mix.jsonl:1: field \"messages\": must be an array"),
        "{e}"
    );
    // (`math` became a task with issue 12; an unknown task is still refused by name.)
    let e = msg(&format!(r#"{{"task": "chess", "gold": "4", {user}}}"#));
    assert!(
        e.starts_with("mix.jsonl:1: field \"task\": unknown task \"chess\""),
        "{e}"
    );
    let e = msg(&format!(r#"{{"gold": "4", {user}}}"#));
    assert_eq!(e, "mix.jsonl:1: field \"task\": missing");
    let e = msg(&format!(r#"{{"task": "mcq", {user}}}"#));
    assert_eq!(e, "mix.jsonl:1: field \"gold\": missing");
    let e = msg(&format!(r#"{{"task": "mcq", "gold": "E", {user}}}"#));
    assert!(
        e.starts_with("mix.jsonl:1: field \"gold\": bad gold answer for mcq"),
        "{e}"
    );
    let e = msg(&format!(r#"{{"task": "cwe", "gold": "XSS", {user}}}"#));
    assert!(e.starts_with("mix.jsonl:1: field \"gold\""), "{e}");
    let e = msg(&format!(r#"{{"task": "cvss", "gold": 9.8, {user}}}"#));
    assert!(e.starts_with("mix.jsonl:1: field \"gold\""), "{e}");
    let e = msg(&format!(
        r#"{{"task": "mcq", "gold": "A", "verifier": {{"protocl": "faith"}}, {user}}}"#
    ));
    assert!(
        e.starts_with("mix.jsonl:1: field \"verifier\": unknown field"),
        "{e}"
    );
    let e = msg(&format!(
        r#"{{"task": "mcq", "gold": "A", "verifier": {{"reward": "partial"}}, {user}}}"#
    ));
    assert!(
        e.starts_with("mix.jsonl:1: field \"verifier.reward\""),
        "{e}"
    );
    let e = msg(&format!(
        r#"{{"task": "cwe", "gold": "CWE-79", "verifier": {{"cvss_version": "3.0"}}, {user}}}"#
    ));
    assert!(
        e.starts_with("mix.jsonl:1: field \"verifier.cvss_version\""),
        "{e}"
    );
    let e = msg(&format!(
        r#"{{"id": "a", "task": "mcq", "gold": "A", {user}}}
{{"id": "a", "task": "mcq", "gold": "B", {user}}}"#
    ));
    assert_eq!(e, "mix.jsonl:2: field \"id\": duplicate id \"a\"");
    assert_eq!(msg("\n\n"), "mix.jsonl: no prompts");
    let e = PromptMixture::load(
        std::path::Path::new("/nonexistent/mix.jsonl"),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("/nonexistent/mix.jsonl: cannot open"), "{e}");
}

#[test]
fn mixture_loads_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompts.jsonl");
    std::fs::write(&path, MIXTURE).unwrap();
    let mix = PromptMixture::load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(mix.len(), 6);
    assert_eq!(mix.source, path.display().to_string());
}

#[test]
fn task_weights_parse() {
    let w: TaskWeights = "mcq=2, cvss=1".parse().unwrap();
    assert_eq!(w.0, BTreeMap::from([(Task::Mcq, 2.0), (Task::Cvss, 1.0)]));
    assert_eq!(w.to_string(), "mcq=2,cvss=1");
    assert!("".parse::<TaskWeights>().unwrap().0.is_empty());
    for bad in [
        "mcq",
        "mcq=x",
        "chess=1",
        "mcq=-1",
        "mcq=1,mcq=2",
        "mcq=inf",
    ] {
        assert!(bad.parse::<TaskWeights>().is_err(), "{bad}");
    }
    // In a JSON config: a map, or the command-line text.
    let json = serde_json::to_string(&w).unwrap();
    assert_eq!(json, r#"{"mcq":2.0,"cvss":1.0}"#);
    assert_eq!(serde_json::from_str::<TaskWeights>(&json).unwrap(), w);
    assert_eq!(
        serde_json::from_str::<TaskWeights>(r#""mcq=2,cvss=1""#).unwrap(),
        w
    );
    assert!(serde_json::from_str::<TaskWeights>(r#"{"mcq": -1}"#).is_err());
    assert!(serde_json::from_str::<TaskWeights>(r#"{"chess": 1}"#).is_err());
}

fn big_mixture() -> PromptMixture {
    let mut text = String::new();
    for i in 0..40 {
        text += &format!(
            r#"{{"id": "m{i}", "task": "mcq", "gold": "A", "messages": [{{"role": "user", "content": "q"}}]}}"#
        );
        text.push('\n');
    }
    for i in 0..10 {
        text += &format!(
            r#"{{"id": "c{i}", "task": "cwe", "gold": "CWE-79", "messages": [{{"role": "user", "content": "q"}}]}}"#
        );
        text.push('\n');
    }
    load(&text).unwrap()
}

#[test]
fn sampler_is_deterministic_per_seed_and_step() {
    let mix = big_mixture();
    let w: TaskWeights = "mcq=1,cwe=1".parse().unwrap();
    let a = PromptSampler::new(&mix, &w, 42).unwrap();
    let b = PromptSampler::new(&mix, &w, 42).unwrap();
    // Resume: step 17 drawn fresh equals step 17 drawn after other steps.
    let direct = b.sample(17, 8);
    for step in 0..17 {
        a.sample(step, 8);
    }
    assert_eq!(a.sample(17, 8), direct);
    assert_ne!(a.sample(18, 8), direct);
    let other_seed = PromptSampler::new(&mix, &w, 43).unwrap();
    assert_ne!(other_seed.sample(17, 8), direct);
    // No prompt twice within a step while a task has prompts left.
    for step in 0..50 {
        let idx = a.sample(step, 8);
        let mcq: Vec<_> = idx.iter().filter(|&&i| i < 40).collect();
        let unique: std::collections::BTreeSet<_> = mcq.iter().collect();
        assert_eq!(unique.len(), mcq.len());
    }
    // More slots than a task has prompts: it cycles.
    let only_cwe = PromptSampler::new(&mix, &"cwe=1".parse().unwrap(), 1).unwrap();
    let idx = only_cwe.sample(0, 25);
    assert!(idx.iter().all(|&i| (40..50).contains(&i)));
    let records = only_cwe.sample_records(&mix, 0, 3);
    assert!(records.iter().all(|r| r.task == Task::Cwe));
}

#[test]
fn sampler_follows_task_weights() {
    let mix = big_mixture();
    let w: TaskWeights = "mcq=1,cwe=3".parse().unwrap();
    let s = PromptSampler::new(&mix, &w, 7).unwrap();
    assert_eq!(s.probabilities()[&Task::Cwe], 0.75);
    let draws: Vec<usize> = (0..2000).flat_map(|step| s.sample(step, 4)).collect();
    let cwe = draws.iter().filter(|&&i| i >= 40).count() as f64 / draws.len() as f64;
    assert!((cwe - 0.75).abs() < 0.02, "cwe share {cwe}");
    // Without weights every prompt is equally likely: mcq has 40 of 50.
    let uniform = PromptSampler::new(&mix, &TaskWeights::default(), 7).unwrap();
    assert_eq!(uniform.probabilities()[&Task::Mcq], 0.8);
    // Weighting a task the mixture lacks, or weighting nothing, is an error.
    let e = PromptSampler::new(&mix, &"cvss=1".parse().unwrap(), 7).unwrap_err();
    assert!(e.contains("no cvss prompts"), "{e}");
    assert!(PromptSampler::new(&mix, &"mcq=0".parse().unwrap(), 7).is_err());
}
