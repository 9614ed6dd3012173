//! Answer extraction and verifiers for Metis.
//!
//! One library grades model answers for both callers: the benchmark harness (`metis eval`)
//! scores responses with it and the GRPO trainer turns the same verdicts into rewards, so a
//! benchmark score and an RL reward can never disagree about what a correct answer is.
//!
//! The pieces, from raw text to a score:
//! - [`reasoning`] separates `<think>…</think>` reasoning from the final answer;
//! - [`extract`] finds the answer in the answer part (last-line or FAITH-compatible protocol);
//! - [`mcq`], [`cwe`], [`cvss`], [`attack`] parse, validate and compare task-specific answers;
//!   [`taa`] judges threat actor attributions; [`qa`] scores short answers (EM, token F1); [`ifeval`] checks IFEval's verifiable instructions, [`math`] extracts final answers and
//!   decides mathematical equivalence; [`bbh`] reads BIG-Bench Hard answers by type;
//!   [`code`] runs generated Python against a problem's tests
//!   in a sandbox (HumanEval) and estimates pass@k; [`copyright`] is HarmBench's MinHash
//!   copyright judge (spaCy-compatible tokenizer, datasketch-equal signatures);
//! - [`format`] scores the shape of a response (the guard against reward hacking);
//! - [`verifier`] ties them together behind one [`Verifier`] interface and aggregates
//!   item verdicts into benchmark metrics;
//! - [`spec`] describes how an item is graded ([`VerifierSpec`], serialisable, the one home of
//!   the defaults) and builds its verifier ([`VerifierFactory`], the only constructor callers
//!   use), so a benchmark, a GRPO prompt file and `metis score` grade alike.

pub mod attack;
pub mod bbh;
pub mod code;
pub mod copyright;
pub mod cvss;
pub mod cwe;
pub mod extract;
pub mod format;
pub mod ifeval;
pub mod math;
pub mod mcq;
pub mod qa;
pub mod reasoning;
pub mod record;
pub mod spec;
pub mod taa;
pub mod verifier;

pub use extract::{AnswerFormat, Extraction, InvalidReason, Protocol};
pub use reasoning::{Delimiters, ThinkStatus};
pub use spec::{RewardShape, SpecError, VerifierFactory, VerifierSpec};
pub use verifier::{Gold, GoldError, Task, Verdict, Verifier, VerifyOptions};
