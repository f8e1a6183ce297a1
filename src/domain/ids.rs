//! Identifiers with their rules checked once. A [`PersonId`] or [`RoleId`] is
//! the key used in the bot file (`alice`, `qa`); a [`RunId`] is the database
//! id of a run; a [`Platform`] says where a person acted.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(key: impl Into<String>) -> Self {
                $name(key.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

key_type!(
    /// A person's key in the bot file, e.g. `alice`.
    PersonId
);
key_type!(
    /// A role's key in the bot file, e.g. `qa`.
    RoleId
);

/// Whether `key` is usable as an id inside button ids: short lowercase
/// letters, digits, `-` and `_`. Button ids must fit Discord's 100 characters.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 32
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The database id of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a command came from and where a run's messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Slack,
    Discord,
    Shell,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Discord => "discord",
            Platform::Shell => "shell",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "slack" => Some(Platform::Slack),
            "discord" => Some(Platform::Discord),
            "shell" => Some(Platform::Shell),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_lowercase_words() {
        assert!(is_valid_key("qa"));
        assert!(is_valid_key("tech-lead_2"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key("QA"));
        assert!(!is_valid_key("has space"));
        assert!(!is_valid_key("a:b"));
        assert!(!is_valid_key(&"x".repeat(33)));
    }

    #[test]
    fn platforms_round_trip() {
        for p in [Platform::Slack, Platform::Discord, Platform::Shell] {
            assert_eq!(Platform::parse(p.as_str()), Some(p));
        }
        assert_eq!(Platform::parse("irc"), None);
    }
}
