//! CVSS v3.1 scoring speed against PyPI `cvss`, measured in the same run.
//!
//! Scores the 1,000 gold vectors of CTIBench-VSP (`GT` column of `cti-vsp.tsv`): parse,
//! validate, base score and severity for every vector, no caching (the list has only ~91
//! distinct vectors, so a cache would be cheating). Then runs `bench/cvss_python.py` on the
//! same list and prints the per-item times and the ratio.
//!
//! Run: `pip install cvss==3.6 && cargo bench -p metis-verify --bench cvss_vsp`
//! Data: `METIS_DATA_DIR` (default: the `shared/data` folder beside the repository).

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use metis_verify::cvss::Vector;

fn data_dir() -> PathBuf {
    std::env::var_os("METIS_DATA_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")),
        PathBuf::from,
    )
}

/// The GT column (last field) of every data row.
fn gold_vectors() -> Vec<String> {
    let path = data_dir().join("ctibench/cti-vsp.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|l| l.trim_end_matches('\r').rsplit('\t').next())
        .map(|f| f.trim_matches('"').to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

/// One pass: returns the score sum so the work cannot be optimised away.
fn pass(vectors: &[String]) -> f64 {
    let mut sum = 0.0;
    for v in vectors {
        let parsed = Vector::parse(black_box(v)).expect("gold vectors are valid");
        sum += parsed.base_score();
        black_box(parsed.severity());
    }
    sum
}

fn main() {
    let vectors = gold_vectors();
    assert_eq!(
        vectors.len(),
        1000,
        "expected 1,000 CTIBench-VSP gold vectors"
    );

    // Metis: warm up, then 7 timed runs of 200 passes each; per-item median and best.
    let reps = 200;
    let mut sum = pass(&vectors);
    let mut per_item = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        for _ in 0..reps {
            sum = black_box(pass(&vectors));
        }
        per_item.push(t0.elapsed().as_nanos() as f64 / (reps * vectors.len()) as f64);
    }
    per_item.sort_by(f64::total_cmp);
    let (metis_median, metis_best) = (per_item[per_item.len() / 2], per_item[0]);
    let metis_sum = (sum * 10.0).round() / 10.0;
    println!("metis   : {metis_median:>9.1} ns/vector median, {metis_best:>9.1} best, score sum {metis_sum:.1}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/cvss_python.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("python  : could not start {python}; no ratio");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(vectors.join("\n").as_bytes());
    }
    let out = child.wait_with_output().expect("python bench");
    if !out.status.success() {
        println!("python  : failed (is `cvss` installed? pip install cvss==3.6); no ratio");
        return;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python bench JSON");
    let py_median = v["per_item_ns_median"].as_f64().unwrap_or(f64::NAN);
    let py_best = v["per_item_ns_best"].as_f64().unwrap_or(f64::NAN);
    let py_sum = v["score_sum"].as_f64().unwrap_or(f64::NAN);
    println!(
        "python  : {py_median:>9.1} ns/vector median, {py_best:>9.1} best, score sum {py_sum:.1}"
    );
    assert!(
        (py_sum - metis_sum).abs() < 1e-6,
        "Metis and PyPI cvss disagree on the score sum"
    );
    println!(
        "ratio   : {:.0}x faster (median), {:.0}x (best)   goal >= 100x",
        py_median / metis_median,
        py_best / metis_best
    );
}
