//! Tokenizers read from GGUF metadata (`Tokenizer::from_gguf`) and the one model loader
//! (`metis_engine::loader`): tiny gpt2 and SentencePiece vocabularies written by the test, the
//! real Llama-3.1 tokenizer embedded by `write_gguf` and compared with Hugging Face's, and the
//! errors that name a missing key.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::Device;
use metis_engine::chat::{Message, RenderOptions};
use metis_engine::gguf::{write_gguf, GgmlDType};
use metis_engine::loader::{load_model, load_tokenizer, LoadError};
use metis_engine::tokenizer::{Tokenizer, TokenizerError};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("metis-ggtok-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String(s.as_ref().to_owned()))
            .collect(),
    )
}

/// Writes a metadata-only GGUF file (no tensors).
fn write_metadata(path: &Path, md: &[(&str, Value)]) {
    let refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &refs, &[]).unwrap();
}

/// GPT-2's byte alphabet: byte b ↦ the char byte-level BPE writes for it.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

/// A tiny byte-level BPE vocabulary: the 256 byte symbols, a few merges, and four specials
/// (control `<|endoftext|>` `<|im_start|>` `<|im_end|>`, user-defined `<tool>`).
fn gpt2_metadata(pre: &str) -> Vec<(&'static str, Value)> {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3, 3, 3, 4];
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    types.extend([1; 256]);
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "2 0",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        (
            "tokenizer.chat_template",
            Value::String(
                "{% for m in messages %}{{ bos_token + m['role'] + '\n' + m['content'] + eos_token }}{% endfor %}"
                    .into(),
            ),
        ),
    ]
}

fn gguf_tokenizer(scratch: &Scratch, name: &str, md: &[(&str, Value)]) -> Tokenizer {
    let path = scratch.0.join(name);
    write_metadata(&path, md);
    Tokenizer::from_gguf(&path).unwrap().expect("a vocabulary")
}

fn id(tok: &Tokenizer, text: &str) -> u32 {
    tok.token_to_id(text)
        .unwrap_or_else(|| panic!("{text:?} not in the vocabulary"))
}

#[test]
fn gpt2_vocabulary_tokenizes_as_llama_cpp() {
    let scratch = Scratch::new("gpt2");
    let tok = gguf_tokenizer(&scratch, "smollm.gguf", &gpt2_metadata("smollm"));
    let (hello, world) = (id(&tok, "hello"), id(&tok, "Ġworld"));
    assert_eq!(tok.encode("hello world", false).unwrap(), [hello, world]);
    // Specials in text map to their ids; user-defined ones too.
    assert_eq!(
        tok.encode("<|im_start|>hello<tool> world<|im_end|>", false)
            .unwrap(),
        [1, hello, 3, world, 2]
    );
    // smollm splits digits one by one, so the "2 0" merge never applies; gpt-2 keeps digit
    // runs together and merges them.
    let digit = |c: char| id(&tok, &c.to_string());
    assert_eq!(
        tok.encode("2024", false).unwrap(),
        ['2', '0', '2', '4'].map(digit)
    );
    let gpt2 = gguf_tokenizer(&scratch, "gpt2.gguf", &gpt2_metadata("gpt-2"));
    assert_eq!(
        gpt2.encode("2024", false).unwrap(),
        [id(&gpt2, "20"), digit('2'), digit('4')]
    );
    // Byte-level round trip, multi-byte characters included.
    for text in [
        "hello world",
        "  tabs\tand\nnewlines ",
        "naïve café ∑ 日本 🔒",
        "2024!",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
    // gpt2 vocabularies add no BOS unless told to; EOS/BOS texts feed the chat template.
    assert_eq!(tok.encode("hello", true).unwrap(), [hello]);
    assert_eq!(tok.bos_token(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    // End of generation: the EOS key and <|endoftext|> from llama.cpp's list.
    assert_eq!(tok.stop_ids(), &[0, 2]);
    let template = metis_engine::chat::ChatTemplate::from_tokenizer(&tok)
        .unwrap()
        .unwrap();
    let text = template
        .render(&[Message::user("hi")], &RenderOptions::default())
        .unwrap();
    assert_eq!(text, "<|im_start|>user\nhi<|im_end|>");
}

#[test]
fn add_bos_token_key_overrides_the_default() {
    let scratch = Scratch::new("bos");
    let mut md = gpt2_metadata("smollm");
    md.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
    let tok = gguf_tokenizer(&scratch, "bos.gguf", &md);
    let hello = id(&tok, "hello");
    assert_eq!(tok.encode("hello", true).unwrap(), [1, hello]);
    assert_eq!(tok.encode("hello", false).unwrap(), [hello]);
    // The Llama-3 pre-tokenizer adds BOS by default; the key turns it off again.
    let mut md = gpt2_metadata("llama-bpe");
    let tok = gguf_tokenizer(&scratch, "llama3.gguf", &md);
    assert_eq!(tok.encode("hello", true).unwrap(), [1, hello]);
    md.push(("tokenizer.ggml.add_bos_token", Value::Bool(false)));
    let tok = gguf_tokenizer(&scratch, "llama3-nobos.gguf", &md);
    assert_eq!(tok.encode("hello", true).unwrap(), [hello]);
}

/// A tiny SentencePiece vocabulary: `<unk>` `<s>` `</s>`, the 256 byte pieces, and pieces
/// whose scores make llama.cpp's merge order differ from a left-to-right greedy one.
fn spm_metadata() -> Vec<(&'static str, Value)> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    tokens.extend((0..=255u32).map(|b| format!("<0x{b:02X}>")));
    types.extend([6; 256]);
    scores.extend([0.0; 256]);
    let pieces = [
        ("\u{2581}", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("ll", -3.0),
        ("he", -4.0),
        ("\u{2581}h", -5.0),
        ("llo", -6.0),
        ("\u{2581}he", -7.0),
    ];
    for (piece, score) in pieces {
        tokens.push(piece.into());
        types.push(1);
        scores.push(score);
    }
    vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
    ]
}

#[test]
fn sentencepiece_vocabulary_merges_by_score_and_falls_back_to_bytes() {
    let scratch = Scratch::new("spm");
    let tok = gguf_tokenizer(&scratch, "spm.gguf", &spm_metadata());
    let (he, llo) = (id(&tok, "\u{2581}he"), id(&tok, "llo"));
    // llama.cpp on "▁hello": ll (-3), then he (-4), then llo (-6), then ▁he (-7); merging
    // left to right would have taken ▁h first.
    assert_eq!(tok.encode("hello", false).unwrap(), [he, llo]);
    assert_eq!(
        tok.encode("hello hello", false).unwrap(),
        [he, llo, he, llo]
    );
    // Default BOS for SentencePiece; specials in text, and the ▁ prefix after a special.
    assert_eq!(tok.encode("hello", true).unwrap(), [1, he, llo]);
    assert_eq!(tok.encode("<s>hello</s>", false).unwrap(), [1, he, llo, 2]);
    // Characters outside the vocabulary become their UTF-8 bytes.
    let byte = |b: u8| id(&tok, &format!("<0x{b:02X}>"));
    assert_eq!(tok.encode("hex", false).unwrap(), [he, byte(b'x')]);
    assert_eq!(
        tok.encode("é", false).unwrap(),
        [id(&tok, "\u{2581}"), byte(0xC3), byte(0xA9)]
    );
    for text in ["hello hello", "hex é"] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
    assert_eq!(tok.stop_ids(), &[2]);
    assert_eq!(tok.bos_token(), Some("<s>"));
}

fn metadata_error(scratch: &Scratch, name: &str, md: &[(&str, Value)]) -> String {
    let path = scratch.0.join(name);
    write_metadata(&path, md);
    let err = Tokenizer::from_gguf(&path).unwrap_err();
    assert!(
        matches!(err, TokenizerError::Metadata { .. }),
        "{name}: {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(name), "{text}");
    text
}

#[test]
fn missing_or_bad_keys_are_named() {
    let scratch = Scratch::new("keys");
    let without = |key: &str, md: Vec<(&'static str, Value)>| -> Vec<(&'static str, Value)> {
        md.into_iter().filter(|(k, _)| *k != key).collect()
    };
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
    ] {
        let err = metadata_error(
            &scratch,
            "gpt2.gguf",
            &without(key, gpt2_metadata("smollm")),
        );
        assert!(err.contains(key) && err.contains("missing"), "{err}");
    }
    let err = metadata_error(
        &scratch,
        "spm.gguf",
        &without("tokenizer.ggml.scores", spm_metadata()),
    );
    assert!(
        err.contains("tokenizer.ggml.scores") && err.contains("missing"),
        "{err}"
    );
    let err = metadata_error(&scratch, "pre.gguf", &gpt2_metadata("nonesuch"));
    assert!(
        err.contains("tokenizer.ggml.pre") && err.contains("nonesuch"),
        "{err}"
    );
    let mut md = gpt2_metadata("smollm");
    md.push(("tokenizer.ggml.eos_token_id", Value::U32(1_000_000)));
    md.retain(|(k, v)| *k != "tokenizer.ggml.eos_token_id" || v.to_u32().unwrap() != 2);
    let err = metadata_error(&scratch, "eos.gguf", &md);
    assert!(
        err.contains("tokenizer.ggml.eos_token_id") && err.contains("1000000"),
        "{err}"
    );
    let mut md = spm_metadata_without_defaults();
    md.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
    let err = metadata_error(&scratch, "bos.gguf", &md);
    assert!(err.contains("tokenizer.ggml.bos_token_id"), "{err}");
    // Duplicate token texts would shift ids: refused.
    let mut md = gpt2_metadata("smollm");
    let tokens = md
        .iter_mut()
        .find(|(k, _)| *k == "tokenizer.ggml.tokens")
        .unwrap();
    let Value::Array(list) = &mut tokens.1 else {
        unreachable!()
    };
    list[3] = Value::String("<|im_end|>".into());
    let err = metadata_error(&scratch, "dup.gguf", &md);
    assert!(
        err.contains("duplicate") && err.contains("<|im_end|>"),
        "{err}"
    );
    // A file that declares no vocabulary is a weights-only checkpoint, not an error.
    let path = scratch.0.join("none.gguf");
    write_metadata(
        &path,
        &[("tokenizer.ggml.model", Value::String("none".into()))],
    );
    assert!(Tokenizer::from_gguf(&path).unwrap().is_none());
}

/// A SentencePiece vocabulary too small for the default BOS id 1 to exist.
fn spm_metadata_without_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
        ("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0)])),
    ]
}

/// The Llama-3.1 tokenizer as `write_gguf` embeds it (gpt2, `llama-bpe`) tokenizes every
/// golden case exactly as Hugging Face's `tokenizers` does with the original tokenizer.json.
#[test]
fn llama31_tokenizer_from_gguf_matches_tokenizer_json() {
    let scratch = Scratch::new("llama31");
    let hf = scratch.0.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    let src = fixtures().join("llama31-tiny-v128k/f32");
    let tok_dir = fixtures().join("llama31-tokenizer");
    for (dir, f) in [
        (&src, "config.json"),
        (&src, "model.safetensors"),
        (&tok_dir, "tokenizer.json"),
        (&tok_dir, "tokenizer_config.json"),
    ] {
        std::fs::copy(dir.join(f), hf.join(f)).unwrap();
    }
    let gguf = scratch.0.join("llama31.gguf");
    write_gguf(&hf, &gguf, GgmlDType::F32).unwrap();

    let loaded = load_model(&gguf, None, &Device::Cpu, None).unwrap();
    assert!(loaded.source.contains("GGUF metadata"), "{}", loaded.source);
    let from_gguf = loaded.tokenizer.as_ref().unwrap();
    let reference = Tokenizer::from_dir(&tok_dir).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tok_dir.join("cases.json")).unwrap())
            .unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        for special in [true, false] {
            assert_eq!(
                from_gguf.encode(text, special).unwrap(),
                reference.encode(text, special).unwrap(),
                "{text:?} add_special={special}"
            );
        }
        let ids = reference.encode(text, true).unwrap();
        assert_eq!(
            from_gguf.decode(&ids, false).unwrap(),
            reference.decode(&ids, false).unwrap()
        );
    }
    assert_eq!(from_gguf.bos_token(), Some("<|begin_of_text|>"));
    // write_gguf declares config.json's first eos_token_id as EOS.
    assert_eq!(from_gguf.eos_token(), Some("<|end_of_text|>"));
    // llama.cpp's end-of-generation set; the loader's rule gives the same ids for the
    // directory (whose generation_config declares them) and the GGUF.
    assert_eq!(from_gguf.stop_ids(), &[128001, 128008, 128009]);
    let mut from_dir = load_tokenizer(&hf, None).unwrap().unwrap().stop_ids;
    let mut from_file = loaded.stop_ids.clone();
    from_dir.sort_unstable();
    from_file.sort_unstable();
    assert_eq!(from_dir, from_file);
    assert!(loaded.template.is_some());
}

#[test]
fn loader_override_and_weights_only_checkpoints() {
    let scratch = Scratch::new("loader");
    let hf = scratch.0.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    let src = fixtures().join("llama31-tiny-v128k/f32");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), hf.join(f)).unwrap();
    }
    // Without tokenizer.json the GGUF says `none`: weights only, stop ids from the config.
    let bare = scratch.0.join("bare.gguf");
    write_gguf(&hf, &bare, GgmlDType::F32).unwrap();
    let loaded = load_model(&bare, None, &Device::Cpu, None).unwrap();
    assert!(loaded.tokenizer.is_none() && loaded.template.is_none());
    assert_eq!(loaded.stop_ids, loaded.model.config().eos_token_ids);
    assert!(!loaded.stop_ids.is_empty());
    // An explicit tokenizer directory supplies one.
    let tok_dir = fixtures().join("llama31-tokenizer");
    let loaded = load_model(&bare, Some(&tok_dir), &Device::Cpu, None).unwrap();
    assert!(
        loaded.source.contains("tokenizer.json"),
        "{}",
        loaded.source
    );
    assert_eq!(loaded.tokenizer.unwrap().vocab_size(), 128_256);
    assert!(loaded.stop_ids.contains(&128_009));
    // An override that holds none is an error naming it.
    let err = load_model(&bare, Some(&hf), &Device::Cpu, None).unwrap_err();
    assert!(matches!(err, LoadError::NoTokenizer(_)), "{err:?}");
    assert!(err.to_string().contains(hf.to_str().unwrap()), "{err}");
    let err = load_tokenizer(&hf, Some(&bare)).unwrap_err();
    assert!(err.to_string().contains("bare.gguf"), "{err}");
}
