//! Eval/RL identity: for every task kind, the GRPO reward of a response equals the binary
//! reward of the verdict `metis eval` gives the same response for the same item.
//!
//! Each benchmark is exported as a GRPO prompt file (`metis eval export-prompts`), loaded by
//! the trainer's [`PromptMixture`] with the same data directory, and every generated response
//! is graded both ways. Responses are built per task from the item's gold: right and wrong
//! answers, ATT&CK sub-techniques of gold techniques and revoked ids, answers followed by a
//! closing remark (the lenient fallback), unclosed reasoning, empty answers and noise. A
//! record that names only its task (no `verifier` object) must be graded the same way too:
//! that is where the defaults used to disagree (ATT&CK sub-technique folding and the revoked
//! catalog).

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use metis_eval::benchmarks::{load, Benchmark, DataSource};
use metis_eval::samples::prompt_record;
use metis_train::grpo::prompts::LoadOptions;
use metis_train::grpo::{compute_reward, PromptMixture};
use metis_verify::format::FormatPolicy;
use metis_verify::Protocol;
use proptest::prelude::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");
const CASES: u32 = 2_000;

struct Pair {
    bench: Benchmark,
    /// The benchmark exported with each item's spec.
    exported: PromptMixture,
    /// The same items as records naming only their task (`None` where such records cannot
    /// load: SecEval's multi-letter golds need the benchmark's `multi`).
    bare: Option<PromptMixture>,
    /// Revoked ATT&CK ids of the catalog (for generated answers).
    revoked: Vec<String>,
}

fn pair(id: &'static str) -> &'static Pair {
    static PAIRS: OnceLock<std::sync::Mutex<Vec<(&'static str, &'static Pair)>>> = OnceLock::new();
    let pairs = PAIRS.get_or_init(Default::default);
    let mut guard = pairs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = guard.iter().find(|(k, _)| *k == id) {
        return p;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bench = rt
        .block_on(load(
            id,
            &DataSource::Dir(PathBuf::from(DATA)),
            Protocol::LastLine,
        ))
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    let mut exported = String::new();
    let mut bare = String::new();
    for item in &bench.items {
        let rec = prompt_record(&bench, item);
        exported.push_str(&format!("{rec}\n"));
        let mut plain = rec.clone();
        plain.as_object_mut().unwrap().remove("verifier");
        bare.push_str(&format!("{plain}\n"));
    }
    let opts = LoadOptions {
        data_dir: Some(PathBuf::from(DATA)),
        ..LoadOptions::default()
    };
    let exported = PromptMixture::from_reader(id, Cursor::new(exported), &opts).unwrap();
    let bare = PromptMixture::from_reader(id, Cursor::new(bare), &opts).ok();
    let revoked = std::fs::read_to_string(format!(
        "{DATA}/attack/enterprise-attack-v15.1-revoked-map.tsv"
    ))
    .unwrap()
    .lines()
    .skip(1)
    .filter_map(|l| l.split('\t').next().map(str::to_owned))
    .collect();
    let p: &'static Pair = Box::leak(Box::new(Pair {
        bench,
        exported,
        bare,
        revoked,
    }));
    guard.push((id, p));
    p
}

/// A tiny deterministic generator for building responses from a proptest seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// The answer text an item's gold suggests, in one of several spellings, right or wrong.
fn answer_for(task: &str, gold: &str, g: &mut Gen, pair: &Pair) -> String {
    match task {
        "mcq" => {
            let letter = if g.below(2) == 0 {
                gold.to_owned()
            } else {
                g.pick(&["A", "B", "C", "D", "E", "A, C"]).to_owned()
            };
            match g.below(4) {
                0 => format!("Answer: {letter}"),
                1 => format!("The correct answer is {letter}."),
                2 => letter.to_lowercase(),
                _ => format!("({letter})"),
            }
        }
        "cwe" => {
            let n: u32 = gold.trim_start_matches("CWE-").parse().unwrap_or(79);
            let id = match g.below(4) {
                0 | 1 => n,
                2 => n + 1 + g.below(50) as u32,
                _ => [20, 74, 664, 707, 119][g.below(5)],
            };
            match g.below(3) {
                0 => format!("CWE-{id}"),
                1 => format!("The weakness is CWE-{id}"),
                _ => format!("cwe-{id}"),
            }
        }
        "cvss" => {
            let mut v = gold.to_owned();
            if g.below(2) == 0 {
                let swaps = [
                    ("AV:N", "AV:L"),
                    ("AC:L", "AC:H"),
                    ("PR:N", "PR:H"),
                    ("C:H", "C:L"),
                ];
                let (a, b) = swaps[g.below(swaps.len())];
                v = v.replacen(a, b, 1);
            }
            if g.below(3) == 0 {
                v = v.trim_start_matches("CVSS:3.1/").to_owned();
            }
            v
        }
        "attack" => {
            let mut ids: Vec<String> = gold.split(',').map(|s| s.trim().to_owned()).collect();
            for id in ids.iter_mut() {
                match g.below(5) {
                    0 if !id.contains('.') => id.push_str(&format!(".{:03}", 1 + g.below(9))),
                    1 => *id = pair.revoked[g.below(pair.revoked.len())].clone(),
                    _ => {}
                }
            }
            if g.below(3) == 0 {
                ids.push(format!("T1{:03}", g.below(700)));
            }
            if g.below(4) == 0 {
                ids.truncate(1);
            }
            format!("Answer: {}", ids.join(", "))
        }
        "math" => {
            let n: f64 = gold.replace(',', "").parse().unwrap_or(0.0);
            let value = if g.below(2) == 0 {
                gold.to_owned()
            } else {
                format!("{}", n + 1.0 + g.below(5) as f64)
            };
            match g.below(5) {
                0 => format!("\\boxed{{{value}}}"),
                1 => format!("The answer is {value}."),
                2 => format!("#### {value}"),
                3 => format!("So she makes ${value} every day."),
                _ => value,
            }
        }
        "taa" => {
            let name = match g.below(6) {
                0 | 1 => gold.trim().to_owned(),
                2 => gold.trim().to_uppercase().replace(' ', "-"),
                3 => "Lazarus Group".to_owned(),
                4 => "Transparent Tribe".to_owned(),
                _ => "APT28 or Turla".to_owned(),
            };
            match g.below(3) {
                0 => format!("Threat actor: {name}"),
                1 => format!("**{name}**"),
                _ => name,
            }
        }
        _ => ifeval_text(g),
    }
}

/// A response made of pieces IFEval's checkers look at.
fn ifeval_text(g: &mut Gen) -> String {
    let pieces = [
        "Hello world, this is a short answer.",
        "THIS IS ALL CAPITALS",
        "all lower case words here",
        "* first bullet\n* second bullet",
        "- dash bullet",
        "<<A Title>>",
        "*highlighted section*",
        "**bold part**",
        "SECTION 1\nSome text.",
        "******",
        "P.S. one more thing",
        "{\"key\": \"value\"}",
        "```json\n{\"a\": 1}\n```",
        "\"quoted answer\"",
        "My answer is yes.",
        "Any other questions?",
        "[placeholder] and [address]",
        "\n\n",
        "***",
        "Ceci est une réponse en français.",
        "The quick brown fox jumps over the lazy dog. Again and again.",
    ];
    let n = 1 + g.below(6);
    (0..n)
        .map(|_| g.pick(&pieces))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A whole response around an answer: reasoning, closing remarks, truncation, noise.
fn response(answer: &str, g: &mut Gen) -> String {
    let think = "<think>\nLet me reason about the question step by step.\n</think>\n\n";
    match g.below(9) {
        0 => format!("{think}{answer}"),
        1 => format!("{think}{answer}\nThis entry covers the described issue."),
        2 => format!("{think}Some analysis first.\n{answer}"),
        3 => "<think>\nThe reasoning never ends".to_owned(),
        4 => think.to_owned(),
        5 => answer.to_owned(),
        6 => format!("{think}{answer}\n\n{answer}"),
        7 => format!("{think}I am not sure.\n{answer} or maybe not."),
        _ => format!("<think>x</think>{answer}</think>"),
    }
}

fn check_identity(bench_id: &'static str, seed: u64, pick: usize) -> Result<(), TestCaseError> {
    let p = pair(bench_id);
    let i = pick % p.bench.items.len();
    let item = &p.bench.items[i];
    let task = p.bench.spec.task.name();
    let mut g = Gen(seed);
    let text = response(&answer_for(task, &item.gold, &mut g, p), &mut g);

    let verdict = p
        .bench
        .verifier(item)
        .grade(&text, &item.gold)
        .expect("loader-validated gold");
    let no_penalty = FormatPolicy {
        penalty: 0.0,
        ..FormatPolicy::default()
    };
    let spec = p.bench.verifier_spec(item);
    prop_assert_eq!(&p.exported.records[i].spec, &spec, "exported spec");
    let mixtures = [("exported", Some(&p.exported)), ("bare", p.bare.as_ref())];
    for (name, mixture) in mixtures.into_iter().filter_map(|(n, m)| Some((n, m?))) {
        let record = &mixture.records[i];
        // A bare record cannot know what only the benchmark declares (a mobile item's
        // catalog, SecEval's multi-answer): there the specs differ, by design.
        if record.spec != spec {
            continue;
        }
        let reward = compute_reward(&record.reward_job(text.clone()), &no_penalty);
        prop_assert_eq!(
            reward.verifier,
            verdict.binary_reward(),
            "{} {} item {} response {:?}: reward {:?} vs verdict {:?}",
            bench_id,
            name,
            item.id,
            text,
            reward,
            verdict
        );
        prop_assert_eq!(reward.correct, verdict.correct);
        prop_assert_eq!(reward.invalid, !verdict.is_valid());
    }
    Ok(())
}

macro_rules! identity_test {
    ($name:ident, $bench:literal) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]
            #[test]
            fn $name(seed in any::<u64>(), pick in any::<usize>()) {
                check_identity($bench, seed, pick)?;
            }
        }
    };
}

identity_test!(mcq_reward_equals_eval_verdict, "ctibench-mcqa");
identity_test!(multi_answer_mcq_reward_equals_eval_verdict, "seceval");
identity_test!(cwe_reward_equals_eval_verdict, "ctibench-rcm");
identity_test!(cvss_reward_equals_eval_verdict, "ctibench-vsp");
identity_test!(attack_reward_equals_eval_verdict, "ctibench-ate");
identity_test!(taa_reward_equals_eval_verdict, "ctibench-taa");
identity_test!(ifeval_reward_equals_eval_verdict, "ifeval");
identity_test!(math_reward_equals_eval_verdict, "gsm8k");

/// The case the issue names: a predicted sub-technique of a parent-level gold, and a revoked
/// id, get the same reward as their CTIBench-ATE grade — from a record naming only its task.
#[test]
fn attack_subtechnique_and_revoked_ids_agree() {
    let p = pair("ctibench-ate");
    let (i, item) = p
        .bench
        .items
        .iter()
        .enumerate()
        .find(|(_, it)| it.subject.as_deref() == Some("Enterprise") && !it.gold.contains(','))
        .expect("a single-technique enterprise item");
    let sub = format!("<think>r</think>Answer: {}.001", item.gold.trim());
    let verdict = p.bench.verifier(item).grade(&sub, &item.gold).unwrap();
    assert!(
        verdict.correct,
        "sub-technique folds to its parent: {verdict:?}"
    );
    let reward = compute_reward(
        &p.bare.as_ref().unwrap().records[i].reward_job(sub.clone()),
        &FormatPolicy {
            penalty: 0.0,
            ..FormatPolicy::default()
        },
    );
    assert_eq!(reward.verifier, 1.0, "bare attack record folds too");
    assert_eq!(
        p.bare.as_ref().unwrap().records[i].spec,
        p.bench.verifier_spec(item),
        "same defaults"
    );
    // T1002 (revoked) was replaced by T1560.
    let spec = p.bench.verifier_spec(item);
    let mut factory = metis_verify::VerifierFactory::new(Some(std::path::Path::new(DATA)));
    let v = factory.build(&spec).unwrap();
    let revoked = v.grade("<think>r</think>Answer: T1002", "T1560").unwrap();
    assert!(revoked.correct, "{revoked:?}");
}
