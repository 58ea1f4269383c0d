//! An account's metadata: the owner's labels, replaced whole.

use ledgerflow_domain::{AccountId, Metadata};
use mongodb::bson::doc;
use mongodb::options::ReturnDocument;

use crate::docs::metadata_doc;
use crate::{AccountRecord, Store, StoreError};

impl Store {
    /// Replaces a client account's metadata (none left for an empty one); `None` if there is
    /// no such client account. Labels take no part in any decision about money, so, unlike
    /// status and limits, the write needs no guard against postings in flight.
    pub async fn set_account_metadata(
        &self,
        id: AccountId,
        metadata: &Metadata,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let update = if metadata.is_empty() {
            doc! { "$unset": { "metadata": "" } }
        } else {
            let labels = mongodb::bson::to_bson(&metadata_doc(metadata))
                .map_err(|e| StoreError::Database(mongodb::error::Error::custom(e.to_string())))?;
            doc! { "$set": { "metadata": labels } }
        };
        let updated = self
            .accounts()
            .find_one_and_update(doc! { "_id": id.to_string(), "ownerId": { "$ne": null } }, update)
            .return_document(ReturnDocument::After)
            .await?;
        updated.map(TryInto::try_into).transpose()
    }
}
