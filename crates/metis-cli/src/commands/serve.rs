//! `metis serve`: the OpenAI-compatible server (metis-serve) over a local model.

use std::path::PathBuf;

use anyhow::Context;
use metis_serve::auth::ApiKeys;
use metis_serve::system_prompt::SystemPromptPolicy;
use metis_serve::ServeConfig;

use super::guard_args::GuardArgs;
use super::model_args::PlacementArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory (config.json, safetensors) or .gguf file (which carries
    /// its own tokenizer and chat template).
    #[arg(long)]
    model: PathBuf,
    /// Tokenizer to use instead of the model's own: a directory with tokenizer.json and the
    /// chat template, or a .gguf file.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Address to listen on. Anything but loopback requires API keys.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Model id in /v1/models and in requests (default: the model directory's name).
    #[arg(long)]
    served_model_name: Option<String>,
    #[command(flatten)]
    placement: PlacementArgs,
    /// System prompt file (default: the built-in Metis prompt).
    #[arg(long)]
    system_prompt: Option<PathBuf>,
    /// How the system prompt combines with client system messages: enforce (always ours),
    /// prepend-if-absent (ours unless the client sent one), allow-override (as
    /// prepend-if-absent, and clients may send "metis_system_prompt": false for none).
    #[arg(long, default_value = "prepend-if-absent")]
    system_prompt_policy: SystemPromptPolicy,
    /// Do not open the reasoning block (`<think>\n`) after the generation prompt.
    #[arg(long)]
    no_think: bool,
    #[command(flatten)]
    guard: GuardArgs,
    /// API key file: lines `id:key` or `id:sha256:HEX` (also read: METIS_API_KEYS).
    #[arg(long)]
    api_keys: Option<PathBuf>,
    /// Requests per minute per API key (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    /// SQLite audit log.
    #[arg(long, default_value = "metis-audit.sqlite")]
    audit_db: PathBuf,
    /// Do not keep an audit log.
    #[arg(long)]
    no_audit: bool,
    /// Requests allowed to wait for a batch slot; more get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 8192)]
    max_tokens_cap: usize,
    /// max_tokens of a request that gives none.
    #[arg(long, default_value_t = 1024)]
    default_max_tokens: usize,
    /// Most messages in one chat request.
    #[arg(long, default_value_t = 256)]
    max_messages: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ServeConfig::new(&args.model);
    config.tokenizer_dir = args.tokenizer.clone();
    (config.device, config.dtype) = args.placement.open()?;
    config.host = args.host.clone();
    config.port = args.port;
    config.served_model_name = args.served_model_name.clone();
    if let Some(p) = &args.system_prompt {
        config.system_prompt = std::fs::read_to_string(p)
            .with_context(|| format!("reading system prompt {}", p.display()))?;
    }
    config.system_prompt_policy = args.system_prompt_policy;
    config.prefill_think = !args.no_think;
    config.guard = args.guard.build(&config.device)?;
    let mut keys = ApiKeys::default();
    if let Some(p) = &args.api_keys {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading API keys {}", p.display()))?;
        keys.extend(ApiKeys::parse(&text, &p.display().to_string())?);
    }
    if let Ok(env) = std::env::var("METIS_API_KEYS") {
        keys.extend(ApiKeys::parse(&env, "METIS_API_KEYS")?);
    }
    config.api_keys = keys;
    config.rate_limit_per_min = args.rate_limit;
    config.audit_db = (!args.no_audit).then(|| args.audit_db.clone());
    config.max_queue = args.max_queue;
    config.max_batch = args.max_batch;
    config.max_tokens_cap = args.max_tokens_cap;
    config.default_max_tokens = args.default_max_tokens;
    config.max_messages = args.max_messages;
    config.max_body_bytes = args.max_body_bytes;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let server = metis_serve::start(config).await?;
        eprintln!(
            "metis serve: model '{}' on http://{}/v1 (Ctrl-C to stop)",
            server.model_name(),
            server.addr
        );
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.context("waiting for Ctrl-C")?;
                eprintln!("metis serve: shutting down");
                server.shutdown().await?;
            }
        }
        Ok(())
    })
}
