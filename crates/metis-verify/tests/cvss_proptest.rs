//! Property tests of the CVSS module: arbitrary input never panics, and every valid vector of
//! every version parses, scores within [0, 10] and round-trips through `Display`.
//!
//! The metric tables below are transcribed independently from the specifications (not taken
//! from the implementation), so that a wrong value list there is caught here.

use metis_verify::cvss::{severity, Vector, Version};
use proptest::prelude::*;

/// (metric, allowed values, mandatory) in specification order.
type Metrics = &'static [(&'static str, &'static [&'static str], bool)];

const V2: Metrics = &[
    ("AV", &["L", "A", "N"], true),
    ("AC", &["H", "M", "L"], true),
    ("Au", &["M", "S", "N"], true),
    ("C", &["N", "P", "C"], true),
    ("I", &["N", "P", "C"], true),
    ("A", &["N", "P", "C"], true),
    ("E", &["U", "POC", "F", "H", "ND"], false),
    ("RL", &["OF", "TF", "W", "U", "ND"], false),
    ("RC", &["UC", "UR", "C", "ND"], false),
    ("CDP", &["N", "L", "LM", "MH", "H", "ND"], false),
    ("TD", &["N", "L", "M", "H", "ND"], false),
    ("CR", &["L", "M", "H", "ND"], false),
    ("IR", &["L", "M", "H", "ND"], false),
    ("AR", &["L", "M", "H", "ND"], false),
];

const V3: Metrics = &[
    ("AV", &["N", "A", "L", "P"], true),
    ("AC", &["L", "H"], true),
    ("PR", &["N", "L", "H"], true),
    ("UI", &["N", "R"], true),
    ("S", &["U", "C"], true),
    ("C", &["H", "L", "N"], true),
    ("I", &["H", "L", "N"], true),
    ("A", &["H", "L", "N"], true),
    ("E", &["X", "H", "F", "P", "U"], false),
    ("RL", &["X", "U", "W", "T", "O"], false),
    ("RC", &["X", "C", "R", "U"], false),
    ("CR", &["X", "H", "M", "L"], false),
    ("IR", &["X", "H", "M", "L"], false),
    ("AR", &["X", "H", "M", "L"], false),
    ("MAV", &["X", "N", "A", "L", "P"], false),
    ("MAC", &["X", "L", "H"], false),
    ("MPR", &["X", "N", "L", "H"], false),
    ("MUI", &["X", "N", "R"], false),
    ("MS", &["X", "U", "C"], false),
    ("MC", &["X", "N", "L", "H"], false),
    ("MI", &["X", "N", "L", "H"], false),
    ("MA", &["X", "N", "L", "H"], false),
];

const V4: Metrics = &[
    ("AV", &["N", "A", "L", "P"], true),
    ("AC", &["L", "H"], true),
    ("AT", &["N", "P"], true),
    ("PR", &["N", "L", "H"], true),
    ("UI", &["N", "P", "A"], true),
    ("VC", &["H", "L", "N"], true),
    ("VI", &["H", "L", "N"], true),
    ("VA", &["H", "L", "N"], true),
    ("SC", &["H", "L", "N"], true),
    ("SI", &["H", "L", "N"], true),
    ("SA", &["H", "L", "N"], true),
    ("E", &["X", "A", "P", "U"], false),
    ("CR", &["X", "H", "M", "L"], false),
    ("IR", &["X", "H", "M", "L"], false),
    ("AR", &["X", "H", "M", "L"], false),
    ("MAV", &["X", "N", "A", "L", "P"], false),
    ("MAC", &["X", "L", "H"], false),
    ("MAT", &["X", "N", "P"], false),
    ("MPR", &["X", "N", "L", "H"], false),
    ("MUI", &["X", "N", "P", "A"], false),
    ("MVC", &["X", "H", "L", "N"], false),
    ("MVI", &["X", "H", "L", "N"], false),
    ("MVA", &["X", "H", "L", "N"], false),
    ("MSC", &["X", "H", "L", "N"], false),
    ("MSI", &["X", "S", "H", "L", "N"], false),
    ("MSA", &["X", "S", "H", "L", "N"], false),
    ("S", &["X", "N", "P"], false),
    ("AU", &["X", "N", "Y"], false),
    ("R", &["X", "A", "U", "I"], false),
    ("V", &["X", "D", "C"], false),
    ("RE", &["X", "L", "M", "H"], false),
    ("U", &["X", "Clear", "Green", "Amber", "Red"], false),
];

fn metrics(version: Version) -> Metrics {
    match version {
        Version::V2_0 => V2,
        Version::V3_0 | Version::V3_1 => V3,
        Version::V4_0 => V4,
    }
}

fn prefix(version: Version) -> &'static str {
    match version {
        Version::V2_0 => "",
        Version::V3_0 => "CVSS:3.0/",
        Version::V3_1 => "CVSS:3.1/",
        Version::V4_0 => "CVSS:4.0/",
    }
}

/// A valid vector of `version`: its (metric, value) pairs in specification order (mandatory
/// metrics always, optional ones sometimes), and the same pairs in a random order.
type Pairs = Vec<(&'static str, &'static str)>;

fn valid_vector(version: Version) -> impl Strategy<Value = (Pairs, Pairs)> {
    let per_metric: Vec<BoxedStrategy<Option<(&'static str, &'static str)>>> = metrics(version)
        .iter()
        .map(|&(name, values, mandatory)| {
            let value = prop::sample::select(values).prop_map(move |v| (name, v));
            if mandatory {
                value.prop_map(Some).boxed()
            } else {
                prop::option::of(value).boxed()
            }
        })
        .collect();
    per_metric
        .prop_map(|pairs| pairs.into_iter().flatten().collect::<Pairs>())
        .prop_flat_map(|pairs| (Just(pairs.clone()), Just(pairs).prop_shuffle()))
}

fn join(version: Version, pairs: &Pairs) -> String {
    let body: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}:{v}")).collect();
    format!("{}{}", prefix(version), body.join("/"))
}

fn is_tenths(x: f64) -> bool {
    (0.0..=10.0).contains(&x) && (x * 10.0).round() / 10.0 == x
}

/// Everything a caller may do with a parse result; must not panic.
fn exercise(s: &str) {
    let results = [
        Vector::parse(s),
        Vector::parse_as(s, Version::V2_0),
        Vector::parse_as(s, Version::V3_0),
        Vector::parse_as(s, Version::V3_1),
        Vector::parse_as(s, Version::V4_0),
        s.parse::<Vector>(),
    ];
    for r in results {
        match r {
            Ok(v) => {
                let scores = v.scores();
                assert!(is_tenths(scores.base), "{s:?}: {scores:?}");
                assert!(
                    scores.temporal.into_iter().all(is_tenths),
                    "{s:?}: {scores:?}"
                );
                assert!(
                    scores.environmental.into_iter().all(is_tenths),
                    "{s:?}: {scores:?}"
                );
                assert_eq!(v.base_score(), scores.base);
                let _ = (v.severity(), v.nomenclature(), v.metric("AV"), v.metric(s));
                let text = v.to_string();
                assert_eq!(Vector::parse(&text), Ok(v.clone()), "{s:?} -> {text:?}");
                let _ = format!("{v:?}");
            }
            Err(e) => {
                let _ = (e.to_string(), format!("{e:?}"));
            }
        }
    }
}

/// Pieces that CVSS-like garbage is made of.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "CVSS:2.0/", "CVSS:3.0/", "CVSS:3.1/", "CVSS:4.0/", "CVSS:", "cvss:3.1/", "CVSS3.1/",
            "CVSS:9.9/", "(", ")", "/", "//", ":", "::", " ", "\t", "\n", "AV:", "N", "L", "H",
            "X", "ND", "POC", "Clear", "S:", "MSI:S", "au:n", "é", "\u{0}", "\u{feff}", "🦀",
        ])
        .prop_map(String::from),
        3 => prop::sample::select(
            V2.iter().chain(V3).chain(V4).map(|m| m.0).collect::<Vec<_>>()
        )
        .prop_map(|m| format!("{m}:")),
        2 => "[A-Za-z]{0,5}",
        1 => any::<char>().prop_map(String::from),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_unicode_never_panics(s in any::<String>()) {
        exercise(&s);
    }

    #[test]
    fn cvss_like_fragments_never_panic(parts in prop::collection::vec(fragment(), 0..24)) {
        exercise(&parts.concat());
    }

    #[test]
    fn mutated_valid_vectors_never_panic(
        (version, pairs) in prop::sample::select(Version::ALL.to_vec())
            .prop_flat_map(|v| (Just(v), valid_vector(v).prop_map(|(p, _)| p))),
        cut in any::<prop::sample::Index>(),
        insert in fragment(),
    ) {
        // Insert a fragment at an arbitrary (char-boundary) position of a valid vector.
        let text = join(version, &pairs);
        let boundaries: Vec<usize> =
            text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
        let at = boundaries[cut.index(boundaries.len())];
        exercise(&format!("{}{insert}{}", &text[..at], &text[at..]));
        exercise(&text[..at]);
    }
}

/// The checks on a generated valid vector.
fn check_valid(version: Version, canonical: &Pairs, shuffled: &Pairs) -> Result<(), TestCaseError> {
    let text = join(version, canonical);
    let v = Vector::parse_as(&text, version)
        .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    prop_assert_eq!(v.version(), version);
    // Display writes the canonical vector, which is what was generated.
    prop_assert_eq!(v.to_string(), text.clone());
    prop_assert_eq!(Vector::parse(&v.to_string()), Ok(v.clone()));
    // Any order, lower case, surrounding noise: the same vector.
    let shuffled_text = join(version, shuffled);
    prop_assert_eq!(Vector::parse_as(&shuffled_text, version), Ok(v.clone()));
    prop_assert_eq!(
        Vector::parse_as(&text.to_lowercase(), version),
        Ok(v.clone())
    );
    prop_assert_eq!(
        Vector::parse_as(&format!(" ({text}/) "), version),
        Ok(v.clone())
    );
    for (name, value) in canonical {
        prop_assert_eq!(v.metric(name), Some(*value));
    }
    prop_assert_eq!(v.metrics().count(), canonical.len());

    let s = v.scores();
    prop_assert!(is_tenths(s.base), "{}: {:?}", text, s);
    prop_assert_eq!(v.base_score(), s.base);
    prop_assert_eq!(v.severity(), severity(version, s.base));
    match version {
        Version::V2_0 => {
            let has = |names: &[&str]| canonical.iter().any(|(n, _)| names.contains(n));
            prop_assert_eq!(s.temporal.is_some(), has(&["E", "RL", "RC"]));
            prop_assert_eq!(
                s.environmental.is_some(),
                has(&["CDP", "TD", "CR", "IR", "AR"])
            );
        }
        Version::V3_0 | Version::V3_1 => {
            prop_assert!(s.temporal.is_some() && s.environmental.is_some());
        }
        _ => prop_assert!(s.temporal.is_none() && s.environmental.is_none()),
    }
    if let Some(t) = s.temporal {
        // Temporal weights are at most 1.
        prop_assert!(is_tenths(t) && t <= s.base, "{}: {:?}", text, s);
    }
    if let Some(e) = s.environmental {
        prop_assert!(is_tenths(e), "{}: {:?}", text, s);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn valid_v2_vectors((canonical, shuffled) in valid_vector(Version::V2_0)) {
        check_valid(Version::V2_0, &canonical, &shuffled)?;
        // NVD's parenthesised form.
        let text = join(Version::V2_0, &canonical);
        let wrapped = format!("({text})");
        prop_assert!(Vector::parse(&wrapped).is_ok());
    }

    #[test]
    fn valid_v30_vectors((canonical, shuffled) in valid_vector(Version::V3_0)) {
        check_valid(Version::V3_0, &canonical, &shuffled)?;
    }

    #[test]
    fn valid_v31_vectors((canonical, shuffled) in valid_vector(Version::V3_1)) {
        check_valid(Version::V3_1, &canonical, &shuffled)?;
        // v3.0 and v3.1 differ only in rounding (which never matters for base and temporal
        // scores) and in the modified impact equation with a changed scope.
        let v31 = Vector::parse(&join(Version::V3_1, &canonical)).unwrap().scores();
        let v30 = Vector::parse(&join(Version::V3_0, &canonical)).unwrap().scores();
        prop_assert_eq!(v30.base, v31.base);
        prop_assert_eq!(v30.temporal, v31.temporal);
    }

    #[test]
    fn valid_v4_vectors((canonical, shuffled) in valid_vector(Version::V4_0)) {
        check_valid(Version::V4_0, &canonical, &shuffled)?;
        // Supplemental metrics do not change the score.
        let text = join(Version::V4_0, &canonical);
        let core: Pairs = canonical
            .iter()
            .copied()
            .filter(|(n, _)| !["S", "AU", "R", "V", "RE", "U"].contains(n))
            .collect();
        let v = Vector::parse(&text).unwrap();
        let w = Vector::parse(&join(Version::V4_0, &core)).unwrap();
        prop_assert_eq!(v.base_score(), w.base_score());
        prop_assert_eq!(v.nomenclature(), w.nomenclature());
    }
}
