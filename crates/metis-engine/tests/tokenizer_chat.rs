//! Tokenizer and chat-template parity against the golden fixtures in
//! `shared/fixtures/llama31-tokenizer` (HF `tokenizers` / transformers `apply_chat_template`)
//! and `shared/fixtures/llama31-tiny-v128k/reference.json` (prompt `chat`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use metis_engine::chat::{ChatError, ChatTemplate, Message, RenderOptions};
use metis_engine::tokenizer::{Tokenizer, TokenizerError};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .to_path_buf()
}

fn tok_dir() -> PathBuf {
    fixtures().join("llama31-tokenizer")
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_dir(&tok_dir()).expect("load llama31 tokenizer"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn cases() -> &'static Value {
    static CASES: OnceLock<Value> = OnceLock::new();
    CASES.get_or_init(|| read_json(&tok_dir().join("cases.json")))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

fn llama_template() -> ChatTemplate {
    let tok = tokenizer();
    ChatTemplate::from_tokenizer(tok)
        .expect("tokenizer_config has a chat template")
        .expect("template compiles")
}

/// A unique scratch directory under the system temp dir (removed on drop).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("metis-engine-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn special_tokens_and_metadata() {
    let tok = tokenizer();
    let c = cases();
    assert_eq!(
        tok.vocab_size() as u64,
        c["vocab_size_with_added"].as_u64().unwrap()
    );
    for (name, id) in c["special_ids"].as_object().unwrap() {
        let id = id.as_u64().unwrap() as u32;
        assert_eq!(tok.token_to_id(name), Some(id), "{name}");
        assert_eq!(tok.id_to_token(id).as_deref(), Some(name.as_str()));
    }
    assert_eq!(tok.bos_token(), Some("<|begin_of_text|>"));
    assert_eq!(tok.eos_token(), Some("<|eot_id|>"));
    // No generation_config.json next to the tokenizer fixture: eos_token only.
    assert_eq!(tok.stop_ids(), &[128009]);
    assert!(tok
        .chat_template()
        .unwrap()
        .contains("Cutting Knowledge Date"));
}

#[test]
fn encode_decode_all_cases() {
    let tok = tokenizer();
    let all = cases()["cases"].as_array().unwrap();
    assert_eq!(all.len(), 21);
    for case in all {
        let text = case["text"].as_str().unwrap();
        let with = ids(&case["ids"]);
        let without = ids(&case["ids_no_special"]);
        assert_eq!(tok.encode(text, true).unwrap(), with, "ids for {text:?}");
        assert_eq!(
            tok.encode(text, false).unwrap(),
            without,
            "ids_no_special for {text:?}"
        );
        let tokens: Vec<String> = without
            .iter()
            .map(|&i| tok.id_to_token(i).unwrap())
            .collect();
        let want_tokens: Vec<String> =
            serde_json::from_value(case["tokens_no_special"].clone()).unwrap();
        assert_eq!(tokens, want_tokens, "tokens for {text:?}");
        assert_eq!(
            tok.decode(&with, false).unwrap(),
            case["decode"].as_str().unwrap(),
            "decode for {text:?}"
        );
        assert_eq!(
            tok.decode(&with, true).unwrap(),
            case["decode_skip_special"].as_str().unwrap(),
            "decode_skip_special for {text:?}"
        );
    }
}

#[test]
fn streaming_decoder_reassembles_every_case() {
    let tok = tokenizer();
    for case in cases()["cases"].as_array().unwrap() {
        let with = ids(&case["ids"]);
        for (skip, key) in [(false, "decode"), (true, "decode_skip_special")] {
            let mut stream = tok.decode_stream(skip);
            let mut out = String::new();
            for &id in &with {
                if let Some(chunk) = stream.push(id).unwrap() {
                    assert!(!chunk.contains('\u{FFFD}'), "broken UTF-8 chunk {chunk:?}");
                    out.push_str(&chunk);
                }
            }
            if let Some(rest) = stream.finish().unwrap() {
                out.push_str(&rest);
            }
            assert_eq!(
                out,
                case[key].as_str().unwrap(),
                "{key} stream for {:?}",
                case["text"]
            );
        }
    }
}

#[test]
fn streaming_withholds_partial_utf8_and_finish_flushes() {
    let tok = tokenizer();
    // "🙂" is split over several byte-level tokens: nothing is emitted until it is complete.
    let ids = tok.encode("a🙂", false).unwrap();
    let emoji_ids = tok.encode("🙂", false).unwrap();
    assert!(emoji_ids.len() > 1, "test assumes a multi-token emoji");
    let mut stream = tok.decode_stream(false);
    let mut chunks = Vec::new();
    for &id in &ids {
        chunks.push(stream.push(id).unwrap());
    }
    assert_eq!(chunks[0].as_deref(), Some("a"));
    assert!(chunks[1..chunks.len() - 1].iter().all(Option::is_none));
    assert_eq!(chunks.last().unwrap().as_deref(), Some("🙂"));
    assert_eq!(stream.finish().unwrap(), None);

    // A truncated character is flushed by finish() as a full decode would render it.
    let mut stream = tok.decode_stream(false);
    for &id in &emoji_ids[..emoji_ids.len() - 1] {
        assert_eq!(stream.push(id).unwrap(), None);
    }
    let flushed = stream.finish().unwrap().unwrap();
    assert_eq!(
        flushed,
        tok.decode(&emoji_ids[..emoji_ids.len() - 1], false)
            .unwrap()
    );
}

#[test]
fn llama31_chat_cases_render_and_tokenize_exactly() {
    let tmpl = llama_template();
    let tok = tokenizer();
    let chats = cases()["chat_cases"].as_array().unwrap();
    assert_eq!(chats.len(), 4);
    for chat in chats {
        let opts = RenderOptions {
            add_generation_prompt: chat["add_generation_prompt"].as_bool().unwrap(),
            ..RenderOptions::default()
        };
        let rendered = tmpl.render(&messages(&chat["messages"]), &opts).unwrap();
        assert_eq!(rendered, chat["rendered"].as_str().unwrap());
        assert_eq!(tok.encode(&rendered, false).unwrap(), ids(&chat["ids"]));
    }
}

#[test]
fn llama31_reference_chat_prompt() {
    let reference = read_json(&fixtures().join("llama31-tiny-v128k/reference.json"));
    let prompt = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chat")
        .expect("chat prompt");
    let tmpl = llama_template();
    let rendered = tmpl
        .render(&messages(&prompt["messages"]), &RenderOptions::generation())
        .unwrap();
    assert_eq!(rendered, prompt["text"].as_str().unwrap());
    assert_eq!(
        tokenizer().encode(&rendered, false).unwrap(),
        ids(&prompt["ids"])
    );
}

#[test]
fn llama31_date_string_override_and_tools() {
    let tmpl = llama_template();
    let msgs = vec![Message::user("Weather in Paris?")];
    let mut opts = RenderOptions::generation();
    opts.extra
        .insert("date_string".into(), json!("01 Jan 2026"));
    let out = tmpl.render(&msgs, &opts).unwrap();
    assert!(out.contains("Today Date: 01 Jan 2026\n\n"), "{out}");

    // Tools go into the first user message as json.dumps(tool, indent=4).
    opts.extra.insert(
        "tools".into(),
        // Keys in sorted order so the expectation holds with or without serde_json/minijinja
        // `preserve_order` (HF keeps insertion order).
        json!([{"function": {"name": "get_weather", "parameters": {"city": {"type": "string"}, "days": 3, "opt": {}, "ratio": 0.5, "tags": [], "unit": null}}, "type": "function"}]),
    );
    let out = tmpl.render(&msgs, &opts).unwrap();
    // Expected output produced by Jinja2 3.1.6 with transformers' environment settings.
    let want = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 01 Jan 2026\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n{\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"parameters\": {\n            \"city\": {\n                \"type\": \"string\"\n            },\n            \"days\": 3,\n            \"opt\": {},\n            \"ratio\": 0.5,\n            \"tags\": [],\n            \"unit\": null\n        }\n    },\n    \"type\": \"function\"\n}\n\nWeather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    assert_eq!(out, want);
}

#[test]
fn raise_exception_surfaces_template_message() {
    let tmpl = llama_template();
    let msgs = vec![
        json!({"role": "user", "content": "hi"}),
        json!({"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": {}}},
            {"function": {"name": "g", "arguments": {}}}
        ]}),
    ];
    match tmpl
        .render_json(&msgs, &RenderOptions::default())
        .unwrap_err()
    {
        ChatError::Raised(msg) => {
            assert_eq!(msg, "This model only supports single tool-calls at once!")
        }
        other => panic!("expected Raised, got {other:?}"),
    }
}

#[test]
fn llama31_tool_call_roundtrip_uses_compact_tojson() {
    let tmpl = llama_template();
    let msgs = vec![
        json!({"role": "user", "content": "hi"}),
        json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": "é<>", "b": [1, 2.0]}}}]}),
        json!({"role": "tool", "content": "ok"}),
    ];
    let out = tmpl.render_json(&msgs, &RenderOptions::default()).unwrap();
    // Jinja2 output; note the tool result string is JSON-quoted (`"ok"`): in the Llama-3.1
    // template a string `is iterable`, so it goes through `tojson`.
    let want = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"f\", \"parameters\": {\"a\": \"é<>\", \"b\": [1, 2.0]}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"ok\"<|eot_id|>";
    assert_eq!(out, want);
}

const QWEN3_STYLE: &str = r#"{%- for message in messages %}
    {%- if message.role == "system" %}
        {{- '<|im_start|>system\n' + message.content.strip() + '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- if '</think>' in content %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"#;

#[test]
fn qwen3_style_enable_thinking_and_prefill_think() {
    let tmpl = ChatTemplate::new(QWEN3_STYLE, None, Some("<|im_end|>")).unwrap();
    let msgs = vec![
        Message::system("  Be terse. "),
        Message::user("2+2?"),
        Message::assistant("<think>\nadd\n</think>\n\n4"),
        Message::user("3+3?"),
    ];
    let head = "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n";

    let mut opts = RenderOptions::generation();
    assert_eq!(tmpl.render(&msgs, &opts).unwrap(), head);

    opts.extra.insert("enable_thinking".into(), json!(false));
    assert_eq!(
        tmpl.render(&msgs, &opts).unwrap(),
        format!("{head}<think>\n\n</think>\n\n")
    );

    opts.extra.insert("enable_thinking".into(), json!(true));
    opts.prefill_think = true;
    assert_eq!(
        tmpl.render(&msgs, &opts).unwrap(),
        format!("{head}<think>\n")
    );

    // prefill_think does nothing without a generation prompt.
    opts.add_generation_prompt = false;
    assert!(!tmpl.render(&msgs, &opts).unwrap().ends_with("<think>\n"));
}

#[test]
fn prefill_think_not_doubled_when_template_opens_think() {
    // Foundation-Sec-8B-Reasoning style: the template itself opens the think block.
    let src = "{%- if add_bos_token %}{{- bos_token }}{%- endif %}{% for message in messages %}\n{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}\n{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}\n{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}\n{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n<think>\\n' }}{% endif %}{% endfor %}";
    let tmpl = ChatTemplate::new(src, Some("<|begin_of_text|>"), Some("<|end_of_text|>")).unwrap();
    // Expected string from Jinja2 (trim_blocks does not eat the newline after `}}`).
    let mut opts = RenderOptions::generation();
    opts.prefill_think = true;
    opts.extra.insert("add_bos_token".into(), json!(true));
    let out = tmpl
        .render(&[Message::system("S"), Message::user("U")], &opts)
        .unwrap();
    assert_eq!(
        out,
        "<|begin_of_text|><|system|>\nS\n\n<|user|>\nU\n\n<|assistant|>\n<think>\n"
    );
}

#[test]
fn template_helpers_namespace_strftime_tojson() {
    let src = r#"{%- set ns = namespace(n=0) %}
{%- for m in messages %}{% set ns.n = ns.n + 1 %}{% if loop.last %}{{ m.content.upper() }}{% endif %}{% endfor %}
{{- '|' ~ ns.n ~ '|' }}
{{- strftime_now('%Y') | length }}|
{{- {'a': [1, none, true], 'b': 'x"y'} | tojson }}|
{{- 'a,b'.split(',') | tojson(separators=(',', ':')) }}|
{{- 'é' | tojson(ensure_ascii=true) }}"#;
    let tmpl = ChatTemplate::new(src, None, None).unwrap();
    let out = tmpl
        .render(
            &[Message::user("x"), Message::user("last")],
            &RenderOptions::default(),
        )
        .unwrap();
    assert_eq!(
        out,
        "LAST|2|4|{\"a\": [1, null, true], \"b\": \"x\\\"y\"}|[\"a\",\"b\"]|\"\\u00e9\""
    );
}

#[test]
fn template_compile_error() {
    assert!(matches!(
        ChatTemplate::new("{% if %}", None, None),
        Err(ChatError::Compile(_))
    ));
}

fn write_converted_tokenizer(dir: &Path) {
    // Rewrite merges "a b" -> ["a", "b"] (the newer tokenizers serialisation).
    let mut tj = read_json(&tok_dir().join("tokenizer.json"));
    let merges = tj["model"]["merges"].as_array_mut().unwrap();
    assert!(merges[0].is_string(), "fixture uses the classic merge form");
    for m in merges.iter_mut() {
        let s = m.as_str().unwrap().to_owned();
        let (a, b) = s.split_once(' ').unwrap();
        *m = json!([a, b]);
    }
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
}

#[test]
fn both_merge_forms_load_and_generation_config_stop_ids() {
    let scratch = Scratch::new("merges");
    write_converted_tokenizer(&scratch.0);
    std::fs::copy(
        tok_dir().join("tokenizer_config.json"),
        scratch.0.join("tokenizer_config.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("llama31-tiny-v128k/f32/generation_config.json"),
        scratch.0.join("generation_config.json"),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&scratch.0).unwrap();
    // eos_token <|eot_id|> first, then generation_config's [128001, 128008, 128009] deduplicated.
    assert_eq!(tok.stop_ids(), &[128009, 128001, 128008]);
    let reference = tokenizer();
    for case in cases()["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            reference.encode(text, false).unwrap()
        );
    }
}

#[test]
fn bad_tokenizer_json_error_names_file() {
    let scratch = Scratch::new("bad");
    let path = scratch.0.join("tokenizer.json");
    std::fs::write(&path, "{\"model\": 42").unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    let missing = scratch.0.join("nope").join("tokenizer.json");
    let err = Tokenizer::from_dir(&scratch.0.join("nope")).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    // A broken side file is reported with its own name.
    std::fs::copy(tok_dir().join("tokenizer.json"), &path).unwrap();
    let cfg = scratch.0.join("tokenizer_config.json");
    std::fs::write(&cfg, "{not json").unwrap();
    let err = Tokenizer::from_dir(&scratch.0).unwrap_err();
    assert!(
        err.to_string().contains(&cfg.display().to_string()),
        "{err}"
    );
}
