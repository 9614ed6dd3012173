//! `metis score`: grade one response with the same verifier the harness and trainer use, and
//! show how the grade came about.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use metis_verify::attack::{AttackCatalog, Domain, SetMatchOptions};
use metis_verify::cvss;
use metis_verify::cwe::CweCatalog;
use metis_verify::format::{self, FormatPolicy};
use metis_verify::mcq::ChoiceSpec;
use metis_verify::reasoning::Delimiters;
use metis_verify::verifier::{
    AttackVerifier, CvssVerifier, CweVerifier, McqVerifier, Task, Verifier, VerifyOptions,
};
use metis_verify::Protocol;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Which verifier grades the response.
    #[arg(long, value_parser = ["mcq", "cwe", "cvss", "attack"])]
    task: String,
    /// The gold answer: a letter or letter set (mcq), a CWE id, a CVSS vector, or
    /// comma-separated technique ids (attack).
    #[arg(long)]
    gold: String,
    /// File holding the model's response (`-` for stdin).
    #[arg(long)]
    response: PathBuf,
    /// Answer-extraction protocol.
    #[arg(long, default_value = "last-line", value_parser = ["last-line", "faith", "faith-strict"])]
    protocol: String,
    /// Opening and closing reasoning delimiters.
    #[arg(long, num_args = 2, value_names = ["OPEN", "CLOSE"], default_values = ["<think>", "</think>"])]
    delimiters: Vec<String>,
    /// mcq: number of options (4 = A–D).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=26))]
    options: u8,
    /// mcq: several options may be correct (exact-set match).
    #[arg(long)]
    multi: bool,
    /// cvss: version assumed for a vector written without its `CVSS:x.y/` prefix.
    #[arg(long, default_value = "3.1")]
    cvss_version: String,
    /// Data directory in the layout of the shared data (cwe/, attack/); enables the CWE
    /// hierarchy metric and ATT&CK revocation mapping.
    #[arg(long, env = "METIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// attack: catalog version.
    #[arg(long, default_value = "v15.1")]
    attack_version: String,
    /// attack: catalog domain (enterprise or mobile).
    #[arg(long, default_value = "enterprise")]
    attack_domain: String,
    /// attack: a predicted sub-technique counts as its parent technique.
    #[arg(long)]
    credit_parent: bool,
    /// The chat template opened the reasoning block in the prompt (format check).
    #[arg(long)]
    prefilled_think: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

fn build(args: &Args) -> anyhow::Result<Box<dyn Verifier>> {
    let task: Task = args.task.parse()?;
    let protocol: Protocol = args.protocol.parse().map_err(anyhow::Error::msg)?;
    let delimiters = Delimiters::new(&args.delimiters[0], &args.delimiters[1])
        .context("--delimiters: both must be non-empty and different")?;
    let options = VerifyOptions {
        protocol,
        delimiters,
    };
    Ok(match task {
        Task::Mcq => Box::new(McqVerifier {
            options,
            spec: ChoiceSpec {
                options: args.options,
                multi: args.multi,
            },
        }),
        Task::Cwe => {
            let catalog = match &args.data_dir {
                Some(dir) => Some(Arc::new(CweCatalog::from_data_dir(dir)?)),
                None => None,
            };
            Box::new(CweVerifier { options, catalog })
        }
        Task::Cvss => Box::new(CvssVerifier {
            options,
            version: args
                .cvss_version
                .parse::<cvss::Version>()
                .map_err(|_| anyhow::anyhow!("--cvss-version: expected 2.0, 3.0, 3.1 or 4.0"))?,
        }),
        Task::Attack => {
            let catalog = match &args.data_dir {
                Some(dir) => {
                    let domain: Domain = args.attack_domain.parse().map_err(|_| {
                        anyhow::anyhow!("--attack-domain: expected enterprise or mobile")
                    })?;
                    Some(Arc::new(AttackCatalog::from_data_dir(
                        dir,
                        domain,
                        &args.attack_version,
                    )?))
                }
                None => None,
            };
            Box::new(AttackVerifier {
                options,
                catalog,
                set_options: SetMatchOptions {
                    credit_parent_for_sub: args.credit_parent,
                },
            })
        }
    })
}

fn read_response(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the response from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the response from {}", path.display()))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let verifier = build(&args)?;
    let response = read_response(&args.response)?;
    let verdict = verifier.grade(&response, &args.gold)?;
    let policy = FormatPolicy {
        delimiters: verifier.options().delimiters.clone(),
        prefilled_open: args.prefilled_think,
        ..FormatPolicy::default()
    };
    let fmt = format::check(&response, &policy);
    if args.json {
        let out = json!({ "verdict": verdict, "format": fmt });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("task:       {}", verdict.task);
    println!("reasoning:  {:?}", verdict.think);
    match (&verdict.extracted, verdict.format, &verdict.invalid) {
        (Some(x), Some(f), _) => println!("extracted:  {x} ({f:?} format)"),
        (_, _, Some(r)) => println!("extracted:  none (invalid: {r})"),
        _ => println!("extracted:  none"),
    }
    println!(
        "validity:   {}",
        if verdict.is_valid() {
            "valid"
        } else {
            "invalid"
        }
    );
    println!("score:      {}", verdict.score);
    println!("correct:    {}", verdict.correct);
    for (k, v) in &verdict.metrics {
        println!("  {k:<18} {v}");
    }
    for r in &verdict.reasons {
        println!("note:       {r}");
    }
    if fmt.is_ok() {
        println!("format:     ok");
    } else {
        println!(
            "format:     penalty {} ({})",
            fmt.penalty,
            fmt.reasons().join("; ")
        );
    }
    Ok(())
}
