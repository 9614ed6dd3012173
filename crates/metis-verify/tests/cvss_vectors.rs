//! CVSS scoring against the reference vectors in `shared/data/cvss` (Red Hat `cvss` library
//! test vectors, 7,667 rows) and the CTIBench-VSP ground truth in `shared/fixtures/cvss31`,
//! plus unit tests of parsing, errors, severities and formatting.

use metis_verify::cvss::{severity, CvssError, Scores, Severity, Vector, Version};

const TEST_VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/cvss/cvss-test-vectors.tsv"
);
const VSP_GT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/cvss31/cti-vsp-gt-base-scores.tsv"
);

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("cannot read {path}: {e} (shared/ must sit beside the repository root)")
    })
}

fn parse_score(cell: &str) -> Option<f64> {
    (!cell.is_empty()).then(|| {
        cell.parse::<f64>()
            .unwrap_or_else(|e| panic!("bad score {cell:?}: {e}"))
    })
}

/// The reference rows: (source file, version, vector, expected scores).
fn reference_rows() -> Vec<(String, Version, String, Scores)> {
    let text = read(TEST_VECTORS);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("source_file\tcvss_version\tvector\tbase_score\ttemporal_score\tenvironmental_score")
    );
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            assert_eq!(cells.len(), 6, "bad row {line:?}");
            let expected = Scores {
                base: parse_score(cells[3]).expect("base score"),
                temporal: parse_score(cells[4]),
                environmental: parse_score(cells[5]),
            };
            (
                cells[0].to_string(),
                cells[1].parse().expect("version"),
                cells[2].to_string(),
                expected,
            )
        })
        .collect()
}

#[test]
fn reference_vectors_score_exactly() {
    let rows = reference_rows();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (source, version, vector, expected) in &rows {
        checked += 1;
        let v = match Vector::parse(vector) {
            Ok(v) => v,
            Err(e) => {
                mismatches.push(format!("{source} {vector}: parse error: {e}"));
                continue;
            }
        };
        let got = v.scores();
        // `==` on f64: -0.0 == 0.0, as intended.
        if v.version() != *version || got != *expected || v.base_score() != expected.base {
            mismatches.push(format!(
                "{source} {vector}: expected {version} {expected:?}, got {} {got:?} (base_score {})",
                v.version(),
                v.base_score()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} vectors mismatch; first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
    assert_eq!(checked, 7667);
}

#[test]
fn reference_vectors_round_trip_through_display() {
    for (_, _, vector, _) in reference_rows() {
        let v = Vector::parse(&vector).unwrap();
        let text = v.to_string();
        assert_eq!(Vector::parse(&text).as_ref(), Ok(&v), "{vector} -> {text}");
        assert_eq!(text.parse::<Vector>().as_ref(), Ok(&v));
        // Every metric written is kept with its value.
        let body = vector
            .split_once("CVSS:")
            .map_or(vector.as_str(), |(_, r)| {
                r.split_once('/').map_or("", |(_, m)| m)
            });
        for part in body.split('/') {
            let (name, value) = part.split_once(':').unwrap();
            assert_eq!(v.metric(name), Some(value), "{vector}: {name}");
        }
        assert_eq!(v.metrics().count(), body.split('/').count(), "{vector}");
    }
}

#[test]
fn vsp_ground_truth_scores_and_severities() {
    let text = read(VSP_GT);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("vector\tbase_score\tseverity"));
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split('\t').collect();
        assert_eq!(cells.len(), 3, "bad row {line:?}");
        let expected: f64 = cells[1].parse().unwrap();
        checked += 1;
        match Vector::parse(cells[0]) {
            Ok(v) if v.base_score() == expected && v.severity().to_string() == cells[2] => {}
            Ok(v) => mismatches.push(format!(
                "{}: expected {expected} {}, got {} {}",
                cells[0],
                cells[2],
                v.base_score(),
                v.severity()
            )),
            Err(e) => mismatches.push(format!("{}: {e}", cells[0])),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} mismatch:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
    assert_eq!(checked, 1000);
}

const V31: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";

fn err(s: &str) -> CvssError {
    Vector::parse(s).expect_err(s)
}

#[test]
fn error_empty() {
    for s in ["", "   ", "\n\t", "/", "()", " ( ) ".trim()] {
        assert_eq!(err(s), CvssError::Empty, "{s:?}");
    }
    assert_eq!(CvssError::Empty.to_string(), "empty CVSS vector");
}

#[test]
fn error_bad_prefix() {
    for (s, prefix) in [
        ("CVSS:2.9/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:2.9"),
        ("CVSS3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS3.1"),
        ("CVSS:3.1.1/AV:N", "CVSS:3.1.1"),
        ("CVSS:/AV:N", "CVSS:"),
        ("CVSS", "CVSS"),
        ("Cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "Cvss:3.1"),
        ("CVSS:v3.1", "CVSS:v3.1"),
        ("CVSSé", "CVSSé"),
    ] {
        assert_eq!(
            err(s),
            CvssError::BadPrefix {
                prefix: prefix.into()
            },
            "{s}"
        );
    }
    let msg = err("CVSS:2.9/AV:N").to_string();
    assert!(msg.contains("\"CVSS:2.9\""), "{msg}");
}

#[test]
fn error_malformed() {
    for (s, part) in [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A", "A"),
        ("CVSS:3.1/AV:N//AC:L", ""),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H//", ""),
        ("CVSS:3.1/AV:N/AC:", "AC:"),
        ("CVSS:3.1/:N", ":N"),
        ("CVSS:3.1/AV:N:L", "AV:N:L"),
        ("CVSS:3.1/AV:N AC:L", "AV:N AC:L"),
        ("hello world", "hello world"),
    ] {
        assert_eq!(err(s), CvssError::Malformed { part: part.into() }, "{s}");
    }
    assert_eq!(
        err("CVSS:3.1/AV:N/AC").to_string(),
        "malformed CVSS vector component \"AC\" (expected METRIC:VALUE)"
    );
}

#[test]
fn error_unknown_metric() {
    assert_eq!(
        err("CVSS:3.1/AV:N/XX:N"),
        CvssError::UnknownMetric {
            version: Version::V3_1,
            metric: "XX".into()
        }
    );
    assert_eq!(
        err("CVSS:3.1/AV:N/XX:N").to_string(),
        "unknown CVSS 3.1 metric \"XX\""
    );
    // v2 metric in a v3 vector and vice versa; v4 metric in v3.
    assert_eq!(
        err("CVSS:3.0/AV:N/AC:L/Au:N"),
        CvssError::UnknownMetric {
            version: Version::V3_0,
            metric: "Au".into()
        }
    );
    assert_eq!(
        err("AV:N/AC:L/PR:N"),
        CvssError::UnknownMetric {
            version: Version::V2_0,
            metric: "PR".into()
        }
    );
    assert_eq!(
        err("CVSS:3.1/AV:N/AT:N"),
        CvssError::UnknownMetric {
            version: Version::V3_1,
            metric: "AT".into()
        }
    );
    assert_eq!(
        err("CVSS:3.1/ AV:N"),
        CvssError::UnknownMetric {
            version: Version::V3_1,
            metric: " AV".into()
        }
    );
    // Case-sensitive unless the whole input is lower-case.
    assert_eq!(
        err("CVSS:3.1/av:N/AC:L"),
        CvssError::UnknownMetric {
            version: Version::V3_1,
            metric: "av".into()
        }
    );
}

#[test]
fn error_bad_value() {
    assert_eq!(
        err("CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        CvssError::BadValue {
            version: Version::V3_1,
            metric: "AV".into(),
            value: "Q".into()
        }
    );
    assert_eq!(
        err("CVSS:3.1/AV:Q").to_string(),
        "bad value \"Q\" for CVSS 3.1 metric AV (expected one of N, A, L, P)"
    );
    assert_eq!(
        err("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:R").to_string(),
        "bad value \"R\" for CVSS 4.0 metric UI (expected one of N, P, A)"
    );
    assert_eq!(
        err("AV:N/AC:L/Au:N/C:P/I:P/A:P/E:X").to_string(),
        "bad value \"X\" for CVSS 2.0 metric E (expected one of ND, U, POC, F, H)"
    );
    // Base metrics have no X; case matters.
    // Whitespace is not trimmed inside a vector.
    assert_eq!(
        err("AV:N/AC:L/Au:N/C:P/I:P/A:P extra"),
        CvssError::BadValue {
            version: Version::V2_0,
            metric: "A".into(),
            value: "P extra".into()
        }
    );
    assert!(matches!(err("CVSS:3.1/AV:X"), CvssError::BadValue { .. }));
    assert!(matches!(
        err("CVSS:3.1/AV:n/AC:L"),
        CvssError::BadValue { .. }
    ));
    assert!(matches!(
        err("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:S/SA:N"),
        CvssError::BadValue { .. }
    ));
    assert!(matches!(
        err("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/U:CLEAR"),
        CvssError::BadValue { .. }
    ));
}

#[test]
fn error_duplicate() {
    assert_eq!(
        err("CVSS:3.1/AV:N/AC:L/AV:N"),
        CvssError::Duplicate {
            metric: "AV".into()
        }
    );
    assert_eq!(
        err("CVSS:3.1/AV:N/AV:L").to_string(),
        "duplicate CVSS metric AV"
    );
    assert_eq!(
        err("AV:N/AC:L/Au:N/C:P/I:P/A:P/E:ND/E:F"),
        CvssError::Duplicate { metric: "E".into() }
    );
}

#[test]
fn error_missing_mandatory() {
    assert_eq!(
        err("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/C:H/I:H/A:H"),
        CvssError::MissingMandatory {
            version: Version::V3_1,
            metric: "S".into()
        }
    );
    assert_eq!(
        err("CVSS:3.1/").to_string(),
        "CVSS 3.1 vector lacks mandatory metric AV"
    );
    assert_eq!(
        err("CVSS:4.0"),
        CvssError::MissingMandatory {
            version: Version::V4_0,
            metric: "AV".into()
        }
    );
    assert_eq!(
        err("AV:N/AC:L/C:P/I:P/A:P"),
        CvssError::MissingMandatory {
            version: Version::V2_0,
            metric: "Au".into()
        }
    );
    // Temporal/environmental only.
    assert_eq!(
        err("CVSS:3.1/E:F/RL:O"),
        CvssError::MissingMandatory {
            version: Version::V3_1,
            metric: "AV".into()
        }
    );
}

#[test]
fn version_parse_and_display() {
    for v in Version::ALL {
        assert_eq!(v.to_string().parse::<Version>(), Ok(v));
    }
    assert_eq!(Version::V3_1.to_string(), "3.1");
    assert_eq!(
        "3".parse::<Version>(),
        Err(CvssError::UnknownVersion {
            version: "3".into()
        })
    );
}

#[test]
fn parse_as_reads_prefixless_vectors() {
    let base = "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
    let v = Vector::parse_as(base, Version::V3_1).unwrap();
    assert_eq!(v.version(), Version::V3_1);
    assert_eq!(v.base_score(), 9.8);
    assert_eq!(v.to_string(), format!("CVSS:3.1/{base}"));
    let v30 = Vector::parse_as(base, Version::V3_0).unwrap();
    assert_eq!(v30.version(), Version::V3_0);
    assert_eq!(v30.to_string(), format!("CVSS:3.0/{base}"));
    // A prefix in the text wins.
    let v = Vector::parse_as(&format!("CVSS:3.0/{base}"), Version::V3_1).unwrap();
    assert_eq!(v.version(), Version::V3_0);
    let v = Vector::parse_as("AV:N/AC:L/Au:N/C:P/I:P/A:P", Version::V3_1);
    assert!(matches!(v, Err(CvssError::UnknownMetric { .. })));
    let v = Vector::parse_as("(AV:N/AC:L/Au:N/C:P/I:P/A:P)", Version::V2_0).unwrap();
    assert_eq!(v.base_score(), 7.5);
    // Without a prefix, parse reads v2.0: a v3 base vector is then invalid.
    assert_eq!(
        Vector::parse(base),
        Err(CvssError::UnknownMetric {
            version: Version::V2_0,
            metric: "PR".into()
        })
    );
    let v4 = "AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N";
    let v = Vector::parse_as(v4, Version::V4_0).unwrap();
    assert_eq!(v.to_string(), format!("CVSS:4.0/{v4}"));
    assert_eq!(v.base_score(), 9.3);
}

#[test]
fn tolerated_syntax() {
    let expected = Vector::parse(V31).unwrap();
    for s in [
        format!("  {V31}\n"),
        format!("{V31}/"),
        format!("\t{V31}/ "),
        format!("({V31})"),
        V31.to_lowercase(),
        format!(" {}/ ", V31.to_lowercase()),
        // Any order.
        "CVSS:3.1/A:H/I:H/C:H/S:U/UI:N/PR:N/AC:L/AV:N".to_string(),
    ] {
        assert_eq!(Vector::parse(&s).as_ref(), Ok(&expected), "{s:?}");
    }
    // v2 as NVD writes it, and with a CVSS:2.0 prefix.
    let v2 = Vector::parse("AV:N/AC:L/Au:N/C:P/I:P/A:P").unwrap();
    for s in [
        "(AV:N/AC:L/Au:N/C:P/I:P/A:P)",
        " (AV:N/AC:L/Au:N/C:P/I:P/A:P) ",
        "CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P",
        "av:n/ac:l/au:n/c:p/i:p/a:p",
    ] {
        assert_eq!(Vector::parse(s).as_ref(), Ok(&v2), "{s}");
    }
    assert_eq!(v2.to_string(), "AV:N/AC:L/Au:N/C:P/I:P/A:P");
    // Lower-case v4 with mixed-case canonical values.
    let v4 = Vector::parse(
        "cvss:4.0/av:n/ac:l/at:n/pr:n/ui:n/vc:h/vi:h/va:h/sc:n/si:n/sa:n/u:clear/msi:s",
    )
    .unwrap();
    assert_eq!(v4.metric("U"), Some("Clear"));
    assert_eq!(v4.metric("MSI"), Some("S"));
    assert_eq!(
        v4.to_string(),
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/MSI:S/U:Clear"
    );
    // Not tolerated: two trailing slashes, inner whitespace, mixed case.
    assert!(Vector::parse(&format!("{V31}//")).is_err());
    assert!(Vector::parse("CVSS:3.1/AV:N /AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").is_err());
    assert!(Vector::parse("cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").is_err());
}

#[test]
fn metric_and_nomenclature() {
    let v = Vector::parse(V31).unwrap();
    assert_eq!(v.metric("AV"), Some("N"));
    assert_eq!(v.metric("av"), None);
    assert_eq!(v.metric("E"), None);
    assert_eq!(v.metric("Au"), None);
    assert_eq!(v.nomenclature(), "CVSS-B");
    let cases = [
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:X/MAV:X",
            "CVSS-B",
        ),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:F",
            "CVSS-BT",
        ),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/CR:H",
            "CVSS-BE",
        ),
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/RC:R/MS:C",
            "CVSS-BTE",
        ),
        ("AV:N/AC:L/Au:N/C:P/I:P/A:P/E:ND/RL:ND/RC:ND", "CVSS-B"),
        ("AV:N/AC:L/Au:N/C:P/I:P/A:P/E:F/CDP:L", "CVSS-BTE"),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "CVSS-B",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:X/CR:X/S:P/U:Red",
            "CVSS-B",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U",
            "CVSS-BT",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/MAV:L",
            "CVSS-BE",
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:P/CR:L",
            "CVSS-BTE",
        ),
    ];
    for (s, n) in cases {
        assert_eq!(Vector::parse(s).unwrap().nomenclature(), n, "{s}");
    }
}

#[test]
fn scores_presence_by_version() {
    // v2: temporal/environmental only when such metrics are written (ND included).
    let s = Vector::parse("AV:N/AC:L/Au:N/C:P/I:P/A:P")
        .unwrap()
        .scores();
    assert_eq!((s.base, s.temporal, s.environmental), (7.5, None, None));
    let s = Vector::parse("AV:N/AC:L/Au:N/C:P/I:P/A:P/E:ND")
        .unwrap()
        .scores();
    assert_eq!((s.temporal, s.environmental), (Some(7.5), None));
    let s = Vector::parse("AV:N/AC:L/Au:N/C:P/I:P/A:P/TD:ND")
        .unwrap()
        .scores();
    assert_eq!((s.temporal, s.environmental), (None, Some(7.5)));
    // v3: always all three.
    let s = Vector::parse(V31).unwrap().scores();
    assert_eq!((s.temporal, s.environmental), (Some(9.8), Some(9.8)));
    // v4: one score.
    let s = Vector::parse("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U")
        .unwrap()
        .scores();
    assert_eq!((s.base, s.temporal, s.environmental), (8.1, None, None));
}

#[test]
fn v30_rounds_up_exact_products() {
    // 10.0 × RC:U (0.92) is exactly 9.2; a float ceiling of 9.200000000000001 would give 9.3.
    let s = Vector::parse("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:L/RC:U")
        .unwrap()
        .scores();
    assert_eq!((s.base, s.temporal), (10.0, Some(9.2)));
    let s = Vector::parse("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:L/RC:U")
        .unwrap()
        .scores();
    assert_eq!((s.base, s.temporal), (10.0, Some(9.2)));
    // v3.0 and v3.1 differ in the modified impact equation with a changed scope.
    let env = |p: &str| {
        Vector::parse(&format!(
            "CVSS:{p}/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/MS:C/MC:L/MI:N/MA:N"
        ))
        .unwrap()
        .scores()
        .environmental
    };
    assert!(env("3.0").is_some() && env("3.1").is_some());
}

#[test]
fn v2_negative_adjusted_base() {
    // AdjustedImpact = 10.41 × 0.275 × 0.5 = 1.431375, so AdjustedBase =
    // round((0.6 × 1.431375 + 0.4 × 1.24425 − 1.5) × 1.176) = round(−0.1687…) = −0.2 and
    // AdjustedTemporal = round(−0.2 × 0.85) = −0.2; the environmental score is then
    // (−0.2 + 10.2 × 0.4) × 1 = 3.88 → 3.9 (not the 4.0 of an AdjustedBase clamped at 0) ...
    let s = Vector::parse("AV:L/AC:H/Au:M/C:N/I:N/A:P/E:U/RL:ND/CDP:MH/CR:L/IR:M/AR:L")
        .unwrap()
        .scores();
    assert_eq!(
        (s.base, s.temporal, s.environmental),
        (0.8, Some(0.7), Some(3.9))
    );
    // ... and without collateral damage it would be −0.2: clamped at 0.
    let s = Vector::parse("AV:L/AC:H/Au:M/C:N/I:N/A:P/E:U/RL:U/RC:UR/IR:M/AR:L")
        .unwrap()
        .scores();
    assert_eq!(
        (s.base, s.temporal, s.environmental),
        (0.8, Some(0.6), Some(0.0))
    );
}

#[test]
fn severity_boundaries() {
    use Severity::*;
    for version in [Version::V3_0, Version::V3_1, Version::V4_0] {
        for (score, expected) in [
            (0.0, None),
            (-0.0, None),
            (0.1, Low),
            (3.9, Low),
            (4.0, Medium),
            (6.9, Medium),
            (7.0, High),
            (8.9, High),
            (9.0, Critical),
            (10.0, Critical),
        ] {
            assert_eq!(severity(version, score), expected, "{version} {score}");
        }
    }
    for (score, expected) in [
        (0.0, Low),
        (-0.0, Low),
        (3.9, Low),
        (4.0, Medium),
        (6.9, Medium),
        (7.0, High),
        (10.0, High),
    ] {
        assert_eq!(severity(Version::V2_0, score), expected, "2.0 {score}");
    }
    assert_eq!(Critical.to_string(), "Critical");
    assert_eq!(None.to_string(), "None");
    assert_eq!(
        Vector::parse("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N")
            .unwrap()
            .severity(),
        None
    );
    assert_eq!(
        Vector::parse("AV:L/AC:H/Au:M/C:N/I:N/A:N")
            .unwrap()
            .severity(),
        Low
    );
    assert_eq!(Vector::parse(V31).unwrap().severity(), Critical);
}

#[test]
fn debug_shows_the_vector() {
    let v = Vector::parse(V31).unwrap();
    assert_eq!(format!("{v:?}"), format!("Vector({V31})"));
}
