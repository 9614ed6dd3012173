//! `metis generate` and `metis chat`: run a local model with the Metis engine.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context};
use metis_engine::chat::{Message, RenderOptions};
use metis_engine::generate::{generate, GenerateOptions, Generation, TokenEvent};
use metis_engine::loader::{load_model, LoadedModel};
use metis_engine::sampling::SamplingParams;
use metis_verify::reasoning::StreamDelta;

use super::model_args::PlacementArgs;

/// Options shared by `generate` and `chat`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, safetensors) or .gguf file (which carries
    /// its own tokenizer and chat template).
    #[arg(long)]
    model: PathBuf,
    /// Tokenizer to use instead of the model's own: a directory with tokenizer.json, or a
    /// .gguf file.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    placement: PlacementArgs,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// 0 = off.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating through end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Stop when this string appears (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Open the reasoning block in the prompt (`<think>\n` after the generation prompt).
    #[arg(long)]
    think: bool,
    /// System message for chat prompts.
    #[arg(long)]
    system: Option<String>,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Raw prompt token ids, comma-separated (works without a tokenizer).
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Vec<u32>,
    /// Render the prompt as a user turn through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Print {"prompt_ids","ids","text","reasoning","answer"}.
    #[arg(long)]
    json: bool,
}

fn load(a: &ModelArgs) -> anyhow::Result<LoadedModel> {
    let (device, dtype) = a.placement.open()?;
    load_model(&a.model, a.tokenizer.as_deref(), &device, dtype)
        .with_context(|| format!("loading the model from {}", a.model.display()))
}

fn options(a: &ModelArgs, loaded: &LoadedModel) -> GenerateOptions {
    GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            min_p: a.min_p,
            seed: a.seed,
        },
        stop_ids: loaded.stop_ids.clone(),
        stop_strings: a.stop.clone(),
        ignore_eos: a.ignore_eos,
    }
}

fn render(loaded: &LoadedModel, messages: &[Message], think: bool) -> anyhow::Result<Vec<u32>> {
    let (Some(tok), Some(tpl)) = (&loaded.tokenizer, &loaded.template) else {
        bail!("--chat needs a tokenizer with a chat template (tokenizer_config.json or the GGUF's tokenizer.chat_template)");
    };
    let opts = RenderOptions {
        prefill_think: think,
        ..RenderOptions::generation()
    };
    let text = tpl.render(messages, &opts)?;
    // The template emits the BOS token itself.
    Ok(tok.encode(&text, false)?)
}

fn print_delta(d: &StreamDelta, tty: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match d {
        StreamDelta::Reasoning(t) if tty => write!(out, "\x1b[2m{t}\x1b[0m")?,
        StreamDelta::Reasoning(t) | StreamDelta::Answer(t) => write!(out, "{t}")?,
    }
    out.flush()
}

/// Streams a generation's deltas to stdout; a write error (a reader that went away) stops the
/// generation and is kept in `failed`, for the caller to return.
fn stream_to_stdout<'a>(
    tty: bool,
    failed: &'a mut Option<std::io::Error>,
) -> impl FnMut(&TokenEvent<'_>) -> ControlFlow<()> + 'a {
    move |ev| {
        for d in ev.deltas {
            if let Err(e) = print_delta(d, tty) {
                *failed = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

pub fn run_generate(args: GenerateArgs) -> anyhow::Result<()> {
    let loaded = load(&args.model)?;
    let prompt_ids = if !args.prompt_ids.is_empty() {
        args.prompt_ids.clone()
    } else {
        let Some(prompt) = &args.prompt else {
            bail!("give --prompt TEXT or --prompt-ids 1,2,3");
        };
        if args.chat {
            let mut messages = Vec::new();
            if let Some(s) = &args.model.system {
                messages.push(Message::system(s.clone()));
            }
            messages.push(Message::user(prompt.clone()));
            render(&loaded, &messages, args.model.think)?
        } else {
            let Some(tok) = &loaded.tokenizer else {
                bail!(
                    "--prompt needs a tokenizer (--tokenizer DIR); --prompt-ids works without one"
                );
            };
            let mut ids = tok.encode(prompt, true)?;
            if args.model.think {
                ids.extend(tok.encode("<think>\n", false)?);
            }
            ids
        }
    };
    let opts = options(&args.model, &loaded);
    let stream = !args.json && loaded.tokenizer.is_some();
    let tty = std::io::stdout().is_terminal();
    let mut failed = None;
    let generation: Generation = {
        let mut on_token = stream_to_stdout(tty, &mut failed);
        generate(
            &loaded.model,
            loaded.tokenizer.as_ref(),
            &prompt_ids,
            &opts,
            args.model.think,
            |ev: &TokenEvent<'_>| {
                if stream {
                    on_token(ev)
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?
    };
    if let Some(e) = failed {
        return Err(e.into());
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let out = serde_json::json!({
            "prompt_ids": generation.prompt_ids,
            "ids": generation.ids,
            "text": generation.text,
            "reasoning": generation.reasoning,
            "answer": generation.answer,
        });
        writeln!(stdout, "{out}")?;
    } else if stream {
        writeln!(stdout)?;
    } else {
        let ids: Vec<String> = generation.ids.iter().map(u32::to_string).collect();
        writeln!(stdout, "{}", ids.join(","))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
}

/// Interactive chat: one user turn per line; `/reset` clears the history, `/exit` quits.
pub fn run_chat(args: ChatArgs) -> anyhow::Result<()> {
    let loaded = load(&args.model)?;
    if loaded.template.is_none() {
        bail!("chat needs a tokenizer with a chat template");
    }
    let opts = options(&args.model, &loaded);
    let tty = std::io::stdout().is_terminal();
    let mut history: Vec<Message> = args
        .model
        .system
        .iter()
        .map(|s| Message::system(s.clone()))
        .collect();
    let stdin = std::io::stdin();
    let show_prompt = || {
        eprint!("> ");
        let _ = std::io::stderr().flush();
    };
    show_prompt();
    for line in stdin.lock().split(b'\n') {
        let Ok(line) = String::from_utf8(line?) else {
            eprintln!("error: that line is not UTF-8 text; nothing was sent");
            show_prompt();
            continue;
        };
        match line.trim() {
            "" => {}
            "/exit" | "/quit" => break,
            "/reset" => history.retain(|m| m.role == "system"),
            text => {
                history.push(Message::user(text.to_owned()));
                let ids = render(&loaded, &history, args.model.think)?;
                let mut failed = None;
                let g = generate(
                    &loaded.model,
                    loaded.tokenizer.as_ref(),
                    &ids,
                    &opts,
                    args.model.think,
                    stream_to_stdout(tty, &mut failed),
                )?;
                if let Some(e) = failed {
                    return Err(e.into());
                }
                writeln!(std::io::stdout())?;
                // The history keeps the answer only, as reasoning models' templates expect.
                history.push(Message::assistant(g.answer.unwrap_or_default()));
            }
        }
        show_prompt();
    }
    Ok(())
}
