//! `metis`: the command-line front end of the Metis toolkit. Each subcommand is a thin layer
//! over a library crate; see `metis --help`.

mod commands;

use clap::{Parser, Subcommand};

// Training and inference allocate and free many tensor-sized buffers per step; glibc's
// allocator hands large ones back to the kernel each time and page-faults them in again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_t` in both mimalloc v2 and v3
/// (the bindings do not export it as a constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped: by default mimalloc hands pages back to the kernel soon after they are
/// freed, and a training step that frees and reallocates its activations every step then
/// page-faults them back in, zeroed by the kernel (a third of a step at the 135M shape; the
/// default delay is 10 ms in v2, 1 s in v3). The process's resident memory stays at its
/// high-water mark instead.
fn keep_freed_memory() {
    // SAFETY: plain calls into the allocator's option table; the option is only changed while
    // it holds a purge delay (a positive number of milliseconds, at most a minute).
    unsafe {
        if (1..=60_000).contains(&libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)) {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

#[derive(Parser)]
#[command(
    name = "metis",
    version,
    about = "Build, evaluate and serve native-reasoning cybersecurity models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score CVSS vectors (v2.0, v3.0, v3.1, v4.0) given as arguments or one per line on stdin.
    Cvss(commands::cvss::Args),
    /// Grade one model response against a gold answer.
    Score(commands::score::Args),
    /// Run the cyber benchmarks against an OpenAI-compatible endpoint, or grade given answers.
    Eval(Box<commands::eval::Args>),
    /// Tables and charts from evaluation results.
    Report(commands::report::Args),
    /// Generate a continuation with a local model.
    Generate(Box<commands::generate::GenerateArgs>),
    /// Chat interactively with a local model (streaming; reasoning shown apart).
    Chat(Box<commands::generate::ChatArgs>),
    /// Serve a local model over an OpenAI-compatible HTTP API.
    Serve(Box<commands::serve::Args>),
    /// List, filter or export the server's audit log.
    Audit(commands::audit::Args),
    /// Train: supervised fine-tuning on reasoning traces, LoRA merge.
    Train(commands::train::Args),
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Cvss(args) => commands::cvss::run(args),
        Command::Score(args) => commands::score::run(args),
        Command::Eval(args) => commands::eval::run(*args),
        Command::Report(args) => commands::report::run(args),
        Command::Generate(args) => commands::generate::run_generate(*args),
        Command::Chat(args) => commands::generate::run_chat(*args),
        Command::Serve(args) => commands::serve::run(*args),
        Command::Audit(args) => commands::audit::run(args),
        Command::Train(args) => commands::train::run(args),
    }
}
