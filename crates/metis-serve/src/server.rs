//! Starting and stopping a server: load the model and tokenizer, start the engine thread and
//! the audit writer, bind, and serve the routes until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use metis_engine::loader::load_model;
use metis_engine::scheduler::{Scheduler, SchedulerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::Limits;
use crate::audit::{now_ms, AuditLog};
use crate::auth::{is_loopback, RateLimiter};
use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::routes::{router, AppState};

/// A server listening in this process.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The server's metrics (for tests and embedding).
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Waits until everything audited so far is on disk.
    pub fn flush_audit(&self) {
        if let Some(a) = &self.state.audit {
            a.flush();
        }
    }

    /// The model id clients must send.
    pub fn model_name(&self) -> &str {
        &self.state.model_name
    }

    /// Stops accepting connections, lets open ones finish and returns.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    /// Serves until the server stops (Ctrl-C handling is the caller's).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => r.map_err(ServeError::Server),
            Err(e) => Err(ServeError::Server(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Loads everything and starts serving on `config.host:config.port`.
///
/// Refuses ([`ServeError::InsecureBind`]) to listen beyond loopback without API keys.
pub async fn start(config: ServeConfig) -> Result<RunningServer, ServeError> {
    if !is_loopback(&config.host) && config.api_keys.is_empty() {
        return Err(ServeError::InsecureBind(config.host.clone()));
    }
    if config.max_batch == 0 {
        return Err(ServeError::Config("max_batch must be at least 1".into()));
    }
    let model_name = config.model_name();
    let loaded = load_model(
        &config.model_dir,
        config.tokenizer_dir.as_deref(),
        &config.device,
        config.dtype,
    )?;
    let Some(tokenizer) = loaded.tokenizer else {
        return Err(ServeError::Config(format!(
            "{} has no tokenizer: give one with --tokenizer",
            config.model_dir.display()
        )));
    };
    tracing::info!("loaded {}", loaded.source);
    let (model, template, stop_ids) = (loaded.model, loaded.template, loaded.stop_ids);
    let tokenizer = Arc::new(tokenizer);
    let max_model_len = model.config().max_position_embeddings;
    let mut reserved_tokens: Vec<String> = tokenizer
        .inner()
        .get_added_tokens_decoder()
        .into_values()
        // Reasoning delimiters may legitimately appear in assistant history.
        .filter(|t| t.special && !t.content.is_empty())
        .filter(|t| t.content != "<think>" && t.content != "</think>")
        .map(|t| t.content)
        .collect();
    reserved_tokens.sort();
    let metrics = Arc::new(Metrics::default());
    let scheduler = Scheduler::start(
        model,
        Arc::clone(&tokenizer),
        stop_ids,
        SchedulerConfig {
            max_batch: config.max_batch,
            max_queue: config.max_queue,
        },
        Arc::clone(&metrics.engine),
    )
    .map_err(ServeError::Server)?;
    let audit = match &config.audit_db {
        Some(p) => Some(AuditLog::open(p)?),
        None => None,
    };
    let state = Arc::new(AppState {
        model_name,
        max_model_len,
        created: (now_ms() / 1000) as u64,
        tokenizer,
        template,
        scheduler,
        metrics,
        guard: config.guard.clone(),
        audit,
        keys: config.api_keys.clone(),
        limiter: RateLimiter::new(config.rate_limit_per_min),
        system_prompt: config.system_prompt.clone(),
        policy: config.system_prompt_policy,
        prefill_think: config.prefill_think,
        limits: Limits {
            max_tokens_cap: config.max_tokens_cap,
            default_max_tokens: config.default_max_tokens,
        },
        max_messages: config.max_messages,
        reserved_tokens,
    });
    let app = router(Arc::clone(&state), config.max_body_bytes);
    let bind = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|source| ServeError::Io { path: bind, source })?;
    let addr = listener.local_addr().map_err(ServeError::Server)?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!("serving {} on http://{addr}", state.model_name);
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}
