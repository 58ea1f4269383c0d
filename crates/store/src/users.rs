//! Users.

use std::time::Duration;

use chrono::Utc;
use ledgerflow_domain::{Email, PersonName, Role, UserId};
use mongodb::bson::{Document, doc};

use crate::docs::{UserDoc, from_bson_time, to_bson_time};
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
            session_version: 0,
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

    /// Makes sure a SYSTEM user with this email exists and has this password hash: creates
    /// it, or promotes and re-keys an existing user, ending its sessions (a new password is
    /// what an operator sets after a leak). Callers skip it when the user is SYSTEM with this
    /// password already, so that restarting a gateway ends no session.
    pub async fn ensure_system_user(&self, email: &Email, password_hash: String) -> Result<UserRecord, StoreError> {
        let updated = self
            .users()
            .find_one_and_update(
                doc! { "email": email.as_str() },
                doc! {
                    "$set": { "role": Role::System.as_str(), "passwordHash": &password_hash },
                    "$inc": { "sessionVersion": 1_i64 },
                },
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

    /// Sets a new password hash and ends every session of the user (whoever changes a
    /// password wants the old one's sessions gone). The user as it now is, `None` if none.
    pub async fn set_password(&self, id: UserId, password_hash: String) -> Result<Option<UserRecord>, StoreError> {
        self.ending_sessions(id, doc! { "passwordHash": password_hash }).await
    }

    /// The user's current session version (see [`UserRecord::session_version`]); `None` if
    /// there is no such user.
    pub async fn session_version(&self, id: UserId) -> Result<Option<i64>, StoreError> {
        let found = self
            .users()
            .clone_with_type::<Document>()
            .find_one(doc! { "_id": id.to_string() })
            .projection(doc! { "sessionVersion": 1 })
            .await?;
        Ok(found.map(|d| d.get_i64("sessionVersion").unwrap_or(0)))
    }

    /// Ends every session of the user: tokens issued until now are refused from now on.
    /// Returns the user as it now is, `None` if there is no such user.
    pub async fn end_sessions(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.ending_sessions(id, doc! {}).await
    }

    /// Applies `set` to the user and bumps its session version in the same write, so no
    /// token survives the change; the user as it now is.
    async fn ending_sessions(&self, id: UserId, set: Document) -> Result<Option<UserRecord>, StoreError> {
        let mut update = doc! { "$inc": { "sessionVersion": 1_i64 } };
        if !set.is_empty() {
            update.insert("$set", set);
        }
        let updated = self
            .users()
            .find_one_and_update(doc! { "_id": id.to_string() }, update)
            .return_document(mongodb::options::ReturnDocument::After)
            .await?;
        updated.map(TryInto::try_into).transpose()
    }

    /// Claims one password check for `email` in its failure window, starting a new window of
    /// `window` if none is open: `Ok(None)` if the check may go ahead, `Ok(Some(until))` if
    /// `max` checks have already been claimed in the window, which then holds until `until`.
    ///
    /// Every check is counted as a failure *before* the password is verified (a success clears
    /// the count): checking first and counting after let parallel guesses all pass the check
    /// before any was counted. One atomic update, so every gateway counts into the same window,
    /// and at most `max` wrong passwords are ever tried per window.
    pub async fn claim_password_check(
        &self,
        email: &Email,
        max: u32,
        window: Duration,
    ) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        let now = Utc::now();
        let window = chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
        let fresh_until = now.checked_add_signed(window).unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        let (now, fresh_until) = (to_bson_time(now), to_bson_time(fresh_until));
        let open = doc! { "$gt": ["$until", now] };
        let update = vec![doc! { "$set": {
            "failures": { "$cond": [&open, { "$add": ["$failures", 1] }, 1] },
            "until": { "$cond": [&open, "$until", fresh_until] },
        }}];
        let counted = self
            .login_failures()
            .find_one_and_update(doc! { "_id": email.as_str() }, update)
            .upsert(true)
            .return_document(mongodb::options::ReturnDocument::After)
            .await?
            .unwrap_or_default();
        let claimed = counted.get_i64("failures").or_else(|_| counted.get_i32("failures").map(i64::from));
        let until = counted.get_datetime("until").map(|until| from_bson_time(*until));
        match (claimed, until) {
            (Ok(n), Ok(until)) if n > i64::from(max) => Ok(Some(until)),
            (Ok(_), Ok(_)) => Ok(None),
            _ => Err(StoreError::Corrupt {
                collection: "loginFailures",
                id: email.as_str().to_owned(),
                reason: format!("no failure count and window end in {counted}"),
            }),
        }
    }

    /// Forgets the failed sign-ins of `email` (after a successful one).
    pub async fn clear_login_failures(&self, email: &Email) -> Result<(), StoreError> {
        self.login_failures().delete_one(doc! { "_id": email.as_str() }).await?;
        Ok(())
    }
}
