//! How GRPO prompts become token ids: the base model's tokenizer, chat template and stop ids,
//! loaded as every other caller loads them, and each prompt rendered and tokenized once.

use std::path::Path;

use metis_engine::chat::{ChatTemplate, RenderOptions};
use metis_engine::loader::load_tokenizer;
use metis_engine::tokenizer::Tokenizer;

use super::prompts::{LoadOptions, PromptMixture, PromptRecord};
use crate::model::{Result, TrainError};

/// A prompt rendered with the chat template and tokenized.
pub(super) struct Prepared {
    pub record: PromptRecord,
    pub ids: Vec<u32>,
}

/// The tokenizer side of a run.
pub(super) struct ChatContext {
    pub tokenizer: Tokenizer,
    pub stop_ids: Vec<u32>,
    template: ChatTemplate,
    render: RenderOptions,
}

impl ChatContext {
    /// The tokenizer of `model` (or the one at `tokenizer`: a directory or a `.gguf` file)
    /// with its chat template, rendering generation prompts (`<think>\n` prefilled if asked).
    pub(super) fn load(
        model: &Path,
        tokenizer: Option<&Path>,
        prefill_think: bool,
    ) -> Result<Self> {
        let tok_src = tokenizer.unwrap_or(model);
        let loaded = load_tokenizer(model, tokenizer)
            .map_err(|e| TrainError::InvalidArgument(e.to_string()))?
            .ok_or_else(|| {
                TrainError::InvalidArgument(format!("{}: no tokenizer.json", tok_src.display()))
            })?;
        let Some(template) = loaded.template else {
            return Err(TrainError::InvalidArgument(format!(
                "{}: the tokenizer has no chat template",
                tok_src.display()
            )));
        };
        Ok(Self {
            tokenizer: loaded.tokenizer,
            stop_ids: loaded.stop_ids,
            template,
            render: RenderOptions {
                prefill_think,
                ..RenderOptions::generation()
            },
        })
    }

    /// Every record of the prompt file at `path`, rendered and tokenized.
    pub(super) fn load_prompts(
        &self,
        path: &Path,
        opts: &LoadOptions,
    ) -> Result<(PromptMixture, Vec<Prepared>)> {
        let mixture = PromptMixture::load(path, opts)
            .map_err(|e| TrainError::InvalidArgument(e.to_string()))?;
        let prepared = self.prepare(&mixture.records)?;
        Ok((mixture, prepared))
    }

    fn prepare(&self, records: &[PromptRecord]) -> Result<Vec<Prepared>> {
        records
            .iter()
            .map(|r| {
                let text = self
                    .template
                    .render(&r.messages, &self.render)
                    .map_err(|e| TrainError::InvalidArgument(format!("prompt {}: {e}", r.id)))?;
                let ids = self
                    .tokenizer
                    .encode(&text, false)
                    .map_err(|e| TrainError::InvalidArgument(format!("prompt {}: {e}", r.id)))?;
                Ok(Prepared {
                    record: r.clone(),
                    ids,
                })
            })
            .collect()
    }
}
