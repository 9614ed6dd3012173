//! The Metis server: an OpenAI-compatible HTTP API over `metis-engine` for reasoning models,
//! with reasoning returned apart from the answer, a batching scheduler, a default system
//! prompt policy, a Llama Guard 3 guardrail, API keys and an SQLite audit log.
//!
//! [`start`] loads the model, starts the engine thread and serves until
//! [`RunningServer::shutdown`]; `metis serve` is a thin CLI over it.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod routes;
pub mod scheduler;
mod server;
pub mod system_prompt;

pub use config::ServeConfig;
pub use error::{ApiError, ServeError};
pub use server::{start, RunningServer};
