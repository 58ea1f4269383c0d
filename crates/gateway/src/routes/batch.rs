//! `POST /transactions/batch`: many `POST /transactions` bodies in one request, each judged
//! and answered as it would be alone, with the new ones recorded in one insert and published
//! concurrently. Items are independent: a journal, not a batch, moves money all or nothing.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use futures::StreamExt;
use ledgerflow_api::{BatchItemResult, BatchResults};
use ledgerflow_domain::{AccountId, IdempotencyKey, TransferCommand};
use ledgerflow_store::{InsertPending, TransactionRecord};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::transactions::{Accepted, command, settle, transfer_request, transfer_span};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Query, RequestId, read_into, receive};
use crate::{dto, requests};

/// The visitor methods of JSON's scalars (`null` but where a visitor says otherwise), each
/// answering `$other`: the value is not of the shape the visitor is for.
macro_rules! scalars {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}

/// Most items in a batch.
pub(crate) const MAX_ITEMS: usize = 1_000;

/// Largest batch body accepted: [`MAX_ITEMS`] items of up to 4 KiB each, which every legal
/// transfer or hold written without padding fits (its largest field, a 500-character
/// description, is at most 2,000 bytes of UTF-8).
pub(crate) const MAX_BATCH_BODY_BYTES: usize = MAX_ITEMS * 4 * 1024;

/// Items judged at once: almost all find their accounts in the gateway's cache (filled for
/// the whole batch first); those naming an unknown account each read the database.
const JUDGED_AT_ONCE: usize = 16;

#[utoipa::path(
    post,
    path = "/transactions/batch",
    tag = "transactions",
    summary = "Request up to 1,000 transfers or holds at once, each answered as alone",
    request_body = requests::BatchBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "One result per item, in request order: the status and transaction or error object that item alone would have got from POST /transactions (202, 200 for a repeat, 4xx, or 503 BROKER_UNAVAILABLE with its transactionId). Items are independent: some may be accepted and others refused.", body = BatchResults),
        (status = 503, description = "SERVICE_UNAVAILABLE: the database could not be reached before any item was recorded", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors,
    )
)]
/// `POST /transactions/batch` `{items:[…]}`: each item is a `POST /transactions` body; the
/// answer is `{items:[{index,status,transaction?,error?}]}`. The batch itself (not an object,
/// no `items`, more than 1,000 of them, another name) is refused whole with 400.
pub(super) async fn submit(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    request_id: RequestId,
    items: Items,
) -> ApiResult<Json<BatchResults>> {
    let items = items.0;
    metrics::counter!("ledgerflow_batches_total").increment(1);
    // Every account named, read in one query if not yet known, so that each item's judgement
    // below finds its own in the cache.
    let named: Vec<AccountId> = items
        .iter()
        .flatten()
        .flat_map(|body| {
            let legs = body.legs.iter().flatten().flat_map(|leg| [leg.from_account, leg.to_account]);
            [body.from_account, body.to_account].into_iter().flatten().chain(legs)
        })
        .collect();
    state.accounts.prefetch(&state.store, &named).await?;
    let judged: Vec<ApiResult<_>> = futures::stream::iter(items)
        .map(|item| {
            let (state, user) = (&state, &user);
            async move { transfer_request(state, user, item?).await }
        })
        .buffered(JUDGED_AT_ONCE)
        .collect()
        .await;

    let mut results: Vec<Option<BatchItemResult>> = vec![None; judged.len()];
    // The first item under each key is recorded; a later one under the same key is answered
    // as a repeat of it, as if sent right after it.
    let mut fresh: Vec<(usize, TransferCommand)> = Vec::new();
    let mut repeats: Vec<(usize, TransferCommand, usize)> = Vec::new();
    let mut first_with_key: HashMap<IdempotencyKey, usize> = HashMap::new();
    for (index, judged) in judged.into_iter().enumerate() {
        match judged {
            Err(e) => results[index] = Some(refused(index, &e)),
            Ok((request, key)) => {
                let cmd = command(&user, request, key);
                match first_with_key.get(&cmd.idempotency_key) {
                    Some(&first) => repeats.push((index, cmd, first)),
                    None => {
                        first_with_key.insert(cmd.idempotency_key.clone(), fresh.len());
                        fresh.push((index, cmd));
                    }
                }
            }
        }
    }

    let cmds: Vec<TransferCommand> = fresh.iter().map(|(_, cmd)| cmd.clone()).collect();
    let started = Instant::now();
    let inserted = if cmds.is_empty() { Vec::new() } else { state.store.insert_pending_many(&cmds).await };
    metrics::histogram!("ledgerflow_pending_insert_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("ledgerflow_pending_insert_size").record(cmds.len() as f64);
    // What each recorded key holds, for the repeats of it later in the batch.
    let recorded: Vec<Option<TransactionRecord>> = inserted
        .iter()
        .map(|i| match i {
            Ok(InsertPending::Created(r) | InsertPending::Existing(r)) => Some(r.clone()),
            Err(_) => None,
        })
        .collect();
    let request_id = request_id.0.as_deref();
    let settled = futures::future::join_all(fresh.iter().zip(inserted).map(|((index, cmd), inserted)| {
        let state = &state;
        async move {
            let answer = match inserted {
                Ok(inserted) => settle(state, cmd, inserted, request_id).await,
                Err(e) => Err(ApiError::from(e)),
            };
            answered(*index, answer)
        }
        .instrument(transfer_span(cmd))
    }))
    .await;
    for result in settled {
        let index = result.index;
        results[index] = Some(result);
    }
    for (index, cmd, first) in repeats {
        let result = match &recorded[first] {
            Some(record) => {
                let existing = InsertPending::Existing(record.clone());
                let answer = settle(&state, &cmd, existing, request_id).instrument(transfer_span(&cmd)).await;
                answered(index, answer)
            }
            // The first was not recorded: this one would have met the same fault.
            None => BatchItemResult { index, ..results[fresh[first].0].clone().unwrap_or_else(unanswered) },
        };
        results[index] = Some(result);
    }

    let items: Vec<BatchItemResult> =
        results.into_iter().enumerate().map(|(index, r)| r.unwrap_or_else(|| unanswered_at(index))).collect();
    for item in &items {
        metrics::counter!("ledgerflow_batch_items_total", "status" => item.status.to_string()).increment(1);
    }
    Ok(Json(BatchResults { items }))
}

/// An item's result from what it got.
fn answered(index: usize, answer: ApiResult<Accepted>) -> BatchItemResult {
    match answer {
        Ok(accepted) => BatchItemResult {
            index,
            status: accepted.status().as_u16(),
            transaction: Some(dto::transaction(accepted.record())),
            error: None,
        },
        Err(e) => refused(index, &e),
    }
}

/// An item's result from the error it alone would have got.
fn refused(index: usize, e: &ApiError) -> BatchItemResult {
    let (status, detail) = e.detail();
    BatchItemResult { index, status: status.as_u16(), transaction: None, error: Some(detail) }
}

/// Every item is answered above; were one not, it gets a 500 rather than a panic.
fn unanswered() -> BatchItemResult {
    unanswered_at(0)
}

fn unanswered_at(index: usize) -> BatchItemResult {
    tracing::error!(index, "a batch item was left unanswered");
    refused(index, &ApiError::Internal)
}

/// A batch body's items, each read into a [`requests::TransferBody`] as `POST /transactions`
/// reads a body alone (its own names, values and repeated keys judged), or the error that
/// body would have got. The batch itself, if it is not `{"items":[…]}` with 1 to
/// [`MAX_ITEMS`] items, is refused whole.
pub(super) struct Items(Vec<ApiResult<requests::TransferBody>>);

impl FromRequest<AppState> for Items {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (is_json, bytes) = receive(req, state, MAX_BATCH_BODY_BYTES).await?;
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        read_batch(&bytes).map(Self)
    }
}

/// Reads a batch body in one pass, keeping each item as its own object.
fn read_batch(bytes: &[u8]) -> ApiResult<Vec<ApiResult<requests::TransferBody>>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = de.deserialize_any(BatchVisitor).and_then(|batch| de.end().map(|()| batch));
    let Batch { names, items, repeated } = match read {
        Ok(Some(batch)) => batch,
        Ok(None) => return Err(ApiError::InvalidJson("request body must be a JSON object".into())),
        Err(e) => return Err(ApiError::InvalidJson(format!("request body is not valid JSON: {e}"))),
    };
    if let Some(name) = repeated {
        return Err(ApiError::InvalidJson(format!("request body is not valid JSON: key `{name}` appears twice")));
    }
    // The batch's own names are judged by its request type, as any body's are.
    let requests::BatchBody { items: _ } = read_into::<requests::BatchBody>("field", names)??;
    let invalid =
        |reason: String| ApiError::Validation(ledgerflow_domain::DomainError::Invalid { field: "items", reason });
    let items = match items {
        Some(Listed::Items(items, count)) if (1..=MAX_ITEMS).contains(&count) => items,
        Some(Listed::Items(_, count)) => {
            return Err(invalid(format!("must hold 1 to {MAX_ITEMS} requests, not {count}")));
        }
        _ => return Err(invalid("must be an array of POST /transactions bodies".into())),
    };
    Ok(items.into_iter().map(read_item).collect())
}

/// One item, read as `POST /transactions` reads its body.
fn read_item(item: Item) -> ApiResult<requests::TransferBody> {
    match item {
        Item::Object(fields) => read_into("field", fields)?,
        Item::Repeated(name) => {
            Err(ApiError::InvalidJson(format!("request body is not valid JSON: key `{name}` appears twice")))
        }
        Item::Other => Err(ApiError::InvalidJson("request body must be a JSON object".into())),
    }
}

/// The top level of a batch body: its names (`items` standing for its value, which is read
/// apart), its items, and the first name given twice.
struct Batch {
    names: Map<String, Value>,
    items: Option<Listed>,
    repeated: Option<String>,
}

/// What `items` holds: its first [`MAX_ITEMS`] items and how many there are, `null`, or
/// something else than an array.
enum Listed {
    Items(Vec<Item>, usize),
    Null,
    NotAnArray,
}

/// One item as written.
enum Item {
    Object(Map<String, Value>),
    /// An object that gives this name twice: which value it meant cannot be known.
    Repeated(String),
    /// Not an object.
    Other,
}

/// Reads any JSON value into `Some(Batch)` if it is an object, `None` otherwise.
struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Option<Batch>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut batch = Batch { names: Map::new(), items: None, repeated: None };
        while let Some(name) = access.next_key::<String>()? {
            if batch.names.contains_key(&name) {
                batch.repeated.get_or_insert_with(|| name.clone());
            }
            // The request type sees `items` as given (a `null` is as good as absent), its value
            // aside: it is read here, item by item.
            let stands_for = if name == "items" {
                let items = access.next_value_seed(ItemsSeed)?;
                let stands_for = if matches!(items, Listed::Null) { Value::Null } else { Value::Array(Vec::new()) };
                batch.items = Some(items);
                stands_for
            } else {
                access.next_value::<IgnoredAny>()?;
                Value::Null
            };
            batch.names.insert(name, stands_for);
        }
        Ok(Some(batch))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        while access.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    scalars!(None);
}

/// Reads `items`: an array, kept up to [`MAX_ITEMS`] items and counted past them.
struct ItemsSeed;

impl<'de> DeserializeSeed<'de> for ItemsSeed {
    type Value = Listed;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Listed, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed {
    type Value = Listed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Listed, A::Error> {
        let mut items = Vec::new();
        let mut count = 0;
        loop {
            // Past the limit an item is only counted, never kept: the batch is refused anyway.
            let more = if count < MAX_ITEMS {
                access.next_element_seed(ItemSeed)?.map(|item| items.push(item)).is_some()
            } else {
                access.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(Listed::Items(items, count));
            }
            count += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Listed, A::Error> {
        while access.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Listed::NotAnArray)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Listed, E> {
        Ok(Listed::Null)
    }

    scalars!(Listed::NotAnArray);
}

/// Reads one item: an object, whose names must each be given once, or anything else.
struct ItemSeed;

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Item, A::Error> {
        let mut fields = Map::new();
        let mut repeated = None;
        while let Some(name) = access.next_key::<String>()? {
            let value = access.next_value::<Value>()?;
            if fields.contains_key(&name) {
                repeated.get_or_insert(name);
            } else {
                fields.insert(name, value);
            }
        }
        Ok(repeated.map_or(Item::Object(fields), Item::Repeated))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Item, A::Error> {
        while access.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
        Ok(Item::Other)
    }

    scalars!(Item::Other);
}
