//! The code in a model's answer, and how it joins the problem's prompt.
//!
//! The answer is the text after `</think>` (the [`Verifier`](crate::Verifier) splits the
//! reasoning off first). The rule, in order:
//!
//! 1. **Which text.** The fenced blocks of the answer (a line opening with three or more
//!    backticks, closed by a line of at least as many; a block left open at the end of the
//!    answer runs to the end) tagged `python`, `py`, `python3` or untagged are the candidates;
//!    if the answer has fenced blocks but none of those, every block is a candidate. Of the
//!    candidates, the **last** one that defines the entry point (`def <entry_point>(` at the
//!    block's outermost indentation) is taken, since an answer that revises its function ends
//!    with the final version and an answer that adds usage examples puts them in another
//!    block; when none defines it, the first candidate is taken. An answer without any fence
//!    is taken whole (raw text), which lm-eval's `humaneval_instruct` also does.
//! 2. **How it joins the prompt.** Upstream runs `prompt + completion` (a body continuing the
//!    prompt's signature and docstring). A text that defines the entry point is a **full
//!    function**: its common indentation is removed and it is appended after the prompt and a
//!    newline, so the prompt's imports and helper functions stay defined and the answer's
//!    definition replaces the prompt's docstring-only stub (every HumanEval prompt compiles on
//!    its own). Any other text is a **body**: appended to the prompt as upstream does, after
//!    indenting it by four spaces when its first line is not indented (a body written flush
//!    left could only be a syntax error after the prompt).

use std::fmt;

/// Where the extracted code was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// A fenced code block (the requested form).
    Fenced,
    /// The whole answer, which had no fence.
    Raw,
}

/// How the code continues the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionKind {
    /// The function body, continuing the prompt's signature and docstring.
    Body,
    /// A definition of the whole entry-point function.
    Function,
}

/// The code of an answer, ready to join a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The code as it is appended to the prompt (dedented or indented per [`CompletionKind`]).
    pub code: String,
    pub source: CodeSource,
    pub kind: CompletionKind,
}

impl Completion {
    /// The text upstream calls the completion: what follows the prompt in the program.
    pub fn after_prompt(&self) -> String {
        match self.kind {
            CompletionKind::Body => self.code.clone(),
            CompletionKind::Function => format!("\n{}", self.code),
        }
    }
}

impl fmt::Display for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

/// The code of `answer` for the problem whose function is `entry_point`; `None` when the
/// answer holds no code (empty, or only empty blocks).
pub fn extract(answer: &str, entry_point: &str) -> Option<Completion> {
    let blocks = fenced_blocks(answer);
    let (text, source) = if blocks.is_empty() {
        (trim_blank_lines(answer).to_owned(), CodeSource::Raw)
    } else {
        (choose_block(&blocks, entry_point)?, CodeSource::Fenced)
    };
    if text.trim().is_empty() {
        return None;
    }
    let dedented = dedent(&text);
    Some(if defines(&dedented, entry_point) {
        Completion {
            code: dedented,
            source,
            kind: CompletionKind::Function,
        }
    } else {
        Completion {
            code: as_body(&text),
            source,
            kind: CompletionKind::Body,
        }
    })
}

/// One fenced block: its info string's first word (lower case) and its content.
#[derive(Debug)]
struct Block {
    language: String,
    content: String,
}

/// The fenced blocks of `text`, in order.
fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        match &mut open {
            Some((width, _, lines)) => {
                if ticks >= *width && trimmed[ticks..].trim().is_empty() {
                    let (_, language, lines) = open.take().expect("a block is open");
                    blocks.push(Block {
                        language,
                        content: lines.join("\n"),
                    });
                } else {
                    lines.push(line);
                }
            }
            None if ticks >= 3 => {
                let language = trimmed[ticks..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_lowercase();
                open = Some((ticks, language, Vec::new()));
            }
            None => {}
        }
    }
    // A block still open when the answer ends (a cut-off generation) runs to the end.
    if let Some((_, language, lines)) = open {
        blocks.push(Block {
            language,
            content: lines.join("\n"),
        });
    }
    blocks
}

fn is_python(language: &str) -> bool {
    matches!(language, "" | "python" | "py" | "python3")
}

/// The block the answer's code is taken from (rule 1 of the module documentation).
fn choose_block(blocks: &[Block], entry_point: &str) -> Option<String> {
    let python: Vec<&Block> = blocks.iter().filter(|b| is_python(&b.language)).collect();
    let candidates: Vec<&Block> = if python.is_empty() {
        blocks.iter().collect()
    } else {
        python
    };
    let non_empty = || candidates.iter().filter(|b| !b.content.trim().is_empty());
    non_empty()
        .rfind(|b| defines(&dedent(&b.content), entry_point))
        .or_else(|| non_empty().next())
        .map(|b| b.content.clone())
}

/// Whether `code` defines `entry_point` at its outermost level.
fn defines(code: &str, entry_point: &str) -> bool {
    code.lines().any(|line| {
        let rest = line
            .strip_prefix("async ")
            .map_or(line, str::trim_start)
            .strip_prefix("def ");
        rest.and_then(|r| r.trim_start().strip_prefix(entry_point))
            .is_some_and(|r| r.trim_start().starts_with('('))
    })
}

/// `text` without its leading blank lines and trailing whitespace (leading indentation of the
/// first code line is meaningful and kept).
fn trim_blank_lines(text: &str) -> &str {
    let text = text.trim_end();
    let first_code = text
        .lines()
        .scan(0usize, |offset, line| {
            let start = *offset;
            *offset += line.len() + 1;
            Some((start, line))
        })
        .find(|(_, line)| !line.trim().is_empty())
        .map_or(text.len(), |(start, _)| start);
    &text[first_code..]
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Removes the whitespace prefix common to every non-blank line (Python's `textwrap.dedent`
/// for space- or tab-only indentation).
fn dedent(text: &str) -> String {
    let text = trim_blank_lines(text);
    let common = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| &l[..indentation(l)])
        .reduce(|a, b| {
            let shared = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
            &a[..shared]
        })
        .unwrap_or("");
    text.lines()
        .map(|l| l.strip_prefix(common).unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A body to append to the prompt: as written when its first line is indented, else indented
/// by four spaces.
fn as_body(text: &str) -> String {
    let text = trim_blank_lines(text);
    let indented = text.lines().next().is_some_and(|l| indentation(l) > 0);
    let mut out = if indented {
        text.to_owned()
    } else {
        text.lines()
            .map(|l| {
                if l.trim().is_empty() {
                    String::new()
                } else {
                    format!("    {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_in_a_fence_continues_the_prompt() {
        let c = extract("Here:\n```python\n    return a + b\n```\n", "add").unwrap();
        assert_eq!(c.kind, CompletionKind::Body);
        assert_eq!(c.source, CodeSource::Fenced);
        assert_eq!(c.after_prompt(), "    return a + b\n");
    }

    #[test]
    fn full_function_is_dedented_and_follows_a_newline() {
        let answer = "```py\n  def add(a, b):\n      return a + b\n```";
        let c = extract(answer, "add").unwrap();
        assert_eq!(c.kind, CompletionKind::Function);
        assert_eq!(c.after_prompt(), "\ndef add(a, b):\n    return a + b\n");
        let async_def = extract("async def  add (a):\n    pass", "add").unwrap();
        assert_eq!(async_def.kind, CompletionKind::Function);
        // A longer name sharing the prefix is not the entry point.
        let other = extract("def add_all(a):\n    return 1", "add").unwrap();
        assert_eq!(other.kind, CompletionKind::Body);
    }

    #[test]
    fn the_last_block_defining_the_entry_point_wins() {
        let answer = "```python\ndef f(x):\n    return 1\n```\nBetter:\n```python\ndef f(x):\n    \
                      return 2\n```\nUsage:\n```python\nprint(f(3))\n```";
        let c = extract(answer, "f").unwrap();
        assert!(c.code.contains("return 2"), "{c}");
        let usage_first = "```\nprint(f(3))\n```\n```python\ndef f(x):\n    return 2\n```";
        assert!(extract(usage_first, "f").unwrap().code.contains("return 2"));
    }

    #[test]
    fn other_languages_are_skipped_unless_alone() {
        let answer = "```bash\npython x.py\n```\n```python\n    return 1\n```";
        assert_eq!(extract(answer, "f").unwrap().code, "    return 1\n");
        let only_text = "```text\n    return 1\n```";
        assert_eq!(extract(only_text, "f").unwrap().code, "    return 1\n");
    }

    #[test]
    fn raw_and_unterminated_answers() {
        let raw = extract("\n\n    return x * 2\n\n", "f").unwrap();
        assert_eq!(
            (raw.source, raw.kind),
            (CodeSource::Raw, CompletionKind::Body)
        );
        assert_eq!(raw.code, "    return x * 2\n");
        let cut = extract("```python\ndef f(x):\n    return", "f").unwrap();
        assert_eq!(cut.code, "def f(x):\n    return\n");
        // A flush-left body is indented to continue the function.
        let flush = extract("```python\nif x:\n    return 1\nreturn 2\n```", "f").unwrap();
        assert_eq!(flush.code, "    if x:\n        return 1\n    return 2\n");
    }

    #[test]
    fn no_code_is_none() {
        assert_eq!(extract("", "f"), None);
        assert_eq!(extract("  \n ", "f"), None);
        assert_eq!(extract("```python\n\n```", "f"), None);
    }

    #[test]
    fn longer_fences_and_closing_rules() {
        // A closing fence needs at least the opening's backticks and nothing after them.
        let answer = "````python\ndef f():\n    s = \"\"\"\n```\n\"\"\"\n    return s\n````";
        assert_eq!(
            extract(answer, "f").unwrap().code,
            "def f():\n    s = \"\"\"\n```\n\"\"\"\n    return s\n"
        );
    }
}
