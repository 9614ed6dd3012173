//! Tests of the response store, the statistics and the reports.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use metis_eval::report::{self, ResultRow};
use metis_eval::stats::{self, Summary};
use metis_eval::store::{ResponseKey, ResponseRecord, Status, Store, StoreError};

fn rec(item: &str, trial: u32, status: Status, response: &str) -> ResponseRecord {
    rec_for(
        "ctibench-mcq",
        "model-a",
        "h1",
        item,
        trial,
        status,
        response,
    )
}

fn rec_for(
    benchmark: &str,
    model: &str,
    params_hash: &str,
    item: &str,
    trial: u32,
    status: Status,
    response: &str,
) -> ResponseRecord {
    ResponseRecord {
        key: ResponseKey {
            benchmark: benchmark.into(),
            item: item.into(),
            trial,
            model: model.into(),
            params_hash: params_hash.into(),
        },
        status,
        response: (status == Status::Ok).then(|| response.to_string()),
        reasoning: Some("thinking".into()),
        finish_reason: Some("stop".into()),
        error: (status == Status::Failed).then(|| response.to_string()),
        attempts: 1,
        latency_ms: Some(1234),
        prompt_tokens: Some(100),
        completion_tokens: Some(u64::from(trial) + 7),
        source: "query".into(),
        guard: None,
    }
}

// ---------------------------------------------------------------- store

#[test]
fn store_round_trip() {
    let mut s = Store::open_in_memory().unwrap();
    let a = rec("q2", 0, Status::Ok, "A");
    let b = rec("q1", 1, Status::Ok, "B");
    let c = rec("q1", 0, Status::Failed, "timeout");
    let other = rec_for("ctibench-mcq", "model-a", "h2", "q9", 0, Status::Ok, "C");
    s.put(&a).unwrap();
    s.put(&b).unwrap();
    s.put(&c).unwrap();
    s.put(&other).unwrap();

    let done = s.completed("ctibench-mcq", "model-a", "h1").unwrap();
    let want: HashSet<(String, u32)> = [("q2".to_string(), 0), ("q1".to_string(), 1)].into();
    assert_eq!(done, want);

    // Ordered by trial then item.
    let recs = s.records("ctibench-mcq", "model-a", Some("h1")).unwrap();
    assert_eq!(recs, vec![c.clone(), a.clone(), b.clone()]);
    let all = s.records("ctibench-mcq", "model-a", None).unwrap();
    assert_eq!(all.len(), 4);
    assert!(s.records("other", "model-a", None).unwrap().is_empty());

    let runs = s.runs().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].params_hash.as_str(), runs[0].ok, runs[0].failed),
        ("h1", 2, 1)
    );
    assert_eq!(
        (runs[1].params_hash.as_str(), runs[1].ok, runs[1].failed),
        ("h2", 1, 0)
    );

    assert_eq!(s.run_info("ctibench-mcq", "model-a", "h1").unwrap(), None);
    let info =
        serde_json::json!({"temperature": 0.6, "system_prompt": "You are…", "metis": "0.1.0"});
    s.save_run_info("ctibench-mcq", "model-a", "h1", &info)
        .unwrap();
    assert_eq!(
        s.run_info("ctibench-mcq", "model-a", "h1").unwrap(),
        Some(info)
    );
    let info2 = serde_json::json!({"temperature": 0.0});
    s.save_run_info("ctibench-mcq", "model-a", "h1", &info2)
        .unwrap();
    assert_eq!(
        s.run_info("ctibench-mcq", "model-a", "h1").unwrap(),
        Some(info2)
    );
}

#[test]
fn ok_is_not_replaced_by_failed_but_failed_is_replaced() {
    let mut s = Store::open_in_memory().unwrap();
    let ok = rec("q1", 0, Status::Ok, "A");
    s.put(&ok).unwrap();
    s.put(&rec("q1", 0, Status::Failed, "boom")).unwrap();
    assert_eq!(
        s.records("ctibench-mcq", "model-a", None).unwrap(),
        vec![ok]
    );

    let failed = rec("q2", 0, Status::Failed, "boom");
    s.put(&failed).unwrap();
    let mut failed2 = rec("q2", 0, Status::Failed, "boom again");
    failed2.attempts = 3;
    s.put(&failed2).unwrap();
    assert_eq!(
        s.records("ctibench-mcq", "model-a", None).unwrap()[1],
        failed2
    );
    let ok2 = rec("q2", 0, Status::Ok, "B");
    s.put_batch(&[ok2.clone(), rec("q2", 0, Status::Failed, "late failure")])
        .unwrap();
    assert_eq!(s.records("ctibench-mcq", "model-a", None).unwrap()[1], ok2);
    assert_eq!(
        s.completed("ctibench-mcq", "model-a", "h1").unwrap().len(),
        2
    );
}

#[test]
fn batch_of_10000_commits_fast() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("responses.sqlite")).unwrap();
    let recs: Vec<ResponseRecord> = (0..10_000)
        .map(|i| {
            rec(
                &format!("item-{i:05}"),
                i % 5,
                Status::Ok,
                &"a fairly long model response ".repeat(20),
            )
        })
        .collect();
    let start = Instant::now();
    for chunk in recs.chunks(500) {
        s.put_batch(chunk).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "put_batch: 10000 records in {:.3} s = {:.0} records/s",
        secs,
        10_000.0 / secs
    );
    assert_eq!(
        s.completed("ctibench-mcq", "model-a", "h1").unwrap().len(),
        10_000
    );
    // One big transaction too (re-put: updates).
    let start = Instant::now();
    s.put_batch(&recs).unwrap();
    println!(
        "put_batch: 10000 upserts in one transaction in {:.3} s",
        start.elapsed().as_secs_f64()
    );
    let runs = s.runs().unwrap();
    assert_eq!((runs[0].ok, runs[0].failed), (10_000, 0));
}

#[test]
fn file_store_reopens_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/responses.sqlite");
    let a = rec("q1", 0, Status::Ok, "A");
    {
        let mut s = Store::open(&path).unwrap();
        s.put(&a).unwrap();
        s.save_run_info(
            "ctibench-mcq",
            "model-a",
            "h1",
            &serde_json::json!({"k": 1}),
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.path(), Some(path.as_path()));
    assert_eq!(
        s.records("ctibench-mcq", "model-a", Some("h1")).unwrap(),
        vec![a]
    );
    assert_eq!(
        s.run_info("ctibench-mcq", "model-a", "h1").unwrap(),
        Some(serde_json::json!({"k": 1}))
    );
}

#[test]
fn newer_schema_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("responses.sqlite");
    drop(Store::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = match Store::open(&path) {
        Ok(_) => panic!("opening a newer schema must fail"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("schema version 99"), "{msg}");
    assert!(msg.contains("newer"), "{msg}");
}

// ---------------------------------------------------------------- stats

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn mean_std_stderr() {
    let xs = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(stats::mean(&xs), 2.5);
    assert!(close(stats::population_std(&xs), 1.118033988749895));
    // sample std = sqrt(5/3) = 1.2909944487358056; / sqrt(4)
    assert!(close(stats::standard_error(&xs), 0.6454972243679028));
    assert!(stats::mean(&[]).is_nan());
    assert!(stats::population_std(&[]).is_nan());
    assert_eq!(stats::population_std(&[3.0]), 0.0);
    assert_eq!(stats::standard_error(&[3.0]), 0.0);
    assert_eq!(stats::standard_error(&[]), 0.0);
    assert!(stats::mean(&[1.0, f64::NAN]).is_nan());

    let s = Summary::from_trials(&[0.7, 0.68, 0.696], (0.65, 0.73));
    assert!(close(s.mean, 0.692));
    assert_eq!((s.ci_low, s.ci_high), (0.65, 0.73));
}

#[test]
fn percentile_matches_numpy_linear() {
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
    // np.percentile([1,2,3,4,5], [0, 25, 50, 90, 100]) = [1, 2, 3, 4.6, 5]
    assert_eq!(stats::percentile(&xs, 0.0), 1.0);
    assert_eq!(stats::percentile(&xs, 25.0), 2.0);
    assert_eq!(stats::percentile(&xs, 50.0), 3.0);
    assert!(close(stats::percentile(&xs, 90.0), 4.6));
    assert_eq!(stats::percentile(&xs, 100.0), 5.0);
    // np.percentile([10, 20, 30, 40], [2.5, 33, 97.5]) = [10.75, 19.9, 39.25]
    let ys = [10.0, 20.0, 30.0, 40.0];
    assert!(close(stats::percentile(&ys, 2.5), 10.75));
    assert!(close(stats::percentile(&ys, 33.0), 19.9));
    assert!(close(stats::percentile(&ys, 97.5), 39.25));
    assert_eq!(stats::percentile(&[7.0], 40.0), 7.0);
    assert!(stats::percentile(&[], 50.0).is_nan());
    assert_eq!(stats::percentile(&ys, 150.0), 40.0);
    assert_eq!(stats::percentile(&ys, -5.0), 10.0);
}

#[test]
fn bootstrap_is_deterministic_and_contains_mean() {
    let xs: Vec<f64> = (0..200)
        .map(|i| if i % 10 < 7 { 1.0 } else { 0.0 })
        .collect();
    let stat = |idx: &[usize]| idx.iter().map(|&i| xs[i]).sum::<f64>() / idx.len() as f64;
    let a = stats::bootstrap_ci(xs.len(), 2000, 0.95, 42, stat);
    let b = stats::bootstrap_ci(xs.len(), 2000, 0.95, 42, stat);
    assert_eq!(a, b);
    let m = stats::mean(&xs);
    assert!(a.0 < m && m < a.1, "{a:?} vs {m}");
    // Roughly the normal interval 0.7 ± 1.96 * sqrt(0.21/200) = ±0.0635.
    assert!((a.1 - a.0) > 0.09 && (a.1 - a.0) < 0.16, "{a:?}");
    // Another seed gives another interval (continuous data, so quantiles differ).
    let ys: Vec<f64> = (0..200)
        .map(|i| ((i * 7919) % 1000) as f64 / 1000.0)
        .collect();
    let ystat = |idx: &[usize]| idx.iter().map(|&i| ys[i]).sum::<f64>() / idx.len() as f64;
    let c = stats::bootstrap_ci(ys.len(), 2000, 0.95, 42, ystat);
    let d = stats::bootstrap_ci(ys.len(), 2000, 0.95, 43, ystat);
    assert_ne!(c, d);
    assert!(c.0 < stats::mean(&ys) && stats::mean(&ys) < c.1);
    let (lo, hi) = stats::bootstrap_ci(0, 100, 0.95, 1, |_| 0.0);
    assert!(lo.is_nan() && hi.is_nan());
    let (lo, hi) = stats::bootstrap_ci(10, 100, 0.95, 1, |_| f64::NAN);
    assert!(lo.is_nan() && hi.is_nan());
}

#[test]
fn paired_diff_hand_examples() {
    let a = [1.0, 1.0, 0.0, 1.0, 0.0];
    let b = [0.0, 1.0, 0.0, 0.0, 1.0];
    let d = stats::paired_diff(&a, &b, 1000, 0.95, 7);
    assert!(close(d.mean_diff, 0.2));
    assert_eq!((d.n, d.a_better, d.b_better, d.ties), (5, 2, 1, 2));
    assert!(d.ci_low <= d.mean_diff && d.mean_diff <= d.ci_high);
    assert!(d.ci_low >= -1.0 && d.ci_high <= 1.0);
    assert_eq!(d, stats::paired_diff(&a, &b, 1000, 0.95, 7));

    // Identical systems: zero difference with a degenerate interval.
    let same = stats::paired_diff(&a, &a, 500, 0.95, 1);
    assert_eq!(
        (same.mean_diff, same.ci_low, same.ci_high, same.ties),
        (0.0, 0.0, 0.0, 5)
    );
    // Constant shift: the interval is exactly the shift.
    let shifted: Vec<f64> = b.iter().map(|x| x + 0.5).collect();
    let sh = stats::paired_diff(&shifted, &b, 500, 0.95, 1);
    assert_eq!((sh.mean_diff, sh.ci_low, sh.ci_high), (0.5, 0.5, 0.5));
    assert_eq!(sh.a_better, 5);

    let empty = stats::paired_diff(&[], &[], 100, 0.95, 1);
    assert_eq!(empty.n, 0);
    assert!(empty.mean_diff.is_nan() && empty.ci_low.is_nan());
}

// ---------------------------------------------------------------- report

fn summary(mean: f64, std: f64) -> Summary {
    Summary {
        mean,
        std,
        stderr: std / 2.0,
        ci_low: mean - 0.02,
        ci_high: mean + 0.02,
    }
}

fn row(benchmark: &str, model: &str, metric: &str, mean: f64, std: f64) -> ResultRow {
    let mut metrics = BTreeMap::new();
    metrics.insert(metric.to_string(), summary(mean, std));
    metrics.insert("invalid_rate".to_string(), summary(0.01, 0.0));
    ResultRow {
        benchmark: benchmark.into(),
        model: model.into(),
        n_items: 2500,
        n_trials: 3,
        invalid: 4,
        failed: 1,
        primary_metric: metric.into(),
        metrics,
    }
}

fn example_rows() -> Vec<ResultRow> {
    let mut rows = vec![
        row("CTIBench-MCQ", "Llama-3.1-8B", "accuracy", 0.6241, 0.0102),
        row("CTIBench-MCQ", "Metis-8B", "accuracy", 0.692, 0.0084),
        row(
            "CyberMetric-2000",
            "Llama-3.1-8B",
            "accuracy",
            0.8567,
            0.0031,
        ),
        row("CyberMetric-2000", "Metis-8B", "accuracy", 0.8491, 0.00456),
    ];
    rows[3].invalid = 0;
    rows[3].failed = 0;
    rows
}

#[test]
fn markdown_layout() {
    let md = report::markdown(&example_rows());
    let want = "\
| Benchmark (metric) | Llama-3.1-8B | Metis-8B |
|:---|---:|---:|
| CTIBench-MCQ (accuracy) | 62.41 ± 1.02 | **69.20 ± 0.84** |
| CyberMetric-2000 (accuracy) | **85.67 ± 0.31** | 84.91 ± 0.46 |

Mean ± std over trials of the primary metric, in percent; best model per benchmark in bold.

| Invalid / failed | Llama-3.1-8B | Metis-8B |
|:---|---:|---:|
| CTIBench-MCQ | 4 / 1 | 4 / 1 |
| CyberMetric-2000 | 4 / 1 | 0 / 0 |
";
    assert_eq!(md, want, "\n{md}");

    // A missing cell and a single model row (no bold).
    let mut rows = example_rows();
    rows.remove(3);
    let md = report::markdown(&rows);
    assert!(
        md.contains("| CyberMetric-2000 (accuracy) | 85.67 ± 0.31 | – |"),
        "{md}"
    );
    assert_eq!(report::markdown(&[]), "");
}

#[test]
fn csv_long_format() {
    let out = report::csv(&example_rows());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "benchmark,model,metric,mean,std,stderr,ci_low,ci_high,n_items,n_trials,invalid,failed"
    );
    assert_eq!(lines.len(), 1 + 4 * 2);
    let f: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        &f[..5],
        [
            "CTIBench-MCQ",
            "Llama-3.1-8B",
            "accuracy",
            "0.6241",
            "0.0102"
        ]
    );
    let num = |s: &str| s.parse::<f64>().unwrap();
    assert!(close(num(f[5]), 0.0051));
    assert!(close(num(f[6]), 0.6041));
    assert!(close(num(f[7]), 0.6441));
    assert_eq!(&f[8..], ["2500", "3", "4", "1"]);
    assert!(lines[2].starts_with("CTIBench-MCQ,Llama-3.1-8B,invalid_rate,0.01,0,0,"));
    let mut rdr = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(rdr.records().count(), 8);
}

#[test]
fn json_round_trip() {
    let mut rows = example_rows();
    rows[0]
        .metrics
        .insert("f1".into(), summary(f64::NAN, f64::NAN));
    let text = report::json(&rows);
    let back: Vec<ResultRow> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.len(), rows.len());
    for (a, b) in rows.iter().zip(&back) {
        assert_eq!(a.benchmark, b.benchmark);
        assert_eq!(a.model, b.model);
        assert_eq!(
            (a.n_items, a.n_trials, a.invalid, a.failed),
            (b.n_items, b.n_trials, b.invalid, b.failed)
        );
        assert_eq!(a.primary_metric, b.primary_metric);
        assert_eq!(a.metrics.len(), b.metrics.len());
        for (k, s) in &a.metrics {
            let t = &b.metrics[k];
            if s.mean.is_nan() {
                assert!(t.mean.is_nan() && t.std.is_nan());
            } else {
                assert_eq!(s, t);
            }
        }
    }
}

#[test]
fn chart_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = example_rows();
    rows.push(row("SecEval", "Llama-3.1-8B", "accuracy", 0.45, 0.02));
    rows.push(row("SecEval", "Metis-8B", "accuracy", 0.51, 0.015));
    rows.push(row(
        "SecEval",
        "Foundation-Sec-8B-Reasoning",
        "accuracy",
        0.55,
        0.01,
    ));

    let png = dir.path().join("charts/results.png");
    report::chart(&rows, &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 1000);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    if let Ok(out) = std::env::var("METIS_CHART_OUT") {
        std::fs::copy(&png, out).unwrap();
    }

    let svg = dir.path().join("results.svg");
    report::chart(&rows, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") || text.starts_with("<?xml"),
        "{}",
        &text[..80]
    );
    assert!(text.contains("Metis-8B"));
    assert!(text.contains("CTIBench-MCQ"));

    assert!(matches!(
        report::chart(&rows, &dir.path().join("results.gif")),
        Err(report::ReportError::UnsupportedExtension { .. })
    ));
    // Empty input still draws a (blank) chart.
    report::chart(&[], &dir.path().join("empty.png")).unwrap();
}
