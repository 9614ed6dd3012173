//! Tests for `metis_verify::cwe` and `metis_verify::attack` against the real data in
//! `shared/data` (CWE 4.14, ATT&CK v15.1 / v18.1, CTIBench RCM and ATE gold labels).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use metis_verify::attack::{
    exact_set_match, find_technique_ids, jaccard, micro_f1, normalize_prediction, set_counts,
    AttackCatalog, CatalogError, Domain, MicroF1, SetCounts, SetMatchOptions, TechniqueId,
    TechniqueStatus,
};
use metis_verify::cwe::{find_cwe_ids, CweCatalog, CweId, Relation, View};

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

fn cwe(n: u32) -> CweId {
    CweId(n)
}

fn t(s: &str) -> TechniqueId {
    s.parse().expect("test id parses")
}

fn tset(ids: &[&str]) -> BTreeSet<TechniqueId> {
    ids.iter().map(|s| t(s)).collect()
}

fn cwe_catalog() -> CweCatalog {
    CweCatalog::from_data_dir(&data_dir()).expect("CWE catalog loads")
}

fn attack(domain: Domain, version: &str) -> AttackCatalog {
    AttackCatalog::from_data_dir(&data_dir(), domain, version).expect("ATT&CK catalog loads")
}

/// Splits one physical line of a CTIBench TSV the way pandas' `read_csv(sep='\t')` does for
/// these files: a field that starts with `"` is quoted up to the next lone `"` (`""` is an
/// escaped quote), and anything after the closing quote is kept verbatim.
fn split_quoted_tsv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '\t' {
            fields.push(std::mem::take(&mut cur));
            at_field_start = true;
            continue;
        } else if c == '"' && at_field_start {
            in_quotes = true;
        } else {
            cur.push(c);
        }
        at_field_start = false;
    }
    fields.push(cur);
    fields
}

/// (1-based physical line, fields) of every data row of a CTIBench file, header checked.
fn ctibench_rows(file: &str, header: &[&str]) -> Vec<(usize, Vec<String>)> {
    let path = data_dir().join("ctibench").join(file);
    let text = std::fs::read_to_string(&path).expect("CTIBench file readable");
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate();
    let (_, head) = lines.next().expect("header");
    assert_eq!(split_quoted_tsv_line(head), header, "{file} header");
    let rows: Vec<_> = lines
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i + 1, split_quoted_tsv_line(l)))
        .collect();
    for (line, fields) in &rows {
        assert_eq!(fields.len(), header.len(), "{file} line {line}");
    }
    rows
}

// ---------------------------------------------------------------- CweId / find_cwe_ids

#[test]
fn cwe_id_parse_and_display() {
    for ok in [
        "CWE-79",
        "cwe-79",
        "Cwe-79",
        "CWE-079",
        "  CWE-79\n",
        "CWE\u{2010}79",
        "CWE\u{2011}79",
        "CWE\u{2012}79",
        "CWE\u{2013}79",
        "CWE\u{2014}79",
        "CWE\u{2212}79",
        "CWE\u{FE63}79",
        "CWE\u{FF0D}79",
    ] {
        assert_eq!(ok.parse::<CweId>(), Ok(CweId(79)), "{ok:?}");
    }
    for bad in [
        "",
        "CWE",
        "CWE-",
        "CWE 79",
        "CWE_79",
        "CWE79",
        "CWE--79",
        "CWE-79a",
        "CWE-79 CWE-80",
        "XCWE-79",
        "**CWE-79**",
        "79",
        "CWE-４２",
        "CWE-4294967296",
    ] {
        assert!(bad.parse::<CweId>().is_err(), "{bad:?} must not parse");
    }
    assert_eq!("CWE-4294967295".parse::<CweId>(), Ok(CweId(u32::MAX)));
    assert_eq!("CWE-0000000000079".parse::<CweId>(), Ok(CweId(79)));
    assert_eq!(CweId(79).to_string(), "CWE-79");
    assert_eq!(CweId(1333).to_string(), "CWE-1333");
    let err = "CWE 79".parse::<CweId>().unwrap_err();
    assert_eq!(err.to_string(), "not a CWE id: \"CWE 79\"");
}

#[test]
fn cwe_id_serde_is_the_string_form() {
    assert_eq!(serde_json::to_string(&CweId(79)).unwrap(), "\"CWE-79\"");
    assert_eq!(
        serde_json::from_str::<CweId>("\"cwe-079\"").unwrap(),
        CweId(79)
    );
    assert!(serde_json::from_str::<CweId>("\"CWE 79\"").is_err());
    assert!(serde_json::from_str::<CweId>("79").is_err());
    let v: Vec<CweId> = serde_json::from_str(r#"["CWE-79","CWE-89"]"#).unwrap();
    assert_eq!(v, [CweId(79), CweId(89)]);
}

fn cwe_found(text: &str) -> Vec<u32> {
    find_cwe_ids(text).into_iter().map(|(id, _)| id.0).collect()
}

#[test]
fn find_cwe_ids_in_model_outputs() {
    assert_eq!(cwe_found("The weakness is CWE-79."), [79]);
    assert_eq!(cwe_found("**CWE-79**"), [79]);
    assert_eq!(cwe_found("`CWE-79`"), [79]);
    assert_eq!(
        cwe_found("[CWE-79](https://cwe.mitre.org/data/definitions/79.html)"),
        [79]
    );
    assert_eq!(cwe_found("__CWE-79__ and _cwe-89_"), [79, 89]);
    assert_eq!(cwe_found("(cwe-079)"), [79]);
    assert_eq!(cwe_found("\"CWE-787\","), [787]);
    assert_eq!(cwe_found("GPT-style: CWE\u{2011}79"), [79]);
    assert_eq!(cwe_found("CWE\u{2013}22 or CWE\u{2014}23"), [22, 23]);
    assert_eq!(cwe_found("该漏洞属于CWE-79。"), [79]);
    assert_eq!(cwe_found("NVD-CWE-79"), [79]);
    assert_eq!(cwe_found("This is CWE-79 not CWE-80\nCWE-79"), [79, 80, 79]);
    assert_eq!(
        cwe_found("Justification...\n\nFinal answer:\nCWE-1333"),
        [1333]
    );
    // Not ids.
    assert_eq!(
        cwe_found("XCWE-79 CWE-79abc CWE- CWE NVD-CWE-noinfo CWE-Other"),
        Vec::<u32>::new()
    );
    assert_eq!(
        cwe_found("CWE 79, CWE_79, CWE79, CWE version 4.14"),
        Vec::<u32>::new()
    );
    assert_eq!(cwe_found("CWE-99999999999999999999"), Vec::<u32>::new());
    assert_eq!(cwe_found(""), Vec::<u32>::new());
}

#[test]
fn find_cwe_ids_spans() {
    let text = "Map: **cwe\u{2011}079**, then CWE-89";
    let found = find_cwe_ids(text);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].0, CweId(79));
    assert_eq!(&text[found[0].1.clone()], "cwe\u{2011}079");
    assert_eq!(found[1].0, CweId(89));
    assert_eq!(&text[found[1].1.clone()], "CWE-89");
    assert_eq!(found[1].1.end, text.len());
}

// ---------------------------------------------------------------- CweCatalog

#[test]
fn cwe_catalog_matches_sources_md() {
    let cat = cwe_catalog();
    assert_eq!(cat.len(), 963);
    assert!(!cat.is_empty());
    let ids: Vec<CweId> = cat.ids().collect();
    assert_eq!(ids.len(), 963);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let count = |f: &dyn Fn(CweId) -> bool| ids.iter().filter(|&&id| f(id)).count();
    assert_eq!(count(&|id| cat.is_deprecated(id)), 25);
    assert_eq!(count(&|id| cat.in_view(id, View::ResearchConcepts)), 938);
    assert_eq!(count(&|id| cat.in_view(id, View::SimplifiedMapping)), 130);
    assert_eq!(
        count(&|id| !cat.parents(id, View::ResearchConcepts).is_empty()),
        928
    );
    assert_eq!(
        count(&|id| cat.parents(id, View::ResearchConcepts).len() > 1),
        140
    );
    assert_eq!(
        count(&|id| !cat.parents(id, View::SimplifiedMapping).is_empty()),
        93
    );
    // Deprecated entries are exactly those outside view 1000, and have no parents.
    for id in ids {
        assert_eq!(
            cat.is_deprecated(id),
            !cat.in_view(id, View::ResearchConcepts),
            "{id}"
        );
        if cat.is_deprecated(id) {
            assert!(cat.parents(id, View::ResearchConcepts).is_empty(), "{id}");
        }
    }
}

#[test]
fn cwe_catalog_entries_and_parents() {
    let cat = cwe_catalog();
    assert_eq!(
        cat.name(cwe(79)),
        Some(
            "Improper Neutralization of Input During Web Page Generation ('Cross-site Scripting')"
        )
    );
    assert_eq!(cat.parents(cwe(79), View::ResearchConcepts), [cwe(74)]);
    assert_eq!(cat.parents(cwe(79), View::SimplifiedMapping), [cwe(74)]);
    assert_eq!(
        cat.parents(cwe(22), View::ResearchConcepts),
        [cwe(706), cwe(668)]
    );
    assert_eq!(cat.parents(cwe(78), View::ResearchConcepts), [cwe(77)]);
    assert_eq!(cat.parents(cwe(78), View::SimplifiedMapping), [cwe(74)]);
    assert_eq!(cat.parents(cwe(707), View::ResearchConcepts), []);
    assert!(cat.contains(cwe(79)));
    assert!(!cat.is_deprecated(cwe(79)));
    assert!(cat.in_view(cwe(79), View::SimplifiedMapping));
    assert!(!cat.in_view(cwe(707), View::SimplifiedMapping));
    assert!(cat.contains(cwe(71)) && cat.is_deprecated(cwe(71)));
    assert_eq!(cat.name(cwe(71)), Some("DEPRECATED: Apple '.DS_Store'"));
    // Categories are not weaknesses.
    assert!(!cat.contains(cwe(264)));
    assert_eq!(cat.name(cwe(264)), None);
    assert_eq!(cat.parents(cwe(264), View::ResearchConcepts), []);
    assert!(!cat.is_deprecated(cwe(264)));
    assert_eq!(View::ResearchConcepts.number(), 1000);
    assert_eq!(View::SimplifiedMapping.number(), 1003);
}

#[test]
fn cwe_relation_one_step_in_either_view() {
    let cat = cwe_catalog();
    assert_eq!(cat.relation(cwe(79), cwe(79)), Relation::Exact);
    assert_eq!(cat.relation(cwe(74), cwe(79)), Relation::Parent);
    assert_eq!(cat.relation(cwe(79), cwe(74)), Relation::Child);
    // CWE-78 → CWE-77 only in view 1000, CWE-78 → CWE-74 only in view 1003.
    assert_eq!(cat.relation(cwe(77), cwe(78)), Relation::Parent);
    assert_eq!(cat.relation(cwe(74), cwe(78)), Relation::Parent);
    assert_eq!(cat.relation(cwe(78), cwe(74)), Relation::Child);
    // CWE-129: view 1000 parent CWE-1285 (whose parent is CWE-20), view 1003 parent CWE-20.
    assert_eq!(cat.relation(cwe(1285), cwe(129)), Relation::Parent);
    assert_eq!(cat.relation(cwe(20), cwe(129)), Relation::Parent);
    // Grandparent and sibling get nothing: CWE-707 → CWE-74 → CWE-79; CWE-89 is a sibling.
    assert_eq!(cat.relation(cwe(707), cwe(79)), Relation::Unrelated);
    assert_eq!(cat.relation(cwe(79), cwe(707)), Relation::Unrelated);
    assert_eq!(cat.relation(cwe(89), cwe(79)), Relation::Unrelated);
    // Unknown ids (a category used as CTIBench gold, an invented id) only match exactly.
    assert_eq!(cat.relation(cwe(264), cwe(264)), Relation::Exact);
    assert_eq!(cat.relation(cwe(284), cwe(264)), Relation::Unrelated);
    assert_eq!(cat.relation(cwe(264), cwe(284)), Relation::Unrelated);
    assert_eq!(cat.relation(cwe(999_999), cwe(79)), Relation::Unrelated);

    assert!(Relation::Exact.hierarchy_credit());
    assert!(Relation::Parent.hierarchy_credit());
    assert!(Relation::Child.hierarchy_credit());
    assert!(!Relation::Unrelated.hierarchy_credit());
}

#[test]
fn ctibench_rcm_gold_ids_are_in_the_catalog() {
    let cat = cwe_catalog();
    let header = ["URL", "Description", "Prompt", "GT"];

    let rows = ctibench_rows("cti-rcm.tsv", &header);
    assert_eq!(rows.len(), 1000);
    for (line, f) in &rows {
        let id: CweId = f[3].parse().unwrap_or_else(|e| panic!("line {line}: {e}"));
        assert_eq!(id.to_string(), f[3], "line {line}: gold is canonical");
        assert!(
            cat.contains(id),
            "cti-rcm.tsv line {line}: {id} not in catalog"
        );
        assert!(!cat.is_deprecated(id), "line {line}: {id} deprecated");
    }

    let rows = ctibench_rows("cti-rcm-2021.tsv", &header);
    assert_eq!(rows.len(), 1000);
    let mut missing = Vec::new();
    for (line, f) in &rows {
        let id: CweId = f[3].parse().unwrap_or_else(|e| panic!("line {line}: {e}"));
        assert_eq!(id.to_string(), f[3], "line {line}: gold is canonical");
        assert!(!cat.is_deprecated(id), "line {line}: {id} deprecated");
        if !cat.contains(id) {
            missing.push((*line, id));
        }
    }
    assert_eq!(missing, [(282, cwe(264)), (503, cwe(264))]);
}

// ---------------------------------------------------------------- CWE loader errors

const CWE_HEADER: &str = "id\tname\tabstraction\tstatus\tchild_of_1000\tprimary_parent_1000\tchild_of_1003\tin_view_1000\tin_view_1003\tin_view_699\tin_view_1194";

fn cwe_tsv(rows: &[&str]) -> String {
    let mut s = String::from(CWE_HEADER);
    for r in rows {
        s.push('\n');
        s.push_str(r);
    }
    s.push('\n');
    s
}

const CWE_ROW_707: &str =
    "CWE-707\tImproper Neutralization\tPillar\tIncomplete\t\t\t\ttrue\tfalse\tfalse\tfalse";
const CWE_ROW_74: &str =
    "CWE-74\tInjection\tClass\tIncomplete\tCWE-707\tCWE-707\t\ttrue\ttrue\tfalse\tfalse";
const CWE_ROW_79: &str =
    "CWE-79\tXSS\tBase\tStable\tCWE-74\tCWE-74\tCWE-74\ttrue\ttrue\ttrue\tfalse";

#[test]
fn cwe_from_tsv_str_small_table() {
    let text = cwe_tsv(&[CWE_ROW_707, CWE_ROW_74, CWE_ROW_79]).replace('\n', "\r\n");
    let cat = CweCatalog::from_tsv_str(&text, "mini.tsv").unwrap();
    assert_eq!(cat.len(), 3);
    assert_eq!(cat.name(cwe(79)), Some("XSS"));
    assert_eq!(cat.relation(cwe(74), cwe(79)), Relation::Parent);
    // Column order does not matter; extra columns are ignored.
    let reordered =
        "in_view_1003\tin_view_1000\tchild_of_1003\tchild_of_1000\tstatus\tname\tid\textra\n\
                     false\ttrue\t\t\tDraft\tRoot\tCWE-1\tx\n\
                     true\ttrue\tCWE-1\tCWE-1\tDraft\tLeaf\tCWE-2\ty\n";
    let cat = CweCatalog::from_reader(reordered.as_bytes(), "reordered").unwrap();
    assert_eq!(cat.parents(cwe(2), View::SimplifiedMapping), [cwe(1)]);
    assert_eq!(cat.name(cwe(2)), Some("Leaf"));
}

fn cwe_err(text: &str) -> String {
    match CweCatalog::from_tsv_str(text, "cwe-weaknesses.tsv") {
        Ok(_) => panic!("expected an error for {text:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cwe_loader_errors_name_file_line_and_field() {
    let bad_parent = CWE_ROW_79.replace("\tCWE-74\tCWE-74\tCWE-74", "\tCWE-x\tCWE-74\tCWE-74");
    assert_eq!(
        cwe_err(&cwe_tsv(&[CWE_ROW_707, CWE_ROW_74, &bad_parent])),
        r#"cwe-weaknesses.tsv line 4: field child_of_1000: bad CWE id "CWE-x""#
    );
    let bad_id = CWE_ROW_79.replace("CWE-79\t", "79\t");
    assert_eq!(
        cwe_err(&cwe_tsv(&[CWE_ROW_707, &bad_id])),
        r#"cwe-weaknesses.tsv line 3: field id: bad CWE id "79""#
    );
    let empty_item = CWE_ROW_74.replace("\tCWE-707\tCWE-707", "\tCWE-707,,CWE-707\tCWE-707");
    assert_eq!(
        cwe_err(&cwe_tsv(&[CWE_ROW_707, &empty_item])),
        r#"cwe-weaknesses.tsv line 3: field child_of_1000: bad CWE id """#
    );
    let bad_bool = CWE_ROW_707.replace("\ttrue\tfalse\tfalse\tfalse", "\tyes\tfalse\tfalse\tfalse");
    assert_eq!(
        cwe_err(&cwe_tsv(&[&bad_bool])),
        r#"cwe-weaknesses.tsv line 2: field in_view_1000: expected true or false, got "yes""#
    );
    let bad_status = CWE_ROW_707.replace("Incomplete", "Pillar");
    assert_eq!(
        cwe_err(&cwe_tsv(&[&bad_status])),
        r#"cwe-weaknesses.tsv line 2: field status: unknown CWE status "Pillar""#
    );
    assert_eq!(
        cwe_err(&cwe_tsv(&[CWE_ROW_74, CWE_ROW_79])),
        r#"cwe-weaknesses.tsv line 2: field child_of_1000: parent not defined in this file: "CWE-707""#
    );
    assert_eq!(
        cwe_err(&cwe_tsv(&[CWE_ROW_707, CWE_ROW_74, CWE_ROW_707])),
        "cwe-weaknesses.tsv line 4: duplicate id CWE-707 (first defined on line 2)"
    );
    assert_eq!(
        cwe_err(&cwe_tsv(&[CWE_ROW_707, "CWE-74\tInjection"])),
        "cwe-weaknesses.tsv line 3: expected 11 tab-separated fields, found 2"
    );
    assert_eq!(
        cwe_err("id\tname\tstatus\n"),
        r#"cwe-weaknesses.tsv line 1: missing column "child_of_1000""#
    );
    assert_eq!(
        cwe_err("id\tid\n"),
        r#"cwe-weaknesses.tsv line 1: column "id" appears more than once"#
    );
    assert_eq!(
        cwe_err(""),
        "cwe-weaknesses.tsv: empty file, expected a header row"
    );
    // Blank lines are skipped but still counted.
    assert_eq!(
        cwe_err(&cwe_tsv(&[CWE_ROW_707, "", &bad_id])),
        r#"cwe-weaknesses.tsv line 4: field id: bad CWE id "79""#
    );
    let e = CweCatalog::from_tsv_str(&cwe_tsv(&[&bad_id]), "x").unwrap_err();
    assert!(matches!(
        e,
        CatalogError::BadField {
            line: 2,
            field: "id",
            ..
        }
    ));
}

#[test]
fn cwe_from_data_dir_missing_file_names_the_path() {
    let dir = Path::new("/nonexistent/metis-data");
    let err = CweCatalog::from_data_dir(dir).unwrap_err();
    assert!(matches!(err, CatalogError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/metis-data/cwe/cwe-weaknesses.tsv: "),
        "{err}"
    );
}

// ---------------------------------------------------------------- TechniqueId

#[test]
fn technique_id_parse_display_and_parts() {
    let sub = t("T1059.001");
    assert_eq!(sub.technique(), 1059);
    assert_eq!(sub.sub(), Some(1));
    assert!(sub.is_subtechnique());
    assert_eq!(sub.parent(), t("T1059"));
    assert_eq!(sub.to_string(), "T1059.001");
    let parent = t("T1059");
    assert_eq!(parent.sub(), None);
    assert!(!parent.is_subtechnique());
    assert_eq!(parent.parent(), parent);
    assert_eq!(parent.to_string(), "T1059");
    assert_eq!(t("t1059.001"), sub);
    assert_eq!(t("T1059/001"), sub);
    assert_eq!(t(" T1059 "), parent);
    assert_eq!(t("T0800").to_string(), "T0800");
    assert_eq!(t("T1059.000").to_string(), "T1059.000");
    for bad in [
        "",
        "T",
        "T105",
        "T10590",
        "T1059.",
        "T1059.1",
        "T1059.01",
        "T1059.0001",
        "T1059_001",
        "T1059-001",
        "AT1059",
        "T1059a",
        "1059",
        "T 1059",
        "T1059,T1071",
        "[T1059]",
        "T１０５９",
    ] {
        assert!(
            bad.parse::<TechniqueId>().is_err(),
            "{bad:?} must not parse"
        );
    }
    assert_eq!(
        "T105".parse::<TechniqueId>().unwrap_err().to_string(),
        "not an ATT&CK technique id: \"T105\""
    );
    assert_eq!(TechniqueId::new(1059, Some(1)), Some(sub));
    assert_eq!(TechniqueId::new(1059, None), Some(parent));
    assert_eq!(TechniqueId::new(10000, None), None);
    assert_eq!(TechniqueId::new(1059, Some(1000)), None);
    // Ordering: technique first, the bare technique before its sub-techniques.
    let mut v = vec![
        t("T1060"),
        t("T1059.002"),
        t("T1059"),
        t("T1059.001"),
        t("T1001"),
    ];
    v.sort();
    assert_eq!(
        v,
        [
            t("T1001"),
            t("T1059"),
            t("T1059.001"),
            t("T1059.002"),
            t("T1060")
        ]
    );
}

#[test]
fn technique_id_serde_is_the_string_form() {
    assert_eq!(
        serde_json::to_string(&t("T1059.001")).unwrap(),
        "\"T1059.001\""
    );
    assert_eq!(
        serde_json::from_str::<TechniqueId>("\"t1566\"").unwrap(),
        t("T1566")
    );
    assert!(serde_json::from_str::<TechniqueId>("\"T15\"").is_err());
    assert!(serde_json::from_str::<TechniqueId>("1566").is_err());
}

#[test]
fn domain_from_str() {
    assert_eq!("Enterprise".parse::<Domain>(), Ok(Domain::Enterprise));
    assert_eq!("mobile".parse::<Domain>(), Ok(Domain::Mobile));
    assert_eq!(" MOBILE ".parse::<Domain>(), Ok(Domain::Mobile));
    assert!("ics".parse::<Domain>().is_err());
    assert_eq!(Domain::Enterprise.to_string(), "Enterprise");
    assert_eq!(Domain::Mobile.as_str(), "mobile");
}

fn tech_found(text: &str) -> Vec<String> {
    find_technique_ids(text)
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect()
}

#[test]
fn find_technique_ids_in_model_outputs() {
    assert_eq!(
        tech_found("Answer: T1059.001, T1071 and T1105"),
        ["T1059.001", "T1071", "T1105"]
    );
    assert_eq!(tech_found("**Answer:** [T1566, T1204]"), ["T1566", "T1204"]);
    assert_eq!(tech_found("answer: t1059, t1071"), ["T1059", "T1071"]);
    assert_eq!(
        tech_found("Answer: `T1055`; \"T1027\"; 'T1140'\n- T1083\n* **T1105**"),
        ["T1055", "T1027", "T1140", "T1083", "T1105"]
    );
    assert_eq!(
        tech_found("(T1071.001)/T1573 T1059/T1106 _T1112_"),
        ["T1071.001", "T1573", "T1059", "T1106", "T1112"]
    );
    assert_eq!(
        tech_found("see https://attack.mitre.org/techniques/T1059/001/"),
        ["T1059.001"]
    );
    assert_eq!(
        tech_found("使用T1059执行，并通过T1071通信。"),
        ["T1059", "T1071"]
    );
    assert_eq!(tech_found("Answer：T1059、T1071"), ["T1059", "T1071"]);
    assert_eq!(tech_found("T1059."), ["T1059"]);
    assert_eq!(tech_found("T1059.001."), ["T1059.001"]);
    // Not ids.
    assert_eq!(
        tech_found("AT1059 T10591234 T105 T1059a T1059.1 T1059.0011 T1059.01x MT1059 T-1059"),
        Vec::<String>::new()
    );
    assert_eq!(tech_found(""), Vec::<String>::new());
    // Repeats are all reported.
    assert_eq!(tech_found("T1059 T1059"), ["T1059", "T1059"]);
}

#[test]
fn find_technique_ids_spans() {
    let text = "Answer: **t1059/001**, T1071";
    let found = find_technique_ids(text);
    assert_eq!(found.len(), 2);
    assert_eq!(&text[found[0].1.clone()], "t1059/001");
    assert_eq!(found[0].0, t("T1059.001"));
    assert_eq!(&text[found[1].1.clone()], "T1071");
}

// ---------------------------------------------------------------- AttackCatalog

struct Expected {
    domain: Domain,
    version: &'static str,
    rows: usize,
    active: usize,
    active_sub: usize,
    revoked: usize,
    revoked_sub: usize,
    deprecated: usize,
    deprecated_sub: usize,
    revoked_with_replacement: usize,
}

#[test]
fn attack_catalogs_match_sources_md() {
    let expected = [
        Expected {
            domain: Domain::Enterprise,
            version: "v18.1",
            rows: 835,
            active: 216,
            active_sub: 475,
            revoked: 132,
            revoked_sub: 3,
            deprecated: 12,
            deprecated_sub: 1,
            revoked_with_replacement: 132,
        },
        Expected {
            domain: Domain::Enterprise,
            version: "v15.1",
            rows: 780,
            active: 202,
            active_sub: 435,
            revoked: 131,
            revoked_sub: 2,
            deprecated: 12,
            deprecated_sub: 1,
            revoked_with_replacement: 131,
        },
        Expected {
            domain: Domain::Mobile,
            version: "v18.1",
            rows: 190,
            active: 77,
            active_sub: 47,
            revoked: 53,
            revoked_sub: 0,
            deprecated: 13,
            deprecated_sub: 0,
            revoked_with_replacement: 52,
        },
        Expected {
            domain: Domain::Mobile,
            version: "v15.1",
            rows: 187,
            active: 73,
            active_sub: 46,
            revoked: 53,
            revoked_sub: 0,
            deprecated: 15,
            deprecated_sub: 0,
            // SOURCES.md says one revoked Mobile object lacks a revoked-by relationship; in
            // v15.1 there are three (T1415, T1419, T1454).
            revoked_with_replacement: 50,
        },
    ];
    for e in expected {
        let cat = attack(e.domain, e.version);
        let what = format!("{} {}", e.domain, e.version);
        assert_eq!(cat.domain(), e.domain);
        assert_eq!(cat.version(), e.version);
        assert_eq!(cat.len(), e.rows, "{what}");
        let (mut active, mut active_sub, mut revoked, mut revoked_sub) = (0, 0, 0, 0);
        let (mut deprecated, mut deprecated_sub, mut with_repl) = (0, 0, 0);
        for id in cat.ids() {
            let sub = usize::from(id.is_subtechnique());
            match cat.status(id) {
                TechniqueStatus::Active => {
                    active += 1 - sub;
                    active_sub += sub;
                }
                TechniqueStatus::Revoked { replaced_by } => {
                    revoked += 1;
                    revoked_sub += sub;
                    if let Some(r) = replaced_by {
                        with_repl += 1;
                        assert!(cat.contains(r), "{what}: {id} → {r}");
                        assert!(
                            !matches!(cat.status(r), TechniqueStatus::Revoked { .. }),
                            "{what}: {id} → {r} is revoked"
                        );
                        assert_eq!(cat.canonicalize(id), Some(r));
                    } else {
                        assert_eq!(cat.canonicalize(id), Some(id));
                    }
                }
                TechniqueStatus::Deprecated => {
                    deprecated += 1;
                    deprecated_sub += sub;
                    assert_eq!(cat.canonicalize(id), Some(id));
                }
                TechniqueStatus::Unknown => panic!("{what}: listed id {id} unknown"),
            }
            assert!(cat.name(id).is_some_and(|n| !n.is_empty()), "{what}: {id}");
        }
        assert_eq!(active, e.active, "{what} active techniques");
        assert_eq!(active_sub, e.active_sub, "{what} active sub-techniques");
        assert_eq!(revoked, e.revoked, "{what} revoked");
        assert_eq!(revoked_sub, e.revoked_sub, "{what} revoked sub-techniques");
        assert_eq!(deprecated, e.deprecated, "{what} deprecated");
        assert_eq!(deprecated_sub, e.deprecated_sub, "{what} deprecated sub");
        assert_eq!(with_repl, e.revoked_with_replacement, "{what} revoked map");
    }
}

#[test]
fn attack_revoked_mapping_and_chains() {
    let v15 = attack(Domain::Enterprise, "v15.1");
    assert_eq!(
        v15.status(t("T1002")),
        TechniqueStatus::Revoked {
            replaced_by: Some(t("T1560"))
        }
    );
    assert_eq!(v15.canonicalize(t("T1002")), Some(t("T1560")));
    assert_eq!(v15.name(t("T1002")), Some("Data Compressed"));
    assert_eq!(v15.name(t("T1560")), Some("Archive Collected Data"));
    // Revoked into a sub-technique.
    assert_eq!(v15.canonicalize(t("T1004")), Some(t("T1547.004")));
    // Chains: T1150 was revoked by T1547.011, itself revoked by T1647; final_id is used.
    assert_eq!(v15.canonicalize(t("T1150")), Some(t("T1647")));
    assert!(matches!(
        v15.status(t("T1547.011")),
        TechniqueStatus::Revoked { replaced_by: Some(r) } if r == t("T1647")
    ));
    let v18 = attack(Domain::Enterprise, "v18.1");
    assert_eq!(v18.canonicalize(t("T1073")), Some(t("T1574.001")));
    assert_eq!(v18.canonicalize(t("T1574.002")), Some(t("T1574.001")));
    assert_eq!(v15.status(t("T1574.002")), TechniqueStatus::Active);
    // Active, deprecated, unknown.
    assert_eq!(v15.status(t("T1059")), TechniqueStatus::Active);
    assert_eq!(v15.status(t("T1059.001")), TechniqueStatus::Active);
    assert_eq!(v15.canonicalize(t("T1059.001")), Some(t("T1059.001")));
    assert_eq!(v15.status(t("T9999")), TechniqueStatus::Unknown);
    assert_eq!(v15.canonicalize(t("T9999")), None);
    assert_eq!(v15.name(t("T9999")), None);
    assert_eq!(
        v15.status(t("T1404")),
        TechniqueStatus::Unknown,
        "Mobile id"
    );
    let deprecated = v15
        .ids()
        .find(|&id| v15.status(id) == TechniqueStatus::Deprecated)
        .expect("a deprecated technique");
    assert_eq!(v15.canonicalize(deprecated), Some(deprecated));

    let mobile = attack(Domain::Mobile, "v15.1");
    // Revoked without a revoked-by relationship.
    for id in ["T1415", "T1419", "T1454"] {
        assert_eq!(
            mobile.status(t(id)),
            TechniqueStatus::Revoked { replaced_by: None },
            "{id}"
        );
        assert_eq!(mobile.canonicalize(t(id)), Some(t(id)));
    }
    // Chains that end at a deprecated technique.
    assert_eq!(mobile.canonicalize(t("T1431")), Some(t("T1476")));
    assert_eq!(mobile.status(t("T1476")), TechniqueStatus::Deprecated);
    assert_eq!(mobile.status(t("T1404")), TechniqueStatus::Active);
}

#[test]
fn ctibench_ate_gold_ids_are_active_v15_parent_techniques() {
    let enterprise = attack(Domain::Enterprise, "v15.1");
    let mobile = attack(Domain::Mobile, "v15.1");
    let rows = ctibench_rows(
        "cti-ate.tsv",
        &["URL", "Platform", "Description", "Prompt", "GT"],
    );
    assert_eq!(rows.len(), 60);
    let mut total = 0;
    let mut outside_platform = Vec::new();
    for (line, f) in &rows {
        let domain: Domain = f[1].parse().unwrap_or_else(|e| panic!("line {line}: {e}"));
        let (own, other) = match domain {
            Domain::Enterprise => (&enterprise, &mobile),
            Domain::Mobile => (&mobile, &enterprise),
        };
        let gold: Vec<TechniqueId> = f[4]
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("line {line}: {e}"))
            })
            .collect();
        // The extractor finds exactly the listed ids in the gold field.
        let found: Vec<TechniqueId> = find_technique_ids(&f[4]).into_iter().map(|x| x.0).collect();
        assert_eq!(found, gold, "line {line}");
        for id in gold {
            total += 1;
            assert!(!id.is_subtechnique(), "line {line}: {id}");
            if own.status(id) != TechniqueStatus::Active {
                assert_eq!(
                    own.status(id),
                    TechniqueStatus::Unknown,
                    "line {line}: {id}"
                );
                assert_eq!(
                    other.status(id),
                    TechniqueStatus::Active,
                    "line {line}: {id}"
                );
                outside_platform.push((f[0].as_str(), domain, id.to_string()));
            }
        }
    }
    assert_eq!(total, 397);
    // The gold labels also survive into v18.1 unchanged (no revocations since v15.1), so
    // grading with the newer catalog gives the same canonical gold sets.
    let enterprise18 = attack(Domain::Enterprise, "v18.1");
    let mobile18 = attack(Domain::Mobile, "v18.1");
    for (line, f) in &rows {
        let own = match f[1].parse::<Domain>() {
            Ok(Domain::Enterprise) if f[0].contains("/S0440/") => &mobile18,
            Ok(Domain::Enterprise) => &enterprise18,
            _ => &mobile18,
        };
        for (id, _) in find_technique_ids(&f[4]) {
            assert_eq!(own.status(id), TechniqueStatus::Active, "v18.1 line {line}");
        }
    }
    let s0440 = "https://attack.mitre.org/software/S0440/";
    let expected: Vec<_> = [
        "T1577", "T1404", "T1643", "T1628", "T1630", "T1655", "T1406",
    ]
    .into_iter()
    .map(|id| (s0440, Domain::Enterprise, id.to_string()))
    .collect();
    assert_eq!(outside_platform, expected);
}

// ---------------------------------------------------------------- ATT&CK loader errors

const TECH_HEADER: &str = "id\tname\ttactics\tis_subtechnique\tparent_id\trevoked\tdeprecated";
const MAP_HEADER: &str = "revoked_id\trevoked_name\treplaced_by_id\treplaced_by_name\tfinal_id\tfinal_is_revoked_or_deprecated";

fn techniques(rows: &[&str]) -> String {
    std::iter::once(TECH_HEADER)
        .chain(rows.iter().copied())
        .collect::<Vec<_>>()
        .join("\n")
}

fn revoked_map(rows: &[&str]) -> String {
    std::iter::once(MAP_HEADER)
        .chain(rows.iter().copied())
        .collect::<Vec<_>>()
        .join("\n")
}

const T_ROWS: [&str; 4] = [
    "T1002\tData Compressed\texfiltration\tfalse\t\ttrue\tfalse",
    "T1059\tCommand and Scripting Interpreter\texecution\tfalse\t\tfalse\tfalse",
    "T1059.001\tPowerShell\texecution\ttrue\tT1059\tfalse\tfalse",
    "T1560\tArchive Collected Data\tcollection\tfalse\t\tfalse\tfalse",
];
const MAP_ROW: &str = "T1002\tData Compressed\tT1560\tArchive Collected Data\tT1560\tfalse";

fn attack_err(tech: &str, map: &str) -> String {
    match AttackCatalog::from_tsv_strs(tech, map, Domain::Enterprise, "test") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn attack_from_tsv_strs_small_tables() {
    let cat = AttackCatalog::from_tsv_strs(
        &techniques(&T_ROWS),
        &revoked_map(&[MAP_ROW]),
        Domain::Enterprise,
        "test",
    )
    .unwrap();
    assert_eq!(cat.len(), 4);
    assert_eq!(cat.version(), "test");
    assert_eq!(cat.canonicalize(t("T1002")), Some(t("T1560")));
    assert_eq!(cat.name(t("T1059.001")), Some("PowerShell"));
    // An unresolved hand-written chain is followed to its end.
    let rows = [
        "T1001\tA\t\tfalse\t\ttrue\tfalse",
        "T1002\tB\t\tfalse\t\ttrue\tfalse",
        "T1003\tC\t\tfalse\t\tfalse\tfalse",
    ];
    let map = [
        "T1001\tA\tT1002\tB\tT1002\tfalse",
        "T1002\tB\tT1003\tC\tT1003\tfalse",
    ];
    let cat =
        AttackCatalog::from_tsv_strs(&techniques(&rows), &revoked_map(&map), Domain::Mobile, "x")
            .unwrap();
    assert_eq!(cat.canonicalize(t("T1001")), Some(t("T1003")));
    // A cycle terminates.
    let rows = [
        "T1001\tA\t\tfalse\t\ttrue\tfalse",
        "T1002\tB\t\tfalse\t\ttrue\tfalse",
    ];
    let map = [
        "T1001\tA\tT1002\tB\tT1002\tfalse",
        "T1002\tB\tT1001\tA\tT1001\tfalse",
    ];
    let cat =
        AttackCatalog::from_tsv_strs(&techniques(&rows), &revoked_map(&map), Domain::Mobile, "x")
            .unwrap();
    assert!(cat.canonicalize(t("T1001")).is_some());
}

#[test]
fn attack_loader_errors_name_file_line_and_field() {
    let map = revoked_map(&[MAP_ROW]);
    let mut rows = T_ROWS;
    rows[2] = "T1059.1\tPowerShell\texecution\ttrue\tT1059\tfalse\tfalse";
    assert_eq!(
        attack_err(&techniques(&rows), &map),
        r#"techniques TSV line 4: field id: bad technique id "T1059.1""#
    );
    let mut rows = T_ROWS;
    rows[2] = "T1059.001\tPowerShell\texecution\tfalse\tT1059\tfalse\tfalse";
    assert_eq!(
        attack_err(&techniques(&rows), &map),
        r#"techniques TSV line 4: field is_subtechnique: disagrees with the id: "false""#
    );
    let mut rows = T_ROWS;
    rows[2] = "T1059.001\tPowerShell\texecution\ttrue\tT1060\tfalse\tfalse";
    assert_eq!(
        attack_err(&techniques(&rows), &map),
        r#"techniques TSV line 4: field parent_id: disagrees with the id: "T1060""#
    );
    let mut rows = T_ROWS;
    rows[1] = "T1059\tCommand\texecution\tfalse\t\tno\tfalse";
    assert_eq!(
        attack_err(&techniques(&rows), &map),
        r#"techniques TSV line 3: field revoked: expected true or false, got "no""#
    );
    let mut rows = T_ROWS.to_vec();
    rows.push(T_ROWS[1]);
    assert_eq!(
        attack_err(&techniques(&rows), &map),
        "techniques TSV line 6: duplicate id T1059 (first defined on line 3)"
    );
    let tech = techniques(&T_ROWS);
    assert_eq!(
        attack_err(&tech, &revoked_map(&["T1059\tx\tT1560\tx\tT1560\tfalse"])),
        r#"revoked-map TSV line 2: field revoked_id: not a revoked technique of the techniques table: "T1059""#
    );
    assert_eq!(
        attack_err(&tech, &revoked_map(&["T1002\tx\tT1560\tx\tT1561\tfalse"])),
        r#"revoked-map TSV line 2: field final_id: not in the techniques table: "T1561""#
    );
    assert_eq!(
        attack_err(&tech, &revoked_map(&["T1002\tx\tT1560\tx\tT15600\tfalse"])),
        r#"revoked-map TSV line 2: field final_id: bad technique id "T15600""#
    );
    assert_eq!(
        attack_err(&tech, &revoked_map(&[MAP_ROW, MAP_ROW])),
        "revoked-map TSV line 3: duplicate id T1002 (first defined on line 2)"
    );
    assert_eq!(
        attack_err(&tech, "revoked_id\tfinal\n"),
        r#"revoked-map TSV line 1: missing column "final_id""#
    );
    assert_eq!(
        attack_err("id\tname\n", &map),
        r#"techniques TSV line 1: missing column "is_subtechnique""#
    );
}

#[test]
fn attack_from_data_dir_errors() {
    let err = AttackCatalog::from_data_dir(&data_dir(), Domain::Enterprise, "v99.9").unwrap_err();
    assert!(matches!(err, CatalogError::Io { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("attack/enterprise-attack-v99.9-techniques.tsv: "),
        "{msg}"
    );
    for bad in ["", "../v15.1", "v15.1/x", ".hidden", "v15 1"] {
        let err = AttackCatalog::from_data_dir(&data_dir(), Domain::Mobile, bad).unwrap_err();
        assert!(
            matches!(err, CatalogError::InvalidVersion(_)),
            "{bad:?}: {err}"
        );
    }
}

// ---------------------------------------------------------------- set metrics

#[test]
fn set_counts_exact_and_jaccard() {
    let gold = tset(&["T1059", "T1071", "T1105"]);
    let pred = tset(&["T1059", "T1071", "T1566"]);
    assert_eq!(
        set_counts(&pred, &gold),
        SetCounts {
            true_positives: 2,
            false_positives: 1,
            false_negatives: 1
        }
    );
    assert!(!exact_set_match(&pred, &gold));
    assert!(exact_set_match(&gold, &gold.clone()));
    assert_eq!(jaccard(&pred, &gold), 0.5);
    assert_eq!(jaccard(&gold, &gold), 1.0);
    let empty = BTreeSet::<TechniqueId>::new();
    assert_eq!(jaccard(&empty, &empty), 1.0);
    assert!(exact_set_match(&empty, &empty));
    assert_eq!(jaccard(&empty, &gold), 0.0);
    assert_eq!(jaccard(&gold, &empty), 0.0);
    assert_eq!(
        set_counts(&empty, &gold),
        SetCounts {
            true_positives: 0,
            false_positives: 0,
            false_negatives: 3
        }
    );
    // Generic: works for CWE ids and plain strings too.
    let c: BTreeSet<CweId> = [CweId(79), CweId(89)].into();
    let g: BTreeSet<CweId> = [CweId(79)].into();
    assert_eq!(jaccard(&c, &g), 0.5);
    let a: BTreeSet<&str> = ["x"].into();
    assert!(exact_set_match(&a, &a));
}

fn counts(tp: usize, fp: usize, fn_: usize) -> SetCounts {
    SetCounts {
        true_positives: tp,
        false_positives: fp,
        false_negatives: fn_,
    }
}

fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn micro_f1_hand_computed() {
    // Pooled: TP 3, FP 2, FN 3 → P = 3/5, R = 3/6, F1 = 6/11.
    let m = micro_f1(&[counts(2, 1, 0), counts(0, 0, 2), counts(1, 1, 1)]);
    assert_close(m.precision, 0.6);
    assert_close(m.recall, 0.5);
    assert_close(m.f1, 6.0 / 11.0);
    assert_close(m.f1, 2.0 * 0.6 * 0.5 / (0.6 + 0.5));
    // Perfect.
    let m = micro_f1(&[counts(3, 0, 0), counts(1, 0, 0)]);
    assert_eq!(
        m,
        MicroF1 {
            precision: 1.0,
            recall: 1.0,
            f1: 1.0
        }
    );
    // Micro ≠ macro: one big item dominates.
    let m = micro_f1(&[counts(9, 1, 0), counts(0, 1, 1)]);
    assert_close(m.precision, 9.0 / 11.0);
    assert_close(m.recall, 0.9);
    assert_close(m.f1, 18.0 / 21.0);
}

#[test]
fn micro_f1_zero_denominators_are_zero_like_sklearn() {
    let zero = MicroF1 {
        precision: 0.0,
        recall: 0.0,
        f1: 0.0,
    };
    // No items, or items with empty prediction and empty gold.
    assert_eq!(micro_f1(&[]), zero);
    assert_eq!(micro_f1(&[counts(0, 0, 0), counts(0, 0, 0)]), zero);
    // Nothing predicted (FAITH: unparseable answers are empty sets): precision undefined → 0.
    assert_eq!(micro_f1(&[counts(0, 0, 4)]), zero);
    // Only false positives: recall undefined (no gold) → 0.
    assert_eq!(micro_f1(&[counts(0, 3, 0)]), zero);
    // Some right, precision undefined would not arise; recall defined.
    let m = micro_f1(&[counts(0, 0, 2), counts(2, 0, 0)]);
    assert_eq!(m.precision, 1.0);
    assert_eq!(m.recall, 0.5);
    assert_close(m.f1, 4.0 / 6.0);
    // Sum of counts is what micro_f1 pools.
    let total: SetCounts = [counts(1, 2, 3), counts(4, 5, 6)].iter().sum();
    assert_eq!(total, counts(5, 7, 9));
    assert_eq!(
        MicroF1::from_counts(total),
        micro_f1(&[counts(1, 2, 3), counts(4, 5, 6)])
    );
}

#[test]
fn normalize_prediction_canonicalizes_and_folds() {
    let cat = attack(Domain::Enterprise, "v15.1");
    let ids = [
        t("T1004"),
        t("T1059.001"),
        t("T1059"),
        t("T9999"),
        t("T1002"),
        t("T1059.001"),
    ];
    let fold = SetMatchOptions {
        credit_parent_for_sub: true,
    };
    let keep = SetMatchOptions::default();
    assert!(!keep.credit_parent_for_sub);
    assert_eq!(
        normalize_prediction(&ids, Some(&cat), &fold),
        tset(&["T1547", "T1059", "T9999", "T1560"])
    );
    assert_eq!(
        normalize_prediction(&ids, Some(&cat), &keep),
        tset(&["T1547.004", "T1059.001", "T1059", "T9999", "T1560"])
    );
    assert_eq!(
        normalize_prediction(&ids, None, &keep),
        tset(&["T1004", "T1059.001", "T1059", "T9999", "T1002"])
    );
    assert_eq!(
        normalize_prediction(&ids, None, &fold),
        tset(&["T1004", "T1059", "T9999", "T1002"])
    );
    assert_eq!(
        normalize_prediction(&[], Some(&cat), &fold),
        BTreeSet::new()
    );
}

#[test]
fn grading_a_realistic_ate_response() {
    let cat = attack(Domain::Enterprise, "v15.1");
    // Gold of S0065 in cti-ate.tsv.
    let gold = tset(&["T1071", "T1059", "T1573", "T1083", "T1057", "T1082"]);
    let response = "The malware communicates over HTTP (T1071.001) and uses cmd (T1059.003).\n\
                    It encrypts traffic (T1573), enumerates files (T1083), processes (T1057)\n\
                    and system information (T1082).\n\n\
                    **Answer:** T1071.001, T1059.003, T1573, T1083, T1057 and T1082";
    let answer = response.rsplit('\n').next().unwrap();
    let ids: Vec<TechniqueId> = find_technique_ids(answer)
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(ids.len(), 6);

    let strict = normalize_prediction(&ids, Some(&cat), &SetMatchOptions::default());
    assert!(!exact_set_match(&strict, &gold));
    assert_eq!(set_counts(&strict, &gold), counts(4, 2, 2));
    assert_close(jaccard(&strict, &gold), 4.0 / 8.0);

    let folded = normalize_prediction(
        &ids,
        Some(&cat),
        &SetMatchOptions {
            credit_parent_for_sub: true,
        },
    );
    assert!(exact_set_match(&folded, &gold));
    assert_eq!(jaccard(&folded, &gold), 1.0);
    let m = micro_f1(&[set_counts(&strict, &gold), set_counts(&folded, &gold)]);
    assert_close(m.precision, 10.0 / 12.0);
    assert_close(m.recall, 10.0 / 12.0);
    assert_close(m.f1, 20.0 / 24.0);
}
