//! Property tests for `metis_verify::cwe` and `metis_verify::attack`: no panics on arbitrary
//! input, spans that are valid and parse back to the reported id, and ids that survive
//! Display/FromStr and are found again when embedded in random text.

use std::ops::Range;

use metis_verify::attack::{find_technique_ids, AttackCatalog, Domain, TechniqueId};
use metis_verify::cwe::{find_cwe_ids, CweCatalog, CweId};
use proptest::prelude::*;

/// Filler that can never form or touch an id: no ASCII letters or digits, but anything else
/// (punctuation, markdown, CJK, dashes, emoji, control characters).
fn filler() -> impl Strategy<Value = String> {
    "[^A-Za-z0-9]{0,12}"
}

/// Separators a model might put between ids.
fn separator() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(", ".to_owned()),
        Just(",".to_owned()),
        Just(" and ".to_owned()),
        Just("; ".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n- ".to_owned()),
        Just(" ".to_owned()),
        Just("、".to_owned()),
        Just("**, **".to_owned()),
        Just("`, `".to_owned()),
        Just("], [".to_owned()),
        Just("\", \"".to_owned()),
        Just("/".to_owned()),
        // Never empty: two ids with nothing between them are one malformed token.
        "[^A-Za-z0-9]{1,12}",
    ]
}

const CWE_DASHES: [&str; 9] = [
    "-", "\u{2010}", "\u{2011}", "\u{2012}", "\u{2013}", "\u{2014}", "\u{2212}", "\u{FE63}",
    "\u{FF0D}",
];

/// A CWE id and one accepted spelling of it (prefix case, dash, leading zeros).
fn cwe_spelling() -> impl Strategy<Value = (CweId, String)> {
    (
        any::<u32>(),
        prop::sample::select(vec!["CWE", "cwe", "Cwe", "cWe"]),
        prop::sample::select(CWE_DASHES.to_vec()),
        0usize..4,
    )
        .prop_map(|(n, prefix, dash, zeros)| {
            (CweId(n), format!("{prefix}{dash}{}{n}", "0".repeat(zeros)))
        })
}

fn technique_id() -> impl Strategy<Value = TechniqueId> {
    (0u16..=9999, prop::option::of(0u16..=999))
        .prop_map(|(t, s)| TechniqueId::new(t, s).expect("in range"))
}

/// A technique id and one accepted spelling of it (`T`/`t`, `.`/`/`).
fn technique_spelling() -> impl Strategy<Value = (TechniqueId, String)> {
    (technique_id(), any::<bool>(), any::<bool>()).prop_map(|(id, lower, slash)| {
        let mut s = id.to_string();
        if lower {
            s = s.replacen('T', "t", 1);
        }
        if slash {
            s = s.replacen('.', "/", 1);
        }
        (id, s)
    })
}

/// Joins spellings with separators and filler; returns the text and where each spelling went.
fn embed(parts: &[(String, String)], prefix: &str) -> (String, Vec<Range<usize>>) {
    let mut text = prefix.to_owned();
    let mut spans = Vec::new();
    for (spelling, sep) in parts {
        let start = text.len();
        text.push_str(spelling);
        spans.push(start..text.len());
        text.push_str(sep);
    }
    (text, spans)
}

fn check_spans<T>(text: &str, found: &[(T, Range<usize>)]) -> Result<(), TestCaseError> {
    let mut prev_end = 0;
    for (_, r) in found {
        prop_assert!(r.start >= prev_end && r.start < r.end && r.end <= text.len());
        prop_assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        prev_end = r.end;
    }
    Ok(())
}

/// Random rows for the CWE table, mixing valid-looking values with garbage so the parser's
/// deeper paths (lists, booleans, parents) are exercised.
fn cwe_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("CWE-1".to_owned()),
        Just("CWE-2".to_owned()),
        Just("CWE-1,CWE-2".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("Draft".to_owned()),
        Just("Deprecated".to_owned()),
        "[^\t\n]{0,8}",
    ]
}

fn technique_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("T1001".to_owned()),
        Just("T1001.001".to_owned()),
        Just("T1002".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        "[^\t\n]{0,8}",
    ]
}

fn table(header: &str, rows: &[Vec<String>]) -> String {
    let mut s = header.to_owned();
    for r in rows {
        s.push('\n');
        s.push_str(&r.join("\t"));
    }
    s
}

const CWE_HEADER: &str =
    "id\tname\tstatus\tchild_of_1000\tchild_of_1003\tin_view_1000\tin_view_1003";
const TECH_HEADER: &str = "id\tname\tis_subtechnique\tparent_id\trevoked\tdeprecated";
const MAP_HEADER: &str = "revoked_id\tfinal_id";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let cwes = find_cwe_ids(&text);
        check_spans(&text, &cwes)?;
        for (id, r) in &cwes {
            prop_assert_eq!(text[r.clone()].parse::<CweId>(), Ok(*id));
        }
        let techs = find_technique_ids(&text);
        check_spans(&text, &techs)?;
        for (id, r) in &techs {
            prop_assert_eq!(text[r.clone()].parse::<TechniqueId>(), Ok(*id));
        }
        let _ = text.parse::<CweId>();
        let _ = text.parse::<TechniqueId>();
        let _ = text.parse::<Domain>();
        let _ = CweCatalog::from_tsv_str(&text, "fuzz");
        let _ = AttackCatalog::from_tsv_strs(&text, &text, Domain::Enterprise, "fuzz");
    }

    #[test]
    fn id_like_text_never_panics(text in "[cCwWeEtT0-9\\-\u{2011}\u{2014}./ _*]{0,40}") {
        let cwes = find_cwe_ids(&text);
        check_spans(&text, &cwes)?;
        for (id, r) in &cwes {
            prop_assert_eq!(text[r.clone()].parse::<CweId>(), Ok(*id));
        }
        let techs = find_technique_ids(&text);
        check_spans(&text, &techs)?;
        for (id, r) in &techs {
            prop_assert_eq!(text[r.clone()].parse::<TechniqueId>(), Ok(*id));
        }
        // FromStr accepts exactly the (trimmed) strings that are one whole finder match.
        let trimmed = text.trim();
        let whole = |spans: Vec<Range<usize>>| spans.len() == 1 && spans[0] == (0..trimmed.len());
        prop_assert_eq!(
            text.parse::<CweId>().is_ok(),
            whole(find_cwe_ids(trimmed).into_iter().map(|x| x.1).collect())
        );
        prop_assert_eq!(
            text.parse::<TechniqueId>().is_ok(),
            whole(find_technique_ids(trimmed).into_iter().map(|x| x.1).collect())
        );
    }

    #[test]
    fn cwe_id_round_trips(n in any::<u32>(), (id, spelling) in cwe_spelling()) {
        let canonical = CweId(n).to_string();
        prop_assert_eq!(canonical.parse::<CweId>(), Ok(CweId(n)));
        prop_assert_eq!(spelling.parse::<CweId>(), Ok(id));
        let json = serde_json::to_string(&CweId(n)).unwrap();
        prop_assert_eq!(serde_json::from_str::<CweId>(&json).unwrap(), CweId(n));
    }

    #[test]
    fn technique_id_round_trips((id, spelling) in technique_spelling()) {
        prop_assert_eq!(id.to_string().parse::<TechniqueId>(), Ok(id));
        prop_assert_eq!(spelling.parse::<TechniqueId>(), Ok(id));
        prop_assert_eq!(id.parent().sub(), None);
        prop_assert_eq!(id.parent().technique(), id.technique());
        prop_assert!(id.parent() <= id);
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<TechniqueId>(&json).unwrap(), id);
    }

    #[test]
    fn embedded_cwe_ids_are_found(
        prefix in filler(),
        parts in prop::collection::vec((cwe_spelling(), separator()), 0..6),
    ) {
        let ids: Vec<CweId> = parts.iter().map(|((id, _), _)| *id).collect();
        let spelled: Vec<(String, String)> =
            parts.into_iter().map(|((_, s), sep)| (s, sep)).collect();
        let (text, spans) = embed(&spelled, &prefix);
        let found = find_cwe_ids(&text);
        let found_ids: Vec<CweId> = found.iter().map(|x| x.0).collect();
        let found_spans: Vec<Range<usize>> = found.into_iter().map(|x| x.1).collect();
        prop_assert_eq!(found_ids, ids);
        prop_assert_eq!(found_spans, spans);
    }

    #[test]
    fn embedded_technique_ids_are_found(
        prefix in filler(),
        parts in prop::collection::vec((technique_spelling(), separator()), 0..6),
    ) {
        // A bare technique directly followed by "/" + a later id could read as a URL-style
        // sub-technique only if the next spelling started with a digit; spellings start with
        // "T"/"t", so every id stays separate.
        let ids: Vec<TechniqueId> = parts.iter().map(|((id, _), _)| *id).collect();
        let spelled: Vec<(String, String)> =
            parts.into_iter().map(|((_, s), sep)| (s, sep)).collect();
        let (text, spans) = embed(&spelled, &prefix);
        let found = find_technique_ids(&text);
        let found_ids: Vec<TechniqueId> = found.iter().map(|x| x.0).collect();
        let found_spans: Vec<Range<usize>> = found.into_iter().map(|x| x.1).collect();
        prop_assert_eq!(found_ids, ids);
        prop_assert_eq!(found_spans, spans);
    }

    #[test]
    fn filler_alone_has_no_ids(text in "[^A-Za-z0-9]{0,64}") {
        prop_assert!(find_cwe_ids(&text).is_empty());
        prop_assert!(find_technique_ids(&text).is_empty());
    }

    #[test]
    fn structured_cwe_tables_never_panic(
        rows in prop::collection::vec(prop::collection::vec(cwe_field(), 6..=8), 0..6),
        crlf in any::<bool>(),
    ) {
        let mut text = table(CWE_HEADER, &rows);
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        if let Ok(cat) = CweCatalog::from_tsv_str(&text, "fuzz") {
            prop_assert!(cat.len() <= rows.len());
            for id in cat.ids() {
                for v in metis_verify::cwe::View::ALL {
                    for p in cat.parents(id, v) {
                        prop_assert!(cat.contains(*p));
                    }
                }
            }
        }
    }

    #[test]
    fn structured_attack_tables_never_panic(
        rows in prop::collection::vec(prop::collection::vec(technique_field(), 5..=7), 0..6),
        map in prop::collection::vec(prop::collection::vec(technique_field(), 1..=3), 0..4),
    ) {
        let techniques = table(TECH_HEADER, &rows);
        let revoked = table(MAP_HEADER, &map);
        if let Ok(cat) = AttackCatalog::from_tsv_strs(&techniques, &revoked, Domain::Mobile, "x") {
            for id in cat.ids() {
                let c = cat.canonicalize(id);
                prop_assert!(c.is_some_and(|c| cat.contains(c)));
            }
        }
    }
}
