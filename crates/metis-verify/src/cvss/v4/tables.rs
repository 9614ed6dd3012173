//! CVSS v4.0 data tables of the FIRST CVSS v4.0 calculator
//! (`FIRSTdotorg/cvss-v4-calculator`, commit `c5b0d409ae9f57c44264c6ce5f27d89298e1d32a`,
//! BSD-2-Clause, Copyright (c) 2023 FIRST.ORG, Inc., Red Hat, and contributors), transcribed
//! from the plain-data copies in `shared/data/cvss` (see `SOURCES.md` there):
//! `cvss4-macrovector-lookup.tsv`, `cvss4-max-composed.json` and `cvss4-max-severity.json`.
//!
//! They were transcribed mechanically (a throw-away script printing the Rust literals) and are
//! kept in the form of the source files so that they can be compared with them; the unit
//! tests at the end check them against the files whenever `shared/` sits beside the repository.
//! The scoring code decodes them at compile time (see `super`).

/// `cvss4-macrovector-lookup.tsv` verbatim (`cvssLookup_global`): the score of the
/// highest-severity vector of each of the 270 MacroVectors (EQ1..EQ6 levels as six digits).
pub(super) const MACROVECTOR_LOOKUP_TSV: &str = "\
macrovector\tscore\n\
000000\t10\n\
000001\t9.9\n\
000010\t9.8\n\
000011\t9.5\n\
000020\t9.5\n\
000021\t9.2\n\
000100\t10\n\
000101\t9.6\n\
000110\t9.3\n\
000111\t8.7\n\
000120\t9.1\n\
000121\t8.1\n\
000200\t9.3\n\
000201\t9\n\
000210\t8.9\n\
000211\t8\n\
000220\t8.1\n\
000221\t6.8\n\
001000\t9.8\n\
001001\t9.5\n\
001010\t9.5\n\
001011\t9.2\n\
001020\t9\n\
001021\t8.4\n\
001100\t9.3\n\
001101\t9.2\n\
001110\t8.9\n\
001111\t8.1\n\
001120\t8.1\n\
001121\t6.5\n\
001200\t8.8\n\
001201\t8\n\
001210\t7.8\n\
001211\t7\n\
001220\t6.9\n\
001221\t4.8\n\
002001\t9.2\n\
002011\t8.2\n\
002021\t7.2\n\
002101\t7.9\n\
002111\t6.9\n\
002121\t5\n\
002201\t6.9\n\
002211\t5.5\n\
002221\t2.7\n\
010000\t9.9\n\
010001\t9.7\n\
010010\t9.5\n\
010011\t9.2\n\
010020\t9.2\n\
010021\t8.5\n\
010100\t9.5\n\
010101\t9.1\n\
010110\t9\n\
010111\t8.3\n\
010120\t8.4\n\
010121\t7.1\n\
010200\t9.2\n\
010201\t8.1\n\
010210\t8.2\n\
010211\t7.1\n\
010220\t7.2\n\
010221\t5.3\n\
011000\t9.5\n\
011001\t9.3\n\
011010\t9.2\n\
011011\t8.5\n\
011020\t8.5\n\
011021\t7.3\n\
011100\t9.2\n\
011101\t8.2\n\
011110\t8\n\
011111\t7.2\n\
011120\t7\n\
011121\t5.9\n\
011200\t8.4\n\
011201\t7\n\
011210\t7.1\n\
011211\t5.2\n\
011220\t5\n\
011221\t3\n\
012001\t8.6\n\
012011\t7.5\n\
012021\t5.2\n\
012101\t7.1\n\
012111\t5.2\n\
012121\t2.9\n\
012201\t6.3\n\
012211\t2.9\n\
012221\t1.7\n\
100000\t9.8\n\
100001\t9.5\n\
100010\t9.4\n\
100011\t8.7\n\
100020\t9.1\n\
100021\t8.1\n\
100100\t9.4\n\
100101\t8.9\n\
100110\t8.6\n\
100111\t7.4\n\
100120\t7.7\n\
100121\t6.4\n\
100200\t8.7\n\
100201\t7.5\n\
100210\t7.4\n\
100211\t6.3\n\
100220\t6.3\n\
100221\t4.9\n\
101000\t9.4\n\
101001\t8.9\n\
101010\t8.8\n\
101011\t7.7\n\
101020\t7.6\n\
101021\t6.7\n\
101100\t8.6\n\
101101\t7.6\n\
101110\t7.4\n\
101111\t5.8\n\
101120\t5.9\n\
101121\t5\n\
101200\t7.2\n\
101201\t5.7\n\
101210\t5.7\n\
101211\t5.2\n\
101220\t5.2\n\
101221\t2.5\n\
102001\t8.3\n\
102011\t7\n\
102021\t5.4\n\
102101\t6.5\n\
102111\t5.8\n\
102121\t2.6\n\
102201\t5.3\n\
102211\t2.1\n\
102221\t1.3\n\
110000\t9.5\n\
110001\t9\n\
110010\t8.8\n\
110011\t7.6\n\
110020\t7.6\n\
110021\t7\n\
110100\t9\n\
110101\t7.7\n\
110110\t7.5\n\
110111\t6.2\n\
110120\t6.1\n\
110121\t5.3\n\
110200\t7.7\n\
110201\t6.6\n\
110210\t6.8\n\
110211\t5.9\n\
110220\t5.2\n\
110221\t3\n\
111000\t8.9\n\
111001\t7.8\n\
111010\t7.6\n\
111011\t6.7\n\
111020\t6.2\n\
111021\t5.8\n\
111100\t7.4\n\
111101\t5.9\n\
111110\t5.7\n\
111111\t5.7\n\
111120\t4.7\n\
111121\t2.3\n\
111200\t6.1\n\
111201\t5.2\n\
111210\t5.7\n\
111211\t2.9\n\
111220\t2.4\n\
111221\t1.6\n\
112001\t7.1\n\
112011\t5.9\n\
112021\t3\n\
112101\t5.8\n\
112111\t2.6\n\
112121\t1.5\n\
112201\t2.3\n\
112211\t1.3\n\
112221\t0.6\n\
200000\t9.3\n\
200001\t8.7\n\
200010\t8.6\n\
200011\t7.2\n\
200020\t7.5\n\
200021\t5.8\n\
200100\t8.6\n\
200101\t7.4\n\
200110\t7.4\n\
200111\t6.1\n\
200120\t5.6\n\
200121\t3.4\n\
200200\t7\n\
200201\t5.4\n\
200210\t5.2\n\
200211\t4\n\
200220\t4\n\
200221\t2.2\n\
201000\t8.5\n\
201001\t7.5\n\
201010\t7.4\n\
201011\t5.5\n\
201020\t6.2\n\
201021\t5.1\n\
201100\t7.2\n\
201101\t5.7\n\
201110\t5.5\n\
201111\t4.1\n\
201120\t4.6\n\
201121\t1.9\n\
201200\t5.3\n\
201201\t3.6\n\
201210\t3.4\n\
201211\t1.9\n\
201220\t1.9\n\
201221\t0.8\n\
202001\t6.4\n\
202011\t5.1\n\
202021\t2\n\
202101\t4.7\n\
202111\t2.1\n\
202121\t1.1\n\
202201\t2.4\n\
202211\t0.9\n\
202221\t0.4\n\
210000\t8.8\n\
210001\t7.5\n\
210010\t7.3\n\
210011\t5.3\n\
210020\t6\n\
210021\t5\n\
210100\t7.3\n\
210101\t5.5\n\
210110\t5.9\n\
210111\t4\n\
210120\t4.1\n\
210121\t2\n\
210200\t5.4\n\
210201\t4.3\n\
210210\t4.5\n\
210211\t2.2\n\
210220\t2\n\
210221\t1.1\n\
211000\t7.5\n\
211001\t5.5\n\
211010\t5.8\n\
211011\t4.5\n\
211020\t4\n\
211021\t2.1\n\
211100\t6.1\n\
211101\t5.1\n\
211110\t4.8\n\
211111\t1.8\n\
211120\t2\n\
211121\t0.9\n\
211200\t4.6\n\
211201\t1.8\n\
211210\t1.7\n\
211211\t0.7\n\
211220\t0.8\n\
211221\t0.2\n\
212001\t5.3\n\
212011\t2.4\n\
212021\t1.4\n\
212101\t2.4\n\
212111\t1.2\n\
212121\t0.5\n\
212201\t1\n\
212211\t0.3\n\
212221\t0.1\n";

/// `maxComposed["eq1"]`: for EQ1 level 0, 1, 2.
pub(super) const MAX_COMPOSED_EQ1: [&[&str]; 3] = [
    &["AV:N/PR:N/UI:N/"],
    &["AV:A/PR:N/UI:N/", "AV:N/PR:L/UI:N/", "AV:N/PR:N/UI:P/"],
    &["AV:P/PR:N/UI:N/", "AV:A/PR:L/UI:P/"],
];
/// `maxComposed["eq2"]`: for EQ2 level 0, 1.
pub(super) const MAX_COMPOSED_EQ2: [&[&str]; 2] = [&["AC:L/AT:N/"], &["AC:H/AT:N/", "AC:L/AT:P/"]];
/// `maxComposed["eq3"]`: for EQ3 level 0, 1, 2, then EQ6 level 0, 1 (EQ3 2 with EQ6 0 does not exist).
pub(super) const MAX_COMPOSED_EQ3: [[&[&str]; 2]; 3] = [
    [
        &["VC:H/VI:H/VA:H/CR:H/IR:H/AR:H/"],
        &[
            "VC:H/VI:H/VA:L/CR:M/IR:M/AR:H/",
            "VC:H/VI:H/VA:H/CR:M/IR:M/AR:M/",
        ],
    ],
    [
        &[
            "VC:L/VI:H/VA:H/CR:H/IR:H/AR:H/",
            "VC:H/VI:L/VA:H/CR:H/IR:H/AR:H/",
        ],
        &[
            "VC:L/VI:H/VA:L/CR:H/IR:M/AR:H/",
            "VC:L/VI:H/VA:H/CR:H/IR:M/AR:M/",
            "VC:H/VI:L/VA:H/CR:M/IR:H/AR:M/",
            "VC:H/VI:L/VA:L/CR:M/IR:H/AR:H/",
            "VC:L/VI:L/VA:H/CR:H/IR:H/AR:M/",
        ],
    ],
    [&[], &["VC:L/VI:L/VA:L/CR:H/IR:H/AR:H/"]],
];
/// `maxComposed["eq4"]`: for EQ4 level 0, 1, 2.
pub(super) const MAX_COMPOSED_EQ4: [&[&str]; 3] = [
    &["SC:H/SI:S/SA:S/"],
    &["SC:H/SI:H/SA:H/"],
    &["SC:L/SI:L/SA:L/"],
];
/// `maxComposed["eq5"]`: for EQ5 level 0, 1, 2.
pub(super) const MAX_COMPOSED_EQ5: [&[&str]; 3] = [&["E:A/"], &["E:P/"], &["E:U/"]];

// `cvss4-max-severity.json` (`maxSeverity`): the severity depth of each EQ level, in steps of
// 0.1 (the calculator multiplies them by 0.1).
/// `maxSeverity["eq1"]` for EQ1 level 0, 1, 2.
pub(super) const MAX_SEVERITY_EQ1: [u8; 3] = [1, 4, 5];
/// `maxSeverity["eq2"]` for EQ2 level 0, 1.
pub(super) const MAX_SEVERITY_EQ2: [u8; 2] = [1, 2];
/// `maxSeverity["eq3eq6"]` for EQ3 level 0, 1, 2, then EQ6 level 0, 1 (EQ3 2 with EQ6 0 does
/// not exist).
pub(super) const MAX_SEVERITY_EQ3EQ6: [[Option<u8>; 2]; 3] =
    [[Some(7), Some(6)], [Some(8), Some(8)], [None, Some(10)]];
/// `maxSeverity["eq4"]` for EQ4 level 0, 1, 2.
pub(super) const MAX_SEVERITY_EQ4: [u8; 3] = [6, 5, 4];
/// `maxSeverity["eq5"]` for EQ5 level 0, 1, 2 (unused: the calculator's EQ5 proportion is
/// always 0).
pub(super) const MAX_SEVERITY_EQ5: [u8; 3] = [1, 1, 1];

/// Compare the tables above with the files they were transcribed from, when `shared/` sits
/// beside the repository (as in CI); skipped (with a note on stderr) otherwise.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/cvss/");

    fn read(file: &str) -> Option<String> {
        let path = format!("{DATA_DIR}{file}");
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) => {
                eprintln!("skipping the comparison with {path}: {e}");
                None
            }
        }
    }

    fn json(file: &str) -> Option<Value> {
        read(file).map(|t| serde_json::from_str(&t).expect("valid JSON"))
    }

    /// The keys of a JSON object, which must be `0`, `1`, … `n - 1` (in any order).
    fn levels(v: &Value) -> Vec<&Value> {
        let obj = v.as_object().expect("object");
        let mut keys: Vec<usize> = obj.keys().map(|k| k.parse().expect("level")).collect();
        keys.sort_unstable();
        keys.iter().map(|k| &obj[&k.to_string()]).collect()
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string"))
            .collect()
    }

    fn number(v: &Value) -> u8 {
        u8::try_from(v.as_u64().expect("integer")).expect("small")
    }

    #[test]
    fn macrovector_lookup_matches_file() {
        if let Some(text) = read("cvss4-macrovector-lookup.tsv") {
            assert!(
                text == MACROVECTOR_LOOKUP_TSV,
                "the lookup table differs from the file"
            );
        }
    }

    #[test]
    fn max_composed_matches_file() {
        let Some(mc) = json("cvss4-max-composed.json") else {
            return;
        };
        assert_eq!(mc.as_object().unwrap().len(), 5);
        let simple = |eq: &str, table: &[&[&str]]| {
            let lv = levels(&mc[eq]);
            assert_eq!(lv.len(), table.len(), "{eq}");
            for (level, (file, ours)) in lv.iter().zip(table).enumerate() {
                assert_eq!(strings(file), ours.to_vec(), "{eq} level {level}");
            }
        };
        simple("eq1", &MAX_COMPOSED_EQ1);
        simple("eq2", &MAX_COMPOSED_EQ2);
        simple("eq4", &MAX_COMPOSED_EQ4);
        simple("eq5", &MAX_COMPOSED_EQ5);
        // eq3: { eq3 level: { eq6 level: [...] } }; EQ3 2 has EQ6 1 only.
        let eq3 = levels(&mc["eq3"]);
        assert_eq!(eq3.len(), 3);
        for (l3, file) in eq3.iter().enumerate() {
            let obj = file.as_object().unwrap();
            for (l6, ours) in MAX_COMPOSED_EQ3[l3].iter().enumerate() {
                let ours = ours.to_vec();
                match obj.get(&l6.to_string()) {
                    Some(list) => assert_eq!(strings(list), ours, "eq3 {l3} eq6 {l6}"),
                    None => assert!(ours.is_empty(), "eq3 {l3} eq6 {l6}"),
                }
            }
            let expected_keys = if l3 == 2 { 1 } else { 2 };
            assert_eq!(obj.len(), expected_keys, "eq3 {l3}");
        }
    }

    #[test]
    fn max_severity_matches_file() {
        let Some(ms) = json("cvss4-max-severity.json") else {
            return;
        };
        assert_eq!(ms.as_object().unwrap().len(), 5);
        let simple = |eq: &str, table: &[u8]| {
            let file: Vec<u8> = levels(&ms[eq]).into_iter().map(number).collect();
            assert_eq!(file, table, "{eq}");
        };
        simple("eq1", &MAX_SEVERITY_EQ1);
        simple("eq2", &MAX_SEVERITY_EQ2);
        simple("eq4", &MAX_SEVERITY_EQ4);
        simple("eq5", &MAX_SEVERITY_EQ5);
        let eq3eq6 = levels(&ms["eq3eq6"]);
        assert_eq!(eq3eq6.len(), 3);
        for (l3, file) in eq3eq6.iter().enumerate() {
            let obj = file.as_object().unwrap();
            let file: Vec<Option<u8>> = (0..2)
                .map(|l6| obj.get(&l6.to_string()).map(number))
                .collect();
            assert_eq!(file, MAX_SEVERITY_EQ3EQ6[l3].to_vec(), "eq3eq6 {l3}");
            assert_eq!(obj.len(), file.iter().flatten().count(), "eq3eq6 {l3}");
        }
    }
}
