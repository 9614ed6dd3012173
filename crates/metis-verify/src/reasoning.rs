//! Separating `<think>…</think>` reasoning from the final answer.
//!
//! The rule follows FAITH (the harness behind the published numbers) so scores stay comparable:
//! the answer is the text after the last closing delimiter that follows the last opening
//! delimiter. A response with no delimiter at all is all answer; a response that only closes
//! (the chat template opened the block in the prompt) is reasoning up to the close; a response
//! whose last block never closes was truncated, so its answer is empty and flagged.

use serde::{Deserialize, Serialize};

/// The pair of markers around a reasoning block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delimiters {
    pub open: String,
    pub close: String,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self {
            open: "<think>".to_owned(),
            close: "</think>".to_owned(),
        }
    }
}

impl Delimiters {
    /// Custom delimiters; empty markers are refused because they would match everywhere.
    pub fn new(open: impl Into<String>, close: impl Into<String>) -> Option<Self> {
        let (open, close) = (open.into(), close.into());
        (!open.is_empty() && !close.is_empty() && open != close).then_some(Self { open, close })
    }
}

/// How the reasoning block(s) of a response were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkStatus {
    /// Neither delimiter appears: the whole response is the answer.
    Absent,
    /// Every opened block is closed.
    Closed,
    /// The response starts inside a block the chat template opened: it has a closing
    /// delimiter but no opening one.
    TemplateOpened,
    /// The last block never closes (the generation was cut off): the answer is empty.
    Unterminated,
}

/// A response split into reasoning and answer, borrowing from the response text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasoningSplit<'a> {
    /// Everything before the answer that belongs to reasoning, delimiters excluded; several
    /// blocks are joined by a blank line. Empty when there is no reasoning.
    pub reasoning: String,
    /// The answer part (untrimmed slice of the response; empty when truncated).
    pub answer: &'a str,
    pub status: ThinkStatus,
    /// Number of opening delimiters seen in the response.
    pub open_count: usize,
    /// Number of closing delimiters seen in the response.
    pub close_count: usize,
}

impl ReasoningSplit<'_> {
    /// True when the answer is missing because reasoning was cut off.
    pub fn is_truncated(&self) -> bool {
        self.status == ThinkStatus::Unterminated
    }
}

/// Splits `response` into reasoning and answer with the given delimiters.
pub fn split<'a>(response: &'a str, delimiters: &Delimiters) -> ReasoningSplit<'a> {
    let (open, close) = (delimiters.open.as_str(), delimiters.close.as_str());
    let open_count = response.matches(open).count();
    let close_count = response.matches(close).count();
    let last_open = response.rfind(open);

    // Where the search for the answer starts: after the last opening delimiter, if any.
    let search_from = last_open.map_or(0, |i| i + open.len());
    let last_close = response[search_from..]
        .rfind(close)
        .map(|i| search_from + i);

    let (status, reasoning_end, answer) = match (last_open, last_close) {
        (None, None) => (ThinkStatus::Absent, 0, response),
        (None, Some(c)) => (ThinkStatus::TemplateOpened, c, &response[c + close.len()..]),
        (Some(_), Some(c)) => (ThinkStatus::Closed, c, &response[c + close.len()..]),
        (Some(_), None) => (ThinkStatus::Unterminated, response.len(), &response[..0]),
    };
    let reasoning = reasoning_text(&response[..reasoning_end], delimiters);
    ReasoningSplit {
        reasoning,
        answer,
        status,
        open_count,
        close_count,
    }
}

/// The reasoning region with delimiters removed and each block trimmed, blocks joined by a
/// blank line. Text outside any block before the answer (rare) is kept as its own segment so
/// nothing the model wrote disappears from the audit trail.
fn reasoning_text(region: &str, delimiters: &Delimiters) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for piece in region.split(delimiters.open.as_str()) {
        for segment in piece.split(delimiters.close.as_str()) {
            let segment = segment.trim();
            if !segment.is_empty() {
                parts.push(segment);
            }
        }
    }
    parts.join("\n\n")
}

/// Incremental splitter for streamed generation: feed text deltas as they arrive and get
/// reasoning and answer deltas back, with delimiters that may straddle chunk boundaries held
/// back until they can be decided.
#[derive(Debug, Clone)]
pub struct StreamSplitter {
    delimiters: Delimiters,
    in_reasoning: bool,
    pending: String,
}

/// A piece of streamed output, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamDelta {
    Reasoning(String),
    Answer(String),
}

impl StreamSplitter {
    /// `starts_in_reasoning` is true when the prompt already opened the block (the template
    /// prefilled `<think>`), so output is reasoning until the closing delimiter.
    pub fn new(delimiters: Delimiters, starts_in_reasoning: bool) -> Self {
        Self {
            delimiters,
            in_reasoning: starts_in_reasoning,
            pending: String::new(),
        }
    }

    /// Whether the stream is currently inside a reasoning block.
    pub fn in_reasoning(&self) -> bool {
        self.in_reasoning
    }

    /// Consumes a chunk and returns the classified text that is now certain.
    pub fn push(&mut self, chunk: &str) -> Vec<StreamDelta> {
        self.pending.push_str(chunk);
        let mut out = Vec::new();
        loop {
            let marker = if self.in_reasoning {
                self.delimiters.close.as_str()
            } else {
                self.delimiters.open.as_str()
            };
            if let Some(i) = self.pending.find(marker) {
                let before: String = self.pending[..i].to_owned();
                self.emit(&mut out, before);
                self.pending.drain(..i + marker.len());
                self.in_reasoning = !self.in_reasoning;
                continue;
            }
            // Hold back the longest suffix that could still grow into the marker.
            let keep = partial_suffix_len(&self.pending, marker);
            let ready_len = self.pending.len() - keep;
            let ready: String = self.pending[..ready_len].to_owned();
            self.pending.drain(..ready_len);
            self.emit(&mut out, ready);
            return out;
        }
    }

    /// Flushes what is held back at the end of the stream.
    pub fn finish(&mut self) -> Vec<StreamDelta> {
        let rest = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        self.emit(&mut out, rest);
        out
    }

    fn emit(&self, out: &mut Vec<StreamDelta>, text: String) {
        if text.is_empty() {
            return;
        }
        out.push(if self.in_reasoning {
            StreamDelta::Reasoning(text)
        } else {
            StreamDelta::Answer(text)
        });
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `marker`.
fn partial_suffix_len(text: &str, marker: &str) -> usize {
    let max = marker.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            let start = text.len() - n;
            text.is_char_boundary(start) && marker.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> ReasoningSplit<'_> {
        split(text, &Delimiters::default())
    }

    #[test]
    fn no_block_is_all_answer() {
        let r = s("Answer: B");
        assert_eq!(r.status, ThinkStatus::Absent);
        assert_eq!(r.answer, "Answer: B");
        assert_eq!(r.reasoning, "");
    }

    #[test]
    fn closed_block() {
        let r = s("<think>\nlet me see\n</think>\n\nAnswer: C");
        assert_eq!(r.status, ThinkStatus::Closed);
        assert_eq!(r.reasoning, "let me see");
        assert_eq!(r.answer.trim(), "Answer: C");
    }

    #[test]
    fn template_opened_block() {
        let r = s("the prompt opened it\n</think>\nAnswer: A");
        assert_eq!(r.status, ThinkStatus::TemplateOpened);
        assert_eq!(r.reasoning, "the prompt opened it");
        assert_eq!(r.answer.trim(), "Answer: A");
    }

    #[test]
    fn unterminated_block_has_empty_answer() {
        let r = s("<think>I was cut off mid-thou");
        assert_eq!(r.status, ThinkStatus::Unterminated);
        assert!(r.is_truncated());
        assert_eq!(r.answer, "");
        assert_eq!(r.reasoning, "I was cut off mid-thou");
    }

    #[test]
    fn several_blocks_answer_after_last() {
        let r = s("<think>one</think>draft<think>two</think>Answer: D");
        assert_eq!(r.status, ThinkStatus::Closed);
        assert_eq!(r.answer, "Answer: D");
        assert_eq!(r.reasoning, "one\n\ndraft\n\ntwo");
        assert_eq!((r.open_count, r.close_count), (2, 2));
    }

    #[test]
    fn reopened_after_close_is_truncated() {
        let r = s("<think>a</think>Answer: A<think>b");
        assert_eq!(r.status, ThinkStatus::Unterminated);
        assert_eq!(r.answer, "");
    }

    #[test]
    fn custom_delimiters() {
        let d = Delimiters::new("[R]", "[/R]").unwrap();
        let r = split("[R]hmm[/R]42", &d);
        assert_eq!(r.answer, "42");
        assert_eq!(r.reasoning, "hmm");
        assert!(Delimiters::new("", "x").is_none());
        assert!(Delimiters::new("x", "x").is_none());
    }

    #[test]
    fn stream_split_across_chunk_boundaries() {
        let text = "<think>abc</think>Answer: B";
        for cut in 0..=text.len() {
            let mut sp = StreamSplitter::new(Delimiters::default(), false);
            let mut deltas = sp.push(&text[..cut]);
            deltas.extend(sp.push(&text[cut..]));
            deltas.extend(sp.finish());
            let (mut r, mut a) = (String::new(), String::new());
            for d in deltas {
                match d {
                    StreamDelta::Reasoning(t) => r.push_str(&t),
                    StreamDelta::Answer(t) => a.push_str(&t),
                }
            }
            assert_eq!((r.as_str(), a.as_str()), ("abc", "Answer: B"), "cut {cut}");
        }
    }

    #[test]
    fn stream_prefilled_think() {
        let mut sp = StreamSplitter::new(Delimiters::default(), true);
        let mut d = sp.push("reason</th");
        d.extend(sp.push("ink>ans"));
        d.extend(sp.finish());
        assert_eq!(
            d,
            vec![
                StreamDelta::Reasoning("reason".into()),
                StreamDelta::Answer("ans".into())
            ]
        );
    }
}
