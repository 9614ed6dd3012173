//! SFT data on the real Llama-3.1 tokenizer and chat template: the assistant-only loss mask
//! (single and multi-turn, `reasoning` wrapping), truncation, packing, the built-in template
//! fallback and errors naming file:line for bad records.

use std::path::{Path, PathBuf};

use metis_engine::chat::Message;
use metis_train::data::{
    collate, load_examples, pack, parse_record, read_jsonl, sequences, ChatFormatter, DataError,
    Example,
};

const EOT: u32 = 128009;

fn tok_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/llama31-tokenizer")
}

fn formatter() -> ChatFormatter {
    let f = ChatFormatter::from_dir(&tok_dir()).expect("llama31 tokenizer");
    assert!(!f.uses_builtin_template());
    f
}

/// The maximal runs of loss tokens, as (start, end).
fn spans(mask: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &m) in mask.iter().chain(std::iter::once(&false)).enumerate() {
        match (m, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn decode(f: &ChatFormatter, ids: &[u32]) -> String {
    f.tokenizer().decode(ids, false).unwrap()
}

fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn single_turn_mask_is_exactly_the_assistant_reply_and_eot() {
    let f = formatter();
    let msgs = vec![
        Message::system("You are a concise security analyst. Answer in one sentence."),
        Message::user("What does CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H mean?"),
        Message::assistant("<think>\nNetwork, low complexity.\n</think>\n\nCritical: 9.8."),
    ];
    let ex = f.tokenize(&msgs).unwrap();
    assert_eq!(ex.input_ids.len(), ex.loss_mask.len());
    let sp = spans(&ex.loss_mask);
    assert_eq!(sp.len(), 1, "{sp:?}");
    let (s, e) = sp[0];
    assert_eq!(e, ex.input_ids.len(), "the reply runs to the end");
    assert_eq!(
        decode(&f, &ex.input_ids[s..e]),
        "<think>\nNetwork, low complexity.\n</think>\n\nCritical: 9.8.<|eot_id|>"
    );
    assert_eq!(ex.input_ids[e - 1], EOT);
    // Everything before is the prompt exactly as transformers tokenizes it (golden ids of the
    // same conversation rendered with add_generation_prompt=True).
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tok_dir().join("cases.json")).unwrap())
            .unwrap();
    let golden: Vec<u32> = cases["chat_cases"][0]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ex.input_ids[..s], golden[..]);
    // The header (`<|start_header_id|>assistant<|end_header_id|>\n\n`) and the system/user
    // end-of-turn tokens are not trained on.
    assert_eq!(ex.input_ids[s - 4..s], [128006, 78191, 128007, 271]);
    let eots: Vec<usize> = (0..ex.input_ids.len())
        .filter(|&i| ex.input_ids[i] == EOT)
        .collect();
    assert_eq!(eots.len(), 3);
    assert!(!ex.loss_mask[eots[0]] && !ex.loss_mask[eots[1]] && ex.loss_mask[eots[2]]);
}

#[test]
fn multi_turn_masks_every_assistant_turn() {
    let f = formatter();
    let msgs = vec![
        Message::user("Is port 23 safe?"),
        Message::assistant("<think>\nTelnet.\n</think>\n\nNo, Telnet is cleartext."),
        Message::user("What instead?"),
        Message::assistant("<think>\nSSH.\n</think>\n\nUse SSH on port 22."),
    ];
    let ex = f.tokenize(&msgs).unwrap();
    let sp = spans(&ex.loss_mask);
    assert_eq!(sp.len(), 2, "{sp:?}");
    assert_eq!(
        decode(&f, &ex.input_ids[sp[0].0..sp[0].1]),
        "<think>\nTelnet.\n</think>\n\nNo, Telnet is cleartext.<|eot_id|>"
    );
    assert_eq!(
        decode(&f, &ex.input_ids[sp[1].0..sp[1].1]),
        "<think>\nSSH.\n</think>\n\nUse SSH on port 22.<|eot_id|>"
    );
    // Between them: the user turn with its headers, untrained.
    let between = decode(&f, &ex.input_ids[sp[0].1..sp[1].0]);
    assert_eq!(
        between,
        "<|start_header_id|>user<|end_header_id|>\n\nWhat instead?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // Every EOT is a loss token iff it closes an assistant turn.
    let masked_eots = (0..ex.input_ids.len())
        .filter(|&i| ex.input_ids[i] == EOT && ex.loss_mask[i])
        .count();
    assert_eq!(masked_eots, 2);
}

#[test]
fn reasoning_field_is_wrapped_in_think() {
    let f = formatter();
    let msgs = parse_record(
        r#"{"messages":[{"role":"user","content":"CWE of SQL injection?"},
            {"role":"assistant","reasoning":"Injection into SQL queries.","content":"CWE-89"}]}"#,
    )
    .unwrap();
    assert_eq!(
        msgs[1].content,
        "<think>\nInjection into SQL queries.\n</think>\n\nCWE-89"
    );
    let ex = f.tokenize(&msgs).unwrap();
    let sp = spans(&ex.loss_mask);
    assert_eq!(
        decode(&f, &ex.input_ids[sp[0].0..sp[0].1]),
        "<think>\nInjection into SQL queries.\n</think>\n\nCWE-89<|eot_id|>"
    );
}

#[test]
fn truncation_keeps_the_prefix_and_drops_examples_without_targets() {
    let dir = tempfile::tempdir().unwrap();
    let long_answer = "word ".repeat(200);
    let l1 = serde_json::json!({"messages": [
        {"role": "user", "content": "Explain."},
        {"role": "assistant", "content": long_answer}]})
    .to_string();
    let long_prompt = "context ".repeat(200);
    let l2 = serde_json::json!({"messages": [
        {"role": "user", "content": long_prompt},
        {"role": "assistant", "content": "ok"}]})
    .to_string();
    let l3 =
        r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#;
    let p = write(dir.path(), "d.jsonl", &[&l1, &l2, l3]);
    let f = formatter();
    let full = load_examples(&p, &f, 100_000).unwrap();
    assert_eq!((full.truncated, full.dropped), (0, 0));
    let cut = load_examples(&p, &f, 64).unwrap();
    assert_eq!(cut.truncated, 2);
    assert_eq!(
        cut.dropped, 1,
        "the long-prompt example has no assistant token left"
    );
    assert_eq!(cut.examples.len(), 2);
    assert_eq!(cut.lines, vec![1, 3]);
    let (a, b) = (&cut.examples[0], &full.examples[0]);
    assert_eq!(a.input_ids.len(), 64);
    assert_eq!(a.input_ids[..], b.input_ids[..64]);
    assert_eq!(a.loss_mask[..], b.loss_mask[..64]);
    assert!(a.loss_mask[63]);
    assert_eq!(cut.examples[1], full.examples[2]);
}

#[test]
fn packing_sets_segments_and_per_document_positions() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..5)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("Question {i}?")},
                {"role": "assistant", "content": format!("<think>\nstep {i}\n</think>\n\nAnswer {i}.")}]})
            .to_string()
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let p = write(dir.path(), "d.jsonl", &refs);
    let f = formatter();
    let data = load_examples(&p, &f, 128).unwrap();
    let lens: Vec<usize> = data.examples.iter().map(|e| e.input_ids.len()).collect();
    let max_len = lens[0] * 2 + 3; // two examples per pack
    let packs = sequences(&data.examples, max_len, true);
    assert_eq!(packs.len(), 3);
    let mut offset = 0;
    for (pi, pk) in packs.iter().enumerate() {
        assert!(pk.len() <= max_len);
        let docs = if pi < 2 { 2 } else { 1 };
        let mut pos = 0;
        for d in 0..docs {
            let ex = &data.examples[offset + d];
            let n = ex.input_ids.len();
            assert_eq!(pk.input_ids[pos..pos + n], ex.input_ids[..]);
            assert_eq!(pk.loss_mask[pos..pos + n], ex.loss_mask[..]);
            assert!(pk.segment_ids[pos..pos + n]
                .iter()
                .all(|&s| s == d as u32 + 1));
            assert_eq!(
                pk.position_ids[pos..pos + n],
                (0..n as u32).collect::<Vec<_>>()[..]
            );
            pos += n;
        }
        assert_eq!(pos, pk.len());
        offset += docs;
    }
    // Targets never cross a document boundary; every assistant token but none else is scored.
    let b = collate(&[&packs[0], &packs[2]], f.pad_id());
    let (targets, weights) = b.targets();
    let n0 = data.examples[0].input_ids.len();
    assert_eq!(
        weights[n0 - 1],
        0.0,
        "last token of doc 1 does not predict doc 2"
    );
    assert_eq!(targets[n0 - 2], EOT);
    assert_eq!(weights[n0 - 2], 1.0);
    let expected: usize = [0, 1, 4].iter().map(|&i| data.examples[i].n_loss()).sum();
    assert_eq!(b.n_targets(), expected);
    assert_eq!(
        b.segment_ids[b.seq_len + packs[2].len()..],
        vec![0; b.seq_len - packs[2].len()][..]
    );
    // Unpacked: one sequence per example, one segment.
    let single = sequences(&data.examples, 128, false);
    assert_eq!(single.len(), 5);
    assert!(single[0].segment_ids.iter().all(|&s| s == 1));
    // Over-long examples are cut to max_len inside a pack too.
    let tiny = pack(
        &[Example {
            input_ids: vec![1; 10],
            loss_mask: vec![true; 10],
        }],
        4,
    );
    assert_eq!(tiny[0].len(), 4);
}

#[test]
fn builtin_template_when_tokenizer_has_none() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tok_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tok_dir().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let f = ChatFormatter::from_dir(dir.path()).unwrap();
    assert!(f.uses_builtin_template());
    let ex = f
        .tokenize(&[Message::user("Hi"), Message::assistant("Hello")])
        .unwrap();
    assert_eq!(
        decode(&f, &ex.input_ids),
        "<|begin_of_text|><|user|>\nHi<|eot_id|>\n<|assistant|>\nHello<|eot_id|>\n"
    );
    let sp = spans(&ex.loss_mask);
    assert_eq!(sp.len(), 1);
    assert_eq!(
        decode(&f, &ex.input_ids[sp[0].0..sp[0].1]),
        "Hello<|eot_id|>\n"
    );
}

fn bad(lines: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "train.jsonl", lines);
    let err = read_jsonl(&p).unwrap_err();
    assert!(matches!(err, DataError::Record { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("train.jsonl:"), "{msg}");
    msg
}

#[test]
fn bad_records_name_file_line_and_field() {
    let good = r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#;
    let m = bad(&[good, "", "{not json"]);
    assert!(m.contains("train.jsonl:3: invalid JSON"), "{m}");
    let m = bad(&[good, r#"{"text":"x"}"#]);
    assert!(m.contains("train.jsonl:2: messages: missing"), "{m}");
    let m = bad(&[r#"{"messages":[]}"#]);
    assert!(m.contains("train.jsonl:1: messages: empty"), "{m}");
    let m = bad(&[
        good,
        good,
        r#"{"messages":[{"role":"robot","content":"x"}]}"#,
    ]);
    assert!(
        m.contains("train.jsonl:3: messages[0].role: unknown role \"robot\""),
        "{m}"
    );
    let m = bad(&[r#"{"messages":[{"role":"user","content":"x"}]}"#]);
    assert!(
        m.contains("train.jsonl:1: messages: no assistant message"),
        "{m}"
    );
    let m = bad(&[
        good,
        r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":["a"]}]}"#,
    ]);
    assert!(
        m.contains("train.jsonl:2: messages[1].content: not a string (found an array)"),
        "{m}"
    );
    let m = bad(&[
        r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"a","reasoning":5}]}"#,
    ]);
    assert!(
        m.contains("train.jsonl:1: messages[1].reasoning: not a string"),
        "{m}"
    );
    let m = bad(&[r#"[1,2]"#]);
    assert!(
        m.contains("train.jsonl:1: record is not a JSON object"),
        "{m}"
    );
    // The prompt-completion form is accepted.
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "pc.jsonl",
        &[
            r#"{"prompt":[{"role":"user","content":"q"}],"completion":[{"role":"assistant","content":"a"}]}"#,
        ],
    );
    let convs = read_jsonl(&p).unwrap();
    assert_eq!(convs[0].messages.len(), 2);
    // Missing file and empty file.
    let e = read_jsonl(&dir.path().join("nope.jsonl")).unwrap_err();
    assert!(e.to_string().contains("nope.jsonl"));
    let p = write(dir.path(), "empty.jsonl", &[""]);
    assert!(matches!(read_jsonl(&p), Err(DataError::Empty { .. })));
}
