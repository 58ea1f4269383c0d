use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use ledgerflow_domain::{
    AccountId, Currency, IdempotencyKey, Leg, NotReversible, TransactionId, TransferCommand, TransferKind,
    TransferRequest, UserId,
};
use ledgerflow_store::{InsertPending, TransactionFilter, TransactionRecord};
use tracing::{Instrument, info, info_span};

use super::accounts::{ListingScope, listing_scope};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Query, RequestId};
use crate::search::SearchQuery;
use crate::{dto, requests};

#[utoipa::path(
    post,
    path = "/transactions",
    tag = "transactions",
    summary = "Request a transfer, or a hold (with `hold`)",
    request_body = requests::TransferBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Accepted and PENDING; `Location` names the transaction", body = dto::TransactionEnvelope),
        (status = 200, description = "A repeat of an earlier request with the same idempotencyKey: that transaction, in its current state", body = dto::TransactionEnvelope),
        (status = 404, description = "ACCOUNT_NOT_FOUND (fromAccount not the caller's, or toAccount unknown or a funding account)", body = ErrorBody),
        (status = 409, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 422, description = "CURRENCY_MISMATCH: the accounts hold different currencies, or not the `currency` named", body = ErrorBody),
        (status = 503, description = "BROKER_UNAVAILABLE (recorded, sent later; error.transactionId names it) or SERVICE_UNAVAILABLE", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors,
    )
)]
/// `POST /transactions` `{fromAccount,toAccount,amount,idempotencyKey,currency?,description?,hold?}`:
/// a TRANSFER, or with `hold: {timeoutSeconds}` a HOLD that reserves the amount instead.
pub(super) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    request_id: RequestId,
    body: Body<requests::TransferBody>,
) -> ApiResult<Response> {
    let (request, key) = transfer_request(&state, &user, body.read()?).await?;
    accept(&state, &user, request, key, request_id.0).await
}

/// The request a [`requests::TransferBody`] asks for, judged as far as the gateway can:
/// ownership and currency never change, so they are judged here, at once; balance and status
/// are the worker's to judge, at the moment the money moves (it checks the currency again:
/// upstream commands never pass through here).
pub(super) async fn transfer_request(
    state: &AppState,
    user: &AuthUser,
    body: requests::TransferBody,
) -> ApiResult<(TransferRequest, IdempotencyKey)> {
    let requests::TransferBody {
        from_account: from,
        to_account: to,
        amount,
        currency: asked,
        idempotency_key: key,
        description,
        hold,
        legs,
        metadata,
    } = body;
    if let Some(legs) = legs {
        let given = [("fromAccount", from.is_some()), ("toAccount", to.is_some()), ("amount", amount.is_some())];
        let mut beside = given.into_iter().chain([("currency", asked.is_some()), ("hold", hold.is_some())]);
        if let Some((field, _)) = beside.find(|(_, given)| *given) {
            let reason = "is not allowed beside legs: each leg names its own accounts, amount and currency".into();
            return Err(ledgerflow_domain::DomainError::Invalid { field, reason }.into());
        }
        let legs = journal_legs(state, user, legs).await?;
        return Ok((TransferRequest::journal(legs, description)?.with_metadata(metadata), key));
    }
    let required = |field| ledgerflow_domain::DomainError::Missing { field };
    let from = from.ok_or(required("fromAccount"))?;
    let to = to.ok_or(required("toAccount"))?;
    let amount = amount.ok_or(required("amount"))?;
    if from == to {
        return Err(ledgerflow_domain::DomainError::Invalid {
            field: "toAccount",
            reason: "must differ from fromAccount".into(),
        }
        .into());
    }
    let [source, target] = state.accounts.get(&state.store, [from, to]).await?;
    let source = source.filter(|a| a.owner == Some(user.id)).ok_or_else(ApiError::account_not_found)?;
    // A funding account only ever sends (initial funds); as a receiver it does not exist.
    let target = target.filter(|a| a.owner.is_some()).ok_or_else(ApiError::account_not_found)?;
    if source.currency != target.currency {
        return Err(ApiError::CurrencyMismatch { from: source.currency, to: target.currency });
    }
    held_as_asked(asked, source.currency)?;
    let request = match hold {
        Some(hold) => TransferRequest::hold(from, to, amount, source.currency, description, hold.timeout_seconds)?,
        None => TransferRequest::new(TransferKind::Transfer, from, to, amount, source.currency, description)?,
    };
    let request = request.with_metadata(metadata);
    Ok((request, key))
}

/// A journal's legs, judged as a transfer's accounts are: each debited account the caller's
/// (or, for SYSTEM, a currency's funding account, as initial funds draw on it), each credited
/// account a client's, both of the leg's currency. All accounts are looked up at once.
async fn journal_legs(state: &AppState, user: &AuthUser, legs: Vec<requests::LegRequest>) -> ApiResult<Vec<Leg>> {
    let ids: Vec<AccountId> = legs.iter().flat_map(|l| [l.from_account, l.to_account]).collect();
    let facts = state.accounts.get_each(&state.store, &ids).await?;
    let mut judged = Vec::with_capacity(legs.len());
    for (leg, facts) in legs.into_iter().zip(facts.chunks(2)) {
        let target = facts[1].filter(|a| a.owner.is_some()).ok_or_else(ApiError::account_not_found)?;
        let funding = AccountId::funding(target.currency);
        let currency = match facts[0] {
            Some(source) if source.owner == Some(user.id) => source.currency,
            // The funding account exists only once money was first issued from it.
            _ if user.is_system() && leg.from_account == funding => target.currency,
            _ => return Err(ApiError::account_not_found()),
        };
        if currency != target.currency {
            return Err(ApiError::CurrencyMismatch { from: currency, to: target.currency });
        }
        held_as_asked(leg.currency, currency)?;
        judged.push(Leg::new(leg.from_account, leg.to_account, leg.amount, currency)?);
    }
    Ok(judged)
}

#[utoipa::path(
    post,
    path = "/transactions/system/initial-funds",
    tag = "transactions",
    summary = "Fund an account from the funding account (SYSTEM)",
    request_body = requests::InitialFundsBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Accepted and PENDING; `Location` names the transaction", body = dto::TransactionEnvelope),
        (status = 200, description = "A repeat of an earlier request with the same idempotencyKey: that transaction, in its current state", body = dto::TransactionEnvelope),
        (status = 403, description = "FORBIDDEN: SYSTEM only", body = ErrorBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 422, description = "CURRENCY_MISMATCH: the account does not hold the `currency` named", body = ErrorBody),
        (status = 503, description = "BROKER_UNAVAILABLE (recorded, sent later; error.transactionId names it) or SERVICE_UNAVAILABLE", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors,
    )
)]
/// `POST /transactions/system/initial-funds` `{toAccount,amount,idempotencyKey,currency?,description?}`:
/// SYSTEM only; the money comes from the currency's funding account.
pub(super) async fn initial_funds(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    request_id: RequestId,
    body: Body<requests::InitialFundsBody>,
) -> ApiResult<Response> {
    user.require_system()?;
    let requests::InitialFundsBody {
        to_account: to,
        amount,
        currency: asked,
        idempotency_key: key,
        description,
        metadata,
    } = body.read()?;
    let [target] = state.accounts.get(&state.store, [to]).await?;
    let target = target.filter(|a| a.owner.is_some()).ok_or_else(ApiError::account_not_found)?;
    held_as_asked(asked, target.currency)?;
    let from = AccountId::funding(target.currency);
    let request = TransferRequest::new(TransferKind::InitialFunds, from, to, amount, target.currency, description)?
        .with_metadata(metadata);
    accept(&state, &user, request, key, request_id.0).await
}

#[utoipa::path(
    post,
    path = "/transactions/{id}/reverse",
    tag = "transactions",
    summary = "Reverse a completed transaction (receiver or SYSTEM)",
    request_body = requests::ReverseBody,
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Accepted and PENDING; `Location` names the transaction", body = dto::TransactionEnvelope),
        (status = 200, description = "A repeat of an earlier request with the same idempotencyKey: that transaction, in its current state", body = dto::TransactionEnvelope),
        (status = 403, description = "FORBIDDEN: only the receiving account's owner or SYSTEM", body = ErrorBody),
        (status = 404, description = "TRANSACTION_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_REVERSED, NOT_REVERSIBLE or IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 503, description = "BROKER_UNAVAILABLE (recorded, sent later; error.transactionId names it) or SERVICE_UNAVAILABLE", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors,
    )
)]
/// `POST /transactions/{id}/reverse` `{idempotencyKey,reason?}`: SYSTEM or the receiving
/// account's owner moves a COMPLETED transaction's money back, as a new REVERSAL transaction
/// through the same queue and worker. The original is never changed but for `reversedBy`.
pub(super) async fn reverse(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Body<requests::ReverseBody>,
) -> ApiResult<Response> {
    let id = TransactionId::parse_field("transactionId", &id)?;
    let requests::ReverseBody { idempotency_key: key, reason, metadata } = body.read()?;
    let original = state.transactions.find(id).await?.ok_or_else(ApiError::transaction_not_found)?;
    let owners = owners(&state, &original).await?;
    if !sees(&user, &original, &owners) {
        return Err(ApiError::transaction_not_found());
    }
    // Reversing takes the money back out of every account it went into: only their owner
    // (of each one, for a journal) or SYSTEM may.
    let movements = original.request().movements();
    if !user.is_system() && !movements.iter().all(|m| owners.of(m.to) == Some(user.id)) {
        return Err(ApiError::Forbidden(
            "only the receiving account's owner (of every leg's, for a journal) or SYSTEM may reverse a transaction",
        ));
    }
    let request = TransferRequest::reversal_of(original.id, &original.request(), reason).with_metadata(metadata);
    // A retry of this very request answers with what it created, whatever happened since.
    if let Some(existing) = state.store.find_by_key(&user.initiator(), &key).await? {
        if existing.request_hash != request.fingerprint() {
            return Err(ApiError::IdempotencyKeyReused);
        }
        return Ok((StatusCode::OK, Json(dto::envelope(&existing))).into_response());
    }
    match original.reversal_candidate().may_be_reversed() {
        Ok(()) => {}
        Err(NotReversible::AlreadyReversed) => return Err(ApiError::AlreadyReversed),
        Err(refusal) => return Err(ApiError::NotReversible(refusal)),
    }
    // A reversal already on its way would lose in the worker; say so now.
    if state.store.active_reversal_of(original.id).await?.is_some() {
        return Err(ApiError::AlreadyReversed);
    }
    accept(&state, &user, request, key, request_id.0).await
}

/// A request that names its currency must name the accounts' own: an amount meant in one
/// currency is never moved in another.
fn held_as_asked(asked: Option<Currency>, held: Currency) -> ApiResult<()> {
    match asked {
        Some(asked) if asked != held => Err(ApiError::CurrencyNotHeld { asked, held }),
        _ => Ok(()),
    }
}

/// Records the transfer PENDING (or finds the one recorded under the same key) and hands it
/// to the queue: 202 for a new transfer, 200 for a repeat of the same request, 409 for a key
/// reused with a different request.
pub(super) async fn accept(
    state: &AppState,
    user: &AuthUser,
    request: TransferRequest,
    key: IdempotencyKey,
    request_id: Option<String>,
) -> ApiResult<Response> {
    let cmd = command(user, request, key);
    async {
        // Both waits are on every transfer's path to its 202: the grouped, journaled insert
        // (lingering included) and the broker's confirm. Timed so an operator can tell which.
        let started = Instant::now();
        let inserted = state.pending.insert(cmd.clone()).await?;
        metrics::histogram!("ledgerflow_pending_insert_seconds").record(started.elapsed().as_secs_f64());
        Ok(settle(state, &cmd, inserted, request_id.as_deref()).await?.into_response())
    }
    .instrument(transfer_span(&cmd))
    .await
}

/// The command for a request `user` makes under `key`, with a new transaction id.
pub(super) fn command(user: &AuthUser, request: TransferRequest, key: IdempotencyKey) -> TransferCommand {
    TransferCommand {
        transaction_id: Some(TransactionId::generate()),
        request,
        idempotency_key: key,
        initiator: user.initiator(),
        requested_at: Utc::now(),
    }
}

/// The span of one transfer's acceptance; [`settle`] names its transaction in it.
pub(super) fn transfer_span(cmd: &TransferCommand) -> tracing::Span {
    info_span!("transfer", transaction_id = tracing::field::Empty, idempotency_key = %cmd.idempotency_key)
}

/// A transfer the gateway took.
pub(super) enum Accepted {
    /// Recorded now and published: 202.
    New(TransactionRecord),
    /// Recorded earlier under the same key, for the same request: 200.
    Repeat(TransactionRecord),
}

impl Accepted {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::New(_) => StatusCode::ACCEPTED,
            Self::Repeat(_) => StatusCode::OK,
        }
    }

    pub(super) fn record(&self) -> &TransactionRecord {
        match self {
            Self::New(record) | Self::Repeat(record) => record,
        }
    }
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        if let Self::New(record) = &self
            && let Ok(location) = HeaderValue::from_str(&format!("/transactions/{}", record.id))
        {
            headers.insert(header::LOCATION, location);
        }
        (self.status(), headers, Json(dto::envelope(self.record()))).into_response()
    }
}

/// What recording `cmd` did, made an answer (in the transfer's span): a repeat's record, or a
/// 409 if the key was used for another request; a new record is published first, with the
/// broker's confirm (503 `BROKER_UNAVAILABLE` with its id if there is none: the republisher
/// sends it later).
pub(super) async fn settle(
    state: &AppState,
    cmd: &TransferCommand,
    inserted: InsertPending,
    request_id: Option<&str>,
) -> ApiResult<Accepted> {
    match inserted {
        InsertPending::Existing(existing) => {
            tracing::Span::current().record("transaction_id", tracing::field::display(existing.id));
            if existing.request_hash != cmd.request.fingerprint() {
                return Err(ApiError::IdempotencyKeyReused);
            }
            info!(status = %existing.status, "repeated request, returning the recorded transaction");
            Ok(Accepted::Repeat(existing))
        }
        InsertPending::Created(record) => {
            tracing::Span::current().record("transaction_id", tracing::field::display(record.id));
            let started = Instant::now();
            let published = state.publisher.publish_command(cmd, request_id).await;
            metrics::histogram!("ledgerflow_publish_confirm_seconds").record(started.elapsed().as_secs_f64());
            if let Err(e) = published {
                tracing::warn!(error = %e, "publish failed; the republisher will send it");
                metrics::counter!("ledgerflow_publish_failures_total").increment(1);
                return Err(ApiError::PublishDeferred(record.id));
            }
            info!(amount = record.amount.minor(), kind = %record.kind, "transfer accepted");
            metrics::counter!("ledgerflow_transfers_accepted_total", "kind" => record.kind.as_str()).increment(1);
            Ok(Accepted::New(record))
        }
    }
}

/// Whether `user` may see `t`: SYSTEM, its initiator, or the owner of an account it touches
/// (any leg's, for a journal). Looks the owners up only when the first two do not settle it.
async fn may_see(state: &AppState, user: &AuthUser, t: &TransactionRecord) -> ApiResult<bool> {
    Ok(sees_outright(user, t) || sees(user, t, &owners(state, t).await?))
}

/// The owners of the accounts `t` touches (`None` for a funding account), in the order of
/// `TransferRequest::accounts` (a transfer's sender, then its receiver), from the gateway's
/// cache of what never changes about an account.
pub(super) async fn owners(state: &AppState, t: &TransactionRecord) -> ApiResult<Owners> {
    let accounts = t.request().accounts();
    let facts = state.accounts.get_each(&state.store, &accounts).await?;
    Ok(Owners(accounts.into_iter().zip(facts.into_iter().map(|f| f.and_then(|f| f.owner))).collect()))
}

/// Who owns each account of a transaction: see [`owners`].
pub(super) struct Owners(Vec<(AccountId, Option<UserId>)>);

impl Owners {
    pub(super) fn of(&self, account: AccountId) -> Option<UserId> {
        self.0.iter().find(|(id, _)| *id == account).and_then(|(_, owner)| *owner)
    }

    fn include(&self, user: UserId) -> bool {
        self.0.iter().any(|(_, owner)| *owner == Some(user))
    }
}

/// [`may_see`], given `t`'s accounts' [`owners`].
pub(super) fn sees(user: &AuthUser, t: &TransactionRecord, owners: &Owners) -> bool {
    sees_outright(user, t) || owners.include(user.id)
}

/// SYSTEM and the initiator see a transaction whoever owns its accounts.
fn sees_outright(user: &AuthUser, t: &TransactionRecord) -> bool {
    user.is_system() || t.initiator == user.initiator()
}

/// While long-polling, the database is also re-read this often, so a result notification
/// lost to a broker reconnect delays the answer a little instead of until the deadline.
const WAIT_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

#[utoipa::path(
    get,
    path = "/transactions/{id}",
    tag = "transactions",
    summary = "Get a transaction, optionally waiting for its outcome",
    params(("id" = String, Path, format = Uuid, description = "UUID"), ("wait" = Option<u64>, Query, minimum = 0, maximum = 30, description = "seconds to hold a PENDING transaction until it is terminal")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The transaction", body = dto::TransactionEnvelope),
        (status = 404, description = "TRANSACTION_NOT_FOUND", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /transactions/{id}?wait=N`: 404 for anyone who may not see it. With `wait` (seconds,
/// at most 30) a PENDING transaction is held until it becomes terminal or the time is up,
/// woken by the worker's result message.
pub(super) async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: Query<requests::WaitQuery>,
) -> ApiResult<Json<dto::TransactionEnvelope>> {
    let id = TransactionId::parse_field("transactionId", &id)?;
    let wait = query.read()?.wait.unwrap_or_default().get();
    let mut t = state.transactions.find(id).await?.ok_or_else(ApiError::transaction_not_found)?;
    if !may_see(&state, &user, &t).await? {
        return Err(ApiError::transaction_not_found());
    }
    if wait > 0 && !t.status.is_decided() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        // Bound to this id's results before the first re-read, so none can slip in between.
        let watch = state.watchers.watch(id, deadline).await;
        loop {
            let notified = watch.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            t = state.transactions.find(id).await?.ok_or_else(ApiError::transaction_not_found)?;
            if t.status.is_decided() || tokio::time::Instant::now() >= deadline {
                break;
            }
            let recheck = (tokio::time::Instant::now() + WAIT_RECHECK).min(deadline);
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(recheck) => {}
                // A stopping gateway answers with what it has rather than hold up the stop.
                () = state.stopping.cancelled() => break,
            }
        }
    }
    Ok(Json(dto::envelope(&t)))
}

#[utoipa::path(
    get,
    path = "/transactions",
    tag = "transactions",
    summary = "List transactions the caller may see",
    params(("account" = Option<String>, Query, format = Uuid, description = "only this account's"), ("status" = Option<String>, Query, pattern = "^(PENDING|COMPLETED|FAILED|HELD|POSTED|VOIDED|EXPIRED)$", description = "PENDING, COMPLETED, FAILED, or a hold's HELD, POSTED, VOIDED, EXPIRED"), ("kind" = Option<String>, Query, pattern = "^(TRANSFER|INITIAL_FUNDS|REVERSAL|HOLD|POST_HOLD|VOID_HOLD)$", description = "only this kind, e.g. HOLD (with status=HELD: the open holds)"), ("createdFrom" = Option<String>, Query, format = DateTime, description = "only those created at or after this RFC 3339 time"), ("createdTo" = Option<String>, Query, format = DateTime, description = "only those created before this RFC 3339 time"), ("minAmount" = Option<i64>, Query, minimum = 1, maximum = 1_000_000_000_000_000_i64, description = "only amounts of at least this many minor units"), ("maxAmount" = Option<i64>, Query, minimum = 1, maximum = 1_000_000_000_000_000_i64, description = "only amounts of at most this many minor units"), ("metadata.{key}" = Option<String>, Query, max_length = 512, description = "only those whose metadata has this exact value under `{key}` (1-64 characters of A-Z a-z 0-9 _ . -), e.g. `metadata.orderId=A-17`; any number of keys, all must match"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, default 20"), ("cursor" = Option<String>, Query, min_length = 1, description = "nextCursor of the previous page")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Newest first; every filter given must match", body = dto::TransactionList),
        (status = 404, description = "ACCOUNT_NOT_FOUND (account filter)", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /transactions?account=&status=&kind=&createdFrom=&createdTo=&minAmount=&maxAmount=&metadata.<key>=&limit=&cursor=`:
/// newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    query: SearchQuery,
) -> ApiResult<Json<dto::TransactionList>> {
    let (requests::TransactionQuery { account, status, kind, limit, cursor: before, .. }, search) = query.read()?;
    let limit = limit.unwrap_or_default().get();
    let ListingScope { account, own_accounts } = listing_scope(&state, &user, account).await?;
    let visible_to = own_accounts.map(|accounts| (user.initiator(), accounts));
    let filter = TransactionFilter { visible_to, account, status, kind, before, limit, search };
    let found = state.store.list_transactions(&filter).await?;
    let next = (found.len() as i64 == limit).then(|| found.last().map(|t| t.id)).flatten();
    Ok(Json(dto::TransactionList {
        transactions: found.iter().map(dto::transaction).collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}
