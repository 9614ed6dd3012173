//! End-to-end tests of the `metis` binary's verifier commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn metis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_metis"))
}

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start metis");
    // Write from another thread: the child's output may fill its pipe before it has read
    // all of its input.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("metis output");
    writer.join().expect("writer thread").expect("write stdin");
    out
}

fn num(cell: &str) -> Option<f64> {
    (!cell.is_empty()).then(|| cell.parse().expect("number"))
}

#[test]
fn cvss_json_bulk_matches_every_reference_vector() {
    let tsv = std::fs::read_to_string(data_dir().join("cvss/cvss-test-vectors.tsv"))
        .expect("reference vectors");
    let rows: Vec<Vec<&str>> = tsv
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 7667);
    // A bad vector in the middle must not stop the run.
    let mut input: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    input.insert(100, "CVSS:3.1/AV:Q");
    let mut cmd = metis();
    cmd.args(["cvss", "--json"]);
    let out = run_with_stdin(cmd, &(input.join("\n") + "\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), input.len());
    assert_eq!(lines[100]["vector"], "CVSS:3.1/AV:Q");
    assert!(lines[100]["error"].as_str().unwrap().contains("AV"));
    let scored: Vec<&serde_json::Value> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 100)
        .map(|(_, l)| l)
        .collect();
    let mut mismatches = 0;
    for (row, got) in rows.iter().zip(scored) {
        assert_eq!(got["vector"], row[2]);
        assert_eq!(got["version"], row[1]);
        let base = got["base"].as_f64();
        if base != num(row[3]) {
            mismatches += 1;
        }
        // Temporal/environmental are given exactly when the vector has such metrics; when
        // given they equal the reference.
        for (field, col) in [("temporal", 4), ("environmental", 5)] {
            if let Some(x) = got[field].as_f64() {
                assert_eq!(Some(x), num(row[col]), "{} {field}", row[2]);
            }
        }
        let sev = got["severity"].as_str().unwrap();
        assert!(["None", "Low", "Medium", "High", "Critical"].contains(&sev));
    }
    assert_eq!(mismatches, 0);
}

#[test]
fn cvss_null_groups_and_human_output() {
    let out = metis()
        .args([
            "cvss",
            "--json",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "AV:N/AC:L/Au:N/C:C/I:C/A:C/E:F/RL:OF/RC:C",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let l: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(l[0]["base"], 9.8);
    assert!(l[0]["temporal"].is_null() && l[0]["environmental"].is_null());
    assert_eq!(l[0]["severity"], "Critical");
    assert_eq!(l[1]["version"], "2.0");
    assert_eq!(l[1]["base"], 10.0);
    assert!(l[1]["temporal"].is_number() && l[1]["environmental"].is_null());

    let human = metis().args(["cvss", "nonsense"]).output().unwrap();
    assert!(human.status.success());
    assert!(String::from_utf8_lossy(&human.stdout).contains("error:"));
}

#[test]
fn usage_errors_exit_non_zero() {
    let out = metis().args(["cvss", "--no-such-flag"]).output().unwrap();
    assert!(!out.status.success());
    let out = metis()
        .args(["score", "--task", "nope", "--gold", "B", "--response", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn score_grades_a_response() {
    let dir = std::env::temp_dir().join(format!("metis-cli-score-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("response.txt");
    std::fs::write(
        &file,
        "<think>\nReflected input in a page without encoding is cross-site scripting.\n</think>\nCWE\u{2011}79",
    )
    .unwrap();
    let out = metis()
        .args([
            "score",
            "--task",
            "cwe",
            "--gold",
            "CWE-79",
            "--json",
            "--response",
        ])
        .arg(&file)
        .arg("--data-dir")
        .arg(data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["correct"], true);
    assert_eq!(v["verdict"]["extracted"], "CWE-79");
    assert_eq!(v["verdict"]["metrics"]["hierarchy_accuracy"], 1.0);
    assert_eq!(v["format"]["penalty"], 0.0);

    // From stdin, a wrong MCQ answer, human-readable.
    let mut cmd = metis();
    cmd.args(["score", "--task", "mcq", "--gold", "C", "--response", "-"]);
    let out = run_with_stdin(cmd, "Answer: **B**");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("extracted:  B"), "{text}");
    assert!(text.contains("correct:    false"), "{text}");
    assert!(
        text.contains("missing reasoning") || text.contains("no reasoning block"),
        "{text}"
    );

    // A bad gold answer is an error naming the problem.
    let mut cmd = metis();
    cmd.args([
        "score",
        "--task",
        "cvss",
        "--gold",
        "CVSS:3.1/AV:Z",
        "--response",
        "-",
    ]);
    let out = run_with_stdin(cmd, "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad gold answer"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `metis eval export-prompts` writes one GRPO record per item, each with the item's verifier
/// spec; `metis eval samples` streams every stored response graded, and a closed stdout ends
/// either quietly.
#[test]
fn export_prompts_and_per_sample_results() {
    let dir = tempfile_dir("export-samples");
    let prompts = dir.join("ate.jsonl");
    let out = metis()
        .args(["eval", "export-prompts", "ctibench-ate", "-o"])
        .arg(&prompts)
        .arg("--data-dir")
        .arg(data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&prompts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 60);
    let first = &records[0];
    assert_eq!(first["task"], "attack");
    assert_eq!(first["verifier"]["credit_parent"], true);
    assert!(first["verifier"]["attack_catalog"]
        .as_str()
        .unwrap()
        .ends_with("-v15.1"));

    // Answers for two GSM8K items, imported into a store, then exported per sample.
    let answers = dir.join("answers.jsonl");
    std::fs::write(
        &answers,
        concat!(
            r#"{"benchmark": "gsm8k", "item": "0", "trial": 0, "response": "9 eggs * $2\n#### 18", "reasoning": "16-3-4=9", "model": "m"}"#,
            "\n",
            r#"{"benchmark": "gsm8k", "item": "1", "trial": 0, "response": "The answer is 4.", "model": "m"}"#,
            "\n"
        ),
    )
    .unwrap();
    let store = dir.join("store.sqlite");
    let out = metis()
        .args(["eval", "--responses"])
        .arg(&answers)
        .arg("--store")
        .arg(&store)
        .arg("--data-dir")
        .arg(data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = metis()
        .args(["eval", "samples", "gsm8k", "--model", "m", "--store"])
        .arg(&store)
        .arg("--data-dir")
        .arg(data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0]["item"], "0");
    assert_eq!(samples[0]["correct"], true);
    assert_eq!(samples[0]["extracted"], "18");
    assert_eq!(samples[0]["reasoning"], "16-3-4=9");
    assert_eq!(samples[1]["correct"], false, "gold 3, answered 4");
    assert_eq!(samples[1]["valid"], true);
    assert!(samples[1]["prompt"].as_str().unwrap().contains("####"));

    // A reader that stops after one line: no error, no broken-pipe message.
    let mut child = metis()
        .args(["eval", "export-prompts", "gsm8k", "--data-dir"])
        .arg(data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first_bytes = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first_bytes).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metis-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Hostile input as a new user might pipe it: 5 MB of random bytes give one error object per
/// input line (none for valid lines is lost), and a closed stdout ends the command quietly.
#[test]
fn cvss_survives_random_bytes_and_a_closed_pipe() {
    // SplitMix64: deterministic "random" bytes with newlines here and there.
    let mut state = 0x5eed_u64;
    let mut bytes = Vec::with_capacity(5 << 20);
    while bytes.len() < 5 << 20 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.extend_from_slice(b"\nCVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n");
    let lines_in = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let mut child = metis()
        .args(["cvss", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("output is UTF-8");
    let objects: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // Blank input lines are scored too (as errors), so count non-empty ones at least.
    assert!(
        objects.len() >= lines_in,
        "{} objects for {lines_in} lines",
        objects.len()
    );
    assert!(objects.iter().any(|o| o["error"]
        .as_str()
        .is_some_and(|e| e.contains("not valid UTF-8"))));
    assert_eq!(
        objects.last().unwrap()["base"],
        9.8,
        "the valid last line is scored"
    );

    // `metis cvss … | head -1`: the reader goes away; no error, no message.
    let mut child = metis()
        .args(["cvss", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let writer = std::thread::spawn(move || {
        let line = b"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n".repeat(200_000);
        let _ = stdin.write_all(&line);
    });
    let mut first = [0u8; 32];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `metis score --task bbh`: the answer type and the extraction come from flags; the fixed
/// reading accepts a final "True" without a period, lm-eval's regex cuts it to "Tru".
#[test]
fn score_grades_bbh_with_either_extraction() {
    let grade = |extraction: &str| {
        let mut cmd = metis();
        cmd.args([
            "score",
            "--task",
            "bbh",
            "--bbh-answer",
            "boolean",
            "--bbh-extraction",
            extraction,
            "--gold",
            "True",
            "--json",
            "--response",
            "-",
        ]);
        let out = run_with_stdin(cmd, "<think>not False is True</think>So the answer is True");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["verdict"].clone()
    };
    let fixed = grade("fixed");
    assert_eq!(fixed["correct"], true);
    assert_eq!(fixed["extracted"], "True");
    let upstream = grade("upstream");
    assert_eq!(upstream["correct"], false);
    assert_eq!(upstream["extracted"], "Tru");
    assert_eq!(upstream["metrics"]["fixed_match"], 1.0);

    // An unknown answer type is refused with the list of types.
    let mut cmd = metis();
    cmd.args([
        "score",
        "--task",
        "bbh",
        "--bbh-answer",
        "letters",
        "--gold",
        "(A)",
        "--response",
        "-",
    ]);
    let out = run_with_stdin(cmd, "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple_choice"));
}

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/cvss-severity-demo")
}

const DEMO_QUESTION: &str = "Severity of CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:L/A:N?\nA) Low\nB) Medium\nC) High\nD) Critical\nEnd with \"Answer: <letter>\".";

/// `metis chat` fed a line that is not UTF-8 says so for that line and goes on with the next
/// one, instead of ending the session.
#[test]
fn chat_skips_a_line_that_is_not_utf8() {
    let mut child = metis()
        .arg("chat")
        .arg("--model")
        .arg(demo_model())
        .args(["--max-tokens", "80"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = b"\xff\xfe not text\n".to_vec();
    input.extend_from_slice(DEMO_QUESTION.replace('\n', " ").as_bytes());
    input.extend_from_slice(b"\n/exit\n");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("Answer:"),
        "the next line was answered: {stdout:?}"
    );
}

/// `metis generate … | head -c 1`: the reader goes away while tokens stream; the command
/// ends quietly instead of generating on or panicking in its last newline.
#[test]
fn generate_ends_quietly_when_stdout_closes() {
    let mut child = metis()
        .arg("generate")
        .arg("--model")
        .arg(demo_model())
        .args(["--chat", "--max-tokens", "200", "--prompt", DEMO_QUESTION])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn bench_engine_reports_decode_and_prefill_throughput() {
    let out = metis()
        .args(["bench", "engine", "--shape", "tiny", "--batches", "1,3"])
        .args([
            "--prompt-len",
            "9",
            "--decode-tokens",
            "5",
            "--prefill-len",
            "40",
        ])
        .output()
        .unwrap();
    let lines = json_lines(&out);
    let what: Vec<(&str, u64, u64)> = lines
        .iter()
        .map(|l| {
            let rate = l["tokens_per_s"].as_f64().unwrap();
            assert!(rate.is_finite() && rate > 0.0, "{l}");
            assert_eq!(
                (l["device"].as_str(), l["dtype"].as_str()),
                (Some("cpu"), Some("f32"))
            );
            let bench = l["bench"].as_str().unwrap();
            (
                bench,
                l["batch"].as_u64().unwrap(),
                l["tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        what,
        [("decode", 1, 5), ("decode", 3, 15), ("prefill", 1, 40)]
    );

    let out = metis()
        .args(["bench", "engine", "--shape", "llama-70b"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("llama-3.1-8b, llama-3.2-1b, tiny"), "{err}");
}

#[test]
fn bench_parity_of_the_cpu_with_itself_is_exact_in_f32() {
    let model = fixtures().join("llama31-tiny-v512/f32");
    let out = metis()
        .args([
            "bench",
            "parity",
            "--device",
            "cpu",
            "--prompt-lens",
            "5,30",
        ])
        .args(["--decode-tokens", "8", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4, "two prompts in f32 and in bf16");
    for l in &lines {
        assert_eq!(l["pass"], true, "{l}");
        let diff = l["max_abs_logit_diff"].as_f64().unwrap();
        match l["dtype"].as_str().unwrap() {
            // The same kernels on the same inputs.
            "f32" => {
                assert_eq!(diff, 0.0, "{l}");
                assert_eq!(l["greedy_agree"], 8, "{l}");
            }
            // bf16 weights and activations differ from f32, within the bound.
            "bf16" => assert!(diff > 0.0 && diff <= 0.1, "{l}"),
            other => panic!("dtype {other}"),
        }
    }
}

#[test]
fn bench_init_model_writes_a_model_the_engine_loads() {
    let dir = tempfile_dir("bench-init");
    let out_dir = dir.join("tiny");
    let tokenizer = fixtures().join("llama31-tokenizer");
    let run = |out_dir: &Path| {
        metis()
            .args([
                "bench",
                "init-model",
                "--shape",
                "tiny",
                "--dtype",
                "f32",
                "--tokenizer",
            ])
            .arg(&tokenizer)
            .arg("--out")
            .arg(out_dir)
            .output()
            .unwrap()
    };
    let out = run(&out_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
    // The engine runs it (prompt ids, no tokenizer needed for that).
    let out = metis()
        .args([
            "generate",
            "--prompt-ids",
            "1,7,9",
            "--max-tokens",
            "4",
            "--json",
            "--model",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines[0]["ids"].as_array().unwrap().len(), 4, "{}", lines[0]);
    // An existing directory is never overwritten.
    let again = run(&out_dir);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cuda_in_a_cpu_build_is_a_clear_error() {
    let model = fixtures().join("llama31-tiny-v512/f32");
    let out = metis()
        .args([
            "generate",
            "--prompt-ids",
            "1,2",
            "--device",
            "cuda:0",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built without CUDA") && err.contains("--features cuda"),
        "{err}"
    );
}
