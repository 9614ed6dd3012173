//! Judge-based benchmarks: answers no rule can grade (AlpacaEval 2's open-ended instructions)
//! are compared with a reference answer by a judge model behind any OpenAI-compatible endpoint,
//! and the judgments become win rates.
//!
//! - [`alpaca`]: AlpacaEval's judge request (upstream prompt, per-instruction output order,
//!   logprob preference);
//! - [`pyrandom`]: CPython's string-seeded `random`, which decides that order;
//! - [`logistic`] and [`winrate`]: the raw win rate and the length-controlled win rate (the L1
//!   logistic GLM of `length_controlled_v1`);
//! - [`pass`]: the judging pass over stored responses (resumable, every judgment committed as
//!   it arrives) and the summary that turns judgments into a result row.
//!
//! A judge model other than upstream's `gpt-4-1106-preview` gives numbers that are not
//! comparable with the official leaderboard; every report names the judge next to them.

pub mod alpaca;
pub mod logistic;
pub mod pass;
pub mod pyrandom;
pub mod winrate;

pub use pass::{
    grade_judged, is_judged, judge_pass, Judge, JudgeError, JudgePassStats, JudgeReport,
    TrialJudgment,
};
pub use winrate::GlmReference;
