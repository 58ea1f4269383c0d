//! Reading fields out of an untrusted JSON object with errors that name the field. Shared by
//! the HTTP edge and the queue edge so both report bad input the same way.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::DomainError;

/// Why a body is not a JSON object we will read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// Not JSON, trailing bytes, or a key that appears twice in the object.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("not a JSON object")]
    NotAnObject,
}

/// Parses a body that must be one JSON object, refusing a key that appears twice in it.
/// `{"amount":100,"amount":5}` means 100 to some parsers and 5 to others; which amount moves
/// must not depend on who reads the message, so neither is taken.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ObjectError> {
    let syntax = |e: serde_json::Error| ObjectError::Syntax(e.to_string());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de.deserialize_any(UniqueKeys).map_err(syntax)?;
    de.end().map_err(syntax)?;
    parsed.ok_or(ObjectError::NotAnObject)
}

/// Visits any JSON value: an object becomes `Some` map (its first duplicate key an error),
/// anything else is read to its end and becomes `None`.
struct UniqueKeys;

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("key `{key}` appears twice")));
            }
            let value = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Some(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        while access.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A string field that may be absent or `null`; any other type is an error.
pub fn opt_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, DomainError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DomainError::invalid(field, "must be a string")),
    }
}

/// A string field that must be present.
pub fn req_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, DomainError> {
    opt_str(obj, field)?.ok_or(DomainError::Missing { field })
}

/// An optional string field parsed into a domain type.
pub fn opt_parse<T>(obj: &Map<String, Value>, field: &'static str) -> Result<Option<T>, DomainError>
where
    T: std::str::FromStr<Err = DomainError>,
{
    opt_str(obj, field)?.map(str::parse).transpose()
}

/// A required string field parsed into a domain type.
pub fn req_parse<T>(obj: &Map<String, Value>, field: &'static str) -> Result<T, DomainError>
where
    T: std::str::FromStr<Err = DomainError>,
{
    req_str(obj, field)?.parse()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parse_object_takes_one_object_and_refuses_a_repeated_key() {
        let map = parse_object(br#"{"amount":100,"nested":{"a":[1,{"b":null}]}}"#).expect("an object");
        assert_eq!(Value::Object(map), json!({"amount": 100, "nested": {"a": [1, {"b": null}]}}));
        let twice = parse_object(br#"{"amount":100,"to":"x","amount":5}"#).expect_err("a repeated key");
        assert!(matches!(&twice, ObjectError::Syntax(m) if m.contains("`amount` appears twice")), "{twice:?}");
        for other in [&b"[1,{\"a\":2}]"[..], b"\"x\"", b"1", b"-1", b"1.5", b"true", b"null"] {
            assert_eq!(parse_object(other), Err(ObjectError::NotAnObject), "{}", String::from_utf8_lossy(other));
        }
        for broken in [&b""[..], b"{", b"{\"a\":1} x", b"{\"a\":1}{}", b"{'a':1}"] {
            assert!(matches!(parse_object(broken), Err(ObjectError::Syntax(_))), "{}", String::from_utf8_lossy(broken));
        }
    }
}
