//! Reversals: a completed transaction's money moves back as a new, linked transaction.

use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{Session, TestApp, assert_error, spawn_app};
use reqwest::StatusCode;

async fn reverse(app: &TestApp, who: &Session, id: &str, key: &str) -> (StatusCode, Value) {
    app.call(
        "POST",
        &format!("/transactions/{id}/reverse"),
        Some(&who.token),
        Some(json!({"idempotencyKey": key, "reason": "refund"})),
    )
    .await
}

async fn completed_transfer(app: &TestApp, from: &Session, a: &str, b: &str, amount: i64, key: &str) -> String {
    let id = app.accept_transfer(from, a, b, amount, key).await.transaction.id;
    assert_eq!(app.settled(from, &id).await.status, "COMPLETED");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_reverses_a_transfer_once_and_the_original_links_to_it() {
    let app = spawn_app().await;
    let (alice, bob, eve) = (app.register().await, app.register().await, app.register().await);
    let a = app.open_account(&alice).await;
    let b = app.open_account(&bob).await;
    app.fund(&a, 1_000).await;
    let original = completed_transfer(&app, &alice, &a, &b, 300, "pay").await;

    // Only the receiver (or SYSTEM) may reverse; strangers do not even see it.
    let by_sender = reverse(&app, &alice, &original, "r0").await;
    assert_error(&by_sender, StatusCode::FORBIDDEN, "FORBIDDEN");
    assert!(by_sender.1["error"]["message"].as_str().unwrap().contains("receiving account's owner"), "{}", by_sender.1);
    assert_error(&reverse(&app, &eve, &original, "r0").await, StatusCode::NOT_FOUND, "TRANSACTION_NOT_FOUND");
    let missing =
        app.call("POST", &format!("/transactions/{original}/reverse"), Some(&bob.token), Some(json!({}))).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    let (status, r) = reverse(&app, &bob, &original, "refund-1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["transaction"]["kind"], "REVERSAL");
    assert_eq!(r["transaction"]["reverses"], original.as_str());
    assert_eq!(r["transaction"]["fromAccount"], b.as_str());
    assert_eq!(r["transaction"]["toAccount"], a.as_str());
    let reversal = r["transaction"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled(&bob, &reversal).await.status, "COMPLETED");
    assert_eq!(app.balance(&alice.token, &a).await, 1_000);
    assert_eq!(app.balance(&bob.token, &b).await, 0);

    // The original is unchanged except for the link.
    let t = app.must("the original", app.as_user(&alice).transaction(&original).await);
    assert_eq!((t.status.as_str(), t.amount), ("COMPLETED", 300));
    assert_eq!(t.reversed_by.as_deref(), Some(reversal.as_str()));
    assert_eq!(app.store.entries_of_transaction(original.parse().unwrap()).await.unwrap().len(), 2);

    // A second reversal is refused; repeating the first request returns it.
    assert_error(&reverse(&app, &bob, &original, "refund-2").await, StatusCode::CONFLICT, "ALREADY_REVERSED");
    assert_error(&reverse(&app, &app.system, &original, "sys-1").await, StatusCode::CONFLICT, "ALREADY_REVERSED");
    let (status, again) = reverse(&app, &bob, &original, "refund-1").await;
    assert_eq!((status, again["transaction"]["id"].as_str()), (StatusCode::OK, Some(reversal.as_str())));
    // A reversal is not itself reversible.
    assert_error(&reverse(&app, &app.system, &reversal, "sys-2").await, StatusCode::CONFLICT, "NOT_REVERSIBLE");
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_the_receiver_cannot_cover_fails_and_may_be_retried_later() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (app.register().await, app.register().await, app.register().await);
    let a = app.open_account(&alice).await;
    let b = app.open_account(&bob).await;
    let c = app.open_account(&carol).await;
    app.fund(&a, 1_000).await;
    let original = completed_transfer(&app, &alice, &a, &b, 500, "pay").await;
    completed_transfer(&app, &bob, &b, &c, 400, "spent-it").await;

    let (status, r) = reverse(&app, &bob, &original, "refund-1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    let failed = app.settled(&bob, r["transaction"]["id"].as_str().unwrap()).await;
    assert_eq!((failed.status.as_str(), failed.failure_reason.as_deref()), ("FAILED", Some("INSUFFICIENT_FUNDS")));
    let t = app.must("the original", app.as_user(&alice).transaction(&original).await);
    assert!(t.reversed_by.is_none(), "{t:?}");
    assert_eq!(app.balance(&bob.token, &b).await, 100);

    // Once Bob has the money again, SYSTEM can reverse it.
    app.fund(&b, 400).await;
    let (status, r) = reverse(&app, &app.system, &original, "refund-2").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(app.settled(&bob, r["transaction"]["id"].as_str().unwrap()).await.status, "COMPLETED");
    assert_eq!(app.balance(&alice.token, &a).await, 1_000);

    // Failed and pending transactions cannot be reversed.
    let too_much = app.accept_transfer(&carol, &c, &a, 10_000, "too-much").await.transaction.id;
    app.settled(&carol, &too_much).await;
    assert_error(&reverse(&app, &alice, &too_much, "r").await, StatusCode::CONFLICT, "NOT_REVERSIBLE");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reversals_move_the_money_back_once() {
    let mut app = spawn_app().await;
    app.add_worker();
    let (alice, bob) = (app.register().await, app.register().await);
    let a = app.open_account(&alice).await;
    let b = app.open_account(&bob).await;
    app.fund(&a, 1_000).await;
    app.fund(&b, 5_000).await;
    let original = completed_transfer(&app, &alice, &a, &b, 250, "pay").await;

    // Ten different keys at once, from the receiver and SYSTEM.
    let attempts = (0..10).map(|i| {
        let who = if i % 2 == 0 { bob.clone() } else { app.system.clone() };
        let (app, original) = (&app, &original);
        async move { reverse(app, &who, original, &format!("race-{i}")).await }
    });
    let mut accepted = Vec::new();
    for (status, body) in futures::future::join_all(attempts).await {
        match status {
            StatusCode::ACCEPTED => accepted.push(body["transaction"]["id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "ALREADY_REVERSED"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!accepted.is_empty());
    let mut completed = 0;
    for id in &accepted {
        let t = app.settled(&app.system, id).await;
        if t.status == "COMPLETED" {
            completed += 1;
        } else {
            assert_eq!(t.failure_reason.as_deref(), Some("ALREADY_REVERSED"), "{t:?}");
        }
    }
    assert_eq!(completed, 1, "exactly one reversal completes");
    assert_eq!(app.balance(&alice.token, &a).await, 1_000);
    assert_eq!(app.balance(&bob.token, &b).await, 5_000);
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_reverses_initial_funds_back_into_the_funding_account() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let a = app.open_account(&alice).await;
    let funding = app.request_funding(&a, 700).await;
    app.settled(&alice, &funding).await;
    let (status, r) = reverse(&app, &app.system, &funding, "unfund").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(app.wait_terminal(&alice.token, r["transaction"]["id"].as_str().unwrap()).await["status"], "COMPLETED");
    assert_eq!(app.balance(&alice.token, &a).await, 0);
    app.assert_reconciles().await;
    app.teardown().await;
}
