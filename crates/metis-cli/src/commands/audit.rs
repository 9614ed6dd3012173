//! `metis audit`: list, filter and export the server's SQLite audit log.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use metis_serve::audit::{parse_time, query, AuditFilter, AuditRow};

#[derive(clap::Args)]
pub struct Args {
    /// The audit database written by `metis serve`.
    #[arg(long, default_value = "metis-audit.sqlite")]
    db: PathBuf,
    /// Only requests made with this API key id.
    #[arg(long)]
    key: Option<String>,
    /// Only requests at or after this time: RFC 3339 (2026-01-28T12:00:00Z), a date, or Unix
    /// seconds.
    #[arg(long)]
    since: Option<String>,
    /// Only requests the guardrail blocked.
    #[arg(long)]
    blocked: bool,
    /// The N most recent matching requests.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per request instead of a table.
    #[arg(long)]
    jsonl: bool,
}

/// At most `n` characters of `s` on one line.
fn cell(s: &str, n: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= n {
        flat
    } else {
        let mut t: String = flat.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The last user message (chat) or the prompt (completions).
fn request_text(row: &AuditRow) -> String {
    match &row.record.messages {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(m) => m
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.db.exists() {
        anyhow::bail!("no audit database at {}", args.db.display());
    }
    let since_ms = match &args.since {
        Some(s) => Some(parse_time(s).with_context(|| {
            format!(
                "--since {s:?}: expected RFC 3339 (2026-01-28T12:00:00Z), a date or Unix seconds"
            )
        })?),
        None => None,
    };
    let filter = AuditFilter {
        key_id: args.key.clone(),
        since_ms,
        blocked_only: args.blocked,
        limit: args.limit,
    };
    let rows =
        query(&args.db, &filter).with_context(|| format!("reading {}", args.db.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.jsonl {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<24}  {:<10}  {:>6}  {:<14}  {:>7}  {:>6}  {:>8}  {:<30}  answer",
        "id", "time", "key", "status", "finish", "prompt", "compl", "ms", "request"
    )?;
    for r in &rows {
        let rec = &r.record;
        let finish = match (rec.blocked, rec.finish_reason.as_deref()) {
            (true, f) => format!("{} (blocked)", f.unwrap_or("")),
            (false, f) => f.unwrap_or("").to_owned(),
        };
        writeln!(
            out,
            "{:>6}  {:<24}  {:<10}  {:>6}  {:<14}  {:>7}  {:>6}  {:>8}  {:<30}  {}",
            r.id,
            r.time,
            cell(rec.key_id.as_deref().unwrap_or("-"), 10),
            rec.status,
            cell(&finish, 14),
            rec.prompt_tokens,
            rec.completion_tokens,
            rec.latency_ms,
            cell(&request_text(r), 30),
            cell(rec.answer.as_deref().unwrap_or(""), 40),
        )?;
    }
    eprintln!("{} request(s)", rows.len());
    Ok(())
}
