//! Registered upstream services and their grants (`ledgerflow_domain::grants`), in the
//! `services` collection: `{_id: name, brokerUser, enabled, kinds, debitAccounts,
//! debitOwners, createdAt, updatedAt}`, one service per broker user (a unique index).
//! Workers read the whole collection every second; operators change it with `ledgerflow
//! admin services`.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ledgerflow_domain::grants::{BrokerUser, Grant, Service};
use ledgerflow_domain::{DomainError, ServiceName, UserId};
use mongodb::bson::{DateTime as BsonDateTime, doc};
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use crate::docs::{field, from_bson_time, to_bson_time};
use crate::error::is_duplicate_key;
use crate::{Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceDoc {
    #[serde(rename = "_id")]
    pub name: String,
    pub broker_user: String,
    pub enabled: bool,
    pub kinds: Vec<String>,
    pub debit_accounts: Vec<String>,
    pub debit_owners: Vec<String>,
    #[serde(default)]
    pub debit_any_account: bool,
    pub created_at: BsonDateTime,
    pub updated_at: BsonDateTime,
}

/// A service as stored, with when it was registered and last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub service: Service,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a service could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceTaken {
    #[error("a service of this name, or one publishing as this broker user, is registered already")]
    NameOrBrokerUser,
}

impl TryFrom<ServiceDoc> for ServiceRecord {
    type Error = StoreError;
    fn try_from(d: ServiceDoc) -> Result<Self, StoreError> {
        const C: &str = "services";
        fn parse_all<T: FromStr<Err = DomainError> + Ord>(id: &str, raw: &[String]) -> Result<BTreeSet<T>, StoreError> {
            raw.iter().map(|s| field(C, id, s)).collect()
        }
        let id = d.name.as_str();
        let name: ServiceName = field(C, id, id)?;
        let grant = Grant {
            kinds: parse_all(id, &d.kinds)?,
            accounts: parse_all(id, &d.debit_accounts)?,
            owners: parse_all::<UserId>(id, &d.debit_owners)?,
            any_account: d.debit_any_account,
        };
        let broker_user: BrokerUser = field(C, id, &d.broker_user)?;
        Ok(Self {
            service: Service { name, broker_user, enabled: d.enabled, grant },
            created_at: from_bson_time(d.created_at),
            updated_at: from_bson_time(d.updated_at),
        })
    }
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    items.into_iter().map(|i| i.to_string()).collect()
}

impl Store {
    fn services(&self) -> mongodb::Collection<ServiceDoc> {
        self.db.collection("services")
    }

    /// Registers an enabled service with nothing granted.
    pub async fn add_service(
        &self,
        name: &ServiceName,
        broker_user: &BrokerUser,
    ) -> Result<Result<ServiceRecord, ServiceTaken>, StoreError> {
        let now = to_bson_time(Utc::now());
        let doc = ServiceDoc {
            name: name.as_str().to_owned(),
            broker_user: broker_user.as_str().to_owned(),
            enabled: true,
            kinds: Vec::new(),
            debit_accounts: Vec::new(),
            debit_owners: Vec::new(),
            debit_any_account: false,
            created_at: now,
            updated_at: now,
        };
        match self.services().insert_one(&doc).await {
            Ok(_) => doc.try_into().map(Ok),
            Err(e) if is_duplicate_key(&e) => Ok(Err(ServiceTaken::NameOrBrokerUser)),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registered service, by name.
    pub async fn list_services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let docs: Vec<ServiceDoc> = self.services().find(doc! {}).sort(doc! { "_id": 1 }).await?.try_collect().await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    pub async fn find_service(&self, name: &ServiceName) -> Result<Option<ServiceRecord>, StoreError> {
        self.services().find_one(doc! { "_id": name.as_str() }).await?.map(TryInto::try_into).transpose()
    }

    /// Adds (`grant`) or takes away (`!grant`) what `change` names, in one atomic update;
    /// `None` when no such service.
    pub async fn change_grant(
        &self,
        name: &ServiceName,
        change: &Grant,
        grant: bool,
    ) -> Result<Option<ServiceRecord>, StoreError> {
        let (kinds, accounts, owners) =
            (strings(change.kinds.iter().map(|k| k.as_str())), strings(&change.accounts), strings(&change.owners));
        let mut set = doc! { "updatedAt": to_bson_time(Utc::now()) };
        if change.any_account {
            set.insert("debitAnyAccount", grant);
        }
        let update = if grant {
            doc! {
                "$addToSet": {
                    "kinds": { "$each": kinds },
                    "debitAccounts": { "$each": accounts },
                    "debitOwners": { "$each": owners },
                },
                "$set": set,
            }
        } else {
            doc! {
                "$pullAll": { "kinds": kinds, "debitAccounts": accounts, "debitOwners": owners },
                "$set": set,
            }
        };
        self.update_service(name, update).await
    }

    /// Enables or disables a service; `None` when no such service.
    pub async fn set_service_enabled(
        &self,
        name: &ServiceName,
        enabled: bool,
    ) -> Result<Option<ServiceRecord>, StoreError> {
        let update = doc! { "$set": { "enabled": enabled, "updatedAt": to_bson_time(Utc::now()) } };
        self.update_service(name, update).await
    }

    async fn update_service(
        &self,
        name: &ServiceName,
        update: mongodb::bson::Document,
    ) -> Result<Option<ServiceRecord>, StoreError> {
        let found = self
            .services()
            .find_one_and_update(doc! { "_id": name.as_str() }, update)
            .return_document(ReturnDocument::After)
            .await?;
        found.map(TryInto::try_into).transpose()
    }
}
