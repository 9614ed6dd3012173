//! Parity of `math::equivalent(gold, extract_final_answer(answer))` with Hugging Face
//! math-verify 0.8.0 on the pairs of `tools/reference/math_parity.py`
//! (fixture `tests/fixtures/math_reference.jsonl.gz`). `Unknown` counts as "not equal" for
//! the agreement figure and is reported separately.

use std::io::{BufRead, BufReader};

use metis_verify::math::{equivalent, extract_final_answer, Equivalence};

#[derive(serde::Deserialize)]
struct Row {
    gold: String,
    answer: String,
    mv: bool,
    group: String,
}

fn rows() -> Vec<Row> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/math_reference.jsonl.gz"
    );
    let file = std::fs::File::open(path).expect("fixture present");
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|l| serde_json::from_str(&l.expect("readable")).expect("valid row"))
        .collect()
}

#[test]
fn agrees_with_math_verify() {
    let rows = rows();
    assert!(rows.len() >= 2_000);
    let (mut agree, mut unknown) = (0usize, 0usize);
    for r in &rows {
        let extracted = extract_final_answer(&r.answer);
        let verdict = match &extracted {
            Some(e) => equivalent(&r.gold, &e.answer),
            None => Equivalence::Unknown {
                reason: "nothing extracted".into(),
            },
        };
        if matches!(verdict, Equivalence::Unknown { .. }) {
            unknown += 1;
        }
        let rust = verdict == Equivalence::Equal;
        if rust == r.mv {
            agree += 1;
        } else {
            println!(
                "DISAGREE [{}] gold={:?} answer={:?} extracted={:?} rust={:?} math-verify={}",
                r.group,
                r.gold,
                r.answer,
                extracted.map(|e| e.answer),
                verdict,
                r.mv
            );
        }
    }
    let pct = 100.0 * agree as f64 / rows.len() as f64;
    println!(
        "parity: {agree}/{} = {pct:.2}% agree; {unknown} Unknown",
        rows.len()
    );
    assert!(pct >= 99.0, "agreement {pct:.2}% < 99%");
}
