//! The query string of `GET /transactions`: the typed filters of `requests::TransactionQuery`,
//! and `metadata.<key>=<value>` filters, whose names are the client's own keys.
//!
//! The metadata parameters are taken out first, each name and value read through the
//! domain's `MetadataKey` and `MetadataValue` (a bad one refused by its parameter's name);
//! every other parameter goes to the ordinary query reader, which refuses names it does not
//! know. A parameter given twice is refused either way.

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use ledgerflow_domain::{Amount, DomainError, MetadataKey, MetadataValue, fields};
use ledgerflow_store::SearchFilter;
use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::requests::TransactionQuery;

/// The prefix of a metadata filter's name.
pub const METADATA_PREFIX: &str = "metadata.";

/// A listing's query: its typed parameters and its metadata filters, in the order given.
pub struct SearchQuery {
    query: Query<TransactionQuery>,
    metadata: Vec<(MetadataKey, MetadataValue)>,
}

impl<S: Send + Sync> FromRequestParts<S> for SearchQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::from_pairs(crate::extract::query_pairs(parts, state).await?)
    }
}

impl SearchQuery {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let (labels, others): (Vec<_>, Vec<_>) =
            pairs.into_iter().partition(|(name, _)| name.starts_with(METADATA_PREFIX));
        let query = Query::from_pairs(others)?;
        let mut metadata: Vec<(MetadataKey, MetadataValue)> = Vec::with_capacity(labels.len());
        for (name, value) in labels {
            let refused = |e: DomainError| ApiError::BadParameter { name: name.clone(), reason: e.reason().to_owned() };
            let key = &name[METADATA_PREFIX.len()..];
            let parsed: MetadataKey = key.parse().map_err(refused)?;
            if metadata.iter().any(|(k, _)| *k == parsed) {
                return Err(ApiError::Repeated(name));
            }
            let value = MetadataValue::parse(key, &value).map_err(refused)?;
            metadata.push((parsed, value));
        }
        Ok(Self { query, metadata })
    }

    /// The typed parameters and the search filter they make with the metadata filters, or
    /// the first parameter refused.
    pub fn read(self) -> ApiResult<(TransactionQuery, SearchFilter)> {
        let query = self.query.read()?;
        let created_from = query.created_from.map(Instant::get);
        let created_to = query.created_to.map(Instant::get);
        if let (Some(from), Some(to)) = (created_from, created_to)
            && from >= to
        {
            return Err(invalid(
                "createdTo",
                "must be later than createdFrom (the window is createdFrom ≤ createdAt < createdTo)",
            ));
        }
        let min_amount = query.min_amount.map(AmountBound::get);
        let max_amount = query.max_amount.map(AmountBound::get);
        if let (Some(min), Some(max)) = (min_amount, max_amount)
            && min > max
        {
            return Err(invalid("maxAmount", "must not be below minAmount"));
        }
        let filter = SearchFilter { metadata: self.metadata, created_from, created_to, min_amount, max_amount };
        Ok((query, filter))
    }
}

fn invalid(field: &'static str, reason: &str) -> ApiError {
    ApiError::Validation(DomainError::Invalid { field, reason: reason.to_owned() })
}

/// `createdFrom`, `createdTo`: an RFC 3339 timestamp with its offset, e.g.
/// `2026-12-01T00:00:00Z`.
#[derive(Debug, Clone, Copy)]
pub struct Instant(DateTime<Utc>);

impl Instant {
    pub fn get(self) -> DateTime<Utc> {
        self.0
    }
}

impl FromStr for Instant {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        DateTime::parse_from_rfc3339(s).map(|t| Self(t.with_timezone(&Utc))).map_err(|_| DomainError::Invalid {
            field: "createdFrom",
            reason: "must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z".into(),
        })
    }
}

/// `minAmount`, `maxAmount`: integer minor units, as an amount is (1 to 10^15).
#[derive(Debug, Clone, Copy)]
pub struct AmountBound(Amount);

impl AmountBound {
    pub fn get(self) -> Amount {
        self.0
    }
}

impl FromStr for AmountBound {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        let refused = || DomainError::Invalid {
            field: "minAmount",
            reason: format!("must be an integer of minor units from 1 to {}", ledgerflow_domain::MAX_AMOUNT_MINOR),
        };
        let minor = s.parse::<i64>().map_err(|_| refused())?;
        Amount::new(minor).map(Self).map_err(|_| refused())
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::from_str(d)
    }
}

impl<'de> Deserialize<'de> for AmountBound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::from_str(d)
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use serde_json::Value;

    use super::*;

    /// Name and value pairs of a query string (none of these tests needs decoding).
    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    async fn refusal(query: &str) -> (Value, String) {
        let e = match SearchQuery::from_pairs(pairs(query)) {
            Ok(q) => q.read().err().expect("refused"),
            Err(e) => e,
        };
        let response = e.into_response();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        let body: Value = serde_json::from_slice(&bytes).expect("JSON");
        (body["error"]["field"].clone(), body["error"]["message"].as_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn metadata_filters_are_read_beside_the_typed_parameters() {
        let q = SearchQuery::from_pairs(pairs("metadata.order=A-17&kind=HOLD&metadata.batch=7&minAmount=5"));
        let (query, filter) = q.expect("read").read().expect("valid");
        assert_eq!(query.kind.map(|k| k.as_str()), Some("HOLD"));
        let got: Vec<(&str, &str)> = filter.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, vec![("order", "A-17"), ("batch", "7")]);
        assert_eq!(filter.min_amount.map(Amount::minor), Some(5));
    }

    #[tokio::test]
    async fn a_bad_filter_is_refused_by_its_name() {
        let (field, message) = refusal("metadata.a*b=1").await;
        assert_eq!(field, "metadata.a*b");
        assert!(message.starts_with("query parameter `metadata.a*b`: key \"a*b\" must be 1 to 64"), "{message}");
        let (field, message) = refusal(&format!("metadata.note={}", "x".repeat(513))).await;
        assert_eq!((field.as_str(), message.contains("at most 512 characters")), (Some("metadata.note"), true));
        let (field, _) = refusal("metadata.=x").await;
        assert_eq!(field, "metadata.");
        let (field, message) = refusal("metadata.k=1&metadata.k=2").await;
        assert_eq!(
            (field.as_str(), message.as_str()),
            (Some("metadata.k"), "query parameter `metadata.k` is given more than once")
        );
        let (field, message) = refusal("minAmount=0").await;
        assert_eq!(
            (field.as_str(), message.as_str()),
            (Some("minAmount"), "minAmount must be an integer of minor units from 1 to 1000000000000000")
        );
        let (field, message) = refusal("maxAmount=1.5").await;
        assert_eq!((field.as_str(), message.contains("maxAmount must be an integer")), (Some("maxAmount"), true));
        let (field, _) = refusal("minAmount=9&maxAmount=8").await;
        assert_eq!(field, "maxAmount");
        let (field, message) = refusal("createdTo=yesterday").await;
        assert_eq!(
            (field.as_str(), message.as_str()),
            (Some("createdTo"), "createdTo must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z")
        );
        let (field, _) = refusal("createdFrom=2026-12-02T00:00:00Z&createdTo=2026-12-02T00:00:00Z").await;
        assert_eq!(field, "createdTo");
        let (field, message) = refusal("metadata=x").await;
        assert_eq!(field, "metadata");
        assert!(message.contains("is not one this endpoint takes"), "{message}");
    }
}
