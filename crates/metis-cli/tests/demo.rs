//! `metis demo` (the README's main job), shortened by flags: a run killed with SIGKILL in
//! each of its stages and rerun ends with the same held-out results as an uninterrupted run,
//! and a finished run rerun asks nothing again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

fn demo(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metis"));
    c.arg("demo")
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--out")
        .arg(out)
        .args([
            "--sft-steps",
            "120",
            "--grpo-steps",
            "4",
            "--sampled-trials",
            "1",
            "--heldout-limit",
            "48",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run_to_end(out: &Path) -> String {
    let o = demo(out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "metis demo failed:\n{stderr}");
    stderr
}

/// Kills `child` once `ready` holds (polled), and reports whether it got there first.
fn kill_when(mut child: Child, ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("metis demo reached no kill point in 10 minutes");
}

fn has_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
    })
}

/// The results without what differs between runs by design (none is expected; the row is
/// compared whole).
fn results(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("report/results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn killed_in_every_stage_and_rerun_gives_the_results_of_an_uninterrupted_run() {
    if !data_dir().join("cvss/cvss-test-vectors.tsv").is_file() {
        eprintln!("skipped: no shared data at {}", data_dir().display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (straight, interrupted) = (tmp.path().join("straight"), tmp.path().join("interrupted"));
    run_to_end(&straight);

    // Killed after SFT's first checkpoint, after GRPO's first, and once evaluation has stored
    // answers; each rerun resumes from what the last one left.
    let sft = interrupted.join("sft");
    let grpo = interrupted.join("grpo");
    let store = interrupted.join("eval.sqlite");
    let kill_points: [&dyn Fn() -> bool; 3] =
        [&|| has_checkpoint(&sft), &|| has_checkpoint(&grpo), &|| {
            std::fs::metadata(&store).is_ok_and(|m| m.len() > 0)
        }];
    for ready in kill_points {
        kill_when(demo(&interrupted).spawn().unwrap(), ready);
    }
    let log = run_to_end(&interrupted);
    assert_eq!(
        results(&interrupted),
        results(&straight),
        "resumed run differs:\n{log}"
    );

    // The results are real: after SFT the model answers the held-out prompts in the task's
    // format and gets some right; every answer of the random init is invalid.
    let rows = results(&straight);
    let row = |bench: &str, model: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["benchmark"] == bench && r["model"] == model)
            .cloned()
            .unwrap()
    };
    let (init, sft) = (row("heldout-greedy", "init"), row("heldout-greedy", "sft"));
    eprintln!(
        "held-out greedy after SFT: accuracy {}, invalid {}",
        sft["metrics"]["accuracy"]["mean"], sft["invalid"]
    );
    assert_eq!(init["invalid"], 48);
    assert!(sft["invalid"].as_u64().unwrap() < 24, "{sft:#}");
    assert!(
        sft["metrics"]["accuracy"]["mean"].as_f64().unwrap() > 0.0,
        "{sft:#}"
    );

    // A finished run rerun trains nothing and asks nothing.
    let again = run_to_end(&straight);
    assert!(again.contains("finished earlier"), "{again}");
    for line in again.lines().filter(|l| l.contains("new answers")) {
        assert!(line.contains("(0 new answers"), "{line}");
    }
}
