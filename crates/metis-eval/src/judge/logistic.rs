//! L1-regularised logistic regression with probability labels, without intercept: the model
//! AlpacaEval's length control fits (`metrics/glm_winrate.py: fit_LogisticRegressionCV`, with
//! scikit-learn's `liblinear` solver).
//!
//! Upstream duplicates every row, once with label 1 and weight `s·p`, once with label 0 and
//! weight `s·(1 − p)` (`p` the probability label, `s` the row's sample weight), and hands the
//! result to liblinear, which minimises `‖w‖₁ + C · Σ weight · log(1 + exp(−y·w·x))`. Summed
//! per original row that objective is
//!
//! `F(w) = ‖w‖₁ + C · Σᵢ sᵢ · [pᵢ · softplus(−zᵢ) + (1 − pᵢ) · softplus(zᵢ)]`, `zᵢ = w·xᵢ`,
//!
//! which [`fit`] minimises directly. The method is liblinear's own for this problem (newGLMNET,
//! Yuan, Ho & Lin 2012): a Newton step on the smooth part, the L1 subproblem solved by
//! coordinate descent, an Armijo line search. liblinear stops at its default tolerance
//! (`tol = 1e-4`); this solver goes to a far tighter one, so its coefficients are the optimum
//! that liblinear approaches (the difference is measured in `tools/reference/alpacaeval_lc.py`).

/// One training row: features, probability label in [0, 1], sample weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<const D: usize> {
    pub x: [f64; D],
    pub p: f64,
    pub weight: f64,
}

/// Stop when the largest violation of the optimality conditions is below this, relative to
/// `max(1, C · Σ weights)`.
const KKT_TOLERANCE: f64 = 1e-11;
const MAX_NEWTON_STEPS: usize = 500;
const MAX_SUBPROBLEM_SWEEPS: usize = 10_000;
/// liblinear's curvature floor on the Hessian diagonal.
const HESSIAN_FLOOR: f64 = 1e-12;
/// Armijo's sufficient-decrease fraction and the most step halvings.
const ARMIJO: f64 = 0.01;
const MAX_HALVINGS: usize = 60;

/// The logistic function, computed without overflow.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(z))` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn dot<const D: usize>(a: &[f64; D], b: &[f64; D]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn l1<const D: usize>(w: &[f64; D]) -> f64 {
    w.iter().map(|x| x.abs()).sum()
}

/// `F(w)` (see the module docs).
pub fn objective<const D: usize>(rows: &[Row<D>], c: f64, w: &[f64; D]) -> f64 {
    let loss: f64 = rows
        .iter()
        .map(|r| {
            let z = dot(w, &r.x);
            r.weight * (r.p * softplus(-z) + (1.0 - r.p) * softplus(z))
        })
        .sum();
    l1(w) + c * loss
}

/// Gradient and Hessian of the smooth part `C · Σ loss` at `w`.
fn derivatives<const D: usize>(rows: &[Row<D>], c: f64, w: &[f64; D]) -> ([f64; D], [[f64; D]; D]) {
    let mut g = [0.0; D];
    let mut h = [[0.0; D]; D];
    for r in rows {
        let q = sigmoid(dot(w, &r.x));
        let (dz, curvature) = (c * r.weight * (q - r.p), c * r.weight * q * (1.0 - q));
        for ((gj, hj), xj) in g.iter_mut().zip(h.iter_mut()).zip(&r.x) {
            *gj += dz * xj;
            for (hjk, xk) in hj.iter_mut().zip(&r.x) {
                *hjk += curvature * xj * xk;
            }
        }
    }
    for (j, row) in h.iter_mut().enumerate() {
        row[j] += HESSIAN_FLOOR;
    }
    (g, h)
}

/// The largest violation of `0 ∈ ∇ + ∂‖w‖₁` (zero at the optimum).
fn kkt_violation<const D: usize>(g: &[f64; D], w: &[f64; D]) -> f64 {
    w.iter()
        .zip(g)
        .map(|(&wj, &gj)| match wj {
            x if x > 0.0 => (gj + 1.0).abs(),
            x if x < 0.0 => (gj - 1.0).abs(),
            _ => (gj.abs() - 1.0).max(0.0),
        })
        .fold(0.0, f64::max)
}

/// Soft thresholding: the minimiser of `(u − v)² / (2t) + |u|`.
fn soft_threshold(v: f64, t: f64) -> f64 {
    v.signum() * (v.abs() - t).max(0.0)
}

/// The Newton direction: minimises `g·d + ½ dᵀHd + ‖w + d‖₁` by cyclic coordinate descent.
fn newton_direction<const D: usize>(g: &[f64; D], h: &[[f64; D]; D], w: &[f64; D]) -> [f64; D] {
    let mut d = [0.0; D];
    for _ in 0..MAX_SUBPROBLEM_SWEEPS {
        let mut largest_move: f64 = 0.0;
        for j in 0..D {
            let a = h[j][j];
            let b = g[j] + (0..D).map(|k| h[j][k] * d[k]).sum::<f64>() - a * d[j];
            let u = soft_threshold(w[j] - b / a, 1.0 / a);
            let next = u - w[j];
            largest_move = largest_move.max((next - d[j]).abs());
            d[j] = next;
        }
        if largest_move <= 1e-15 * (1.0 + l1(&d)) {
            break;
        }
    }
    d
}

/// Minimises `F` (see the module docs) for regularisation strength `c`, starting from 0.
pub fn fit<const D: usize>(rows: &[Row<D>], c: f64) -> [f64; D] {
    let scale = (c * rows.iter().map(|r| r.weight).sum::<f64>()).max(1.0);
    let mut w = [0.0; D];
    let mut f = objective(rows, c, &w);
    for _ in 0..MAX_NEWTON_STEPS {
        let (g, h) = derivatives(rows, c, &w);
        if kkt_violation(&g, &w) <= KKT_TOLERANCE * scale {
            break;
        }
        let d = newton_direction(&g, &h, &w);
        let step = |beta: f64| -> [f64; D] { std::array::from_fn(|j| w[j] + beta * d[j]) };
        let decrease = dot(&g, &d) + l1(&step(1.0)) - l1(&w);
        if decrease >= 0.0 {
            break; // no descent direction left: w is optimal to rounding
        }
        let mut beta = 1.0;
        let mut accepted = None;
        for _ in 0..MAX_HALVINGS {
            let candidate = step(beta);
            let fc = objective(rows, c, &candidate);
            if fc - f <= ARMIJO * beta * decrease {
                accepted = Some((candidate, fc));
                break;
            }
            beta *= 0.5;
        }
        let Some((next, fc)) = accepted else { break };
        w = next;
        f = fc;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row<2>> {
        // y ≈ sigmoid(1.5·x − 0.5) with probability labels.
        (0..40)
            .map(|i| {
                let x = f64::from(i) / 10.0 - 2.0;
                Row {
                    x: [x, 1.0],
                    p: sigmoid(1.5 * x - 0.5 + 0.3 * (f64::from(i) * 1.7).sin()),
                    weight: 1.0 + f64::from(i % 3) / 2.0,
                }
            })
            .collect()
    }

    #[test]
    fn optimum_satisfies_the_optimality_conditions() {
        let rows = rows();
        for c in [1e-4, 0.01, 0.1, 1.0, 100.0, 1e4] {
            let w = fit(&rows, c);
            let (g, _) = derivatives(&rows, c, &w);
            let scale = (c * rows.iter().map(|r| r.weight).sum::<f64>()).max(1.0);
            assert!(kkt_violation(&g, &w) <= 1e-9 * scale, "C={c}: {w:?} {g:?}");
            // No coordinate move improves the objective.
            let f = objective(&rows, c, &w);
            for j in 0..2 {
                for delta in [1e-6, -1e-6] {
                    let mut v = w;
                    v[j] += delta;
                    assert!(objective(&rows, c, &v) >= f - 1e-12, "C={c} j={j}");
                }
            }
        }
    }

    #[test]
    fn weak_regularisation_recovers_the_generating_slope_and_strong_zeroes_it() {
        let rows = rows();
        let w = fit(&rows, 1e4);
        assert!(
            (w[0] - 1.5).abs() < 0.2 && (w[1] + 0.5).abs() < 0.2,
            "{w:?}"
        );
        assert_eq!(
            fit(&rows, 1e-4),
            [0.0, 0.0],
            "|∇| ≤ 1 at 0: the L1 optimum is 0"
        );
    }

    #[test]
    fn all_zero_feature_keeps_a_zero_weight() {
        let rows: Vec<Row<3>> = rows()
            .into_iter()
            .map(|r| Row {
                x: [r.x[0], 0.0, r.x[1]],
                p: r.p,
                weight: r.weight,
            })
            .collect();
        let w = fit(&rows, 10.0);
        assert_eq!(w[1], 0.0);
        assert!(w[0] > 1.0);
    }
}
