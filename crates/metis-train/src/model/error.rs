//! The training crate's error type.

use std::path::PathBuf;

use metis_engine::model::params::ParamError;

/// Errors from loading, running, training or saving a model.
#[derive(thiserror::Error, Debug)]
pub enum TrainError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A file has the wrong content (missing field, unsupported value, bad safetensors, ...).
    #[error("{}: {detail}", path.display())]
    Format { path: PathBuf, detail: String },
    /// A tensor the model needs is absent from a checkpoint.
    #[error("{}: missing tensor {name}", path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has an unexpected shape.
    #[error("{name}: expected shape {expected:?}, got {got:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// An argument is invalid (wrong batch layout, token id out of range, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An error from the inference engine (config parsing).
    #[error(transparent)]
    Engine(#[from] metis_engine::model::EngineError),
    /// A rollout server failed or answered something unusable (the message names the URL).
    #[error("remote rollouts: {0}")]
    RemoteRollout(metis_openai::ClientError),
    /// `metrics.jsonl` could not be read back or written.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint in `path` that does not match the parameter table.
    pub(crate) fn table_mismatch(e: ParamError, path: impl Into<PathBuf>) -> Self {
        match e {
            ParamError::Missing { name } => Self::MissingTensor {
                path: path.into(),
                name,
            },
            ParamError::Shape {
                name,
                expected,
                got,
            } => Self::Shape {
                name,
                expected,
                got,
            },
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
