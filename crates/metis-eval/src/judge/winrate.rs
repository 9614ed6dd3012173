//! AlpacaEval's win rates from judge preferences (1 = the reference wins, 2 = the judged model
//! wins; NaN for a judgment that gave none), as `tatsu-lab/alpaca_eval@cd543a14` computes them:
//!
//! - [`win_rate`]: `metrics/winrate.py: get_winrate`, i.e. `metrics/helpers.py:
//!   AbsoluteScoringRule.describe_head2head` (a draw `0` becomes 1.5; invalid preferences are
//!   dropped; win rate = 100 × mean(p − 1), standard error = 100 × sem) plus the discrete win
//!   rate of `ZeroOneScoringRule`.
//! - [`length_controlled`]: `metrics/glm_winrate.py: get_length_controlled_winrate` with
//!   `length_controlled_v1`: the GLM
//!   `np.tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline.astype(float) − 1`
//!   (no intercept), fitted by L1 logistic regression on probability labels with
//!   `LogisticRegressionCV` (10 strengths `logspace(−4, 4)`, 5-fold `GroupKFold`, continuous
//!   log-loss scorer), regularised towards the baseline by the rows of two "gamed" models
//!   (weight λ/2, λ = 0.2); LC = 100 × the mean prediction with `std_delta_len = 0`.
//!
//! Differences from upstream, all measured by `tools/reference/alpacaeval_lc.py`:
//! - the fit at a given strength is solved to a far tighter tolerance than liblinear's default
//!   (see [`super::logistic`]);
//! - folds are GroupKFold's as scikit-learn ≥ 1.6 makes them (a stable sort of equal group
//!   sizes, so the last row goes to fold 0, the one before to fold 1, …); older releases sorted
//!   unstably and may fold rows differently;
//! - upstream reads `instruction_difficulty` and the gamed rows from `df_gamed.csv` on the
//!   Hugging Face hub. Metis uses that file when the data directory has it
//!   ([`GlmReference::load`]); without it ([`GlmReference::Approximation`]) every instruction's
//!   difficulty is 0 and there are no gamed rows (no regularisation towards the baseline), so
//!   LC is the logistic of the fitted `not_gamed_baseline` weight: the length-adjusted win
//!   probability of an instruction of average difficulty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::logistic::{self, sigmoid, Row};

/// `length_controlled_v1`'s `regularize_to_baseline_lambda`.
pub const REGULARIZE_TO_BASELINE_LAMBDA: f64 = 0.2;
/// `length_controlled_v1`'s `n_splits`.
pub const N_SPLITS: usize = 5;
/// `LogisticRegressionCV`'s default `Cs = 10`: `np.logspace(-4, 4, 10)`.
pub const N_CS: usize = 10;
/// The clipping of `glm_winrate.logloss`.
const LOGLOSS_EPSILON: f64 = 1e-15;

/// The regularisation strengths `LogisticRegressionCV` tries.
pub fn cs() -> [f64; N_CS] {
    std::array::from_fn(|k| 10f64.powf(-4.0 + 8.0 * k as f64 / (N_CS - 1) as f64))
}

/// Raw head-to-head numbers (`describe_head2head`), in percent where upstream gives percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WinRate {
    pub win_rate: f64,
    pub standard_error: f64,
    pub n_wins: usize,
    pub n_wins_base: usize,
    pub n_draws: usize,
    pub n_total: usize,
    pub discrete_win_rate: f64,
}

/// Upstream's preprocessing: a `0` (an old-style draw) is 1.5.
fn draw_as_half(p: f64) -> f64 {
    if p == 0.0 {
        1.5
    } else {
        p
    }
}

fn is_preference(p: f64) -> bool {
    (1.0..=2.0).contains(&p)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// pandas' `std` (ddof 1); NaN under two values.
fn sample_std(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// pandas' `sem` (ddof 1); NaN under two values.
fn sem(xs: &[f64]) -> f64 {
    sample_std(xs) / (xs.len() as f64).sqrt()
}

/// `ZeroOneScoringRule`'s view of a win probability `p − 1`: a preference of exactly 1.5 is a
/// draw (½), any other is rounded to a win (1) or a loss (0).
pub fn discrete_win(win: f64) -> f64 {
    if win == 0.5 {
        0.5
    } else if win > 0.5 {
        1.0
    } else {
        0.0
    }
}

/// `get_winrate` on a list of preferences (NaN = no preference).
pub fn win_rate(preferences: &[f64]) -> WinRate {
    let prefs: Vec<f64> = preferences.iter().map(|&p| draw_as_half(p)).collect();
    let n_draws = prefs.iter().filter(|&&p| p == 1.5).count();
    let wins: Vec<f64> = prefs
        .iter()
        .filter(|&&p| is_preference(p))
        .map(|p| p - 1.0)
        .collect();
    let discrete: Vec<f64> = wins.iter().map(|&w| discrete_win(w)).collect();
    WinRate {
        win_rate: mean(&wins) * 100.0,
        standard_error: sem(&wins) * 100.0,
        n_wins: wins.iter().filter(|&&w| w > 0.5).count(),
        n_wins_base: wins.iter().filter(|&&w| w < 0.5).count(),
        n_draws,
        n_total: wins.len(),
        discrete_win_rate: mean(&discrete) * 100.0,
    }
}

/// One judged instruction for the GLM.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The instruction's position in the benchmark (the key of its difficulty).
    pub index: usize,
    /// Lengths in characters of the reference (output 1) and the judged answer (output 2).
    pub reference_chars: usize,
    pub answer_chars: usize,
    /// The judge's preference, NaN when it gave none (kept for the prediction, not the fit).
    pub preference: f64,
}

/// A row of a "gamed" baseline from `df_gamed.csv`, already featurised upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct GamedRow {
    /// Preference − 1, in [0, 1] (NaN rows are dropped, as upstream drops them).
    pub label: f64,
    pub std_delta_len: f64,
    pub instruction_difficulty: f64,
}

/// What the GLM knows beyond the judgments: upstream's `df_gamed.csv`, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum GlmReference {
    /// Upstream's inputs: each instruction's difficulty and the gamed baselines' rows.
    Upstream {
        path: PathBuf,
        difficulty: HashMap<usize, f64>,
        gamed: Vec<GamedRow>,
    },
    /// No `df_gamed.csv`: difficulty 0 everywhere, no gamed rows (see the module docs).
    Approximation,
}

/// Errors of the GLM and of reading its reference file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GlmError {
    #[error("{path} line {line}{}: {detail}", field.as_ref().map_or_else(String::new, |f| format!(", field {f:?}")))]
    Reference {
        path: String,
        line: usize,
        field: Option<String>,
        detail: String,
    },
    #[error("{n} judged row(s): the {N_SPLITS}-fold cross-validation needs at least {N_SPLITS}")]
    TooFewRows { n: usize },
    #[error(
        "every answer differs from its reference by the same length: std_delta_len is undefined"
    )]
    NoLengthSpread,
    #[error("instruction {index} has no difficulty in {path}")]
    NoDifficulty { index: usize, path: String },
}

/// Where the data directory keeps upstream's `df_gamed.csv` (Hugging Face
/// `tatsu-lab/alpaca_eval`, not vendored: CC BY-NC 4.0).
pub const DF_GAMED_FILE: &str = "alpacaeval/df_gamed.csv";

impl GlmReference {
    /// `df_gamed.csv` under `data_dir` when it is there, else the approximation.
    pub fn from_data_dir(data_dir: &Path) -> Result<Self, GlmError> {
        let path = data_dir.join(DF_GAMED_FILE);
        if path.exists() {
            Self::load(&path)
        } else {
            Ok(Self::Approximation)
        }
    }

    /// Reads `df_gamed.csv`: the columns upstream's code uses (`index`, `preference` in [0, 1]
    /// or empty, `std_delta_len`, `instruction_difficulty`); every row is a gamed row, and each
    /// instruction's difficulty is that of its first row (`drop_duplicates("index")`).
    pub fn load(path: &Path) -> Result<Self, GlmError> {
        let shown = path.display().to_string();
        let err = |line: usize, field: Option<&str>, detail: String| GlmError::Reference {
            path: shown.clone(),
            line,
            field: field.map(str::to_owned),
            detail,
        };
        let mut reader = csv::Reader::from_path(path).map_err(|e| err(0, None, e.to_string()))?;
        let headers = reader
            .headers()
            .map_err(|e| err(1, None, e.to_string()))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| err(1, Some(name), "missing column".to_owned()))
        };
        let (index_col, pref_col, sdl_col, diff_col) = (
            column("index")?,
            column("preference")?,
            column("std_delta_len")?,
            column("instruction_difficulty")?,
        );
        let mut difficulty = HashMap::new();
        let mut gamed = Vec::new();
        for (n, record) in reader.records().enumerate() {
            let line = n + 2;
            let record = record.map_err(|e| err(line, None, e.to_string()))?;
            let number = |col: usize, name: &str| -> Result<Option<f64>, GlmError> {
                let text = record.get(col).unwrap_or("").trim();
                if text.is_empty() {
                    return Ok(None);
                }
                text.parse::<f64>()
                    .map(Some)
                    .map_err(|e| err(line, Some(name), format!("{text:?}: {e}")))
            };
            let required = |col: usize, name: &str| -> Result<f64, GlmError> {
                number(col, name)?.ok_or_else(|| err(line, Some(name), "empty value".to_owned()))
            };
            let index = required(index_col, "index")?;
            if index < 0.0 || index.fract() != 0.0 {
                return Err(err(line, Some("index"), format!("{index} is not an index")));
            }
            let d = required(diff_col, "instruction_difficulty")?;
            difficulty.entry(index as usize).or_insert(d);
            let Some(label) = number(pref_col, "preference")? else {
                continue; // upstream drops NaN preferences before fitting
            };
            if !(0.0..=1.0).contains(&label) {
                return Err(err(
                    line,
                    Some("preference"),
                    format!("{label} is not in [0, 1] (upstream stores preference − 1)"),
                ));
            }
            gamed.push(GamedRow {
                label,
                std_delta_len: required(sdl_col, "std_delta_len")?,
                instruction_difficulty: d,
            });
        }
        Ok(Self::Upstream {
            path: path.to_owned(),
            difficulty,
            gamed,
        })
    }

    /// How the LC number was made, for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Upstream { path, .. } => format!(
                "upstream GLM inputs (instruction difficulty and gamed-baseline rows from {})",
                path.display()
            ),
            Self::Approximation => format!(
                "approximation: no {DF_GAMED_FILE} (Hugging Face tatsu-lab/alpaca_eval), so every \
                 instruction_difficulty is 0 and there is no regularisation towards the baseline"
            ),
        }
    }

    fn difficulty(&self, index: usize) -> Result<f64, GlmError> {
        match self {
            Self::Upstream {
                difficulty, path, ..
            } => difficulty
                .get(&index)
                .copied()
                .ok_or_else(|| GlmError::NoDifficulty {
                    index,
                    path: path.display().to_string(),
                }),
            Self::Approximation => Ok(0.0),
        }
    }
}

/// The fitted length-controlled model and its numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthControlled {
    /// 100 × mean prediction at `std_delta_len = 0`.
    pub lc_win_rate: f64,
    /// 100 × sem of those predictions.
    pub lc_standard_error: f64,
    /// Weights of `tanh(std_delta_len)`, `instruction_difficulty`, `not_gamed_baseline`.
    pub weights: [f64; 3],
    /// The strength chosen by cross-validation.
    pub c: f64,
    /// Summed cross-validation score of each strength in [`cs`].
    pub cv_scores: [f64; N_CS],
    /// The per-instruction predictions, in the order of the comparisons.
    pub predictions: Vec<f64>,
}

/// Features `[tanh(std_delta_len), instruction_difficulty, not_gamed_baseline]`.
type Features = [f64; 3];

/// `get_length_controlled_winrate` on the comparisons of one model (see the module docs).
pub fn length_controlled(
    comparisons: &[Comparison],
    reference: &GlmReference,
) -> Result<LengthControlled, GlmError> {
    let std_delta_len = standardised_length_deltas(comparisons)?;
    let difficulty: Vec<f64> = comparisons
        .iter()
        .map(|c| reference.difficulty(c.index))
        .collect::<Result<_, _>>()?;
    let rows = training_rows(comparisons, &std_delta_len, &difficulty, reference);
    if rows.len() < N_SPLITS {
        return Err(GlmError::TooFewRows { n: rows.len() });
    }
    let cv_scores = cross_validate(&rows);
    let best = first_argmax(&cv_scores);
    let c = cs()[best];
    let weights = logistic::fit(&rows, c);
    let predictions: Vec<f64> = difficulty
        .iter()
        .map(|&d| sigmoid(weights[1] * d + weights[2]))
        .collect();
    Ok(LengthControlled {
        lc_win_rate: mean(&predictions) * 100.0,
        lc_standard_error: sem(&predictions) * 100.0,
        weights,
        c,
        cv_scores,
        predictions,
    })
}

/// `(len(output_1) − len(output_2)) / std` over every comparison (pandas `std`, ddof 1).
fn standardised_length_deltas(comparisons: &[Comparison]) -> Result<Vec<f64>, GlmError> {
    let deltas: Vec<f64> = comparisons
        .iter()
        .map(|c| c.reference_chars as f64 - c.answer_chars as f64)
        .collect();
    let spread = sample_std(&deltas);
    if !(spread.is_finite() && spread > 0.0) {
        return Err(GlmError::NoLengthSpread);
    }
    Ok(deltas.iter().map(|d| d / spread).collect())
}

/// The training frame in upstream's order: the gamed rows (`not_gamed_baseline` 0, weight λ/2),
/// then the model's rows with a preference (weight 1), labels `preference − 1` with a draw `0`
/// read as 1.5. Without gamed rows every weight is 1 (upstream passes no sample weight).
fn training_rows(
    comparisons: &[Comparison],
    std_delta_len: &[f64],
    difficulty: &[f64],
    reference: &GlmReference,
) -> Vec<Row<3>> {
    let gamed = match reference {
        GlmReference::Upstream { gamed, .. } => gamed.as_slice(),
        GlmReference::Approximation => &[],
    };
    let gamed_rows = gamed.iter().map(|g| Row {
        x: [g.std_delta_len.tanh(), g.instruction_difficulty, 0.0],
        p: g.label,
        weight: REGULARIZE_TO_BASELINE_LAMBDA / 2.0,
    });
    let model_rows = comparisons
        .iter()
        .zip(std_delta_len.iter().zip(difficulty))
        .filter(|(c, _)| !c.preference.is_nan())
        .map(|(c, (&sdl, &d))| Row {
            x: [sdl.tanh(), d, 1.0],
            p: draw_as_half(c.preference) - 1.0,
            weight: 1.0,
        });
    gamed_rows.chain(model_rows).collect()
}

/// `GroupKFold(5)` with one group per row (upstream groups a row's two duplicates), as
/// scikit-learn ≥ 1.6 assigns equal-sized groups: the last row to fold 0, the one before it to
/// fold 1, and so on round the folds.
fn fold_of(row: usize, n_rows: usize) -> usize {
    (n_rows - 1 - row) % N_SPLITS
}

/// The summed validation score (negative weighted log-loss, as upstream's scorer computes it)
/// of each strength over the folds.
fn cross_validate(rows: &[Row<3>]) -> [f64; N_CS] {
    let n = rows.len();
    let mut totals = [0.0; N_CS];
    for fold in 0..N_SPLITS {
        let (test, train): (Vec<_>, Vec<_>) = rows
            .iter()
            .enumerate()
            .partition(|(i, _)| fold_of(*i, n) == fold);
        let train: Vec<Row<3>> = train.into_iter().map(|(_, r)| r.clone()).collect();
        let test: Vec<&Row<3>> = test.into_iter().map(|(_, r)| r).collect();
        for (total, c) in totals.iter_mut().zip(cs()) {
            let w = logistic::fit(&train, c);
            *total -= weighted_log_loss(&test, &w);
        }
    }
    totals
}

/// `glm_winrate.logloss_continuous` on a fold: the mean over its rows (each duplicate pair
/// contributes the same term twice, so the mean over pairs equals the mean over duplicates) of
/// `−weight · [p·log q + (1 − p)·log(1 − q)]`, `q` clipped to `[1e−15, 1 − 1e−15]`.
fn weighted_log_loss(test: &[&Row<3>], w: &Features) -> f64 {
    let losses: Vec<f64> = test
        .iter()
        .map(|r| {
            let q = sigmoid(r.x.iter().zip(w).map(|(x, w)| x * w).sum::<f64>())
                .clamp(LOGLOSS_EPSILON, 1.0 - LOGLOSS_EPSILON);
            -r.weight * (r.p * q.ln() + (1.0 - r.p) * (1.0 - q).ln())
        })
        .collect();
    mean(&losses)
}

/// numpy's `argmax`: the first index of the largest value.
fn first_argmax(xs: &[f64]) -> usize {
    xs.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bx), (i, &x)| {
            if x > bx {
                (i, x)
            } else {
                (bi, bx)
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_win_rate_follows_describe_head2head() {
        // Hand computation: valid p − 1 = [1, 0, 0.5, 0.8, 0.5 (the 0 draw)] → mean 0.56;
        // NaN and 2.5 dropped; wins > 0.5: 2, base wins < 0.5: 1, draws (1.5 or 0): 2.
        let w = win_rate(&[2.0, 1.0, 1.5, 1.8, 0.0, f64::NAN, 2.5]);
        assert!((w.win_rate - 56.0).abs() < 1e-12, "{w:?}");
        assert_eq!(
            (w.n_wins, w.n_wins_base, w.n_draws, w.n_total),
            (2, 1, 2, 5)
        );
        // Discrete: [1, 0, ½, 1, ½] → 60 %.
        assert!((w.discrete_win_rate - 60.0).abs() < 1e-12);
        // sem of [1, 0, .5, .8, .5]: sd = sqrt(0.563/4·…) computed independently below.
        let xs = [1.0, 0.0, 0.5, 0.8, 0.5];
        let m = 0.56;
        let var: f64 = xs.iter().map(|x: &f64| (x - m).powi(2)).sum::<f64>() / 4.0;
        assert!((w.standard_error - 100.0 * (var / 5.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn strengths_are_logspace() {
        let c = cs();
        assert_eq!(c[0], 1e-4);
        assert!((c[9] - 1e4).abs() < 1e-9);
        assert!((c[1] - 10f64.powf(-4.0 + 8.0 / 9.0)).abs() < 1e-18);
    }

    #[test]
    fn folds_are_round_robin_from_the_last_row() {
        let folds: Vec<usize> = (0..7).map(|r| fold_of(r, 7)).collect();
        assert_eq!(folds, [1, 0, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn df_gamed_gives_difficulty_and_gamed_rows_and_names_bad_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("df_gamed.csv");
        let header =
            "model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline";
        std::fs::write(
            &path,
            format!(
                "{header}\na,0,0.25,-1.5,0.7,False\na,1,,0.2,-0.3,False\nb,0,0.5,0.1,9.9,False\n"
            ),
        )
        .unwrap();
        let GlmReference::Upstream {
            difficulty, gamed, ..
        } = GlmReference::load(&path).unwrap()
        else {
            panic!("df_gamed.csv read as the approximation");
        };
        assert_eq!(
            difficulty[&0], 0.7,
            "the first row of an index gives its difficulty"
        );
        assert_eq!(difficulty[&1], -0.3);
        assert_eq!(gamed.len(), 2, "the empty (NaN) preference is dropped");
        assert_eq!(gamed[1].instruction_difficulty, 9.9);

        std::fs::write(&path, format!("{header}\na,0,1.5,0.1,0.2,False\n")).unwrap();
        let err = GlmReference::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("\"preference\""),
            "{err}"
        );
        std::fs::write(&path, "model,index\na,0\n").unwrap();
        let err = GlmReference::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("missing column"),
            "{err}"
        );
        assert_eq!(
            GlmReference::from_data_dir(dir.path()).unwrap(),
            GlmReference::Approximation,
            "no alpacaeval/df_gamed.csv under the data directory"
        );
    }

    #[test]
    fn equal_length_gaps_are_refused() {
        let same = |i| Comparison {
            index: i,
            reference_chars: 10,
            answer_chars: 4,
            preference: 1.5,
        };
        let rows: Vec<_> = (0..6).map(same).collect();
        assert_eq!(
            length_controlled(&rows, &GlmReference::Approximation),
            Err(GlmError::NoLengthSpread)
        );
    }
}
