//! Prompt-file benchmarks: a JSONL file of prompt records, evaluated like a built-in benchmark.
//!
//! The records are the ones `metis train grpo --prompts` trains on and `metis eval
//! export-prompts` writes (`id`, `messages`, `task`, `gold`, `verifier`; see
//! `metis_verify::record`), so a held-out split of an RL prompt set is scored by exactly the
//! verifier spec its rewards used. [`load_prompt_file`] turns a file into a [`Benchmark`]
//! whose spec is made for it: id from the caller (by default the file stem), the records'
//! task, metric `accuracy`, the file's path as its source and its SHA-256 as the data
//! fingerprint, so results of an edited file never mix with stored ones.
//!
//! A record must hold exactly one `user` message: the prompt of an [`Item`]. A system prompt
//! belongs to the run (`--system-prompt`), as for every benchmark. All records share one task.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use metis_verify::record::{record_gold, record_verifier, RecordError};
use metis_verify::{Protocol, Task, VerifierFactory, VerifierSpec};
use serde_json::{Map, Value};

use super::{
    file_sha256, specs, Benchmark, BenchmarkError, BenchmarkSpec, DataFile, Format, Item,
    RemoteSource, Transform,
};

/// Loads `path` as benchmark `id` (must differ from every built-in id); verifier catalogs
/// (CWE, ATT&CK) come from `data_root`, and records without a `verifier.protocol` use
/// `protocol`.
pub fn load_prompt_file(
    id: &str,
    path: &Path,
    data_root: Option<&Path>,
    protocol: Protocol,
) -> Result<Benchmark, BenchmarkError> {
    check_id(id, path)?;
    let io = |source| BenchmarkError::Io {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut factory = VerifierFactory::new(data_root);
    let records = read_records(&text, path, protocol, &mut factory)?;
    let task = common_task(&records, path)?;
    let fallback = factory
        .build(&VerifierSpec {
            task: Some(task),
            protocol: Some(protocol),
            ..VerifierSpec::default()
        })
        .map_err(|e| parse_error(path, 0, None, e.to_string()))?;
    let mut catalog_sha256 = std::collections::BTreeMap::new();
    if let Some(root) = data_root {
        for file in factory.catalogs_used() {
            catalog_sha256.insert(file.clone(), file_sha256(&root.join(file))?);
        }
    }
    let index = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.item.id.clone(), i))
        .collect();
    let (items, (specs, verifiers)): (Vec<Item>, (Vec<_>, Vec<_>)) = records
        .into_iter()
        .map(|r| (r.item, (r.spec, r.verifier)))
        .unzip();
    Ok(Benchmark {
        spec: spec_for(id, path, task, items.len()),
        items,
        data_sha256: file_sha256(path)?,
        data_path: path.to_owned(),
        catalog_sha256,
        notes: factory.notes().to_vec(),
        protocol,
        specs,
        verifiers,
        fallback,
        index,
    })
}

/// The benchmark id of a `--prompts` argument: `NAME=PATH`, else the file stem.
pub fn prompt_file_id(arg: &str) -> (String, std::path::PathBuf) {
    match arg.split_once('=') {
        Some((name, path)) if !name.is_empty() && !name.contains(['/', '\\']) => {
            (name.to_owned(), path.into())
        }
        _ => {
            let path = std::path::PathBuf::from(arg);
            let stem = path
                .file_stem()
                .map_or_else(|| arg.to_owned(), |s| s.to_string_lossy().into_owned());
            (stem, path)
        }
    }
}

fn check_id(id: &str, path: &Path) -> Result<(), BenchmarkError> {
    if id.is_empty() || specs().iter().any(|s| s.id == id) {
        return Err(parse_error(
            path,
            0,
            None,
            format!("{id:?} cannot name a prompt file: it is empty or a built-in benchmark's id (give NAME=PATH)"),
        ));
    }
    Ok(())
}

/// One record read: the item and how it is graded.
struct Record {
    item: Item,
    line: usize,
    task: Task,
    spec: VerifierSpec,
    verifier: Arc<dyn metis_verify::Verifier>,
}

fn read_records(
    text: &str,
    path: &Path,
    protocol: Protocol,
    factory: &mut VerifierFactory,
) -> Result<Vec<Record>, BenchmarkError> {
    let mut records: Vec<Record> = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = read_record(line, lineno, protocol, factory)
            .map_err(|e| parse_error(path, lineno, e.field, e.message))?;
        if let Some(&first) = first_line.get(&record.item.id) {
            return Err(BenchmarkError::DuplicateId {
                path: path.to_owned(),
                id: record.item.id,
                first_line: first,
                line: lineno,
            });
        }
        first_line.insert(record.item.id.clone(), lineno);
        records.push(record);
    }
    if records.is_empty() {
        return Err(parse_error(path, 0, None, "no prompt records".to_owned()));
    }
    Ok(records)
}

fn read_record(
    line: &str,
    lineno: usize,
    protocol: Protocol,
    factory: &mut VerifierFactory,
) -> Result<Record, RecordError> {
    let err = |field, message: String| RecordError { field, message };
    let value: Value =
        serde_json::from_str(line).map_err(|e| err(None, format!("bad JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(err(None, "a record must be a JSON object".to_owned()));
    };
    let run_defaults = |_| VerifierSpec {
        protocol: Some(protocol),
        ..VerifierSpec::default()
    };
    let (spec, verifier) = record_verifier(&obj, run_defaults, factory)?;
    let (gold_json, _) = record_gold(&obj, &*verifier)?;
    let gold = gold_as_text(&gold_json);
    // The item stores its gold as text; make sure the text form grades like the JSON form.
    verifier
        .parse_gold(&gold)
        .map_err(|e| err(Some("gold"), e.to_string()))?;
    let prompt = user_prompt(&obj).map_err(|m| err(Some("messages"), m))?;
    let task = spec.task().map_err(|e| err(Some("task"), e.to_string()))?;
    Ok(Record {
        item: Item {
            id: record_id(&obj, lineno)?,
            question: prompt.clone(),
            prompt,
            gold,
            subject: None,
        },
        line: lineno,
        task,
        spec,
        verifier,
    })
}

fn record_id(obj: &Map<String, Value>, lineno: usize) -> Result<String, RecordError> {
    match obj.get("id") {
        None | Some(Value::Null) => Ok(format!("line-{lineno}")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(RecordError {
            field: Some("id"),
            message: format!("must be a non-empty string or a number, got {other}"),
        }),
    }
}

/// The content of the record's one `user` message.
fn user_prompt(obj: &Map<String, Value>) -> Result<String, String> {
    let messages = obj.get("messages").ok_or("missing")?;
    let one_user = messages.as_array().and_then(|m| match m.as_slice() {
        [only] if only.get("role").and_then(Value::as_str) == Some("user") => {
            only.get("content").and_then(Value::as_str)
        }
        _ => None,
    });
    one_user.map(str::to_owned).ok_or_else(|| {
        "must be exactly one {\"role\": \"user\", \"content\": string} message (a system prompt is set for the whole run with --system-prompt)".to_owned()
    })
}

/// The gold as the item stores it: a string as is, an IFEval object as JSON text, a number
/// in decimal, a set joined by commas.
fn gold_as_text(gold: &Value) -> String {
    match gold {
        Value::String(s) => s.clone(),
        Value::Array(_) => metis_verify::verifier::gold_text(gold).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn common_task(records: &[Record], path: &Path) -> Result<Task, BenchmarkError> {
    let task = records[0].task;
    match records.iter().find(|r| r.task != task) {
        Some(r) => Err(parse_error(
            path,
            r.line,
            Some("task"),
            format!(
                "{} differs from the file's first task {task}: a prompt-file benchmark has one task",
                r.task
            ),
        )),
        None => Ok(task),
    }
}

fn parse_error(path: &Path, line: usize, field: Option<&str>, detail: String) -> BenchmarkError {
    BenchmarkError::Parse {
        path: path.to_owned(),
        line,
        field: field.map(str::to_owned),
        detail,
    }
}

/// The spec of a prompt file. Built-in specs are `'static`; a prompt file's is made once per
/// (id, path, task, size) and kept for the life of the process, so a process that loads the
/// same file many times (a resumed evaluation, a demo's rounds) holds one copy.
fn spec_for(id: &str, path: &Path, task: Task, items: usize) -> &'static BenchmarkSpec {
    type Key = (String, String, Task, usize);
    static SPECS: Mutex<Vec<(Key, &'static BenchmarkSpec)>> = Mutex::new(Vec::new());
    let key: Key = (id.to_owned(), path.display().to_string(), task, items);
    let mut made = SPECS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, spec)) = made.iter().find(|(k, _)| *k == key) {
        return spec;
    }
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let title = leak(format!("prompt file {}", key.1));
    let files: &'static [DataFile] = Box::leak(Box::new([DataFile {
        path: title,
        remote_path: "",
        transform: Transform::None,
        sha256: super::UNPINNED,
    }]));
    let spec: &'static BenchmarkSpec = Box::leak(Box::new(BenchmarkSpec {
        id: leak(key.0.clone()),
        title,
        task,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: RemoteSource::LocalFile,
        items,
        shots: "as in the file",
        protocol: "the records' verifier specs",
        licence: "the file's own",
        files,
        format: Format::PromptFile,
    }));
    made.push((key, spec));
    spec
}
