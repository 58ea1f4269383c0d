//! `GET /api/events`: the event stream, read from any point. Oldest first; an event's id is
//! its place in commit order, so a consumer that keeps the last id it handled and asks for
//! what comes after it misses nothing, however long it was away (within the retention).

use axum::Json;
use axum::extract::State;
use ledgerflow_store::EventFilter;

use super::accounts::{ListingScope, listing_scope};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::Query;
use crate::{dto, requests};

#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    summary = "Events of the transactions the caller may see, oldest first",
    params(
        ("after" = Option<i64>, Query, minimum = 0, description = "only events with a greater id: the nextCursor of the previous page, or the id of the last event handled (default 0: from the oldest kept)"),
        ("types" = Option<String>, Query, min_length = 1, description = "only these types, comma-separated, e.g. `transaction.completed,transaction.failed`"),
        ("account" = Option<String>, Query, format = Uuid, description = "only events of transactions naming this account"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, default 20"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "A page of events, oldest first", body = dto::EventList),
        (status = 404, description = "ACCOUNT_NOT_FOUND (account filter)", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/events?after=&types=&account=&limit=`. A user sees the events of the
/// transactions it initiated or that name one of its accounts; SYSTEM sees all.
pub(super) async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    query: Query<requests::EventQuery>,
) -> ApiResult<Json<dto::EventList>> {
    let requests::EventQuery { after, types, account, limit } = query.read()?;
    let after = after.unwrap_or_default().id();
    let limit = limit.unwrap_or_default().get();
    let ListingScope { account, own_accounts } = listing_scope(&state, &user, account).await?;
    let visible_to = own_accounts.map(|accounts| (user.id, accounts));
    let types = types.map(requests::EventTypes::into_vec).unwrap_or_default();
    // One more than the page, to tell whether there is more.
    let filter = EventFilter { after, types, account, visible_to, limit: limit + 1 };
    let mut found = state.store.events_after(&filter).await?;
    let has_more = found.len() as i64 > limit;
    found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = found.last().map_or(after, |e| e.id);
    Ok(Json(dto::EventList {
        events: found.iter().map(|e| e.body()).collect(),
        has_more,
        next_cursor: next.to_string(),
    }))
}
