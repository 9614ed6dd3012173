//! Metis training on candle autograd: supervised fine-tuning on `<think>` reasoning traces
//! (Stage 1) and GRPO with verifiable rewards from `metis-verify` (Stage 2), full or LoRA,
//! with checkpoints that Hugging Face transformers, PEFT and `metis-engine` load, and exact
//! resume. GRPO rollouts come from the local engine or from an OpenAI-compatible server
//! fleet (vLLM) with the current LoRA adapter hot-loaded there ([`grpo::remote`]).
//!
//! The training forward pass uses only ops with a backward: candle's fused `softmax_last_dim`,
//! `rms_norm`, `rope` and sdpa kernels silently drop gradients, so [`model`] has its own fused
//! CPU kernels with hand-written backward passes, and spells the ops out elsewhere.
//!
//! The two stages share their skeleton:
//!
//! - [`sft::run_sft`] ([`sft::SftConfig`]) and [`grpo::run_grpo`] ([`grpo::GrpoConfig`]) each
//!   read as a short sequence of steps over the same parts: the differentiable
//!   [`model::TrainModel`] (full or [`lora`]), [`optim::AdamW`] with a [`schedule`], a
//!   [`run_dir::RunDir`] that publishes checkpoints atomically, prunes them and finds the
//!   resume point ([`checkpoint`]), the [`device`] and dtype, and one step loop.
//! - SFT batches chat data ([`data`]); GRPO samples prompts, gets rollouts from a
//!   `RolloutSource` (the local engine, or a vLLM fleet through `metis_openai`), rewards them
//!   with the verifiers ([`grpo::reward`]), and takes TRL's loss ([`grpo::loss`]).
//! - [`metrics`] writes one JSON line per step and the curves (`metis-plot`); [`demo`] builds
//!   the built-in CVSS-severity task.

pub mod allocator;
pub mod checkpoint;
pub mod data;
pub mod demo;
pub mod device;
pub mod grpo;
pub mod lora;
pub mod metrics;
pub mod model;
pub mod optim;
mod rng;
pub mod run_dir;
pub mod schedule;
pub mod sft;
mod train_loop;
