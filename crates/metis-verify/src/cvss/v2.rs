//! CVSS v2.0 metrics and scoring (FIRST "A Complete Guide to the Common Vulnerability Scoring
//! System Version 2.0", section 3.2).
//!
//! The equations are evaluated exactly: every weight has at most three decimals, so each
//! intermediate value is an integer at a known decimal scale (`i128` is ample), and rounding
//! to one decimal is half-up (away from zero) on the exact value — what an implementation with
//! decimal arithmetic (Python's `Decimal` with `ROUND_HALF_UP`) computes.
//!
//! Negative environmental values. With low security requirements the adjusted impact can be
//! so small that the base equation goes negative (e.g. `AV:L/AC:H/Au:M/C:N/I:N/A:P/AR:L`:
//! AdjustedBase = round((0.6 × 1.431 + 0.4 × 1.244 − 1.5) × 1.176) = −0.2). The guide does not
//! clamp, and neither do implementations that follow it literally, so the intermediate
//! AdjustedBase and AdjustedTemporal keep their sign here too (this decides e.g. 3.9 versus 4.0
//! when CDP lifts the result); only the final environmental score is clamped at 0.0, since a
//! score is never below 0.

use super::{def, from_tenths, same, vi, Group, MetricDef, Scores, Values};

const B: Group = Group::Base;
const T: Group = Group::Temporal;
const E: Group = Group::Environmental;

/// The metrics in specification order; optional metrics have `ND` at value index 0.
pub(super) const METRICS: [MetricDef; 14] = [
    def("AV", &["L", "A", "N"], B),
    def("AC", &["H", "M", "L"], B),
    def("Au", &["M", "S", "N"], B),
    def("C", &["N", "P", "C"], B),
    def("I", &["N", "P", "C"], B),
    def("A", &["N", "P", "C"], B),
    def("E", &["ND", "U", "POC", "F", "H"], T),
    def("RL", &["ND", "OF", "TF", "W", "U"], T),
    def("RC", &["ND", "UC", "UR", "C"], T),
    def("CDP", &["ND", "N", "L", "LM", "MH", "H"], E),
    def("TD", &["ND", "N", "L", "M", "H"], E),
    def("CR", &["ND", "L", "M", "H"], E),
    def("IR", &["ND", "L", "M", "H"], E),
    def("AR", &["ND", "L", "M", "H"], E),
];

const AV: usize = 0;
const AC: usize = 1;
const AU: usize = 2;
const C: usize = 3;
const I: usize = 4;
const A: usize = 5;
const EX: usize = 6;
const RL: usize = 7;
const RC: usize = 8;
const CDP: usize = 9;
const TD: usize = 10;
const CR: usize = 11;
const IR: usize = 12;
const AR: usize = 13;

const _: () = {
    let names = [
        (AV, "AV"),
        (AC, "AC"),
        (AU, "Au"),
        (C, "C"),
        (I, "I"),
        (A, "A"),
        (EX, "E"),
        (RL, "RL"),
        (RC, "RC"),
        (CDP, "CDP"),
        (TD, "TD"),
        (CR, "CR"),
        (IR, "IR"),
        (AR, "AR"),
    ];
    let mut k = 0;
    while k < names.len() {
        assert!(same(METRICS[names[k].0].name, names[k].1));
        k += 1;
    }
};

// Weights, indexed like the value lists above, as integers at the scale given.
/// AccessVector L/A/N, ×1000.
const W_AV: [i128; 3] = [395, 646, 1000];
/// AccessComplexity H/M/L, ×1000.
const W_AC: [i128; 3] = [350, 610, 710];
/// Authentication M/S/N, ×1000.
const W_AU: [i128; 3] = [450, 560, 704];
/// Conf/Integ/AvailImpact N/P/C, ×1000.
const W_IMPACT: [i128; 3] = [0, 275, 660];
/// Exploitability ND/U/POC/F/H, ×100.
const W_E: [i128; 5] = [100, 85, 90, 95, 100];
/// RemediationLevel ND/OF/TF/W/U, ×100.
const W_RL: [i128; 5] = [100, 87, 90, 95, 100];
/// ReportConfidence ND/UC/UR/C, ×100.
const W_RC: [i128; 4] = [100, 90, 95, 100];
/// CollateralDamagePotential ND/N/L/LM/MH/H, ×10.
const W_CDP: [i128; 6] = [0, 0, 1, 3, 4, 5];
/// TargetDistribution ND/N/L/M/H, ×100.
const W_TD: [i128; 5] = [100, 0, 25, 75, 100];
/// Conf/Integ/AvailRequirement ND/L/M/H, ×100.
const W_REQ: [i128; 4] = [100, 50, 100, 151];

/// Rounds `num / den` (`den > 0`) to the nearest integer, halves away from zero.
#[inline]
fn round_half_up(num: i128, den: i128) -> i128 {
    let q = (2 * num.abs() + den) / (2 * den);
    if num < 0 {
        -q
    } else {
        q
    }
}

/// 20 × AccessVector × AccessComplexity × Authentication, ×10⁹.
fn exploitability(vals: &Values) -> i128 {
    20 * W_AV[vi(vals, AV)] * W_AC[vi(vals, AC)] * W_AU[vi(vals, AU)]
}

/// round_to_1_decimal(((0.6 × impact) + (0.4 × exploitability) − 1.5) × f(impact)), in tenths,
/// for `impact` at scale 10^`scale` (≥ 9) and the exploitability at 10⁹.
fn base_equation(impact: i128, scale: u32, exploitability: i128) -> i128 {
    if impact == 0 {
        // f(impact) = 0: the score is (−)0.
        return 0;
    }
    let s = 10i128.pow(scale);
    // At scale 10^(scale+1): 0.6 × impact + 0.4 × exploitability − 1.5.
    let raw = 6 * impact + 4 * exploitability * (s / 1_000_000_000) - 15 * s;
    // × 1.176 → scale 10^(scale+4). Positive for the base impact (≥ 2.86; exploitability
    // ≥ 1.24), possibly negative for an adjusted impact (see the module documentation).
    round_half_up(raw * 1176, s * 1000)
}

pub(super) fn base_tenths(vals: &Values) -> i128 {
    let (c, i, a) = (
        W_IMPACT[vi(vals, C)],
        W_IMPACT[vi(vals, I)],
        W_IMPACT[vi(vals, A)],
    );
    // Impact = 10.41 × (1 − (1 − C) × (1 − I) × (1 − A)), ×10¹².
    let impact = 10_410 * (1_000_000_000 - (1000 - c) * (1000 - i) * (1000 - a));
    base_equation(impact, 12, exploitability(vals))
}

pub(super) fn base_score(vals: &Values) -> f64 {
    from_tenths(base_tenths(vals))
}

/// Exploitability × RemediationLevel × ReportConfidence, ×10⁶.
fn temporal_factor(vals: &Values) -> i128 {
    W_E[vi(vals, EX)] * W_RL[vi(vals, RL)] * W_RC[vi(vals, RC)]
}

pub(super) fn scores(vals: &Values) -> Scores {
    let base = base_tenths(vals);
    let tf = temporal_factor(vals);
    let temporal = [EX, RL, RC]
        .iter()
        .any(|&m| vals[m] != 0)
        .then(|| from_tenths(round_half_up(base * tf, 1_000_000)));
    let environmental = [CDP, TD, CR, IR, AR]
        .iter()
        .any(|&m| vals[m] != 0)
        .then(|| from_tenths(environmental_tenths(vals, tf)));
    Scores {
        base: from_tenths(base),
        temporal,
        environmental,
    }
}

fn environmental_tenths(vals: &Values, temporal_factor: i128) -> i128 {
    let adj = |m: usize, r: usize| 100_000 - W_IMPACT[vi(vals, m)] * W_REQ[vi(vals, r)];
    // AdjustedImpact = min(10, 10.41 × (1 − (1 − C×CR) × (1 − I×IR) × (1 − A×AR))), ×10¹⁸.
    let adjusted_impact = (10_410 * (1_000_000_000_000_000 - adj(C, CR) * adj(I, IR) * adj(A, AR)))
        .min(10 * 1_000_000_000_000_000_000);
    let adjusted_base = base_equation(adjusted_impact, 18, exploitability(vals));
    // AdjustedTemporal = round_to_1_decimal(AdjustedBase × E × RL × RC), in tenths.
    let at = round_half_up(adjusted_base * temporal_factor, 1_000_000);
    // (AdjustedTemporal + (10 − AdjustedTemporal) × CDP) × TD, ×10⁴.
    let env = (at * 10 + (100 - at) * W_CDP[vi(vals, CDP)]) * W_TD[vi(vals, TD)];
    round_half_up(env, 1000).max(0)
}
