//! SQLite audit log of every completion request: who asked (key id), what (messages), under
//! which system prompt (its hash), what came back (reasoning and answer), the guard verdicts,
//! token counts, latency and outcome.
//!
//! Requests hand records to a writer thread over a channel, so a slow disk never delays a
//! response; the database runs in WAL mode so `metis audit` can read while the server writes.

use std::path::Path;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;

/// One audited request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch when the request arrived.
    pub unix_ms: i64,
    pub key_id: Option<String>,
    /// `chat.completions` or `completions`.
    pub endpoint: String,
    pub model: String,
    pub system_prompt_sha256: Option<String>,
    /// The rendered conversation (after the system-prompt policy), or the raw prompt.
    pub messages: Value,
    pub reasoning: Option<String>,
    pub answer: Option<String>,
    /// Guard verdicts, a JSON array.
    pub guard: Value,
    /// True when a guard verdict replaced the request or the answer.
    pub blocked: bool,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub latency_ms: u64,
    /// HTTP status.
    pub status: u16,
    /// `stop`, `length`, `content_filter`, `cancelled`, or the error message's type.
    pub finish_reason: Option<String>,
}

/// A stored record as read back, with its row id and time.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    /// RFC 3339 (UTC).
    pub time: String,
    #[serde(flatten)]
    pub record: AuditRecord,
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(mpsc::SyncSender<()>),
}

/// Handle to the audit writer thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    unix_ms INTEGER NOT NULL,
    key_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    system_prompt_sha256 TEXT,
    messages TEXT NOT NULL,
    reasoning TEXT,
    answer TEXT,
    guard TEXT NOT NULL,
    blocked INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    finish_reason TEXT
);
CREATE INDEX IF NOT EXISTS requests_time ON requests(unix_ms);
CREATE INDEX IF NOT EXISTS requests_key ON requests(key_id);
";

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

impl AuditLog {
    /// Opens (creating if needed) the database and starts the writer thread.
    pub fn open(path: &Path) -> rusqlite::Result<AuditLog> {
        let conn = open(path)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("metis-audit".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(AuditLog { tx })
    }

    /// Queues a record; never blocks.
    pub fn log(&self, record: AuditRecord) {
        if self.tx.send(Msg::Record(Box::new(record))).is_err() {
            tracing::error!("audit writer is gone; record dropped");
        }
    }

    /// Waits until every record queued before this call is committed.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

fn writer(conn: Connection, rx: mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        // Commit whatever is queued in one transaction: one fsync for a burst of requests.
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let mut flushes = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let txn = conn.unchecked_transaction()?;
            for m in batch {
                match m {
                    Msg::Record(r) => insert(&txn, &r)?,
                    Msg::Flush(done) => flushes.push(done),
                }
            }
            txn.commit()
        })();
        if let Err(e) = result {
            tracing::error!("audit write failed: {e}");
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn insert(conn: &Connection, r: &AuditRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO requests (time, unix_ms, key_id, endpoint, model, system_prompt_sha256,
            messages, reasoning, answer, guard, blocked, prompt_tokens, completion_tokens,
            latency_ms, status, finish_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            rfc3339(r.unix_ms),
            r.unix_ms,
            r.key_id,
            r.endpoint,
            r.model,
            r.system_prompt_sha256,
            r.messages.to_string(),
            r.reasoning,
            r.answer,
            r.guard.to_string(),
            r.blocked,
            r.prompt_tokens as i64,
            r.completion_tokens as i64,
            r.latency_ms as i64,
            r.status,
            r.finish_reason,
        ],
    )?;
    Ok(())
}

/// Which records to read back.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub key_id: Option<String>,
    /// Only records at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only records a guard blocked.
    pub blocked_only: bool,
    /// Most recent N (all when None).
    pub limit: Option<usize>,
}

/// Reads records, oldest first (the `limit` most recent ones when limited).
pub fn query(path: &Path, filter: &AuditFilter) -> rusqlite::Result<Vec<AuditRow>> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut sql = String::from(
        "SELECT id, time, unix_ms, key_id, endpoint, model, system_prompt_sha256, messages,
                reasoning, answer, guard, blocked, prompt_tokens, completion_tokens, latency_ms,
                status, finish_reason FROM requests WHERE 1=1",
    );
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(k) = &filter.key_id {
        sql.push_str(" AND key_id = ?");
        args.push(Box::new(k.clone()));
    }
    if let Some(s) = filter.since_ms {
        sql.push_str(" AND unix_ms >= ?");
        args.push(Box::new(s));
    }
    if filter.blocked_only {
        sql.push_str(" AND blocked = 1");
    }
    sql.push_str(" ORDER BY id DESC");
    if let Some(n) = filter.limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    let mut stmt = conn.prepare(&sql)?;
    let json = |s: String| serde_json::from_str(&s).unwrap_or(Value::String(s));
    let mut rows: Vec<AuditRow> = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), |row| {
            Ok(AuditRow {
                id: row.get(0)?,
                time: row.get(1)?,
                record: AuditRecord {
                    unix_ms: row.get(2)?,
                    key_id: row.get(3)?,
                    endpoint: row.get(4)?,
                    model: row.get(5)?,
                    system_prompt_sha256: row.get(6)?,
                    messages: json(row.get(7)?),
                    reasoning: row.get(8)?,
                    answer: row.get(9)?,
                    guard: json(row.get(10)?),
                    blocked: row.get(11)?,
                    prompt_tokens: row.get::<_, i64>(12)? as usize,
                    completion_tokens: row.get::<_, i64>(13)? as usize,
                    latency_ms: row.get::<_, i64>(14)? as u64,
                    status: row.get(15)?,
                    finish_reason: row.get(16)?,
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.reverse();
    Ok(rows)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC text of a time in ms since the epoch (`2026-01-28T12:00:00.123Z`).
pub fn rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `--since`: Unix seconds, or RFC 3339 (`2026-01-28T12:00:00Z`, fractional seconds
/// and `±HH:MM` offsets allowed, or a bare date `2026-01-28` meaning midnight UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs * 1000);
    }
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if s.get(4..5)? != "-"
        || s.get(7..8)? != "-"
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if s.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(s.get(10..11)?, "T" | "t" | " ") || s.get(13..14)? != ":" || s.get(16..17)? != ":"
    {
        return None;
    }
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        let padded = format!("{:0<3}", &digits[..digits.len().min(3)]);
        ms = padded.parse().ok()?;
        rest = &frac[digits.len()..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.len() != 6 || rest.get(3..4)? != ":" {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        let t = parse_time("2026-01-28T12:34:56.789Z").unwrap();
        assert_eq!(rfc3339(t), "2026-01-28T12:34:56.789Z");
        assert_eq!(parse_time("2026-01-28T14:34:56+02:00").unwrap(), t - 789);
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000));
        assert_eq!(
            parse_time("2024-02-29").map(rfc3339).unwrap(),
            "2024-02-29T00:00:00.000Z"
        );
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn write_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        let log = AuditLog::open(&path).unwrap();
        for (i, key) in ["a", "b", "a"].iter().enumerate() {
            log.log(AuditRecord {
                unix_ms: 1000 * i as i64,
                key_id: Some(key.to_string()),
                endpoint: "chat.completions".into(),
                model: "m".into(),
                messages: serde_json::json!([{"role":"user","content":"hi"}]),
                guard: serde_json::json!([]),
                blocked: i == 2,
                status: 200,
                ..Default::default()
            });
        }
        log.flush();
        let all = query(&path, &AuditFilter::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].record.messages[0]["content"], "hi");
        let f = AuditFilter {
            key_id: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(query(&path, &f).unwrap().len(), 2);
        let f = AuditFilter {
            blocked_only: true,
            ..Default::default()
        };
        assert_eq!(query(&path, &f).unwrap()[0].record.unix_ms, 2000);
        let f = AuditFilter {
            since_ms: Some(1000),
            limit: Some(1),
            ..Default::default()
        };
        let r = query(&path, &f).unwrap();
        assert_eq!((r.len(), r[0].record.unix_ms), (1, 2000));
    }
}
