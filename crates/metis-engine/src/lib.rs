//! The Metis inference engine: Llama-3.x, Qwen2 and Qwen3 on candle, loaded from Hugging Face
//! model directories (config.json, safetensors, tokenizer.json, chat template) or from
//! llama.cpp GGUF files (weights, tokenizer and chat template in one file) by one
//! [`loader`], with a KV cache and sampling. CPU by default; the `cuda` feature builds the
//! same engine for NVIDIA GPUs.

pub mod chat;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod loader;
pub mod model;
pub mod sampling;
pub mod tokenizer;
