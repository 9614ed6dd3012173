//! Model architectures.
