//! Metadata, references and search: labels on transactions and accounts, the listing's
//! filters, and finding a transaction by the idempotency key its client chose.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use ledgerflow_client::Search;
use ledgerflow_domain::{
    AccountId, Amount, Currency, IdempotencyKey, Initiator, Metadata, TransactionId, TransferCommand, TransferKind,
    TransferRequest,
};
use ledgerflow_store::search::METADATA_INDEX;
use ledgerflow_store::{SearchFilter, Store, TransactionFilter};
use ledgerflow_tests::serde_json::json;
use ledgerflow_tests::{assert_error, spawn_app, test_settings};
use reqwest::StatusCode;

/// The amounts of the first page `who` finds with `search`.
async fn found(search: Search<'_>, who: ledgerflow_client::Client) -> Vec<i64> {
    let page = who.search_transactions(&search).await.expect("a page");
    page.transactions.into_iter().map(|t| t.amount).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn transfer<'a>(from: &'a str, to: &'a str, amount: i64, key: &'a str) -> ledgerflow_client::Transfer<'a> {
    ledgerflow_client::Transfer { from, to, amount, idempotency_key: key, description: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_recorded_answered_and_part_of_the_request_under_its_key() {
    let app = spawn_app().await;
    let p = app.alice_and_bob().await;
    app.fund(&p.a, 1_000).await;
    let alice = app.as_user(&p.alice);
    let order = labels(&[("orderId", "A-17"), ("channel", "web")]);

    let accepted = app.must("transfer", alice.transfer_with_metadata(&transfer(&p.a, &p.b, 100, "o-1"), &order).await);
    assert_eq!(accepted.transaction.metadata.as_ref(), Some(&order));
    let done = app.settled(&p.alice, &accepted.transaction.id).await;
    assert_eq!((done.status.as_str(), done.metadata.as_ref()), ("COMPLETED", Some(&order)));
    // The receiver sees it too.
    let seen = app.must("as bob", app.as_user(&p.bob).transaction(&accepted.transaction.id).await);
    assert_eq!(seen.metadata.as_ref(), Some(&order));

    // The same request again is a repeat; other labels under the key are another request.
    let again = app.must("repeat", alice.transfer_with_metadata(&transfer(&p.a, &p.b, 100, "o-1"), &order).await);
    assert!(again.repeat);
    let other = alice.transfer_with_metadata(&transfer(&p.a, &p.b, 100, "o-1"), &labels(&[("orderId", "A-18")])).await;
    assert_eq!(other.err().and_then(|e| e.code().map(str::to_owned)).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
    let bare = alice.transfer(&transfer(&p.a, &p.b, 100, "o-1")).await;
    assert_eq!(bare.err().and_then(|e| e.code().map(str::to_owned)).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
    // `{}` is no metadata: the same request as one without any.
    let plain = app.must("plain", alice.transfer(&transfer(&p.a, &p.b, 5, "plain")).await);
    assert_eq!(plain.transaction.metadata, None);
    let empty = app.must("empty", alice.transfer_with_metadata(&transfer(&p.a, &p.b, 5, "plain"), &labels(&[])).await);
    assert!(empty.repeat);

    // Refused by the key that is wrong, and why.
    for (metadata, message) in [
        (json!({"bad key": "x"}), "metadata key \"bad key\" must be 1 to 64 characters"),
        (json!({"note": "x".repeat(513)}), "metadata value of \"note\" must be at most 512 characters"),
        (json!({"note": "refund \u{202e}001"}), "metadata value of \"note\" must not contain control or invisible"),
        (json!({"n": 5}), "metadata value of \"n\" must be a string"),
        (json!(["x"]), "metadata must be an object of string values"),
    ] {
        let body =
            json!({"fromAccount": p.a, "toAccount": p.b, "amount": 1, "idempotencyKey": "bad", "metadata": metadata});
        let got = app.call("POST", "/transactions", Some(&p.alice.token), Some(body)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(got.1["error"]["field"], "metadata", "{}", got.1);
        assert!(got.1["error"]["message"].as_str().unwrap().starts_with(message), "{}", got.1);
    }
    let many: serde_json::Map<String, serde_json::Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let body = json!({"fromAccount": p.a, "toAccount": p.b, "amount": 1, "idempotencyKey": "bad", "metadata": many});
    let got = app.call("POST", "/transactions", Some(&p.alice.token), Some(body)).await;
    assert_eq!(got.1["error"]["message"], "metadata must have at most 16 keys");

    // A hold and its settlement carry their own labels.
    let hold = json!({"fromAccount": p.a, "toAccount": p.b, "amount": 50, "idempotencyKey": "h-1",
        "hold": {"timeoutSeconds": 600}, "metadata": {"cart": "c-9"}});
    let (status, held) = app.call("POST", "/transactions", Some(&p.alice.token), Some(hold)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{held}");
    let hold_id = held["transaction"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled(&p.alice, &hold_id).await.status, "HELD");
    let post = json!({"idempotencyKey": "cap-1", "metadata": {"capture": "1"}});
    let (status, posted) =
        app.call("POST", &format!("/transactions/{hold_id}/post"), Some(&p.alice.token), Some(post)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{posted}");
    assert_eq!(posted["transaction"]["metadata"], json!({"capture": "1"}));
    let hold_now = app.must("the hold", alice.transaction(&hold_id).await);
    assert_eq!(hold_now.metadata, Some(labels(&[("cart", "c-9")])));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_found_by_its_callers_idempotency_key_only() {
    let app = spawn_app().await;
    let p = app.alice_and_bob().await;
    app.fund(&p.a, 1_000).await;
    let (alice, bob) = (app.as_user(&p.alice), app.as_user(&p.bob));
    // Any visible ASCII key, `/`, `?`, `%` and `#` included, is one path segment once encoded.
    let key = "inv/2026-12?#1%";
    let accepted = app.must("transfer", alice.transfer(&transfer(&p.a, &p.b, 10, key)).await);
    let found = app.must("by key", alice.transaction_by_key(key).await);
    assert_eq!((found.id.as_str(), found.idempotency_key.as_str()), (accepted.transaction.id.as_str(), key));

    // Bob's own transfer under the same key is his, and Alice's is not his to find by key.
    let b2 = app.open_account(&p.bob).await;
    app.fund(&p.b, 100).await;
    let his = app.must("bob's", bob.transfer(&transfer(&p.b, &b2, 1, key)).await);
    assert_eq!(app.must("bob by key", bob.transaction_by_key(key).await).id, his.transaction.id);
    assert_eq!(app.must("alice by key", alice.transaction_by_key(key).await).id, accepted.transaction.id);
    for (who, key) in [(&alice, "never-used"), (&app.as_user(&app.system), key)] {
        let missing = who.transaction_by_key(key).await.expect_err("not the caller's");
        assert_eq!((missing.status(), missing.code()), (Some(404), Some("TRANSACTION_NOT_FOUND")));
    }
    let stranger = app.register().await;
    let missing = app.as_user(&stranger).transaction_by_key(key).await.expect_err("a stranger's");
    assert_eq!(missing.code(), Some("TRANSACTION_NOT_FOUND"));
    // Under /api too; a key that is no key is refused as such.
    let (status, body) =
        app.call("GET", "/api/transactions/by-key/inv%2F2026-12%3F%231%25", Some(&p.alice.token), None).await;
    assert_eq!((status, body["transaction"]["id"].as_str()), (StatusCode::OK, Some(accepted.transaction.id.as_str())));
    let bad = app.call("GET", "/transactions/by-key/has%20space", Some(&p.alice.token), None).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let unauthenticated = app.call("GET", "/transactions/by-key/x", None, None).await;
    assert_error(&unauthenticated, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_metadata_is_set_whole_by_its_owner_or_system() {
    let app = spawn_app().await;
    let (alice, eve) = (app.register().await, app.register().await);
    let client = app.as_user(&alice);
    let opened =
        app.must("open", client.open_account_with_metadata(Some("EUR"), &labels(&[("purpose", "rent")])).await);
    assert_eq!((opened.currency.as_str(), opened.metadata.clone()), ("EUR", labels(&[("purpose", "rent")])));
    let plain = app.must("open plain", client.open_account(None).await);
    assert!(plain.metadata.is_empty());

    let replaced = labels(&[("team", "ops"), ("cost.center", "42")]);
    let set = app.must("set", client.set_account_metadata(&opened.id, &replaced).await);
    assert_eq!(set.metadata, replaced, "replaced whole: `purpose` is gone");
    let (_, read) = app.call("GET", &format!("/api/accounts/{}", opened.id), Some(&alice.token), None).await;
    assert_eq!(read["metadata"], json!({"team": "ops", "cost.center": "42"}));
    let by_system = app.must("system", app.as_user(&app.system).set_account_metadata(&opened.id, &labels(&[])).await);
    assert!(by_system.metadata.is_empty());

    let by_eve = app.as_user(&eve).set_account_metadata(&opened.id, &replaced).await.expect_err("not eve's");
    assert_eq!((by_eve.status(), by_eve.code()), (Some(404), Some("ACCOUNT_NOT_FOUND")));
    let path = format!("/api/accounts/{}/metadata", opened.id);
    let bad = app.call("PATCH", &path, Some(&alice.token), Some(json!({"metadata": {"a b": "x"}}))).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(bad.1["error"]["field"], "metadata");
    let missing = app.call("PATCH", &path, Some(&alice.token), Some(json!({}))).await;
    assert_eq!(missing.1["error"]["message"], "metadata is required");
    let bad = app.call("POST", "/api/accounts", Some(&alice.token), Some(json!({"metadata": {"k": "\u{7}"}}))).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_combine_with_each_other_visibility_and_the_cursor() {
    let app = spawn_app().await;
    let p = app.alice_and_bob().await;
    app.fund(&p.a, 10_000).await;
    let alice = app.as_user(&p.alice);
    let before = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut ids = Vec::new();
    for (i, (order, amount)) in [("o-1", 100), ("o-2", 200), ("o-1", 300), ("o-3", 400)].into_iter().enumerate() {
        let m = labels(&[("order", order), ("shop", "north")]);
        let t = app
            .must("transfer", alice.transfer_with_metadata(&transfer(&p.a, &p.b, amount, &format!("k{i}")), &m).await);
        ids.push(app.settled(&p.alice, &t.transaction.id).await.id);
    }
    let after = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let order1 = || Search { metadata: vec![("order", "o-1")], ..Search::default() };
    assert_eq!(found(order1(), alice.clone()).await, vec![300, 100], "newest first");
    assert_eq!(found(order1(), app.as_user(&p.bob)).await, vec![300, 100], "the receiver sees them");
    assert_eq!(found(order1(), app.as_user(&app.register().await)).await, Vec::<i64>::new(), "a stranger does not");
    assert_eq!(found(order1(), app.as_user(&app.system)).await, vec![300, 100], "SYSTEM sees all");
    let both =
        Search { metadata: vec![("order", "o-1"), ("shop", "north")], min_amount: Some(150), ..Search::default() };
    assert_eq!(found(both, alice.clone()).await, vec![300]);
    let none = Search { metadata: vec![("order", "o-1"), ("shop", "south")], ..Search::default() };
    assert_eq!(found(none, alice.clone()).await, Vec::<i64>::new(), "every key must match");
    let range = Search { min_amount: Some(200), max_amount: Some(300), kind: Some("TRANSFER"), ..Search::default() };
    assert_eq!(found(range, alice.clone()).await, vec![300, 200]);
    let funding = Search { kind: Some("INITIAL_FUNDS"), ..Search::default() };
    assert_eq!(found(funding, app.as_user(&app.system)).await, vec![10_000]);

    // Created in the window: the four transfers; before it, the funding; after it, nothing.
    let (window, until, account) = (before.as_str(), after.as_str(), p.a.as_str());
    let inside =
        Search { created_from: Some(window), created_to: Some(until), account: Some(account), ..Search::default() };
    assert_eq!(found(inside, alice.clone()).await, vec![400, 300, 200, 100]);
    let earlier = Search { created_to: Some(window), account: Some(account), ..Search::default() };
    assert_eq!(found(earlier, alice.clone()).await, vec![10_000], "only the funding came before");
    let later = Search { created_from: Some(until), ..Search::default() };
    assert_eq!(found(later, alice.clone()).await, Vec::<i64>::new());

    // The cursor pages through a filtered listing.
    let first = app.must("page 1", alice.search_transactions(&Search { limit: Some(1), ..order1() }).await);
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = app
        .must("page 2", alice.search_transactions(&Search { limit: Some(1), cursor: Some(&cursor), ..order1() }).await);
    let pages: Vec<&str> = first.transactions.iter().chain(&second.transactions).map(|t| t.id.as_str()).collect();
    assert_eq!(pages, vec![ids[2].as_str(), ids[0].as_str()]);
    let third = app.must(
        "page 3",
        alice.search_transactions(&Search { limit: Some(1), cursor: second.next_cursor.as_deref(), ..order1() }).await,
    );
    assert!(third.transactions.is_empty() && third.next_cursor.is_none());

    // Bad filters are refused by name.
    let got = app.call("GET", "/transactions?metadata.a%20b=1", Some(&p.alice.token), None).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(got.1["error"]["field"], "metadata.a b");
    let got = app.call("GET", "/transactions?createdFrom=yesterday", Some(&p.alice.token), None).await;
    assert_eq!(got.1["error"]["field"], "createdFrom");
    let got = app.call("GET", "/transactions?minAmount=5&maxAmount=4", Some(&p.alice.token), None).await;
    assert_eq!(got.1["error"]["field"], "maxAmount");
    app.teardown().await;
}

/// 10,000 transactions with metadata, 100 of them in batch 7: a search for the batch reads
/// about as many index keys and documents as it returns, through the one metadata index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_search_over_ten_thousand_transactions_reads_only_its_index_range() {
    let settings = test_settings("test");
    let store = Store::connect(&settings.connections.mongodb_uri, &settings.connections.mongodb_db).await.unwrap();
    store.ensure_indexes().await.unwrap();
    let (from, to) = (AccountId::generate(), AccountId::generate());
    let initiator: Initiator = "service:bulk".parse().unwrap();
    let commands: Vec<TransferCommand> = (0..10_000)
        .map(|i| {
            let batch = (i % 100).to_string();
            let order = format!("o-{i}");
            let metadata = Metadata::from_pairs([("batch", batch.as_str()), ("order", order.as_str())]).unwrap();
            let request = TransferRequest::new(
                TransferKind::Transfer,
                from,
                to,
                Amount::new(1 + i64::from(i % 1_000)).unwrap(),
                Currency::USD,
                None,
            )
            .unwrap()
            .with_metadata(Some(metadata));
            TransferCommand {
                transaction_id: Some(TransactionId::generate()),
                request,
                idempotency_key: format!("bulk-{i}").parse::<IdempotencyKey>().unwrap(),
                initiator: initiator.clone(),
                requested_at: Utc::now(),
            }
        })
        .collect();
    for chunk in commands.chunks(1_000) {
        for result in store.insert_pending_many(chunk).await {
            result.unwrap();
        }
    }
    let batch7 = |search: SearchFilter| TransactionFilter {
        search: SearchFilter {
            metadata: vec![("batch".parse().unwrap(), ledgerflow_domain::MetadataValue::parse("batch", "7").unwrap())],
            ..search
        },
        limit: 100,
        ..TransactionFilter::default()
    };

    let found = store.list_transactions(&batch7(SearchFilter::default())).await.unwrap();
    assert_eq!(found.len(), 100);
    assert!(found.iter().all(|t| t.metadata.as_ref().and_then(|m| m.get("batch")) == Some("7")));
    assert!(found.windows(2).all(|w| w[0].id.to_string() > w[1].id.to_string()), "newest first");

    let plan = store.explain_transactions(&batch7(SearchFilter::default())).await.unwrap();
    assert_eq!(plan.indexes, vec![METADATA_INDEX.to_owned()], "{plan:?}");
    assert!(!plan.stages.iter().any(|s| s == "COLLSCAN" || s == "SORT"), "{plan:?}");
    assert_eq!(plan.returned, 100, "{plan:?}");
    assert!(plan.keys_examined <= 101 && plan.docs_examined <= 100, "{plan:?}");

    // Combined with an amount range and a time window, the same index range is read (the
    // other bounds are checked on the documents it leads to), still without a sort.
    let window = SearchFilter {
        created_from: Some(Utc::now() - chrono::Duration::hours(1)),
        created_to: Some(Utc::now() + chrono::Duration::hours(1)),
        min_amount: Some(Amount::new(500).unwrap()),
        ..SearchFilter::default()
    };
    let found = store.list_transactions(&batch7(window.clone())).await.unwrap();
    assert_eq!(found.len(), 50, "batch 7 is amounts 8, 108 … 908: half of them at least 500");
    let plan = store.explain_transactions(&batch7(window)).await.unwrap();
    assert!(plan.indexes.contains(&METADATA_INDEX.to_owned()), "{plan:?}");
    assert!(!plan.stages.iter().any(|s| s == "COLLSCAN" || s == "SORT"), "{plan:?}");
    assert!(plan.docs_examined <= 100, "{plan:?}");
    store.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_command_carries_metadata_to_its_record_and_result() {
    let app = spawn_app().await;
    let p = app.alice_and_bob().await;
    app.fund(&p.a, 1_000).await;
    let mut command = app.upstream_command(&p.a, &p.b, 250, "payroll-7");
    command["metadata"] = json!({"payrollRun": "2026-11", "employee": "e-7"});
    let schema = jsonschema::validator_for(&ledgerflow_tests::schema("transfer-command.v1.schema.json")).unwrap();
    assert!(schema.is_valid(&command), "the schema takes {command}");
    let mut bad = command.clone();
    bad["metadata"] = json!({"bad key": "x"});
    assert!(!schema.is_valid(&bad), "the schema refuses a bad key too");
    app.publish_raw(&p.a, &serde_json::to_vec(&command).unwrap()).await;
    let record = app.wait_upstream("payroll-7").await;
    assert_eq!(record.status.to_string(), "COMPLETED");
    assert_eq!(record.metadata.as_ref().and_then(|m| m.get("employee")), Some("e-7"));

    let results = app.drain_queue(&app.topology.results(), 2, 10).await;
    let result = results.iter().find(|r| r["idempotencyKey"] == "payroll-7").cloned().unwrap_or_default();
    assert_eq!(result["metadata"], json!({"payrollRun": "2026-11", "employee": "e-7"}), "{results:?}");
    let schema = jsonschema::validator_for(&ledgerflow_tests::schema("transfer-result.v1.schema.json")).unwrap();
    assert!(results.iter().all(|r| schema.is_valid(r)), "the schema takes every result: {results:?}");
    // SYSTEM finds it by its labels like any other.
    let search = Search { metadata: vec![("employee", "e-7")], ..Search::default() };
    assert_eq!(found(search, app.as_user(&app.system)).await, vec![250]);
    app.teardown().await;
}

/// Transactions stored before the `accounts` field (a journal's accounts then sat in
/// `legAccounts`, each role had an index of its own) are given it at startup, are found by
/// any of their accounts through the one index, and the indexes it replaced are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_stored_before_the_accounts_field_are_found_by_any_account_after_startup() {
    use mongodb::IndexModel;
    use mongodb::bson::{Document, doc};
    let app = spawn_app().await;
    let p = app.alice_and_bob().await;
    let a2 = app.open_account(&p.alice).await;
    app.fund(&p.a, 1_000).await;
    let alice = app.as_user(&p.alice);
    let moved = app.must("transfer", alice.transfer(&transfer(&p.a, &p.b, 100, "t")).await).transaction.id;
    let journal = app.must("journal", alice.journal(&[(&p.a, &a2, 30), (&a2, &p.b, 20)], "j", None).await);
    let journal = journal.transaction.id;
    for id in [&moved, &journal] {
        assert_eq!(app.settled(&p.alice, id).await.status, "COMPLETED");
    }

    // As an older version stored them, with its indexes.
    let transactions = app.raw_db().await.collection::<Document>("transactions");
    transactions.update_many(doc! {}, doc! { "$unset": { "accounts": "" } }).await.unwrap();
    let legs = doc! { "$set": { "legAccounts": [&p.a, &a2, &p.b] } };
    transactions.update_one(doc! { "_id": &journal }, legs).await.unwrap();
    for role in ["fromAccount", "toAccount", "legAccounts"] {
        transactions.create_index(IndexModel::builder().keys(doc! { role: 1, "_id": -1 }).build()).await.unwrap();
    }
    let by = |account: &str| TransactionFilter {
        account: Some(account.parse().unwrap()),
        limit: 100,
        ..TransactionFilter::default()
    };
    let ids = |found: Vec<ledgerflow_store::TransactionRecord>| -> Vec<String> {
        found.into_iter().map(|t| t.id.to_string()).collect()
    };
    assert_eq!(ids(app.store.list_transactions(&by(&p.b)).await.unwrap()), Vec::<String>::new());

    app.store.ensure_indexes().await.unwrap();
    assert_eq!(ids(app.store.list_transactions(&by(&p.b)).await.unwrap()), [journal.clone(), moved.clone()]);
    assert_eq!(ids(app.store.list_transactions(&by(&a2)).await.unwrap()), std::slice::from_ref(&journal));
    let stored = transactions.find_one(doc! { "_id": &journal }).await.unwrap().unwrap();
    let mut accounts: Vec<&str> = stored.get_array("accounts").unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    accounts.sort_unstable();
    let mut expected = [p.a.as_str(), a2.as_str(), p.b.as_str()];
    expected.sort_unstable();
    assert_eq!(accounts, expected);
    assert!(!stored.contains_key("legAccounts"), "{stored:?}");
    let names = transactions.list_index_names().await.unwrap();
    assert!(!names.iter().any(|n| n.contains("fromAccount") || n.contains("toAccount") || n.contains("legAccounts")));
    let plan = app.store.explain_transactions(&by(&p.b)).await.unwrap();
    assert_eq!(plan.indexes, ["accounts_1__id_-1"], "{plan:?}");
    assert!(!plan.stages.iter().any(|s| s == "COLLSCAN" || s == "SORT"), "{plan:?}");
    // Every start looks for transactions still without accounts: through an index, not a
    // scan of the collection.
    let db = app.raw_db().await;
    let look = doc! { "find": "transactions", "filter": { "accounts": null } };
    let explained = db.run_command(doc! { "explain": look, "verbosity": "queryPlanner" }).await.unwrap();
    let winning = explained.get_document("queryPlanner").unwrap().get_document("winningPlan").unwrap().to_string();
    assert!(!winning.contains("COLLSCAN") && winning.contains("IXSCAN"), "{winning}");
    // With nothing left to fill in or drop, starting up again changes nothing.
    app.store.ensure_indexes().await.unwrap();
    assert_eq!(ids(app.store.list_transactions(&by(&p.b)).await.unwrap()), [journal, moved]);
    app.teardown().await;
}
