//! `metis`: the command-line front end of the Metis toolkit. Each subcommand is a thin layer
//! over a library crate; see `metis --help`.

mod commands;

use clap::{Parser, Subcommand};

// Training and inference allocate and free many tensor-sized buffers per step; glibc's
// allocator hands large ones back to the kernel each time and page-faults them in again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The whole pipeline on the built-in task in a few minutes: SFT, GRPO, held-out
    /// evaluation, report (resumes when rerun).
    Demo(commands::demo::Args),
    /// Score CVSS vectors (v2.0, v3.0, v3.1, v4.0) given as arguments or one per line on stdin.
    Cvss(commands::cvss::Args),
    /// Grade one model response against a gold answer.
    Score(Box<commands::score::Args>),
    /// Run the benchmarks against an OpenAI-compatible endpoint, or grade given answers.
    Eval(Box<commands::eval::Args>),
    /// HarmBench safety of a deployment: bare, with a system prompt, behind a guardrail.
    Safety(Box<commands::safety::Args>),
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
    /// Measure the engine on this machine: speed, parity of a device with the CPU.
    Bench(commands::bench::Args),
}

fn main() -> anyhow::Result<()> {
    metis_train::allocator::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli.command) {
        // The reader of our output went away (`metis … | head`): nothing left to say.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Whether an error comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Cvss(args) => commands::cvss::run(args),
        Command::Score(args) => commands::score::run(*args),
        Command::Eval(args) => commands::eval::run(*args),
        Command::Safety(args) => commands::safety::run(*args),
        Command::Report(args) => commands::report::run(args),
        Command::Generate(args) => commands::generate::run_generate(*args),
        Command::Chat(args) => commands::generate::run_chat(*args),
        Command::Serve(args) => commands::serve::run(*args),
        Command::Audit(args) => commands::audit::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Bench(args) => commands::bench::run(args),
    }
}
