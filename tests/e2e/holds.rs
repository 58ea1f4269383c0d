//! Holds: reserve now, post or void later, or let them expire; against the real services.

use std::time::{Duration, Instant};

use futures::future::join_all;
use ledgerflow_client::{Client, Transfer};
use ledgerflow_domain::TransferKind;
use ledgerflow_domain::grants::Grant;
use ledgerflow_tests::{OTHER_UPSTREAM_BROKER_USER, TestApp, schema, spawn_app, spawn_app_with};

/// Opens a hold as `user` and waits until the worker decided it.
async fn hold(user: &Client, from: &str, to: &str, amount: i64, timeout: u32) -> ledgerflow_client::TransactionBody {
    let key = uuid::Uuid::new_v4().to_string();
    let transfer = Transfer { from, to, amount, idempotency_key: &key, description: None };
    let accepted = user.hold(&transfer, timeout).await.unwrap();
    assert_eq!((accepted.transaction.kind.as_str(), accepted.transaction.status.as_str()), ("HOLD", "PENDING"));
    assert!(accepted.transaction.expires_at.is_some(), "a hold says when it expires");
    user.wait(&accepted.transaction.id, 30).await.unwrap()
}

/// (balance, pendingDebits, pendingCredits, available) of an account.
async fn money(user: &Client, account: &str) -> (i64, i64, i64, i64) {
    let b = user.balance(account).await.unwrap();
    (b.balance, b.pending_debits, b.pending_credits, b.available)
}

/// Polls a transaction until `done` holds for it (bounded).
async fn until(
    user: &Client,
    id: &str,
    done: impl Fn(&ledgerflow_client::TransactionBody) -> bool,
) -> ledgerflow_client::TransactionBody {
    let start = Instant::now();
    loop {
        let t = user.transaction(id).await.unwrap();
        if done(&t) {
            return t;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "transaction {id} stayed {}", t.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reserves_money_and_a_partial_post_moves_part_and_releases_the_rest() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 1_000).await;
    let (alice, bob) = (app.as_user(&pair.alice), app.as_user(&pair.bob));

    let held = hold(&alice, &pair.a, &pair.b, 600, 300).await;
    assert_eq!((held.status.as_str(), held.held_amount), ("HELD", Some(600)));
    assert_eq!(money(&alice, &pair.a).await, (1_000, 600, 0, 400));
    assert_eq!(money(&bob, &pair.b).await, (0, 0, 600, 0));
    // No entry is written for a reservation.
    assert_eq!(alice.entries(&pair.a).await.unwrap().entries.len(), 1);
    // Bob's account holds no money yet, but money is held for it: it does not close.
    let close = serde_json::json!({"status": "CLOSED"});
    let path = format!("/api/accounts/{}/status", pair.b);
    let refused = app.call("PATCH", &path, Some(&app.system.token), Some(close)).await;
    ledgerflow_tests::assert_error(&refused, reqwest::StatusCode::CONFLICT, "ACCOUNT_NOT_EMPTY");

    // The balance would cover 500; what is available does not.
    let key = uuid::Uuid::new_v4().to_string();
    let spend = Transfer { from: &pair.a, to: &pair.b, amount: 500, idempotency_key: &key, description: None };
    let spent = alice.transfer(&spend).await.unwrap();
    let spent = alice.wait(&spent.transaction.id, 30).await.unwrap();
    assert_eq!((spent.status.as_str(), spent.failure_reason.as_deref()), ("FAILED", Some("INSUFFICIENT_FUNDS")));

    // Bob, the receiver, may not capture money held for him.
    let by_bob = bob.post_hold(&held.id, "bob-post", None).await.unwrap_err();
    assert_eq!(by_bob.status(), Some(403), "{by_bob}");
    assert_eq!(alice.post_hold(&held.id, "too-much", Some(601)).await.unwrap_err().code(), Some("AMOUNT_EXCEEDS_HOLD"));

    let post = alice.post_hold(&held.id, "capture", Some(250)).await.unwrap();
    assert_eq!(
        (post.transaction.kind.as_str(), post.transaction.hold.as_deref()),
        ("POST_HOLD", Some(held.id.as_str()))
    );
    let posted = alice.wait(&post.transaction.id, 30).await.unwrap();
    assert_eq!((posted.status.as_str(), posted.amount), ("COMPLETED", 250));
    let settled = until(&alice, &held.id, |t| t.status != "HELD").await;
    assert_eq!(settled.status, "POSTED");
    assert_eq!((settled.posted_amount, settled.resolved_by.as_deref()), (Some(250), Some(posted.id.as_str())));
    assert!(settled.resolved_at.is_some());
    assert_eq!(money(&alice, &pair.a).await, (750, 0, 0, 750));
    assert_eq!(money(&bob, &pair.b).await, (250, 0, 0, 250));

    // A repeat is answered as it stands; a second settlement is refused at once.
    let again = alice.post_hold(&held.id, "capture", Some(250)).await.unwrap();
    assert_eq!((again.repeat, again.transaction.id), (true, posted.id.clone()));
    assert_eq!(alice.void_hold(&held.id, "late-void").await.unwrap_err().code(), Some("HOLD_NOT_HELD"));
    // The posted money can be reversed like a transfer's; the hold itself cannot.
    assert_eq!(bob.reverse(&held.id, "undo-hold", None).await.unwrap_err().code(), Some("NOT_REVERSIBLE"));
    let back = bob.reverse(&posted.id, "undo-post", None).await.unwrap();
    assert_eq!(bob.wait(&back.transaction.id, 30).await.unwrap().status, "COMPLETED");
    assert_eq!(money(&alice, &pair.a).await, (1_000, 0, 0, 1_000));
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_holds_of_100_on_1000_leave_exactly_ten_held() {
    let app = spawn_app_with(2).await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 1_000).await;
    let alice = app.as_user(&pair.alice);
    let holds = (0..50).map(|_| hold(&alice, &pair.a, &pair.b, 100, 300));
    let decided = join_all(holds).await;
    let held = decided.iter().filter(|t| t.status == "HELD").count();
    let refused = decided.iter().filter(|t| t.failure_reason.as_deref() == Some("INSUFFICIENT_FUNDS")).count();
    assert_eq!((held, refused), (10, 40));
    assert_eq!(money(&alice, &pair.a).await, (1_000, 1_000, 0, 0));
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_twenty_concurrent_posts_and_voids_of_one_hold_exactly_one_wins() {
    let app = spawn_app_with(2).await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 1_000).await;
    let alice = app.as_user(&pair.alice);
    let held = hold(&alice, &pair.a, &pair.b, 400, 300).await;
    assert_eq!(held.status, "HELD");
    let attempts = (0..20).map(|i| {
        let (alice, id) = (alice.clone(), held.id.clone());
        async move {
            let key = format!("settle-{i}");
            let sent =
                if i % 2 == 0 { alice.post_hold(&id, &key, None).await } else { alice.void_hold(&id, &key).await };
            match sent {
                Ok(accepted) => Some(alice.wait(&accepted.transaction.id, 30).await.unwrap()),
                // Refused at once: the gateway already saw the hold settled.
                Err(e) => {
                    assert_eq!(e.code(), Some("HOLD_NOT_HELD"), "{e}");
                    None
                }
            }
        }
    });
    let settlements: Vec<_> = join_all(attempts).await.into_iter().flatten().collect();
    let winners: Vec<_> = settlements.iter().filter(|t| t.status == "COMPLETED").collect();
    assert_eq!(winners.len(), 1, "{settlements:?}");
    assert!(
        settlements
            .iter()
            .filter(|t| t.status != "COMPLETED")
            .all(|t| t.failure_reason.as_deref() == Some("HOLD_NOT_HELD")),
        "{settlements:?}"
    );
    let settled = until(&alice, &held.id, |t| t.status != "HELD").await;
    assert_eq!(settled.resolved_by.as_deref(), Some(winners[0].id.as_str()));
    let expected = if winners[0].kind == "POST_HOLD" { (600, 0, 0, 600) } else { (1_000, 0, 0, 1_000) };
    assert_eq!(money(&alice, &pair.a).await, expected);
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_expires_by_itself_and_its_money_is_spendable_again() {
    let app = spawn_app_with(2).await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 500).await;
    let alice = app.as_user(&pair.alice);
    let short = hold(&alice, &pair.a, &pair.b, 500, 2).await;
    assert_eq!((short.status.as_str(), money(&alice, &pair.a).await), ("HELD", (500, 500, 0, 0)));
    // Nobody asks: the workers' sweep expires it.
    let expired = until(&alice, &short.id, |t| t.status != "HELD").await;
    assert_eq!(expired.status, "EXPIRED");
    assert!(expired.resolved_at.is_some() && expired.resolved_by.is_none());
    assert_eq!(money(&alice, &pair.a).await, (500, 0, 0, 500));
    assert_eq!(alice.post_hold(&short.id, "too-late", None).await.unwrap_err().code(), Some("HOLD_NOT_HELD"));
    // A post racing the expiry: it either posts or finds the hold expired, never both.
    let racing = hold(&alice, &pair.a, &pair.b, 300, 1).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let raced = match alice.post_hold(&racing.id, "race", None).await {
        Ok(accepted) => Some(alice.wait(&accepted.transaction.id, 30).await.unwrap()),
        Err(e) => {
            assert!(matches!(e.code(), Some("HOLD_NOT_HELD" | "HOLD_EXPIRED")), "{e}");
            None
        }
    };
    let end = until(&alice, &racing.id, |t| t.status != "HELD").await;
    match raced.as_ref().map(|t| t.status.as_str()) {
        Some("COMPLETED") => {
            assert_eq!((end.status.as_str(), money(&alice, &pair.a).await), ("POSTED", (200, 0, 0, 200)))
        }
        other => {
            if let Some(t) = &raced {
                assert!(
                    matches!(t.failure_reason.as_deref(), Some("HOLD_EXPIRED" | "HOLD_NOT_HELD")),
                    "{other:?} {t:?}"
                );
            }
            assert_eq!((end.status.as_str(), money(&alice, &pair.a).await), ("EXPIRED", (500, 0, 0, 500)));
        }
    }
    app.assert_reconciles().await;
    app.teardown().await;
}

/// Publishes an upstream command and waits for its record under `key`.
async fn upstream(app: &TestApp, routing: &str, command: serde_json::Value) -> ledgerflow_store::TransactionRecord {
    let schema = jsonschema::validator_for(&schema("transfer-command.v1.schema.json")).unwrap();
    assert!(schema.is_valid(&command), "the schema takes {command}");
    let key = command["idempotencyKey"].as_str().unwrap().to_owned();
    app.publish_raw(routing, &serde_json::to_vec(&command).unwrap()).await;
    app.wait_upstream(&key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_system_holds_and_posts_through_the_queue() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 1_000).await;
    let mut command = app.upstream_command(&pair.a, &pair.b, 300, "card-auth-1");
    command["kind"] = "HOLD".into();
    command["timeoutSeconds"] = 600.into();
    let held = upstream(&app, &pair.a, command).await;
    assert_eq!(held.status.to_string(), "HELD");
    assert_eq!(money(&app.as_user(&pair.alice), &pair.a).await, (1_000, 300, 0, 700));

    // A settlement may name only its hold (and a post its amount): the rest is the hold's.
    let post = serde_json::json!({
        "version": 1, "kind": "POST_HOLD", "hold": held.id.to_string(), "amount": 120,
        "idempotencyKey": "card-capture-1", "initiator": "service:test-upstream",
        "requestedAt": chrono::Utc::now().to_rfc3339(),
    });
    let posted = upstream(&app, &pair.a, post.clone()).await;
    assert_eq!(
        (posted.from_account, posted.to_account, posted.amount.minor()),
        (held.from_account, held.to_account, 120)
    );
    assert_eq!(posted.status.to_string(), "COMPLETED");
    // Another service's post of the same hold (one allowed to post holds on any account) is
    // as good as unknown to it.
    let other = "someone-else".parse().unwrap();
    app.store.add_service(&other, &OTHER_UPSTREAM_BROKER_USER.parse().unwrap()).await.unwrap().unwrap();
    let grant = Grant { kinds: [TransferKind::PostHold].into(), any_account: true, ..Grant::default() };
    app.store.change_grant(&other, &grant, true).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await; // workers read services each second
    let mut foreign = post.clone();
    foreign["initiator"] = "service:someone-else".into();
    foreign["idempotencyKey"] = "foreign-capture".into();
    app.publish_raw_as(OTHER_UPSTREAM_BROKER_USER, &pair.a, &serde_json::to_vec(&foreign).unwrap()).await;
    let results = app.drain_queue(&app.topology.results(), 5, 10).await;
    let by = |key: &str| results.iter().find(|r| r["idempotencyKey"] == key).cloned().unwrap_or_default();
    assert_eq!(by("card-auth-1")["status"], "HELD", "{results:?}");
    assert_eq!(by("card-capture-1")["status"], "COMPLETED", "{results:?}");
    assert_eq!(by("foreign-capture")["failureReason"], "HOLD_NOT_FOUND", "{results:?}");
    assert!(results.iter().any(|r| r["status"] == "POSTED"), "the hold's own result: {results:?}");
    let schema = jsonschema::validator_for(&schema("transfer-result.v1.schema.json")).unwrap();
    assert!(results.iter().all(|r| schema.is_valid(r)), "the schema takes every result: {results:?}");
    assert_eq!(money(&app.as_user(&pair.alice), &pair.a).await, (880, 0, 0, 880));

    let mut second = app.upstream_command(&pair.a, &pair.b, 200, "card-auth-2");
    second["kind"] = "HOLD".into();
    second["timeoutSeconds"] = 600.into();
    let second = upstream(&app, &pair.a, second).await;
    let mut void = post.clone();
    void["kind"] = "VOID_HOLD".into();
    void["hold"] = second.id.to_string().into();
    void["idempotencyKey"] = "card-void-2".into();
    void.as_object_mut().unwrap().remove("amount");
    assert_eq!(upstream(&app, &pair.a, void).await.status.to_string(), "COMPLETED");
    let voided = app.store.find_transaction(second.id).await.unwrap().expect("the hold");
    assert_eq!(voided.status.to_string(), "VOIDED");
    assert_eq!(money(&app.as_user(&pair.alice), &pair.a).await, (880, 0, 0, 880));
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_whose_result_was_lost_is_reported_by_a_later_sweep() {
    use mongodb::bson::{Document, doc};

    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 100).await;
    let alice = app.as_user(&pair.alice);
    let short = hold(&alice, &pair.a, &pair.b, 100, 1).await;
    assert_eq!(until(&alice, &short.id, |t| t.status != "HELD").await.status, "EXPIRED");
    let transactions = app.raw_db().await.collection::<Document>("transactions");
    let unreported = doc! { "_id": &short.id, "expiryUnreported": true };
    let reported = || async {
        let start = Instant::now();
        while transactions.count_documents(unreported.clone()).await.unwrap() > 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "the expiry of {} stayed unreported", short.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Its worker published the result and noted it.
    reported().await;
    let _ = app.drain_queue(&app.topology.results(), 0, 1_000).await;

    // The result lost, as when the publish failed or the worker died before it: a later sweep
    // (of any worker) publishes it.
    let long_ago = mongodb::bson::DateTime::from_millis(mongodb::bson::DateTime::now().timestamp_millis() - 60_000);
    let lost = doc! { "$set": { "expiryUnreported": true, "resolvedAt": long_ago } };
    transactions.update_one(doc! { "_id": &short.id }, lost).await.unwrap();
    let results = app.drain_queue(&app.topology.results(), 1, 100).await;
    let heard = results.iter().any(|r| r["transactionId"] == short.id.as_str() && r["status"] == "EXPIRED");
    assert!(heard, "no EXPIRED result for {}: {results:?}", short.id);
    reported().await;
    app.teardown().await;
}
