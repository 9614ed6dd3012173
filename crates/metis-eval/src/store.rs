//! SQLite response store: every model response is committed as it arrives, keyed by
//! `(benchmark, item, trial, model, params_hash)`, so an interrupted run resumes where it
//! stopped and `--rescore` can re-grade stored responses without querying again.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`. A committed
//! transaction survives the process being killed (the WAL is written before `COMMIT`
//! returns); only an OS crash or power loss can lose the last few transactions, and never
//! corrupts the database. That is the failure that matters for long evaluation runs, and it
//! keeps batched commits fast (no fsync per transaction).
//!
//! Upsert rule: an `Ok` record is never replaced by a `Failed` one; anything else replaces the
//! stored record (a `Failed` one by a newer attempt, an `Ok` one by a newer `Ok`). The first
//! insertion time and the last update time (unix ms) are kept per record.
//!
//! Judged benchmarks (AlpacaEval) keep each judge verdict in a `judgments` table, keyed by the
//! response it judges and the exact judge request ([`JudgmentKey`]), with the same upsert rule,
//! so that a killed judging pass resumes without asking the judge again. The table is created
//! whenever a store is opened (`CREATE TABLE IF NOT EXISTS`), so stores written before it
//! existed gain it without a schema migration.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Identity of one response: one trial of one item of a benchmark, by one model, under one
/// prompt + generation parameter set (`params_hash`, computed by the caller).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResponseKey {
    pub benchmark: String,
    pub item: String,
    pub trial: u32,
    pub model: String,
    pub params_hash: String,
}

/// Outcome of a request.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        match s {
            "ok" => Some(Status::Ok),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// One stored response (or failure) with its request metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResponseRecord {
    pub key: ResponseKey,
    pub status: Status,
    pub response: Option<String>,
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    pub latency_ms: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// `"query"` (obtained from an endpoint) or `"import"` (loaded from a file).
    pub source: String,
    /// The deployment's guardrail checks on this request, as JSON (a list of
    /// [`metis_openai::GuardCheck`]); `None` when no guard ran.
    #[serde(default)]
    pub guard: Option<String>,
}

/// Identity of one judgment: the judged response (benchmark, item, trial, model) and the judge
/// request (the judge model and `request_hash`, a hash of the exact messages and parameters
/// sent: a changed answer, reference or template is a different request).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct JudgmentKey {
    pub benchmark: String,
    pub item: String,
    pub trial: u32,
    pub model: String,
    pub judge: String,
    pub request_hash: String,
}

/// One stored judge verdict (or a failed judge request).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JudgmentRecord {
    pub key: JudgmentKey,
    /// The `params_hash` of the judged response (provenance).
    pub params_hash: String,
    /// The judge endpoint that answered.
    pub judge_url: Option<String>,
    pub status: Status,
    /// Whether the judge saw the judged answer first (AlpacaEval's order randomisation).
    pub swapped: bool,
    /// The judge's text.
    pub content: Option<String>,
    /// The top log-probabilities of the judge's first token, as returned.
    pub top_logprobs: Vec<metis_openai::TopLogprob>,
    /// The preference in AlpacaEval's scale (1 = reference wins, 2 = judged answer wins), in
    /// the unswapped order; `None` when the judge's answer gave no preference (judge-invalid).
    pub preference: Option<f64>,
    pub error: Option<String>,
    pub latency_ms: Option<u64>,
}

/// One run in the store: a distinct `(benchmark, model, params_hash)` with record counts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSummary {
    pub benchmark: String,
    pub model: String,
    pub params_hash: String,
    pub ok: usize,
    pub failed: usize,
    /// Unix ms of the most recent write to any record of the run.
    pub last_updated_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("response store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("response store: cannot create directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "response store {path} has schema version {found}, newer than the version {supported} \
         this metis understands; upgrade metis or use another store file"
    )]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("response store: invalid run info JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("response store: corrupt record: {0}")]
    Corrupt(String),
}

/// The response store. Owns one SQLite connection (`Send`, not `Sync`): give it to a single
/// writer task.
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS responses (
    benchmark         TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    params_hash       TEXT    NOT NULL,
    trial             INTEGER NOT NULL,
    item              TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    response          TEXT,
    reasoning         TEXT,
    finish_reason     TEXT,
    error             TEXT,
    attempts          INTEGER NOT NULL,
    latency_ms        INTEGER,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    source            TEXT    NOT NULL,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL,
    guard             TEXT,
    PRIMARY KEY (benchmark, model, params_hash, trial, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_info (
    benchmark   TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    params_hash TEXT    NOT NULL,
    info        TEXT    NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (benchmark, model, params_hash)
) WITHOUT ROWID;
";

/// Judge verdicts (see [`JudgmentRecord`]); created on every open, so older stores gain it.
const JUDGMENT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS judgments (
    benchmark     TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    trial         INTEGER NOT NULL,
    item          TEXT    NOT NULL,
    judge         TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    params_hash   TEXT    NOT NULL,
    judge_url     TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    swapped       INTEGER NOT NULL,
    content       TEXT,
    top_logprobs  TEXT    NOT NULL,
    preference    REAL,
    error         TEXT,
    latency_ms    INTEGER,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    PRIMARY KEY (benchmark, model, trial, item, judge, request_hash)
) WITHOUT ROWID;
";

const UPSERT_JUDGMENT: &str = "
INSERT INTO judgments (benchmark, model, trial, item, judge, request_hash, params_hash, judge_url,
    status, swapped, content, top_logprobs, preference, error, latency_ms, created_ms, updated_ms)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16)
ON CONFLICT (benchmark, model, trial, item, judge, request_hash) DO UPDATE SET
    params_hash = excluded.params_hash,
    judge_url = excluded.judge_url,
    status = excluded.status,
    swapped = excluded.swapped,
    content = excluded.content,
    top_logprobs = excluded.top_logprobs,
    preference = excluded.preference,
    error = excluded.error,
    latency_ms = excluded.latency_ms,
    updated_ms = excluded.updated_ms
WHERE NOT (judgments.status = 'ok' AND excluded.status = 'failed')
";

const UPSERT: &str = "
INSERT INTO responses (benchmark, model, params_hash, trial, item, status, response, reasoning,
    finish_reason, error, attempts, latency_ms, prompt_tokens, completion_tokens, source,
    created_ms, updated_ms, guard)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16, ?17)
ON CONFLICT (benchmark, model, params_hash, trial, item) DO UPDATE SET
    guard = excluded.guard,
    status = excluded.status,
    response = excluded.response,
    reasoning = excluded.reasoning,
    finish_reason = excluded.finish_reason,
    error = excluded.error,
    attempts = excluded.attempts,
    latency_ms = excluded.latency_ms,
    prompt_tokens = excluded.prompt_tokens,
    completion_tokens = excluded.completion_tokens,
    source = excluded.source,
    updated_ms = excluded.updated_ms
WHERE NOT (responses.status = 'ok' AND excluded.status = 'failed')
";

const SELECT_COLUMNS: &str = "benchmark, model, params_hash, trial, item, status, response, \
    reasoning, finish_reason, error, attempts, latency_ms, prompt_tokens, completion_tokens, source, \
    guard";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_sql_u64(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

fn from_sql_u64(v: Option<i64>) -> Option<u64> {
    v.map(|x| u64::try_from(x).unwrap_or(0))
}

fn row_to_record(row: &Row<'_>) -> rusqlite::Result<ResponseRecord> {
    let status: String = row.get(5)?;
    let status = Status::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            format!("unknown status {status:?}").into(),
        )
    })?;
    let trial: i64 = row.get(3)?;
    let attempts: i64 = row.get(10)?;
    Ok(ResponseRecord {
        key: ResponseKey {
            benchmark: row.get(0)?,
            model: row.get(1)?,
            params_hash: row.get(2)?,
            trial: u32::try_from(trial).unwrap_or(u32::MAX),
            item: row.get(4)?,
        },
        status,
        response: row.get(6)?,
        reasoning: row.get(7)?,
        finish_reason: row.get(8)?,
        error: row.get(9)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        latency_ms: from_sql_u64(row.get(11)?),
        prompt_tokens: from_sql_u64(row.get(12)?),
        completion_tokens: from_sql_u64(row.get(13)?),
        source: row.get(14)?,
        guard: row.get(15)?,
    })
}

/// A judgment row in the column order of [`Store::judgments`]' query.
fn row_to_judgment(row: &Row<'_>) -> rusqlite::Result<JudgmentRecord> {
    let corrupt = |col: usize, detail: String| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, detail.into())
    };
    let status: String = row.get(8)?;
    let status =
        Status::parse(&status).ok_or_else(|| corrupt(8, format!("unknown status {status:?}")))?;
    let top: String = row.get(11)?;
    let top_logprobs = serde_json::from_str(&top)
        .map_err(|e| corrupt(11, format!("top_logprobs {top:?}: {e}")))?;
    let trial: i64 = row.get(2)?;
    Ok(JudgmentRecord {
        key: JudgmentKey {
            benchmark: row.get(0)?,
            model: row.get(1)?,
            trial: u32::try_from(trial).unwrap_or(u32::MAX),
            item: row.get(3)?,
            judge: row.get(4)?,
            request_hash: row.get(5)?,
        },
        params_hash: row.get(6)?,
        judge_url: row.get(7)?,
        status,
        swapped: row.get(9)?,
        content: row.get(10)?,
        top_logprobs,
        preference: row.get(12)?,
        error: row.get(13)?,
        latency_ms: from_sql_u64(row.get(14)?),
    })
}

fn upsert(conn: &Connection, rec: &ResponseRecord, now: i64) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(UPSERT)?;
    let k = &rec.key;
    stmt.execute(params![
        k.benchmark,
        k.model,
        k.params_hash,
        i64::from(k.trial),
        k.item,
        rec.status.as_str(),
        rec.response,
        rec.reasoning,
        rec.finish_reason,
        rec.error,
        i64::from(rec.attempts),
        to_sql_u64(rec.latency_ms),
        to_sql_u64(rec.prompt_tokens),
        to_sql_u64(rec.completion_tokens),
        rec.source,
        now,
        rec.guard,
    ])?;
    Ok(())
}

/// Adds the `guard` column (the deployment's guardrail checks) to a store created before it
/// existed. Additive: older binaries name their columns and never see it, so the schema
/// version stays.
fn add_guard_column(conn: &Connection) -> Result<(), StoreError> {
    let has_guard = conn
        .prepare("SELECT 1 FROM pragma_table_info('responses') WHERE name = 'guard'")?
        .exists([])?;
    if !has_guard {
        conn.execute_batch("ALTER TABLE responses ADD COLUMN guard TEXT;")?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating directories, file and schema as needed) the store at `path`, in WAL
    /// mode with `synchronous=NORMAL` and a busy timeout. Fails with
    /// [`StoreError::NewerSchema`] if the file was written by a newer metis.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        Store::init(conn, Some(path.to_path_buf()))
    }

    /// Opens a private in-memory store (tests, dry runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Returns the resulting mode ("wal", or "memory" for in-memory databases).
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(32);

        let display = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| ":memory:".to_string());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: display,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            // Version 0 is a fresh file (migrations from older versions would go here).
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        add_guard_column(&tx)?;
        tx.execute_batch(JUDGMENT_SCHEMA)?;
        tx.commit()?;
        Ok(Store { conn, path })
    }

    /// The file backing the store (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Inserts or updates one record (see the module docs for the upsert rule).
    pub fn put(&mut self, rec: &ResponseRecord) -> Result<(), StoreError> {
        upsert(&self.conn, rec, now_ms())
    }

    /// Inserts or updates many records in one transaction, with the same rule as [`Store::put`].
    /// Either all of them are committed or none.
    pub fn put_batch(&mut self, recs: &[ResponseRecord]) -> Result<(), StoreError> {
        if recs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for rec in recs {
            upsert(&tx, rec, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The `(item, trial)` pairs of a run that have an `Ok` response.
    pub fn completed(
        &self,
        benchmark: &str,
        model: &str,
        params_hash: &str,
    ) -> Result<HashSet<(String, u32)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT item, trial FROM responses
             WHERE benchmark = ?1 AND model = ?2 AND params_hash = ?3 AND status = 'ok'",
        )?;
        let rows = stmt.query_map(params![benchmark, model, params_hash], |r| {
            let trial: i64 = r.get(1)?;
            Ok((r.get::<_, String>(0)?, trial))
        })?;
        let mut out = HashSet::new();
        for row in rows {
            let (item, trial) = row?;
            let trial = u32::try_from(trial)
                .map_err(|_| StoreError::Corrupt(format!("trial {trial} out of range")))?;
            out.insert((item, trial));
        }
        Ok(out)
    }

    /// All records (ok and failed) of a benchmark and model, for one parameter hash or all of
    /// them, ordered by trial then item (then parameter hash).
    pub fn records(
        &self,
        benchmark: &str,
        model: &str,
        params_hash: Option<&str>,
    ) -> Result<Vec<ResponseRecord>, StoreError> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM responses
             WHERE benchmark = ?1 AND model = ?2 AND (?3 IS NULL OR params_hash = ?3)
             ORDER BY trial, item, params_hash"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![benchmark, model, params_hash], row_to_record)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Calls `f` on every record of a benchmark and model (all parameter hashes), in the order
    /// of [`Store::records`], one row at a time: a store of any size is streamed, not loaded.
    /// `f`'s own error type stops the scan and is returned as is.
    pub fn for_each_record<E: From<StoreError>>(
        &self,
        benchmark: &str,
        model: &str,
        mut f: impl FnMut(ResponseRecord) -> Result<(), E>,
    ) -> Result<usize, E> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM responses
             WHERE benchmark = ?1 AND model = ?2
             ORDER BY trial, item, params_hash"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(StoreError::from)?;
        let mut rows = stmt
            .query(params![benchmark, model])
            .map_err(StoreError::from)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            f(row_to_record(row).map_err(StoreError::from)?)?;
            n += 1;
        }
        Ok(n)
    }

    /// Every distinct `(benchmark, model, params_hash)` with its ok/failed counts, ordered by
    /// benchmark, model, params_hash.
    pub fn runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT benchmark, model, params_hash,
                    SUM(status = 'ok'), SUM(status = 'failed'), MAX(updated_ms)
             FROM responses
             GROUP BY benchmark, model, params_hash
             ORDER BY benchmark, model, params_hash",
        )?;
        let rows = stmt.query_map([], |r| {
            let ok: i64 = r.get(3)?;
            let failed: i64 = r.get(4)?;
            Ok(RunSummary {
                benchmark: r.get(0)?,
                model: r.get(1)?,
                params_hash: r.get(2)?,
                ok: usize::try_from(ok).unwrap_or(0),
                failed: usize::try_from(failed).unwrap_or(0),
                last_updated_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Saves (replacing) the description of a run: generation parameters, system prompt, data
    /// fingerprint, metis version, command line, ...
    pub fn save_run_info(
        &mut self,
        benchmark: &str,
        model: &str,
        params_hash: &str,
        info: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(info)?;
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO run_info (benchmark, model, params_hash, info, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (benchmark, model, params_hash) DO UPDATE SET
                 info = excluded.info, updated_ms = excluded.updated_ms",
        )?;
        stmt.execute(params![benchmark, model, params_hash, json, now_ms()])?;
        Ok(())
    }

    /// Inserts or updates one judgment (same upsert rule as responses: an `Ok` judgment is
    /// never replaced by a `Failed` one), committed on return.
    pub fn put_judgment(&mut self, rec: &JudgmentRecord) -> Result<(), StoreError> {
        let k = &rec.key;
        let top = serde_json::to_string(&rec.top_logprobs)?;
        let mut stmt = self.conn.prepare_cached(UPSERT_JUDGMENT)?;
        stmt.execute(params![
            k.benchmark,
            k.model,
            i64::from(k.trial),
            k.item,
            k.judge,
            k.request_hash,
            rec.params_hash,
            rec.judge_url,
            rec.status.as_str(),
            rec.swapped,
            rec.content,
            top,
            rec.preference,
            rec.error,
            to_sql_u64(rec.latency_ms),
            now_ms(),
        ])?;
        Ok(())
    }

    /// Every judgment (ok and failed) of the responses of `model` on `benchmark`, by every
    /// judge, ordered by trial, item, judge and request.
    pub fn judgments(
        &self,
        benchmark: &str,
        model: &str,
    ) -> Result<Vec<JudgmentRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT benchmark, model, trial, item, judge, request_hash, params_hash, judge_url,
                    status, swapped, content, top_logprobs, preference, error, latency_ms
             FROM judgments WHERE benchmark = ?1 AND model = ?2
             ORDER BY trial, item, judge, request_hash",
        )?;
        let rows = stmt.query_map(params![benchmark, model], row_to_judgment)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The description saved by [`Store::save_run_info`], if any.
    pub fn run_info(
        &self,
        benchmark: &str,
        model: &str,
        params_hash: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT info FROM run_info WHERE benchmark = ?1 AND model = ?2 AND params_hash = ?3",
        )?;
        let json: Option<String> = stmt
            .query_row(params![benchmark, model, params_hash], |r| r.get(0))
            .optional()?;
        match json {
            Some(s) => Ok(Some(serde_json::from_str(&s)?)),
            None => Ok(None),
        }
    }
}
