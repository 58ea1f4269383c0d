//! Users: the sign-in identity and its session version.

use chrono::{DateTime, Utc};
use ledgerflow_domain::{Email, PersonName, Role, UserId};
use mongodb::bson::DateTime as BsonDateTime;
use serde::{Deserialize, Serialize};

use super::{field, from_bson_time};
use crate::StoreError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: BsonDateTime,
    /// Bumped to end every session (see [`UserRecord::session_version`]); absent on users
    /// stored before there were sessions to end, which is version 0.
    #[serde(default)]
    pub session_version: i64,
}

/// A user as stored, including the password hash (which never leaves the gateway).
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub email: Email,
    pub name: Option<PersonName>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Every token carries the version current when it was issued and is honoured only while
    /// it still is: bumping it (sign-out, a new SYSTEM password) ends every session at once.
    pub session_version: i64,
}

impl TryFrom<UserDoc> for UserRecord {
    type Error = StoreError;
    fn try_from(d: UserDoc) -> Result<Self, StoreError> {
        const C: &str = "users";
        Ok(Self {
            id: field(C, &d.id, &d.id)?,
            email: field(C, &d.id, &d.email)?,
            name: d.name.as_deref().map(|n| field(C, &d.id, n)).transpose()?,
            role: d.role,
            password_hash: d.password_hash,
            created_at: from_bson_time(d.created_at),
            session_version: d.session_version,
        })
    }
}
