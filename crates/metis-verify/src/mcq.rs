//! Multiple-choice answers: a single letter, or a set of letters where several options are
//! correct (SecEval), compared as exact sets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which answers a question admits: how many options (A, B, … up to Z) and whether several
/// may be chosen at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChoiceSpec {
    /// Number of options; 4 means A–D.
    pub options: u8,
    /// Several letters may be correct together (exact-set match).
    pub multi: bool,
}

impl ChoiceSpec {
    /// Four options, one correct: CTIBench-MCQA, CyberMetric, MMLU, SecBench.
    pub const SINGLE_ABCD: ChoiceSpec = ChoiceSpec {
        options: 4,
        multi: false,
    };
    /// Four options, one or more correct: SecEval.
    pub const MULTI_ABCD: ChoiceSpec = ChoiceSpec {
        options: 4,
        multi: true,
    };

    /// Whether `letter` (upper-case ASCII) names one of the options.
    pub fn allows(&self, letter: char) -> bool {
        letter.is_ascii_uppercase() && (letter as u8 - b'A') < self.options.min(26)
    }

    /// The last allowed letter, e.g. 'D' for four options.
    pub fn last_letter(&self) -> char {
        (b'A' + self.options.clamp(1, 26) - 1) as char
    }
}

/// A set of option letters A–Z. Displays as the letters in order with no separator (`"AC"`),
/// the form SecEval stores its gold answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct LetterSet(u32);

impl LetterSet {
    /// The set holding one letter; `None` if it is not an ASCII letter.
    pub fn single(letter: char) -> Option<Self> {
        let mut s = Self::default();
        s.insert(letter).then_some(s)
    }

    /// Adds a letter (case-insensitive); false if it is not an ASCII letter.
    pub fn insert(&mut self, letter: char) -> bool {
        let upper = letter.to_ascii_uppercase();
        if !upper.is_ascii_uppercase() {
            return false;
        }
        self.0 |= 1 << (upper as u8 - b'A');
        true
    }

    pub fn contains(&self, letter: char) -> bool {
        let upper = letter.to_ascii_uppercase();
        upper.is_ascii_uppercase() && self.0 & (1 << (upper as u8 - b'A')) != 0
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The letters in alphabetical order.
    pub fn letters(&self) -> impl Iterator<Item = char> + '_ {
        (0u8..26)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| (b'A' + i) as char)
    }

    /// The first letter that `spec` does not allow, if any.
    pub fn first_outside(&self, spec: &ChoiceSpec) -> Option<char> {
        self.letters().find(|&c| !spec.allows(c))
    }
}

impl fmt::Display for LetterSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.letters().try_for_each(|c| write!(f, "{c}"))
    }
}

/// Error for a gold answer that is not a list of option letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a set of option letters: {0:?}")]
pub struct LetterSetError(pub String);

impl FromStr for LetterSet {
    type Err = LetterSetError;

    /// Accepts `"B"`, `"b"`, `"AC"`, `"A,C"`, `"A, C"`, `"[A, C]"` (dataset gold forms).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = LetterSet::default();
        for c in s.chars() {
            match c {
                c if c.is_ascii_alphabetic() => {
                    set.insert(c);
                }
                ',' | ' ' | '[' | ']' | '"' | '\'' | ';' => {}
                _ => return Err(LetterSetError(s.to_owned())),
            }
        }
        // A run of letters only makes sense as a set if no letter repeats and the text is short.
        let letters_written = s.chars().filter(|c| c.is_ascii_alphabetic()).count();
        if set.is_empty() || letters_written != set.len() {
            return Err(LetterSetError(s.to_owned()));
        }
        Ok(set)
    }
}

impl Serialize for LetterSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LetterSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Exact-set grading: correct only when the chosen letters are exactly the gold letters.
pub fn is_correct(predicted: LetterSet, gold: LetterSet) -> bool {
    predicted == gold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_sets_parse_and_display() {
        assert_eq!("AC".parse::<LetterSet>().unwrap().to_string(), "AC");
        assert_eq!("c, a".parse::<LetterSet>().unwrap().to_string(), "AC");
        assert_eq!("b".parse::<LetterSet>().unwrap().to_string(), "B");
        assert!("".parse::<LetterSet>().is_err());
        assert!("AA".parse::<LetterSet>().is_err());
        assert!("A-1".parse::<LetterSet>().is_err());
    }

    #[test]
    fn spec_bounds() {
        let s = ChoiceSpec::SINGLE_ABCD;
        assert!(s.allows('A') && s.allows('D') && !s.allows('E') && !s.allows('a'));
        assert_eq!(s.last_letter(), 'D');
        let set: LetterSet = "AE".parse().unwrap();
        assert_eq!(set.first_outside(&s), Some('E'));
    }

    #[test]
    fn exact_set_match() {
        let gold: LetterSet = "AC".parse().unwrap();
        assert!(is_correct("CA".parse().unwrap(), gold));
        assert!(!is_correct("A".parse().unwrap(), gold));
        assert!(!is_correct("ACD".parse().unwrap(), gold));
    }
}
