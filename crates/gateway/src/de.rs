//! Reads a request's named values, a JSON body's fields or a query string's parameters, into
//! its request type (a struct deriving `Deserialize`), with errors that are [`FieldError`]s:
//! structured, and naming the field.
//!
//! Deserialising straight from serde_json would report a refused value as text without the
//! field's name, a missing field only after all the others were read, and an unknown name
//! wherever it came. Here:
//! - a name the type does not have is refused before any value is read (the first such name,
//!   in the request's order), with the names the type has (serde's list of its fields);
//! - the type's fields are read in the order it declares them, an absent or `null` one as
//!   missing (`None` if it is an `Option`), so the first bad field in that order is reported,
//!   whether it is missing or refused;
//! - a refused value is the domain's refusal under the field's name: `DomainError::Invalid`
//!   whose reason is the serde message of the field's type, which for a domain type is the
//!   domain's reason alone (see `ledgerflow_domain::fields`).

use ledgerflow_domain::DomainError;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

use crate::error::FieldError;

/// Deserialises the request type `T` from a request's named values.
pub fn from_values<T: DeserializeOwned>(values: Map<String, Value>) -> Result<T, FieldError> {
    T::deserialize(Values(values))
}

/// The named values of one request, as a deserializer of structs only.
struct Values(Map<String, Value>);

impl<'de> Deserializer<'de> for Values {
    type Error = FieldError;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        let mut values = self.0;
        if let Some(name) = values.keys().find(|name| !fields.contains(&name.as_str())) {
            return Err(FieldError::Unknown { name: name.clone(), takes: fields });
        }
        let in_order: Vec<_> = fields
            .iter()
            .map(|&field| (field, values.get_mut(field).map(Value::take).filter(|value| !value.is_null())))
            .collect();
        visitor.visit_map(Fields { fields: in_order.into_iter(), value: None })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, FieldError> {
        Err(FieldError::Other("a request type must be a struct with named fields".into()))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// Every field of the type, in its order, with its value if the request gave one.
struct Fields {
    fields: std::vec::IntoIter<(&'static str, Option<Value>)>,
    /// The field whose key was just read, and its value.
    value: Option<(&'static str, Option<Value>)>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = FieldError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, FieldError> {
        let Some((field, value)) = self.fields.next() else { return Ok(None) };
        self.value = Some((field, value));
        seed.deserialize(BorrowedStrDeserializer::new(field)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, FieldError> {
        match self.value.take() {
            Some((field, Some(value))) => seed
                .deserialize(value)
                .map_err(|e| FieldError::Domain(DomainError::Invalid { field, reason: e.to_string() })),
            Some((field, None)) => seed.deserialize(Absent(field)),
            None => Err(FieldError::Other("a value was asked for before its key".into())),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// The value of a field the request did not give (or gave as `null`): `None` for an
/// `Option`, missing for anything else.
struct Absent(&'static str);

impl<'de> Deserializer<'de> for Absent {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, FieldError> {
        Err(FieldError::Domain(DomainError::Missing { field: self.0 }))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_none()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The names a request type takes (its serde field names), as the request reader refuses any
/// other: for holding each type to its OpenAPI description.
#[cfg(test)]
pub fn names<T: DeserializeOwned>() -> &'static [&'static str] {
    // No request type has a field of this name, so the reader refuses it with the ones it has.
    let values = Map::from_iter([("\0".to_owned(), Value::Null)]);
    match from_values::<T>(values) {
        Err(FieldError::Unknown { takes, .. }) => takes,
        other => panic!("not a request type: {other:?}", other = other.map(|_| ())),
    }
}

#[cfg(test)]
mod tests {
    use ledgerflow_domain::{AccountId, Amount, Currency, IdempotencyKey};
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Request {
        to_account: AccountId,
        amount: Amount,
        currency: Option<Currency>,
        idempotency_key: IdempotencyKey,
    }

    fn read(value: Value) -> Result<Request, FieldError> {
        let Value::Object(map) = value else { panic!("an object") };
        from_values(map)
    }

    fn refused(value: Value) -> FieldError {
        read(value).expect_err("refused")
    }

    fn invalid(field: &'static str, reason: &str) -> FieldError {
        FieldError::Domain(DomainError::Invalid { field, reason: reason.to_owned() })
    }

    const ID: &str = "0190a0a0-0000-7000-8000-000000000001";

    #[test]
    fn reads_domain_values_and_absent_or_null_options_as_none() {
        let read = read(json!({"toAccount": ID, "amount": 5, "currency": null, "idempotencyKey": "k"})).unwrap();
        assert_eq!((read.to_account.to_string(), read.amount.minor(), read.currency), (ID.to_owned(), 5, None));
        assert_eq!(read.idempotency_key.as_str(), "k");
        let read = self::read(json!({"toAccount": ID, "amount": 5, "idempotencyKey": "k", "currency": "EUR"})).unwrap();
        assert_eq!(read.currency.map(Currency::code), Some("EUR"));
    }

    #[test]
    fn an_unknown_name_is_refused_first_with_the_names_taken() {
        let takes: &[&str] = &["toAccount", "amount", "currency", "idempotencyKey"];
        // Before the bad amount, and the first unknown one in the request's order.
        let got = refused(json!({"amount": "x", "zzz": 1, "aaa": 2}));
        assert_eq!(got, FieldError::Unknown { name: "zzz".into(), takes });
        assert_eq!(names::<Request>(), takes);
    }

    #[test]
    fn fields_are_judged_in_declared_order_missing_or_refused() {
        let missing = |field| FieldError::Domain(DomainError::Missing { field });
        assert_eq!(refused(json!({})), missing("toAccount"));
        assert_eq!(refused(json!({"toAccount": null})), missing("toAccount"));
        // The first bad field in the type's order, whatever the body's order.
        assert_eq!(refused(json!({"idempotencyKey": "", "toAccount": ID})), missing("amount"));
        assert_eq!(refused(json!({"amount": 0, "toAccount": "nope"})), invalid("toAccount", "must be a UUID"));
        let got = refused(json!({"toAccount": ID, "amount": 1, "idempotencyKey": "", "currency": "usd"}));
        assert_eq!(got, invalid("currency", "must be an ISO 4217 code such as USD or EUR"));
    }

    #[test]
    fn a_refusal_is_the_domains_under_the_fields_name() {
        let base = json!({"toAccount": ID, "amount": 1, "idempotencyKey": "k"});
        let with = |field: &str, value: Value| {
            let mut body = base.clone();
            body[field] = value;
            refused(body)
        };
        assert_eq!(with("toAccount", json!(42)), invalid("toAccount", "must be a string"));
        assert_eq!(with("toAccount", json!([ID])), invalid("toAccount", "must be a string"));
        assert_eq!(with("idempotencyKey", json!("")), invalid("idempotencyKey", "must be 1 to 128 characters"));
        assert_eq!(with("amount", json!("100")), invalid("amount", "must be a JSON integer of minor units"));
        assert_eq!(
            with("amount", json!(1.5)),
            invalid("amount", "must be an integer number of minor units, not a fraction")
        );
        assert_eq!(with("amount", json!(-5)), invalid("amount", "must be a positive integer of minor units"));
    }

    #[test]
    fn only_structs_are_request_types() {
        assert!(matches!(from_values::<Vec<u8>>(Map::new()), Err(FieldError::Other(_))));
        assert!(matches!(from_values::<Map<String, Value>>(Map::new()), Err(FieldError::Other(_))));
    }
}
