//! Journals: several legs committed all or none, against the real services.

use futures::future::join_all;
use ledgerflow_client::Client;
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{TestApp, assert_error, schema, spawn_app, spawn_app_with};
use reqwest::StatusCode;

/// Sends a journal as `user` and waits for the worker's decision.
async fn journal(user: &Client, legs: &[(&str, &str, i64)], key: &str) -> ledgerflow_client::TransactionBody {
    let accepted = user.journal(legs, key, None).await.unwrap();
    let t = &accepted.transaction;
    assert_eq!((t.kind.as_str(), t.status.as_str()), ("JOURNAL", "PENDING"));
    assert_eq!(t.legs.as_ref().map(Vec::len), Some(legs.len()), "the answer lists the legs");
    user.wait(&t.id, 30).await.unwrap()
}

async fn balances(app: &TestApp, accounts: &[&str]) -> Vec<i64> {
    let mut out = Vec::new();
    for account in accounts {
        out.push(app.balance(&app.system.token, account).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_whose_third_leg_lacks_funds_moves_nothing_and_one_that_chains_moves_all() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let a2 = app.open_account(&pair.alice).await;
    app.fund(&pair.a, 1_000).await;
    let alice = app.as_user(&pair.alice);
    let accounts = [pair.a.as_str(), a2.as_str(), pair.b.as_str()];

    // The third leg would need 500 on a2, which holds 50 after the second.
    let failed = journal(&alice, &[(&pair.a, &pair.b, 100), (&pair.a, &a2, 50), (&a2, &pair.b, 500)], "j-fails").await;
    assert_eq!(
        (failed.status.as_str(), failed.failure_reason.as_deref(), failed.failed_leg),
        ("FAILED", Some("INSUFFICIENT_FUNDS"), Some(2))
    );
    assert_eq!(balances(&app, &accounts).await, [1_000, 0, 0]);
    for account in &accounts {
        let entries = app.entries(&app.system.token, account).await;
        assert!(entries.iter().all(|e| e["transactionId"] != failed.id.as_str()), "no entry on {account}");
    }

    // The second leg spends what the first credited.
    let done = journal(&alice, &[(&pair.a, &a2, 300), (&a2, &pair.b, 200)], "j-chains").await;
    assert_eq!((done.status.as_str(), done.failed_leg), ("COMPLETED", None));
    assert_eq!(balances(&app, &accounts).await, [700, 100, 200]);
    let on_a2 = app.entries(&app.system.token, &a2).await;
    let legs: Vec<(Value, Value)> = on_a2.iter().map(|e| (e["type"].clone(), e["leg"].clone())).collect();
    assert_eq!(legs, [(json!("DEBIT"), json!(1)), (json!("CREDIT"), json!(0))], "newest first: {on_a2:?}");
    let (code, out) = app.run_cli(&["admin", "transaction", &done.id]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("1: {a2} -> {} 200 USD", pair.b)) && out.contains("4 entries"), "{out}");

    // Bob is credited by the second leg only, and sees the journal, in his listing too.
    let bob = app.as_user(&pair.bob);
    assert_eq!(bob.transaction(&done.id).await.unwrap().legs, done.legs);
    let listed = bob.transactions().await.unwrap().transactions;
    assert!(listed.iter().any(|t| t.id == done.id), "bob's list has the journal");
    let path = format!("/transactions?account={}&kind=JOURNAL", pair.b);
    let (status, page) = app.call("GET", &path, Some(&pair.bob.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["transactions"][0]["id"], done.id.as_str(), "{page}");

    // Reversing takes money back out of every credited account: Bob owns only one of them.
    let refused = bob.reverse(&done.id, "undo", None).await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    let system = app.as_user(&app.system);
    let reversal = system.reverse(&done.id, "undo", Some("ordered by support")).await.unwrap().transaction;
    let legs = reversal.legs.clone().expect("a journal's reversal lists its legs");
    let moved: Vec<(&str, &str, i64)> =
        legs.iter().map(|l| (l.from_account.as_str(), l.to_account.as_str(), l.amount)).collect();
    assert_eq!(moved, [(pair.b.as_str(), a2.as_str(), 200), (a2.as_str(), pair.a.as_str(), 300)]);
    let reversal = system.wait(&reversal.id, 30).await.unwrap();
    assert_eq!(reversal.status, "COMPLETED", "{reversal:?}");
    assert_eq!(balances(&app, &accounts).await, [1_000, 0, 0]);
    assert_eq!(system.transaction(&done.id).await.unwrap().reversed_by, Some(reversal.id));
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_is_refused_at_once_for_what_the_gateway_can_judge() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let token = pair.alice.token.clone();
    let post = |body: Value| {
        let token = token.clone();
        let app = &app;
        async move { app.call("POST", "/transactions", Some(&token), Some(body)).await }
    };
    let leg = |from: &str, to: &str| json!({"fromAccount": from, "toAccount": to, "amount": 5});
    let one = post(json!({"idempotencyKey": "j1", "legs": [leg(&pair.a, &pair.b)]})).await;
    assert_error(&one, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(one.1["error"]["field"], "legs", "{one:?}");
    let many: Vec<Value> = (0..17).map(|_| leg(&pair.a, &pair.b)).collect();
    assert_error(
        &post(json!({"idempotencyKey": "j2", "legs": many})).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );
    let beside =
        post(json!({"idempotencyKey": "j3", "amount": 5, "legs": [leg(&pair.a, &pair.b), leg(&pair.a, &pair.b)]}))
            .await;
    assert_error(&beside, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(beside.1["error"]["field"], "amount", "{beside:?}");
    let same = post(json!({"idempotencyKey": "j4", "legs": [leg(&pair.a, &pair.b), leg(&pair.a, &pair.a)]})).await;
    assert_error(&same, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // Bob's account as a debited account: as unknown to Alice as any other.
    let foreign = post(json!({"idempotencyKey": "j5", "legs": [leg(&pair.a, &pair.b), leg(&pair.b, &pair.a)]})).await;
    assert_error(&foreign, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    let euros = app.as_user(&pair.bob).open_account(Some("EUR")).await.unwrap().id;
    let mixed = post(json!({"idempotencyKey": "j6", "legs": [leg(&pair.a, &pair.b), leg(&pair.a, &euros)]})).await;
    assert_error(&mixed, StatusCode::UNPROCESSABLE_ENTITY, "CURRENCY_MISMATCH");
    // A transfer still names its accounts and amount.
    let bare = post(json!({"idempotencyKey": "j7", "toAccount": pair.b, "amount": 5})).await;
    assert_error(&bare, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(bare.1["error"]["field"], "fromAccount", "{bare:?}");
    // A repeat is a repeat; the same key with other legs is a conflict.
    app.fund(&pair.a, 100).await;
    let alice = app.as_user(&pair.alice);
    let legs = [(pair.a.as_str(), pair.b.as_str(), 5), (pair.a.as_str(), pair.b.as_str(), 6)];
    let first = alice.journal(&legs, "j8", None).await.unwrap();
    let again = alice.journal(&legs, "j8", None).await.unwrap();
    assert!(again.repeat && again.transaction.id == first.transaction.id);
    let other = [(pair.a.as_str(), pair.b.as_str(), 6), (pair.a.as_str(), pair.b.as_str(), 5)];
    assert_eq!(alice.journal(&other, "j8", None).await.unwrap_err().code(), Some("IDEMPOTENCY_KEY_REUSED"));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_journals_sharing_accounts_leave_exact_balances() {
    let app = spawn_app_with(2).await;
    let pair = app.alice_and_bob().await;
    let (a2, b2) = (app.open_account(&pair.alice).await, app.open_account(&pair.bob).await);
    app.fund(&pair.a, 10_000).await;
    app.fund(&pair.b, 10_000).await;
    let (alice, bob) = (app.as_user(&pair.alice), app.as_user(&pair.bob));
    let sends = (0..30).map(|i| {
        let (user, legs) = if i % 2 == 0 {
            (
                &alice,
                vec![
                    (pair.a.as_str(), a2.as_str(), 70),
                    (a2.as_str(), pair.b.as_str(), 30),
                    (pair.a.as_str(), b2.as_str(), 5),
                ],
            )
        } else {
            (
                &bob,
                vec![
                    (pair.b.as_str(), b2.as_str(), 40),
                    (b2.as_str(), pair.a.as_str(), 25),
                    (pair.b.as_str(), a2.as_str(), 3),
                ],
            )
        };
        async move { journal(user, &legs, &format!("c-{i}")).await }
    });
    let decided = join_all(sends).await;
    assert!(decided.iter().all(|t| t.status == "COMPLETED"), "{decided:?}");
    // Per alice journal: a −75, a2 +40, b +30, b2 +5; per bob journal: b −43, b2 +15, a +25, a2 +3.
    let expected = [10_000 - 15 * 75 + 15 * 25, 15 * 40 + 15 * 3, 10_000 + 15 * 30 - 15 * 43, 15 * 5 + 15 * 15];
    assert_eq!(balances(&app, &[&pair.a, &a2, &pair.b, &b2]).await, expected);
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_system_and_system_send_journals() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let a2 = app.open_account(&pair.alice).await;
    // SYSTEM issues money into two accounts in one journal, from the funding account.
    let system = app.as_user(&app.system);
    let funding = ledgerflow_domain::AccountId::funding(ledgerflow_domain::Currency::USD).to_string();
    let issued = journal(&system, &[(&funding, &pair.a, 600), (&funding, &a2, 400)], "issue").await;
    assert_eq!(issued.status, "COMPLETED", "{issued:?}");
    // A user may not draw on the funding account.
    let alice = app.as_user(&pair.alice);
    let drawn = alice.journal(&[(&funding, &pair.a, 1), (&pair.a, &a2, 1)], "draw", None).await.unwrap_err();
    assert_eq!(drawn.code(), Some("ACCOUNT_NOT_FOUND"), "{drawn}");

    let command = json!({
        "version": 1, "kind": "JOURNAL", "idempotencyKey": "settlement-7", "initiator": "service:test-upstream",
        "requestedAt": chrono::Utc::now().to_rfc3339(), "description": "marketplace order 7",
        "metadata": {"orderId": "7"},
        "legs": [
            {"fromAccount": pair.a, "toAccount": pair.b, "amount": 500, "currency": "USD"},
            {"fromAccount": pair.b, "toAccount": a2, "amount": 50, "currency": "USD"},
        ],
    });
    let validator = jsonschema::validator_for(&schema("transfer-command.v1.schema.json")).unwrap();
    assert!(validator.is_valid(&command), "the schema takes {command}");
    let mut bad = command.clone();
    bad["amount"] = 5.into();
    assert!(!validator.is_valid(&bad), "no amount beside legs");
    app.publish_raw(&pair.a, &serde_json::to_vec(&command).unwrap()).await;
    let done = app.wait_upstream("settlement-7").await;
    assert_eq!(done.status.to_string(), "COMPLETED");
    assert_eq!(done.legs.len(), 2);
    assert_eq!(done.metadata.as_ref().and_then(|m| m.get("orderId")), Some("7"), "a journal keeps its metadata");
    assert_eq!(balances(&app, &[&pair.a, &pair.b, &a2]).await, [100, 450, 450]);

    let mut short = command.clone();
    short["idempotencyKey"] = "settlement-8".into();
    short["legs"][0]["amount"] = 50.into();
    short["legs"][1]["amount"] = 10_000.into();
    app.publish_raw(&pair.a, &serde_json::to_vec(&short).unwrap()).await;
    let failed = app.wait_upstream("settlement-8").await;
    assert_eq!((failed.status.to_string(), failed.failed_leg), ("FAILED".to_owned(), Some(1)));
    let results = app.drain_queue(&app.topology.results(), 3, 20).await;
    let by = |key: &str| results.iter().find(|r| r["idempotencyKey"] == key).cloned().unwrap_or_default();
    assert_eq!(by("settlement-8")["failedLeg"], 1, "{results:?}");
    let validator = jsonschema::validator_for(&schema("transfer-result.v1.schema.json")).unwrap();
    assert!(results.iter().all(|r| validator.is_valid(r)), "the schema takes every result: {results:?}");
    assert_eq!(balances(&app, &[&pair.a, &pair.b, &a2]).await, [100, 450, 450]);
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_carries_journals_beside_transfers_each_answered_as_alone() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let a2 = app.open_account(&pair.alice).await;
    app.fund(&pair.a, 1_000).await;
    let alice = app.as_user(&pair.alice);
    let leg = |from: &str, to: &str, amount: i64| json!({"fromAccount": from, "toAccount": to, "amount": amount});
    let items = [
        json!({"idempotencyKey": "b-journal", "legs": [leg(&pair.a, &a2, 300), leg(&a2, &pair.b, 100)]}),
        json!({"idempotencyKey": "b-transfer", "fromAccount": pair.a, "toAccount": pair.b, "amount": 50}),
        json!({"idempotencyKey": "b-bad", "legs": [leg(&pair.a, &pair.b, 5)]}),
    ];
    let answer = alice.batch(&items).await.unwrap().items;
    let statuses: Vec<u16> = answer.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [202, 202, 400], "{answer:?}");
    assert_eq!(answer[2].error.as_ref().and_then(|e| e.field.as_deref()), Some("legs"));
    let journal = answer[0].transaction.as_ref().expect("the journal");
    assert_eq!(journal.kind, "JOURNAL");
    assert_eq!(alice.wait(&journal.id, 30).await.unwrap().status, "COMPLETED");
    let transfer = answer[1].transaction.as_ref().expect("the transfer");
    assert_eq!(alice.wait(&transfer.id, 30).await.unwrap().status, "COMPLETED");
    assert_eq!(balances(&app, &[&pair.a, &a2, &pair.b]).await, [650, 200, 150]);
    app.teardown().await;
}
