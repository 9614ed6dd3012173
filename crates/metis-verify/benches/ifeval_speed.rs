//! IFEval grading speed: the parity fixture's responses, strict and loose, single-threaded.
//!
//! Grades the first `IFEVAL_BENCH_N` (default 10,000) responses of
//! `tests/fixtures/ifeval_reference.jsonl.gz` (the list is repeated if shorter) with
//! `ifeval::evaluate`: gold construction included, as a reward function would do per sample.
//! Prints one JSON line: responses, seconds (best of 3 passes), responses_per_s.
//! `bench/ifeval_vs_python.sh` runs this and the Python reference on the same responses.
//!
//! Run: `cargo bench -p metis-verify --bench ifeval_speed`

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::time::Instant;

use metis_verify::ifeval::{evaluate, IfEvalGold};
use serde_json::Value;

fn main() {
    let n: usize = std::env::var("IFEVAL_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let data = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/ifeval/input_data.jsonl"
    ))
    .expect("shared IFEval data");
    let rows: HashMap<i64, Value> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("row");
            (v["key"].as_i64().expect("key"), v)
        })
        .collect();
    let file = std::fs::File::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ifeval_reference.jsonl.gz"
    ))
    .expect("fixture");
    let items: Vec<(i64, String)> = BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(&l.expect("line")).expect("json");
            // synthetic items (no key) are for parity only; the bench uses data rows
            Some((
                v["key"].as_i64()?,
                v["response"].as_str().expect("response").to_string(),
            ))
        })
        .collect();
    let items: Vec<&(i64, String)> = items.iter().cycle().take(n).collect();
    let mut best = f64::INFINITY;
    let mut followed = 0usize;
    for _ in 0..3 {
        let t0 = Instant::now();
        followed = 0;
        for (key, response) in &items {
            let row = &rows[key];
            let gold = IfEvalGold::from_row(&row["instruction_id_list"], &row["kwargs"])
                .expect("valid gold");
            let f = evaluate(&gold, black_box(response));
            followed += f.strict.iter().filter(|&&b| b).count();
            followed += f.loose.iter().filter(|&&b| b).count();
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{{\"impl\": \"rust\", \"responses\": {}, \"seconds\": {best:.4}, \"responses_per_s\": {:.1}, \"followed\": {followed}}}",
        items.len(),
        items.len() as f64 / best
    );
}
