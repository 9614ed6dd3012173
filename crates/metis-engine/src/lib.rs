//! The Metis inference engine: Llama-3.x, Qwen2 and Qwen3 on candle, CPU by default (the
//! `cuda` feature builds the same engine for NVIDIA GPUs).
//!
//! From a path on disk to generated text:
//!
//! 1. [`loader::load_model`] is the one way in: a Hugging Face directory (`config.json`,
//!    safetensors, `tokenizer.json`, chat template) or a llama.cpp GGUF file (weights,
//!    tokenizer and chat template in one file, [`gguf`]) becomes a [`loader::LoadedModel`]: the
//!    [`model::Model`] (one decoder for every [`config::Architecture`], its weights read by
//!    the parameter table [`model::params`]), its [`tokenizer::Tokenizer`], its
//!    [`chat::ChatTemplate`] and its stop ids. Every caller (generate, chat, serve, the guard,
//!    local evaluation, the trainers' base models) loads through it.
//! 2. [`chat::ChatTemplate::render`] turns [`chat::Message`]s into the prompt text (minijinja,
//!    with the template's own special tokens), and the tokenizer into ids.
//! 3. [`generate::generate`] (one sequence) and [`generate::generate_batch`] (ragged batches,
//!    `model::ragged`) run prefill and decode over a `model::cache::KvCache`, choosing each
//!    token with a [`sampling::Sampler`] ([`sampling::SamplingParams`]: temperature, top-p,
//!    top-k, seed) and stopping at a stop id or the token budget ([`generate::FinishReason`]).
//! 4. [`scheduler::Scheduler`] is continuous batching for callers with many requests at once
//!    (`metis serve`, `metis eval --local-model`): one engine thread owns the model, each
//!    [`scheduler::GenRequest`] is prefilled on its own and joins the running batch, every
//!    decode step runs all running sequences through `Model::forward_decode_ragged`, and text
//!    goes back through the request's [`scheduler::EventSink`] (no async runtime needed);
//!    [`scheduler::SchedulerStats`] counts steps, tokens and the batch sizes reached.
//!
//! [`device::ComputeDevice`] is where it runs (`cpu`, `cuda:N` with the `cuda` feature); on a
//! GPU a model computes in bf16 unless told otherwise, on the CPU in its checkpoint's dtype.
//!
//! On the CPU, weights stay where the file put them: [`quant::QMatrix`] is a view of a
//! memory-mapped GGUF (any llama.cpp type from F32 to Q2_K) or safetensors matrix, multiplied
//! by Metis's own kernels (integer dot products chosen at run time for the CPU, a persistent
//! pool for decode-sized products, dequantize + gemm for prompts).
//!

pub mod chat;
pub mod config;
pub mod device;
pub mod generate;
pub mod gguf;
pub mod loader;
pub mod model;
pub mod quant;
pub mod sampling;
pub mod scheduler;
pub mod tokenizer;
