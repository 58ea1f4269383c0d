//! Users.

use chrono::Utc;
use ledgerflow_domain::{Email, PersonName, Role, UserId};
use mongodb::bson::doc;

use crate::docs::{UserDoc, to_bson_time};
use crate::error::is_duplicate_key;
use crate::{Store, StoreError, UserRecord};

impl Store {
    /// Creates a user; [`StoreError::EmailTaken`] when the (lower-cased) email exists.
    pub async fn insert_user(
        &self,
        email: &Email,
        name: Option<&PersonName>,
        role: Role,
        password_hash: String,
    ) -> Result<UserRecord, StoreError> {
        let doc = UserDoc {
            id: UserId::generate().to_string(),
            email: email.as_str().to_owned(),
            name: name.map(|n| n.as_str().to_owned()),
            role,
            password_hash,
            created_at: to_bson_time(Utc::now()),
        };
        match self.users().insert_one(&doc).await {
            Ok(_) => doc.try_into(),
            Err(e) if is_duplicate_key(&e) => Err(StoreError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn find_user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let doc = self.users().find_one(doc! { "email": email.as_str() }).await?;
        doc.map(TryInto::try_into).transpose()
    }

    pub async fn find_user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let doc = self.users().find_one(doc! { "_id": id.to_string() }).await?;
        doc.map(TryInto::try_into).transpose()
    }

    /// Makes sure a SYSTEM user with this email exists and has this password: creates it, or
    /// promotes and re-keys an existing user. Idempotent, so every gateway may run it at start.
    pub async fn ensure_system_user(&self, email: &Email, password_hash: String) -> Result<UserRecord, StoreError> {
        let updated = self
            .users()
            .find_one_and_update(
                doc! { "email": email.as_str() },
                doc! { "$set": { "role": Role::System.as_str(), "passwordHash": &password_hash } },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await?;
        match updated {
            Some(doc) => doc.try_into(),
            None => match self.insert_user(email, None, Role::System, password_hash.clone()).await {
                // Another process created it between our two calls: run the update again.
                Err(StoreError::EmailTaken) => Box::pin(self.ensure_system_user(email, password_hash)).await,
                other => other,
            },
        }
    }
}
