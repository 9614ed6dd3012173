//! The engine's error type.

use std::path::PathBuf;

/// Errors from loading or running a model.
#[derive(thiserror::Error, Debug)]
pub enum EngineError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is malformed or asks for something unsupported.
    #[error("{file}: field {field}: {detail}")]
    Config {
        file: String,
        field: String,
        detail: String,
    },
    /// A weight the architecture needs is absent from the checkpoint.
    #[error("missing tensor {name} in the checkpoint")]
    MissingTensor { name: String },
    /// A tensor (weight or input) has an unexpected shape.
    #[error("{name}: expected shape {expected:?}, got {got:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// An argument is invalid (e.g. a KV cache of the wrong batch size).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A checkpoint that does not match the parameter table: the engine's own variants, so that
/// callers see the same errors whichever loader found the mismatch.
impl From<super::params::ParamError> for EngineError {
    fn from(e: super::params::ParamError) -> Self {
        use super::params::ParamError;
        match e {
            ParamError::Missing { name } => EngineError::MissingTensor { name },
            ParamError::Shape {
                name,
                expected,
                got,
            } => EngineError::Shape {
                name,
                expected,
                got,
            },
        }
    }
}
