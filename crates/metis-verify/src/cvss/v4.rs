//! CVSS v4.0 metrics and scoring (FIRST "CVSS v4.0 Specification Document", section 8, and
//! the FIRST CVSS v4.0 calculator's MacroVector algorithm and data).
//!
//! The score of a vector is that of its MacroVector (EQ1..EQ6 levels, looked up in the
//! calculator's table) minus the mean, over the EQs that have a lower MacroVector, of
//! `(score of the MacroVector − score of the next lower one) × severity distance / depth`,
//! where the severity distance is measured from the first highest-severity vector of the
//! MacroVector that the vector does not exceed. All quantities are tenths, so the mean is a
//! rational with denominator dividing `840 × n`: it is computed exactly and rounded half-up to
//! one decimal. Exact halfway values do occur (45 of the 1,694 v4.0 reference vectors); the
//! reference data rounds them up, which exact arithmetic does reliably and `f64` need not.

mod tables;

use super::{def, same, vi, Group, MetricDef, Values};
use tables::*;

const B: Group = Group::Base;
const T: Group = Group::Temporal;
const E: Group = Group::Environmental;
const S: Group = Group::Supplemental;

/// The metrics in specification order. Modified metrics list `X` and then the values of the
/// base metric in the same order (`MSI`/`MSA` add `S`, Safety, last), so that value index
/// `k + 1` of `MAV` means index `k` of `AV`.
pub(super) const METRICS: [MetricDef; 32] = [
    def("AV", &["N", "A", "L", "P"], B),
    def("AC", &["L", "H"], B),
    def("AT", &["N", "P"], B),
    def("PR", &["N", "L", "H"], B),
    def("UI", &["N", "P", "A"], B),
    def("VC", &["H", "L", "N"], B),
    def("VI", &["H", "L", "N"], B),
    def("VA", &["H", "L", "N"], B),
    def("SC", &["H", "L", "N"], B),
    def("SI", &["H", "L", "N"], B),
    def("SA", &["H", "L", "N"], B),
    def("E", &["X", "A", "P", "U"], T),
    def("CR", &["X", "H", "M", "L"], E),
    def("IR", &["X", "H", "M", "L"], E),
    def("AR", &["X", "H", "M", "L"], E),
    def("MAV", &["X", "N", "A", "L", "P"], E),
    def("MAC", &["X", "L", "H"], E),
    def("MAT", &["X", "N", "P"], E),
    def("MPR", &["X", "N", "L", "H"], E),
    def("MUI", &["X", "N", "P", "A"], E),
    def("MVC", &["X", "H", "L", "N"], E),
    def("MVI", &["X", "H", "L", "N"], E),
    def("MVA", &["X", "H", "L", "N"], E),
    def("MSC", &["X", "H", "L", "N"], E),
    def("MSI", &["X", "H", "L", "N", "S"], E),
    def("MSA", &["X", "H", "L", "N", "S"], E),
    def("S", &["X", "N", "P"], S),
    def("AU", &["X", "N", "Y"], S),
    def("R", &["X", "A", "U", "I"], S),
    def("V", &["X", "D", "C"], S),
    def("RE", &["X", "L", "M", "H"], S),
    def("U", &["X", "Clear", "Green", "Amber", "Red"], S),
];

const AV: usize = 0;
const AC: usize = 1;
const AT: usize = 2;
const PR: usize = 3;
const UI: usize = 4;
const VC: usize = 5;
const VI: usize = 6;
const VA: usize = 7;
const SC: usize = 8;
const SI: usize = 9;
const SA: usize = 10;
const EX: usize = 11;
const CR: usize = 12;
const IR: usize = 13;
const AR: usize = 14;
/// Offset from a base metric to its modified metric (AV → MAV, …, SA → MSA).
const MODIFIED: usize = 15;

const _: () = {
    let names = [
        (AV, "AV"),
        (AC, "AC"),
        (AT, "AT"),
        (PR, "PR"),
        (UI, "UI"),
        (VC, "VC"),
        (VI, "VI"),
        (VA, "VA"),
        (SC, "SC"),
        (SI, "SI"),
        (SA, "SA"),
        (EX, "E"),
        (CR, "CR"),
        (IR, "IR"),
        (AR, "AR"),
        (MODIFIED + AV, "MAV"),
        (MODIFIED + AC, "MAC"),
        (MODIFIED + AT, "MAT"),
        (MODIFIED + PR, "MPR"),
        (MODIFIED + UI, "MUI"),
        (MODIFIED + VC, "MVC"),
        (MODIFIED + VI, "MVI"),
        (MODIFIED + VA, "MVA"),
        (MODIFIED + SC, "MSC"),
        (MODIFIED + SI, "MSI"),
        (MODIFIED + SA, "MSA"),
    ];
    let mut k = 0;
    while k < names.len() {
        assert!(same(METRICS[names[k].0].name, names[k].1));
        k += 1;
    }
};

/// The calculator's severity level of a metric value, in steps of 0.1 (`AV_levels` etc.:
/// `AV:N` 0, `AV:A` 0.1, …). Used to decode the tables at compile time; the scoring code
/// computes the same levels from value indices (checked by a unit test).
const fn level_of(metric: &[u8], value: u8) -> u8 {
    let levels: &[u8] = match metric {
        b"AV" => b"NALP",
        b"PR" => b"NLH",
        b"UI" => b"NPA",
        b"AC" => b"LH",
        b"AT" => b"NP",
        b"VC" | b"VI" | b"VA" => b"HLN",
        b"SC" | b"SI" | b"SA" => b"SHLN",
        b"CR" | b"IR" | b"AR" => b"HML",
        _ => panic!("unknown metric in a CVSS v4.0 table"),
    };
    let mut i = 0;
    while i < levels.len() {
        if levels[i] == value {
            return i as u8;
        }
        i += 1;
    }
    panic!("unknown value in a CVSS v4.0 table")
}

/// Whether `b[start..end]` is `name`.
const fn name_at(b: &[u8], start: usize, end: usize, name: &[u8]) -> bool {
    if end - start != name.len() {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        if b[start + i] != name[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The most highest-severity vectors any EQ level has (EQ3/EQ6 level 1/1 has five).
const MAX_MAXES: usize = 5;

/// The highest-severity partial vectors of one EQ level as severity levels of the metrics
/// `names` (in that order).
#[derive(Clone, Copy)]
struct Maxes<const N: usize> {
    items: [[u8; N]; MAX_MAXES],
    len: usize,
}

/// Decodes partial vectors such as `"AV:N/PR:N/UI:N/"` into levels of `names`; each must
/// give exactly the metrics `names`.
const fn decode<const N: usize>(list: &[&str], names: [&str; N]) -> Maxes<N> {
    assert!(list.len() <= MAX_MAXES);
    let mut items = [[0u8; N]; MAX_MAXES];
    let mut k = 0;
    while k < list.len() {
        let b = list[k].as_bytes();
        let mut seen = [false; N];
        let mut i = 0;
        while i < b.len() {
            // NAME:V/
            let start = i;
            while b[i] != b':' {
                i += 1;
            }
            let value = b[i + 1];
            assert!(b[i + 2] == b'/');
            let mut j = 0;
            while !name_at(b, start, i, names[j].as_bytes()) {
                j += 1;
            }
            i += 3;
            assert!(!seen[j]);
            seen[j] = true;
            items[k][j] = level_of(names[j].as_bytes(), value);
        }
        let mut j = 0;
        while j < N {
            assert!(seen[j]);
            j += 1;
        }
        k += 1;
    }
    Maxes {
        items,
        len: list.len(),
    }
}

const EQ1_NAMES: [&str; 3] = ["AV", "PR", "UI"];
const EQ2_NAMES: [&str; 2] = ["AC", "AT"];
const EQ3EQ6_NAMES: [&str; 6] = ["VC", "VI", "VA", "CR", "IR", "AR"];
const EQ4_NAMES: [&str; 3] = ["SC", "SI", "SA"];

static EQ1_MAXES: [Maxes<3>; 3] = [
    decode(MAX_COMPOSED_EQ1[0], EQ1_NAMES),
    decode(MAX_COMPOSED_EQ1[1], EQ1_NAMES),
    decode(MAX_COMPOSED_EQ1[2], EQ1_NAMES),
];
static EQ2_MAXES: [Maxes<2>; 2] = [
    decode(MAX_COMPOSED_EQ2[0], EQ2_NAMES),
    decode(MAX_COMPOSED_EQ2[1], EQ2_NAMES),
];
/// Indexed `[eq3][eq6]`.
static EQ3EQ6_MAXES: [[Maxes<6>; 2]; 3] = [
    [
        decode(MAX_COMPOSED_EQ3[0][0], EQ3EQ6_NAMES),
        decode(MAX_COMPOSED_EQ3[0][1], EQ3EQ6_NAMES),
    ],
    [
        decode(MAX_COMPOSED_EQ3[1][0], EQ3EQ6_NAMES),
        decode(MAX_COMPOSED_EQ3[1][1], EQ3EQ6_NAMES),
    ],
    [
        decode(MAX_COMPOSED_EQ3[2][0], EQ3EQ6_NAMES),
        decode(MAX_COMPOSED_EQ3[2][1], EQ3EQ6_NAMES),
    ],
];
static EQ4_MAXES: [Maxes<3>; 3] = [
    decode(MAX_COMPOSED_EQ4[0], EQ4_NAMES),
    decode(MAX_COMPOSED_EQ4[1], EQ4_NAMES),
    decode(MAX_COMPOSED_EQ4[2], EQ4_NAMES),
];

// `maxComposed["eq5"]` gives `E:A`, `E:P`, `E:U` for EQ5 levels 0, 1, 2: the distance within
// EQ5 is always 0 and does not take part in the choice of the highest-severity vector.
const _: () = {
    let e = [b'A', b'P', b'U'];
    let mut k = 0;
    while k < 3 {
        let b = MAX_COMPOSED_EQ5[k][0].as_bytes();
        assert!(MAX_COMPOSED_EQ5[k].len() == 1);
        assert!(b.len() == 4 && b[0] == b'E' && b[1] == b':' && b[2] == e[k] && b[3] == b'/');
        k += 1;
    }
};

/// A common multiple of all depths (`maxSeverity` values): the mean distance is computed as
/// an integer over `LCM_DEPTH × n`.
const LCM_DEPTH: i64 = 840;

const _: () = {
    let mut k = 0;
    while k < 3 {
        assert!(LCM_DEPTH % MAX_SEVERITY_EQ1[k] as i64 == 0);
        assert!(LCM_DEPTH % MAX_SEVERITY_EQ4[k] as i64 == 0);
        assert!(LCM_DEPTH % MAX_SEVERITY_EQ5[k] as i64 == 0);
        let mut j = 0;
        while j < 2 {
            if let Some(d) = MAX_SEVERITY_EQ3EQ6[k][j] {
                assert!(LCM_DEPTH % d as i64 == 0);
            }
            j += 1;
        }
        k += 1;
    }
    assert!(LCM_DEPTH % MAX_SEVERITY_EQ2[0] as i64 == 0);
    assert!(LCM_DEPTH % MAX_SEVERITY_EQ2[1] as i64 == 0);
};

/// Number of EQ-level combinations, including ones that do not exist (EQ3 2 with EQ6 0).
const LOOKUP_LEN: usize = 3 * 2 * 3 * 3 * 3 * 2;
const NO_SCORE: u8 = u8::MAX;

/// Index into [`LOOKUP`] of EQ levels `e`, or `None` if a level is out of range.
#[inline]
const fn lookup_index(e: [usize; 6]) -> Option<usize> {
    if e[0] > 2 || e[1] > 1 || e[2] > 2 || e[3] > 2 || e[4] > 2 || e[5] > 1 {
        return None;
    }
    Some(((((e[0] * 2 + e[1]) * 3 + e[2]) * 3 + e[3]) * 3 + e[4]) * 2 + e[5])
}

/// Decodes [`MACROVECTOR_LOOKUP_TSV`] into MacroVector scores in tenths ([`NO_SCORE`] where
/// the MacroVector does not exist).
const fn decode_lookup(tsv: &str) -> [u8; LOOKUP_LEN] {
    let b = tsv.as_bytes();
    let mut table = [NO_SCORE; LOOKUP_LEN];
    let mut i = 0;
    while b[i] != b'\n' {
        i += 1; // header
    }
    i += 1;
    let mut count = 0;
    while i < b.len() {
        let mut e = [0usize; 6];
        let mut k = 0;
        while k < 6 {
            assert!(b[i + k].is_ascii_digit());
            e[k] = (b[i + k] - b'0') as usize;
            k += 1;
        }
        i += 6;
        assert!(b[i] == b'\t');
        i += 1;
        let mut tenths: u32 = 0;
        while b[i].is_ascii_digit() {
            tenths = tenths * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        tenths *= 10;
        if b[i] == b'.' {
            assert!(b[i + 1].is_ascii_digit());
            tenths += (b[i + 1] - b'0') as u32;
            i += 2;
        }
        assert!(b[i] == b'\n');
        i += 1;
        assert!(tenths <= 100);
        let idx = match lookup_index(e) {
            Some(idx) => idx,
            None => panic!("MacroVector out of range"),
        };
        assert!(table[idx] == NO_SCORE);
        table[idx] = tenths as u8;
        count += 1;
    }
    assert!(count == 270);
    table
}

static LOOKUP: [u8; LOOKUP_LEN] = decode_lookup(MACROVECTOR_LOOKUP_TSV);

/// The score (tenths) of the MacroVector with EQ levels `e`, if it exists.
#[inline]
fn macro_score(e: [usize; 6]) -> Option<i64> {
    let s = LOOKUP[lookup_index(e)?];
    (s != NO_SCORE).then_some(s as i64)
}

/// The value index of base metric `m` after applying its modified metric (`MSI:S`/`MSA:S`
/// give index 3).
#[inline]
fn effective(vals: &Values, m: usize) -> usize {
    match vals[MODIFIED + m] {
        0 | 1 => vi(vals, m),
        v => v as usize - 2,
    }
}

/// Severity levels (steps of 0.1) of the effective values of the metrics that take part in
/// the severity distances; `X` of CR/IR/AR counts as `H`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Levels {
    eq1: [u8; 3],
    eq2: [u8; 2],
    eq3eq6: [u8; 6],
    eq4: [u8; 3],
}

#[inline]
fn levels(vals: &Values) -> Levels {
    let l = |m: usize| effective(vals, m) as u8;
    // S, H, L, N → 0, 1, 2, 3; the value lists are H, L, N(, S).
    let s = |m: usize| (l(m) + 1) % 4;
    // X, H, M, L → 0, 0, 1, 2.
    let req = |m: usize| vi(vals, m).saturating_sub(1) as u8;
    Levels {
        eq1: [l(AV), l(PR), l(UI)],
        eq2: [l(AC), l(AT)],
        eq3eq6: [l(VC), l(VI), l(VA), req(CR), req(IR), req(AR)],
        eq4: [s(SC), s(SI), s(SA)],
    }
}

/// The index of the first highest-severity vector that `cur` does not exceed in any metric.
#[inline]
fn first_reachable<const N: usize>(maxes: &Maxes<N>, cur: &[u8; N]) -> Option<usize> {
    (0..maxes.len).find(|&k| (0..N).all(|j| cur[j] >= maxes.items[k][j]))
}

/// The severity distance of `cur` from highest-severity vector `k`.
#[inline]
fn distance<const N: usize>(maxes: &Maxes<N>, k: usize, cur: &[u8; N]) -> i64 {
    (0..N)
        .map(|j| cur[j] as i64 - maxes.items[k][j] as i64)
        .sum()
}

/// The CVSS v4.0 score of the whole vector.
pub(super) fn score(vals: &Values) -> f64 {
    (score_tenths(vals) as f64) / 10.0
}

fn score_tenths(vals: &Values) -> i64 {
    let lv = levels(vals);
    let [av, pr, ui] = lv.eq1;
    let [ac, at] = lv.eq2;
    let [vc, vi_, va, cr, ir, ar] = lv.eq3eq6;
    let [sc, si, sa] = lv.eq4;

    // No impact on the vulnerable or the subsequent system: 0 (the calculator's shortcut).
    if vc == 2 && vi_ == 2 && va == 2 && sc == 3 && si == 3 && sa == 3 {
        return 0;
    }

    // MacroVector.
    let eq1 = if av == 0 && pr == 0 && ui == 0 {
        0
    } else if (av == 0 || pr == 0 || ui == 0) && av != 3 {
        1
    } else {
        2
    };
    let eq2 = if ac == 0 && at == 0 { 0 } else { 1 };
    let eq3 = if vc == 0 && vi_ == 0 {
        0
    } else if vc == 0 || vi_ == 0 || va == 0 {
        1
    } else {
        2
    };
    let eq4 = if si == 0 || sa == 0 {
        0 // MSI:S or MSA:S
    } else if sc == 1 || si == 1 || sa == 1 {
        1
    } else {
        2
    };
    // E: X (counts as A), A, P, U.
    let eq5 = vi(vals, EX).saturating_sub(1);
    let eq6 = if (cr == 0 && vc == 0) || (ir == 0 && vi_ == 0) || (ar == 0 && va == 0) {
        0
    } else {
        1
    };
    let e = [eq1, eq2, eq3, eq4, eq5, eq6];
    let Some(value) = macro_score(e) else {
        // Every combination of levels computed above exists in the table.
        debug_assert!(false, "missing MacroVector {e:?}");
        return 0;
    };

    // Scores of the next lower MacroVectors (None where there is none).
    let lower = |k: usize| {
        let mut l = e;
        l[k] += 1;
        macro_score(l)
    };
    let lower_eq3eq6 = match (eq3, eq6) {
        (0, 0) => {
            // Two ways down (00 → 01 and 00 → 10): take the higher score.
            let (left, right) = (lower(5), lower(2));
            match (left, right) {
                (Some(l), Some(r)) if l > r => left,
                _ => right,
            }
        }
        (1, 0) => lower(5),
        (0, 1) | (1, 1) => lower(2),
        // 21 → 32 does not exist.
        _ => None,
    };

    // Severity distances from the first highest-severity vector of the MacroVector that the
    // vector does not exceed. The calculator searches the combinations of all EQs' highest
    // vectors in order, so if any EQ has no such vector it ends with the last combination.
    let (m1, m2, m36, m4) = (
        &EQ1_MAXES[eq1],
        &EQ2_MAXES[eq2],
        &EQ3EQ6_MAXES[eq3][eq6],
        &EQ4_MAXES[eq4],
    );
    let (k1, k2, k36, k4) = match (
        first_reachable(m1, &lv.eq1),
        first_reachable(m2, &lv.eq2),
        first_reachable(m36, &lv.eq3eq6),
        first_reachable(m4, &lv.eq4),
    ) {
        (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
        _ => (m1.len - 1, m2.len - 1, m36.len - 1, m4.len - 1),
    };
    let d1 = distance(m1, k1, &lv.eq1);
    let d2 = distance(m2, k2, &lv.eq2);
    let d36 = distance(m36, k36, &lv.eq3eq6);
    let d4 = distance(m4, k4, &lv.eq4);

    let depth36 = MAX_SEVERITY_EQ3EQ6[eq3][eq6].unwrap_or(1);
    // (score of the next lower MacroVector, severity distance, depth); EQ5's proportion is 0.
    let eqs = [
        (lower(0), d1, MAX_SEVERITY_EQ1[eq1]),
        (lower(1), d2, MAX_SEVERITY_EQ2[eq2]),
        (lower_eq3eq6, d36, depth36),
        (lower(3), d4, MAX_SEVERITY_EQ4[eq4]),
        (lower(4), 0, MAX_SEVERITY_EQ5[eq5]),
    ];
    // The proportional distance of an EQ is (value − lower) × distance / depth tenths (all
    // three in tenths, the calculator's 0.1 steps cancel), i.e. `(value − lower) × distance ×
    // (LCM_DEPTH / depth)` in units of 1 / LCM_DEPTH tenths; the mean over the n EQs with a
    // lower MacroVector is `sum / (LCM_DEPTH × n)` tenths.
    let mut n = 0i64;
    let mut sum = 0i64;
    for (low, d, depth) in eqs {
        if let Some(low) = low {
            n += 1;
            sum += (value - low) * d * (LCM_DEPTH / depth as i64);
        }
    }
    if n == 0 {
        return value;
    }
    // value − mean, in tenths, as num / den; clamped to [0, 10] and rounded half-up.
    let den = LCM_DEPTH * n;
    let num = value * den - sum;
    if num <= 0 {
        0
    } else if num >= 100 * den {
        100
    } else {
        (2 * num + den) / (2 * den)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The levels computed from value indices agree with the calculator's level tables.
    #[test]
    fn levels_match_level_tables() {
        let metrics = [
            (AV, "AV"),
            (PR, "PR"),
            (UI, "UI"),
            (AC, "AC"),
            (AT, "AT"),
            (VC, "VC"),
            (VI, "VI"),
            (VA, "VA"),
            (SC, "SC"),
            (SI, "SI"),
            (SA, "SA"),
            (CR, "CR"),
            (IR, "IR"),
            (AR, "AR"),
        ];
        let at = |lv: &Levels, m: usize| match m {
            AV => lv.eq1[0],
            PR => lv.eq1[1],
            UI => lv.eq1[2],
            AC => lv.eq2[0],
            AT => lv.eq2[1],
            VC => lv.eq3eq6[0],
            VI => lv.eq3eq6[1],
            VA => lv.eq3eq6[2],
            CR => lv.eq3eq6[3],
            IR => lv.eq3eq6[4],
            AR => lv.eq3eq6[5],
            SC => lv.eq4[0],
            SI => lv.eq4[1],
            SA => lv.eq4[2],
            _ => unreachable!(),
        };
        let base: Values = {
            let mut v = [0; 32];
            for (i, d) in METRICS.iter().enumerate() {
                if d.group == Group::Base {
                    v[i] = 1;
                }
            }
            v
        };
        for (m, name) in metrics {
            // Every value of the metric itself and (for base metrics) of its modified metric.
            let mut cases = Vec::new();
            for (k, value) in METRICS[m].values.iter().enumerate() {
                cases.push((m, k, *value));
            }
            if m < EX {
                for (k, value) in METRICS[MODIFIED + m].values.iter().enumerate().skip(1) {
                    cases.push((MODIFIED + m, k, *value));
                }
            }
            for (slot, k, value) in cases {
                let mut vals = base;
                vals[slot] = k as u8 + 1;
                let expected = if value == "X" { "H" } else { value };
                assert_eq!(
                    at(&levels(&vals), m),
                    level_of(name.as_bytes(), expected.as_bytes()[0]),
                    "{}:{value}",
                    METRICS[slot].name
                );
            }
        }
    }

    #[test]
    fn lookup_has_all_macrovectors() {
        let n = LOOKUP.iter().filter(|&&s| s != NO_SCORE).count();
        assert_eq!(n, 270);
        assert_eq!(macro_score([0, 0, 0, 0, 0, 0]), Some(100));
        assert_eq!(macro_score([2, 1, 2, 2, 2, 1]), Some(1));
        assert_eq!(macro_score([0, 0, 2, 0, 0, 0]), None);
    }
}
