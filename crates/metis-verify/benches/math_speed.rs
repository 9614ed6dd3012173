//! Grades 10,000 (gold, answer) pairs of the math-verify parity fixture with
//! `equivalent(gold, extract_final_answer(answer))` and prints pairs/s.
//! Run: `cargo bench -p metis-verify --bench math_speed`.

use std::io::{BufRead, BufReader};
use std::time::Instant;

use metis_verify::math::{equivalent, extract_final_answer, Equivalence};

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/math_reference.jsonl.gz"
    );
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot open {path}: {e}");
            return;
        }
    };
    let rows: Vec<(String, String)> = BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter_map(|v| {
            Some((
                v["gold"].as_str()?.to_string(),
                v["answer"].as_str()?.to_string(),
            ))
        })
        .collect();
    if rows.is_empty() {
        eprintln!("empty fixture");
        return;
    }
    let pairs: Vec<&(String, String)> = rows.iter().cycle().take(10_000).collect();
    let mut equal = 0usize;
    // Warm-up (lazy regexes), then the timed pass.
    for (g, a) in pairs.iter().take(100) {
        let _ = extract_final_answer(a).map(|e| equivalent(g, &e.answer));
    }
    let t = Instant::now();
    for (g, a) in &pairs {
        if let Some(e) = extract_final_answer(a) {
            if equivalent(g, &e.answer) == Equivalence::Equal {
                equal += 1;
            }
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "rust metis-verify: {} pairs in {dt:.3} s = {:.1} pairs/s ({equal} equal)",
        pairs.len(),
        pairs.len() as f64 / dt
    );
}
