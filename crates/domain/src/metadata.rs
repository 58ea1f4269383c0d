//! Metadata: a client's own labels on a transaction or an account (an order number, a
//! customer reference), as an object of string values that can be searched by exact value.
//!
//! Parsed once at every edge (an HTTP body, a queue command, a stored document) by
//! [`Metadata::from_json_value`] or [`Metadata::from_pairs`], which refuse precisely what is
//! wrong: which key, and why. Past the edge every key and value is known to fit.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

use crate::DomainError;
use crate::transaction::is_invisible;

/// One key: 1 to 64 characters of `A-Z a-z 0-9 _ . -`. The restricted alphabet keeps a key
/// usable as a query parameter's name (`metadata.<key>=`) without escaping, and keeps `=` out
/// of keys, which makes each stored search term `key=value` split one way only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MetadataKey(String);

impl MetadataKey {
    pub const MAX_CHARS: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MetadataKey {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if s.is_empty() || s.len() > Self::MAX_CHARS || !s.chars().all(allowed) {
            return Err(DomainError::invalid(
                "metadata",
                format!(
                    "key {} must be 1 to {} characters of A-Z, a-z, 0-9, '_', '.' and '-'",
                    quoted(s),
                    Self::MAX_CHARS
                ),
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for MetadataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One value: at most 512 characters, none of them control or invisible characters (the
/// rule of [`crate::Description`], newline included: a value is a label, matched exactly, and
/// a hidden character would make two values that read alike different).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MetadataValue(String);

impl MetadataValue {
    pub const MAX_CHARS: usize = 512;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `value` as the value of `key`, or why not.
    pub fn parse(key: &str, value: &str) -> Result<Self, DomainError> {
        if value.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::invalid(
                "metadata",
                format!("value of {} must be at most {} characters", quoted(key), Self::MAX_CHARS),
            ));
        }
        if value.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err(DomainError::invalid(
                "metadata",
                format!(
                    "value of {} must not contain control or invisible characters (format, bidirectional, \
                     zero-width, private-use, unassigned, line and paragraph separators)",
                    quoted(key)
                ),
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// A key as quoted in a refusal: at most 64 characters of it, escaped, so that a refusal of a
/// huge or hostile key stays short and readable.
fn quoted(key: &str) -> String {
    let shown: String = key.chars().take(MetadataKey::MAX_CHARS).collect();
    let ellipsis = if shown.len() < key.len() { "…" } else { "" };
    format!("{:?}{ellipsis}", shown)
}

/// At most 16 keys, each with a value ([`MetadataKey`], [`MetadataValue`]), in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<MetadataKey, MetadataValue>);

impl Metadata {
    pub const MAX_KEYS: usize = 16;

    /// Reads a JSON value: an object of at most 16 string values.
    pub fn from_json_value(value: &Value) -> Result<Self, DomainError> {
        let Value::Object(object) = value else {
            return Err(DomainError::invalid("metadata", "must be an object of string values"));
        };
        let mut pairs = Vec::with_capacity(object.len());
        for (key, value) in object {
            let Value::String(value) = value else {
                return Err(DomainError::invalid("metadata", format!("value of {} must be a string", quoted(key))));
            };
            pairs.push((key.as_str(), value.as_str()));
        }
        Self::from_pairs(pairs)
    }

    /// Reads keys and values (a stored document's, or a JSON object's).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, DomainError> {
        let mut map = BTreeMap::new();
        for (key, value) in pairs {
            let parsed: MetadataKey = key.parse()?;
            let value = MetadataValue::parse(key, value)?;
            if map.insert(parsed, value).is_some() {
                return Err(DomainError::invalid("metadata", format!("key {} appears twice", quoted(key))));
            }
            if map.len() > Self::MAX_KEYS {
                return Err(DomainError::invalid("metadata", format!("must have at most {} keys", Self::MAX_KEYS)));
            }
        }
        Ok(Self(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `None` for no keys: on a transaction, `{}` is the same as no metadata (and keeps the
    /// fingerprint of a request without any).
    pub fn non_empty(self) -> Option<Self> {
        (!self.is_empty()).then_some(self)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&MetadataKey, &MetadataValue)> {
        self.0.iter()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v.as_str())
    }

    /// One search term per key, `key=value`: what one multikey index keeps, so that a search
    /// by any key's exact value is one index lookup. `=` is in no key, so a term names its
    /// key and value one way only.
    pub fn search_terms(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| search_term(k, v)).collect()
    }

    /// The unambiguous text the fingerprint of a request covers (its JSON, keys in order).
    pub(crate) fn fingerprint_part(&self) -> String {
        format!("metadata:{}", serde_json::to_string(&self.0).unwrap_or_default())
    }
}

/// The search term of one key's value (see [`Metadata::search_terms`]).
pub fn search_term(key: &MetadataKey, value: &MetadataValue) -> String {
    format!("{}={}", key.as_str(), value.as_str())
}

impl<'de> serde::Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_json_value(&Value::deserialize(d)?).map_err(|e| crate::fields::refusal(&e))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refusal(v: Value) -> String {
        Metadata::from_json_value(&v).expect_err(&v.to_string()).to_string()
    }

    #[test]
    fn metadata_reads_keys_and_values_in_key_order() {
        let m = Metadata::from_json_value(&json!({"order": "A-17", "customer.ref": "c 42", "é": "x"}).clone());
        assert!(m.is_err(), "a key outside the alphabet is refused");
        let m = Metadata::from_json_value(&json!({"order": "A-17", "customer.ref": "café 😀"})).expect("valid");
        assert_eq!(m.search_terms(), vec!["customer.ref=café 😀".to_owned(), "order=A-17".to_owned()]);
        assert_eq!(m.get("order"), Some("A-17"));
        assert_eq!(serde_json::to_value(&m).expect("json"), json!({"customer.ref": "café 😀", "order": "A-17"}));
        assert!(Metadata::from_json_value(&json!({})).expect("empty").non_empty().is_none());
    }

    #[test]
    fn metadata_is_refused_for_what_is_wrong_with_it_by_key() {
        assert_eq!(refusal(json!([])), "metadata must be an object of string values");
        assert_eq!(refusal(json!({"n": 5})), "metadata value of \"n\" must be a string");
        assert!(refusal(json!({"": "x"})).contains("key \"\" must be 1 to 64 characters"));
        assert!(refusal(json!({"a b": "x"})).contains("key \"a b\" must be 1 to 64"));
        assert!(refusal(json!({"a=b": "x"})).contains("key \"a=b\""));
        assert!(refusal(json!({"k".repeat(65): "x"})).contains("must be 1 to 64"));
        assert!(Metadata::from_json_value(&json!({"k".repeat(64): "v".repeat(512)})).is_ok());
        assert_eq!(
            refusal(json!({"note": "é".repeat(513)})),
            "metadata value of \"note\" must be at most 512 characters"
        );
        for hidden in ["a\nb", "a\u{7}", "refund \u{202e}100", "a\u{200b}b", "\u{e000}"] {
            assert!(refusal(json!({"note": hidden})).contains("value of \"note\" must not contain"), "{hidden:?}");
        }
        let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(refusal(Value::Object(many)), "metadata must have at most 16 keys");
        assert!(Metadata::from_pairs([("k", "1"), ("k", "2")]).expect_err("twice").to_string().contains("twice"));
    }
}
