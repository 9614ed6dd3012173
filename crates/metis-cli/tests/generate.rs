//! `metis generate` on the shared fixtures: greedy continuations and chat prompts match the
//! Hugging Face transformers references token for token.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

fn reference(fixture: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(fixture).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn generate(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_metis"))
        .arg("generate")
        .args(args)
        .arg("--json")
        .output()
        .expect("run metis generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn text_prompt_greedy_matches_transformers() {
    let r = reference("llama31-tiny-v128k");
    let model = fixtures().join("llama31-tiny-v128k/f32");
    let tok = fixtures().join("llama31-tokenizer");
    let prompt = r["prompts"][0]["text"].as_str().unwrap();
    let g = generate(&[
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-tokens",
        "20",
        "--ignore-eos",
    ]);
    assert_eq!(ids(&g["prompt_ids"]), ids(&r["prompts"][0]["ids"]));
    assert_eq!(ids(&g["ids"]), ids(&r["f32"][0]["greedy_new_ids"]));
    assert_eq!(g["text"], r["f32"][0]["greedy_new_text"]);
}

#[test]
fn chat_prompt_renders_and_tokenizes_to_reference_ids() {
    let r = reference("llama31-tiny-v128k");
    let p = &r["prompts"][2];
    let model = fixtures().join("llama31-tiny-v128k/f32");
    let tok = fixtures().join("llama31-tokenizer");
    let system = p["messages"][0]["content"].as_str().unwrap();
    let user = p["messages"][1]["content"].as_str().unwrap();
    let g = generate(&[
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--chat",
        "--system",
        system,
        "--prompt",
        user,
        "--max-tokens",
        "20",
        "--ignore-eos",
    ]);
    assert_eq!(ids(&g["prompt_ids"]), ids(&p["ids"]));
    assert_eq!(ids(&g["ids"]), ids(&r["f32"][2]["greedy_new_ids"]));
}

#[test]
fn raw_ids_without_tokenizer() {
    for fixture in ["llama31-tiny-v512", "qwen2-tiny-v512"] {
        let r = reference(fixture);
        let model = fixtures().join(fixture).join("f32");
        for (i, p) in r["prompts"].as_array().unwrap().iter().enumerate() {
            let prompt: Vec<String> = ids(&p["ids"]).iter().map(u64::to_string).collect();
            let g = generate(&[
                "--model",
                model.to_str().unwrap(),
                "--prompt-ids",
                &prompt.join(","),
                "--max-tokens",
                "20",
                "--ignore-eos",
            ]);
            assert_eq!(
                ids(&g["ids"]),
                ids(&r["f32"][i]["greedy_new_ids"]),
                "{fixture} {i}"
            );
            assert!(g["text"].is_null() && g["reasoning"].is_null() && g["answer"].is_null());
        }
    }
}
