//! Data-file parsers, one per layout. Each returns the items in file order with the 1-based
//! physical line each came from, so that later checks (gold answers, unique ids) can name
//! file and line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use metis_verify::attack::Domain;
use metis_verify::bbh;
use metis_verify::code::{CodeProblem, CodeProblemError};
use metis_verify::ifeval::IfEvalGold;
use metis_verify::math::gsm8k;
use metis_verify::mcq::{ChoiceSpec, LetterSet};
use serde::Deserialize;
use serde_json::Value;

use super::{prompts, BenchmarkError, Format, Item};

mod general;

pub(crate) struct Row {
    pub item: Item,
    /// 1-based physical line of the row (its first line if it spans several).
    pub line: usize,
    /// The column / key holding the gold answer, for error messages.
    pub gold_field: &'static str,
}

#[derive(Default)]
pub(crate) struct Parsed {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Parsed {
    /// Records, in the loader notes, rows left out because they cannot be graded.
    fn note_dropped(&mut self, why: &str, dropped: &[String]) {
        if !dropped.is_empty() {
            self.notes.push(format!(
                "dropped {} row(s) {why}: {}",
                dropped.len(),
                dropped.join(", ")
            ));
        }
    }
}

/// Parses the main data file; `companions` are the benchmark's other files (path, text), in
/// the order its spec lists them.
pub(crate) fn parse(
    format: Format,
    text: &str,
    path: &Path,
    companions: &[(std::path::PathBuf, String)],
) -> Result<Parsed, BenchmarkError> {
    match format {
        Format::PromptFile => Err(BenchmarkError::Parse {
            path: path.to_owned(),
            line: 0,
            field: None,
            detail: "a prompt file is read by prompt_file::load_prompt_file".to_owned(),
        }),
        Format::CtiMcq => cti_mcq(text, path),
        Format::CtiRcm | Format::CtiVsp => cti_cve(text, path),
        Format::CtiAte => cti_ate(text, path),
        Format::CtiTaa => match companions {
            [(gold_path, gold_text)] => cti_taa(text, path, gold_text, gold_path),
            _ => Err(perr(path, 0, None, "CTI-TAA needs its gold-actor file")),
        },
        Format::CyberMetric => cybermetric(text, path),
        Format::MmluCsv => mmlu(text, path),
        Format::SecBenchJsonl => secbench(text, path),
        Format::SecEvalJsonl => seceval(text, path),
        Format::IfEvalJsonl => ifeval(text, path),
        Format::Gsm8kJsonl => gsm8k(text, path, false),
        Format::Gsm8kCotJsonl => gsm8k(text, path, true),
        Format::MathJsonl => math(text, path),
        Format::MathFullTest => match companions {
            [(train_path, train_text)] => math_full_test(text, path, train_text, train_path),
            _ => Err(perr(path, 0, None, "MATH needs PRM800K's train split too")),
        },
        Format::MmluJsonl => general::mmlu_five_shot(text, path),
        Format::GpqaCsv => general::gpqa(text, path),
        Format::LongBenchJsonl => general::longbench_qa(text, path),
        Format::Bbh => bbh(text, path, companions),
        Format::AlpacaEvalJson => alpaca_eval(text, path),
        Format::HumanEvalJsonl => humaneval(text, path),
    }
}

/// AlpacaEval model outputs: a JSON array of `{instruction, output, generator, dataset}`. The
/// id is the 0-based position (the `index` upstream's length control keys instruction
/// difficulty by), the prompt the instruction verbatim, the gold the output verbatim (the
/// reference the judge sees as output 1), the subject the source dataset.
fn alpaca_eval(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let rows: Vec<Value> = match serde_json::from_str(text) {
        Ok(Value::Array(rows)) => rows,
        Ok(other) => {
            return Err(perr(
                path,
                1,
                None,
                format!("expected a JSON array, found {}", json_kind(&other)),
            ))
        }
        Err(e) => return Err(perr(path, e.line(), None, format!("invalid JSON: {e}"))),
    };
    let lines = object_lines(text, 1);
    let mut out = Parsed::default();
    let mut generators = std::collections::BTreeSet::new();
    for (i, row) in rows.into_iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(0);
        let Value::Object(obj) = row else {
            return Err(perr(
                path,
                line,
                None,
                format!("expected a JSON object, found {}", json_kind(&row)),
            ));
        };
        let instruction = json_str(&obj, "instruction", path, line)?;
        if instruction.trim().is_empty() {
            return Err(perr(path, line, Some("instruction"), "empty instruction"));
        }
        let output = json_str(&obj, "output", path, line)?;
        if let Some(Value::String(g)) = obj.get("generator") {
            generators.insert(g.clone());
        }
        out.rows.push(Row {
            item: Item {
                id: i.to_string(),
                prompt: instruction.to_owned(),
                gold: output.to_owned(),
                subject: obj
                    .get("dataset")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                question: instruction.to_owned(),
            },
            line,
            gold_field: "output",
        });
    }
    out.notes.push(format!(
        "reference outputs by {}",
        generators.into_iter().collect::<Vec<_>>().join(", ")
    ));
    Ok(out)
}

/// IFEval: the prompt as is (0-shot); the gold is the instruction object
/// `{"instruction_id_list", "kwargs"}` as JSON text, validated (every id known, every kwarg
/// the checker needs present).
fn ifeval(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut out = Parsed::default();
    for (_, line, obj) in jsonl(text, path)? {
        let id = match obj.get("key") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => return Err(perr(path, line, Some("key"), "missing or not a number")),
        };
        let prompt = json_str(&obj, "prompt", path, line)?;
        let null = Value::Null;
        let gold = IfEvalGold::from_row(
            obj.get("instruction_id_list").unwrap_or(&null),
            obj.get("kwargs").unwrap_or(&null),
        )
        .map_err(|e| perr(path, line, Some("instruction_id_list"), e.to_string()))?;
        out.rows.push(Row {
            item: Item {
                id,
                prompt: prompt.to_owned(),
                gold: gold.to_json().to_string(),
                subject: None,
                question: prompt.to_owned(),
            },
            line,
            gold_field: "instruction_id_list",
        });
    }
    Ok(out)
}

/// GSM8K: the gold is the text after `#### ` in `answer`.
fn gsm8k(text: &str, path: &Path, cot: bool) -> Result<Parsed, BenchmarkError> {
    let mut out = Parsed::default();
    for (i, line, obj) in jsonl(text, path)? {
        let question = json_str(&obj, "question", path, line)?;
        let solution = json_str(&obj, "answer", path, line)?;
        let gold = gsm8k::gold_answer(solution)
            .filter(|g| !g.trim().is_empty())
            .ok_or_else(|| perr(path, line, Some("answer"), "no \"#### N\" final answer"))?;
        let prompt = if cot {
            prompts::gsm8k_cot(question)
        } else {
            prompts::gsm8k_zero_shot(question)
        };
        out.rows.push(Row {
            item: Item {
                id: i.to_string(),
                prompt,
                gold,
                subject: None,
                question: question.to_owned(),
            },
            line,
            gold_field: "answer",
        });
    }
    Ok(out)
}

/// The 5,000 MATH test problems: MATH-500 (PRM800K's test split) and the 4,500 original test
/// problems PRM800K moved into its train split, recognised by their `unique_id`
/// (`test/<subject>/<n>.json`). A count other than 5,000 is noted, not refused.
fn math_full_test(
    text: &str,
    path: &Path,
    train_text: &str,
    train_path: &Path,
) -> Result<Parsed, BenchmarkError> {
    let mut out = math(text, path)?;
    let from_test = out.rows.len();
    let moved = math(train_text, train_path)?;
    let total_train = moved.rows.len();
    out.rows.extend(
        moved
            .rows
            .into_iter()
            .filter(|r| r.item.id.starts_with("test/")),
    );
    let n = out.rows.len();
    out.notes.push(format!(
        "MATH test: {from_test} from {} and {} of the {total_train} rows of {} (original test \
         problems)",
        path.display(),
        n - from_test,
        train_path.display()
    ));
    if n != 5000 {
        out.notes
            .push(format!("expected 5,000 MATH test problems, found {n}"));
    }
    Ok(out)
}

/// MATH-style rows (Hendrycks MATH, MATH-500): the gold is the `answer` field where present,
/// else the last `\boxed{}` of `solution`; the subject is `subject` or `type`.
fn math(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut out = Parsed::default();
    for (i, line, obj) in jsonl(text, path)? {
        let problem = json_str(&obj, "problem", path, line)?;
        let (gold, field) = match obj.get("answer") {
            Some(Value::String(a)) if !a.trim().is_empty() => (a.trim().to_owned(), "answer"),
            _ => {
                let solution = json_str(&obj, "solution", path, line)?;
                let boxed = metis_verify::math::last_boxed_only_string(solution)
                    .and_then(metis_verify::math::remove_boxed)
                    .ok_or_else(|| perr(path, line, Some("solution"), "no \\boxed{} answer"))?;
                (boxed.trim().to_owned(), "solution")
            }
        };
        let id = match obj.get("unique_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => i.to_string(),
        };
        let subject = ["subject", "type"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str).map(str::to_owned));
        out.rows.push(Row {
            item: Item {
                id,
                prompt: prompts::math(problem),
                gold,
                subject,
                question: problem.to_owned(),
            },
            line,
            gold_field: field,
        });
    }
    Ok(out)
}

/// HumanEval: the id is `task_id`, the question the function stub (`prompt`), the gold the
/// problem object `{"task_id", "prompt", "test", "entry_point"}` the code verifier runs
/// (`canonical_solution` is not part of it: the model never sees it and grading does not use
/// it).
fn humaneval(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut out = Parsed::default();
    for (_, line, obj) in jsonl(text, path)? {
        let field = |key| json_non_empty(&obj, key, path, line);
        let (task_id, stub) = (field("task_id")?, field("prompt")?);
        let (test, entry_point) = (field("test")?, field("entry_point")?);
        let gold = serde_json::json!({
            "task_id": task_id,
            "prompt": stub,
            "test": test,
            "entry_point": entry_point,
        });
        CodeProblem::from_json(&gold).map_err(|e| {
            let field = match &e {
                CodeProblemError::Empty(f) => Some(*f),
                CodeProblemError::EntryPoint(_) => Some("entry_point"),
                CodeProblemError::NotInPrompt(_) => Some("prompt"),
                CodeProblemError::Json(_) => None,
            };
            perr(path, line, field, e.to_string())
        })?;
        out.rows.push(Row {
            item: Item {
                id: task_id.to_owned(),
                prompt: prompts::humaneval(stub),
                gold: gold.to_string(),
                subject: None,
                question: stub.to_owned(),
            },
            line,
            gold_field: "prompt",
        });
    }
    Ok(out)
}

fn perr(
    path: &Path,
    line: usize,
    field: Option<&str>,
    detail: impl Into<String>,
) -> BenchmarkError {
    BenchmarkError::Parse {
        path: path.to_owned(),
        line,
        field: field.map(str::to_owned),
        detail: detail.into(),
    }
}

/// Maps byte offsets to 1-based line numbers. (The csv crate's own line numbers are off by
/// one on CRLF files, so lines are counted from byte offsets.) Offsets asked for in increasing
/// order are counted incrementally.
struct Lines<'t> {
    bytes: &'t [u8],
    pos: usize,
    line: usize,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        Lines {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    fn at(&mut self, byte: u64) -> usize {
        let bytes = self.bytes;
        let mut end = usize::try_from(byte).map_or(bytes.len(), |b| b.min(bytes.len()));
        // On CRLF files the csv crate reports a record as starting at the previous line's `\n`.
        while end < bytes.len() && matches!(bytes[end], b'\r' | b'\n') {
            end += 1;
        }
        if end < self.pos {
            (self.pos, self.line) = (0, 1);
        }
        self.line += bytes[self.pos..end].iter().filter(|&&b| b == b'\n').count();
        self.pos = end;
        self.line
    }
}

fn csv_err(lines: &mut Lines, path: &Path, e: &csv::Error) -> BenchmarkError {
    let line = e.position().map_or(0, |p| lines.at(p.byte()));
    let detail = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        _ => e.to_string(),
    };
    perr(path, line, None, detail)
}

// ---------------------------------------------------------------------------------------------
// CTIBench TSVs: CRLF, tab-separated, header row, CSV-style quoting.

struct Tsv {
    columns: HashMap<String, usize>,
    /// (0-based data row index, 1-based line, record)
    rows: Vec<(usize, usize, csv::StringRecord)>,
}

impl Tsv {
    fn read(text: &str, path: &Path, required: &[&str]) -> Result<Tsv, BenchmarkError> {
        Self::read_delimited(text, path, required, b'\t')
    }

    /// A delimited file with a header row (`\t` for CTIBench, `,` for GPQA's CSV).
    fn read_delimited(
        text: &str,
        path: &Path,
        required: &[&str],
        delimiter: u8,
    ) -> Result<Tsv, BenchmarkError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            // Ragged rows are rejected below, with the row's own line number (the csv crate's
            // error for them points at the previous record).
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut lines = Lines::new(text);
        let headers = reader
            .headers()
            .map_err(|e| csv_err(&mut lines, path, &e))?
            .clone();
        let mut columns = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            if columns.insert(h.trim().to_owned(), i).is_some() {
                return Err(perr(path, 1, Some(h), "column appears twice in the header"));
            }
        }
        for c in required {
            if !columns.contains_key(*c) {
                return Err(perr(path, 1, Some(c), "missing column in the header"));
            }
        }
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| csv_err(&mut lines, path, &e))?;
            let line = record.position().map_or(0, |p| lines.at(p.byte()));
            if record.len() != headers.len() {
                let missing = headers.get(record.len()).map(str::trim);
                return Err(perr(
                    path,
                    line,
                    missing,
                    format!(
                        "{} fields where the header has {}",
                        record.len(),
                        headers.len()
                    ),
                ));
            }
            rows.push((i, line, record));
        }
        Ok(Tsv { columns, rows })
    }

    /// The trimmed, non-empty value of `column`.
    fn get<'r>(
        &self,
        record: &'r csv::StringRecord,
        column: &str,
        path: &Path,
        line: usize,
    ) -> Result<&'r str, BenchmarkError> {
        let value = record
            .get(self.columns[column])
            .map(str::trim)
            .unwrap_or_default();
        if value.is_empty() {
            return Err(perr(path, line, Some(column), "empty value"));
        }
        Ok(value)
    }

    /// The raw value of `column` (the prompt, kept as is).
    fn raw<'r>(
        &self,
        record: &'r csv::StringRecord,
        column: &str,
        path: &Path,
        line: usize,
    ) -> Result<&'r str, BenchmarkError> {
        self.get(record, column, path, line)?;
        Ok(record.get(self.columns[column]).unwrap_or_default())
    }
}

/// Where a CTI-MCQ question was generated from, from its `URL` column.
fn mcq_source_kind(url: &str) -> &'static str {
    if url.contains("attack.mitre.org") {
        "ATT&CK"
    } else if url.contains("cwe.mitre.org") {
        "CWE"
    } else if url.contains("capec.mitre.org") {
        "CAPEC"
    } else if url.eq_ignore_ascii_case("manual") {
        "Manual"
    } else {
        "Document"
    }
}

fn cti_mcq(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let tsv = Tsv::read(
        text,
        path,
        &[
            "URL", "Question", "Option A", "Option B", "Option C", "Option D", "Prompt", "GT",
        ],
    )?;
    let mut out = Parsed::default();
    let mut lowercase = 0;
    let mut empty_options = Vec::new();
    for (i, line, rec) in &tsv.rows {
        let (i, line) = (*i, *line);
        let gt = tsv.get(rec, "GT", path, line)?;
        if gt.chars().any(|c| c.is_ascii_lowercase()) {
            lowercase += 1;
        }
        // Five rows have an empty option (pandas read a literal "None" as NaN when the
        // dataset was built; their prompts show `nan`); the prompt is used as is, so they stay.
        for opt in ["Option A", "Option B", "Option C", "Option D"] {
            if rec
                .get(tsv.columns[opt])
                .is_none_or(|v| v.trim().is_empty())
            {
                empty_options.push(format!(
                    "row {i} {opt}{}",
                    if opt[7..].eq_ignore_ascii_case(gt) {
                        " (the gold option)"
                    } else {
                        ""
                    }
                ));
            }
        }
        out.rows.push(Row {
            item: Item {
                id: i.to_string(),
                prompt: prompts::ctibench(tsv.raw(rec, "Prompt", path, line)?),
                gold: gt.to_ascii_uppercase(),
                subject: Some(mcq_source_kind(tsv.get(rec, "URL", path, line)?).to_owned()),
                question: tsv.get(rec, "Question", path, line)?.to_owned(),
            },
            line,
            gold_field: "GT",
        });
    }
    if !empty_options.is_empty() {
        out.notes.push(format!(
            "{} empty option(s), kept (the dataset prompt shows them as `nan`): {}",
            empty_options.len(),
            empty_options.join(", ")
        ));
    }
    if lowercase > 0 {
        out.notes.push(format!(
            "{lowercase} GT letter(s) in lower case, read case-insensitively"
        ));
    }
    Ok(out)
}

/// The last non-empty path segment of a URL (`CVE-2024-23848`, `S0066`).
fn last_segment(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// CTI-RCM, CTI-RCM-2021 and CTI-VSP: `URL, Description, Prompt, GT`; the id is the CVE id.
fn cti_cve(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let tsv = Tsv::read(text, path, &["URL", "Description", "Prompt", "GT"])?;
    let mut out = Parsed::default();
    for (_, line, rec) in &tsv.rows {
        let line = *line;
        let url = tsv.get(rec, "URL", path, line)?;
        let cve = last_segment(url);
        if !cve.starts_with("CVE-") {
            return Err(perr(
                path,
                line,
                Some("URL"),
                format!("no CVE id in {url:?}"),
            ));
        }
        out.rows.push(Row {
            item: Item {
                id: cve.to_owned(),
                prompt: prompts::ctibench(tsv.raw(rec, "Prompt", path, line)?),
                gold: tsv.get(rec, "GT", path, line)?.to_owned(),
                subject: None,
                question: tsv.get(rec, "Description", path, line)?.to_owned(),
            },
            line,
            gold_field: "GT",
        });
    }
    Ok(out)
}

/// CTI-ATE: `URL, Platform, Description, Prompt, GT`; the id is the ATT&CK software id, the
/// subject the platform (`Enterprise` / `Mobile`), which selects the catalog.
fn cti_ate(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let tsv = Tsv::read(
        text,
        path,
        &["URL", "Platform", "Description", "Prompt", "GT"],
    )?;
    let mut out = Parsed::default();
    for (_, line, rec) in &tsv.rows {
        let line = *line;
        let url = tsv.get(rec, "URL", path, line)?;
        let software = last_segment(url);
        if !(software.starts_with('S') && software.len() > 1) {
            return Err(perr(
                path,
                line,
                Some("URL"),
                format!("no ATT&CK software id in {url:?}"),
            ));
        }
        let platform: Domain = tsv
            .get(rec, "Platform", path, line)?
            .parse()
            .map_err(|e| perr(path, line, Some("Platform"), format!("{e}")))?;
        out.rows.push(Row {
            item: Item {
                id: software.to_owned(),
                prompt: prompts::ctibench(tsv.raw(rec, "Prompt", path, line)?),
                gold: tsv.get(rec, "GT", path, line)?.to_ascii_uppercase(),
                subject: Some(platform.to_string()),
                question: tsv.get(rec, "Description", path, line)?.to_owned(),
            },
            line,
            gold_field: "GT",
        });
    }
    Ok(out)
}

/// CTI-TAA: the reports file (`URL, Text, Prompt`) and the gold file (`URL, GT`), whose rows
/// align one to one (checked by URL). Ids are 0-based row indices; the gold is kept as
/// CTIBench wrote it (case and trailing spaces included: CTIBench's rule normalises them).
fn cti_taa(
    text: &str,
    path: &Path,
    gold_text: &str,
    gold_path: &Path,
) -> Result<Parsed, BenchmarkError> {
    let reports = Tsv::read(text, path, &["URL", "Text", "Prompt"])?;
    let golds = Tsv::read(gold_text, gold_path, &["URL", "GT"])?;
    if reports.rows.len() != golds.rows.len() {
        return Err(perr(
            gold_path,
            0,
            None,
            format!(
                "{} gold rows for {} reports in {}",
                golds.rows.len(),
                reports.rows.len(),
                path.display()
            ),
        ));
    }
    let mut out = Parsed::default();
    for ((i, line, rec), (_, gline, grec)) in reports.rows.iter().zip(&golds.rows) {
        let (line, gline) = (*line, *gline);
        let url = reports.get(rec, "URL", path, line)?;
        if golds.get(grec, "URL", gold_path, gline)? != url {
            return Err(perr(
                gold_path,
                gline,
                Some("URL"),
                format!("does not match line {line} of {} ({url})", path.display()),
            ));
        }
        let gold = grec
            .get(golds.columns["GT"])
            .filter(|g| !g.trim().is_empty())
            .ok_or_else(|| perr(gold_path, gline, Some("GT"), "empty value"))?;
        out.rows.push(Row {
            item: Item {
                id: i.to_string(),
                prompt: prompts::ctibench(reports.raw(rec, "Prompt", path, line)?),
                gold: gold.to_owned(),
                subject: None,
                question: reports.get(rec, "Text", path, line)?.to_owned(),
            },
            line: gline,
            gold_field: "GT",
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// CyberMetric: {"questions": [{question, answers: {A..D}, solution}, ...]}

#[derive(Deserialize)]
struct CmFile {
    questions: Vec<CmQuestion>,
}

#[derive(Deserialize)]
struct CmQuestion {
    question: String,
    answers: BTreeMap<String, String>,
    solution: String,
}

/// The 1-based line on which each JSON object at nesting `depth` opens (1: the elements of a
/// top-level array; 2: those of an array under a top-level key, CyberMetric's `questions`).
fn object_lines(text: &str, depth: usize) -> Vec<usize> {
    let (mut line, mut level) = (1usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    let mut lines = Vec::new();
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => {
                if c == '{' && level == depth {
                    lines.push(line);
                }
                level += 1;
            }
            '}' | ']' => level = level.saturating_sub(1),
            _ => {}
        }
    }
    lines
}

fn cybermetric(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let file: CmFile =
        serde_json::from_str(text).map_err(|e| perr(path, e.line(), None, e.to_string()))?;
    let lines = object_lines(text, 2);
    let mut out = Parsed::default();
    for (i, q) in file.questions.into_iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(0);
        let question = q.question.trim();
        if question.is_empty() {
            return Err(perr(path, line, Some("question"), "empty question"));
        }
        let keys: Vec<&str> = q.answers.keys().map(String::as_str).collect();
        if keys != ["A", "B", "C", "D"] {
            return Err(perr(
                path,
                line,
                Some("answers"),
                format!("expected options A, B, C, D, found {keys:?}"),
            ));
        }
        let choices: Vec<String> = q.answers.into_values().collect();
        out.rows.push(Row {
            item: Item {
                id: i.to_string(),
                prompt: prompts::mcq_chat(question, &choices, false),
                gold: q.solution.trim().to_ascii_uppercase(),
                subject: None,
                question: question.to_owned(),
            },
            line,
            gold_field: "solution",
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// MMLU: no header, `question, A, B, C, D, answer`, RFC-4180 quoting.

fn mmlu(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut lines = Lines::new(text);
    let mut out = Parsed::default();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_err(&mut lines, path, &e))?;
        let line = record.position().map_or(0, |p| lines.at(p.byte()));
        if record.len() != 6 {
            return Err(perr(
                path,
                line,
                None,
                format!(
                    "{} fields, expected 6 (question, A, B, C, D, answer)",
                    record.len()
                ),
            ));
        }
        const NAMES: [&str; 6] = ["question", "A", "B", "C", "D", "answer"];
        for (value, name) in record.iter().zip(NAMES) {
            if value.trim().is_empty() {
                return Err(perr(path, line, Some(name), "empty value"));
            }
        }
        let question = record[0].trim();
        let choices: Vec<String> = (1..5).map(|k| record[k].to_owned()).collect();
        out.rows.push(Row {
            item: Item {
                id: i.to_string(),
                prompt: prompts::mcq_chat(question, &choices, false),
                gold: record[5].trim().to_ascii_uppercase(),
                subject: Some("computer_security".to_owned()),
                question: question.to_owned(),
            },
            line,
            gold_field: "answer",
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// JSON Lines (SecBench, SecEval)

/// (0-based row index, 1-based line, object).
type JsonRow = (usize, usize, serde_json::Map<String, Value>);

/// The non-blank lines of a JSONL file as (0-based row index, 1-based line, object).
fn jsonl(text: &str, path: &Path) -> Result<Vec<JsonRow>, BenchmarkError> {
    let mut rows = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(obj)) => rows.push((rows.len(), line, obj)),
            Ok(other) => {
                return Err(perr(
                    path,
                    line,
                    None,
                    format!("expected a JSON object, found {}", json_kind(&other)),
                ))
            }
            Err(e) => return Err(perr(path, line, None, format!("invalid JSON: {e}"))),
        }
    }
    Ok(rows)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<&'a str, BenchmarkError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(perr(
            path,
            line,
            Some(key),
            format!("expected a string, found {}", json_kind(other)),
        )),
        None => Err(perr(path, line, Some(key), "missing")),
    }
}

/// [`json_str`], refusing a blank value.
fn json_non_empty<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<&'a str, BenchmarkError> {
    let value = json_str(obj, key, path, line)?;
    if value.trim().is_empty() {
        return Err(perr(path, line, Some(key), "empty value"));
    }
    Ok(value)
}

/// Four option strings.
fn json_choices(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<Vec<String>, BenchmarkError> {
    let bad = |detail: String| perr(path, line, Some(key), detail);
    let Some(value) = obj.get(key) else {
        return Err(bad("missing".to_owned()));
    };
    let Value::Array(items) = value else {
        return Err(bad(format!(
            "expected an array, found {}",
            json_kind(value)
        )));
    };
    if items.len() != 4 {
        return Err(bad(format!("{} options, expected 4", items.len())));
    }
    items
        .iter()
        .map(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            other => Err(bad(format!(
                "options must be non-empty strings, found {other}"
            ))),
        })
        .collect()
}

/// SecBench's Chinese `domain` values → the README's English names.
fn secbench_domain(domain: &str) -> &str {
    match domain {
        "安全管理" => "Security Management",
        "数据安全" => "Data Security",
        "网络与基础架构安全" => "Network and Infrastructure Security",
        "安全标准与法规" => "Security Standards and Regulations",
        "应用安全" => "Application Security",
        "身份与访问控制" => "Identity and Access Control",
        "基础软硬件与技术" => "Fundamental Software, Hardware and Technology",
        "端点与主机安全" => "Endpoint and Host Security",
        "云安全" => "Cloud Security",
        other => other,
    }
}

/// SecBench English MCQs, single answer: rows whose label is not one option letter A–D
/// (SecBench's multi-letter labels, an out-of-range `E`) are dropped and counted in the notes.
fn secbench(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut out = Parsed::default();
    let mut dropped: Vec<String> = Vec::new();
    for (i, line, obj) in jsonl(text, path)? {
        let question = json_str(&obj, "question", path, line)?.trim();
        if question.is_empty() {
            return Err(perr(path, line, Some("question"), "empty question"));
        }
        let choices = json_choices(&obj, "answers", path, line)?;
        let label = json_str(&obj, "label", path, line)?
            .trim()
            .to_ascii_uppercase();
        let single = label.len() == 1 && label.chars().all(|c| ChoiceSpec::SINGLE_ABCD.allows(c));
        if !single {
            dropped.push(format!("line {line} ({label:?})"));
            continue;
        }
        let subject = match obj.get("domain") {
            Some(Value::String(d)) => Some(secbench_domain(d).to_owned()),
            _ => None,
        };
        out.rows.push(Row {
            item: Item {
                id: i.to_string(),
                prompt: prompts::mcq_chat(question, &choices, false),
                gold: label,
                subject,
                question: question.to_owned(),
            },
            line,
            gold_field: "label",
        });
    }
    out.note_dropped("whose label is not a single option letter A–D", &dropped);
    Ok(out)
}

/// SecEval: multi-answer MCQs (exact set). Choices carry an `"A: "` prefix, removed here.
/// Rows whose answer is not a set of distinct letters A–D (7 empty answers, 2 `"AA"`) are
/// dropped and counted in the notes: they cannot be graded.
fn seceval(text: &str, path: &Path) -> Result<Parsed, BenchmarkError> {
    let mut out = Parsed::default();
    let mut dropped: Vec<String> = Vec::new();
    for (_, line, obj) in jsonl(text, path)? {
        let id = json_str(&obj, "id", path, line)?.trim();
        if id.is_empty() {
            return Err(perr(path, line, Some("id"), "empty id"));
        }
        let question = json_str(&obj, "question", path, line)?.trim();
        if question.is_empty() {
            return Err(perr(path, line, Some("question"), "empty question"));
        }
        let choices: Vec<String> = json_choices(&obj, "choices", path, line)?
            .into_iter()
            .zip(['A', 'B', 'C', 'D'])
            .map(|(c, letter)| {
                let t = c.trim_start();
                t.strip_prefix(letter)
                    .and_then(|r| r.strip_prefix(':'))
                    .map_or_else(|| c.clone(), |r| r.trim().to_owned())
            })
            .collect();
        let answer = json_str(&obj, "answer", path, line)?.trim();
        let gold = answer
            .parse::<LetterSet>()
            .ok()
            .filter(|s| s.first_outside(&ChoiceSpec::MULTI_ABCD).is_none());
        let Some(gold) = gold else {
            dropped.push(format!("{id} ({answer:?}, line {line})"));
            continue;
        };
        let subject = match obj.get("source") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        out.rows.push(Row {
            item: Item {
                id: id.to_owned(),
                prompt: prompts::mcq_chat(question, &choices, true),
                gold: gold.to_string(),
                subject,
                question: question.to_owned(),
            },
            line,
            gold_field: "answer",
        });
    }
    out.note_dropped(
        "whose answer is not a set of distinct letters A–D",
        &dropped,
    );
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// BIG-Bench Hard: `bbh/<task>.json` ({"canary", "examples": [{"input", "target"}]}) and
// `cot-prompts/<task>.txt` (canary, `-----`, description and three exemplars) per task.

/// BBH: every task of [`bbh::TASKS`] from its task file and its CoT prompt file, found among
/// the main file and the companions by name. Items are `<task>/<index>` (0-based, file order),
/// with the task as subject; each target is checked against the task's answer type here, so
/// that an error names the task's own file.
fn bbh(
    text: &str,
    path: &Path,
    companions: &[(std::path::PathBuf, String)],
) -> Result<Parsed, BenchmarkError> {
    let files: Vec<(&Path, &str)> = std::iter::once((path, text))
        .chain(companions.iter().map(|(p, t)| (p.as_path(), t.as_str())))
        .collect();
    let find = |task: &str, ext: &str| {
        files
            .iter()
            .find(|(p, _)| {
                p.file_stem().is_some_and(|s| s == task) && p.extension().is_some_and(|e| e == ext)
            })
            .copied()
            .ok_or_else(|| {
                perr(
                    path,
                    0,
                    None,
                    format!("no {task}.{ext} among the BBH files"),
                )
            })
    };
    let mut out = Parsed::default();
    for (task, answer) in bbh::TASKS {
        let (prompt_path, prompt_text) = find(task, "txt")?;
        let exemplars = bbh_exemplars(prompt_text, prompt_path)?;
        let (examples_path, examples_text) = find(task, "json")?;
        for (i, line, input, target) in bbh_examples(examples_text, examples_path)? {
            bbh::parse_gold(&target, answer).map_err(|e| {
                perr(
                    examples_path,
                    line,
                    Some("target"),
                    format!("example {i}: {e}"),
                )
            })?;
            out.rows.push(Row {
                item: Item {
                    id: format!("{task}/{i}"),
                    prompt: prompts::bbh_cot_fewshot(exemplars, &input),
                    gold: target,
                    subject: Some(task.to_owned()),
                    question: input,
                },
                line,
                gold_field: "target",
            });
        }
    }
    Ok(out)
}

/// The task description and exemplars of a CoT prompt file: its text after the canary line
/// and the `-----` line, which lm-eval's prompt does not contain.
fn bbh_exemplars<'t>(text: &'t str, path: &Path) -> Result<&'t str, BenchmarkError> {
    let mut parts = text.splitn(3, '\n');
    let (_canary, rule, body) = (parts.next(), parts.next(), parts.next());
    if rule != Some("-----") {
        return Err(perr(
            path,
            2,
            None,
            "expected the line \"-----\" after the canary",
        ));
    }
    match body {
        Some(b) if !b.trim().is_empty() => Ok(b),
        _ => Err(perr(path, 3, None, "no task description and exemplars")),
    }
}

/// (0-based index, 1-based line, input, target) of each example of a BBH task file.
type BbhExample = (usize, usize, String, String);

fn bbh_examples(text: &str, path: &Path) -> Result<Vec<BbhExample>, BenchmarkError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| perr(path, e.line(), None, e.to_string()))?;
    let Some(Value::Array(examples)) = value.get("examples") else {
        return Err(perr(path, 1, Some("examples"), "missing or not an array"));
    };
    let lines = object_lines(text, 2);
    let mut out = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(1);
        let Value::Object(obj) = example else {
            return Err(perr(
                path,
                line,
                Some("examples"),
                format!(
                    "example {i}: expected an object, found {}",
                    json_kind(example)
                ),
            ));
        };
        let field = |key: &str| {
            json_str(obj, key, path, line).map_err(|e| match e {
                BenchmarkError::Parse {
                    path,
                    line,
                    field,
                    detail,
                } => BenchmarkError::Parse {
                    path,
                    line,
                    field,
                    detail: format!("example {i}: {detail}"),
                },
                other => other,
            })
        };
        out.push((
            i,
            line,
            field("input")?.to_owned(),
            field("target")?.to_owned(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_lines_skip_strings() {
        let text =
            "{\n \"questions\": [\n{\"question\": \"a {b\\\" [\"},\n\n{\"question\": \"x\"}]}";
        assert_eq!(object_lines(text, 2), vec![3, 5]);
        assert_eq!(
            object_lines("[\n {\"a\": {\"b\": 1}},\n\n {}\n]", 1),
            vec![2, 4]
        );
    }
}
