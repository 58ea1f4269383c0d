//! Reading fields out of an untrusted JSON object with errors that name the field. Shared by
//! the HTTP edge and the queue edge so both report bad input the same way.

use serde_json::{Map, Value};

use crate::DomainError;

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
