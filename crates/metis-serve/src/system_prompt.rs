//! The deployment's system prompt and the policy deciding how it combines with a client's
//! own system messages.
//!
//! | policy | client sent a system message | client sent none | `"metis_system_prompt": false` |
//! |---|---|---|---|
//! | `enforce` | replaced by the default | default added | refused (400) |
//! | `prepend-if-absent` | client's kept, default not added | default added | refused (400) |
//! | `allow-override` | client's kept, default not added | default added | no system prompt at all |
//!
//! So `prepend-if-absent` guarantees that *some* system prompt is always present, while
//! `allow-override` also lets a client run the model with none.

use std::str::FromStr;

use metis_engine::chat::Message;
use sha2::{Digest, Sha256};

/// The default prompt shipped with the server.
pub const DEFAULT_SYSTEM_PROMPT: &str = include_str!("../assets/system_prompt.txt");

/// How the default system prompt combines with client system messages (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SystemPromptPolicy {
    /// Client system messages are dropped and the default is always used.
    Enforce,
    /// The default is added when the client gave no system message.
    #[default]
    PrependIfAbsent,
    /// Like `PrependIfAbsent`, and a client may also opt out of any system prompt.
    AllowOverride,
}

impl FromStr for SystemPromptPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Self::Enforce),
            "prepend-if-absent" => Ok(Self::PrependIfAbsent),
            "allow-override" => Ok(Self::AllowOverride),
            other => Err(format!(
                "unknown system prompt policy {other:?} (enforce, prepend-if-absent, allow-override)"
            )),
        }
    }
}

/// Why the policy refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this server's system prompt policy does not allow disabling the system prompt")]
pub struct OptOutRefused;

/// Applies `policy` to a conversation. `opt_out` is the client's `metis_system_prompt:
/// false`. Returns the messages to render and the sha256 hex of the effective system prompt
/// (all system message texts joined by a blank line; None when there is none), for the audit
/// log.
pub fn apply(
    messages: Vec<Message>,
    default_prompt: &str,
    policy: SystemPromptPolicy,
    opt_out: bool,
) -> Result<(Vec<Message>, Option<String>), OptOutRefused> {
    let has_system = messages.iter().any(|m| m.role == "system");
    let with_default = |rest: Vec<Message>| {
        let mut out = Vec::with_capacity(rest.len() + 1);
        out.push(Message::system(default_prompt));
        out.extend(rest);
        out
    };
    let out = match policy {
        _ if opt_out && policy != SystemPromptPolicy::AllowOverride => return Err(OptOutRefused),
        SystemPromptPolicy::AllowOverride if opt_out => messages,
        SystemPromptPolicy::Enforce => with_default(
            messages
                .into_iter()
                .filter(|m| m.role != "system")
                .collect(),
        ),
        SystemPromptPolicy::PrependIfAbsent | SystemPromptPolicy::AllowOverride => {
            if has_system {
                messages
            } else {
                with_default(messages)
            }
        }
    };
    let system: Vec<&str> = out
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let hash = (!system.is_empty()).then(|| sha256_hex(system.join("\n\n").as_bytes()));
    Ok((out, hash))
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(system: bool) -> Vec<Message> {
        let mut v = Vec::new();
        if system {
            v.push(Message::system("client"));
        }
        v.push(Message::user("hi"));
        v
    }

    fn roles_and_system(m: &[Message]) -> (usize, Option<&str>) {
        (
            m.len(),
            m.iter()
                .find(|m| m.role == "system")
                .map(|m| m.content.as_str()),
        )
    }

    #[test]
    fn policies() {
        use SystemPromptPolicy::*;
        let (m, h) = apply(conv(true), "D", Enforce, false).unwrap();
        assert_eq!(roles_and_system(&m), (2, Some("D")));
        assert_eq!(h.unwrap(), sha256_hex(b"D"));
        let (m, _) = apply(conv(false), "D", Enforce, false).unwrap();
        assert_eq!(roles_and_system(&m), (2, Some("D")));
        let (m, _) = apply(conv(true), "D", PrependIfAbsent, false).unwrap();
        assert_eq!(roles_and_system(&m), (2, Some("client")));
        let (m, _) = apply(conv(false), "D", PrependIfAbsent, false).unwrap();
        assert_eq!(roles_and_system(&m), (2, Some("D")));
        let (m, h) = apply(conv(false), "D", AllowOverride, true).unwrap();
        assert_eq!(roles_and_system(&m), (1, None));
        assert!(h.is_none());
        let (m, _) = apply(conv(true), "D", AllowOverride, false).unwrap();
        assert_eq!(roles_and_system(&m), (2, Some("client")));
        assert!(apply(conv(false), "D", PrependIfAbsent, true).is_err());
        assert!(apply(conv(false), "D", Enforce, true).is_err());
        assert!(DEFAULT_SYSTEM_PROMPT.contains("Metis"));
    }
}
