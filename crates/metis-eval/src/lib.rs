//! The Metis benchmark harness: 25 benchmarks (cyber: CTIBench, CyberMetric, SecBench,
//! SecEval, MMLU computer security; general: IFEval, GSM8K, MATH-500, BBH, MMLU, GPQA,
//! HumanEval, multi-hop QA, AlpacaEval 2), each declared once as data + prompt + verifier +
//! metrics.
//!
//! An evaluation flows through these pieces:
//!
//! 1. [`benchmarks`]: the table of [`benchmarks::BenchmarkSpec`]s (`SPECS`, sources pinned by
//!    revision and SHA-256) and [`benchmarks::load`], which reads a benchmark from the data
//!    directory or downloads it into the cache, parses it (errors name file, line and field)
//!    and builds each item's verifier from `metis-verify`'s one verifier spec: a
//!    [`benchmarks::Benchmark`].
//! 2. [`run::query`] turns items into requests and hands them to [`run::run_jobs`], which asks
//!    a [`run::ChatBackend`] (an OpenAI-compatible endpoint through `metis_openai::Client`, or
//!    the local engine, [`local::LocalModel`], whose continuous-batching scheduler decodes the
//!    requests in flight as one batch) with bounded concurrency and commits every response as
//!    it arrives to the SQLite [`store::Store`], keyed so that a re-run asks only what is
//!    missing.
//! 3. [`run::grade`] grades stored responses with the items' verifiers (or, for AlpacaEval 2,
//!    with a judge model, [`judge`]); [`run::summarize`] turns grades into a
//!    [`report::ResultRow`] per benchmark with mean ± std over trials, standard error and
//!    bootstrap intervals ([`stats`]).
//!    [`results`] holds what ties stored responses to a run: the resume key
//!    ([`results::RunKey`]), the run's saved description and paired comparisons of models.
//! 4. [`report`] writes tables (Markdown, CSV, JSON) and charts; [`samples`] exports every
//!    graded response.

pub mod benchmarks;
pub mod judge;
pub mod local;
pub mod report;
pub mod results;
pub mod run;
pub mod samples;
pub mod stats;
pub mod store;
