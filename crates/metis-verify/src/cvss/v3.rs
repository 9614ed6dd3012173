//! CVSS v3.0 and v3.1 metrics and scoring (FIRST "CVSS v3.0 Specification Document" and
//! "CVSS v3.1 Specification Document", section 7 and Appendix A).
//!
//! Rounding. The specifications round up to one decimal: v3.0 with a plain ceiling, v3.1 with
//! `Roundup` (Appendix A), which first rounds to five decimals so that floating-point noise
//! (`4.000000000000001`) cannot push a value to the next tenth.
//!
//! - The impact + exploitability sums are computed in `f64` as written in the
//!   specifications. Over the whole finite metric space (all base and all modified-metric
//!   combinations, checked exhaustively in exact rational arithmetic when this module was
//!   written) no such sum lies on a one-decimal boundary (except the clamp at 10.0, which is
//!   exact) or within 2.5·10⁻⁵ above one, so the `f64` error (~10⁻¹⁵) never changes the
//!   rounded value, and v3.0's ceiling and v3.1's `Roundup` agree there.
//! - The temporal and environmental products (a one-decimal score times E × RL × RC, all
//!   two-decimal weights) land exactly on boundaries (`10.0 × 0.92 = 9.2`), so they are computed
//!   in integers: the exact ceiling for v3.0 (as an implementation with decimal arithmetic does;
//!   a naive `f64` ceiling gives 9.3), `Roundup` on the exact value for v3.1.

use super::{def, from_tenths, same, vi, Group, MetricDef, Scores, Values};

const B: Group = Group::Base;
const T: Group = Group::Temporal;
const E: Group = Group::Environmental;

/// The metrics in specification order. Modified metrics list `X` and then the values of the
/// base metric in the same order, so that value index `k + 1` of `MAV` means index `k` of `AV`.
pub(super) const METRICS: [MetricDef; 22] = [
    def("AV", &["N", "A", "L", "P"], B),
    def("AC", &["L", "H"], B),
    def("PR", &["N", "L", "H"], B),
    def("UI", &["N", "R"], B),
    def("S", &["U", "C"], B),
    def("C", &["H", "L", "N"], B),
    def("I", &["H", "L", "N"], B),
    def("A", &["H", "L", "N"], B),
    def("E", &["X", "H", "F", "P", "U"], T),
    def("RL", &["X", "U", "W", "T", "O"], T),
    def("RC", &["X", "C", "R", "U"], T),
    def("CR", &["X", "H", "M", "L"], E),
    def("IR", &["X", "H", "M", "L"], E),
    def("AR", &["X", "H", "M", "L"], E),
    def("MAV", &["X", "N", "A", "L", "P"], E),
    def("MAC", &["X", "L", "H"], E),
    def("MPR", &["X", "N", "L", "H"], E),
    def("MUI", &["X", "N", "R"], E),
    def("MS", &["X", "U", "C"], E),
    def("MC", &["X", "H", "L", "N"], E),
    def("MI", &["X", "H", "L", "N"], E),
    def("MA", &["X", "H", "L", "N"], E),
];

const AV: usize = 0;
const AC: usize = 1;
const PR: usize = 2;
const UI: usize = 3;
const S: usize = 4;
const C: usize = 5;
const I: usize = 6;
const A: usize = 7;
const EX: usize = 8;
const RL: usize = 9;
const RC: usize = 10;
const CR: usize = 11;
const IR: usize = 12;
const AR: usize = 13;
/// Offset from a base metric to its modified metric (AV → MAV, …, A → MA).
const MODIFIED: usize = 14;

const _: () = {
    let names = [
        (AV, "AV"),
        (AC, "AC"),
        (PR, "PR"),
        (UI, "UI"),
        (S, "S"),
        (C, "C"),
        (I, "I"),
        (A, "A"),
        (EX, "E"),
        (RL, "RL"),
        (RC, "RC"),
        (CR, "CR"),
        (IR, "IR"),
        (AR, "AR"),
        (MODIFIED + AV, "MAV"),
        (MODIFIED + AC, "MAC"),
        (MODIFIED + PR, "MPR"),
        (MODIFIED + UI, "MUI"),
        (MODIFIED + S, "MS"),
        (MODIFIED + C, "MC"),
        (MODIFIED + I, "MI"),
        (MODIFIED + A, "MA"),
    ];
    let mut k = 0;
    while k < names.len() {
        assert!(same(METRICS[names[k].0].name, names[k].1));
        k += 1;
    }
};

// Weights, indexed like the value lists of the base metrics.
const W_AV: [f64; 4] = [0.85, 0.62, 0.55, 0.2];
const W_AC: [f64; 2] = [0.77, 0.44];
/// PrivilegesRequired N/L/H with scope unchanged.
const W_PR_U: [f64; 3] = [0.85, 0.62, 0.27];
/// PrivilegesRequired N/L/H with scope changed.
const W_PR_C: [f64; 3] = [0.85, 0.68, 0.5];
const W_UI: [f64; 2] = [0.85, 0.62];
/// Confidentiality/Integrity/Availability H/L/N.
const W_CIA: [f64; 3] = [0.56, 0.22, 0.0];
/// Security requirements X/H/M/L.
const W_REQ: [f64; 4] = [1.0, 1.5, 1.0, 0.5];
// Temporal weights ×100, indexed like the value lists (X first).
const W_E: [i64; 5] = [100, 100, 97, 94, 91];
const W_RL: [i64; 5] = [100, 100, 97, 96, 95];
const W_RC: [i64; 4] = [100, 100, 96, 92];

/// Scope index of "Changed" in the S/MS value lists (minus the `X` of MS).
const SCOPE_CHANGED: usize = 1;

/// Rounds up to one decimal and returns tenths: v3.1's `Roundup` or v3.0's ceiling.
/// `x` is an impact + exploitability sum in [0, 10] (see the module documentation).
#[inline]
fn roundup_tenths(x: f64, v31: bool) -> i64 {
    // x ≥ 0, so truncating casts are floors (and cheaper than `round`/`ceil`, which are
    // library calls on baseline x86-64).
    if v31 {
        // CVSS v3.1 Appendix A; round_to_nearest_integer as JavaScript's Math.round.
        let int_input = (x * 100_000.0 + 0.5) as i64;
        if int_input % 10_000 == 0 {
            int_input / 10_000
        } else {
            int_input / 10_000 + 1
        }
    } else {
        let t = x * 10.0;
        let floor = t as i64;
        floor + i64::from((floor as f64) < t)
    }
}

/// Rounds up `n / 10⁶` (n ≥ 0) to tenths, exactly: `n` is a score in tenths times three
/// factors in hundredths.
#[inline]
fn roundup_exact_tenths(n: i64, v31: bool) -> i64 {
    if v31 {
        // Appendix A on the exact value: Roundup(n / 10⁷) with int_input = round(n / 100).
        let int_input = (n + 50) / 100;
        if int_input % 10_000 == 0 {
            int_input / 10_000
        } else {
            int_input / 10_000 + 1
        }
    } else {
        (n + 999_999) / 1_000_000
    }
}

/// The base equations for the given (effective) metric value indices, in tenths.
#[allow(clippy::too_many_arguments)]
#[inline]
fn score_tenths(
    v31: bool,
    modified: bool,
    av: usize,
    ac: usize,
    pr: usize,
    ui: usize,
    changed: bool,
    iss: f64,
) -> i64 {
    let impact = if !changed {
        6.42 * iss
    } else if v31 && modified {
        // v3.1 changed the modified impact equation for a changed scope.
        7.52 * (iss - 0.029) - 3.25 * (iss * 0.9731 - 0.02).powi(13)
    } else {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15)
    };
    if impact <= 0.0 {
        return 0;
    }
    let pr_w = if changed { W_PR_C[pr] } else { W_PR_U[pr] };
    let exploitability = 8.22 * W_AV[av] * W_AC[ac] * pr_w * W_UI[ui];
    let sum = if changed {
        1.08 * (impact + exploitability)
    } else {
        impact + exploitability
    };
    roundup_tenths(sum.min(10.0), v31)
}

fn base_tenths(vals: &Values, v31: bool) -> i64 {
    let (c, i, a) = (W_CIA[vi(vals, C)], W_CIA[vi(vals, I)], W_CIA[vi(vals, A)]);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    score_tenths(
        v31,
        false,
        vi(vals, AV),
        vi(vals, AC),
        vi(vals, PR),
        vi(vals, UI),
        vi(vals, S) == SCOPE_CHANGED,
        iss,
    )
}

pub(super) fn base_score(vals: &Values, v31: bool) -> f64 {
    from_tenths(base_tenths(vals, v31).into())
}

/// The value index of base metric `m` after applying its modified metric.
#[inline]
fn effective(vals: &Values, m: usize) -> usize {
    match vals[MODIFIED + m] {
        0 | 1 => vi(vals, m),
        v => v as usize - 2,
    }
}

fn environmental_tenths(vals: &Values, v31: bool, temporal_factor: i64) -> i64 {
    let weighted = |m: usize, req: usize| W_CIA[effective(vals, m)] * W_REQ[vi(vals, req)];
    let miss = (1.0 - (1.0 - weighted(C, CR)) * (1.0 - weighted(I, IR)) * (1.0 - weighted(A, AR)))
        .min(0.915);
    let inner = score_tenths(
        v31,
        true,
        effective(vals, AV),
        effective(vals, AC),
        effective(vals, PR),
        effective(vals, UI),
        effective(vals, S) == SCOPE_CHANGED,
        miss,
    );
    roundup_exact_tenths(inner * temporal_factor, v31)
}

pub(super) fn scores(vals: &Values, v31: bool) -> Scores {
    let base = base_tenths(vals, v31);
    let tf = W_E[vi(vals, EX)] * W_RL[vi(vals, RL)] * W_RC[vi(vals, RC)];
    let temporal = roundup_exact_tenths(base * tf, v31);
    let environmental = environmental_tenths(vals, v31, tf);
    Scores {
        base: from_tenths(base.into()),
        temporal: Some(from_tenths(temporal.into())),
        environmental: Some(from_tenths(environmental.into())),
    }
}
