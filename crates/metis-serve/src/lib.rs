//! The Metis server: an OpenAI-compatible HTTP API over `metis-engine` for reasoning models,
//! with reasoning returned apart from the answer, a batching scheduler, a default system
//! prompt policy, a Llama Guard 3 guardrail, API keys and an SQLite audit log.
