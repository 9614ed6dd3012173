//! The Metis benchmark harness: the cyber benchmarks (CTIBench, CyberMetric, MMLU computer
//! security, SecBench, SecEval) and the general ones (IFEval, GSM8K, MATH-500) each declared once as data + prompt + verifier + metrics,
//! queried through any OpenAI-compatible endpoint (`metis_openai::Client`) or a model loaded
//! in-process ([`local`]), every response committed to a SQLite store
//! as it arrives (so runs resume), graded with `metis-verify` (or, for AlpacaEval 2, by a judge
//! model: [`judge`]), and summarised across trials with mean ± std, standard error and
//! bootstrap confidence intervals.

pub mod benchmarks;
pub mod judge;
pub mod local;
pub mod report;
pub mod run;
pub mod samples;
pub mod stats;
pub mod store;
