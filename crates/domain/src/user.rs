//! Users: the people (and the one operator role) who hold accounts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::DomainError;

/// An email address, normalised so that one mailbox has one spelling: Unicode NFKC (composed
/// and decomposed accents, fullwidth letters and the like fold together), then lower case
/// (emails identify users case-insensitively). Invisible characters (format, control,
/// private-use, unassigned) are refused: two addresses differing only by a zero-width space
/// would look the same to everyone who reads them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Email {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().nfkc().collect::<String>().to_lowercase();
        let valid = s.len() <= 254
            && s.chars().all(|c| c.general_category_group() != GeneralCategoryGroup::Other)
            && email_address::EmailAddress::is_valid(&s)
            && s.rsplit_once('@').is_some_and(|(_, domain)| domain.contains('.'));
        if valid { Ok(Self(s)) } else { Err(DomainError::invalid("email", "must be a valid email address")) }
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plaintext password on its way to the hasher. Bounded above so hashing cost is bounded.
/// Its `Debug` never prints it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_BYTES: usize = 1024;

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Password {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.chars().count() < Self::MIN_CHARS {
            return Err(DomainError::invalid("password", format!("must be at least {} characters", Self::MIN_CHARS)));
        }
        if s.len() > Self::MAX_BYTES {
            return Err(DomainError::invalid("password", format!("must be at most {} bytes", Self::MAX_BYTES)));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PersonName(String);

impl PersonName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PersonName {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.chars().count() > 100 || s.chars().any(char::is_control) {
            return Err(DomainError::invalid("name", "must be 1 to 100 printable characters"));
        }
        Ok(Self(s.to_owned()))
    }
}

/// What a user may do. USER moves its own money; SYSTEM funds accounts and administers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    User,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::System => "SYSTEM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_and_lowercased() {
        assert_eq!("Alice@Example.COM".parse::<Email>().map(|e| e.0), Ok("alice@example.com".into()));
        for bad in ["", "alice", "alice@", "@example.com", "alice@localhost", "a b@example.com"] {
            assert!(bad.parse::<Email>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_mailbox_has_one_spelling_and_no_invisible_characters() {
        let composed: Email = "jos\u{e9}@example.com".parse().expect("NFC");
        assert_eq!("jose\u{301}@example.com".parse(), Ok(composed.clone()), "NFD folds into NFC");
        assert_eq!("JOS\u{c9}@EXAMPLE.COM".parse(), Ok(composed), "and case with it");
        let fullwidth: Email = "\u{ff21}\u{ff22}c@example.com".parse().expect("fullwidth");
        assert_eq!(fullwidth.as_str(), "abc@example.com");
        for invisible in
            ["a\u{200b}b@example.com", "ab\u{ad}@example.com", "a\u{202e}b@example.com", "a\u{e000}@example.com"]
        {
            assert!(invisible.parse::<Email>().is_err(), "{invisible:?}");
        }
    }

    #[test]
    fn passwords_need_eight_characters_and_are_never_printed() {
        assert!("short".parse::<Password>().is_err());
        let p: Password = "long enough".parse().expect("valid");
        assert_eq!(format!("{p:?}"), "Password(***)");
        assert!("x".repeat(2000).parse::<Password>().is_err());
    }
}
