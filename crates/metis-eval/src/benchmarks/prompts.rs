//! Prompt building, one function per benchmark family.
//!
//! - [`ctibench`]: CTIBench rows carry their own zero-shot prompt (`Prompt` column), which
//!   already asks for the answer on the last (or "final") line; it is used as is, and a
//!   last-line instruction is appended only to a prompt that lacks one.
//! - [`mcq_chat`]: MCQ datasets without a prompt of their own (CyberMetric, MMLU, SecBench,
//!   SecEval) use FAITH's chat MCQA template (faith-protocol §2.2: instruction, blank line,
//!   question, blank line, `A. …` lines), with the instruction asking for `Answer: $LETTER`
//!   (or `Answer: $LETTERS` for multi-answer questions) on the last line.
//! - [`bbh_cot_fewshot`]: BIG-Bench Hard as lm-eval's `bbh_cot_fewshot` asks it (three
//!   chain-of-thought exemplars ending "So the answer is …").

/// Option letters, in order.
const LETTERS: [char; 26] = [
    'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P', 'Q', 'R', 'S',
    'T', 'U', 'V', 'W', 'X', 'Y', 'Z',
];

/// The instruction appended to a CTIBench prompt that does not ask for a last-line answer.
pub const LAST_LINE_INSTRUCTION: &str = "Put your final answer alone on the last line.";

/// Whether `prompt` already asks for the answer on the last/final line.
pub fn asks_for_last_line(prompt: &str) -> bool {
    let lower = prompt.to_lowercase();
    lower.contains("last line") || lower.contains("final line")
}

/// A CTIBench prompt: the dataset's `Prompt` column as is (including CTIBench's flattened
/// layout and trailing space), plus [`LAST_LINE_INSTRUCTION`] only if it lacks one.
pub fn ctibench(prompt_column: &str) -> String {
    if asks_for_last_line(prompt_column) {
        prompt_column.to_owned()
    } else {
        format!("{}\n\n{LAST_LINE_INSTRUCTION}", prompt_column.trim_end())
    }
}

fn number_word(n: usize) -> String {
    const WORDS: [&str; 9] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| (*w).to_owned())
}

/// `A, B, C and D` (`conj` = "and") or `A, B, C, or D` (`conj` = ", or", FAITH's spelling).
fn letter_list(n: usize, last_sep: &str) -> String {
    let letters: Vec<String> = LETTERS[..n.min(26)].iter().map(|c| c.to_string()).collect();
    match letters.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{}{last_sep}{last}", rest.join(", ")),
    }
}

/// FAITH's chat MCQA prompt, asking for the answer on the last line:
///
/// ```text
/// Given the following question and four candidate answers (A, B, C and D), choose the best
/// answer. The last line of your response should be of the following format: 'Answer: $LETTER'
/// (without quotes) where $LETTER is one of A, B, C, or D.
///
/// <question>
///
/// A. <choice>
/// B. <choice>
/// ...
/// ```
///
/// With `multi`, the model is asked for every correct option (`Answer: $LETTERS`, e.g.
/// `Answer: A, C`). The question and the choices are trimmed.
pub fn mcq_chat(question: &str, choices: &[String], multi: bool) -> String {
    let n = choices.len().min(26);
    let instruction = if multi {
        format!(
            "Given the following question and {} candidate answers ({}), choose all correct \
             answers; one or more of them may be correct. The last line of your response should \
             be of the following format: 'Answer: $LETTERS' (without quotes) where $LETTERS are \
             all correct options, e.g. 'Answer: A, C'.",
            number_word(n),
            letter_list(n, " and "),
        )
    } else {
        format!(
            "Given the following question and {} candidate answers ({}), choose the best \
             answer. The last line of your response should be of the following format: \
             'Answer: $LETTER' (without quotes) where $LETTER is one of {}.",
            number_word(n),
            letter_list(n, " and "),
            letter_list(n, ", or "),
        )
    };
    let mut prompt = format!("{instruction}\n\n{}\n", question.trim());
    for (letter, choice) in LETTERS.iter().zip(choices) {
        prompt.push('\n');
        prompt.push(*letter);
        prompt.push_str(". ");
        prompt.push_str(choice.trim());
    }
    prompt
}

/// The instruction a zero-shot GSM8K prompt ends with: the final answer in lm-eval's
/// `#### N` form, so that its strict match applies to a chat model's answer too.
pub const GSM8K_ANSWER_INSTRUCTION: &str =
    "Solve the problem step by step. On the last line, write the final answer as \"#### N\", where N is a number.";

/// Zero-shot GSM8K for a chat (reasoning) model.
pub fn gsm8k_zero_shot(question: &str) -> String {
    format!("{}\n\n{GSM8K_ANSWER_INSTRUCTION}", question.trim())
}

/// lm-eval's `gsm8k_cot`: the eight fixed chain-of-thought exemplars as `Q: …\nA: …` blocks
/// separated by blank lines, then `Q: {question}\nA:`.
pub fn gsm8k_cot(question: &str) -> String {
    let mut out = String::new();
    for (q, a) in metis_verify::math::gsm8k::COT_EXEMPLARS.iter() {
        out.push_str(&format!("Q: {q}\nA: {a}\n\n"));
    }
    out.push_str(&format!("Q: {question}\nA:"));
    out
}

/// lm-eval's `bbh_cot_fewshot` prompt (`EleutherAI/lm-evaluation-harness`,
/// `lm_eval/tasks/bbh/cot_fewshot/`, task metadata version 4.0): the task description, the
/// three chain-of-thought exemplars, then `Q: {input}\nA: Let's think step by step.\n`.
///
/// lm-eval builds it as `description` + each exemplar's `doc_to_text` + target (empty
/// `target_delimiter`) + the default `fewshot_delimiter` `\n\n` + the question's
/// `doc_to_text`; its YAMLs hold the exemplars of BBH's `cot-prompts/<task>.txt`, so the
/// result is that file's text after its canary and `-----` lines (`exemplars`, which ends
/// without a newline), `\n\n`, and the question. Checked byte for byte against lm-eval's
/// `movie_recommendation.yaml` and `temporal_sequences.yaml`. lm-eval's chat-template path
/// moves the description into a system turn; Metis sends the whole prompt as one user turn,
/// as lm-eval does without a chat template.
pub fn bbh_cot_fewshot(exemplars: &str, input: &str) -> String {
    format!("{exemplars}\n\nQ: {input}\nA: Let's think step by step.\n")
}

/// The instruction a MATH prompt ends with (the reasoning-model form of the answer).
pub const MATH_ANSWER_INSTRUCTION: &str =
    "Solve the problem step by step, and put your final answer within \\boxed{}.";

/// A MATH problem for a chat (reasoning) model, in Minerva's `Problem:` layout.
pub fn math(problem: &str) -> String {
    format!("Problem:\n{}\n\n{MATH_ANSWER_INSTRUCTION}", problem.trim())
}

/// The reply format a HumanEval prompt asks for: the whole function in one fenced block,
/// which [`metis_verify::code::extract`] takes (a bare body is accepted too).
pub const HUMANEVAL_ANSWER_INSTRUCTION: &str =
    "Reply with the completed function, signature included, in a single ```python code block.";

/// A HumanEval problem for a chat (reasoning) model: lm-eval's `humaneval_instruct` request
/// ("Write a solution to the following problem and make sure that it passes the tests:", then
/// the stub in a fence), and, in place of its assistant prefill (`Here is the completed
/// function:` and the stub, which a reasoning model cannot continue after its thinking), an
/// instruction to answer with the whole function in a ```python block.
pub fn humaneval(stub: &str) -> String {
    format!(
        "Write a solution to the following problem and make sure that it passes the tests:\n\
         ```python\n{}\n```\n\n{HUMANEVAL_ANSWER_INSTRUCTION}",
        stub.trim_end_matches('\n')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faith_chat_template_with_last_line() {
        let p = mcq_chat(
            " What? ",
            &["a".into(), "b".into(), "c".into(), "d".into()],
            false,
        );
        assert_eq!(
            p,
            "Given the following question and four candidate answers (A, B, C and D), choose \
             the best answer. The last line of your response should be of the following format: \
             'Answer: $LETTER' (without quotes) where $LETTER is one of A, B, C, or D.\n\nWhat?\n\n\
             A. a\nB. b\nC. c\nD. d"
        );
        let m = mcq_chat("Q", &["a".into(), "b".into(), "c".into(), "d".into()], true);
        assert!(m.contains("'Answer: $LETTERS'") && m.contains("e.g. 'Answer: A, C'"));
    }

    #[test]
    fn humaneval_prompt_fences_the_stub_and_asks_for_a_python_block() {
        assert_eq!(
            humaneval("def f(x):\n    \"\"\"Doc.\"\"\"\n"),
            "Write a solution to the following problem and make sure that it passes the tests:\n\
             ```python\ndef f(x):\n    \"\"\"Doc.\"\"\"\n```\n\n\
             Reply with the completed function, signature included, in a single ```python code \
             block."
        );
    }

    #[test]
    fn ctibench_prompt_kept_or_completed() {
        let p = "Question ... The last line of your answer should contain only the letter. ";
        assert_eq!(ctibench(p), p);
        assert_eq!(
            ctibench("Map it to a CWE. "),
            format!("Map it to a CWE.\n\n{LAST_LINE_INSTRUCTION}")
        );
    }
}
