//! `metis safety`: HarmBench's direct-request protocol run against a deployment, the way the
//! Foundation-Sec-8B-Reasoning report measured bare → system prompt → guardrail, for any model
//! and any deployment, re-runnable after every change of model, prompt or guard.
//!
//! Data flows in four steps:
//!
//! 1. [`behaviors`] reads HarmBench's text behaviours ([`behaviors::Behavior`]: standard,
//!    contextual with its context, copyright) and builds each test case.
//! 2. [`run::SafetyRun::query`] asks every [`deployment::Configuration`] — a model endpoint or
//!    the local engine, bare, with a system prompt, behind a Llama Guard 3 guardrail that Metis
//!    applies ([`deployment::GuardedBackend`], the same moderation `metis serve` runs), or an
//!    endpoint that is itself a deployment — through `metis-eval`'s job runner and store, so
//!    retries, failure accounting and resumption after a kill are `metis eval`'s.
//! 3. [`run::SafetyRun::judge`] has a [`judge::ClassifierJudge`] label the answers (HarmBench's
//!    classifier prompts from [`classifier`], or Llama Guard 3), stored per response with the
//!    judge's identity and raw output; copyright behaviours go to [`judge::CopyrightJudge`]
//!    (HarmBench's MinHash rule, `metis_verify::copyright`). [`run::SafetyRun::outcomes`]
//!    gives one [`run::Outcome`] per configuration × behaviour × trial.
//! 4. [`results::summarise`] turns outcomes into pass rates (overall, per functional and
//!    semantic category, mean ± std over trials, bootstrap CIs, paired differences), and
//!    [`report`] writes them in the layout of the paper's Figure 5.

pub mod behaviors;
pub mod classifier;
pub mod deployment;
pub mod judge;
pub mod report;
pub mod results;
pub mod run;
