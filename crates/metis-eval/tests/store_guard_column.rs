//! A store written before responses carried guardrail checks gains the column on open, keeps
//! its rows, and stores and returns the checks from then on.

use metis_eval::store::{ResponseKey, ResponseRecord, Status, Store};

const OLD_SCHEMA: &str = "
CREATE TABLE responses (
    benchmark TEXT NOT NULL, model TEXT NOT NULL, params_hash TEXT NOT NULL,
    trial INTEGER NOT NULL, item TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    response TEXT, reasoning TEXT, finish_reason TEXT, error TEXT,
    attempts INTEGER NOT NULL, latency_ms INTEGER, prompt_tokens INTEGER,
    completion_tokens INTEGER, source TEXT NOT NULL,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (benchmark, model, params_hash, trial, item)
) WITHOUT ROWID;
INSERT INTO responses VALUES ('b', 'm', 'h', 0, 'old', 'ok', 'answer', NULL, 'stop', NULL,
    1, 5, NULL, NULL, 'query', 1, 1);
PRAGMA user_version = 1;
";

#[test]
fn old_store_gains_the_guard_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(OLD_SCHEMA)
        .unwrap();
    let mut store = Store::open(&path).unwrap();
    let old = store.records("b", "m", None).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].response.as_deref(), Some("answer"));
    assert_eq!(old[0].guard, None);
    let rec = ResponseRecord {
        key: ResponseKey {
            benchmark: "b".into(),
            item: "new".into(),
            trial: 0,
            model: "m".into(),
            params_hash: "h".into(),
        },
        status: Status::Ok,
        response: Some("I can't help with that.".into()),
        reasoning: None,
        finish_reason: Some("content_filter".into()),
        error: None,
        attempts: 1,
        latency_ms: Some(3),
        prompt_tokens: None,
        completion_tokens: None,
        source: "query".into(),
        guard: Some(
            r#"[{"stage":"input","safe":false,"categories":["S2"],"raw":"unsafe\nS2"}]"#.into(),
        ),
    };
    store.put(&rec).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    let got = store.records("b", "m", None).unwrap();
    let new = got.iter().find(|r| r.key.item == "new").unwrap();
    assert_eq!(new, &rec);
}
