//! Reading untrusted JSON: one object without repeated keys, read field by field (the queue
//! edge), or deserialised into domain types whose refusals are the domain's own (the HTTP
//! edge: every string-borne domain type's `Deserialize` goes through its `FromStr`, here).

use std::fmt;
use std::str::FromStr;

use serde::Deserializer;
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
            let value = access.next_value_seed(UniqueValue)?;
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

/// Reads any JSON value as `serde_json::Value` does, but refuses a key that appears twice in
/// any object within it: a leg's `{"amount":5,"amount":500}` or a hold's
/// `{"timeoutSeconds":1,"timeoutSeconds":2}` is as ambiguous as a repeated top-level key.
struct UniqueValue;

impl<'de> de::DeserializeSeed<'de> for UniqueValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("key `{key}` appears twice")));
            }
            map.insert(key, access.next_value_seed(UniqueValue)?);
        }
        Ok(Value::Object(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = access.next_element_seed(UniqueValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A string field that may be absent or `null`; any other type is an error.
pub(crate) fn opt_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, DomainError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DomainError::invalid(field, NOT_A_STRING)),
    }
}

/// A string field that must be present.
pub(crate) fn req_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, DomainError> {
    opt_str(obj, field)?.ok_or(DomainError::Missing { field })
}

/// Deserialises a value written as a string through `T`'s `FromStr`: for `deserialize_with`,
/// and for the `Deserialize` of every string-borne domain type (below). Anything but a string
/// is refused as "must be a string".
///
/// A refusal says what is wrong with the value, not which field held it (the domain's
/// [`DomainError::reason`]), as serde's own errors do: the field is named by whoever knows it,
/// e.g. the gateway's request reader, which reports `fromAccount must be a UUID` where
/// `AccountId` alone would say `accountId`.
pub fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = DomainError>,
{
    d.deserialize_any(StrVisitor(|s: &str| s.parse::<T>()))
}

/// Deserialises any JSON string as it is, refusing other values as "must be a string" (not
/// serde's "invalid type: …, expected a string"): for fields that are not domain values yet,
/// such as the password a sign-in is checked with.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(StrVisitor(|s: &str| Ok::<_, DomainError>(s.to_owned())))
}

/// A serde error carrying a domain refusal: its reason only (see [`from_str`]).
pub(crate) fn refusal<E: de::Error>(e: &DomainError) -> E {
    E::custom(e.reason())
}

/// The visitor of [`from_str`] and [`string`]: a string through `parse`, anything else refused.
struct StrVisitor<F>(F);

const NOT_A_STRING: &str = "must be a string";

impl<'de, T, F: FnOnce(&str) -> Result<T, DomainError>> Visitor<'de> for StrVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.0)(s).map_err(|e| refusal(&e))
    }

    // Anything else is refused. Deserialised through `deserialize_any`: serde_json's `Value`
    // answers `deserialize_str` of a number with its own "invalid type" error, without
    // asking the visitor.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<T, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<T, D::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<T, D::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }
}

/// `Deserialize` through `FromStr` (see [`from_str`]) for domain types written as strings.
macro_rules! deserialize_from_str {
    ($($name:ty),+ $(,)?) => {
        $(
            impl<'de> serde::Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    from_str(d)
                }
            }
        )+
    };
}

deserialize_from_str!(
    crate::AccountId,
    crate::UserId,
    crate::TransactionId,
    crate::EntryId,
    crate::IdempotencyKey,
    crate::Initiator,
    crate::Currency,
    crate::Description,
    crate::AccountStatus,
    crate::TransactionStatus,
    crate::FailureReason,
    crate::TransferKind,
    crate::Email,
    crate::Password,
    crate::PersonName,
    crate::Moment,
    crate::WebhookId,
    crate::EventType,
    crate::webhooks::WebhookUrl,
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{AccountId, AccountStatus, Amount, Currency, Password};

    #[test]
    fn parse_object_takes_one_object_and_refuses_a_repeated_key() {
        let map = parse_object(br#"{"amount":100,"nested":{"a":[1,{"b":null}]}}"#).expect("an object");
        assert_eq!(Value::Object(map), json!({"amount": 100, "nested": {"a": [1, {"b": null}]}}));
        let twice = parse_object(br#"{"amount":100,"to":"x","amount":5}"#).expect_err("a repeated key");
        assert!(matches!(&twice, ObjectError::Syntax(m) if m.contains("`amount` appears twice")), "{twice:?}");
        // At any depth: in a leg of a journal, in a hold's options, in an object in an array.
        for nested in [
            &br#"{"legs":[{"amount":5,"amount":500}]}"#[..],
            br#"{"hold":{"timeoutSeconds":1,"timeoutSeconds":2}}"#,
            br#"{"a":[1,[{"b":{"c":1,"c":2}}]]}"#,
        ] {
            let twice = parse_object(nested).expect_err("a repeated nested key");
            assert!(matches!(&twice, ObjectError::Syntax(m) if m.contains("appears twice")), "{twice:?}");
        }
        let numbers = parse_object(br#"{"n":[-1,18446744073709551615,1.5,1e3]}"#).expect("numbers");
        assert_eq!(Value::Object(numbers), json!({"n": [-1, 18_446_744_073_709_551_615_u64, 1.5, 1000.0]}));
        for other in [&b"[1,{\"a\":2}]"[..], b"\"x\"", b"1", b"-1", b"1.5", b"true", b"null"] {
            assert_eq!(parse_object(other), Err(ObjectError::NotAnObject), "{}", String::from_utf8_lossy(other));
        }
        for broken in [&b""[..], b"{", b"{\"a\":1} x", b"{\"a\":1}{}", b"{'a':1}"] {
            assert!(matches!(parse_object(broken), Err(ObjectError::Syntax(_))), "{}", String::from_utf8_lossy(broken));
        }
    }

    /// The refusal serde_json reports for `json` read as `T`.
    fn refusal<T: serde::de::DeserializeOwned>(json: &str) -> String {
        match serde_json::from_str::<T>(json) {
            Ok(_) => panic!("{json} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn string_borne_domain_types_deserialise_through_from_str_with_its_reason_only() {
        let id: AccountId = serde_json::from_value(json!("67E55044-10B1-426F-9247-BB680E5FE0C8")).unwrap();
        assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        let status: AccountStatus = serde_json::from_value(json!("CLOSED")).unwrap();
        assert_eq!(status, AccountStatus::Closed);
        // Value by value, so that whoever knows the field names it.
        let from_value = |value: Value| serde_json::from_value::<AccountId>(value).map(|_| ()).unwrap_err().to_string();
        assert_eq!(from_value(json!("67e5504410b1426f9247bb680e5fe0c8")), "must be a UUID");
        for not_a_string in [json!(7), json!(1.5), json!(true), json!(null), json!([]), json!({})] {
            assert_eq!(from_value(not_a_string), "must be a string");
        }
        assert_eq!(
            serde_json::from_value::<Currency>(json!("usd")).map(|_| ()).unwrap_err().to_string(),
            "must be an ISO 4217 code such as USD or EUR"
        );
        assert!(refusal::<Password>(r#""short""#).starts_with("must be at least 8 characters at line 1"));
        assert!(refusal::<AccountStatus>(r#""FROZEN""#).starts_with("must be one of ACTIVE, SUSPENDED, CLOSED"));
    }

    #[test]
    fn string_takes_any_string_and_nothing_else() {
        #[derive(serde::Deserialize)]
        struct Login {
            #[serde(deserialize_with = "string")]
            password: String,
        }
        let read: Login = serde_json::from_value(json!({"password": "short"})).unwrap();
        assert_eq!(read.password, "short");
        let refused = serde_json::from_value::<Login>(json!({"password": 12345678})).map(|_| ()).unwrap_err();
        assert_eq!(refused.to_string(), "must be a string");
    }

    #[test]
    fn amounts_deserialise_by_the_rules_of_from_json() {
        assert_eq!(serde_json::from_str::<Amount>("1500").map(Amount::minor).unwrap(), 1500);
        for written in ["1e3", "100.0", "1.5", "-0", "0", "-5", "\"100\"", "true", "99999999999999999999999"] {
            let value: Value = serde_json::from_str(written).unwrap();
            let expected = Amount::from_json_value(&value).map(|_| ()).unwrap_err();
            let got = serde_json::from_value::<Amount>(value).map(|_| ()).unwrap_err().to_string();
            assert_eq!(got, expected.reason(), "{written}");
        }
    }
}
