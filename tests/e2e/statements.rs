//! Balances as of an instant and statements over a window, against the real services: every
//! figure is checked against the account's own entries.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ledgerflow_client::{Client, EntryBody, StatementBody, StatementQuery, Transfer};
use ledgerflow_domain::AccountId;
use ledgerflow_tests::{TestApp, assert_error, spawn_app};
use reqwest::StatusCode;

fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("an RFC 3339 instant").with_timezone(&Utc)
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Moves `amount` from `from` to `to` as `user` and waits until it COMPLETED.
async fn transfer(user: &Client, from: &str, to: &str, amount: i64) {
    let key = uuid::Uuid::new_v4().to_string();
    let accepted = user.transfer(&Transfer { from, to, amount, idempotency_key: &key, description: None }).await;
    let done = user.wait(&accepted.unwrap().transaction.id, 30).await.unwrap();
    assert_eq!(done.status, "COMPLETED", "{done:?}");
}

/// Every entry of `account`, oldest first.
async fn history(user: &Client, account: &str) -> Vec<EntryBody> {
    let mut entries = user.entries(account).await.unwrap().entries;
    entries.reverse();
    entries
}

/// An account with five entries: funded 1,000, then 300, 200 out, 50 back in, 120 out.
async fn account_with_history(app: &TestApp) -> (Client, String, Vec<EntryBody>) {
    let pair = app.alice_and_bob().await;
    let (alice, bob) = (app.as_user(&pair.alice), app.as_user(&pair.bob));
    app.fund(&pair.a, 1_000).await;
    transfer(&alice, &pair.a, &pair.b, 300).await;
    transfer(&alice, &pair.a, &pair.b, 200).await;
    transfer(&bob, &pair.b, &pair.a, 50).await;
    transfer(&alice, &pair.a, &pair.b, 120).await;
    let entries = history(&alice, &pair.a).await;
    assert_eq!(entries.iter().map(|e| e.balance_after).collect::<Vec<_>>(), [1_000, 700, 500, 550, 430]);
    (alice, pair.a, entries)
}

/// What the entries say the balance was at `at`: the last one stamped at or before it.
fn expected_at(entries: &[EntryBody], at: DateTime<Utc>) -> i64 {
    entries.iter().rev().find(|e| instant(&e.created_at) <= at).map_or(0, |e| e.balance_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_as_of_an_entry_boundary_is_the_last_entry_at_or_before_it() {
    let app = spawn_app().await;
    let (alice, a, entries) = account_with_history(&app).await;
    // createdAt never decreases along seq, so "the last entry at or before" is one entry.
    assert!(entries.windows(2).all(|w| instant(&w[0].created_at) <= instant(&w[1].created_at)));
    for entry in &entries {
        let at = instant(&entry.created_at);
        for probe in [at - Duration::milliseconds(1), at, at + Duration::milliseconds(1)] {
            let got = alice.balance_as_of(&a, &text(probe)).await.unwrap();
            assert_eq!(got.balance, expected_at(&entries, probe), "as of {} (entry {})", text(probe), entry.seq);
            assert_eq!(got.available, got.balance, "no holds, no overdraft line");
            assert_eq!((got.account_id.as_str(), got.currency.as_str()), (a.as_str(), "USD"));
        }
        // At its own instant an entry counts; just before, it does not.
        assert_eq!(alice.balance_as_of(&a, &text(at)).await.unwrap().balance, expected_at(&entries, at));
    }
    let first = instant(&entries[0].created_at);
    assert_eq!(alice.balance_as_of(&a, &text(first - Duration::milliseconds(1))).await.unwrap().balance, 0);
    assert_eq!(alice.balance_as_of(&a, "2000-01-01T00:00:00Z").await.unwrap().balance, 0, "before the account");
    // An offset other than Z names the same instant.
    let last = instant(&entries[4].created_at);
    let in_paris = last.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap()).to_rfc3339();
    assert_eq!(alice.balance_as_of(&a, &in_paris).await.unwrap().balance, 430);
    // Now, the plain balance agrees.
    let now = alice.balance_as_of(&a, &text(Utc::now())).await.unwrap();
    assert_eq!(now, alice.balance(&a).await.unwrap());
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_as_of_balance_is_refused_for_the_future_a_bad_instant_and_others_accounts() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let path = |query: &str| format!("/api/accounts/{}/balance?{query}", pair.a);
    let token = Some(pair.alice.token.as_str());
    let future = text(Utc::now() + Duration::minutes(5));
    for (query, message) in [
        (format!("asOf={future}"), "asOf must not be in the future"),
        ("asOf=yesterday".into(), "asOf must be an RFC 3339 date-time with an offset, such as 2026-01-31T23:59:59Z"),
        (
            "asOf=2026-01-31T23:59:59".into(),
            "asOf must be an RFC 3339 date-time with an offset, such as 2026-01-31T23:59:59Z",
        ),
        ("asOf=2026-01-31T23:59:59.0001Z".into(), "asOf must be given to the millisecond at most"),
        ("asOf=".into(), "asOf must be an RFC 3339 date-time with an offset, such as 2026-01-31T23:59:59Z"),
    ] {
        let answer = app.call("GET", &path(&query), token, None).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(
            (answer.1["error"]["field"].as_str(), answer.1["error"]["message"].as_str()),
            (Some("asOf"), Some(message)),
            "{query}"
        );
    }
    let unknown = app.call("GET", &path("at=2026-01-01T00:00:00Z"), token, None).await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // Bob may not read Alice's past any more than her present; SYSTEM may.
    let bobs = app.as_user(&pair.bob).balance_as_of(&pair.a, "2026-01-01T00:00:00Z").await.unwrap_err();
    assert_eq!(bobs.code(), Some("ACCOUNT_NOT_FOUND"), "{bobs}");
    let system = app.as_user(&app.system).balance_as_of(&pair.a, "2026-01-01T00:00:00Z").await.unwrap();
    assert_eq!(system.balance, 0);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_as_of_balance_counts_the_holds_held_at_that_instant() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 1_000).await;
    let (alice, bob) = (app.as_user(&pair.alice), app.as_user(&pair.bob));
    let key = uuid::Uuid::new_v4().to_string();
    let hold = Transfer { from: &pair.a, to: &pair.b, amount: 600, idempotency_key: &key, description: None };
    let accepted = alice.hold(&hold, 300).await.unwrap();
    let held = alice.wait(&accepted.transaction.id, 30).await.unwrap();
    assert_eq!(held.status, "HELD");
    let void = alice.void_hold(&held.id, "void-it").await.unwrap();
    assert_eq!(alice.wait(&void.transaction.id, 30).await.unwrap().status, "COMPLETED");
    let voided = alice.transaction(&held.id).await.unwrap();
    assert_eq!(voided.status, "VOIDED");
    let decided = instant(held.completed_at.as_deref().expect("decided at"));
    let resolved = instant(voided.resolved_at.as_deref().expect("resolved at"));
    let ms = Duration::milliseconds(1);
    // (instant, Alice's balance, pendingDebits, available; Bob's pendingCredits)
    for (at, pending) in [(decided - ms, 0), (decided, 600), (resolved - ms, 600), (resolved, 0)] {
        let a = alice.balance_as_of(&pair.a, &text(at)).await.unwrap();
        assert_eq!(
            (a.balance, a.pending_debits, a.pending_credits, a.available),
            (1_000, pending, 0, 1_000 - pending),
            "{}",
            text(at)
        );
        let b = bob.balance_as_of(&pair.b, &text(at)).await.unwrap();
        assert_eq!((b.balance, b.pending_debits, b.pending_credits), (0, 0, pending), "{}", text(at));
    }
    assert_eq!(alice.balance(&pair.a).await.unwrap().pending_debits, 0);
    app.teardown().await;
}

/// Every page of the statement over `[from, to)`, checking that each repeats the window's
/// figures.
async fn every_page(user: &Client, account: &str, from: &str, to: &str, limit: i64) -> (StatementBody, Vec<EntryBody>) {
    let mut cursor: Option<String> = None;
    let mut entries = Vec::new();
    let mut first: Option<StatementBody> = None;
    loop {
        let query = StatementQuery { from, to, limit: Some(limit), cursor: cursor.as_deref() };
        let mut page = user.statement(account, &query).await.unwrap();
        assert!(page.entries.len() as i64 <= limit);
        entries.append(&mut page.entries);
        cursor = page.next_cursor.take();
        match &first {
            Some(f) => assert_eq!(&page, f, "every page carries the window's figures"),
            None => first = Some(page),
        }
        if cursor.is_none() {
            return (first.unwrap(), entries);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_sums_its_windows_entries_and_its_balances_add_up() {
    let app = spawn_app().await;
    let (alice, a, entries) = account_with_history(&app).await;
    let at = |i: usize| instant(&entries[i].created_at);
    let ms = Duration::milliseconds(1);
    let windows = [
        (at(0), at(4) + ms),      // the whole history
        (at(0) - ms, at(0)),      // nothing: the first entry is at `to`, which is exclusive
        (at(1), at(3)),           // from an entry (inclusive) to one (exclusive)
        (at(1) + ms, at(4) + ms), // from just after an entry
        (at(4) + ms, Utc::now()), // after the last entry
    ];
    for (from, to) in windows {
        let (from_s, to_s) = (text(from), text(to));
        let (s, listed) = every_page(&alice, &a, &from_s, &to_s, 2).await;
        let inside: Vec<&EntryBody> =
            entries.iter().filter(|e| from <= instant(&e.created_at) && instant(&e.created_at) < to).collect();
        let what = format!("[{from_s}, {to_s})");
        assert_eq!(listed.iter().collect::<Vec<_>>(), inside, "{what}: the window's entries, oldest first");
        let sum = |kind: &str| inside.iter().filter(|e| e.entry_type == kind).map(|e| e.amount).sum::<i64>();
        assert_eq!(
            (s.total_debits, s.total_credits, s.entry_count),
            (sum("DEBIT"), sum("CREDIT"), inside.len() as i64),
            "{what}"
        );
        assert_eq!(s.opening_balance, expected_at(&entries, from - ms), "{what}");
        assert_eq!(s.closing_balance, expected_at(&entries, to - ms), "{what}");
        assert_eq!(s.opening_balance + s.total_credits - s.total_debits, s.closing_balance, "{what}");
        assert_eq!(
            (s.from.as_str(), s.to.as_str(), s.account_id.as_str(), s.currency.as_str()),
            (from_s.as_str(), to_s.as_str(), a.as_str(), "USD")
        );
    }
    // Consecutive windows: the closing balance of one opens the next, and no entry is
    // counted twice.
    let (early, _) = every_page(&alice, &a, &text(at(0)), &text(at(2)), 100).await;
    let (late, _) = every_page(&alice, &a, &text(at(2)), &text(at(4) + ms), 100).await;
    assert_eq!(early.closing_balance, late.opening_balance);
    assert_eq!(early.entry_count + late.entry_count, 5);
    // One page of the default size holds the window; the last page has no cursor.
    let query = StatementQuery { from: &text(at(0)), to: &text(at(4) + ms), limit: None, cursor: None };
    let whole = alice.statement(&a, &query).await.unwrap();
    assert_eq!((whole.entries.len(), whole.next_cursor), (5, None));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_window_must_be_ordered_past_and_at_most_366_days() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let token = Some(pair.alice.token.as_str());
    let now = Utc::now();
    let future = text(now + Duration::minutes(5));
    let cases = [
        ("from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(), "to", "to must be later than from"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(), "to", "to must be later than from"),
        (format!("from=2026-01-01T00:00:00Z&to={future}"), "to", "to must not be in the future"),
        (
            "from=2024-01-01T00:00:00Z&to=2025-01-01T00:00:00.001Z".to_owned(),
            "to",
            "to must be at most 366 days after from",
        ),
        ("to=2026-01-01T00:00:00Z".to_owned(), "from", "from is required"),
        ("from=2026-01-01T00:00:00Z".to_owned(), "to", "to is required"),
        (
            "from=soon&to=2026-01-01T00:00:00Z".to_owned(),
            "from",
            "from must be an RFC 3339 date-time with an offset, such as 2026-01-31T23:59:59Z",
        ),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&cursor=0".to_owned(),
            "cursor",
            "cursor must be a cursor returned by this endpoint",
        ),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&limit=101".to_owned(),
            "limit",
            "limit must be an integer from 1 to 100",
        ),
    ];
    for (query, field, message) in cases {
        let answer = app.call("GET", &format!("/api/accounts/{}/statement?{query}", pair.a), token, None).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        let error = &answer.1["error"];
        assert_eq!((error["field"].as_str(), error["message"].as_str()), (Some(field), Some(message)), "{query}");
    }
    let query = StatementQuery { from: "2025-01-01T00:00:00Z", to: "2026-01-01T00:00:00Z", limit: None, cursor: None };
    let bobs = app.as_user(&pair.bob).statement(&pair.a, &query).await.unwrap_err();
    assert_eq!(bobs.code(), Some("ACCOUNT_NOT_FOUND"), "{bobs}");
    // A year to the millisecond, ending now, is a statement: of nothing yet.
    let year = StatementQuery { from: &text(now - Duration::days(366)), to: &text(now), limit: None, cursor: None };
    let empty = app.as_user(&pair.alice).statement(&pair.a, &year).await.unwrap();
    assert_eq!((empty.opening_balance, empty.closing_balance, empty.entry_count, empty.entries.len()), (0, 0, 0, 0));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_as_of_is_one_index_step_whatever_the_history() {
    let app = spawn_app().await;
    let (_, a, entries) = account_with_history(&app).await;
    let id: AccountId = a.parse().unwrap();
    for entry in &entries {
        let plan = app.store.explain_balance_as_of(id, instant(&entry.created_at)).await.unwrap();
        assert_eq!((plan.keys_examined, plan.docs_examined), (1, 1), "as of entry {}", entry.seq);
    }
    // Before the first entry, the one key examined is past the account's range: none match.
    let before = instant(&entries[0].created_at) - Duration::milliseconds(1);
    let plan = app.store.explain_balance_as_of(id, before).await.unwrap();
    assert!(plan.keys_examined <= 1 && plan.docs_examined == 0, "{plan:?}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_statement_prints_the_same_figures_as_text_and_csv() {
    let app = spawn_app().await;
    let (alice, a, entries) = account_with_history(&app).await;
    let (from, to) = (entries[1].created_at.clone(), text(instant(&entries[4].created_at) + Duration::milliseconds(1)));
    let query = StatementQuery { from: &from, to: &to, limit: None, cursor: None };
    let api = alice.statement(&a, &query).await.unwrap();

    let (code, csv) = app.run_cli(&["admin", "statement", &a, "--from", &from, "--to", &to, "--csv"]).await;
    assert_eq!(code, 0, "{csv}");
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["row", "seq", "createdAt", "type", "amount", "balanceAfter", "transactionId"]);
    assert_eq!(rows[1], ["opening", "", from.as_str(), "", "", &api.opening_balance.to_string(), ""]);
    let listed: Vec<Vec<String>> =
        rows[2..rows.len() - 3].iter().map(|r| r.iter().map(|c| (*c).to_owned()).collect()).collect();
    let want: Vec<Vec<String>> = api
        .entries
        .iter()
        .map(|e| {
            [
                "entry".to_owned(),
                e.seq.to_string(),
                e.created_at.clone(),
                e.entry_type.clone(),
                e.amount.to_string(),
                e.balance_after.to_string(),
                e.transaction_id.clone(),
            ]
            .to_vec()
        })
        .collect();
    assert_eq!(listed, want);
    let tail = &rows[rows.len() - 3..];
    assert_eq!(tail[0], ["debits", "", "", "DEBIT", &api.total_debits.to_string(), "", ""]);
    assert_eq!(tail[1], ["credits", "", "", "CREDIT", &api.total_credits.to_string(), "", ""]);
    assert_eq!(tail[2], ["closing", "", to.as_str(), "", "", &api.closing_balance.to_string(), ""]);

    let (code, out) = app.run_cli(&["admin", "statement", &a, "--from", &from, "--to", &to]).await;
    assert_eq!(code, 0, "{out}");
    for e in &api.entries {
        assert!(out.contains(&e.transaction_id), "{out}");
    }
    let figures = [api.opening_balance, api.total_debits, api.total_credits, api.closing_balance, api.entry_count];
    let line = out.lines().rev().find(|l| l.contains(&api.closing_balance.to_string())).unwrap_or_default();
    let numbers: Vec<i64> =
        line.split(|c: char| !c.is_ascii_digit() && c != '-').filter_map(|n| n.parse().ok()).collect();
    assert_eq!(numbers, figures, "{out}");
    // A window that ends in the future is refused as the API refuses it.
    let future = text(Utc::now() + Duration::minutes(5));
    let (code, out) = app.run_cli(&["admin", "statement", &a, "--from", &from, "--to", &future]).await;
    assert_ne!(code, 0, "{out}");
    app.teardown().await;
}
