//! Available balances and account limits: an overdraft line lets an account go down to exactly
//! `−overdraftLimit`, a ceiling refuses the credit that would pass it, and a line is never
//! lowered below what the account already owes.

use ledgerflow_client::{Limits, Transfer};
use ledgerflow_tests::{assert_error, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

/// Sends a transfer as `user` and waits for its decision: (status, failure reason).
async fn decided(user: &ledgerflow_client::Client, from: &str, to: &str, amount: i64) -> (String, String) {
    let key = uuid::Uuid::new_v4().to_string();
    let sent = user.transfer(&Transfer { from, to, amount, idempotency_key: &key, description: None }).await.unwrap();
    let done = user.wait(&sent.transaction.id, 30).await.unwrap();
    assert_ne!(done.status, "PENDING", "transfer {} not decided in time", done.id);
    (done.status, done.failure_reason.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdraft_line_lets_an_account_go_to_exactly_minus_the_limit_and_no_further() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 100).await;
    let system = app.as_user(&app.system);
    let alice = app.as_user(&pair.alice);

    let fresh = alice.balance(&pair.a).await.unwrap();
    assert_eq!((fresh.balance, fresh.available, fresh.overdraft_limit, fresh.pending_debits), (100, 100, 0, 0));
    assert_eq!(decided(&alice, &pair.a, &pair.b, 101).await, ("FAILED".into(), "INSUFFICIENT_FUNDS".into()));

    let limited =
        system.set_limits(&pair.a, &Limits { overdraft_limit: Some(500), ..Limits::default() }).await.unwrap();
    assert_eq!((limited.overdraft_limit, limited.max_balance), (500, None));
    assert_eq!(alice.balance(&pair.a).await.unwrap().available, 600);

    assert_eq!(decided(&alice, &pair.a, &pair.b, 600).await, ("COMPLETED".into(), String::new()));
    let owed = alice.balance(&pair.a).await.unwrap();
    assert_eq!((owed.balance, owed.available), (-500, 0));
    assert_eq!(decided(&alice, &pair.a, &pair.b, 1).await, ("FAILED".into(), "INSUFFICIENT_FUNDS".into()));

    // The line cannot be drawn above what is owed...
    let refused = system.set_limits(&pair.a, &Limits { overdraft_limit: Some(499), ..Limits::default() }).await;
    let refused = refused.unwrap_err();
    assert_eq!((refused.status(), refused.code()), (Some(409), Some("LIMIT_BELOW_BALANCE")), "{refused}");
    // A line lowered around the API is what reconcile reports.
    let accounts = app.raw_db().await.collection::<mongodb::bson::Document>("accounts");
    let set_line = |n: i64| mongodb::bson::doc! { "$set": { "overdraftLimit": n } };
    accounts.update_one(mongodb::bson::doc! { "_id": &pair.a }, set_line(100)).await.unwrap();
    let (code, report) = app.reconcile(&[]).await;
    let checks: Vec<&str> =
        report["discrepancies"].as_array().unwrap().iter().filter_map(|d| d["check"].as_str()).collect();
    assert_eq!((code, checks), (1, vec!["overdraft_exceeded"]), "{report}");
    accounts.update_one(mongodb::bson::doc! { "_id": &pair.a }, set_line(500)).await.unwrap();
    // ...but may be, once repaid; and an entry inside the line of its day stays in order.
    app.fund(&pair.a, 500).await;
    system.set_limits(&pair.a, &Limits { overdraft_limit: Some(0), ..Limits::default() }).await.unwrap();
    assert_eq!(alice.balance(&pair.a).await.unwrap().available, 0);
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceiling_refuses_the_credit_that_would_pass_it() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 5_000).await;
    let system = app.as_user(&app.system);
    let alice = app.as_user(&pair.alice);
    let capped = Limits { max_balance: Some(Some(1_000)), ..Limits::default() };
    assert_eq!(system.set_limits(&pair.b, &capped).await.unwrap().max_balance, Some(1_000));

    assert_eq!(decided(&alice, &pair.a, &pair.b, 1_000).await, ("COMPLETED".into(), String::new()));
    assert_eq!(decided(&alice, &pair.a, &pair.b, 1).await, ("FAILED".into(), "BALANCE_LIMIT_EXCEEDED".into()));
    // A ceiling below the balance is allowed: it only refuses new money.
    let lower = Limits { max_balance: Some(Some(10)), ..Limits::default() };
    assert_eq!(system.set_limits(&pair.b, &lower).await.unwrap().max_balance, Some(10));
    let lifted = Limits { max_balance: Some(None), ..Limits::default() };
    assert_eq!(system.set_limits(&pair.b, &lifted).await.unwrap().max_balance, None);
    assert_eq!(decided(&alice, &pair.a, &pair.b, 1).await, ("COMPLETED".into(), String::new()));
    assert_eq!(app.as_user(&pair.bob).balance(&pair.b).await.unwrap().balance, 1_001);
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_for_system_and_bad_ones_are_refused_by_field() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let path = format!("/api/accounts/{}/limits", pair.a);
    let system = Some(app.system.token.as_str());

    let by_owner = app.call("PATCH", &path, Some(&pair.alice.token), Some(json!({"overdraftLimit": 10}))).await;
    assert_error(&by_owner, StatusCode::FORBIDDEN, "FORBIDDEN");
    for (body, field) in [
        (json!({"overdraftLimit": -1}), "overdraftLimit"),
        (json!({"overdraftLimit": 1.5}), "overdraftLimit"),
        (json!({"overdraftLimit": "10"}), "overdraftLimit"),
        (json!({"maxBalance": 0}), "maxBalance"),
        (json!({"maxBalance": 1_000_000_000_000_001_i64}), "maxBalance"),
        (json!({"creditLimit": 5}), "creditLimit"),
    ] {
        let got = app.call("PATCH", &path, system, Some(body.clone())).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(got.1["error"]["field"], field, "{body}: {}", got.1);
    }
    let unknown = format!("/api/accounts/{}/limits", uuid::Uuid::now_v7());
    assert_error(
        &app.call("PATCH", &unknown, system, Some(json!({"overdraftLimit": 1}))).await,
        StatusCode::NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    );
    // Nothing above changed the account.
    let account = app.as_user(&pair.alice).balance(&pair.a).await.unwrap();
    assert_eq!((account.overdraft_limit, account.available), (0, 0));
    app.teardown().await;
}
