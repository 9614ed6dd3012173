//! Metis's AlpacaEval 2 pieces against upstream's own code, through the fixture
//! `tests/fixtures/alpacaeval_reference.json` that `tools/reference/alpacaeval_lc.py` writes by
//! running the `alpaca-eval` 0.6.6 package (scikit-learn 1.9.1) on synthetic inputs.
//!
//! Tolerances: against the fit solved to tol 1e−10 ("tight"), 1e−6 on weights and on the LC
//! win rate in percent, 1e−6 relative on cross-validation scores, and the same chosen C;
//! against upstream's liblinear at its default tol 1e−4, 0.005 percentage points on the LC win
//! rate (the largest difference measured is 0.0027) and the same chosen C.

use std::collections::HashMap;
use std::path::PathBuf;

use metis_eval::judge::alpaca::{self, Comparison};
use metis_eval::judge::pyrandom::PyRandom;
use metis_eval::judge::winrate::{self, GamedRow, GlmReference};
use metis_openai::TopLogprob;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/alpacaeval_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

#[test]
fn the_template_is_upstreams_file_byte_for_byte() {
    let fx = fixture();
    let sha: String = Sha256::digest(alpaca::TEMPLATE.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha, fx["template_sha256"].as_str().unwrap());
}

#[test]
fn judge_messages_and_swaps_equal_upstreams() {
    let fx = fixture();
    let prompts = fx["judge_prompts"].as_array().unwrap();
    assert!(prompts.iter().any(|p| p["swapped"] == true));
    assert!(prompts.iter().any(|p| p["swapped"] == false));
    for p in prompts {
        let comparison = Comparison {
            instruction: p["instruction"].as_str().unwrap(),
            reference: p["reference"].as_str().unwrap(),
            answer: p["answer"].as_str().unwrap(),
        };
        let req = comparison.request("judge");
        assert_eq!(req.swapped, p["swapped"].as_bool().unwrap(), "{p}");
        let want: Vec<(String, String)> = p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let got: Vec<(String, String)> = req
            .request
            .messages
            .iter()
            .map(|m| (m.role.clone(), m.content.clone()))
            .collect();
        assert_eq!(got, want, "{}", p["instruction"]);
        assert_eq!(req.request.params.max_tokens, 1);
        assert_eq!(req.request.params.temperature, 1.0);
    }
}

#[test]
fn preferences_equal_logprob_parser() {
    for case in fixture()["parser"].as_array().unwrap() {
        let top: Vec<TopLogprob> = case["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| TopLogprob {
                token: pair[0].as_str().unwrap().to_owned(),
                logprob: f(&pair[1]),
            })
            .collect();
        let got = alpaca::parse_preference(&top);
        match case["preference"].as_f64() {
            Some(want) => assert!((got.unwrap() - want).abs() < 1e-12, "{case}: {got:?}"),
            None => assert_eq!(got, None, "{case}"),
        }
    }
}

#[test]
fn string_seeds_equal_cpython() {
    for case in fixture()["seeds"].as_array().unwrap() {
        let mut r = PyRandom::from_str_seed(case["seed"].as_str().unwrap());
        // serde_json parses decimals to within one ulp; the unit tests compare exactly.
        for want in floats(&case["random"]) {
            assert!((r.random() - want).abs() <= f64::EPSILON * want, "{case}");
        }
    }
}

/// The comparisons and GLM inputs of one synthetic case.
fn case_inputs(case: &Value) -> (Vec<winrate::Comparison>, GlmReference) {
    let refs = floats(&case["reference_chars"]);
    let answers = floats(&case["answer_chars"]);
    let prefs = floats(&case["preference"]);
    let comparisons = (0..refs.len())
        .map(|i| winrate::Comparison {
            index: i,
            reference_chars: refs[i] as usize,
            answer_chars: answers[i] as usize,
            preference: prefs[i],
        })
        .collect();
    let difficulty: HashMap<usize, f64> = floats(&case["instruction_difficulty"])
        .into_iter()
        .enumerate()
        .collect();
    let gamed: Vec<GamedRow> = case["gamed"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    Some(GamedRow {
                        label: r["preference"].as_f64()?,
                        std_delta_len: f(&r["std_delta_len"]),
                        instruction_difficulty: f(&r["instruction_difficulty"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    // Upstream run with difficulty 0 and no gamed rows ("approximation", "end_to_end") is
    // exactly what Metis does without df_gamed.csv.
    let reference = if difficulty.values().all(|&d| d == 0.0) && gamed.is_empty() {
        GlmReference::Approximation
    } else {
        GlmReference::Upstream {
            path: PathBuf::from("synthetic df_gamed.csv"),
            difficulty,
            gamed,
        }
    };
    (comparisons, reference)
}

#[test]
fn length_controlled_win_rate_equals_upstreams_glm() {
    let fx = fixture();
    let cs = floats(&fx["cs"]);
    for (got, want) in winrate::cs().iter().zip(&cs) {
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    }
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (comparisons, reference) = case_inputs(case);
        let lc = winrate::length_controlled(&comparisons, &reference)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let tight = &case["expected"]["tight"];
        let upstream = &case["expected"]["upstream"];
        assert_eq!(lc.c, f(&tight["c"]), "{name}: chosen C (tight)");
        assert_eq!(lc.c, f(&upstream["c"]), "{name}: chosen C (upstream)");
        for (got, want) in lc.weights.iter().zip(floats(&tight["weights"])) {
            assert!(
                (got - want).abs() < 1e-6,
                "{name}: weights {:?}",
                lc.weights
            );
        }
        for (got, want) in lc.cv_scores.iter().zip(floats(&tight["cv_scores"])) {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{name}: cv scores {:?}",
                lc.cv_scores
            );
        }
        let want = f(&tight["length_controlled_winrate"]);
        assert!(
            (lc.lc_win_rate - want).abs() < 1e-6,
            "{name}: {} vs {want}",
            lc.lc_win_rate
        );
        let want_se = f(&tight["lc_standard_error"]);
        assert!((lc.lc_standard_error - want_se).abs() < 1e-6, "{name}: se");
        let upstream_lc = f(&upstream["length_controlled_winrate"]);
        assert!(
            (lc.lc_win_rate - upstream_lc).abs() < 0.005,
            "{name}: {} vs upstream {upstream_lc}",
            lc.lc_win_rate
        );
    }
}

#[test]
fn raw_win_rate_equals_get_winrate() {
    for case in fixture()["cases"].as_array().unwrap() {
        let want = &case["expected"]["win_rate"];
        let w = winrate::win_rate(&floats(&case["preference"]));
        let close = |got: f64, key: &str| {
            assert!(
                (got - f(&want[key])).abs() < 1e-9,
                "{key}: {got} vs {}",
                want[key]
            );
        };
        close(w.win_rate, "win_rate");
        close(w.standard_error, "standard_error");
        close(w.discrete_win_rate, "discrete_win_rate");
        close(w.n_wins as f64, "n_wins");
        close(w.n_wins_base as f64, "n_wins_base");
        close(w.n_draws as f64, "n_draws");
        close(w.n_total as f64, "n_total");
    }
}
